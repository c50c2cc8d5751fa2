/*
 * http.h: the HTTP door of a running fleet (`run --http [ADDR:]PORT`): a
 * dashboard page, Prometheus /metrics and a JSON API with server-sent
 * events, served by libsoup on the supervisor's one GMainLoop. It is a
 * second transport over the command layer (supervisor/command.h), next to
 * the control socket, sharing its NfCommands: the same documents, waits
 * and console seats whichever door a request came in by. It never acts on
 * a guest itself: every action is a command; like the control socket it
 * only watches guests (state changes, console output) to stream them. The
 * API is documented in http/http-api.md.
 *
 * Off by default. Without a token only loopback peers are served (and the
 * Host header must name a loopback address, so a web page elsewhere cannot
 * reach it through DNS rebinding); a non-loopback address needs a token,
 * which every API and metrics request must then carry as
 * `Authorization: Bearer TOKEN`.
 */
#pragma once
#include <glib.h>
#include "supervisor/command.h"

typedef struct NfHttp NfHttp;

typedef struct {
  char *addr;             /* IP address to bind, e.g. "127.0.0.1" */
  guint port;             /* 0: the kernel picks one (nf_http_port tells) */
  char *token;            /* NULL: loopback peers only, no token asked */
  gboolean guest_metrics; /* per-guest series in /metrics (off for huge fleets) */
} NfHttpOptions;

/* Parses `[ADDR:]PORT` (ADDR an IPv4 address or [IPv6]; default
 * 127.0.0.1). FALSE with an error naming the value and an example. */
gboolean nf_http_parse_listen(const char *spec, char **addr, guint *port, GError **error);
/* TRUE for 127.0.0.0/8 and ::1. */
gboolean nf_http_addr_is_loopback(const char *addr);
/* The token in FILE ("-": standard input), surrounding whitespace removed.
 * NULL with an error when unreadable, empty, or shorter than 16 bytes. */
char *nf_http_read_token(const char *path, GError **error);

/* Listens on opts->addr:opts->port and serves `cmds` (borrowed; must
 * outlive the server; its fleet is the one served). `opts` is copied.
 * NULL with an error naming the address when it cannot listen, or when a
 * non-loopback address has no token. */
NfHttp *nf_http_new(NfCommands *cmds, const NfHttpOptions *opts, GError **error);
/* Closes every connection and the listening socket. */
void nf_http_free(NfHttp *http);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(NfHttp, nf_http_free)

/* The bound port (the one the kernel chose for port 0). */
guint nf_http_port(const NfHttp *http);
/* "http://ADDR:PORT/", for messages. Owned by `http`. */
const char *nf_http_url(const NfHttp *http);
