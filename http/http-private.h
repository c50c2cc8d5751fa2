/*
 * http-private.h: what the http/ files share: the server's state, the
 * JSON reply helpers (server.c), the access check (access.c), the route handlers of each file, the
 * server-sent event streams (stream.c) and the metrics collectors
 * (metrics.c). Not for use outside http/.
 */
#pragma once
#include <jansson.h>
#include "http/http.h"
#include "http/soup-load.h"

/* Limits against hostile or broken clients (see http-api.md). */
#define NF_HTTP_MAX_CONNS 256            /* more get a 503 and are closed */
#define NF_HTTP_READ_TIMEOUT_S 10        /* a request must arrive within this */
#define NF_HTTP_WRITE_TIMEOUT_S 30       /* an answer must be taken within this */
#define NF_HTTP_MAX_PATH 1024            /* longer: 414 */
#define NF_HTTP_MAX_BODY (64 * 1024)     /* longer: 413 */
#define NF_HTTP_STREAM_BACKLOG (1 << 20) /* unread stream bytes before a drop */
#define NF_HTTP_STATS_INTERVAL_MS 2000   /* `stats` events on /api/events */

typedef struct NfHttpMetrics NfHttpMetrics;
typedef struct NfHttpStream NfHttpStream;

struct NfHttp {
  NfCommands *cmds;
  NfFleet *fleet;
  NfHttpOptions opts;
  char *url;
  guint port;
  SoupServer *server;
  GSocketListener *listener; /* accepted from one at a time (server.c: accept_next) */
  GCancellable *accepting;   /* the pending accept; cancelled at free */
  guint accept_pause;        /* no fd left: accepting again after a pause */
  gboolean told_no_fds;
  GHashTable *conns; /* GSocketConnection* (weak) -> NfHttpConn* */
  guint sweep_src;   /* deadline sweep while connections exist */
  GList *streams;    /* NfHttpStream*: open event/console streams */
  guint stats_src;   /* `stats` events while event streams exist */
  guint listener_id; /* fleet listener: events to streams */
  GList *refusals;   /* requests whose announced body is refused (server.c) */
  NfHttpMetrics *metrics;
};

/* --- server.c: answers -------------------------------------------------------- */
/* A JSON answer; `doc` stolen. */
void nf_http_reply_json(SoupServerMessage *msg, guint status, json_t *doc);
/* The same for a document already encoded (`len` bytes, copied). */
void nf_http_reply_text(SoupServerMessage *msg, guint status, const char *json, gsize len);
/* {"error":{"code":..., "message":...}} with `status`. */
void nf_http_reply_error(SoupServerMessage *msg, guint status, const char *code, const char *fmt,
                         ...) G_GNUC_PRINTF(4, 5);
/* The HTTP status for a command layer error code (control-protocol.md). */
guint nf_http_status_for_code(const char *code);
/* Closes the connection carrying `msg` (a stream whose reader fell behind). */
void nf_http_drop_connection(NfHttp *http, SoupServerMessage *msg);
/* `msg` will take long (a stream, or an answer that waits): no write
 * deadline for its connection until nf_http_conn_answering. */
void nf_http_conn_streaming(NfHttp *http, SoupServerMessage *msg);
/* `msg`'s answer is set: the client must take it within the write timeout. */
void nf_http_conn_answering(NfHttp *http, SoupServerMessage *msg);

/* --- access.c ------------------------------------------------------------------ */
/* A Host header (host[:port], [v6]:port) naming this machine: a loopback
 * address or "localhost". NULL: FALSE. */
gboolean nf_http_host_is_loopback(const char *host);
/* Whether the request may go on: answers 401/403 (and returns FALSE) when
 * it may not. The page's own files need no token. */
gboolean nf_http_check_access(NfHttp *http, SoupServerMessage *msg, const char *path);

/* --- route handlers ------------------------------------------------------------- */
/* api.c: /api/...; `path` is the request path. */
void nf_http_api_handle(NfHttp *http, SoupServerMessage *msg, const char *path);
/* A read-only command answered at once (ps, hello), run through the command
 * layer like any request; NULL with an error otherwise. */
json_t *nf_http_command_now(NfHttp *http, const char *cmd, json_t *args, GError **error);
/* metrics.c: GET /metrics. */
void nf_http_metrics_handle(NfHttp *http, SoupServerMessage *msg);
/* page.c: the dashboard's files; FALSE when `path` is none of them. */
gboolean nf_http_page_handle(NfHttp *http, SoupServerMessage *msg, const char *path);

/* --- metrics.c: collectors ------------------------------------------------------ */
NfHttpMetrics *nf_http_metrics_new(NfHttp *http);
void nf_http_metrics_free(NfHttpMetrics *m);
/* A guest changed state (boot times, exits and restarts are counted). */
void nf_http_metrics_vm_changed(NfHttpMetrics *m, NfVm *vm, NfVmState old_state);
/* The memory summary sent as `stats` events and read by the page. */
json_t *nf_http_metrics_stats(NfHttp *http);

/* --- stream.c: server-sent events --------------------------------------------- */
typedef enum {
  NF_HTTP_STREAM_EVENTS,  /* lifecycle events, `stats` */
  NF_HTTP_STREAM_CONSOLE, /* one guest's console output */
} NfHttpStreamKind;
/* Turns `msg` into an event stream (200, text/event-stream, chunked) and
 * keeps it open; it ends when the client goes or falls behind, or with
 * the server. */
NfHttpStream *nf_http_stream_open(NfHttp *http, SoupServerMessage *msg, NfHttpStreamKind kind);
/* One event: `event: NAME` and `data: JSON` (`doc` stolen). */
void nf_http_stream_send(NfHttpStream *s, const char *name, json_t *doc);
/* The same for a document the reader asked for as a whole (the fleet's
 * first `ps`): what is left of it unwritten does not count against
 * NF_HTTP_STREAM_BACKLOG; later events do. */
void nf_http_stream_send_whole(NfHttpStream *s, const char *name, json_t *doc);
/* The last `replay` bytes of guest `vm`'s console (none: 0), then its output
 * from there on, go to `s` as `console` events. */
void nf_http_stream_watch_console(NfHttpStream *s, NfVm *vm, gsize replay);
/* Every open stream of `kind` gets the event (`doc` stolen). */
void nf_http_streams_broadcast(NfHttp *http, NfHttpStreamKind kind, const char *name, json_t *doc);
gboolean nf_http_streams_any(NfHttp *http, NfHttpStreamKind kind);
/* The request of `msg` ended (finished or aborted): its stream, if any, closes. */
void nf_http_stream_message_gone(NfHttp *http, SoupServerMessage *msg);
void nf_http_streams_close_all(NfHttp *http);
