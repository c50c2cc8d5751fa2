/*
 * client.c: control-socket client (see client.h). One connection, blocking
 * reads bounded by poll() deadlines, a small read buffer shared by the
 * line reader and the raw reader so no byte after a reply is lost.
 *
 * Every connection starts with a `hello` within NF_CLIENT_HANDSHAKE_MS (the
 * connect itself bounded by SO_SNDTIMEO, which a unix socket honours while
 * the listener's backlog is full): a supervisor that is stopped (SIGSTOP)
 * or wedged accepts connections in the kernel but never answers, and every
 * verb, even one that then waits without a deadline, must say so rather
 * than hang.
 */
#include "cli/client.h"
#include "cli/reply-scan.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "supervisor/control.h"
#include "supervisor/paths.h"

#define NF_CLIENT_BUF_RESERVE (1 << 20) /* the receive buffer's first size */
#define NF_CLIENT_READ_CHUNK 65536      /* at most this much per read() */

struct NfClient {
  int fd;
  char *fleet;
  char *lock_path; /* <runtime dir>/fleet.lock: the supervisor's pid */
  GString *buf;    /* received, not consumed */
  gsize pos;
  guint next_id;
  guint call_timeout_ms; /* of the call in progress, for its error */
  json_t *last_error;
  json_t *hello; /* the supervisor's answer to the handshake */
};

/* Spelled out rather than G_DEFINE_QUARK(a-b-c, ...): clang-format
 * reads the dashes as operators and the quark string would change. */
GQuark nf_client_error_quark(void)
{
  return g_quark_from_static_string("nf-client-error-quark");
}

static gssize fill(NfClient *c, gint64 deadline, GError **error);
static gboolean next_line(NfClient *c, gint64 deadline, const char **line, gsize *len,
                          GError **error);
static void set_send_timeout(int fd, guint ms);
static void not_answering(NfClient *c, guint timeout_ms, GError **error);
static gboolean call(NfClient *c, const char *cmd, json_t *args, guint timeout_ms, json_t **result,
                     const char **raw, gsize *raw_len, GError **error);
static gboolean scan_reply(const char *text, gsize n, guint id, const char **raw, gsize *raw_len);

static void set_send_timeout(int fd, guint ms)
{
  struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
  (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

/* "fleet 'x': supervisor pid N not answering within S s", the pid from the
 * handshake or else from the fleet lock. */
static void not_answering(NfClient *c, guint timeout_ms, GError **error)
{
  json_int_t pid = c->hello ? json_integer_value(json_object_get(c->hello, "pid")) : 0;
  g_autofree char *text = NULL;
  if (pid <= 0 && g_file_get_contents(c->lock_path, &text, NULL, NULL))
    pid = g_ascii_strtoll(text, NULL, 10);
  g_autofree char *who = pid > 0 ? g_strdup_printf("supervisor pid %" JSON_INTEGER_FORMAT, pid)
                                 : g_strdup("supervisor");
  g_set_error(error, NF_CLIENT_ERROR, NF_CLIENT_ERROR_TIMEOUT,
              "fleet '%s': %s not answering within %g s (stopped or overloaded? `kill -CONT` "
              "resumes a stopped one)",
              c->fleet, who, timeout_ms / 1000.0);
}

void nf_client_options_clear(NfClientOptions *o)
{
  g_clear_pointer(&o->name, g_free);
  g_clear_pointer(&o->runtime_dir, g_free);
}

NfClient *nf_client_connect(const NfClientOptions *o, GError **error)
{
  /* Inside `run --exec CMD`, the fleet's own coordinates are the default. */
  const char *env_name = g_getenv("NERVESFLEET_NAME");
  const char *name = o->name ? o->name : env_name ? env_name : "default";
  const char *runtime_dir = o->runtime_dir;
  if (!runtime_dir && !o->name && env_name)
    runtime_dir = g_getenv("NERVESFLEET_RUNTIME_DIR");
  NfFleetPaths paths = {0};
  g_autoptr(GError) local = NULL;
  if (!nf_paths_resolve(&paths, name, runtime_dir, NULL, &local)) {
    g_set_error(error, NF_CLIENT_ERROR, NF_CLIENT_ERROR_USAGE, "%s", local->message);
    return NULL;
  }
  g_autofree char *path = g_build_filename(paths.runtime_dir, NF_CONTROL_SOCKET_NAME, NULL);
  g_autofree char *lock_path = g_build_filename(paths.runtime_dir, "fleet.lock", NULL);
  nf_paths_clear(&paths);
  g_autofree char *hint = g_strdup_printf(
      "no fleet '%s' running; start one with `nervesfleet run N%s%s%s%s`", name,
      o->name ? " --name " : "", o->name ? name : "", o->runtime_dir ? " --runtime-dir " : "",
      o->runtime_dir ? o->runtime_dir : "");
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof(addr.sun_path)) {
    g_set_error(error, NF_CLIENT_ERROR, NF_CLIENT_ERROR_USAGE, "control socket path too long: %s",
                path);
    return NULL;
  }
  g_strlcpy(addr.sun_path, path, sizeof(addr.sun_path));
  g_autoptr(NfClient) c = g_new0(NfClient, 1);
  c->fd = -1;
  c->fleet = g_strdup(name);
  c->lock_path = g_steal_pointer(&lock_path);
  /* Reserved, not touched: the pages a reply fills are its only cost, and
   * a large one (a 1,000-guest ps, ~280 KB) is read with no copy on growth. */
  c->buf = g_string_sized_new(NF_CLIENT_BUF_RESERVE);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd >= 0)
    set_send_timeout(fd, NF_CLIENT_HANDSHAKE_MS);
  if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
    int e = errno;
    if (fd >= 0)
      close(fd);
    if (e == EAGAIN || e == EINTR)
      not_answering(c, NF_CLIENT_HANDSHAKE_MS, error); /* a full backlog */
    else if (e == ENOENT || e == ECONNREFUSED || e == ENOTDIR)
      g_set_error(error, NF_CLIENT_ERROR, NF_CLIENT_ERROR_NO_FLEET, "%s", hint);
    else
      g_set_error(error, NF_CLIENT_ERROR, NF_CLIENT_ERROR_NO_FLEET, "%s (%s: %s)", hint, path,
                  g_strerror(e));
    return NULL;
  }
  c->fd = fd;
  g_autoptr(GError) call_error = NULL;
  c->hello = nf_client_call(c, "hello", NULL, NF_CLIENT_HANDSHAKE_MS, &call_error);
  if (!c->hello) {
    g_propagate_error(error, g_steal_pointer(&call_error));
    return NULL;
  }
  /* From here on, a long wait (`wait`, a console) is the caller's choice. */
  set_send_timeout(fd, 0);
  return g_steal_pointer(&c);
}

json_t *nf_client_hello(NfClient *c)
{
  return c->hello;
}

gboolean nf_client_check_answering(const char *name, const char *runtime_dir, GError **error)
{
  NfClientOptions o = {.name = (char *)name, .runtime_dir = (char *)runtime_dir};
  g_autoptr(GError) local = NULL;
  g_autoptr(NfClient) c = nf_client_connect(&o, &local);
  if (!c && g_error_matches(local, NF_CLIENT_ERROR, NF_CLIENT_ERROR_TIMEOUT)) {
    g_propagate_error(error, g_steal_pointer(&local));
    return FALSE;
  }
  return TRUE;
}

void nf_client_free(NfClient *c)
{
  if (!c)
    return;
  if (c->fd >= 0)
    close(c->fd);
  g_free(c->fleet);
  g_free(c->lock_path);
  if (c->hello)
    json_decref(c->hello);
  g_string_free(c->buf, TRUE);
  if (c->last_error)
    json_decref(c->last_error);
  g_free(c);
}

int nf_client_fd(NfClient *c)
{
  return c->fd;
}

/* Reads more into the buffer. 0 at EOF, -1 on error or deadline. */
static gssize fill(NfClient *c, gint64 deadline, GError **error)
{
  if (c->pos > 0 && c->pos == c->buf->len) {
    g_string_truncate(c->buf, 0);
    c->pos = 0;
  }
  for (;;) {
    int wait_ms = -1;
    if (deadline) {
      gint64 left = deadline - g_get_monotonic_time();
      if (left <= 0) {
        not_answering(c, c->call_timeout_ms, error);
        return -1;
      }
      wait_ms = (int)MIN(left / 1000 + 1, G_MAXINT);
    }
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    int r = poll(&p, 1, wait_ms);
    if (r < 0 && errno == EINTR)
      continue;
    if (r == 0)
      continue; /* the deadline check above reports it */
    /* Straight into the buffer's room. */
    gsize old = c->buf->len;
    g_string_set_size(c->buf, old + NF_CLIENT_READ_CHUNK);
    ssize_t n = read(c->fd, c->buf->str + old, NF_CLIENT_READ_CHUNK);
    int e = errno;
    g_string_set_size(c->buf, old + (gsize)MAX(n, 0));
    if (n < 0 && e == EINTR)
      continue;
    if (n < 0) {
      g_set_error(error, NF_CLIENT_ERROR, NF_CLIENT_ERROR_IO, "control socket: %s", g_strerror(e));
      return -1;
    }
    return n;
  }
}

/* The next line, without its newline, in place in c->buf (valid until the
 * next read): a reply that can be megabytes is not copied out to be looked
 * at. FALSE at EOF (no error) or on failure (error set). */
static gboolean next_line(NfClient *c, gint64 deadline, const char **line, gsize *len,
                          GError **error)
{
  gsize seen = 0; /* bytes after c->pos already searched */
  for (;;) {
    const char *start = c->buf->str + c->pos;
    const char *nl = memchr(start + seen, '\n', c->buf->len - c->pos - seen);
    if (nl) {
      *line = start;
      *len = (gsize)(nl - start);
      c->pos += *len + 1;
      return TRUE;
    }
    seen = c->buf->len - c->pos;
    if (fill(c, deadline, error) <= 0)
      return FALSE;
  }
}

char *nf_client_read_line(NfClient *c, GError **error)
{
  const char *line;
  gsize len;
  return next_line(c, 0, &line, &len, error) ? g_strndup(line, len) : NULL;
}

gboolean nf_client_has_buffered(NfClient *c)
{
  return c->pos < c->buf->len;
}

gssize nf_client_read_raw(NfClient *c, char *out, gsize size, GError **error)
{
  if (c->pos == c->buf->len) {
    gssize n = fill(c, 0, error);
    if (n <= 0)
      return n;
  }
  gsize take = MIN(size, c->buf->len - c->pos);
  memcpy(out, c->buf->str + c->pos, take);
  c->pos += take;
  return (gssize)take;
}

gboolean nf_client_write_all(NfClient *c, const char *buf, gsize len, GError **error)
{
  while (len > 0) {
    ssize_t n = send(c->fd, buf, len, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      not_answering(c, NF_CLIENT_HANDSHAKE_MS, error); /* SO_SNDTIMEO, handshake only */
      return FALSE;
    }
    if (n < 0) {
      g_set_error(error, NF_CLIENT_ERROR, NF_CLIENT_ERROR_IO, "control socket: %s",
                  g_strerror(errno));
      return FALSE;
    }
    buf += n;
    len -= (gsize)n;
  }
  return TRUE;
}

json_t *nf_client_last_error(NfClient *c)
{
  return c->last_error;
}

const char *nf_client_last_code(NfClient *c)
{
  const char *code =
      c->last_error ? json_string_value(json_object_get(c->last_error, "code")) : NULL;
  return code ? code : "";
}

/* One request and its reply. TRUE with *result (a new reference), or with
 * *raw instead when `raw` is given and the reply's envelope could be read
 * without parsing (reply-scan.h): the result's bytes as the supervisor
 * wrote them. */
static gboolean call(NfClient *c, const char *cmd, json_t *args, guint timeout_ms, json_t **result,
                     const char **raw, gsize *raw_len, GError **error)
{
  guint id = ++c->next_id;
  json_auto_t *req = json_pack("{s:i, s:i, s:s, s:o}", "v", NF_CONTROL_PROTOCOL, "id", (int)id,
                               "cmd", cmd, "args", args ? args : json_object());
  g_autofree char *text = json_dumps(req, JSON_COMPACT);
  g_autofree char *line = g_strconcat(text, "\n", NULL);
  if (!nf_client_write_all(c, line, strlen(line), error))
    return FALSE;
  c->call_timeout_ms = timeout_ms;
  gint64 deadline = timeout_ms ? g_get_monotonic_time() + (gint64)timeout_ms * 1000 : 0;
  for (;;) {
    g_autoptr(GError) local = NULL;
    const char *reply_text;
    gsize reply_len;
    if (!next_line(c, deadline, &reply_text, &reply_len, &local)) {
      if (local)
        g_propagate_error(error, g_steal_pointer(&local));
      else
        g_set_error(error, NF_CLIENT_ERROR, NF_CLIENT_ERROR_IO,
                    "fleet '%s' closed the connection without answering", c->fleet);
      return FALSE;
    }
    if (raw && scan_reply(reply_text, reply_len, id, raw, raw_len))
      return TRUE;
    json_error_t jerr;
    json_auto_t *reply = json_loadb(reply_text, reply_len, 0, &jerr);
    if (!json_is_object(reply)) {
      g_set_error(error, NF_CLIENT_ERROR, NF_CLIENT_ERROR_PROTOCOL, "bad reply: %.*s",
                  (int)MIN(reply_len, G_MAXINT), reply_text);
      return FALSE;
    }
    json_t *rid = json_object_get(reply, "id");
    /* An unsolicited error (id null: refused peer, busy) is for us too. */
    if (json_is_integer(rid) && json_integer_value(rid) != (json_int_t)id)
      continue;
    if (json_is_true(json_object_get(reply, "ok"))) {
      json_t *res = json_object_get(reply, "result");
      *result = json_incref(res ? res : json_null());
      return TRUE;
    }
    json_t *err = json_object_get(reply, "error");
    if (c->last_error)
      json_decref(c->last_error);
    c->last_error = json_incref(err ? err : json_object());
    const char *msg = json_string_value(json_object_get(c->last_error, "message"));
    g_set_error(error, NF_CLIENT_ERROR, NF_CLIENT_ERROR_REMOTE, "%s",
                msg ? msg : "the supervisor refused the request");
    return FALSE;
  }
}

/* An ok:true reply to request `id`: its result's bytes, in place. */
static gboolean scan_reply(const char *text, gsize n, guint id, const char **raw, gsize *raw_len)
{
  gsize len;
  const char *v;
  char want[16];
  g_snprintf(want, sizeof(want), "%u", id);
  if (!nf_reply_scan_member(text, n, "id", &v, &len) || len != strlen(want) ||
      memcmp(v, want, len) != 0 || !nf_reply_scan_member(text, n, "ok", &v, &len) || len != 4 ||
      memcmp(v, "true", 4) != 0 || !nf_reply_scan_member(text, n, "result", &v, &len))
    return FALSE;
  *raw = v;
  *raw_len = len;
  return TRUE;
}

json_t *nf_client_call(NfClient *c, const char *cmd, json_t *args, guint timeout_ms, GError **error)
{
  json_t *result = NULL;
  return call(c, cmd, args, timeout_ms, &result, NULL, NULL, error) ? result : NULL;
}

gboolean nf_client_call_print(NfClient *c, const char *cmd, json_t *args, guint timeout_ms,
                              FILE *out, GError **error)
{
  json_t *result = NULL;
  const char *raw = NULL;
  gsize raw_len = 0;
  if (!call(c, cmd, args, timeout_ms, &result, &raw, &raw_len, error))
    return FALSE;
  if (raw) {
    fwrite(raw, 1, raw_len, out);
  } else {
    json_dumpf(result, out, JSON_COMPACT | JSON_REAL_PRECISION(10) | JSON_ENCODE_ANY);
    json_decref(result);
  }
  fputc('\n', out);
  return TRUE;
}

gboolean nf_client_parse_args(const char *verb, const char *params, const char *summary,
                              GOptionEntry *entries, int *argc, char ***argv)
{
  g_autofree char *prg = g_strdup_printf("nervesfleet %s", verb);
  g_set_prgname(prg);
  g_autoptr(GOptionContext) ctx = g_option_context_new(params);
  g_option_context_set_summary(ctx, summary);
  g_option_context_add_main_entries(ctx, entries, NULL);
  g_autoptr(GError) error = NULL;
  if (!g_option_context_parse(ctx, argc, argv, &error)) {
    fprintf(stderr, "nervesfleet: %s: %s; see `nervesfleet %s --help`\n", verb, error->message,
            verb);
    return FALSE;
  }
  /* GOption leaves a "--" separator in place; it only ends the options. */
  if (*argc >= 2 && g_strcmp0((*argv)[1], "--") == 0) {
    memmove(*argv + 1, *argv + 2, sizeof(char *) * (gsize)(*argc - 1));
    (*argc)--;
  }
  return TRUE;
}

NfStreamEnd nf_client_stream_end(const NfClientOptions *o, guint id)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(NfClient) c = nf_client_connect(o, &error);
  /* Only a socket gone or refused means the fleet is: a busy or slow
   * supervisor still runs it. (A stopping supervisor removes its socket
   * before it closes its clients.) */
  if (c == NULL)
    return g_error_matches(error, NF_CLIENT_ERROR, NF_CLIENT_ERROR_NO_FLEET) ? NF_STREAM_FLEET_GONE
                                                                             : NF_STREAM_DROPPED;
  if (id == 0)
    return NF_STREAM_DROPPED; /* a stream of the fleet's, not of a guest */
  g_autofree char *target = g_strdup_printf("%u", id);
  json_auto_t *ps =
      nf_client_call(c, "ps", json_pack("{s:s}", "targets", target), NF_CLIENT_TIMEOUT_MS, NULL);
  if (ps)
    return NF_STREAM_DROPPED;
  return strcmp(nf_client_last_code(c), "no_such_guest") == 0 ? NF_STREAM_GUEST_GONE
                                                              : NF_STREAM_DROPPED;
}

int nf_client_fail(const char *verb, const GError *error, NfClient *c)
{
  fprintf(stderr, "nervesfleet: %s: %s\n", verb, error->message);
  if (g_error_matches(error, NF_CLIENT_ERROR, NF_CLIENT_ERROR_USAGE))
    return 2;
  if (c && g_error_matches(error, NF_CLIENT_ERROR, NF_CLIENT_ERROR_REMOTE) &&
      strcmp(nf_client_last_code(c), "bad_args") == 0)
    return 2;
  return 1;
}

void nf_client_print_problems(NfClient *c, guint tail_lines)
{
  json_t *guests = c->last_error ? json_object_get(c->last_error, "guests") : NULL;
  gsize i;
  json_t *g;
  json_array_foreach(guests, i, g)
  {
    const char *name = json_string_value(json_object_get(g, "name"));
    const char *reason = json_string_value(json_object_get(g, "reason"));
    fprintf(stderr, "  %s: %s, state %s%s%s\n", name ? name : "?",
            json_string_value(json_object_get(g, "problem")) ?: "?",
            json_string_value(json_object_get(g, "state")) ?: "gone", reason ? ", last exit: " : "",
            reason ? reason : "");
    const char *tail = json_string_value(json_object_get(g, "console_tail"));
    if (!tail || !*tail || tail_lines == 0)
      continue;
    g_auto(GStrv) lines = g_strsplit(tail, "\n", -1);
    guint n = g_strv_length(lines);
    while (n > 0 && !*g_strstrip(lines[n - 1]))
      n--;
    fprintf(stderr, "  last console lines of %s:\n", name ? name : "?");
    for (guint k = n > tail_lines ? n - tail_lines : 0; k < n; k++)
      fprintf(stderr, "    | %s\n", g_strchomp(lines[k]));
  }
}

void nf_client_print_result(json_t *result, gboolean json, void (*table)(json_t *result))
{
  if (json) {
    json_dumpf(result, stdout, JSON_COMPACT | JSON_REAL_PRECISION(10));
    fputc('\n', stdout);
  } else {
    table(result);
  }
}
