/*
 * ready-http.c: the `--ready http` listener (see ready-http.h for why it is
 * this small and not the dashboard's server).
 *
 * Each connection reads its request head asynchronously into a bounded
 * buffer until the blank line that ends the headers (reading it all, rather
 * than the first line only, means closing does not reset a connection whose
 * client has not read the answer yet), answers with one short HTTP/1.0
 * response and closes. A deadline covers the connection's whole life, so a
 * client that sends nothing cannot hold a slot.
 */
#include "supervisor/ready-http.h"

#include <string.h>
#include <gio/gio.h>

#include "supervisor/net.h"

struct NfReadyHttp {
  GSocketService *service;
  guint port;
  char *url;
  NfReadyHttpFunc func;
  gpointer user_data;
  GHashTable *conns; /* Conn* */
};

typedef struct {
  NfReadyHttp *http;
  GSocketConnection *conn;
  GCancellable *cancel;
  char buf[NF_READY_HTTP_MAX_HEAD];
  gsize len;
  guint timer;
  char *peer;
} Conn;

static gboolean incoming_cb(GSocketService *service, GSocketConnection *connection, GObject *source,
                            gpointer data);
static void read_cb(GObject *source, GAsyncResult *res, gpointer data);
static void written_cb(GObject *source, GAsyncResult *res, gpointer data);
static gboolean timeout_cb(gpointer data);
static void conn_free(Conn *c);
static void answer(Conn *c);
static void reply(Conn *c, const char *status, const char *body);

NfReadyHttp *nf_ready_http_new(const char *bind_addr, const char *guest_host, NfReadyHttpFunc func,
                               gpointer user_data, GError **error)
{
  g_autoptr(GSocketService) service = g_socket_service_new();
  g_autoptr(GInetAddress) lo = bind_addr ? g_inet_address_new_from_string(bind_addr)
                                         : g_inet_address_new_loopback(G_SOCKET_FAMILY_IPV4);
  if (lo == NULL) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                "--ready http: '%s' is not an IPv4 address", bind_addr);
    return NULL;
  }
  g_autoptr(GSocketAddress) addr = g_inet_socket_address_new(lo, 0);
  g_autoptr(GSocketAddress) bound = NULL;
  if (!g_socket_listener_add_address(G_SOCKET_LISTENER(service), addr, G_SOCKET_TYPE_STREAM,
                                     G_SOCKET_PROTOCOL_TCP, NULL, &bound, error)) {
    g_prefix_error(error,
                   "--ready http: cannot listen on %s: ", bind_addr ? bind_addr : "127.0.0.1");
    return NULL;
  }
  NfReadyHttp *http = g_new0(NfReadyHttp, 1);
  http->service = g_steal_pointer(&service);
  http->port = g_inet_socket_address_get_port(G_INET_SOCKET_ADDRESS(bound));
  http->url =
      g_strdup_printf("http://%s:%u/ready", guest_host ? guest_host : NF_NET_HOST_ADDR, http->port);
  http->func = func;
  http->user_data = user_data;
  http->conns = g_hash_table_new_full(NULL, NULL, (GDestroyNotify)conn_free, NULL);
  g_signal_connect(http->service, "incoming", G_CALLBACK(incoming_cb), http);
  g_socket_service_start(http->service);
  return http;
}

guint nf_ready_http_port(const NfReadyHttp *http)
{
  return http->port;
}

const char *nf_ready_http_guest_url(const NfReadyHttp *http)
{
  return http->url;
}

void nf_ready_http_free(NfReadyHttp *http)
{
  if (http == NULL)
    return;
  g_signal_handlers_disconnect_by_data(http->service, http);
  g_socket_service_stop(http->service);
  g_socket_listener_close(G_SOCKET_LISTENER(http->service));
  g_hash_table_destroy(http->conns);
  g_object_unref(http->service);
  g_free(http->url);
  g_free(http);
}

static gboolean incoming_cb(GSocketService *service, GSocketConnection *connection, GObject *source,
                            gpointer data)
{
  NfReadyHttp *http = data;
  if (g_hash_table_size(http->conns) >= NF_READY_HTTP_MAX_CONNECTIONS) {
    g_message("ready-http: %d connections at once; closing a new one",
              NF_READY_HTTP_MAX_CONNECTIONS);
    g_io_stream_close(G_IO_STREAM(connection), NULL, NULL);
    return TRUE;
  }
  Conn *c = g_new0(Conn, 1);
  c->http = http;
  c->conn = g_object_ref(connection);
  c->cancel = g_cancellable_new();
  g_autoptr(GSocketAddress) remote = g_socket_connection_get_remote_address(connection, NULL);
  c->peer = remote && G_IS_INET_SOCKET_ADDRESS(remote)
                ? g_inet_address_to_string(
                      g_inet_socket_address_get_address(G_INET_SOCKET_ADDRESS(remote)))
                : g_strdup("?");
  c->timer = g_timeout_add(NF_READY_HTTP_TIMEOUT_MS, timeout_cb, c);
  g_hash_table_add(http->conns, c);
  GInputStream *in = g_io_stream_get_input_stream(G_IO_STREAM(connection));
  g_input_stream_read_async(in, c->buf, sizeof(c->buf) - 1, G_PRIORITY_DEFAULT, c->cancel, read_cb,
                            c);
  return TRUE;
}

/* Conns are freed only through the table; callbacks of a cancelled
 * operation still run, so they check the cancellable before touching `c`. */
static void read_cb(GObject *source, GAsyncResult *res, gpointer data)
{
  g_autoptr(GError) error = NULL;
  gssize n = g_input_stream_read_finish(G_INPUT_STREAM(source), res, &error);
  if (g_error_matches(error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
    return;
  Conn *c = data;
  if (n <= 0) {
    /* Closed before a whole head: a probe or a client that gave up. */
    g_hash_table_remove(c->http->conns, c);
    return;
  }
  c->len += (gsize)n;
  c->buf[c->len] = '\0';
  if (strstr(c->buf, "\r\n\r\n") || strstr(c->buf, "\n\n")) {
    answer(c);
    return;
  }
  if (c->len >= sizeof(c->buf) - 1) {
    g_message("ready-http: request from %s longer than %d bytes; refused", c->peer,
              NF_READY_HTTP_MAX_HEAD);
    reply(c, "431 Request Header Fields Too Large", "too large\n");
    return;
  }
  GInputStream *in = g_io_stream_get_input_stream(G_IO_STREAM(c->conn));
  g_input_stream_read_async(in, c->buf + c->len, sizeof(c->buf) - 1 - c->len, G_PRIORITY_DEFAULT,
                            c->cancel, read_cb, c);
}

char *nf_ready_http_parse_serial(const char *head, const char **problem)
{
  const char *eol = strpbrk(head, "\r\n");
  g_autofree char *line = g_strndup(head, eol ? (gsize)(eol - head) : strlen(head));
  g_auto(GStrv) w = g_strsplit(line, " ", -1);
  if (g_strv_length(w) != 3 || !g_str_has_prefix(w[2], "HTTP/1.")) {
    *problem = "not an HTTP/1 request line";
    return NULL;
  }
  if (!g_str_equal(w[0], "GET")) {
    *problem = "not a GET";
    return NULL;
  }
  if (!g_str_has_prefix(w[1], "/ready?")) {
    *problem = "not /ready";
    return NULL;
  }
  g_auto(GStrv) params = g_strsplit(w[1] + strlen("/ready?"), "&", -1);
  for (char **p = params; *p; p++) {
    if (!g_str_has_prefix(*p, "serial="))
      continue;
    const char *s = *p + strlen("serial=");
    gboolean ok = *s != '\0' && strlen(s) <= 64;
    for (const char *q = s; ok && *q; q++)
      ok = g_ascii_isalnum(*q) || strchr("._:+-", *q) != NULL;
    if (!ok) {
      *problem = "a serial that is empty, too long or has other characters than [A-Za-z0-9._:+-]";
      return NULL;
    }
    return g_strdup(s);
  }
  *problem = "no serial= parameter";
  return NULL;
}

static void answer(Conn *c)
{
  const char *problem = NULL;
  g_autofree char *serial = nf_ready_http_parse_serial(c->buf, &problem);
  if (serial == NULL) {
    g_autofree char *first = g_strndup(c->buf, strcspn(c->buf, "\r\n"));
    g_message("ready-http: bad request from %s (%s): %.80s", c->peer, problem, first);
    reply(c, "400 Bad Request", "expected GET /ready?serial=SERIAL\n");
    return;
  }
  if (!c->http->func(serial, c->http->user_data)) {
    g_message("ready-http: ready report from %s for unknown serial %s", c->peer, serial);
    reply(c, "404 Not Found", "no such serial in this fleet\n");
    return;
  }
  reply(c, "200 OK", "ok\n");
}

static void reply(Conn *c, const char *status, const char *body)
{
  char *text = g_strdup_printf("HTTP/1.0 %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
                               "Connection: close\r\n\r\n%s",
                               status, strlen(body), body);
  /* The text hangs on the cancellable, which the write holds until its
   * callback ran, even when the connection is dropped meanwhile. */
  g_object_set_data_full(G_OBJECT(c->cancel), "nf-reply", text, g_free);
  GOutputStream *out = g_io_stream_get_output_stream(G_IO_STREAM(c->conn));
  g_output_stream_write_all_async(out, text, strlen(text), G_PRIORITY_DEFAULT, c->cancel,
                                  written_cb, c);
}

static void written_cb(GObject *source, GAsyncResult *res, gpointer data)
{
  g_autoptr(GError) error = NULL;
  g_output_stream_write_all_finish(G_OUTPUT_STREAM(source), res, NULL, &error);
  if (g_error_matches(error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
    return;
  Conn *c = data;
  g_hash_table_remove(c->http->conns, c);
}

static gboolean timeout_cb(gpointer data)
{
  Conn *c = data;
  c->timer = 0;
  g_message("ready-http: connection from %s took longer than %d ms; closed", c->peer,
            NF_READY_HTTP_TIMEOUT_MS);
  g_hash_table_remove(c->http->conns, c);
  return G_SOURCE_REMOVE;
}

static void conn_free(Conn *c)
{
  if (c->timer)
    g_source_remove(c->timer);
  g_cancellable_cancel(c->cancel);
  g_io_stream_close(G_IO_STREAM(c->conn), NULL, NULL);
  g_object_unref(c->conn);
  g_object_unref(c->cancel);
  g_free(c->peer);
  g_free(c);
}
