/*
 * cmd-console.c: `nervesfleet console ID [--ro]`: attach this terminal to a
 * guest's serial console, relayed through the supervisor (which keeps
 * reading the console whether or not anyone is attached). Recent output is
 * replayed so the prompt shows; one client writes at a time, any number
 * watch with --ro. Ctrl-] then q detaches, and so does the end of stdin
 * (`echo 'uptime' | nervesfleet console 1` sends the line, then detaches).
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "cli/client.h"
#include "cli/console.h"
#include "cli/fleet-verbs.h"
#include "cli/parse.h"
#include "cli/verbs.h"
#include "supervisor/targets.h"

int nf_cmd_console(int argc, char **argv)
{
  g_auto(NfClientOptions) o = {0};
  gboolean ro = FALSE;
  GOptionEntry entries[] = {
      {"ro", 0, 0, G_OPTION_ARG_NONE, &ro, "Watch only: keys do not reach the guest", NULL},
      NF_CLIENT_OPTION_ENTRIES(&o),
      {NULL}};
  if (!nf_client_parse_args("console", "ID",
                            "Attaches to a guest's serial console. " NF_CONSOLE_ESCAPE_HINT
                            ".\nSeveral clients may watch (--ro); one writes at a time.",
                            entries, &argc, &argv))
    return NF_EXIT_USAGE;
  g_autoptr(GError) error = NULL;
  guint id = 0;
  if (argc != 2 ||
      !nf_parse_count("guest ID", g_str_has_prefix(argv[1], "vm-") ? argv[1] + 3 : argv[1],
                      NF_TARGETS_MAX_ID, &id, &error)) {
    nf_cli_error("console: %s",
                 error ? error->message : "expected one guest ID (e.g. `nervesfleet console 1`)");
    return NF_EXIT_USAGE;
  }
  g_autoptr(NfClient) c = nf_client_connect(&o, &error);
  if (!c)
    return nf_client_fail("console", error, NULL);
  json_auto_t *result = nf_client_call(
      c, "console", json_pack("{s:i, s:b}", "id", (int)id, "ro", ro), NF_CLIENT_TIMEOUT_MS, &error);
  if (!result)
    return nf_client_fail("console", error, c);
  const char *name = json_string_value(json_object_get(result, "name"));
  fprintf(stderr, "[attached to %s's console%s; " NF_CONSOLE_ESCAPE_HINT "]\n", name,
          ro ? ", read-only" : "");
  fflush(stderr);
  /* A stdout that goes away (`console 1 | head`) must end us through the
   * terminal's restore, not by SIGPIPE with the terminal left raw. */
  signal(SIGPIPE, SIG_IGN);
  NfConsoleEnd end = nf_console_run(c, !ro, &error);
  switch (end) {
  case NF_CONSOLE_DETACHED:
    fprintf(stderr, "\n[detached from %s]\n", name);
    return NF_EXIT_OK;
  case NF_CONSOLE_INPUT_ENDED:
    fprintf(stderr, "\n[input ended: detached from %s]\n", name);
    return NF_EXIT_OK;
  case NF_CONSOLE_CLOSED:
    switch (nf_client_stream_end(&o, id)) {
    case NF_STREAM_GUEST_GONE:
      fprintf(stderr, "\n[%s's console closed: the guest left the fleet (scaled away)]\n", name);
      break;
    case NF_STREAM_DROPPED:
      fprintf(stderr,
              "\n[%s's console closed by the supervisor: this terminal fell too far "
              "behind]\n",
              name);
      break;
    default:
      fprintf(stderr, "\n[%s's console closed: the fleet stopped]\n", name);
    }
    return NF_EXIT_FAILURE;
  default:
    return nf_client_fail("console", error, NULL);
  }
}
