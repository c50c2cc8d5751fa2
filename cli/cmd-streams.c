/*
 * cmd-streams.c: `logs TARGET [-f] [--since start]` and `events [--json]`: the
 * verbs that read a stream from the supervisor. logs prints the guest's
 * console log (rotated part first) straight from the file the supervisor
 * names, up to the offset it gave, then with -f the bytes it relays from
 * then on: nothing is lost or repeated at the seam. events prints lifecycle
 * events as they happen until interrupted or the fleet stops.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/client.h"
#include "cli/fleet-verbs.h"
#include "cli/parse.h"
#include "cli/verbs.h"
#include "supervisor/targets.h"

static gboolean copy_range(const char *path, gint64 from, gint64 to, GError **error);
static gboolean write_out(const char *buf, gsize len);

/* Where `logs` of several guests is in its output: each line goes out
 * behind its guest's name, like `vm-0003 | ...`. */
typedef struct {
  const char *prefix; /* NULL: bytes as they are (one guest) */
  gboolean at_line_start;
} Out;
static Out out = {NULL, TRUE};

/* `buf` to stdout, each line behind out.prefix. */
static gboolean write_lines(const char *buf, gsize len)
{
  if (out.prefix == NULL)
    return write_out(buf, len);
  while (len > 0) {
    if (out.at_line_start && !write_out(out.prefix, strlen(out.prefix)))
      return FALSE;
    const char *nl = memchr(buf, '\n', len);
    gsize n = nl ? (gsize)(nl - buf) + 1 : len;
    if (!write_out(buf, n))
      return FALSE;
    out.at_line_start = nl != NULL;
    buf += n;
    len -= n;
  }
  return TRUE;
}

static gboolean write_out(const char *buf, gsize len)
{
  while (len > 0) {
    ssize_t n = write(STDOUT_FILENO, buf, len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return FALSE; /* stdout closed (`logs -f | head`): just stop */
    buf += n;
    len -= (gsize)n;
  }
  return TRUE;
}

/* Copies bytes [from, to) of `path` (to < 0: to the end) to stdout. */
static gboolean copy_range(const char *path, gint64 from, gint64 to, GError **error)
{
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT)
      return TRUE; /* never started: no log yet */
    g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(errno), "%s: %s", path,
                g_strerror(errno));
    return FALSE;
  }
  if (from > 0 && lseek(fd, from, SEEK_SET) < 0) {
    close(fd);
    return TRUE;
  }
  char buf[65536];
  gint64 left = to < 0 ? G_MAXINT64 : to - from;
  while (left > 0) {
    ssize_t n = read(fd, buf, (gsize)MIN(left, (gint64)sizeof(buf)));
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0 || !write_lines(buf, (gsize)n))
      break;
    left -= n;
  }
  close(fd);
  return TRUE;
}

/* One guest's log as `logs` prints it: the rotated part, then the live log
 * up to the offset the supervisor gave (from the last start with --since). */
static gboolean print_log(json_t *result, GError **error)
{
  const char *rotated = json_string_value(json_object_get(result, "rotated_path"));
  if (rotated && !copy_range(rotated, 0, -1, error))
    return FALSE;
  return copy_range(json_string_value(json_object_get(result, "path")),
                    json_integer_value(json_object_get(result, "start")),
                    json_integer_value(json_object_get(result, "end")), error);
}

/* `logs TARGET` for several guests (a range, a list, all): each guest's log
 * in id order, every line behind its name, so that `logs all | grep` says
 * which guest printed what. */
static int logs_of_many(NfClient *c, const char *target, const char *since)
{
  g_autoptr(GError) error = NULL;
  json_auto_t *ps =
      nf_client_call(c, "ps", json_pack("{s:s}", "targets", target), NF_CLIENT_TIMEOUT_MS, &error);
  if (!ps)
    return nf_client_fail("logs", error, c);
  gsize i;
  json_t *g;
  json_array_foreach(json_object_get(ps, "guests"), i, g)
  {
    json_t *args = json_pack("{s:I, s:b}", "id", json_integer_value(json_object_get(g, "id")),
                             "follow", FALSE);
    if (since)
      json_object_set_new(args, "since", json_string(since));
    json_auto_t *result = nf_client_call(c, "logs", args, NF_CLIENT_TIMEOUT_MS, &error);
    if (!result)
      return nf_client_fail("logs", error, c);
    g_autofree char *prefix =
        g_strdup_printf("%s | ", json_string_value(json_object_get(g, "name")));
    out = (Out){prefix, TRUE};
    gboolean ok = print_log(result, &error);
    if (ok && !out.at_line_start)
      ok = write_out("\n", 1); /* a last line without its newline ends here */
    out = (Out){NULL, TRUE};
    if (!ok)
      return nf_client_fail("logs", error, NULL);
  }
  return NF_EXIT_OK;
}

int nf_cmd_logs(int argc, char **argv)
{
  g_auto(NfClientOptions) o = {0};
  gboolean follow = FALSE;
  g_autofree char *since = NULL;
  GOptionEntry entries[] = {
      {"follow", 'f', 0, G_OPTION_ARG_NONE, &follow, "Keep printing output as it comes", NULL},
      {"since", 0, 0, G_OPTION_ARG_STRING, &since,
       "'start': only what the guest printed since it last started", "start"},
      NF_CLIENT_OPTION_ENTRIES(&o),
      {NULL}};
  if (!nf_client_parse_args("logs", "TARGET",
                            "Prints a guest's serial console log (kept by the supervisor\n"
                            "whether or not anyone is attached; rotated at 4 MiB). For\n"
                            "several guests (3-17, 1,4,7-9, all) each line is prefixed with\n"
                            "its guest's name; -f follows one guest.",
                            entries, &argc, &argv))
    return NF_EXIT_USAGE;
  g_autoptr(GError) error = NULL;
  guint id = 0;
  if (argc != 2) {
    nf_cli_error("logs: expected a guest ID or TARGET (e.g. `nervesfleet logs 3`, `logs all`)");
    return NF_EXIT_USAGE;
  }
  g_autoptr(NfTargets) t = nf_targets_parse(argv[1], &error);
  if (!t) {
    nf_cli_error("logs: %s", error->message);
    return NF_EXIT_USAGE;
  }
  gboolean one =
      nf_parse_count("guest ID", g_str_has_prefix(argv[1], "vm-") ? argv[1] + 3 : argv[1],
                     NF_TARGETS_MAX_ID, &id, NULL);
  if (!one && follow) {
    nf_cli_error("logs: -f follows one guest ID, not '%s' (`nervesfleet logs 3 -f`)", argv[1]);
    return NF_EXIT_USAGE;
  }
  if (since && strcmp(since, "start") != 0) {
    nf_cli_error("logs: --since '%s': only 'start' is known (the log has no timestamps)", since);
    return NF_EXIT_USAGE;
  }
  g_autoptr(NfClient) c = nf_client_connect(&o, &error);
  if (!c)
    return nf_client_fail("logs", error, NULL);
  if (!one)
    return logs_of_many(c, argv[1], since);
  json_t *args = json_pack("{s:i, s:b}", "id", (int)id, "follow", follow);
  if (since)
    json_object_set_new(args, "since", json_string(since));
  json_auto_t *result = nf_client_call(c, "logs", args, NF_CLIENT_TIMEOUT_MS, &error);
  if (!result)
    return nf_client_fail("logs", error, c);
  if (!print_log(result, &error))
    return nf_client_fail("logs", error, NULL);
  if (!follow)
    return NF_EXIT_OK;
  char buf[16384];
  for (;;) {
    gssize n = nf_client_read_raw(c, buf, sizeof(buf), &error);
    if (n < 0)
      return nf_client_fail("logs", error, NULL);
    if (n == 0 || !write_out(buf, (gsize)n))
      return NF_EXIT_OK; /* the fleet stopped, or our reader went away */
  }
}

int nf_cmd_events(int argc, char **argv)
{
  g_auto(NfClientOptions) o = {0};
  gboolean json = FALSE;
  GOptionEntry entries[] = {
      {"json", 0, 0, G_OPTION_ARG_NONE, &json, "One JSON object per line (see the protocol)", NULL},
      NF_CLIENT_OPTION_ENTRIES(&o),
      {NULL}};
  if (!nf_client_parse_args("events", "",
                            "Streams lifecycle events (booting, ready, exited with the reason,\n"
                            "restarting, ...) until Ctrl-C or the fleet stops.",
                            entries, &argc, &argv))
    return NF_EXIT_USAGE;
  if (argc != 1) {
    nf_cli_error("events: takes no arguments; see `nervesfleet events --help`");
    return NF_EXIT_USAGE;
  }
  g_autoptr(GError) error = NULL;
  g_autoptr(NfClient) c = nf_client_connect(&o, &error);
  if (!c)
    return nf_client_fail("events", error, NULL);
  json_auto_t *result = nf_client_call(c, "events", NULL, NF_CLIENT_TIMEOUT_MS, &error);
  if (!result)
    return nf_client_fail("events", error, c);
  setvbuf(stdout, NULL, _IOLBF, 0);
  for (;;) {
    g_autofree char *line = nf_client_read_line(c, &error);
    if (!line)
      return error ? nf_client_fail("events", error, NULL) : NF_EXIT_OK;
    if (json) {
      printf("%s\n", line);
      continue;
    }
    json_auto_t *ev = json_loads(line, 0, NULL);
    if (!json_is_object(ev))
      continue;
    double when = json_number_value(json_object_get(ev, "time"));
    time_t secs = (time_t)when;
    struct tm tm;
    char stamp[32] = "";
    if (localtime_r(&secs, &tm))
      strftime(stamp, sizeof(stamp), "%H:%M:%S", &tm);
    const char *kind = json_string_value(json_object_get(ev, "event"));
    if (g_strcmp0(kind, "state") == 0) {
      const char *reason = json_string_value(json_object_get(ev, "reason"));
      printf("%s.%03d %s %s -> %s%s%s\n", stamp, (int)((when - (double)secs) * 1000),
             json_string_value(json_object_get(ev, "name")),
             json_string_value(json_object_get(ev, "from")),
             json_string_value(json_object_get(ev, "to")), reason ? ": " : "",
             reason ? reason : "");
    } else if (g_strcmp0(kind, "notice") == 0) {
      printf("%s.%03d fleet: %s\n", stamp, (int)((when - (double)secs) * 1000),
             json_string_value(json_object_get(ev, "message")));
    }
  }
}
