/*
 * client.c: one QMP connection on a GLib main context.
 *
 * Owns the socket, the negotiation (greeting -> qmp_capabilities -> ready),
 * the table of commands in flight, their deadlines, event dispatch and the
 * single, exactly-once teardown. Framing and JSON decoding live in parser.c;
 * typed command wrappers in commands.c.
 *
 * Cost per connection matters at thousands of guests. On the default main
 * context the socket is watched by the supervisor's one epoll set
 * (supervisor/poller.h: EPOLLIN always, EPOLLOUT only while the write queue
 * is non-empty), and a GSource whose ready time is the earliest deadline
 * among the commands in flight exists only while a command is in flight: an
 * idle connection is nothing GLib walks or polls at a wakeup (it walked and
 * polled all of them at every wakeup, the last idle cost of a 1,000-guest
 * fleet: issue 17). On any other context the source also watches the socket
 * and stays attached. Re-arming a deadline is a g_source_set_ready_time()
 * call, with no timer allocated or freed per command.
 *
 * Ids are integers from a per-connection counter starting at 1; qemu echoes
 * them back verbatim. A reply whose id was never sent (or was already
 * answered) is a protocol error; a reply to a command that already timed out
 * is expected and merely marks the connection responsive again.
 *
 * Reentrancy: every callback may call any function here, including
 * nf_qmp_close() and dropping the last reference. The dispatcher holds a
 * temporary reference, and all state changes are made before a callback runs,
 * so a callback never observes (or frees) a half-updated connection.
 */
#include "qmp/qmp.h"
#include "supervisor/poller.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

typedef enum {
  NF_QMP_STATE_GREETING,    /* waiting for {"QMP": ...} */
  NF_QMP_STATE_NEGOTIATING, /* qmp_capabilities sent, reply outstanding */
  NF_QMP_STATE_READY,
  NF_QMP_STATE_CLOSED,
} NfQmpState;

typedef struct {
  GList link; /* in NfQmp.pending, issue order; link.data points back here */
  gint64 id;
  char *command;
  gint64 deadline_us; /* monotonic */
  guint timeout_ms;
  char *line; /* encoded command held back until negotiation finishes; NULL once queued */
  NfQmpReplyFunc callback;
  gpointer user_data;
} NfQmpPending;

typedef struct {
  GSource base;
  NfQmp *qmp; /* not a reference: the NfQmp owns this source */
} NfQmpSource;

struct NfQmp {
  int refcount; /* the client is single-threaded, like its main context */
  NfQmpState state;
  int fd;
  GMainContext *context;
  GSource *source; /* deadline source (and fd watch without poller), or NULL */
  gpointer fd_tag; /* the fd in `source` when not in the poller, else NULL */
  guint watch_id;  /* poller entry for fd, or 0 */
  gint64 armed_us; /* ready time of `source`, -1 when none */
  NfQmpCallbacks callbacks;
  gpointer user_data;

  NfQmpParser *parser;
  gboolean in_feed; /* the parser is on the stack: don't free it */

  gint64 next_id;
  gint64 caps_id;
  GQueue pending;        /* NfQmpPending, issue order; a reply is looked up in it
                          * (nf_qmp_pending_find): qemu answers in order, so the
                          * one asked is at or near the head, and a per-connection
                          * hash cost ~200 bytes a guest (issue 17) */
  GHashTable *timed_out; /* gint64* ids whose deadline passed (late replies are
                          * fine); made on the first, most connections never have one */
  guint default_timeout_ms;
  gboolean responsive;

  /* Write queue, out_off..out_len still to send; freed once drained: a
   * command goes out every few seconds at most, and a kept 1 KiB queue was
   * the largest single piece of an idle guest's share of the supervisor
   * (1 of ~6.5 KiB at 1,000 guests, issue 17). */
  char *out;
  gsize out_len, out_off, out_cap;
  gboolean watching_out;

  /* The greeting as compact text: a kept jansson tree cost ~1.4 KiB per
   * connection, most of a guest's share of the supervisor at 10,000 guests
   * (issue 17); parsed again only if someone asks (nf_qmp_greeting). */
  char *greeting_text;
  json_t *greeting;
  char *version;
};

static NfQmp *nf_qmp_new_internal(int fd, GMainContext *context, const NfQmpCallbacks *callbacks,
                                  gpointer user_data);
static gboolean nf_qmp_source_dispatch_cb(GSource *source, GSourceFunc cb, gpointer data);
static gboolean nf_qmp_poller_cb(int fd, guint32 events, gpointer data);
static void nf_qmp_io(NfQmp *qmp, gboolean readable, gboolean writable);
static void nf_qmp_set_deadline(NfQmp *qmp, gint64 deadline_us);
static void nf_qmp_source_new(NfQmp *qmp, gint64 ready_us);
static gboolean nf_qmp_read(NfQmp *qmp);
static void nf_qmp_message_cb(json_t *message, gpointer user_data);
static void nf_qmp_handle_greeting(NfQmp *qmp, json_t *message);
static void nf_qmp_handle_event(NfQmp *qmp, json_t *message);
static void nf_qmp_handle_reply(NfQmp *qmp, json_t *message);
static void nf_qmp_caps_cb(NfQmp *qmp, const NfQmpReply *reply, gpointer user_data);
static gint64 nf_qmp_send_command(NfQmp *qmp, const char *command, json_t *args, guint timeout_ms,
                                  NfQmpReplyFunc callback, gpointer user_data, gboolean hold);
static void nf_qmp_out_append(NfQmp *qmp, const char *data, gsize len);
static void nf_qmp_flush(NfQmp *qmp, gboolean in_dispatch);
static void nf_qmp_watch_out(NfQmp *qmp, gboolean on);
static void nf_qmp_expire(NfQmp *qmp);
static NfQmpPending *nf_qmp_first_expired(NfQmp *qmp, gint64 now);
static void nf_qmp_rearm(NfQmp *qmp);
static gboolean nf_qmp_pending_before(const NfQmpPending *a, const NfQmpPending *b);
static NfQmpPending *nf_qmp_pending_find(NfQmp *qmp, gint64 id);
static void nf_qmp_pending_remove(NfQmp *qmp, NfQmpPending *p);
static void nf_qmp_pending_complete(NfQmp *qmp, NfQmpPending *p, const NfQmpReply *reply);
static void nf_qmp_pending_free(NfQmpPending *p);
static void nf_qmp_fail_later(NfQmp *qmp, NfQmpReplyFunc callback, gpointer user_data,
                              GError *error);
static gboolean nf_qmp_fail_later_cb(gpointer data);
static void nf_qmp_fail_later_free(gpointer data);
static void nf_qmp_shutdown(NfQmp *qmp, GError *error);
static void nf_qmp_protocol_error(NfQmp *qmp, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static void nf_qmp_finalize(NfQmp *qmp);

static GSourceFuncs nf_qmp_source_funcs = {
    .dispatch = nf_qmp_source_dispatch_cb,
};

/* Spelled out rather than G_DEFINE_QUARK(a-b-c, ...): clang-format
 * reads the dashes as operators and the quark string would change. */
GQuark nf_qmp_error_quark(void)
{
  return g_quark_from_static_string("nf-qmp-error-quark");
}

/* --- construction and lifetime ------------------------------------------ */

NfQmp *nf_qmp_new_from_fd(int fd, GMainContext *context, const NfQmpCallbacks *callbacks,
                          gpointer user_data)
{
  g_return_val_if_fail(fd >= 0, NULL);
  /* The fd may come from a socketpair whose other end went to qemu; make sure
   * ours is non-blocking and not inherited by the next child we spawn. */
  int fl = fcntl(fd, F_GETFL);
  if (fl >= 0)
    fcntl(fd, F_SETFL, fl | O_NONBLOCK);
  int fdfl = fcntl(fd, F_GETFD);
  if (fdfl >= 0)
    fcntl(fd, F_SETFD, fdfl | FD_CLOEXEC);
  return nf_qmp_new_internal(fd, context, callbacks, user_data);
}

NfQmp *nf_qmp_connect_unix(const char *path, GMainContext *context, const NfQmpCallbacks *callbacks,
                           gpointer user_data, GError **error)
{
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  if (strlen(path) > sizeof(addr.sun_path) - 1) {
    g_set_error(error, NF_QMP_ERROR, NF_QMP_ERROR_CONNECT,
                "QMP socket path too long (%zu > %zu bytes): %s", strlen(path),
                sizeof(addr.sun_path) - 1, path);
    return NULL;
  }
  memcpy(addr.sun_path, path, strlen(path) + 1);

  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    int e = errno;
    g_set_error(error, NF_QMP_ERROR, NF_QMP_ERROR_CONNECT, "socket(): %s", g_strerror(e));
    return NULL;
  }
  int r;
  do
    r = connect(fd, (struct sockaddr *)&addr, sizeof(addr));
  while (r < 0 && errno == EINTR);
  /* A unix connect either completes at once or fails (EAGAIN means the
   * listener's backlog is full, which is a failure the caller can retry). */
  if (r < 0 && errno != EINPROGRESS) {
    int e = errno;
    close(fd);
    g_set_error(error, NF_QMP_ERROR, NF_QMP_ERROR_CONNECT, "connect(%s): %s", path, g_strerror(e));
    return NULL;
  }
  return nf_qmp_new_internal(fd, context, callbacks, user_data);
}

static NfQmp *nf_qmp_new_internal(int fd, GMainContext *context, const NfQmpCallbacks *callbacks,
                                  gpointer user_data)
{
  NfQmp *qmp = g_new0(NfQmp, 1);
  qmp->refcount = 1;
  qmp->state = NF_QMP_STATE_GREETING;
  qmp->fd = fd;
  qmp->context = context ? g_main_context_ref(context) : g_main_context_ref_thread_default();
  if (callbacks)
    qmp->callbacks = *callbacks;
  qmp->user_data = user_data;
  qmp->parser = nf_qmp_parser_new(nf_qmp_message_cb, qmp);
  qmp->next_id = 1;
  qmp->caps_id = -1;
  g_queue_init(&qmp->pending);
  qmp->default_timeout_ms = 5000;
  qmp->responsive = TRUE;

  qmp->armed_us = -1;

  /* The poller lives on the default context (supervisor/poller.c). */
  if (qmp->context == g_main_context_default())
    qmp->watch_id = nf_poller_add(fd, EPOLLIN, nf_qmp_poller_cb, qmp);
  if (qmp->watch_id == 0) {
    nf_qmp_source_new(qmp, -1);
    qmp->fd_tag = g_source_add_unix_fd(qmp->source, fd, G_IO_IN | G_IO_HUP | G_IO_ERR);
  }
  return qmp;
}

NfQmp *nf_qmp_ref(NfQmp *qmp)
{
  g_return_val_if_fail(qmp != NULL && qmp->refcount > 0, NULL);
  qmp->refcount++;
  return qmp;
}

/* Dropping the last reference of an open connection closes it first, exactly
 * as nf_qmp_close() would (pending callbacks fail with DISCONNECTED, closed
 * runs with NULL): every callback promise is kept even then. A callback may
 * take a new reference during that, in which case nothing is freed. */
void nf_qmp_unref(NfQmp *qmp)
{
  g_return_if_fail(qmp != NULL && qmp->refcount > 0);
  if (qmp->refcount == 1 && qmp->state != NF_QMP_STATE_CLOSED)
    nf_qmp_shutdown(qmp, NULL);
  if (--qmp->refcount > 0)
    return;
  nf_qmp_finalize(qmp);
}

static void nf_qmp_finalize(NfQmp *qmp)
{
  g_assert(qmp->state == NF_QMP_STATE_CLOSED && g_queue_is_empty(&qmp->pending));
  nf_qmp_parser_free(qmp->parser);
  if (qmp->timed_out)
    g_hash_table_unref(qmp->timed_out);
  g_free(qmp->out);
  json_decref(qmp->greeting);
  free(qmp->greeting_text); /* jansson's */
  g_free(qmp->version);
  g_main_context_unref(qmp->context);
  g_free(qmp);
}

void nf_qmp_close(NfQmp *qmp)
{
  g_return_if_fail(qmp != NULL);
  nf_qmp_shutdown(qmp, NULL);
}

void nf_qmp_set_default_timeout(NfQmp *qmp, guint timeout_ms)
{
  g_return_if_fail(qmp != NULL && timeout_ms > 0);
  qmp->default_timeout_ms = timeout_ms;
}

gboolean nf_qmp_is_ready(NfQmp *qmp)
{
  return qmp->state == NF_QMP_STATE_READY;
}

gboolean nf_qmp_is_closed(NfQmp *qmp)
{
  return qmp->state == NF_QMP_STATE_CLOSED;
}

gboolean nf_qmp_is_responsive(NfQmp *qmp)
{
  return qmp->responsive;
}

json_t *nf_qmp_greeting(NfQmp *qmp)
{
  if (qmp->greeting == NULL && qmp->greeting_text)
    qmp->greeting = json_loads(qmp->greeting_text, 0, NULL);
  return qmp->greeting;
}

const char *nf_qmp_version_string(NfQmp *qmp)
{
  return qmp->version;
}

/* Number of commands sent or queued whose callback has not run yet. */
guint nf_qmp_pending_count(NfQmp *qmp)
{
  return qmp->pending.length;
}

/* --- commands ------------------------------------------------------------ */

void nf_qmp_execute(NfQmp *qmp, const char *command, json_t *args, guint timeout_ms,
                    NfQmpReplyFunc callback, gpointer user_data)
{
  json_auto_t *owned_args = args;
  g_return_if_fail(qmp != NULL && command != NULL);

  if (qmp->state == NF_QMP_STATE_CLOSED) {
    nf_qmp_fail_later(qmp, callback, user_data,
                      g_error_new(NF_QMP_ERROR, NF_QMP_ERROR_DISCONNECTED,
                                  "QMP connection is closed ('%s' not sent)", command));
    return;
  }
  gboolean hold = qmp->state != NF_QMP_STATE_READY;
  if (nf_qmp_send_command(qmp, command, g_steal_pointer(&owned_args), timeout_ms, callback,
                          user_data, hold) < 0)
    nf_qmp_fail_later(qmp, callback, user_data,
                      g_error_new(NF_QMP_ERROR, NF_QMP_ERROR_COMMAND,
                                  "cannot encode QMP command '%s' (invalid UTF-8?)", command));
}

/* Registers a pending command and queues its line (or holds it back until
 * negotiation finishes). Returns its id, or -1 if it could not be encoded
 * (nothing registered; the caller reports). Steals `args`. */
static gint64 nf_qmp_send_command(NfQmp *qmp, const char *command, json_t *args, guint timeout_ms,
                                  NfQmpReplyFunc callback, gpointer user_data, gboolean hold)
{
  json_auto_t *owned_args = args;
  gint64 id = qmp->next_id;
  json_auto_t *msg = json_pack("{s:s, s:I}", "execute", command, "id", (json_int_t)id);
  if (msg == NULL)
    return -1;
  if (owned_args != NULL && json_object_set(msg, "arguments", owned_args) < 0)
    return -1;
  char *encoded = json_dumps(msg, JSON_COMPACT);
  if (encoded == NULL)
    return -1;
  qmp->next_id++;

  NfQmpPending *p = g_new0(NfQmpPending, 1);
  p->link.data = p;
  p->id = id;
  p->command = g_strdup(command);
  p->timeout_ms = timeout_ms ? timeout_ms : qmp->default_timeout_ms;
  p->deadline_us = g_get_monotonic_time() + (gint64)p->timeout_ms * 1000;
  p->callback = callback;
  p->user_data = user_data;
  g_queue_push_tail_link(&qmp->pending, &p->link);

  if (hold) {
    p->line = g_strconcat(encoded, "\n", NULL);
  } else {
    nf_qmp_out_append(qmp, encoded, strlen(encoded));
    nf_qmp_out_append(qmp, "\n", 1);
    nf_qmp_flush(qmp, FALSE);
  }
  free(encoded);

  if (qmp->armed_us < 0 || p->deadline_us < qmp->armed_us)
    nf_qmp_set_deadline(qmp, p->deadline_us);
  return id;
}

/* Attached with its ready time already set (`ready_us`, -1: none): set
 * on an attached source it wakes the loop (an eventfd write), once per
 * command at every health probe. */
static void nf_qmp_source_new(NfQmp *qmp, gint64 ready_us)
{
  qmp->source = g_source_new(&nf_qmp_source_funcs, sizeof(NfQmpSource));
  ((NfQmpSource *)qmp->source)->qmp = qmp;
  g_source_set_static_name(qmp->source, "nf-qmp");
  g_source_set_ready_time(qmp->source, ready_us);
  g_source_attach(qmp->source, qmp->context);
}

/* Arms (or with -1 disarms) the deadline. In the poller, the source exists
 * only while armed; otherwise it also carries the fd and stays. */
static void nf_qmp_set_deadline(NfQmp *qmp, gint64 deadline_us)
{
  if (qmp->state == NF_QMP_STATE_CLOSED)
    return;
  qmp->armed_us = deadline_us;
  if (deadline_us < 0 && qmp->fd_tag == NULL) {
    if (qmp->source) {
      g_source_destroy(qmp->source);
      g_clear_pointer(&qmp->source, g_source_unref);
    }
    return;
  }
  if (qmp->source == NULL)
    nf_qmp_source_new(qmp, deadline_us);
  else
    g_source_set_ready_time(qmp->source, deadline_us);
}

/* --- the source: reading, writing, deadlines ----------------------------- */

static gboolean nf_qmp_source_dispatch_cb(GSource *source, GSourceFunc cb, gpointer data)
{
  g_autoptr(NfQmp) qmp = nf_qmp_ref(((NfQmpSource *)source)->qmp);
  GIOCondition revents = qmp->fd_tag ? g_source_query_unix_fd(source, qmp->fd_tag) : 0;
  nf_qmp_io(qmp, revents & (G_IO_IN | G_IO_HUP | G_IO_ERR), revents & (G_IO_OUT | G_IO_ERR));
  return G_SOURCE_CONTINUE; /* a source no longer wanted was destroyed already */
}

static gboolean nf_qmp_poller_cb(int fd, guint32 events, gpointer data)
{
  g_autoptr(NfQmp) qmp = nf_qmp_ref(data);
  nf_qmp_io(qmp, events & (EPOLLIN | EPOLLHUP | EPOLLERR), events & (EPOLLOUT | EPOLLERR));
  return G_SOURCE_CONTINUE; /* a closed connection has left the poller already */
}

static void nf_qmp_io(NfQmp *qmp, gboolean readable, gboolean writable)
{
  if (readable)
    nf_qmp_read(qmp);
  if (qmp->state != NF_QMP_STATE_CLOSED && writable)
    nf_qmp_flush(qmp, TRUE);
  if (qmp->state != NF_QMP_STATE_CLOSED)
    nf_qmp_expire(qmp);
}

/* One read per dispatch: with thousands of connections on one loop, a chatty
 * qemu must not starve the others; level-triggered polling brings us back.
 * TRUE when data was read (more may follow). */
static gboolean nf_qmp_read(NfQmp *qmp)
{
  char buf[64 * 1024];
  ssize_t n = read(qmp->fd, buf, sizeof(buf));
  if (n < 0) {
    if (errno == EAGAIN || errno == EINTR)
      return FALSE;
    int e = errno;
    nf_qmp_shutdown(qmp, g_error_new(NF_QMP_ERROR, NF_QMP_ERROR_DISCONNECTED, "QMP read failed: %s",
                                     g_strerror(e)));
    return FALSE;
  }
  if (n == 0) {
    nf_qmp_shutdown(qmp, g_error_new_literal(NF_QMP_ERROR, NF_QMP_ERROR_DISCONNECTED,
                                             "QMP peer closed the connection"));
    return FALSE;
  }

  g_autoptr(GError) error = NULL;
  qmp->in_feed = TRUE;
  gboolean ok = nf_qmp_parser_feed(qmp->parser, buf, n, &error);
  qmp->in_feed = FALSE;
  if (qmp->state == NF_QMP_STATE_CLOSED) {
    /* Closed by a callback or a protocol error while the parser was busy. */
    g_clear_pointer(&qmp->parser, nf_qmp_parser_free);
    return FALSE;
  }
  if (!ok)
    nf_qmp_shutdown(qmp, g_steal_pointer(&error));
  return ok;
}

void nf_qmp_drain(NfQmp *qmp)
{
  if (qmp == NULL || qmp->in_feed)
    return; /* inside our own parser: what was read is being handled */
  g_autoptr(NfQmp) hold = nf_qmp_ref(qmp);
  /* Bounded: a peer that exited wrote a finite amount, but a live one may not have. */
  for (guint i = 0; i < 16 && qmp->state != NF_QMP_STATE_CLOSED; i++)
    if (!nf_qmp_read(qmp))
      break;
}

static void nf_qmp_out_append(NfQmp *qmp, const char *data, gsize len)
{
  if (qmp->out_len + len > qmp->out_cap) {
    gsize cap = MAX(qmp->out_cap * 2, 1024);
    while (cap < qmp->out_len + len)
      cap *= 2;
    qmp->out = g_realloc(qmp->out, cap);
    qmp->out_cap = cap;
  }
  memcpy(qmp->out + qmp->out_len, data, len);
  qmp->out_len += len;
}

/* Writes as much of the queue as the socket takes. Outside dispatch a hard
 * error is left for the dispatcher to find (the G_IO_OUT watch stays on), so
 * that nf_qmp_execute() never runs callbacks before returning. */
static void nf_qmp_flush(NfQmp *qmp, gboolean in_dispatch)
{
  while (qmp->out_off < qmp->out_len) {
    ssize_t n = send(qmp->fd, qmp->out + qmp->out_off, qmp->out_len - qmp->out_off,
                     MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && errno == EAGAIN) {
      nf_qmp_watch_out(qmp, TRUE);
      return;
    }
    if (n < 0) {
      int e = errno;
      if (!in_dispatch) {
        nf_qmp_watch_out(qmp, TRUE);
        return;
      }
      nf_qmp_shutdown(qmp, g_error_new(NF_QMP_ERROR, NF_QMP_ERROR_DISCONNECTED,
                                       "QMP write failed: %s", g_strerror(e)));
      return;
    }
    qmp->out_off += n;
  }
  qmp->out_off = qmp->out_len = qmp->out_cap = 0;
  g_clear_pointer(&qmp->out, g_free);
  nf_qmp_watch_out(qmp, FALSE);
}

static void nf_qmp_watch_out(NfQmp *qmp, gboolean on)
{
  if (qmp->watching_out == on)
    return;
  qmp->watching_out = on;
  if (qmp->watch_id)
    nf_poller_modify(qmp->watch_id, EPOLLIN | (on ? EPOLLOUT : 0));
  else
    g_source_modify_unix_fd(qmp->source, qmp->fd_tag,
                            G_IO_IN | G_IO_HUP | G_IO_ERR | (on ? G_IO_OUT : 0));
}

/* Fails every command whose deadline passed, earliest deadline first (a
 * stalled loop can find several expired at once). One at a time: each is
 * unlinked just before its callback, so if that callback closes the
 * connection, the rest are still pending and fail with DISCONNECTED before
 * `closed` runs, as the contract says (unlinking all first made them fail
 * with TIMEOUT after it), and none fails twice. Commands a callback issues
 * cannot be expired yet: their deadlines are later than `now`. */
static void nf_qmp_expire(NfQmp *qmp)
{
  gint64 now = g_get_monotonic_time();
  gint64 armed = qmp->armed_us;
  if (armed < 0 || armed > now)
    return;

  NfQmpPending *p;
  while (qmp->state != NF_QMP_STATE_CLOSED && (p = nf_qmp_first_expired(qmp, now)) != NULL) {
    g_queue_unlink(&qmp->pending, &p->link);
    if (p->line == NULL) { /* it was sent: qemu may still answer it */
      if (qmp->timed_out == NULL)
        qmp->timed_out = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, NULL);
      g_hash_table_add(qmp->timed_out, g_memdup2(&p->id, sizeof(p->id)));
    }
    qmp->responsive = FALSE;
    g_autoptr(GError) error =
        g_error_new(NF_QMP_ERROR, NF_QMP_ERROR_TIMEOUT, "QMP command '%s' timed out after %u ms",
                    p->command, p->timeout_ms);
    NfQmpReply reply = {.error = error};
    nf_qmp_pending_complete(qmp, p, &reply);
  }
  nf_qmp_rearm(qmp);
}

/* The pending command with the earliest deadline at or before `now` (ties:
 * the first issued), or NULL. */
static NfQmpPending *nf_qmp_first_expired(NfQmp *qmp, gint64 now)
{
  NfQmpPending *first = NULL;
  for (GList *l = qmp->pending.head; l != NULL; l = l->next) {
    NfQmpPending *p = l->data;
    if (p->deadline_us <= now && (first == NULL || nf_qmp_pending_before(p, first)))
      first = p;
  }
  return first;
}

static gboolean nf_qmp_pending_before(const NfQmpPending *a, const NfQmpPending *b)
{
  return a->deadline_us != b->deadline_us ? a->deadline_us < b->deadline_us : a->id < b->id;
}

static void nf_qmp_rearm(NfQmp *qmp)
{
  if (qmp->state == NF_QMP_STATE_CLOSED)
    return;
  gint64 earliest = -1;
  for (GList *l = qmp->pending.head; l != NULL; l = l->next) {
    NfQmpPending *p = l->data;
    if (earliest < 0 || p->deadline_us < earliest)
      earliest = p->deadline_us;
  }
  nf_qmp_set_deadline(qmp, earliest);
}

/* --- messages ------------------------------------------------------------ */

static void nf_qmp_message_cb(json_t *message, gpointer user_data)
{
  NfQmp *qmp = user_data;
  if (qmp->state == NF_QMP_STATE_CLOSED)
    return; /* a callback closed us mid-chunk: drop the rest */
  if (qmp->state == NF_QMP_STATE_GREETING)
    nf_qmp_handle_greeting(qmp, message);
  else if (json_object_get(message, "event") != NULL)
    nf_qmp_handle_event(qmp, message);
  else
    nf_qmp_handle_reply(qmp, message);
}

static void nf_qmp_handle_greeting(NfQmp *qmp, json_t *message)
{
  json_t *qmp_obj = json_object_get(message, "QMP");
  if (!json_is_object(qmp_obj)) {
    nf_qmp_protocol_error(qmp, "expected the QMP greeting, got another message first");
    return;
  }
  qmp->greeting_text = json_dumps(message, JSON_COMPACT);
  json_t *v = json_object_get(json_object_get(qmp_obj, "version"), "qemu");
  json_t *major = json_object_get(v, "major"), *minor = json_object_get(v, "minor"),
         *micro = json_object_get(v, "micro");
  if (json_is_integer(major) && json_is_integer(minor) && json_is_integer(micro))
    qmp->version = g_strdup_printf(
        "%" JSON_INTEGER_FORMAT ".%" JSON_INTEGER_FORMAT ".%" JSON_INTEGER_FORMAT,
        json_integer_value(major), json_integer_value(minor), json_integer_value(micro));

  qmp->state = NF_QMP_STATE_NEGOTIATING;
  qmp->caps_id = nf_qmp_send_command(qmp, "qmp_capabilities", NULL, 0, nf_qmp_caps_cb, NULL, FALSE);
}

static void nf_qmp_caps_cb(NfQmp *qmp, const NfQmpReply *reply, gpointer user_data)
{
  if (reply->error != NULL) {
    if (g_error_matches(reply->error, NF_QMP_ERROR, NF_QMP_ERROR_DISCONNECTED))
      return; /* already going down */
    GError *e = g_error_copy(reply->error);
    if (e->code == NF_QMP_ERROR_COMMAND)
      e->code = NF_QMP_ERROR_PROTOCOL;
    g_prefix_error(&e, "QMP negotiation failed: ");
    nf_qmp_shutdown(qmp, e);
    return;
  }
  qmp->state = NF_QMP_STATE_READY;
  for (GList *l = qmp->pending.head; l != NULL; l = l->next) {
    NfQmpPending *p = l->data;
    if (p->line != NULL) {
      nf_qmp_out_append(qmp, p->line, strlen(p->line));
      g_clear_pointer(&p->line, g_free);
    }
  }
  nf_qmp_flush(qmp, FALSE);
  if (qmp->callbacks.ready)
    qmp->callbacks.ready(qmp, qmp->user_data);
}

static void nf_qmp_handle_event(NfQmp *qmp, json_t *message)
{
  json_t *name = json_object_get(message, "event");
  if (!json_is_string(name)) {
    nf_qmp_protocol_error(qmp, "QMP event name is not a string");
    return;
  }
  json_t *ts = json_object_get(message, "timestamp");
  gint64 timestamp_us = json_integer_value(json_object_get(ts, "seconds")) * G_USEC_PER_SEC +
                        json_integer_value(json_object_get(ts, "microseconds"));
  if (qmp->callbacks.event)
    qmp->callbacks.event(qmp, json_string_value(name), json_object_get(message, "data"),
                         timestamp_us, qmp->user_data);
}

static void nf_qmp_handle_reply(NfQmp *qmp, json_t *message)
{
  json_t *ret = json_object_get(message, "return");
  json_t *err = json_object_get(message, "error");
  json_t *id = json_object_get(message, "id");
  if (ret == NULL && err == NULL) {
    nf_qmp_protocol_error(qmp, "QMP message is neither a reply nor an event");
    return;
  }
  if (!json_is_integer(id)) {
    nf_qmp_protocol_error(qmp, "QMP reply without a valid id");
    return;
  }
  gint64 idv = json_integer_value(id);
  NfQmpPending *p = nf_qmp_pending_find(qmp, idv);
  if (p == NULL || p->line != NULL) {
    if (qmp->timed_out && g_hash_table_remove(qmp->timed_out, &idv)) {
      qmp->responsive = TRUE; /* late, but alive */
      return;
    }
    nf_qmp_protocol_error(qmp, "QMP reply with unknown id %" G_GINT64_FORMAT, idv);
    return;
  }
  nf_qmp_pending_remove(qmp, p);
  qmp->responsive = TRUE;

  if (ret != NULL) {
    NfQmpReply reply = {.ret = ret};
    nf_qmp_pending_complete(qmp, p, &reply);
    return;
  }
  const char *cls = json_string_value(json_object_get(err, "class"));
  const char *desc = json_string_value(json_object_get(err, "desc"));
  g_autoptr(GError) error =
      g_error_new(NF_QMP_ERROR, NF_QMP_ERROR_COMMAND, "%s", desc ? desc : "QMP command failed");
  NfQmpReply reply = {.error = error, .err_class = cls ? cls : "GenericError"};
  nf_qmp_pending_complete(qmp, p, &reply);
}

/* --- pending commands ---------------------------------------------------- */

static NfQmpPending *nf_qmp_pending_find(NfQmp *qmp, gint64 id)
{
  for (GList *l = qmp->pending.head; l != NULL; l = l->next)
    if (((NfQmpPending *)l->data)->id == id)
      return l->data;
  return NULL;
}

static void nf_qmp_pending_remove(NfQmp *qmp, NfQmpPending *p)
{
  gboolean was_earliest = qmp->armed_us == p->deadline_us;
  g_queue_unlink(&qmp->pending, &p->link);
  if (was_earliest)
    nf_qmp_rearm(qmp);
}

/* Runs the callback of an already unlinked command and frees it. */
static void nf_qmp_pending_complete(NfQmp *qmp, NfQmpPending *p, const NfQmpReply *reply)
{
  if (p->callback)
    p->callback(qmp, reply, p->user_data);
  nf_qmp_pending_free(p);
}

static void nf_qmp_pending_free(NfQmpPending *p)
{
  g_free(p->command);
  g_free(p->line);
  g_free(p);
}

typedef struct {
  NfQmp *qmp; /* a reference */
  NfQmpReplyFunc callback;
  gpointer user_data;
  GError *error;
} NfQmpFailLater;

/* Delivers `error` (stolen) from an idle source, so that a callback never runs
 * inside the nf_qmp_execute() call that issued it. */
static void nf_qmp_fail_later(NfQmp *qmp, NfQmpReplyFunc callback, gpointer user_data,
                              GError *error)
{
  if (callback == NULL) {
    g_error_free(error);
    return;
  }
  NfQmpFailLater *f = g_new0(NfQmpFailLater, 1);
  f->qmp = nf_qmp_ref(qmp);
  f->callback = callback;
  f->user_data = user_data;
  f->error = error;
  GSource *idle = g_idle_source_new();
  g_source_set_static_name(idle, "nf-qmp-fail");
  g_source_set_callback(idle, nf_qmp_fail_later_cb, f, nf_qmp_fail_later_free);
  g_source_attach(idle, qmp->context);
  g_source_unref(idle);
}

static gboolean nf_qmp_fail_later_cb(gpointer data)
{
  NfQmpFailLater *f = data;
  NfQmpReply reply = {.error = f->error};
  f->callback(f->qmp, &reply, f->user_data);
  return G_SOURCE_REMOVE;
}

static void nf_qmp_fail_later_free(gpointer data)
{
  NfQmpFailLater *f = data;
  g_error_free(f->error);
  nf_qmp_unref(f->qmp);
  g_free(f);
}

/* --- teardown ------------------------------------------------------------ */

/* The one way a connection ends. Idempotent. `error` (stolen) is the reason
 * given to callbacks.closed, NULL for a deliberate close. Every pending
 * command fails with DISCONNECTED (in issue order) before closed runs. */
static void nf_qmp_shutdown(NfQmp *qmp, GError *error)
{
  g_autoptr(GError) reason = error;
  if (qmp->state == NF_QMP_STATE_CLOSED)
    return;
  qmp->state = NF_QMP_STATE_CLOSED;
  g_autoptr(NfQmp) hold = nf_qmp_ref(qmp);

  nf_poller_remove(qmp->watch_id); /* before the fd number can be reused */
  qmp->watch_id = 0;
  if (qmp->source) {
    g_source_destroy(qmp->source);
    g_clear_pointer(&qmp->source, g_source_unref);
  }
  qmp->armed_us = -1;
  close(qmp->fd);
  qmp->fd = -1;
  g_clear_pointer(&qmp->out, g_free);
  qmp->out_len = qmp->out_off = qmp->out_cap = 0;
  if (!qmp->in_feed)
    g_clear_pointer(&qmp->parser, nf_qmp_parser_free);
  if (qmp->timed_out)
    g_hash_table_remove_all(qmp->timed_out);

  GQueue doomed = qmp->pending;
  g_queue_init(&qmp->pending);
  g_autoptr(GError) lost = reason ? g_error_new(NF_QMP_ERROR, NF_QMP_ERROR_DISCONNECTED,
                                                "QMP connection lost: %s", reason->message)
                                  : g_error_new_literal(NF_QMP_ERROR, NF_QMP_ERROR_DISCONNECTED,
                                                        "QMP connection closed");
  NfQmpPending *p;
  while ((p = g_queue_peek_head(&doomed)) != NULL) {
    g_queue_unlink(&doomed, &p->link);
    NfQmpReply reply = {.error = lost};
    nf_qmp_pending_complete(qmp, p, &reply);
  }
  if (qmp->callbacks.closed)
    qmp->callbacks.closed(qmp, reason, qmp->user_data);
}

static void nf_qmp_protocol_error(NfQmp *qmp, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  g_autofree char *msg = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  nf_qmp_shutdown(qmp, g_error_new_literal(NF_QMP_ERROR, NF_QMP_ERROR_PROTOCOL, msg));
}
