/*
 * run-options.h: the flags of `nervesfleet run`, parsed into an
 * NfFleetConfig (what the fleet is) and an NfRunMode (how this invocation
 * runs it: foreground, detached, quiet).
 */
#pragma once
#include <glib.h>
#include "cli/notify.h"
#include "supervisor/config.h"

typedef struct {
  gboolean quiet;
  gboolean detach;
  gboolean ephemeral; /* remove the fleet's state dir when it stops */
  char **exec_argv;   /* --exec CMD...: everything after --exec (owned), or NULL */
  /* --http [ADDR:]PORT, --http-token FILE|-, --http-no-guest-metrics
   * (owned; checked and used by cli/run-http.c) */
  char *http;
  char *http_token;
  gboolean http_no_guest_metrics;
  /* running as a service (cli/notify.h, cli/run-config.h) */
  NfNotifyReady notify_ready; /* --notify-ready: when systemd hears READY=1 */
  gboolean print_config;      /* --print-config: print the effective config, run nothing */
} NfRunMode;

/* Parses argv (`run` first) into `cfg` (already initialised with defaults)
 * and `mode`, with the fleet file of --config FILE under the command line
 * (cli/run-config.h). Errors are G_OPTION_ERROR with a message naming the
 * flag (or the file and key). */
gboolean nf_run_options_parse(int *argc, char ***argv, NfFleetConfig *cfg, NfRunMode *mode,
                              GError **error);
