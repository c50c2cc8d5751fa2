/*
 * metrics.c: GET /metrics in the Prometheus text exposition format
 * (version 0.0.4), and the memory summary the page charts (`stats`).
 *
 * Fleet values come from the `ps` document, run through the command layer
 * like any request, so /metrics, GET /api/guests and `ps --json` agree by
 * construction. What `ps` cannot know (how long boots took over time, why
 * guests exited) is counted here from the fleet's state changes, from the
 * moment the server started. Host values are read from /proc and /sys at
 * scrape time; nothing is sampled in the background except the main loop's
 * lag (a timer that measures how late it fires).
 *
 * Names follow Prometheus conventions: `nervesfleet_` prefix, base units
 * (`_bytes`, `_seconds`), `_total` for counters, and the standard
 * `process_*` names for the supervisor process itself. Per-guest series
 * (label `guest`, and `serial`) are off with --http-no-guest-metrics.
 * Every sample carries `fleet` and `host` labels, so one Prometheus can
 * scrape many supervisors (shards on many hosts) and still sum or tell
 * them apart without relabelling.
 */
#include "http/http-private.h"

#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/resource.h>

#include "supervisor/ksm.h"

#define LAG_INTERVAL_MS 500

static const double boot_buckets[] = {0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300};
static const double lag_buckets[] = {0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5};

typedef struct {
  const double *le;
  gsize n;
  guint64 *counts; /* per bucket (not cumulative) */
  guint64 count;
  double sum;
} Histogram;

struct NfHttpMetrics {
  NfHttp *http;
  Histogram boot, lag;
  guint64 exits[NF_EXIT_N_KINDS];
  guint64 restarts[NF_EXIT_N_KINDS];
  guint lag_src;
  gint64 lag_last;
};

static void hist_init(Histogram *h, const double *le, gsize n);
static void hist_observe(Histogram *h, double v);
static void hist_write(GString *out, const char *name, const char *help, const Histogram *h);
static gboolean lag_cb(gpointer data);
static void header(GString *out, const char *name, const char *type, const char *help);
static void label_value(GString *out, const char *value);
static gboolean read_meminfo(guint64 *total, guint64 *available);
static guint64 read_u64_file(const char *path);
static void write_pressure(GString *out);
static void write_process(GString *out);
static void write_guests(GString *out, json_t *ps);
static char *with_target_labels(const char *text, json_t *ps);

static void hist_init(Histogram *h, const double *le, gsize n)
{
  h->le = le;
  h->n = n;
  h->counts = g_new0(guint64, n + 1);
}

static void hist_observe(Histogram *h, double v)
{
  gsize i = 0;
  while (i < h->n && v > h->le[i])
    i++;
  h->counts[i]++;
  h->count++;
  h->sum += v;
}

NfHttpMetrics *nf_http_metrics_new(NfHttp *http)
{
  NfHttpMetrics *m = g_new0(NfHttpMetrics, 1);
  m->http = http;
  hist_init(&m->boot, boot_buckets, G_N_ELEMENTS(boot_buckets));
  hist_init(&m->lag, lag_buckets, G_N_ELEMENTS(lag_buckets));
  m->lag_last = g_get_monotonic_time();
  m->lag_src = g_timeout_add(LAG_INTERVAL_MS, lag_cb, m);
  return m;
}

void nf_http_metrics_free(NfHttpMetrics *m)
{
  if (!m)
    return;
  g_source_remove(m->lag_src);
  g_free(m->boot.counts);
  g_free(m->lag.counts);
  g_free(m);
}

/* How late this timer fires is how long the loop was busy elsewhere. */
static gboolean lag_cb(gpointer data)
{
  NfHttpMetrics *m = data;
  gint64 now = g_get_monotonic_time();
  gint64 late = now - m->lag_last - LAG_INTERVAL_MS * 1000;
  hist_observe(&m->lag, late > 0 ? (double)late / 1e6 : 0.0);
  m->lag_last = now;
  return G_SOURCE_CONTINUE;
}

void nf_http_metrics_vm_changed(NfHttpMetrics *m, NfVm *vm, NfVmState old_state)
{
  NfVmState state = nf_vm_state(vm);
  if (state == NF_VM_READY && (old_state == NF_VM_BOOTING || old_state == NF_VM_STARTING)) {
    gint64 started = nf_vm_started_at(vm), ready = nf_vm_ready_at(vm);
    if (started > 0 && ready >= started)
      hist_observe(&m->boot, (double)(ready - started) / 1e6);
  }
  gboolean was_up = old_state >= NF_VM_STARTING && old_state <= NF_VM_STOPPING;
  gboolean down = state == NF_VM_STOPPED || state == NF_VM_BACKOFF || state == NF_VM_FAILED;
  NfExitKind kind = nf_vm_exit_kind(vm);
  if (was_up && down && kind < NF_EXIT_N_KINDS)
    m->exits[kind]++;
  if (state == NF_VM_BACKOFF && kind < NF_EXIT_N_KINDS)
    m->restarts[kind]++;
}

/* --- text format ------------------------------------------------------------------ */

static void header(GString *out, const char *name, const char *type, const char *help)
{
  g_string_append_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A label value with \, " and newlines escaped, in quotes. */
static void label_value(GString *out, const char *value)
{
  g_string_append_c(out, '"');
  for (const char *p = value ? value : ""; *p; p++) {
    if (*p == '\\' || *p == '"')
      g_string_append_c(out, '\\');
    if (*p == '\n')
      g_string_append(out, "\\n");
    else
      g_string_append_c(out, *p);
  }
  g_string_append_c(out, '"');
}

static void hist_write(GString *out, const char *name, const char *help, const Histogram *h)
{
  header(out, name, "histogram", help);
  guint64 cum = 0;
  for (gsize i = 0; i < h->n; i++) {
    cum += h->counts[i];
    g_string_append_printf(out, "%s_bucket{le=\"%g\"} %" G_GUINT64_FORMAT "\n", name, h->le[i],
                           cum);
  }
  g_string_append_printf(out, "%s_bucket{le=\"+Inf\"} %" G_GUINT64_FORMAT "\n", name, h->count);
  g_string_append_printf(out, "%s_sum %.6f\n%s_count %" G_GUINT64_FORMAT "\n", name, h->sum, name,
                         h->count);
}

/* --- host and process ----------------------------------------------------------------- */

static gboolean read_meminfo(guint64 *total, guint64 *available)
{
  g_autofree char *text = NULL;
  if (!g_file_get_contents("/proc/meminfo", &text, NULL, NULL))
    return FALSE;
  *total = *available = 0;
  for (char *line = text; line && *line;
       line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
    unsigned long long kb;
    if (sscanf(line, "MemTotal: %llu kB", &kb) == 1)
      *total = kb * 1024;
    else if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1)
      *available = kb * 1024;
  }
  return *total > 0;
}

static guint64 read_u64_file(const char *path)
{
  g_autofree char *text = NULL;
  if (!g_file_get_contents(path, &text, NULL, NULL))
    return 0;
  return g_ascii_strtoull(text, NULL, 10);
}

/* Pressure stall information: seconds some (or all) tasks waited, per resource. */
static void write_pressure(GString *out)
{
  static const char *const resources[] = {"cpu", "memory", "io"};
  gboolean headed = FALSE;
  for (gsize i = 0; i < G_N_ELEMENTS(resources); i++) {
    g_autofree char *path = g_strdup_printf("/proc/pressure/%s", resources[i]);
    g_autofree char *text = NULL;
    if (!g_file_get_contents(path, &text, NULL, NULL))
      continue;
    g_auto(GStrv) lines = g_strsplit(text, "\n", 0);
    for (char **l = lines; *l; l++) {
      char kind[8];
      unsigned long long total;
      const char *t = strstr(*l, "total=");
      if (!t || sscanf(*l, "%7s", kind) != 1 || sscanf(t, "total=%llu", &total) != 1)
        continue;
      if (!headed) {
        header(out, "nervesfleet_host_pressure_stalled_seconds_total", "counter",
               "Time tasks were stalled on a resource (Linux PSI; kind some or full).");
        headed = TRUE;
      }
      g_string_append_printf(out,
                             "nervesfleet_host_pressure_stalled_seconds_total{resource=\"%s\","
                             "kind=\"%s\"} %.6f\n",
                             resources[i], kind, (double)total / 1e6);
    }
  }
}

static void write_process(GString *out)
{
  long page = sysconf(_SC_PAGESIZE);
  g_autofree char *statm = NULL;
  unsigned long long size = 0, resident = 0;
  if (g_file_get_contents("/proc/self/statm", &statm, NULL, NULL))
    (void)sscanf(statm, "%llu %llu", &size, &resident);
  header(out, "process_resident_memory_bytes", "gauge", "The supervisor's resident memory.");
  g_string_append_printf(out, "process_resident_memory_bytes %llu\n", resident * (guint64)page);
  guint fds = 0;
  DIR *d = opendir("/proc/self/fd");
  if (d) {
    struct dirent *e;
    while ((e = readdir(d)))
      if (e->d_name[0] != '.')
        fds++;
    closedir(d);
    fds--; /* the one opendir holds */
  }
  header(out, "process_open_fds", "gauge", "The supervisor's open file descriptors.");
  g_string_append_printf(out, "process_open_fds %u\n", fds);
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
    header(out, "process_max_fds", "gauge", "The supervisor's file descriptor limit.");
    g_string_append_printf(out, "process_max_fds %llu\n", (unsigned long long)rl.rlim_cur);
  }
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru) == 0) {
    header(out, "process_cpu_seconds_total", "counter", "The supervisor's CPU time.");
    g_string_append_printf(out, "process_cpu_seconds_total %.6f\n",
                           (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                               (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6);
  }
}

/* --- fleet -------------------------------------------------------------------------- */

static void write_guests(GString *out, json_t *ps)
{
  json_t *guests = json_object_get(ps, "guests");
  static const struct {
    const char *key, *name, *type, *help;
  } series[] = {
      {"balloon_bytes", "nervesfleet_guest_balloon_bytes", "gauge",
       "Guest RAM as the balloon leaves it (qemu's last report)."},
      {"rss_bytes", "nervesfleet_guest_resident_memory_bytes", "gauge",
       "Resident memory of the guest's qemu process."},
      {"restarts", "nervesfleet_guest_restarts", "gauge",
       "Restarts of the guest since the supervisor began."},
      {"boot_s", "nervesfleet_guest_boot_duration_seconds", "gauge",
       "Spawn to ready line of the guest's current run."},
  };
  for (gsize k = 0; k < G_N_ELEMENTS(series); k++) {
    header(out, series[k].name, series[k].type, series[k].help);
    gsize i;
    json_t *g;
    json_array_foreach(guests, i, g)
    {
      json_t *v = json_object_get(g, series[k].key);
      if (!json_is_number(v))
        continue;
      g_string_append_printf(out, "%s{guest=", series[k].name);
      label_value(out, json_string_value(json_object_get(g, "name")));
      g_string_append(out, ",serial=");
      label_value(out, json_string_value(json_object_get(g, "serial")));
      if (json_is_integer(v))
        g_string_append_printf(out, "} %" JSON_INTEGER_FORMAT "\n", json_integer_value(v));
      else
        g_string_append_printf(out, "} %.6f\n", json_real_value(v));
    }
  }
  header(out, "nervesfleet_guest_state", "gauge", "1 for the state each guest is in.");
  gsize i;
  json_t *g;
  json_array_foreach(guests, i, g)
  {
    g_string_append(out, "nervesfleet_guest_state{guest=");
    label_value(out, json_string_value(json_object_get(g, "name")));
    g_string_append(out, ",serial=");
    label_value(out, json_string_value(json_object_get(g, "serial")));
    g_string_append(out, ",state=");
    label_value(out, json_string_value(json_object_get(g, "state")));
    g_string_append(out, "} 1\n");
  }
}

json_t *nf_http_metrics_stats(NfHttp *http)
{
  json_auto_t *ps = nf_http_command_now(http, "ps", NULL, NULL);
  guint64 rss = 0, balloon = 0, total = 0, available = 0;
  guint running = 0;
  gsize i;
  json_t *g;
  json_array_foreach(json_object_get(ps, "guests"), i, g)
  {
    rss += (guint64)json_integer_value(json_object_get(g, "rss_bytes"));
    if (json_is_true(json_object_get(g, "running"))) {
      running++;
      balloon += (guint64)json_integer_value(json_object_get(g, "balloon_bytes"));
    }
  }
  (void)read_meminfo(&total, &available);
  return json_pack("{s:f, s:O?, s:I, s:I, s:I, s:I, s:I, s:I}", "time",
                   (double)g_get_real_time() / 1e6, "counts", json_object_get(ps, "counts"),
                   "running", (json_int_t)running, "guests_rss_bytes", (json_int_t)rss,
                   "guests_balloon_bytes", (json_int_t)balloon, "host_memory_total_bytes",
                   (json_int_t)total, "host_memory_available_bytes", (json_int_t)available,
                   "ksm_saved_bytes", (json_int_t)nf_ksm_saved_bytes());
}

void nf_http_metrics_handle(NfHttp *http, SoupServerMessage *msg)
{
  NfHttpMetrics *m = http->metrics;
  g_autoptr(GError) error = NULL;
  json_auto_t *ps = nf_http_command_now(http, "ps", NULL, &error);
  if (!ps) {
    nf_http_reply_error(msg, 500, "failed", "%s", error->message);
    return;
  }
  GString *out = g_string_sized_new(8192);
  header(out, "nervesfleet_guests", "gauge", "Guests by lifecycle state.");
  guint by_state[NF_VM_N_STATES] = {0};
  gsize i;
  json_t *g;
  json_array_foreach(json_object_get(ps, "guests"), i, g)
  {
    const char *state = json_string_value(json_object_get(g, "state"));
    for (int s = 0; s < NF_VM_N_STATES; s++)
      if (g_strcmp0(state, nf_vm_state_name(s)) == 0)
        by_state[s]++;
  }
  for (int s = 0; s < NF_VM_N_STATES; s++)
    g_string_append_printf(out, "nervesfleet_guests{state=\"%s\"} %u\n", nf_vm_state_name(s),
                           by_state[s]);
  header(out, "nervesfleet_guests_desired", "gauge", "Guests the fleet is scaled to.");
  g_string_append_printf(out, "nervesfleet_guests_desired %" JSON_INTEGER_FORMAT "\n",
                         json_integer_value(json_object_get(ps, "count")));
  header(out, "nervesfleet_guest_memory_bytes", "gauge", "RAM each guest is given (-m).");
  g_string_append_printf(out, "nervesfleet_guest_memory_bytes %" G_GUINT64_FORMAT "\n",
                         (guint64)json_integer_value(json_object_get(ps, "memory_mib")) << 20);
  header(out, "nervesfleet_guest_exits_total", "counter",
         "Guest exits by reason, since the HTTP server started.");
  for (int k = NF_EXIT_STOPPED; k < NF_EXIT_N_KINDS; k++)
    g_string_append_printf(out,
                           "nervesfleet_guest_exits_total{reason=\"%s\"} %" G_GUINT64_FORMAT "\n",
                           nf_exit_kind_name(k), m->exits[k]);
  header(out, "nervesfleet_guest_restarts_total", "counter",
         "Restarts scheduled after an exit, by its reason, since the HTTP server started.");
  for (int k = NF_EXIT_STOPPED; k < NF_EXIT_N_KINDS; k++)
    g_string_append_printf(
        out, "nervesfleet_guest_restarts_total{reason=\"%s\"} %" G_GUINT64_FORMAT "\n",
        nf_exit_kind_name(k), m->restarts[k]);
  hist_write(out, "nervesfleet_boot_duration_seconds",
             "Spawn to ready line, per boot, since the HTTP server started.", &m->boot);
  if (http->opts.guest_metrics)
    write_guests(out, ps);
  guint64 total, available;
  if (read_meminfo(&total, &available)) {
    header(out, "nervesfleet_host_memory_total_bytes", "gauge", "Host RAM (MemTotal).");
    g_string_append_printf(out, "nervesfleet_host_memory_total_bytes %" G_GUINT64_FORMAT "\n",
                           total);
    header(out, "nervesfleet_host_memory_available_bytes", "gauge",
           "Host RAM available without swapping (MemAvailable).");
    g_string_append_printf(out, "nervesfleet_host_memory_available_bytes %" G_GUINT64_FORMAT "\n",
                           available);
  }
  write_pressure(out);
  guint64 page = (guint64)sysconf(_SC_PAGESIZE);
  header(out, "nervesfleet_ksm_saved_bytes", "gauge",
         "Memory KSM saves host-wide ((pages_sharing + zero pages) times the page size).");
  g_string_append_printf(out, "nervesfleet_ksm_saved_bytes %" G_GUINT64_FORMAT "\n",
                         nf_ksm_saved_bytes());
  header(out, "nervesfleet_ksm_shared_bytes", "gauge",
         "Memory of the pages KSM keeps once for all sharers (pages_shared).");
  g_string_append_printf(out, "nervesfleet_ksm_shared_bytes %" G_GUINT64_FORMAT "\n",
                         read_u64_file("/sys/kernel/mm/ksm/pages_shared") * page);
  write_process(out);
  hist_write(out, "nervesfleet_main_loop_lag_seconds",
             "How late a 500 ms timer of the supervisor's main loop fires.", &m->lag);
  g_autofree char *plain = g_string_free(out, FALSE);
  char *text = with_target_labels(plain, ps);
  soup_server_message_set_status(msg, 200, NULL);
  soup_server_message_set_response(msg, "text/plain; version=0.0.4; charset=utf-8",
                                   SOUP_MEMORY_TAKE, text, strlen(text));
}

/* Adds fleet="..",host=".." in front of every sample's labels: one pass
 * over the finished exposition, so no series can be written without them. */
static char *with_target_labels(const char *text, json_t *ps)
{
  GString *labels = g_string_new("fleet=");
  label_value(labels, json_string_value(json_object_get(ps, "fleet")));
  g_string_append(labels, ",host=");
  label_value(labels, g_get_host_name());
  GString *out = g_string_sized_new(strlen(text) + strlen(text) / 4);
  const char *line = text;
  while (*line) {
    const char *eol = strchr(line, '\n');
    gsize len = eol ? (gsize)(eol - line + 1) : strlen(line);
    if (*line == '#' || *line == '\n') {
      g_string_append_len(out, line, (gssize)len);
    } else {
      gsize name = strcspn(line, "{ ");
      g_string_append_len(out, line, (gssize)name);
      g_string_append_c(out, '{');
      g_string_append_len(out, labels->str, (gssize)labels->len);
      if (line[name] == '{') {
        if (line[name + 1] != '}')
          g_string_append_c(out, ',');
        g_string_append_len(out, line + name + 1, (gssize)(len - name - 1));
      } else {
        g_string_append_c(out, '}');
        g_string_append_len(out, line + name, (gssize)(len - name));
      }
    }
    line += len;
  }
  g_string_free(labels, TRUE);
  return g_string_free(out, FALSE);
}
