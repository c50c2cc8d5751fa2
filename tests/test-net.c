/*
 * test-net.c: user-mode networking end to end, with real guests under TCG.
 * Guards: with --net user each guest gets a DHCP lease and reaches a server
 * on the host's loopback through --server (the server sees every serial,
 * each once per boot); --ready http is what marks guests ready; each
 * guest's forwarded host port (from `ps --json`) reaches that guest's own
 * service; bad --net/--forward/--server/--ready values exit 2 with an error
 * naming the flag, and a taken --forward-base exits 1 naming the port.
 * As root: --net tap puts every guest on the fleet's bridge at its own
 * address, reachable from the host; taps vanish with their qemu (a
 * SIGKILLed supervisor included), `down` sweeps the bridge it left, and an
 * orderly stop removes it.
 */
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <string.h>
#include <unistd.h>
#include <gio/gio.h>
#include <jansson.h>

#include "supervisor/tap.h"
#include "tests/lib/nf-test.h"

#define BOOT_MS 180000
#define STOP_MS 60000
#define GUESTS 3

/* The fleet's "server": answers every GET with 200 and records the serial
 * of each /nervesfleet/hello?serial=X request line. Served by the main
 * context, which the waits of nf-test.h iterate. */
typedef struct {
  GSocketService *service;
  guint port;
  GHashTable *serials; /* serial -> count */
} Server;

static gboolean server_incoming_cb(GSocketService *service, GSocketConnection *conn,
                                   GObject *source, gpointer data)
{
  Server *s = data;
  GInputStream *in = g_io_stream_get_input_stream(G_IO_STREAM(conn));
  GOutputStream *out = g_io_stream_get_output_stream(G_IO_STREAM(conn));
  /* Blocking reads of a short head from a guest that already sent it. */
  g_autoptr(GDataInputStream) din = g_data_input_stream_new(in);
  g_filter_input_stream_set_close_base_stream(G_FILTER_INPUT_STREAM(din), FALSE);
  g_autofree char *line = g_data_input_stream_read_line(din, NULL, NULL, NULL);
  for (;;) {
    g_autofree char *h = g_data_input_stream_read_line(din, NULL, NULL, NULL);
    if (h == NULL || *h == '\0' || g_str_equal(h, "\r"))
      break;
  }
  const char *q = line ? strstr(line, "/nervesfleet/hello?serial=") : NULL;
  if (q) {
    q += strlen("/nervesfleet/hello?serial=");
    g_autofree char *serial = g_strndup(q, strcspn(q, " &"));
    guint n = GPOINTER_TO_UINT(g_hash_table_lookup(s->serials, serial));
    g_hash_table_insert(s->serials, g_steal_pointer(&serial), GUINT_TO_POINTER(n + 1));
  }
  const char *reply = "HTTP/1.0 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n";
  g_output_stream_write_all(out, reply, strlen(reply), NULL, NULL, NULL);
  g_io_stream_close(G_IO_STREAM(conn), NULL, NULL);
  return TRUE;
}

static void server_start(Server *s)
{
  s->service = g_socket_service_new();
  s->serials = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  g_autoptr(GInetAddress) lo = g_inet_address_new_loopback(G_SOCKET_FAMILY_IPV4);
  g_autoptr(GSocketAddress) addr = g_inet_socket_address_new(lo, 0);
  g_autoptr(GSocketAddress) bound = NULL;
  g_autoptr(GError) error = NULL;
  g_assert_true(g_socket_listener_add_address(G_SOCKET_LISTENER(s->service), addr,
                                              G_SOCKET_TYPE_STREAM, G_SOCKET_PROTOCOL_TCP, NULL,
                                              &bound, &error));
  s->port = g_inet_socket_address_get_port(G_INET_SOCKET_ADDRESS(bound));
  g_signal_connect(s->service, "incoming", G_CALLBACK(server_incoming_cb), s);
  g_socket_service_start(s->service);
}

static void server_stop(Server *s)
{
  g_socket_service_stop(s->service);
  g_socket_listener_close(G_SOCKET_LISTENER(s->service));
  g_object_unref(s->service);
  g_hash_table_unref(s->serials);
}

static gboolean all_serials_seen(gpointer data)
{
  Server *s = data;
  return g_hash_table_size(s->serials) >= GUESTS;
}

/* GET / from 127.0.0.1:port with a blocking client (the guest's httpd does
 * not need our main context); returns the body-and-head text. */
static char *http_get_from(const char *host, guint port)
{
  g_autoptr(GSocketClient) client = g_socket_client_new();
  g_socket_client_set_timeout(client, 60);
  g_socket_client_set_enable_proxy(client, FALSE);
  g_autoptr(GError) error = NULL;
  g_autoptr(GSocketConnection) conn =
      g_socket_client_connect_to_host(client, host, (guint16)port, NULL, &error);
  g_assert_no_error(error);
  const char *req = "GET / HTTP/1.0\r\nHost: localhost\r\n\r\n";
  g_assert_true(g_output_stream_write_all(g_io_stream_get_output_stream(G_IO_STREAM(conn)), req,
                                          strlen(req), NULL, NULL, NULL));
  GString *got = g_string_new(NULL);
  char buf[512];
  gssize n;
  while ((n = g_input_stream_read(g_io_stream_get_input_stream(G_IO_STREAM(conn)), buf, sizeof(buf),
                                  NULL, NULL)) > 0)
    g_string_append_len(got, buf, n);
  return g_string_free(got, FALSE);
}

static char *http_get(guint port)
{
  return http_get_from("127.0.0.1", port);
}

/* Entries of /sys/class/net/BRIDGE/brif: the taps attached. -1: no bridge. */
static int bridge_ports(const char *bridge)
{
  g_autofree char *path = g_strdup_printf("/sys/class/net/%s/brif", bridge);
  g_autoptr(GDir) dir = g_dir_open(path, 0, NULL);
  if (dir == NULL)
    return -1;
  int n = 0;
  while (g_dir_read_name(dir))
    n++;
  return n;
}

/* The tap test's guests have private-range addresses (10.B.x.y) on a host
 * bridge. The test runs in a network namespace of its own (a subprocess
 * that unshares its network and mounts, with only loopback up and /sys
 * remounted), so the bridge, the taps and every packet to the guests stay
 * inside it and vanish with it. */
static void enter_private_netns(void)
{
  g_assert_cmpint(unshare(CLONE_NEWNET | CLONE_NEWNS), ==, 0);
  /* /sys/class/net shows the namespace of whoever mounted /sys: a private
   * mount of it shows this one (the bridge checks read it). */
  g_assert_cmpint(mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL), ==, 0);
  g_assert_cmpint(mount("sysfs", "/sys", "sysfs", 0, NULL), ==, 0);
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  g_assert_cmpint(fd, >=, 0);
  struct ifreq ifr = {0};
  g_strlcpy(ifr.ifr_name, "lo", sizeof(ifr.ifr_name));
  g_assert_cmpint(ioctl(fd, SIOCGIFFLAGS, &ifr), ==, 0);
  ifr.ifr_flags |= IFF_UP;
  g_assert_cmpint(ioctl(fd, SIOCSIFFLAGS, &ifr), ==, 0);
  close(fd);
}

static void tap_bridge_body(void);

static void test_tap_bridge(void)
{
  if (geteuid() != 0 || access("/dev/net/tun", R_OK | W_OK) != 0) {
    g_test_skip("--net tap needs root and /dev/net/tun");
    return;
  }
  if (g_test_subprocess()) {
    enter_private_netns();
    tap_bridge_body();
    return;
  }
  /* The child makes its dirs in ours: GLib's test subprocess exits on a
   * failed assertion without cleaning up, and then our own failure below
   * stops what it left running and removes them (abort-cleanup.h). */
  g_autofree char *outer = nf_test_tmpdir_new();
  g_autofree char *old_tmp = g_strdup(g_getenv("TMPDIR"));
  g_setenv("TMPDIR", outer, TRUE);
  g_test_trap_subprocess(NULL, 0,
                         G_TEST_SUBPROCESS_INHERIT_STDOUT | G_TEST_SUBPROCESS_INHERIT_STDERR);
  if (old_tmp)
    g_setenv("TMPDIR", old_tmp, TRUE);
  else
    g_unsetenv("TMPDIR");
  g_test_trap_assert_passed();
  nf_test_tmpdir_cleanup(outer);
}

static void tap_bridge_body(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  g_autofree char *rt = g_build_filename(tmp, "run", "nervesfleet", "tap", NULL);
  g_autofree char *bridge = nf_tap_bridge_name(rt);
  const char *args[] = {"run",      "2",           "--name",  "tap",  "--net",          "tap",
                        "--append", "nf.httpd=80", "--ready", "http", "--stop-timeout", "20",
                        NULL};
  g_autoptr(NfTestProc) p = nf_test_proc_spawn(tmp, args);
  g_assert_true(nf_test_proc_wait_output(p, "all 2 guests ready", BOOT_MS));
  g_assert_cmpint(bridge_ports(bridge), ==, 2);

  /* The host reaches each guest at its own address on the bridge. */
  const char *ps[] = {"ps", "--json", "--name", "tap", NULL};
  g_autofree char *out = NULL;
  g_assert_cmpint(nf_test_run_cli(tmp, ps, 30000, &out), ==, 0);
  json_t *doc = json_loads(out, 0, NULL);
  g_assert_nonnull(doc);
  for (guint i = 0; i < 2; i++) {
    json_t *g = json_array_get(json_object_get(doc, "guests"), i);
    const char *ip = json_string_value(json_object_get(g, "ip"));
    g_assert_nonnull(ip);
    g_autofree char *page = http_get_from(ip, 80);
    g_autofree char *want =
        g_strdup_printf("serial=%s", json_string_value(json_object_get(g, "serial")));
    g_assert_nonnull(strstr(page, want));
  }
  json_decref(doc);

  /* A killed supervisor: its guests die with it, and their taps with them. */
  g_autoptr(GArray) qemus = nf_test_pids_matching(tmp);
  nf_test_proc_signal(p, SIGKILL);
  g_assert_cmpint(nf_test_proc_wait_exit(p, STOP_MS), ==, 128 + SIGKILL);
  g_assert_true(nf_test_wait_pids_gone(qemus, STOP_MS));
  g_assert_cmpint(bridge_ports(bridge), ==, 0);
  /* `down` sweeps the bridge it left. */
  const char *down[] = {"down", "--name", "tap", NULL};
  g_autofree char *dout = NULL;
  g_assert_cmpint(nf_test_run_cli(tmp, down, 30000, &dout), ==, 0);
  g_assert_false(nf_tap_bridge_exists(bridge));

  /* An orderly stop removes bridge and taps. */
  const char *one[] = {"run", "1", "--name", "tap", "--net", "tap", "--stop-timeout", "20", NULL};
  g_autoptr(NfTestProc) p2 = nf_test_proc_spawn(tmp, one);
  g_assert_true(nf_test_proc_wait_output(p2, "all 1 guests ready", BOOT_MS));
  g_assert_cmpint(bridge_ports(bridge), ==, 1);
  nf_test_proc_signal(p2, SIGTERM);
  g_assert_cmpint(nf_test_proc_wait_exit(p2, STOP_MS), ==, 0);
  g_assert_false(nf_tap_bridge_exists(bridge));
  nf_test_tmpdir_cleanup(tmp);
}

static void test_server_forwards_ready_http(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  Server server = {0};
  server_start(&server);
  g_autofree char *srv = g_strdup_printf("127.0.0.1:%u", server.port);
  g_autofree char *count = g_strdup_printf("%d", GUESTS);
  const char *args[] = {"run",       count,  "--name",         "net",         "--net",    "user",
                        "--forward", "80",   "--append",       "nf.httpd=80", "--server", srv,
                        "--ready",   "http", "--stop-timeout", "20",          NULL};
  g_autoptr(NfTestProc) p = nf_test_proc_spawn(tmp, args);
  g_autofree char *all = g_strdup_printf("all %d guests ready", GUESTS);
  g_assert_true(nf_test_proc_wait_output(p, all, BOOT_MS));

  /* Identity reached the network: one check-in per guest, each serial once. */
  g_assert_true(nf_test_wait_for(all_serials_seen, &server, BOOT_MS));
  for (guint id = 1; id <= GUESTS; id++) {
    g_autofree char *serial = g_strdup_printf("NF-%06u", id);
    g_assert_cmpuint(GPOINTER_TO_UINT(g_hash_table_lookup(server.serials, serial)), ==, 1);
    /* Ready came over HTTP, not from the console line. */
    g_autofree char *ev = g_strdup_printf("%s/state/nervesfleet/net/vm-%04u/events.log", tmp, id);
    g_autofree char *text = NULL;
    g_assert_true(g_file_get_contents(ev, &text, NULL, NULL));
    g_assert_nonnull(strstr(text, "-> ready: ready (http)"));
  }

  /* Each guest's forwarded port reaches that guest's own httpd. */
  const char *ps[] = {"ps", "--json", "--name", "net", NULL};
  g_autofree char *out = NULL;
  g_assert_cmpint(nf_test_run_cli(tmp, ps, 30000, &out), ==, 0);
  json_error_t jerr;
  json_t *doc = json_loads(out, 0, &jerr);
  g_assert_nonnull(doc);
  json_t *guests = json_object_get(doc, "guests");
  g_assert_cmpuint(json_array_size(guests), ==, GUESTS);
  GHashTable *hosts = g_hash_table_new(NULL, NULL);
  for (guint i = 0; i < GUESTS; i++) {
    json_t *g = json_array_get(guests, i);
    json_t *ports = json_object_get(g, "ports");
    g_assert_cmpuint(json_array_size(ports), ==, 1);
    guint host = (guint)json_integer_value(json_object_get(json_array_get(ports, 0), "host"));
    g_assert_cmpint(json_integer_value(json_object_get(json_array_get(ports, 0), "guest")), ==, 80);
    g_assert_false(g_hash_table_contains(hosts, GUINT_TO_POINTER(host)));
    g_hash_table_add(hosts, GUINT_TO_POINTER(host));
    g_autofree char *page = http_get(host);
    g_autofree char *want =
        g_strdup_printf("serial=%s", json_string_value(json_object_get(g, "serial")));
    g_assert_nonnull(strstr(page, want));
  }
  g_hash_table_unref(hosts);
  json_decref(doc);

  /* The table shows them too. */
  const char *table[] = {"ps", "--name", "net", NULL};
  g_autofree char *tout = NULL;
  g_assert_cmpint(nf_test_run_cli(tmp, table, 30000, &tout), ==, 0);
  g_assert_nonnull(strstr(tout, "PORTS"));
  g_assert_nonnull(strstr(tout, "->80"));

  nf_test_proc_signal(p, SIGTERM);
  g_assert_cmpint(nf_test_proc_wait_exit(p, STOP_MS), ==, 0);
  g_autofree char *rt = g_build_filename(tmp, "run", "nervesfleet", NULL);
  g_assert_false(g_file_test(rt, G_FILE_TEST_EXISTS)); /* net.base went with it */
  server_stop(&server);
  nf_test_tmpdir_cleanup(tmp);
}

/* A SIGKILLed supervisor leaves net.base behind (its guests die with it);
 * `down` removes it with the other runtime files, so nothing is left. */
static void test_killed_supervisor_down(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  const char *args[] = {"run", "1", "--name", "kill", "--forward", "22", NULL};
  g_autoptr(NfTestProc) p = nf_test_proc_spawn(tmp, args);
  g_assert_true(nf_test_proc_wait_output(p, "all 1 guests ready", BOOT_MS));
  g_autofree char *base = g_build_filename(tmp, "run/nervesfleet/kill/net.base", NULL);
  g_assert_true(g_file_test(base, G_FILE_TEST_EXISTS));
  g_autoptr(GArray) qemus = nf_test_pids_matching(tmp);
  nf_test_proc_signal(p, SIGKILL);
  g_assert_cmpint(nf_test_proc_wait_exit(p, STOP_MS), ==, 128 + SIGKILL);
  g_assert_true(nf_test_wait_pids_gone(qemus, STOP_MS));
  g_assert_true(g_file_test(base, G_FILE_TEST_EXISTS));
  const char *down[] = {"down", "--name", "kill", NULL};
  g_autofree char *out = NULL;
  g_assert_cmpint(nf_test_run_cli(tmp, down, 30000, &out), ==, 0);
  g_autofree char *rt = g_build_filename(tmp, "run/nervesfleet/kill", NULL);
  g_assert_false(g_file_test(rt, G_FILE_TEST_EXISTS));
  nf_test_tmpdir_cleanup(tmp);
}

static void test_bad_values(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  const struct {
    const char *flags[5];
    const char *says;
  } cases[] = {
      {{"--net", "vde"}, "--net 'vde'"},
      {{"--forward", "0"}, "--forward '0'"},
      {{"--forward", "ssh"}, "--forward 'ssh'"},
      {{"--forward", "22", "--forward", "22"}, "--forward 22 given twice"},
      {{"--net", "none", "--forward", "22"}, "--forward needs a network"},
      {{"--server", "4000"}, "--server '4000'"},
      {{"--server", "127.0.0.1:99999"}, "--server '127.0.0.1:99999'"},
      {{"--server", "[::1]:80"}, "--server '[::1]:80'"},
      {{"--ready", "dbus"}, "--ready 'dbus'"},
      {{"--forward-base", "2000"}, "--forward-base without --forward"},
      {{"--net", "tap", "--forward", "22"}, "--forward is for --net user"},
      {{"--forward", "22", "--forward-base", "65535"}, "past 65535"},
  };
  for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
    const char *args[12] = {"run", "2", "--name", "bad"};
    guint n = 4;
    for (guint j = 0; j < 5 && cases[i].flags[j]; j++)
      args[n++] = cases[i].flags[j];
    g_autofree char *out = NULL;
    g_assert_cmpint(nf_test_run_cli(tmp, args, 30000, &out), ==, 2);
    if (strstr(out, cases[i].says) == NULL)
      g_error("case %u: expected '%s' in: %s", i, cases[i].says, out);
  }

  /* A base whose range somebody holds: the fleet cannot start (exit 1). */
  g_autoptr(GSocketListener) l = g_socket_listener_new();
  g_autoptr(GInetAddress) lo = g_inet_address_new_loopback(G_SOCKET_FAMILY_IPV4);
  g_autoptr(GSocketAddress) addr = g_inet_socket_address_new(lo, 0);
  g_autoptr(GSocketAddress) bound = NULL;
  g_assert_true(g_socket_listener_add_address(l, addr, G_SOCKET_TYPE_STREAM, G_SOCKET_PROTOCOL_TCP,
                                              NULL, &bound, NULL));
  guint taken = g_inet_socket_address_get_port(G_INET_SOCKET_ADDRESS(bound));
  g_autofree char *base = g_strdup_printf("%u", taken);
  const char *busy[] = {"run", "2", "--name", "busy", "--forward", "22", "--forward-base",
                        base,  NULL};
  g_autofree char *out = NULL;
  g_assert_cmpint(nf_test_run_cli(tmp, busy, 60000, &out), ==, 1);
  g_autofree char *says = g_strdup_printf("host port %u", taken);
  g_assert_nonnull(strstr(out, says));
  g_socket_listener_close(l);
  nf_test_tmpdir_cleanup(tmp);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/net/bad-values", test_bad_values);
  g_test_add_func("/net/server-forwards-ready-http", test_server_forwards_ready_http);
  g_test_add_func("/net/tap-bridge", test_tap_bridge);
  g_test_add_func("/net/killed-supervisor-down", test_killed_supervisor_down);
  return g_test_run();
}
