/*
 * run-http.h: `run --http`: the flags checked into NfHttpOptions before
 * anything starts (bad values are usage errors), and the server started
 * over the control socket's command layer once the fleet exists.
 */
#pragma once
#include <glib.h>
#include "cli/run-options.h"
#include "http/http.h"

/* Fills `opts` from the --http flags of `mode` (reads the token file),
 * and frees those flags (nf_run_http_flags_free);
 * `*enabled` FALSE when --http was not given. FALSE with an error naming
 * the flag: --http-token without --http, a bad address, a non-loopback
 * address without a token, an unreadable token. */
gboolean nf_run_http_options(NfRunMode *mode, NfHttpOptions *opts, gboolean *enabled,
                             GError **error);
void nf_run_http_options_clear(NfHttpOptions *opts);
/* Frees the --http flags of `mode` (on paths that never reach the above). */
void nf_run_http_flags_free(NfRunMode *mode);
