/*
 * logs-many.c: `logs TARGET` for several guests (see logs-many.h).
 */
#include "cli/logs-many.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/resource.h>

#include "cli/fleet-verbs.h"
#include "cli/log-print.h"
#include "cli/verbs.h"
#include "supervisor/control.h"

/* Half the supervisor's control connections: the rest stay for others. */
#define NF_LOGS_FOLLOW_MAX (NF_CONTROL_MAX_CLIENTS / 2)
/* qemu writes the console log a byte at a time, so a stream hands out
 * pieces of lines: a guest's unfinished line waits for the rest this long
 * (a prompt never gets one) or until it is this big. */
#define PARTIAL_WAIT_US (200 * 1000)
#define PARTIAL_MAX 4096

typedef struct {
  NfClient *client; /* its own `logs -f` stream; NULL: ended */
  guint id;
  char *prefix;
  NfLogOut out;
  GString *pending;     /* read, not yet written: the end of an unfinished line */
  gint64 pending_since; /* monotonic µs that unfinished line began waiting */
} Stream;

typedef struct {
  GArray *streams;
  Stream *open;     /* the guest whose line went out unfinished */
  gboolean dropped; /* a stream lost while its guest ran, or poll failed: exit 1 */
} Follow;

static void stream_clear(gpointer data)
{
  Stream *s = data;
  g_clear_pointer(&s->client, nf_client_free);
  g_free(s->prefix);
  if (s->pending)
    g_string_free(s->pending, TRUE);
}

/* The `logs` request for guest `id`. */
static json_t *logs_args(json_int_t id, gboolean follow, const char *since)
{
  json_t *args = json_pack("{s:I, s:b}", "id", id, "follow", follow);
  if (since)
    json_object_set_new(args, "since", json_string(since));
  return args;
}

/* Writes `len` bytes of `s`, ending another guest's unfinished line first. */
static gboolean emit(Follow *f, Stream *s, const char *buf, gsize len)
{
  if (len == 0)
    return TRUE;
  if (f->open && f->open != s && !nf_log_end_line(&f->open->out))
    return FALSE;
  if (!nf_log_write(&s->out, buf, len))
    return FALSE;
  f->open = s->out.at_line_start ? NULL : s;
  return TRUE;
}

/* Writes what `s` has pending up to its last newline; the rest waits
 * (until PARTIAL_WAIT_US have passed or it is PARTIAL_MAX big: all of it). */
static gboolean flush(Follow *f, Stream *s, gint64 now, gboolean all)
{
  GString *p = s->pending;
  const char *nl = p->len ? memrchr(p->str, '\n', p->len) : NULL;
  gsize whole = nl ? (gsize)(nl - p->str) + 1 : 0, tail = p->len - whole;
  if (all || tail >= PARTIAL_MAX || (tail && now - s->pending_since >= PARTIAL_WAIT_US))
    whole = p->len;
  if (!emit(f, s, p->str, whole))
    return FALSE;
  g_string_erase(p, 0, (gssize)whole);
  if (p->len == 0)
    s->pending_since = 0;
  else if (whole || s->pending_since == 0)
    s->pending_since = now;
  return TRUE;
}

/* Reads what `s` has for us without blocking, into its pending bytes.
 * FALSE when its stream ended. */
static gboolean take(Stream *s, GError **error)
{
  char buf[16384];
  while (nf_client_has_buffered(s->client) ||
         poll(&(struct pollfd){.fd = nf_client_fd(s->client), .events = POLLIN}, 1, 0) > 0) {
    gssize got = nf_client_read_raw(s->client, buf, sizeof(buf), error);
    if (got <= 0)
      return FALSE;
    if (s->pending->len == 0)
      s->pending_since = g_get_monotonic_time();
    g_string_append_len(s->pending, buf, got);
  }
  return TRUE;
}

/* A stream ended: the fleet stopped or the guest went away (scaled down),
 * or the supervisor dropped us for reading too slowly (1 MiB unread). */
static void ended(Follow *f, Stream *s, NfClient *c)
{
  g_clear_pointer(&s->client, nf_client_free);
  g_autofree char *id = g_strdup_printf("%u", s->id);
  json_auto_t *ps = nf_client_call(c, "ps", json_pack("{s:s}", "targets", id), 5000, NULL);
  if (ps && json_array_size(json_object_get(ps, "guests")) > 0) {
    nf_cli_error("logs: %sstream ended while the guest runs (the supervisor drops a reader that "
                 "falls 1 MiB behind); `logs %u` has all of it",
                 s->prefix, s->id);
    f->dropped = TRUE;
  }
}

/* Waits until a stream has bytes or an unfinished line's wait is over;
 * FALSE when no stream is left. */
static gboolean wait_any(Follow *f)
{
  GArray *st = f->streams;
  g_autofree struct pollfd *fds = g_new0(struct pollfd, st->len);
  guint left = 0;
  gint64 due = -1, now = g_get_monotonic_time();
  for (guint i = 0; i < st->len; i++) {
    Stream *s = &g_array_index(st, Stream, i);
    fds[i].fd = -1;
    if (s->pending->len && (due < 0 || s->pending_since + PARTIAL_WAIT_US < due))
      due = s->pending_since + PARTIAL_WAIT_US;
    if (s->client == NULL)
      continue;
    left++;
    if (nf_client_has_buffered(s->client))
      return TRUE;
    fds[i] = (struct pollfd){.fd = nf_client_fd(s->client), .events = POLLIN};
  }
  if (left == 0)
    return FALSE;
  int wait_ms = due < 0 ? -1 : (int)MAX((due - now + 999) / 1000, 0);
  int r;
  while ((r = poll(fds, st->len, wait_ms)) < 0 && errno == EINTR)
    ;
  if (r < 0) {
    nf_cli_error("logs: waiting for the guests' output: %s", g_strerror(errno));
    f->dropped = TRUE; /* exit 1 */
    return FALSE;
  }
  return TRUE;
}

/* One pass over the streams: what each has for us read, its whole lines
 * out (all it holds once it ended). -1: go on; else the exit status. */
static int pump(Follow *f, NfClient *c)
{
  g_autoptr(GError) error = NULL;
  gint64 now = g_get_monotonic_time();
  for (guint i = 0; i < f->streams->len; i++) {
    Stream *s = &g_array_index(f->streams, Stream, i);
    if (s->client && !take(s, &error)) {
      if (error)
        return nf_client_fail("logs", error, NULL);
      ended(f, s, c);
    }
    if (!flush(f, s, now, s->client == NULL))
      return NF_EXIT_OK; /* our reader went away */
  }
  return -1;
}

static int follow_all(Follow *f, NfClient *c)
{
  while (wait_any(f)) {
    int status = pump(f, c);
    if (status >= 0)
      return status;
  }
  for (guint i = 0; i < f->streams->len; i++)
    flush(f, &g_array_index(f->streams, Stream, i), 0, TRUE);
  if (f->open)
    nf_log_end_line(&f->open->out);
  return f->dropped ? NF_EXIT_FAILURE : NF_EXIT_OK;
}

/* Following `streams` guests takes a socket each: the soft limit on open
 * files (1024 by default) is raised as far as the hard one allows. */
static gboolean room_for(guint streams, GError **error)
{
  struct rlimit rl;
  rlim_t need = (rlim_t)streams + 16; /* stdio, the first connection, spare */
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= need)
    return TRUE;
  rl.rlim_cur = MIN(rl.rlim_max, need);
  setrlimit(RLIMIT_NOFILE, &rl);
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur >= need)
    return TRUE;
  g_set_error(error, NF_CLIENT_ERROR, NF_CLIENT_ERROR_USAGE,
              "following %u guests takes %lu open files, and this process may open %lu (hard "
              "limit); follow fewer at once (`logs 1-500 -f`) or raise it (`ulimit -n`)",
              streams, (unsigned long)need, (unsigned long)rl.rlim_cur);
  return FALSE;
}

int nf_logs_many(const NfClientOptions *o, const char *target, const char *since, gboolean follow)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(NfClient) c = nf_client_connect(o, &error);
  if (!c)
    return nf_client_fail("logs", error, NULL);
  json_auto_t *ps =
      nf_client_call(c, "ps", json_pack("{s:s}", "targets", target), NF_CLIENT_TIMEOUT_MS, &error);
  if (!ps)
    return nf_client_fail("logs", error, c);
  guint n = (guint)json_array_size(json_object_get(ps, "guests"));
  if (follow && n > NF_LOGS_FOLLOW_MAX) {
    nf_cli_error("logs: -f follows at most %u guests at once, not %u (each takes one of the "
                 "supervisor's %d control connections); follow a range such as `logs 1-%u -f`, "
                 "or search `logs %s` without -f",
                 NF_LOGS_FOLLOW_MAX, n, NF_CONTROL_MAX_CLIENTS, NF_LOGS_FOLLOW_MAX, target);
    return NF_EXIT_USAGE;
  }
  if (follow && !room_for(n, &error))
    return nf_client_fail("logs", error, NULL);

  g_autoptr(GArray) streams = g_array_sized_new(FALSE, TRUE, sizeof(Stream), n);
  g_array_set_clear_func(streams, stream_clear);
  Follow f = {streams, NULL, FALSE};
  gsize i;
  json_t *g;
  json_array_foreach(json_object_get(ps, "guests"), i, g)
  {
    Stream s = {0};
    s.id = (guint)json_integer_value(json_object_get(g, "id"));
    s.prefix = g_strdup_printf("%s | ", json_string_value(json_object_get(g, "name")));
    s.out = (NfLogOut){s.prefix, TRUE};
    s.pending = g_string_new(NULL);
    g_array_append_val(streams, s);
    Stream *sp = &g_array_index(streams, Stream, streams->len - 1);
    NfClient *on = c;
    if (follow) {
      sp->client = nf_client_connect(o, &error);
      if (!sp->client)
        return nf_client_fail("logs", error, NULL);
      on = sp->client;
    }
    json_auto_t *reply =
        nf_client_call(on, "logs", logs_args(s.id, follow, since), NF_CLIENT_TIMEOUT_MS, &error);
    if (!reply)
      return nf_client_fail("logs", error, on);
    if (!follow) {
      if (!nf_log_print(reply, &sp->out, &error) || !nf_log_end_line(&sp->out))
        return error ? nf_client_fail("logs", error, NULL) : NF_EXIT_OK;
      continue;
    }
    /* Its history, whole lines out and an unfinished one kept for its
     * stream; then what the guests already followed printed meanwhile, so
     * that none falls 1 MiB behind while the histories go out. */
    if (!nf_log_read(reply, sp->pending, &error))
      return nf_client_fail("logs", error, NULL);
    sp->pending_since = g_get_monotonic_time();
    int status = pump(&f, c);
    if (status >= 0)
      return status;
  }
  if (!follow)
    return NF_EXIT_OK;
  return follow_all(&f, c);
}
