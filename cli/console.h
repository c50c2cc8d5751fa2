/*
 * console.h: the interactive side of `nervesfleet console`: puts the
 * terminal in raw mode, relays keys to the control connection and guest
 * output to the terminal, and watches for the escape (Ctrl-] then q) or the
 * end of stdin (`echo cmd | nervesfleet console 1` detaches once sent). The
 * terminal is restored on every way out: detach, the fleet going away, an
 * error, SIGTERM/SIGHUP/SIGINT from outside, and exit().
 */
#pragma once
#include <glib.h>
#include "cli/client.h"

#define NF_CONSOLE_ESCAPE 0x1d /* Ctrl-] */
#define NF_CONSOLE_ESCAPE_HINT "Ctrl-] then q detaches"

typedef enum {
  NF_CONSOLE_DETACHED,    /* the user pressed the escape */
  NF_CONSOLE_INPUT_ENDED, /* stdin reached EOF (a pipe, /dev/null): detached */
  NF_CONSOLE_CLOSED,      /* the supervisor closed the connection (fleet stopped) */
  NF_CONSOLE_ERROR,       /* I/O error; `error` says which */
} NfConsoleEnd;

/* The escape state machine, apart from any terminal (also fuzzed): appends
 * to `send` the keys of `in` (`len` bytes) that go to the guest, dropping
 * the escape (NF_CONSOLE_ESCAPE then q, Q or '.'). An escape followed by
 * anything else is passed on; a doubled escape sends one. `*escaped`
 * carries a trailing escape over to the next call. Returns TRUE when the
 * user asked to detach: keys after the detach are not consumed. */
gboolean nf_console_filter_keys(gboolean *escaped, const char *in, gsize len, GString *send);

/* Relays between stdin/stdout and `c` (already attached) until one of the
 * ends above; keys read before stdin's EOF are sent before detaching. `writer`: keys go to the
 * guest; otherwise they are dropped (a note says so once) and only the escape works. */
NfConsoleEnd nf_console_run(NfClient *c, gboolean writer, GError **error);
