/*
 * cmd-guests.c: `start|stop|restart|kill|reflash TARGET` and `wait [TARGET]`:
 * act on a set of guests through the control socket. stop and kill return
 * once the guests are down; start, restart and reflash (a factory reset of
 * the guest's disk, then a start) once they are queued (--wait: ready);
 * wait blocks until they are ready (or down) and names the ones that failed,
 * with their last console lines, or that were still pending at --timeout.
 */
#include <stdio.h>
#include <string.h>

#include "cli/client.h"
#include "cli/fleet-verbs.h"
#include "cli/parse.h"
#include "cli/verbs.h"
#include "supervisor/targets.h"

static int act(const char *verb, int argc, char **argv);

static int act(const char *verb, int argc, char **argv)
{
  g_auto(NfClientOptions) o = {0};
  gboolean wait = FALSE, no_wait = FALSE;
  g_autofree char *timeout = NULL;
  gboolean down = strcmp(verb, "stop") == 0 || strcmp(verb, "kill") == 0;
  GOptionEntry entries[] = {
      {"wait", 'w', 0, G_OPTION_ARG_NONE, &wait, "Return once the guests are ready", NULL},
      {"no-wait", 0, 0, G_OPTION_ARG_NONE, &no_wait, "Return once asked, not once down", NULL},
      {"timeout", 't', 0, G_OPTION_ARG_STRING, &timeout, "Give up waiting after S seconds", "S"},
      NF_CLIENT_OPTION_ENTRIES(&o),
      {NULL}};
  /* Each verb shows only the flags that mean something for it. */
  if (down)
    memmove(&entries[0], &entries[1], sizeof(entries) - sizeof(entries[0]));
  else
    memmove(&entries[1], &entries[2], sizeof(entries) - 2 * sizeof(entries[0]));
  const char *summary =
      strcmp(verb, "start") == 0
          ? "Starts stopped or failed guests (queued through the batch limiter)."
      : strcmp(verb, "stop") == 0
          ? "Stops guests in order (QMP quit, SIGKILL after the stop timeout)\n"
            "and returns once they are down."
      : strcmp(verb, "kill") == 0 ? "Kills guests now (SIGKILL) and returns once they are down."
      : strcmp(verb, "reflash") == 0
          ? "Factory reset: stops guests, recreates their disk overlays from the\n"
            "fleet's base image and starts them again (needs a fleet with disks)."
          : "Stops guests in order and starts them again.";
  g_autofree char *full = g_strdup_printf("%s\nTARGET: an id (3), a range (3-17), a list "
                                          "(1,4,7-9) or all.",
                                          summary);
  if (!nf_client_parse_args(verb, "TARGET", full, entries, &argc, &argv))
    return NF_EXIT_USAGE;
  if (argc != 2) {
    nf_cli_error("%s: %s; see `nervesfleet %s --help`", verb,
                 argc < 2 ? "missing TARGET (e.g. 3, 3-17, all)" : "too many arguments", verb);
    return NF_EXIT_USAGE;
  }
  g_autoptr(GError) error = NULL;
  g_autoptr(NfTargets) t = nf_targets_parse(argv[1], &error);
  guint timeout_ms = 0;
  if (!t || (timeout && !nf_parse_seconds_ms("--timeout", timeout, &timeout_ms, &error))) {
    nf_cli_error("%s: %s", verb, error->message);
    return NF_EXIT_USAGE;
  }
  g_autoptr(NfClient) c = nf_client_connect(&o, &error);
  if (!c)
    return nf_client_fail(verb, error, NULL);
  gboolean do_wait = down ? !no_wait : wait;
  json_t *args = json_pack("{s:s, s:b}", "targets", argv[1], "wait", do_wait);
  if (timeout_ms)
    json_object_set_new(args, "timeout_ms", json_integer(timeout_ms));
  json_auto_t *result = nf_client_call(c, verb, args, do_wait ? 0 : NF_CLIENT_TIMEOUT_MS, &error);
  if (!result) {
    int rc = nf_client_fail(verb, error, c);
    nf_client_print_problems(c, 10);
    return rc;
  }
  gsize n = json_array_size(json_object_get(result, "guests"));
  const char *done = strcmp(verb, "start") == 0     ? (do_wait ? "ready" : "starting")
                     : strcmp(verb, "restart") == 0 ? (do_wait ? "restarted, ready" : "restarting")
                     : strcmp(verb, "reflash") == 0 ? (do_wait ? "reflashed, ready" : "reflashing")
                     : strcmp(verb, "stop") == 0    ? (do_wait ? "stopped" : "stopping")
                                                    : (do_wait ? "killed" : "being killed");
  g_autofree char *norm = nf_targets_to_string(t);
  printf("%zu guest%s %s (%s)\n", n, n == 1 ? "" : "s", done, norm);
  return NF_EXIT_OK;
}

int nf_cmd_start(int argc, char **argv)
{
  return act("start", argc, argv);
}
int nf_cmd_stop(int argc, char **argv)
{
  return act("stop", argc, argv);
}
int nf_cmd_restart(int argc, char **argv)
{
  return act("restart", argc, argv);
}
int nf_cmd_kill(int argc, char **argv)
{
  return act("kill", argc, argv);
}
int nf_cmd_reflash(int argc, char **argv)
{
  return act("reflash", argc, argv);
}

int nf_cmd_wait(int argc, char **argv)
{
  g_auto(NfClientOptions) o = {0};
  gboolean ready = FALSE, down = FALSE;
  g_autofree char *timeout = NULL;
  GOptionEntry entries[] = {
      {"ready", 0, 0, G_OPTION_ARG_NONE, &ready, "Until the guests are ready (the default)", NULL},
      {"down", 0, 0, G_OPTION_ARG_NONE, &down, "Until the guests are stopped", NULL},
      {"timeout", 't', 0, G_OPTION_ARG_STRING, &timeout,
       "Fail after S seconds, naming the guests not there yet", "S"},
      NF_CLIENT_OPTION_ENTRIES(&o),
      {NULL}};
  if (!nf_client_parse_args("wait", "[TARGET]",
                            "Blocks until the guests (default: all) are ready. Exits 1 at once\n"
                            "when one fails or is stopped, or at --timeout, naming the guests\n"
                            "and quoting their last console lines.",
                            entries, &argc, &argv))
    return NF_EXIT_USAGE;
  if (argc > 2 || (ready && down)) {
    nf_cli_error("wait: %s; see `nervesfleet wait --help`",
                 argc > 2 ? "too many arguments" : "--ready and --down exclude each other");
    return NF_EXIT_USAGE;
  }
  const char *target = argc == 2 ? argv[1] : "all";
  g_autoptr(GError) error = NULL;
  g_autoptr(NfTargets) t = nf_targets_parse(target, &error);
  guint timeout_ms = 0;
  if (!t || (timeout && !nf_parse_seconds_ms("--timeout", timeout, &timeout_ms, &error))) {
    nf_cli_error("wait: %s", error->message);
    return NF_EXIT_USAGE;
  }
  g_autoptr(NfClient) c = nf_client_connect(&o, &error);
  if (!c)
    return nf_client_fail("wait", error, NULL);
  json_t *args = json_pack("{s:s, s:s}", "targets", target, "until", down ? "down" : "ready");
  if (timeout_ms)
    json_object_set_new(args, "timeout_ms", json_integer(timeout_ms));
  json_auto_t *result = nf_client_call(c, "wait", args, 0, &error);
  if (!result) {
    int rc = nf_client_fail("wait", error, c);
    nf_client_print_problems(c, 10);
    return rc;
  }
  gsize n = json_array_size(json_object_get(result, "guests"));
  printf("%zu guest%s %s\n", n, n == 1 ? "" : "s", down ? "down" : "ready");
  return NF_EXIT_OK;
}
