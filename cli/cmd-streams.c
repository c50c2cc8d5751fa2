/*
 * cmd-streams.c: `logs TARGET [-f] [--since start]` and `events [--json]`: the
 * verbs that read a stream from the supervisor. logs prints the guest's
 * console log (rotated part first) straight from the file the supervisor
 * names, up to the offset it gave, then with -f the bytes it relays from
 * then on: nothing is lost or repeated at the seam (log-print.h); several
 * guests go through logs-many.h. events prints lifecycle events as they
 * happen until interrupted or the fleet stops.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cli/client.h"
#include "cli/fleet-verbs.h"
#include "cli/log-print.h"
#include "cli/logs-many.h"
#include "cli/parse.h"
#include "cli/verbs.h"
#include "supervisor/control.h" /* NF_CONTROL_OUT_MAX */
#include "supervisor/targets.h"

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
                            "whether or not anyone is attached; rotated past --log-max). For\n"
                            "several guests (3-17, 1,4,7-9, all) each line is prefixed with\n"
                            "its guest's name.",
                            entries, &argc, &argv))
    return NF_EXIT_USAGE;
  /* `logs -f | head`: a closed stdout ends us quietly (exit 0), not by SIGPIPE. */
  signal(SIGPIPE, SIG_IGN);
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
  if (since && strcmp(since, "start") != 0) {
    nf_cli_error("logs: --since '%s': only 'start' is known (the log has no timestamps)", since);
    return NF_EXIT_USAGE;
  }
  if (!one)
    return nf_logs_many(&o, argv[1], since, follow);
  g_autoptr(NfClient) c = nf_client_connect(&o, &error);
  if (!c)
    return nf_client_fail("logs", error, NULL);
  json_t *args = json_pack("{s:i, s:b}", "id", (int)id, "follow", follow);
  if (since)
    json_object_set_new(args, "since", json_string(since));
  json_auto_t *result = nf_client_call(c, "logs", args, NF_CLIENT_TIMEOUT_MS, &error);
  if (!result)
    return nf_client_fail("logs", error, c);
  NfLogOut out = {NULL, TRUE};
  if (!nf_log_print(result, &out, &error))
    return error ? nf_client_fail("logs", error, NULL) : nf_log_write_failed("logs");
  if (!follow)
    return NF_EXIT_OK;
  char buf[16384];
  for (;;) {
    gssize n = nf_client_read_raw(c, buf, sizeof(buf), &error);
    if (n < 0)
      return nf_client_fail("logs", error, NULL);
    if (n > 0 && !nf_log_write(&out, buf, (gsize)n))
      return nf_log_write_failed("logs"); /* our reader went away, or a full disk */
    if (n > 0)
      continue;
    /* The fleet stopped or the guest left it: the end of its log. */
    if (nf_client_stream_end(&o, id) != NF_STREAM_DROPPED)
      return NF_EXIT_OK;
    nf_cli_error("logs: the supervisor ended the stream while %s runs (it drops a reader that "
                 "falls %d MiB behind); `logs %u` has all of it",
                 json_string_value(json_object_get(result, "name")), NF_CONTROL_OUT_MAX >> 20, id);
    return NF_EXIT_FAILURE;
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
    if (!line && error)
      return nf_client_fail("events", error, NULL);
    if (!line && nf_client_stream_end(&o, 0) == NF_STREAM_FLEET_GONE)
      return NF_EXIT_OK; /* the fleet stopped: the end of its events */
    if (!line) {
      nf_cli_error("events: the supervisor ended the stream while the fleet runs (it drops a "
                   "reader that falls %d MiB behind)",
                   NF_CONTROL_OUT_MAX >> 20);
      return NF_EXIT_FAILURE;
    }
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
