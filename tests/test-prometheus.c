/*
 * test-prometheus.c: one Prometheus over several supervisors. Two
 * supervisors run disjoint shards (--shard 0/2 and 1/2, two fake guests
 * each) with --http on ephemeral loopback ports; a real Prometheus server
 * (Debian's `prometheus`) scrapes both every second with the shipped
 * recording rules (examples/prometheus/rules.yml). Guards, through its HTTP
 * query API: the ready guests summed over both equal the total asked for;
 * every serial is unique across both; both supervisors are told apart by
 * their fleet and host labels; the recording rules evaluate. Skips when
 * prometheus is not installed.
 */
#include <math.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <jansson.h>
#include <libsoup/soup.h>

#include "tests/lib/nf-test.h"

#define FLEET_MS 60000
#define PROM_MS 90000

typedef struct {
  SoupSession *session;
  guint port;
  const char *query;
  double want;
  double last; /* the last answer, NAN when none */
  gboolean due;
} Query;

/* A free loopback TCP port (bound and released: Prometheus takes no 0). */
static guint free_port(void)
{
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof a;
  g_assert_cmpint(bind(fd, (struct sockaddr *)&a, sizeof a), ==, 0);
  g_assert_cmpint(getsockname(fd, (struct sockaddr *)&a, &len), ==, 0);
  close(fd);
  return ntohs(a.sin_port);
}

/* The query's single value, or NAN (no answer yet, or an empty vector). */
static double query_value(SoupSession *s, guint port, const char *query)
{
  g_autofree char *escaped = g_uri_escape_string(query, NULL, FALSE);
  g_autofree char *url =
      g_strdup_printf("http://127.0.0.1:%u/api/v1/query?query=%s", port, escaped);
  g_autoptr(SoupMessage) msg = soup_message_new("GET", url);
  g_autoptr(GBytes) body = soup_session_send_and_read(s, msg, NULL, NULL);
  if (body == NULL || soup_message_get_status(msg) != 200)
    return NAN;
  json_auto_t *doc = json_loadb(g_bytes_get_data(body, NULL), g_bytes_get_size(body), 0, NULL);
  json_t *result = json_object_get(json_object_get(doc, "data"), "result");
  if (json_array_size(result) != 1)
    return NAN;
  json_t *value = json_array_get(json_object_get(json_array_get(result, 0), "value"), 1);
  return json_is_string(value) ? g_ascii_strtod(json_string_value(value), NULL) : NAN;
}

static gboolean tick_cb(gpointer data)
{
  ((Query *)data)->due = TRUE;
  return G_SOURCE_CONTINUE;
}

static gboolean answered_cb(gpointer data)
{
  Query *q = data;
  if (!q->due)
    return FALSE;
  q->due = FALSE;
  q->last = query_value(q->session, q->port, q->query);
  return q->last == q->want;
}

/* Asks Prometheus `query` each time a 250 ms tick fires (it has no push)
 * until it answers `want`; the test fails with the last answer otherwise. */
static void expect(SoupSession *s, guint port, const char *query, double want)
{
  Query q = {s, port, query, want, NAN, TRUE};
  guint tick = g_timeout_add(250, tick_cb, &q);
  gboolean ok = nf_test_wait_for(answered_cb, &q, PROM_MS);
  g_source_remove(tick);
  g_test_message("%s = %g (want %g)", query, q.last, want);
  g_assert_true(ok);
}

static NfTestProc *spawn_shard(const char *tmp, const char *shard, guint *port)
{
  g_autofree char *qemu = g_build_filename(g_getenv("NF_HELPERS"), "fake-qemu", NULL);
  g_autofree char *kernel = g_build_filename(tmp, "Image", NULL);
  g_assert_true(g_file_set_contents(kernel, "not a kernel", -1, NULL));
  const char *args[] = {"run",  "2",       "--shard", shard,    "--qemu",      qemu, "--kernel",
                        kernel, "--accel", "tcg",     "--http", "127.0.0.1:0", NULL};
  NfTestProc *p = nf_test_proc_spawn(tmp, args);
  const char *marker = "dashboard on http://127.0.0.1:";
  g_assert_true(nf_test_proc_wait_output(p, marker, FLEET_MS));
  *port = (guint)atoi(strstr(nf_test_proc_output(p), marker) + strlen(marker));
  g_assert_cmpuint(*port, >, 0);
  return p;
}

static void test_two_supervisors(void)
{
  g_autofree char *prom_bin = g_find_program_in_path("prometheus");
  if (prom_bin == NULL) {
    g_test_skip("prometheus is not installed (scripts/install-deps.sh installs it)");
    return;
  }
  g_autofree char *tmp = nf_test_tmpdir_new();
  guint p0 = 0, p1 = 0;
  NfTestProc *s0 = spawn_shard(tmp, "0/2", &p0);
  NfTestProc *s1 = spawn_shard(tmp, "1/2", &p1);

  /* The shipped rules, with a scrape job of this test's two ports. */
  g_autofree char *rules_src =
      g_build_filename(g_getenv("NF_SRCDIR"), "examples", "prometheus", "rules.yml", NULL);
  g_autofree char *rules = NULL;
  g_assert_true(g_file_get_contents(rules_src, &rules, NULL, NULL));
  g_autofree char *rules_path = g_build_filename(tmp, "rules.yml", NULL);
  g_assert_true(g_file_set_contents(rules_path, rules, -1, NULL));
  g_autofree char *config = g_strdup_printf("global:\n"
                                            "  scrape_interval: 1s\n"
                                            "  evaluation_interval: 1s\n"
                                            "rule_files:\n"
                                            "  - rules.yml\n"
                                            "scrape_configs:\n"
                                            "  - job_name: nervesfleet\n"
                                            "    static_configs:\n"
                                            "      - targets: ['127.0.0.1:%u', '127.0.0.1:%u']\n",
                                            p0, p1);
  g_autofree char *config_path = g_build_filename(tmp, "prometheus.yml", NULL);
  g_assert_true(g_file_set_contents(config_path, config, -1, NULL));
  guint prom_port = free_port();
  g_autofree char *a_config = g_strconcat("--config.file=", config_path, NULL);
  g_autofree char *a_storage = g_strdup_printf("--storage.tsdb.path=%s/tsdb", tmp);
  g_autofree char *a_listen = g_strdup_printf("--web.listen-address=127.0.0.1:%u", prom_port);
  g_autofree char *log = g_build_filename(tmp, "prometheus.log", NULL);
  g_autoptr(GSubprocessLauncher) l = g_subprocess_launcher_new(G_SUBPROCESS_FLAGS_NONE);
  g_subprocess_launcher_set_stdout_file_path(l, log);
  g_subprocess_launcher_set_stderr_file_path(l, log);
  g_autoptr(GError) error = NULL;
  g_autoptr(GSubprocess) prom =
      g_subprocess_launcher_spawn(l, &error, prom_bin, a_config, a_storage, a_listen, NULL);
  g_assert_no_error(error);

  SoupSession *s = soup_session_new();
  soup_session_set_timeout(s, 10);
  /* Ready guests summed over both supervisors equal the total asked for. */
  expect(s, prom_port, "sum(nervesfleet_guests_desired)", 4);
  expect(s, prom_port, "sum(nervesfleet_guests{state=\"ready\"})", 4);
  expect(s, prom_port, "nervesfleet:guests_ready:sum", 4);
  /* Every serial unique across both: four serials, each on one guest. */
  expect(s, prom_port, "count(count by (serial) (nervesfleet_guest_state == 1))", 4);
  expect(s, prom_port, "max(count by (serial) (nervesfleet_guest_state == 1))", 1);
  expect(s, prom_port, "nervesfleet:serials_duplicated:count", 0);
  /* The two supervisors are told apart by their own labels. */
  expect(s, prom_port, "count(count by (fleet, host) (nervesfleet_guests_desired))", 2);
  g_autofree char *host_q = g_strdup_printf(
      "sum(nervesfleet_guests{state=\"ready\",fleet=\"shard-1\",host=\"%s\"})", g_get_host_name());
  expect(s, prom_port, host_q, 2);
  g_object_unref(s);

  g_subprocess_send_signal(prom, SIGTERM);
  g_assert_true(g_subprocess_wait(prom, NULL, NULL));
  nf_test_proc_signal(s0, SIGTERM);
  nf_test_proc_signal(s1, SIGTERM);
  g_assert_cmpint(nf_test_proc_wait_exit(s0, FLEET_MS), ==, 0);
  g_assert_cmpint(nf_test_proc_wait_exit(s1, FLEET_MS), ==, 0);
  nf_test_proc_free(s0);
  nf_test_proc_free(s1);
  nf_test_tmpdir_cleanup(tmp);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/prometheus/two-supervisors", test_two_supervisors);
  return g_test_run();
}
