/*
 * control.c: the control socket: the command layer's JSON-lines transport
 * (see command.h). It owns the server object, peer checks, per-client
 * framing and bounded buffers; the streams a command may switch a client
 * to (console bytes, several guests' logs, event lines) are
 * control-streams.c's, the listening socket (accepting, the runtime dir's
 * repair) control-listen.c's, and commands themselves live in the command
 * layer (supervisor/command*.c). The protocol is in control-protocol.md.
 *
 * Every fd is non-blocking and watched by the one GMainLoop. Output goes
 * out as soon as the socket takes it; what it does not take waits in a
 * per-client buffer, and a client that lets NF_CONTROL_OUT_MAX pile up is
 * dropped. Clients are refcounted because a request may finish later (a
 * balloon reply, a wait) after its client went away: the peer's `gone`
 * then says so.
 */
#include "supervisor/control.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <gio/gio.h>
#include <glib-unix.h>
#include <glib/gstdio.h>

#include "supervisor/command.h"
#include "supervisor/control-private.h"
#include "supervisor/control-request.h"
#include "supervisor/paths.h"

typedef NfControlClient Client;

static gboolean client_in_cb(int fd, GIOCondition cond, gpointer data);
static gboolean client_out_cb(int fd, GIOCondition cond, gpointer data);
static Client *client_ref(Client *c);
static void client_unref(Client *c);
static void client_close(Client *c);
static void client_handle_line(Client *c, const char *line, gsize len);
static void close_if_answered(Client *c);
static gboolean peer_hung_up(int fd);
static gboolean client_hup_cb(int fd, GIOCondition cond, gpointer data);
static void client_feed(Client *c, const char *buf, gsize len);
static void reply_error(Client *c, json_t *id, const char *code, json_t *details, const char *fmt,
                        ...) G_GNUC_PRINTF(5, 6);
static void peer_ref(NfCommandPeer *peer);
static void peer_unref(NfCommandPeer *peer);
static void peer_ok(NfCommandPeer *peer, json_t *id, json_t *result);
static void peer_ok_text(NfCommandPeer *peer, json_t *id, const char *result, gsize len);
static void peer_error(NfCommandPeer *peer, json_t *id, const char *code, const char *message,
                       json_t *guests);

static const NfCommandTransport transport = {
    .name = "control socket",
    .ref = peer_ref,
    .unref = peer_unref,
    .ok = peer_ok,
    .ok_text = peer_ok_text,
    .error = peer_error,
    .console = nf_control_peer_console,
    .events = nf_control_peer_events,
    .logs_many = nf_control_peer_logs_many,
};

static gboolean drop_idle_cb(gpointer data)
{
  client_close(data);
  return G_SOURCE_REMOVE;
}

void nf_control_log(NfControl *ctl, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  g_autofree char *msg = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  if (ctl->hooks.log)
    ctl->hooks.log(msg, ctl->hooks_data);
  else
    fprintf(stderr, "nervesfleet: control: %s\n", msg);
}

NfControl *nf_control_new(NfFleet *fleet, const NfControlHooks *hooks, gpointer user_data,
                          GError **error)
{
  g_autofree char *path =
      g_build_filename(nf_fleet_runtime_dir(fleet), NF_CONTROL_SOCKET_NAME, NULL);
  if (!nf_paths_check_socket(path, error))
    return NULL;
  int fd = nf_control_listen_at(path, error);
  if (fd < 0)
    return NULL;
  NfControl *ctl = g_new0(NfControl, 1);
  ctl->fleet = fleet;
  if (hooks)
    ctl->hooks = *hooks;
  ctl->hooks_data = user_data;
  NfCommandHooks cmd_hooks = {.down = ctl->hooks.down, .log = ctl->hooks.log};
  ctl->cmds = nf_commands_new(fleet, &cmd_hooks, user_data);
  ctl->path = g_steal_pointer(&path);
  ctl->listen_fd = fd;
  ctl->listen_src = g_unix_fd_add(fd, G_IO_IN, nf_control_accept_cb, ctl);
  g_autofree char *lock = g_build_filename(nf_fleet_runtime_dir(fleet), "fleet.lock", NULL);
  const char *watched[2] = {lock, ctl->path};
  for (int i = 0; i < 2; i++) {
    g_autoptr(GFile) f = g_file_new_for_path(watched[i]);
    ctl->watch[i] = g_file_monitor_file(f, G_FILE_MONITOR_NONE, NULL, NULL);
    if (ctl->watch[i])
      g_signal_connect(ctl->watch[i], "changed", G_CALLBACK(nf_control_runtime_changed_cb), ctl);
  }
  static const NfFleetCallbacks listener = {.vm_changed = nf_control_vm_changed_cb,
                                            .notice = nf_control_notice_cb};
  ctl->listener_id = nf_fleet_add_listener(fleet, &listener, ctl);
  return ctl;
}

void nf_control_free(NfControl *ctl)
{
  if (!ctl)
    return;
  nf_fleet_remove_listener(ctl->fleet, ctl->listener_id);
  g_clear_handle_id(&ctl->listen_src, g_source_remove);
  g_clear_handle_id(&ctl->resume_src, g_source_remove);
  g_clear_handle_id(&ctl->repair_src, g_source_remove);
  for (int i = 0; i < 2; i++) {
    if (ctl->watch[i])
      g_signal_handlers_disconnect_by_data(ctl->watch[i], ctl);
    g_clear_object(&ctl->watch[i]);
  }
  close(ctl->listen_fd);
  (void)unlink(ctl->path);
  /* Best effort: whatever is queued goes out now if the socket takes it. */
  while (ctl->clients) {
    /* The flush may close it (all out, or the peer gone). */
    Client *c = client_ref(ctl->clients->data);
    nf_control_client_flush(c);
    client_close(c);
    client_unref(c);
  }
  /* Pending waits and balloons go unanswered; they release their clients. */
  nf_commands_free(ctl->cmds);
  g_free(ctl->path);
  g_free(ctl);
}

NfCommands *nf_control_commands(NfControl *ctl)
{
  return ctl->cmds;
}

const char *nf_control_socket_path(const NfControl *ctl)
{
  return ctl->path;
}

guint nf_control_n_clients(const NfControl *ctl)
{
  return ctl->n_clients;
}

/* --- connections ------------------------------------------------------------- */

void nf_control_client_new(NfControl *ctl, int fd)
{
  Client *c = g_new0(Client, 1);
  c->peer.transport = &transport;
  c->ctl = ctl;
  c->refs = 1;
  c->fd = fd;
  c->in = g_string_new(NULL);
  c->out = g_byte_array_new();
  c->out_max = NF_CONTROL_OUT_MAX;
  ctl->clients = g_list_prepend(ctl->clients, c);
  ctl->n_clients++;

  struct ucred cred;
  socklen_t len = sizeof(cred);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
    nf_control_log(ctl, "refused a client: SO_PEERCRED: %s", g_strerror(errno));
    client_close(c);
    return;
  }
  c->uid = cred.uid;
  c->peer.pid = cred.pid;
  c->in_src = g_unix_fd_add(fd, G_IO_IN, client_in_cb, c);
  uid_t me = getuid();
  if (cred.uid != me && cred.uid != 0) {
    nf_control_log(ctl, "refused control client pid %d: uid %u is neither %u nor root",
                   (int)cred.pid, (unsigned)cred.uid, (unsigned)me);
    reply_error(c, NULL, "permission_denied", NULL,
                "uid %u may not control fleet '%s' (only uid %u or root)", (unsigned)cred.uid,
                nf_fleet_name(ctl->fleet), (unsigned)me);
    c->close_when_flushed = TRUE;
    nf_control_client_flush(c);
    return;
  }
  if (ctl->n_clients > NF_CONTROL_MAX_CLIENTS) {
    reply_error(c, NULL, "busy", NULL, "too many control clients (%d)", NF_CONTROL_MAX_CLIENTS);
    c->close_when_flushed = TRUE;
    nf_control_client_flush(c);
  }
}

static Client *client_ref(Client *c)
{
  c->refs++;
  return c;
}

static void client_unref(Client *c)
{
  if (--c->refs > 0)
    return;
  g_string_free(c->in, TRUE);
  g_byte_array_unref(c->out);
  g_free(c);
}

static void client_close(Client *c)
{
  if (c->peer.gone)
    return;
  NfControl *ctl = c->ctl;
  c->peer.gone = TRUE;
  if (c->in_src)
    g_source_remove(c->in_src);
  if (c->out_src)
    g_source_remove(c->out_src);
  c->in_src = c->out_src = 0;
  nf_control_stream_end(c);
  close(c->fd);
  c->fd = -1;
  ctl->clients = g_list_remove(ctl->clients, c);
  ctl->n_clients--;
  client_unref(c);
}

/* Writes what the socket takes now; watches for writability for the rest. */
void nf_control_client_flush(Client *c)
{
  if (c->peer.gone)
    return;
  while (c->out_pos < c->out->len) {
    ssize_t n = send(c->fd, c->out->data + c->out_pos, c->out->len - c->out_pos,
                     MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK)
        break;
      client_close(c); /* EPIPE, ECONNRESET: the peer is gone */
      return;
    }
    c->out_pos += (gsize)n;
  }
  if (c->out_pos == c->out->len) {
    g_byte_array_set_size(c->out, 0);
    c->out_pos = 0;
    if (c->out_src) {
      g_source_remove(c->out_src);
      c->out_src = 0;
    }
    if (c->close_when_flushed)
      client_close(c);
    return;
  }
  /* Keep the buffer compact: drop what was sent once it is most of it. */
  if (c->out_pos > 65536 && c->out_pos * 2 > c->out->len) {
    g_byte_array_remove_range(c->out, 0, (guint)c->out_pos);
    c->out_pos = 0;
  }
  if (!c->out_src)
    c->out_src = g_unix_fd_add(c->fd, G_IO_OUT, client_out_cb, c);
}

static gboolean client_out_cb(int fd, GIOCondition cond, gpointer data)
{
  Client *c = data;
  c->out_src = 0; /* nf_control_client_flush watches again if output remains */
  client_ref(c);
  nf_control_client_flush(c);
  client_unref(c);
  return G_SOURCE_REMOVE;
}

void nf_control_send_bytes(Client *c, const char *buf, gsize len)
{
  struct iovec part = {.iov_base = (void *)buf, .iov_len = len};
  nf_control_send_parts(c, &part, 1);
}

/* Queues `parts` as one message. The cap on unread output is checked once
 * for them all: a newline queued on its own behind a reply larger than the
 * cap (`ps` of 5,000 guests) would drop a client that reads just fine. With
 * nothing queued before them, what the socket takes now is sent straight
 * from the parts and only the rest is copied into c->out: a 1,000-guest ps
 * reply is ~280 KB, and a fresh buffer's pages cost more to fault in than
 * the copy itself. */
void nf_control_send_parts(Client *c, const struct iovec *parts, int n)
{
  gsize total = 0;
  for (int i = 0; i < n; i++)
    total += parts[i].iov_len;
  if (c->peer.gone || total == 0)
    return;
  if (c->dropping)
    return;
  if (c->out->len - c->out_pos >= c->out_max) {
    /* Closed from an idle: we may be inside a guest's watcher loop now. */
    nf_control_log(c->ctl, "dropped control client pid %d: %u bytes of output unread",
                   (int)c->peer.pid, (unsigned)(c->out->len - c->out_pos));
    c->dropping = TRUE;
    g_idle_add_full(G_PRIORITY_DEFAULT, drop_idle_cb, client_ref(c), (GDestroyNotify)client_unref);
    return;
  }
  gsize sent = 0;
  if (c->out_pos == c->out->len) {
    struct msghdr m = {.msg_iov = (struct iovec *)parts, .msg_iovlen = (size_t)n};
    ssize_t r;
    do
      r = sendmsg(c->fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
    while (r < 0 && errno == EINTR);
    if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
      client_close(c); /* EPIPE, ECONNRESET: the peer is gone */
      return;
    }
    sent = r > 0 ? (gsize)r : 0;
  }
  for (int i = 0; i < n; i++) {
    gsize len = parts[i].iov_len;
    if (sent >= len) {
      sent -= len;
      continue;
    }
    g_byte_array_append(c->out, (const guint8 *)parts[i].iov_base + sent, (guint)(len - sent));
    sent = 0;
  }
  nf_control_client_flush(c);
}

static void send_json(Client *c, json_t *msg)
{
  char *text = json_dumps(msg, JSON_COMPACT | JSON_REAL_PRECISION(10));
  json_decref(msg);
  if (!text)
    return;
  /* One line, one message (see nf_control_send_parts). */
  struct iovec line[] = {{.iov_base = text, .iov_len = strlen(text)},
                         {.iov_base = (void *)"\n", .iov_len = 1}};
  nf_control_send_parts(c, line, G_N_ELEMENTS(line));
  free(text);
}

static void reply_error(Client *c, json_t *id, const char *code, json_t *details, const char *fmt,
                        ...)
{
  va_list ap;
  va_start(ap, fmt);
  g_autofree char *msg = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  json_t *err = json_pack("{s:s, s:s}", "code", code, "message", msg);
  if (details)
    json_object_set_new(err, "guests", details);
  send_json(c, json_pack("{s:i, s:O?, s:b, s:o}", "v", NF_CONTROL_PROTOCOL, "id",
                         id ? id : json_null(), "ok", 0, "error", err));
}

/* --- input ------------------------------------------------------------------- */

static gboolean client_in_cb(int fd, GIOCondition cond, gpointer data)
{
  Client *c = data;
  char buf[16384];
  client_ref(c);
  /* A bounded amount per wake-up keeps one busy client from starving others. */
  for (int i = 0; i < 8 && !c->peer.gone && !c->input_paused; i++) {
    ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      break;
    if (n == 0 && c->mode == NF_CONTROL_MODE_REQUESTS && !peer_hung_up(fd)) {
      /* The peer shut only its side after its requests (`echo REQ | socat
       * - UNIX-CONNECT:...`): each still gets its answer, a `wait` its
       * late one, a large `ps` all of it; then we close. Meanwhile only a
       * hang-up is watched for (a peer that goes before its answer). */
      c->read_closed = TRUE;
      close_if_answered(c);
      break;
    }
    if (n <= 0) {
      /* A stream's client left (a console's end of input), or an error:
       * what is queued goes out if it can, then we close. */
      nf_control_client_flush(c);
      client_close(c);
      break;
    }
    client_feed(c, buf, (gsize)n);
  }
  gboolean dead = c->peer.gone || c->read_closed || c->input_paused;
  if (dead)
    c->in_src = 0;
  if (c->read_closed && !c->peer.gone)
    c->in_src = g_unix_fd_add(fd, G_IO_HUP | G_IO_ERR, client_hup_cb, c);
  client_unref(c);
  return dead ? G_SOURCE_REMOVE : G_SOURCE_CONTINUE;
}

void nf_control_client_resume_input(Client *c)
{
  c->input_paused = FALSE;
  if (!c->peer.gone && c->in_src == 0)
    c->in_src = g_unix_fd_add(c->fd, G_IO_IN, client_in_cb, c);
}

/* Both directions closed: the peer is gone, not just done sending. */
static gboolean peer_hung_up(int fd)
{
  struct pollfd p = {.fd = fd, .events = 0};
  return poll(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLERR));
}

static gboolean client_hup_cb(int fd, GIOCondition cond, gpointer data)
{
  Client *c = data;
  c->in_src = 0;
  client_close(c); /* its answers have nobody to go to */
  return G_SOURCE_REMOVE;
}

static void client_feed(Client *c, const char *buf, gsize len)
{
  if (nf_control_stream_input(c, buf, len))
    return;
  while (len > 0 && !c->peer.gone && c->mode == NF_CONTROL_MODE_REQUESTS) {
    const char *nl = memchr(buf, '\n', len);
    gsize take = nl ? (gsize)(nl - buf) + 1 : len;
    if (c->discarding) {
      if (nl)
        c->discarding = FALSE;
    } else if (c->in->len + take - (nl ? 1 : 0) > NF_CONTROL_MAX_LINE) {
      g_string_truncate(c->in, 0);
      reply_error(c, NULL, "too_large", NULL, "request line longer than %d bytes",
                  NF_CONTROL_MAX_LINE);
      c->discarding = nl == NULL;
    } else {
      g_string_append_len(c->in, buf, (gssize)take);
      if (nl) {
        g_autofree char *line = g_strndup(c->in->str, c->in->len - 1);
        gsize line_len = c->in->len - 1;
        g_string_truncate(c->in, 0);
        client_handle_line(c, line, line_len);
      }
    }
    buf += take;
    len -= take;
  }
  /* Bytes after the request that switched the client to a stream. */
  if (len > 0 && !c->peer.gone && c->mode != NF_CONTROL_MODE_REQUESTS)
    client_feed(c, buf, len);
}

static void client_handle_line(Client *c, const char *line, gsize len)
{
  NfControlRequest req;
  if (nf_control_request_parse(line, len, &req)) {
    c->unanswered++; /* every command answers once: ok or error (command.h) */
    nf_commands_dispatch(c->ctl->cmds, &c->peer, req.id, req.cmd, req.args);
  } else if (req.code)
    reply_error(c, req.id, req.code, NULL, "%s", req.message);
  nf_control_request_clear(&req);
}

/* A client that shut its side is closed once every request it sent is
 * answered and the answers are out. */
static void close_if_answered(Client *c)
{
  if (c->unanswered > 0 || c->peer.gone)
    return;
  c->close_when_flushed = TRUE;
  nf_control_client_flush(c);
}

/* One of the client's requests has its answer (queued). */
static void answered(Client *c)
{
  if (c->unanswered > 0)
    c->unanswered--;
  if (c->read_closed)
    close_if_answered(c);
}

/* --- the transport's side of the command layer ---------------------------------- */

static void peer_ref(NfCommandPeer *peer)
{
  client_ref((Client *)peer);
}

static void peer_unref(NfCommandPeer *peer)
{
  client_unref((Client *)peer);
}

static void peer_ok(NfCommandPeer *peer, json_t *id, json_t *result)
{
  send_json((Client *)peer, json_pack("{s:i, s:O?, s:b, s:o}", "v", NF_CONTROL_PROTOCOL, "id", id,
                                      "ok", 1, "result", result));
  answered((Client *)peer);
}

/* The envelope as jansson encodes it, with `result` spliced in as its last
 * member: one line, one message, sent from the result's own bytes (see
 * nf_control_send_parts). */
static void peer_ok_text(NfCommandPeer *peer, json_t *id, const char *result, gsize len)
{
  json_t *envelope = json_pack("{s:i, s:O?, s:b}", "v", NF_CONTROL_PROTOCOL, "id", id, "ok", 1);
  char *head = json_dumps(envelope, JSON_COMPACT);
  json_decref(envelope);
  if (!head)
    return;
  gsize head_len = strlen(head) - 1; /* without its closing brace */
  static const char key[] = ",\"result\":";
  struct iovec line[] = {{.iov_base = head, .iov_len = head_len},
                         {.iov_base = (void *)key, .iov_len = sizeof key - 1},
                         {.iov_base = (void *)result, .iov_len = len},
                         {.iov_base = (void *)"}\n", .iov_len = 2}};
  nf_control_send_parts((Client *)peer, line, G_N_ELEMENTS(line));
  free(head);
  answered((Client *)peer);
}

static void peer_error(NfCommandPeer *peer, json_t *id, const char *code, const char *message,
                       json_t *guests)
{
  reply_error((Client *)peer, id, code, guests, "%s", message);
  answered((Client *)peer);
}
