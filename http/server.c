/*
 * server.c: the HTTP server (see http.h): listening, connections, the
 * checks every request passes before anything reads its body, routing to
 * api.c, metrics.c and page.c, and the JSON error answers all of them use.
 *
 * Connections are accepted here (one accept at a time on the default main
 * context, paused while no fd is left) and only then handed to libsoup, so their number is capped
 * (NF_HTTP_MAX_CONNS: the next one gets a 503 and is closed) and each has
 * deadlines: its request must arrive within NF_HTTP_READ_TIMEOUT_S (a slow
 * or silent client is closed) and its answer be taken within
 * NF_HTTP_WRITE_TIMEOUT_S, streams excepted (they have a backlog cap
 * instead, stream.c). Bodies are capped at NF_HTTP_MAX_BODY and must say
 * their length; paths at NF_HTTP_MAX_PATH. Whatever a client sends, the
 * answer is a 4xx with a JSON error and the supervisor goes on. Who may ask
 * is access.c's business.
 */
#include "http/http-private.h"

#include <stdarg.h>
#include <string.h>
#include <gio/gio.h>

typedef struct {
  NfHttp *http;
  char *key;               /* the peer's "address port", as libsoup reports it */
  GSocketConnection *conn; /* weak: libsoup owns it */
  GSocket *socket;
  gint64 read_deadline;  /* monotonic µs; 0 once the request is read */
  gint64 write_deadline; /* monotonic µs; 0 while reading or streaming */
} Conn;

/* A request answered before its body was read (see refuse_body). */
typedef struct {
  NfHttp *http;
  SoupServerMessage *msg; /* ref */
  guint src;
} Refusal;

static void incoming(NfHttp *http, GSocketConnection *connection);
static void accept_next(NfHttp *http);
static void conn_gone_cb(gpointer data, GObject *where);
static Conn *conn_for_msg(NfHttp *http, SoupServerMessage *msg);
static char *peer_key(GSocketAddress *addr);
static void conn_free(gpointer data);
static gboolean sweep_cb(gpointer data);
static void request_started_cb(SoupServer *server, SoupServerMessage *msg, gpointer data);
static void request_read_cb(SoupServer *server, SoupServerMessage *msg, gpointer data);
static void request_done_cb(SoupServer *server, SoupServerMessage *msg, gpointer data);
static gboolean early_checks(NfHttp *http, SoupServerMessage *m, const char *path);
static void early_cb(SoupServer *server, SoupServerMessage *msg, const char *path,
                     GHashTable *query, gpointer data);
static void handler_cb(SoupServer *server, SoupServerMessage *msg, const char *path,
                       GHashTable *query, gpointer data);
static void refuse_body(NfHttp *http, SoupServerMessage *msg);
static gboolean refuse_cb(gpointer data);
static void refusal_free(gpointer data);
static void add_header(const char *name, const char *value, gpointer data);
static void vm_changed_cb(NfFleet *fleet, NfVm *vm, NfVmState old_state, const char *reason,
                          gpointer data);
static void notice_cb(NfFleet *fleet, const char *message, gpointer data);

/* --- lifetime -------------------------------------------------------------------- */

NfHttp *nf_http_new(NfCommands *cmds, const NfHttpOptions *opts, GError **error)
{
  if (!opts->token && !nf_http_addr_is_loopback(opts->addr)) {
    g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                "--http %s: serving beyond this host needs a token: add --http-token FILE "
                "(or bind 127.0.0.1)",
                opts->addr);
    return NULL;
  }
  if (!nf_soup_load(error))
    return NULL;
  g_autoptr(GInetAddress) ia = g_inet_address_new_from_string(opts->addr);
  g_autoptr(GSocketAddress) sa = g_inet_socket_address_new(ia, (guint16)opts->port);
  GSocketListener *listener = g_socket_listener_new();
  /* GLib's default backlog (10) would leave a burst of clients in SYN retries. */
  g_socket_listener_set_backlog(listener, 128);
  g_autoptr(GSocketAddress) bound = NULL;
  if (!g_socket_listener_add_address(listener, sa, G_SOCKET_TYPE_STREAM, G_SOCKET_PROTOCOL_TCP,
                                     NULL, &bound, error)) {
    g_prefix_error(error, "--http %s:%u: ", opts->addr, opts->port);
    g_object_unref(listener);
    return NULL;
  }
  NfHttp *http = g_new0(NfHttp, 1);
  http->cmds = cmds;
  http->fleet = nf_commands_fleet(cmds);
  http->opts.addr = g_strdup(opts->addr);
  http->opts.port = opts->port;
  http->opts.token = g_strdup(opts->token);
  http->opts.guest_metrics = opts->guest_metrics;
  http->port = g_inet_socket_address_get_port(G_INET_SOCKET_ADDRESS(bound));
  http->url = g_strdup_printf(strchr(opts->addr, ':') ? "http://[%s]:%u/" : "http://%s:%u/",
                              opts->addr, http->port);
  http->listener = listener;
  http->accepting = g_cancellable_new();
  http->conns = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, conn_free);
  http->server = g_object_new(SOUP_TYPE_SERVER, "server-header", "nervesfleet", NULL);
  soup_server_add_early_handler(http->server, NULL, early_cb, http, NULL);
  soup_server_add_handler(http->server, NULL, handler_cb, http, NULL);
  g_signal_connect(http->server, "request-started", G_CALLBACK(request_started_cb), http);
  g_signal_connect(http->server, "request-read", G_CALLBACK(request_read_cb), http);
  g_signal_connect(http->server, "request-finished", G_CALLBACK(request_done_cb), http);
  g_signal_connect(http->server, "request-aborted", G_CALLBACK(request_done_cb), http);
  http->metrics = nf_http_metrics_new(http);
  static const NfFleetCallbacks fleet_cb = {.vm_changed = vm_changed_cb, .notice = notice_cb};
  http->listener_id = nf_fleet_add_listener(http->fleet, &fleet_cb, http);
  accept_next(http);
  return http;
}

/* Accepting by hand rather than through a GSocketService: the service
 * answers a failed accept with a warning and at once another accept, so
 * with no fd left (EMFILE: the fleet's budget spent, a flood of clients)
 * it spun on the queued connection at 100 % of a core. Here that pauses,
 * said once, as the control socket's listener does. */
#define NF_HTTP_ACCEPT_PAUSE_MS 100

static gboolean accept_resume_cb(gpointer data)
{
  NfHttp *http = data;
  http->accept_pause = 0;
  accept_next(http);
  return G_SOURCE_REMOVE;
}

static void accepted_cb(GObject *source, GAsyncResult *res, gpointer data)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(GSocketConnection) conn =
      g_socket_listener_accept_finish(G_SOCKET_LISTENER(source), res, NULL, &error);
  if (g_error_matches(error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
    return; /* nf_http_free: `data` is gone */
  NfHttp *http = data;
  if (g_error_matches(error, G_IO_ERROR, G_IO_ERROR_TOO_MANY_OPEN_FILES)) {
    if (!http->told_no_fds)
      g_printerr("nervesfleet: --http: %s; new connections wait until some close (raise the "
                 "open-file limit: `ulimit -n`, LimitNOFILE=)\n",
                 error->message);
    http->told_no_fds = TRUE;
    http->accept_pause = g_timeout_add(NF_HTTP_ACCEPT_PAUSE_MS, accept_resume_cb, http);
    return;
  }
  http->told_no_fds = FALSE;
  if (conn)
    incoming(http, conn);
  accept_next(http);
}

static void accept_next(NfHttp *http)
{
  g_socket_listener_accept_async(http->listener, http->accepting, accepted_cb, http);
}

void nf_http_free(NfHttp *http)
{
  if (!http)
    return;
  nf_fleet_remove_listener(http->fleet, http->listener_id);
  g_cancellable_cancel(http->accepting);
  g_clear_handle_id(&http->accept_pause, g_source_remove);
  g_socket_listener_close(http->listener);
  nf_http_streams_close_all(http);
  while (http->refusals)
    g_source_remove(((Refusal *)http->refusals->data)->src);
  g_signal_handlers_disconnect_by_data(http->server, http);
  soup_server_disconnect(http->server);
  /* Connections libsoup still holds no longer call back into us. */
  GHashTableIter it;
  gpointer value;
  g_hash_table_iter_init(&it, http->conns);
  while (g_hash_table_iter_next(&it, NULL, &value)) {
    Conn *c = value;
    g_socket_shutdown(c->socket, TRUE, TRUE, NULL);
    g_object_weak_unref(G_OBJECT(c->conn), conn_gone_cb, c);
  }
  g_hash_table_unref(http->conns);
  g_object_unref(http->server);
  g_object_unref(http->listener);
  g_object_unref(http->accepting);
  if (http->sweep_src)
    g_source_remove(http->sweep_src);
  if (http->stats_src)
    g_source_remove(http->stats_src);
  nf_http_metrics_free(http->metrics);
  g_free(http->opts.addr);
  g_free(http->opts.token);
  g_free(http->url);
  g_free(http);
}

guint nf_http_port(const NfHttp *http)
{
  return http->port;
}

const char *nf_http_url(const NfHttp *http)
{
  return http->url;
}

/* --- connections ------------------------------------------------------------------ */

static void incoming(NfHttp *http, GSocketConnection *connection)
{
  GSocket *sock = g_socket_connection_get_socket(connection);
  if (g_hash_table_size(http->conns) >= NF_HTTP_MAX_CONNS) {
    /* No parsing needed to refuse: one fixed answer, then close. */
    g_autofree char *body =
        g_strdup_printf("{\"error\":{\"code\":\"busy\",\"message\":\"too many HTTP "
                        "connections (%d)\"}}\n",
                        NF_HTTP_MAX_CONNS);
    g_autofree char *busy =
        g_strdup_printf("HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                        "Connection: close\r\nContent-Length: %zu\r\n\r\n%s",
                        strlen(body), body);
    g_socket_set_blocking(sock, FALSE);
    (void)g_socket_send(sock, busy, strlen(busy), NULL, NULL);
    g_socket_shutdown(sock, TRUE, TRUE, NULL);
    g_io_stream_close(G_IO_STREAM(connection), NULL, NULL);
    return;
  }
  g_autoptr(GSocketAddress) local = g_socket_connection_get_local_address(connection, NULL);
  g_autoptr(GSocketAddress) remote = g_socket_connection_get_remote_address(connection, NULL);
  Conn *c = g_new0(Conn, 1);
  c->http = http;
  c->key = peer_key(remote);
  c->conn = connection;
  c->socket = sock;
  c->read_deadline = g_get_monotonic_time() + NF_HTTP_READ_TIMEOUT_S * G_USEC_PER_SEC;
  Conn *old = g_hash_table_lookup(http->conns, c->key);
  if (old) /* a reused port whose old connection libsoup has not let go of yet */
    g_object_weak_unref(G_OBJECT(old->conn), conn_gone_cb, old);
  g_hash_table_replace(http->conns, c->key, c);
  g_object_weak_ref(G_OBJECT(connection), conn_gone_cb, c);
  if (!http->sweep_src)
    http->sweep_src = g_timeout_add_seconds(1, sweep_cb, http);
  g_autoptr(GError) error = NULL;
  if (!soup_server_accept_iostream(http->server, G_IO_STREAM(connection), local, remote, &error))
    g_socket_shutdown(sock, TRUE, TRUE, NULL);
}

/* libsoup let go of a connection: forget it. */
static void conn_gone_cb(gpointer data, GObject *where)
{
  Conn *c = data;
  if (g_hash_table_lookup(c->http->conns, c->key) == c)
    g_hash_table_remove(c->http->conns, c->key);
  else
    conn_free(c);
}

static void conn_free(gpointer data)
{
  Conn *c = data;
  g_free(c->key);
  g_free(c);
}

/* "address port": a TCP connection's identity on this host. */
static char *peer_key(GSocketAddress *addr)
{
  if (!G_IS_INET_SOCKET_ADDRESS(addr))
    return g_strdup("?");
  GInetSocketAddress *ia = G_INET_SOCKET_ADDRESS(addr);
  g_autofree char *ip = g_inet_address_to_string(g_inet_socket_address_get_address(ia));
  return g_strdup_printf("%s %u", ip, g_inet_socket_address_get_port(ia));
}

/* libsoup does not tell which connection of ours carries a message; the
 * peer's address and port do. */
static Conn *conn_for_msg(NfHttp *http, SoupServerMessage *msg)
{
  g_autofree char *key = peer_key(soup_server_message_get_remote_address(msg));
  return g_hash_table_lookup(http->conns, key);
}

/* Closes connections past a deadline; stops when none are left. */
static gboolean sweep_cb(gpointer data)
{
  NfHttp *http = data;
  gint64 now = g_get_monotonic_time();
  GHashTableIter it;
  gpointer value;
  g_hash_table_iter_init(&it, http->conns);
  while (g_hash_table_iter_next(&it, NULL, &value)) {
    Conn *c = value;
    if ((c->read_deadline && now > c->read_deadline) ||
        (c->write_deadline && now > c->write_deadline)) {
      /* libsoup sees the connection fail and lets go of it (conn_gone_cb). */
      g_socket_shutdown(c->socket, TRUE, TRUE, NULL);
      c->read_deadline = c->write_deadline = 0;
    }
  }
  if (g_hash_table_size(http->conns) > 0)
    return G_SOURCE_CONTINUE;
  http->sweep_src = 0;
  return G_SOURCE_REMOVE;
}

static void request_started_cb(SoupServer *server, SoupServerMessage *msg, gpointer data)
{
  Conn *c = conn_for_msg(data, msg);
  if (c && !c->read_deadline) {
    /* A next request on a kept-alive connection: a new read deadline. */
    c->read_deadline = g_get_monotonic_time() + NF_HTTP_READ_TIMEOUT_S * G_USEC_PER_SEC;
    c->write_deadline = 0;
  }
}

static void request_read_cb(SoupServer *server, SoupServerMessage *msg, gpointer data)
{
  /* The whole (short) body came before the refusal ran: libsoup answers. */
  Refusal *refusal = g_object_get_data(G_OBJECT(msg), "nf-refused");
  if (refusal)
    g_source_remove(refusal->src);
  Conn *c = conn_for_msg(data, msg);
  if (c) {
    c->read_deadline = 0;
    c->write_deadline = g_get_monotonic_time() + NF_HTTP_WRITE_TIMEOUT_S * G_USEC_PER_SEC;
  }
}

static void request_done_cb(SoupServer *server, SoupServerMessage *msg, gpointer data)
{
  NfHttp *http = data;
  nf_http_stream_message_gone(http, msg);
  Conn *c = conn_for_msg(http, msg);
  if (c)
    c->write_deadline = 0;
}

void nf_http_conn_streaming(NfHttp *http, SoupServerMessage *msg)
{
  Conn *c = conn_for_msg(http, msg);
  if (c)
    c->write_deadline = 0;
}

void nf_http_conn_answering(NfHttp *http, SoupServerMessage *msg)
{
  Conn *c = conn_for_msg(http, msg);
  if (c)
    c->write_deadline = g_get_monotonic_time() + NF_HTTP_WRITE_TIMEOUT_S * G_USEC_PER_SEC;
}

void nf_http_drop_connection(NfHttp *http, SoupServerMessage *msg)
{
  Conn *c = conn_for_msg(http, msg);
  if (c)
    g_socket_shutdown(c->socket, TRUE, TRUE, NULL);
}

/* --- answers ------------------------------------------------------------------------ */

void nf_http_reply_json(SoupServerMessage *msg, guint status, json_t *doc)
{
  char *text = json_dumps(doc, JSON_COMPACT | JSON_REAL_PRECISION(10));
  json_decref(doc);
  nf_http_reply_text(msg, status, text ? text : "", text ? strlen(text) : 0);
  free(text);
}

void nf_http_reply_text(SoupServerMessage *msg, guint status, const char *json, gsize len)
{
  char *body = g_malloc(len + 2);
  memcpy(body, json, len);
  body[len] = '\n';
  body[len + 1] = '\0';
  soup_server_message_set_status(msg, status, NULL);
  SoupMessageHeaders *h = soup_server_message_get_response_headers(msg);
  soup_message_headers_replace(h, "Cache-Control", "no-store");
  soup_server_message_set_response(msg, "application/json", SOUP_MEMORY_TAKE, body, len + 1);
}

void nf_http_reply_error(SoupServerMessage *msg, guint status, const char *code, const char *fmt,
                         ...)
{
  va_list ap;
  va_start(ap, fmt);
  g_autofree char *raw = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  /* A path or header quoted back may hold any bytes: JSON strings may not. */
  g_autofree char *text = g_utf8_make_valid(raw, -1);
  nf_http_reply_json(msg, status,
                     json_pack("{s:{s:s, s:s}}", "error", "code", code, "message", text));
}

guint nf_http_status_for_code(const char *code)
{
  static const struct {
    const char *code;
    guint status;
  } map[] = {
      {"bad_request", 400},
      {"bad_args", 400},
      {"unsupported_version", 400},
      {"no_such_guest", 404},
      {"unknown_command", 404},
      {"permission_denied", 403},
      {"too_large", 413},
      {"busy", 409},
      {"failed", 409},
      {"unsupported", 409},
      {"timeout", 504},
  };
  for (gsize i = 0; i < G_N_ELEMENTS(map); i++)
    if (g_str_equal(code, map[i].code))
      return map[i].status;
  return 500;
}

/* --- checks and routing --------------------------------------------------------------- */

/* libsoup reads a body whatever the early handler answered; one we refuse
 * must not be read (a client may declare gigabytes and send them slowly).
 * From the next idle, the connection is taken from libsoup, the answer
 * already set is written as is, and the connection closed. */
static void refuse_body(NfHttp *http, SoupServerMessage *msg)
{
  Refusal *r = g_new0(Refusal, 1);
  r->http = http;
  r->msg = g_object_ref(msg);
  g_object_set_data(G_OBJECT(msg), "nf-refused", r);
  r->src = g_idle_add_full(G_PRIORITY_HIGH, refuse_cb, r, refusal_free);
  http->refusals = g_list_prepend(http->refusals, r);
}

static void refusal_free(gpointer data)
{
  Refusal *r = data;
  r->http->refusals = g_list_remove(r->http->refusals, r);
  g_object_set_data(G_OBJECT(r->msg), "nf-refused", NULL);
  g_object_unref(r->msg);
  g_free(r);
}

/* Each response header but the ones written below, as "Name: value\r\n". */
static void add_header(const char *name, const char *value, gpointer data)
{
  if (g_ascii_strcasecmp(name, "Content-Type") && g_ascii_strcasecmp(name, "Content-Length") &&
      g_ascii_strcasecmp(name, "Connection"))
    g_string_append_printf(data, "%s: %s\r\n", name, value);
}

static gboolean refuse_cb(gpointer data)
{
  Refusal *r = data;
  SoupServerMessage *msg = r->msg;
  Conn *c = conn_for_msg(r->http, msg);
  if (!c)
    return G_SOURCE_REMOVE;
  GSocket *sock = g_object_ref(c->socket);
  guint status = soup_server_message_get_status(msg);
  SoupMessageBody *body = soup_server_message_get_response_body(msg);
  g_autoptr(GBytes) bytes = soup_message_body_flatten(body);
  gsize len = 0;
  const char *text = g_bytes_get_data(bytes, &len);
  g_autoptr(GString) head = g_string_new(NULL);
  g_string_append_printf(head, "HTTP/1.1 %u %s\r\n", status, soup_status_get_phrase(status));
  soup_message_headers_foreach(soup_server_message_get_response_headers(msg), add_header, head);
  g_string_append_printf(head,
                         "Content-Type: application/json\r\nConnection: close\r\n"
                         "Content-Length: %zu\r\n\r\n",
                         len);
  GIOStream *stream = soup_server_message_steal_connection(msg);
  g_socket_set_blocking(sock, FALSE);
  (void)g_socket_send(sock, head->str, head->len, NULL, NULL);
  (void)g_socket_send(sock, text, len, NULL, NULL);
  /* Unread bytes at close would reset the connection before the client
   * reads the answer: take what already came. */
  char sink[16384];
  for (int i = 0; i < 8 && g_socket_receive(sock, sink, sizeof(sink), NULL, NULL) > 0; i++)
    ;
  g_socket_shutdown(sock, TRUE, TRUE, NULL);
  if (stream)
    g_io_stream_close(stream, NULL, NULL);
  g_clear_object(&stream);
  g_object_unref(sock);
  return G_SOURCE_REMOVE;
}

/* Runs once the headers are in, before any body is read: whatever fails
 * here is answered without reading it. */
static gboolean early_checks(NfHttp *http, SoupServerMessage *m, const char *path)
{
  GUri *uri = soup_server_message_get_uri(m);
  gsize len = strlen(path) + (g_uri_get_query(uri) ? strlen(g_uri_get_query(uri)) : 0);
  if (len > NF_HTTP_MAX_PATH) {
    nf_http_reply_error(m, 414, "too_large", "request path longer than %d bytes", NF_HTTP_MAX_PATH);
    return FALSE;
  }
  const char *method = soup_server_message_get_method(m);
  if (!g_str_equal(method, "GET") && !g_str_equal(method, "HEAD") && !g_str_equal(method, "POST")) {
    soup_message_headers_replace(soup_server_message_get_response_headers(m), "Allow",
                                 "GET, HEAD, POST");
    nf_http_reply_error(m, 405, "bad_request", "method %s not allowed", method);
    return FALSE;
  }
  if (!nf_http_check_access(http, m, path))
    return FALSE;
  SoupMessageHeaders *h = soup_server_message_get_request_headers(m);
  SoupEncoding enc = soup_message_headers_get_encoding(h);
  if (enc == SOUP_ENCODING_CHUNKED || enc == SOUP_ENCODING_EOF) {
    nf_http_reply_error(m, 411, "bad_request", "a request body must come with Content-Length");
    return FALSE;
  }
  if (enc == SOUP_ENCODING_CONTENT_LENGTH &&
      soup_message_headers_get_content_length(h) > NF_HTTP_MAX_BODY) {
    nf_http_reply_error(m, 413, "too_large", "request body longer than %d bytes", NF_HTTP_MAX_BODY);
    return FALSE;
  }
  return TRUE;
}

static void early_cb(SoupServer *server, SoupServerMessage *msg, const char *path,
                     GHashTable *query, gpointer data)
{
  if (early_checks(data, msg, path))
    return;
  /* Refused: a body it announced is not to be read. */
  SoupMessageHeaders *h = soup_server_message_get_request_headers(msg);
  SoupEncoding enc = soup_message_headers_get_encoding(h);
  if (enc == SOUP_ENCODING_CHUNKED ||
      (enc == SOUP_ENCODING_CONTENT_LENGTH && soup_message_headers_get_content_length(h) > 0))
    refuse_body(data, msg);
}

static void handler_cb(SoupServer *server, SoupServerMessage *msg, const char *path,
                       GHashTable *query, gpointer data)
{
  NfHttp *http = data;
  soup_message_headers_replace(soup_server_message_get_response_headers(msg), "Connection",
                               "close");
  if (g_str_has_prefix(path, "/api/") || g_str_equal(path, "/api")) {
    nf_http_api_handle(http, msg, path);
    return;
  }
  const char *method = soup_server_message_get_method(msg);
  if (g_str_equal(method, "POST")) {
    nf_http_reply_error(msg, 405, "bad_request", "POST only goes to /api/...");
    return;
  }
  if (g_str_equal(path, "/metrics")) {
    nf_http_metrics_handle(http, msg);
    return;
  }
  if (nf_http_page_handle(http, msg, path))
    return;
  nf_http_reply_error(msg, 404, "not_found", "no such path (try /, /metrics or /api/guests)");
}

/* --- fleet events -------------------------------------------------------------------- */

static void vm_changed_cb(NfFleet *fleet, NfVm *vm, NfVmState old_state, const char *reason,
                          gpointer data)
{
  NfHttp *http = data;
  nf_http_metrics_vm_changed(http->metrics, vm, old_state);
  if (nf_http_streams_any(http, NF_HTTP_STREAM_EVENTS))
    nf_http_streams_broadcast(http, NF_HTTP_STREAM_EVENTS, "state",
                              nf_commands_state_event(fleet, vm, old_state, reason));
}

static void notice_cb(NfFleet *fleet, const char *message, gpointer data)
{
  NfHttp *http = data;
  if (nf_http_streams_any(http, NF_HTTP_STREAM_EVENTS))
    nf_http_streams_broadcast(http, NF_HTTP_STREAM_EVENTS, "notice",
                              nf_commands_notice_event(fleet, message));
}
