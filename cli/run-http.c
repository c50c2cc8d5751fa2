/*
 * run-http.c: the --http flags of `run` (see run-http.h). The token is
 * read here, before the supervisor daemonizes, so `--http-token -` reads
 * the terminal's standard input and errors reach the terminal.
 */
#include "cli/run-http.h"

#include <string.h>

static gboolean parse(const NfRunMode *mode, NfHttpOptions *opts, gboolean *enabled,
                      GError **error);

gboolean nf_run_http_options(NfRunMode *mode, NfHttpOptions *opts, gboolean *enabled,
                             GError **error)
{
  gboolean ok = parse(mode, opts, enabled, error);
  nf_run_http_flags_free(mode);
  return ok;
}

void nf_run_http_flags_free(NfRunMode *mode)
{
  g_clear_pointer(&mode->http, g_free);
  g_clear_pointer(&mode->http_token, g_free);
}

static gboolean parse(const NfRunMode *mode, NfHttpOptions *opts, gboolean *enabled, GError **error)
{
  *opts = (NfHttpOptions){.guest_metrics = !mode->http_no_guest_metrics};
  *enabled = mode->http != NULL;
  if (!mode->http) {
    if (mode->http_token || mode->http_no_guest_metrics) {
      g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                  "%s only goes with --http [ADDR:]PORT",
                  mode->http_token ? "--http-token" : "--http-no-guest-metrics");
      return FALSE;
    }
    return TRUE;
  }
  if (!nf_http_parse_listen(mode->http, &opts->addr, &opts->port, error))
    return FALSE;
  if (mode->http_token) {
    opts->token = nf_http_read_token(mode->http_token, error);
    if (!opts->token) {
      nf_run_http_options_clear(opts);
      return FALSE;
    }
  } else if (!nf_http_addr_is_loopback(opts->addr)) {
    g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                "--http %s: serving beyond this host needs --http-token FILE (a secret every "
                "request must carry), or bind 127.0.0.1",
                mode->http);
    nf_run_http_options_clear(opts);
    return FALSE;
  }
  return TRUE;
}

void nf_run_http_options_clear(NfHttpOptions *opts)
{
  g_clear_pointer(&opts->addr, g_free);
  if (opts->token) {
    memset(opts->token, 0, strlen(opts->token));
    g_clear_pointer(&opts->token, g_free);
  }
}
