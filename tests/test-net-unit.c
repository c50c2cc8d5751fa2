/*
 * test-net-unit.c: the user-mode networking plan without a guest: --net,
 * --forward and --server values, the server address as the guest dials it,
 * and the host port allocator's contract (layout, free-port probe, explicit
 * base refused when taken, automatic base skipping taken ranges, the base
 * file kept for adoption), and the --ready http listener over real loopback
 * sockets (known serial 200, unknown 404, malformed 400, oversize 431, none
 * of them taking the listener down).
 */
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gio/gio.h>

#include "supervisor/net.h"
#include "supervisor/tap.h"
#include "supervisor/ready-http.h"
#include "tests/lib/nf-test.h"

/* Listens on 127.0.0.1:port (0: any); returns the fd, the port in *port. */
static int listen_loopback(guint *port)
{
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in sin = {.sin_family = AF_INET,
                            .sin_port = htons((guint16)*port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof(sin);
  g_assert_cmpint(fd, >=, 0);
  if (bind(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0 || listen(fd, 1) != 0) {
    close(fd);
    return -1;
  }
  g_assert_cmpint(getsockname(fd, (struct sockaddr *)&sin, &len), ==, 0);
  *port = ntohs(sin.sin_port);
  return fd;
}

static void test_parse(void)
{
  NfNetMode mode = NF_NET_NONE;
  guint16 port = 0;
  g_autoptr(GError) error = NULL;
  g_assert_true(nf_net_parse_mode("user", &mode, NULL));
  g_assert_cmpint(mode, ==, NF_NET_USER);
  g_assert_true(nf_net_parse_mode("none", &mode, NULL));
  g_assert_cmpint(mode, ==, NF_NET_NONE);
  g_assert_true(nf_net_parse_mode("tap", &mode, NULL));
  g_assert_cmpint(mode, ==, NF_NET_TAP);
  g_assert_false(nf_net_parse_mode("bridge", &mode, &error));
  g_assert_nonnull(strstr(error->message, "--net 'bridge'"));
  g_clear_error(&error);

  g_assert_true(nf_net_parse_port("--forward", "22", &port, NULL));
  g_assert_cmpuint(port, ==, 22);
  const char *bad_ports[] = {"0", "65536", "-1", "+22", "22x", "", " 22"};
  for (guint i = 0; i < G_N_ELEMENTS(bad_ports); i++) {
    g_assert_false(nf_net_parse_port("--forward", bad_ports[i], &port, &error));
    g_assert_nonnull(strstr(error->message, "--forward"));
    g_clear_error(&error);
  }

  const struct {
    const char *given, *guest;
  } good[] = {{"127.0.0.1:4000", "10.0.2.2:4000"},
              {"localhost:80", "10.0.2.2:80"},
              {"192.168.1.5:1883", "192.168.1.5:1883"},
              {"ota.example.com:443", "ota.example.com:443"}};
  for (guint i = 0; i < G_N_ELEMENTS(good); i++) {
    g_autofree char *guest = NULL;
    g_assert_true(nf_net_parse_server(good[i].given, NULL, &guest, NULL));
    g_assert_cmpstr(guest, ==, good[i].guest);
  }
  g_autofree char *bridged = NULL;
  g_assert_true(nf_net_parse_server("localhost:80", "10.77.0.1", &bridged, NULL));
  g_assert_cmpstr(bridged, ==, "10.77.0.1:80");
  const char *bad[] = {"4000",       ":4000",  "host:",  "host:0",
                       "host:70000", "::1:80", "a b:80", "host:80x"};
  for (guint i = 0; i < G_N_ELEMENTS(bad); i++) {
    char *guest = NULL;
    g_assert_false(nf_net_parse_server(bad[i], NULL, &guest, &error));
    g_assert_null(guest);
    g_assert_nonnull(strstr(error->message, "--server"));
    g_clear_error(&error);
  }
}

static void config_for(NfFleetConfig *c, guint count, guint base)
{
  nf_fleet_config_init(c);
  c->net = NF_NET_USER;
  c->count = count;
  c->id_offset = 10;
  c->forwards[0] = 22;
  c->forwards[1] = 80;
  c->n_forwards = 2;
  c->forward_base = base;
}

static void test_allocator(void)
{
  g_autofree char *dir = nf_test_tmpdir_new();
  g_autofree char *base_file = g_build_filename(dir, "net.base", NULL);
  g_autoptr(GError) error = NULL;
  NfFleetConfig c;

  /* A port somebody listens on is taken; once closed it is free again. */
  guint busy = 0;
  int fd = listen_loopback(&busy);
  g_assert_cmpint(fd, >=, 0);
  g_assert_false(nf_net_port_is_free(busy));

  /* An explicit base whose range holds that port is refused, naming it.
   * The range starts at it: the error names the first taken port, and the
   * ports below an ephemeral one may be anybody's (parallel tests). */
  config_for(&c, 3, busy);
  g_assert_null(nf_net_new(&c, dir, NULL, &error));
  g_autofree char *want = g_strdup_printf("host port %u", busy);
  g_assert_nonnull(strstr(error->message, want));
  g_assert_false(g_file_test(base_file, G_FILE_TEST_EXISTS));
  g_clear_error(&error);
  nf_fleet_config_clear(&c);

  /* Past 65535 is refused too. */
  config_for(&c, 3, 65532);
  g_assert_null(nf_net_new(&c, dir, NULL, &error));
  g_assert_nonnull(strstr(error->message, "65535"));
  g_clear_error(&error);
  nf_fleet_config_clear(&c);

  /* Automatic: a free range, recorded, laid out base + (k-1)*F + j. */
  config_for(&c, 3, 0);
  NfNet *net = nf_net_new(&c, dir, NULL, &error);
  g_assert_no_error(error);
  guint base = nf_net_base(net);
  g_assert_cmpuint(base, >=, NF_NET_AUTO_BASE_LOW);
  g_assert_cmpuint(base + 6, <=, NF_NET_AUTO_BASE_HIGH);
  for (guint p = base; p < base + 6; p++)
    g_assert_true(nf_net_port_is_free(p));
  NfNetForward f[NF_NET_MAX_FORWARDS];
  g_assert_cmpuint(nf_net_forwards(net, 12, f), ==, 2); /* second guest */
  g_assert_cmpuint(f[0].host, ==, base + 2);
  g_assert_cmpuint(f[0].guest, ==, 22);
  g_assert_cmpuint(f[1].host, ==, base + 3);
  g_assert_cmpuint(f[1].guest, ==, 80);
  g_assert_cmpuint(nf_net_forwards(net, 10, f), ==, 0); /* not a guest of ours */
  g_assert_true(nf_net_check_guest(net, 12, NULL));
  g_autofree char *text = NULL;
  g_assert_true(g_file_get_contents(base_file, &text, NULL, NULL));
  g_assert_cmpuint((guint)atoi(text), ==, base);

  /* A port of a guest taken by someone else is caught at its spawn. */
  guint taken = base + 4;
  int fd2 = listen_loopback(&taken);
  if (fd2 >= 0) {
    g_assert_false(nf_net_check_guest(net, 13, &error));
    g_autofree char *msg = g_strdup_printf("host port %u", base + 4);
    g_assert_nonnull(strstr(error->message, msg));
    g_clear_error(&error);
    /* A new plan of the same fleet (an adopting supervisor) keeps the
     * recorded base although guests hold those ports. */
    NfNet *again = nf_net_new(&c, dir, NULL, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(nf_net_base(again), ==, base);
    nf_net_free(again, TRUE);
    close(fd2);
  }
  nf_net_free(net, FALSE);
  g_assert_false(g_file_test(base_file, G_FILE_TEST_EXISTS));
  nf_fleet_config_clear(&c);
  close(fd);
  nf_test_tmpdir_cleanup(dir);
}

/* --- ready-http: a client thread sends raw bytes, the main context serves --- */

typedef struct {
  guint port;
  char *request;
  char *answer;
  gint done;
} Exchange;

static gpointer client_thread(gpointer data)
{
  Exchange *x = data;
  g_autoptr(GSocketClient) client = g_socket_client_new();
  g_socket_client_set_timeout(client, 30);
  g_socket_client_set_enable_proxy(client, FALSE);
  g_autoptr(GSocketConnection) conn =
      g_socket_client_connect_to_host(client, "127.0.0.1", (guint16)x->port, NULL, NULL);
  GString *got = g_string_new(NULL);
  if (conn) {
    GOutputStream *out = g_io_stream_get_output_stream(G_IO_STREAM(conn));
    GInputStream *in = g_io_stream_get_input_stream(G_IO_STREAM(conn));
    g_output_stream_write_all(out, x->request, strlen(x->request), NULL, NULL, NULL);
    char buf[512];
    gssize n;
    while ((n = g_input_stream_read(in, buf, sizeof(buf), NULL, NULL)) > 0)
      g_string_append_len(got, buf, n);
  }
  x->answer = g_string_free(got, FALSE);
  g_atomic_int_set(&x->done, 1);
  /* The main thread may sleep in poll with nothing else due: wake it. */
  g_main_context_wakeup(g_main_context_default());
  return NULL;
}

static gboolean exchange_done(gpointer data)
{
  Exchange *x = data;
  return g_atomic_int_get(&x->done) != 0;
}

/* Sends `request`, serves until the answer is complete; returns the answer. */
static char *exchange(guint port, const char *request)
{
  Exchange x = {.port = port, .request = (char *)request};
  GThread *t = g_thread_new("client", client_thread, &x);
  g_assert_true(nf_test_wait_for(exchange_done, &x, 30000));
  g_thread_join(t);
  return x.answer;
}

static gboolean known_serial_cb(const char *serial, gpointer data)
{
  GPtrArray *seen = data;
  g_ptr_array_add(seen, g_strdup(serial));
  return g_str_equal(serial, "NF-000001");
}

static void test_ready_http(void)
{
  g_autoptr(GPtrArray) seen = g_ptr_array_new_with_free_func(g_free);
  g_autoptr(GError) error = NULL;
  NfReadyHttp *http = nf_ready_http_new(NULL, NULL, known_serial_cb, seen, &error);
  g_assert_no_error(error);
  guint port = nf_ready_http_port(http);
  g_autofree char *url = g_strdup_printf("http://10.0.2.2:%u/ready", port);
  g_assert_cmpstr(nf_ready_http_guest_url(http), ==, url);

  /* What busybox wget sends. */
  g_autofree char *ok = exchange(port, "GET /ready?serial=NF-000001 HTTP/1.1\r\nHost: "
                                       "10.0.2.2\r\nUser-Agent: Wget\r\nConnection: "
                                       "close\r\n\r\n");
  g_assert_true(g_str_has_prefix(ok, "HTTP/1.0 200 OK\r\n"));
  g_assert_cmpuint(seen->len, ==, 1);
  g_assert_cmpstr(seen->pdata[0], ==, "NF-000001");

  g_autofree char *unknown = exchange(port, "GET /ready?x=1&serial=NF-000099 HTTP/1.0\r\n\r\n");
  g_assert_true(g_str_has_prefix(unknown, "HTTP/1.0 404 "));
  g_assert_cmpuint(seen->len, ==, 2);

  /* Malformed requests never reach the callback. */
  const char *bad[] = {"POST /ready?serial=NF-000001 HTTP/1.1\r\n\r\n",
                       "GET /other?serial=NF-000001 HTTP/1.1\r\n\r\n",
                       "GET /ready?serial=NF%2F1 HTTP/1.1\r\n\r\n",
                       "GET /ready?serial= HTTP/1.1\r\n\r\n", "hello\n\n"};
  for (guint i = 0; i < G_N_ELEMENTS(bad); i++) {
    g_autofree char *a = exchange(port, bad[i]);
    g_assert_true(g_str_has_prefix(a, "HTTP/1.0 400 "));
  }
  g_assert_cmpuint(seen->len, ==, 2);

  /* A head that never ends is cut at the bound. */
  g_autofree char *huge = g_strnfill(NF_READY_HTTP_MAX_HEAD + 100, 'a');
  g_autofree char *big = exchange(port, huge);
  g_assert_true(g_str_has_prefix(big, "HTTP/1.0 431 "));

  /* Still serving after all that. */
  g_autofree char *again = exchange(port, "GET /ready?serial=NF-000001 HTTP/1.1\r\n\r\n");
  g_assert_true(g_str_has_prefix(again, "HTTP/1.0 200 OK"));
  nf_ready_http_free(http);
}

/* Fleets "ab" and "bA" had one bridge name (a 32-bit g_str_hash of the
 * runtime dir collided): the second took the first one's bridge. */
static void test_bridge_name(void)
{
  g_autofree char *ab = nf_tap_bridge_name("/run/user/0/nervesfleet/ab");
  g_autofree char *ba = nf_tap_bridge_name("/run/user/0/nervesfleet/bA");
  g_assert_cmpstr(ab, !=, ba);
  g_assert_cmpuint(strlen(ab), ==, 15); /* IFNAMSIZ - 1 */
  g_assert_true(g_str_has_prefix(ab, "nfbr-"));
  g_autofree char *again = nf_tap_bridge_name("/run/user/0/nervesfleet/ab");
  g_assert_cmpstr(ab, ==, again);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/net/parse", test_parse);
  g_test_add_func("/net/bridge-name", test_bridge_name);
  g_test_add_func("/net/allocator", test_allocator);
  g_test_add_func("/net/ready-http", test_ready_http);
  return g_test_run();
}
