/*
 * ready-http.h: `--ready http`: a loopback HTTP listener on the supervisor's
 * main loop where each guest reports ready with one request,
 * `GET /ready?serial=NF-000001`, as the field's own launcher did, instead of
 * printing a marker on its console.
 *
 * Why not the dashboard's HTTP server (libsoup 3, http/ on another branch):
 * this must work in every build and fleet, answers one fixed GET per guest
 * boot and nothing else, and must not widen the attack surface of a
 * listener that guests reach. It is a few dozen lines of GIO: one request per
 * connection, request head bounded (NF_READY_HTTP_MAX_HEAD bytes), a deadline
 * per connection, a cap on connections at once, and anything else answered
 * 400/404 with a log line. Once the dashboard's server is in, the handler
 * (serial -> guest) can move onto it as one route; the contract below stays.
 *
 * The listener binds 127.0.0.1 on a port the kernel picks, where a
 * user-mode guest reaches it as 10.0.2.2:PORT (see net.h); with --net tap
 * it binds the bridge's address instead, which the guests reach directly.
 */
#pragma once
#include <glib.h>

#define NF_READY_HTTP_MAX_HEAD 4096      /* request line + headers */
#define NF_READY_HTTP_MAX_CONNECTIONS 64 /* at once; more are closed at accept */
#define NF_READY_HTTP_TIMEOUT_MS 10000   /* a connection's whole life */

typedef struct NfReadyHttp NfReadyHttp;

/* Called on the main loop for each well-formed report; `serial` holds only
 * [A-Za-z0-9._:+-]. Returns TRUE when the serial names a guest of the fleet
 * (answered 200), FALSE otherwise (404). */
typedef gboolean (*NfReadyHttpFunc)(const char *serial, gpointer user_data);

/* Listens on `bind_addr` (an IPv4 literal; NULL: 127.0.0.1), port picked
 * by the kernel, on the thread-default main context; guests are told
 * `guest_host` (NULL: 10.0.2.2) in the URL. NULL with an error when it
 * cannot listen. */
NfReadyHttp *nf_ready_http_new(const char *bind_addr, const char *guest_host, NfReadyHttpFunc func,
                               gpointer user_data, GError **error);

/* The port it listens on. */
guint nf_ready_http_port(const NfReadyHttp *http);

/* The URL a user-mode guest requests, without the query:
 * "http://10.0.2.2:PORT/ready". Owned by `http`. */
const char *nf_ready_http_guest_url(const NfReadyHttp *http);

/* The serial a request head reports: "GET /ready?serial=X HTTP/1.x" with X
 * of 1-64 characters of [A-Za-z0-9._:+-]. Anything else returns NULL and
 * sets *problem (a static phrase for the log). Caller frees. Pure, so the
 * fuzzer reaches it without a socket. */
char *nf_ready_http_parse_serial(const char *head, const char **problem);

/* Stops listening and drops connections in flight. NULL is fine. */
void nf_ready_http_free(NfReadyHttp *http);
