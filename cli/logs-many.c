/*
 * logs-many.c: `logs TARGET` for several guests (see logs-many.h).
 */
#include "cli/logs-many.h"

#include <errno.h>
#include <poll.h>
#include <sys/resource.h>

#include "cli/fleet-verbs.h"
#include "cli/log-print.h"
#include "cli/verbs.h"
#include "supervisor/control.h"

/* Half the supervisor's control connections: the rest stay for others. */
#define NF_LOGS_FOLLOW_MAX (NF_CONTROL_MAX_CLIENTS / 2)

typedef struct {
  NfClient *client; /* its own `logs -f` stream; NULL: ended */
  char *prefix;
  NfLogOut out;
} Stream;

static void stream_clear(gpointer data)
{
  Stream *s = data;
  g_clear_pointer(&s->client, nf_client_free);
  g_free(s->prefix);
}

/* The `logs` request for guest `id`. */
static json_t *logs_args(json_int_t id, gboolean follow, const char *since)
{
  json_t *args = json_pack("{s:I, s:b}", "id", id, "follow", follow);
  if (since)
    json_object_set_new(args, "since", json_string(since));
  return args;
}

/* Streams whose bytes can be read now: buffered ones first, else whatever
 * poll says (blocking until one has something). Returns how many are left. */
static guint wait_readable(GArray *streams, gboolean *ready)
{
  guint left = 0, buffered = 0;
  g_autofree struct pollfd *fds = g_new0(struct pollfd, streams->len);
  for (guint i = 0; i < streams->len; i++) {
    Stream *s = &g_array_index(streams, Stream, i);
    ready[i] = FALSE;
    fds[i].fd = -1;
    if (s->client == NULL)
      continue;
    left++;
    if (nf_client_has_buffered(s->client)) {
      ready[i] = TRUE;
      buffered++;
    } else {
      fds[i] = (struct pollfd){.fd = nf_client_fd(s->client), .events = POLLIN};
    }
  }
  if (left == 0 || buffered > 0)
    return left;
  while (poll(fds, streams->len, -1) < 0 && errno == EINTR)
    ;
  for (guint i = 0; i < streams->len; i++)
    ready[i] = fds[i].fd >= 0 && fds[i].revents != 0;
  return left;
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
  g_autoptr(GArray) streams = g_array_new(FALSE, TRUE, sizeof(Stream));
  g_array_set_clear_func(streams, stream_clear);
  gsize i;
  json_t *g;
  json_array_foreach(json_object_get(ps, "guests"), i, g)
  {
    Stream s = {0};
    s.prefix = g_strdup_printf("%s | ", json_string_value(json_object_get(g, "name")));
    s.out = (NfLogOut){s.prefix, TRUE};
    g_array_append_val(streams, s);
    Stream *sp = &g_array_index(streams, Stream, streams->len - 1);
    NfClient *on = c;
    if (follow) {
      sp->client = nf_client_connect(o, &error);
      if (!sp->client)
        return nf_client_fail("logs", error, NULL);
      on = sp->client;
    }
    json_auto_t *reply = nf_client_call(
        on, "logs", logs_args(json_integer_value(json_object_get(g, "id")), follow, since),
        NF_CLIENT_TIMEOUT_MS, &error);
    if (!reply)
      return nf_client_fail("logs", error, on);
    if (!nf_log_print(reply, &sp->out, &error) || !nf_log_end_line(&sp->out))
      return error ? nf_client_fail("logs", error, NULL) : NF_EXIT_OK;
  }
  if (!follow)
    return NF_EXIT_OK;

  g_autofree gboolean *ready = g_new0(gboolean, streams->len);
  Stream *open = NULL; /* the guest whose line is unfinished */
  char buf[16384];
  while (wait_readable(streams, ready) > 0) {
    for (guint k = 0; k < streams->len; k++) {
      Stream *s = &g_array_index(streams, Stream, k);
      if (!ready[k] || s->client == NULL)
        continue;
      gssize got = nf_client_read_raw(s->client, buf, sizeof(buf), &error);
      if (got < 0)
        return nf_client_fail("logs", error, NULL);
      if (got == 0) {
        g_clear_pointer(&s->client, nf_client_free); /* the fleet stopped */
        continue;
      }
      if (open && open != s && !nf_log_end_line(&open->out))
        return NF_EXIT_OK;
      if (!nf_log_write(&s->out, buf, (gsize)got))
        return NF_EXIT_OK; /* our reader went away */
      open = s->out.at_line_start ? NULL : s;
    }
  }
  if (open)
    nf_log_end_line(&open->out);
  return NF_EXIT_OK;
}
