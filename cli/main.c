/*
 * main.c: nervesfleet's entry point: finds the verb and hands it its argv.
 * Verbs live in their own files (cmd-*.c); this file only dispatches.
 */
#include <stdio.h>
#include <string.h>
#include <locale.h>

#include "cli/fleet-verbs.h"
#include "cli/verbs.h"

#define NF_VERSION "0.1.0"

static const NfVerb verbs[] = {
    {"run", nf_cmd_run, "start N guests and supervise them (-d: in the background)"},
    {"down", nf_cmd_down, "stop a fleet running in the background"},
    {"ps", nf_cmd_ps, "list the guests (--json: the stable schema)"},
    {"start", nf_cmd_start, "start guests: an id, a range 3-17, a list 1,4,7-9, or all"},
    {"stop", nf_cmd_stop, "stop guests in order"},
    {"restart", nf_cmd_restart, "stop guests and start them again"},
    {"kill", nf_cmd_kill, "kill guests now"},
    {"reflash", nf_cmd_reflash, "factory-reset guests' disks from the base and restart them"},
    {"scale", nf_cmd_scale, "grow or shrink the fleet to N guests"},
    {"balloon", nf_cmd_balloon, "set guests' balloon size (e.g. 96M)"},
    {"mem", nf_cmd_mem, "where the fleet's memory goes: host, KSM, per guest (--json)"},
    {"logs", nf_cmd_logs, "print a guest's console log (-f: follow)"},
    {"console", nf_cmd_console, "attach to a guest's serial console (Ctrl-] q detaches)"},
    {"wait", nf_cmd_wait, "block until guests are ready"},
    {"events", nf_cmd_events, "stream lifecycle events"},
};

static void usage(FILE *out);

static void usage(FILE *out)
{
  fprintf(out, "Usage: nervesfleet VERB [OPTION...]\n\n"
               "Runs and supervises fleets of virtual Nerves devices (qemu aarch64 guests).\n\n"
               "Verbs:\n");
  for (gsize i = 0; i < G_N_ELEMENTS(verbs); i++)
    fprintf(out, "  %-10s %s\n", verbs[i].name, verbs[i].summary);
  fprintf(out, "\n`nervesfleet VERB --help` shows a verb's options.\n");
}

void nf_cli_error(const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  g_autofree char *msg = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  fprintf(stderr, "nervesfleet: %s\n", msg);
}

int main(int argc, char **argv)
{
  setlocale(LC_ALL, "");
  /* Numbers we print are read by programs: /metrics (Prometheus takes only
   * "0.5", a de_DE printf writes "0,5"), JSON, logs. Messages and character
   * sets still follow the user's locale. */
  setlocale(LC_NUMERIC, "C");
  if (argc < 2) {
    usage(stderr);
    return NF_EXIT_USAGE;
  }
  if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
      strcmp(argv[1], "help") == 0) {
    usage(stdout);
    return NF_EXIT_OK;
  }
  if (strcmp(argv[1], "--version") == 0) {
    printf("nervesfleet %s\n", NF_VERSION);
    return NF_EXIT_OK;
  }
  for (gsize i = 0; i < G_N_ELEMENTS(verbs); i++)
    if (strcmp(argv[1], verbs[i].name) == 0)
      return verbs[i].run(argc - 1, argv + 1);
  nf_cli_error("unknown verb '%s'; see `nervesfleet --help`", argv[1]);
  return NF_EXIT_USAGE;
}
