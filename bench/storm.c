/*
 * storm.c: the naive baseline the benchmarks compare nervesfleet against:
 * start the same qemu command N times at once, with no supervisor, and note
 * when each guest prints its ready line. Used by bench/bootstorm.sh (N guests,
 * and one guest alone for the CPU-bound limit) and bench/density.sh (N guests
 * left idle for a settle window, then host memory sampled).
 *
 *   storm [-n N] [-t TIMEOUT_S] [-s SETTLE_S] [-m MARKER] -- QEMU ARGV...
 *
 * In ARGV, "@ID@" becomes the guest number (%04u) and "@SERIAL@" its serial
 * (NF-%06u), so every copy gets its own identity and pid file. Each qemu's
 * stdout (give it `-serial stdio`) is read through a pipe; stderr goes to the
 * parent's stderr. Every child gets PR_SET_PDEATHSIG, so a killed storm
 * leaves no qemu behind.
 *
 * Prints one JSON object on stdout:
 *   {"n", "ready", "spawn_s" (time to spawn all), "all_ready_s",
 *    "ready_s": [per guest, from the first spawn, sorted],
 *    "cpu_s": [per guest: qemu user+sys CPU seconds at its ready line],
 *    after the settle window: "rss_kib", "pss_kib" (sums over the children),
 *    "mem_available_kib" (host, sampled while they still run),
 *    "idle_cpu_pct" (children's CPU over the settle window, % of one core)}
 * then stops every child (SIGTERM, SIGKILL after 5 s) and reaps it.
 * Exit status 0 when every guest became ready, 1 otherwise.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>
#include <glib-unix.h>
#include <glib.h>

typedef struct {
  guint id;
  GPid pid;
  int out_fd;
  guint watch;
  GString *line;
  double ready_s; /* < 0 until ready */
  double cpu_at_ready;
} Guest;

typedef struct {
  Guest *guests;
  guint n;
  guint n_ready;
  const char *marker;
  gint64 t0;
  GMainLoop *loop;
  double settle_s;
  guint settle_timer;
} Storm;

static double now_s(const Storm *st);
static double proc_cpu_s(GPid pid);
static guint64 proc_kib(GPid pid, const char *file, const char *key);
static guint64 meminfo_kib(const char *key);
static gboolean out_cb(int fd, GIOCondition cond, gpointer data);
static gboolean timeout_cb(gpointer data);
static gboolean settle_cb(gpointer data);
static void child_setup(gpointer data);
static int cmp_double(const void *a, const void *b);
static char **expand_argv(char **tmpl, guint id);
static void alarm_handler(int sig);

static Storm storm;

static double now_s(const Storm *st)
{
  return (double)(g_get_monotonic_time() - st->t0) / 1e6;
}

static double proc_cpu_s(GPid pid)
{
  g_autofree char *path = g_strdup_printf("/proc/%d/stat", (int)pid);
  g_autofree char *text = NULL;
  if (!g_file_get_contents(path, &text, NULL, NULL))
    return -1;
  /* Fields after the command (which may hold spaces) start past the last ')'. */
  char *p = strrchr(text, ')');
  if (p == NULL)
    return -1;
  unsigned long long utime = 0, stime = 0;
  if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime, &stime) != 2)
    return -1;
  return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

static guint64 proc_kib(GPid pid, const char *file, const char *key)
{
  g_autofree char *path = g_strdup_printf("/proc/%d/%s", (int)pid, file);
  g_autofree char *text = NULL;
  if (!g_file_get_contents(path, &text, NULL, NULL))
    return 0;
  char *p = strstr(text, key);
  return p ? g_ascii_strtoull(p + strlen(key), NULL, 10) : 0;
}

static guint64 meminfo_kib(const char *key)
{
  g_autofree char *text = NULL;
  if (!g_file_get_contents("/proc/meminfo", &text, NULL, NULL))
    return 0;
  char *p = strstr(text, key);
  return p ? g_ascii_strtoull(p + strlen(key), NULL, 10) : 0;
}

static gboolean out_cb(int fd, GIOCondition cond, gpointer data)
{
  Guest *g = data;
  char buf[4096];
  ssize_t n = read(fd, buf, sizeof(buf));
  if (n < 0 && (errno == EAGAIN || errno == EINTR))
    return G_SOURCE_CONTINUE;
  if (n <= 0) {
    g->watch = 0;
    return G_SOURCE_REMOVE;
  }
  for (ssize_t i = 0; i < n; i++) {
    if (buf[i] != '\n') {
      if (g->line->len < 4096)
        g_string_append_c(g->line, buf[i]);
      continue;
    }
    if (g->ready_s < 0 && strstr(g->line->str, storm.marker)) {
      g->ready_s = now_s(&storm);
      g->cpu_at_ready = proc_cpu_s(g->pid);
      if (++storm.n_ready == storm.n) {
        if (storm.settle_s > 0)
          storm.settle_timer = g_timeout_add((guint)(storm.settle_s * 1000), settle_cb, NULL);
        else
          g_main_loop_quit(storm.loop);
      }
    }
    g_string_truncate(g->line, 0);
  }
  return G_SOURCE_CONTINUE;
}

static gboolean timeout_cb(gpointer data)
{
  g_main_loop_quit(storm.loop);
  return G_SOURCE_REMOVE;
}

static gboolean settle_cb(gpointer data)
{
  storm.settle_timer = 0;
  g_main_loop_quit(storm.loop);
  return G_SOURCE_REMOVE;
}

static void child_setup(gpointer data)
{
  prctl(PR_SET_PDEATHSIG, SIGKILL);
}

static void alarm_handler(int sig)
{
  for (guint i = 0; i < storm.n; i++)
    kill(storm.guests[i].pid, SIGKILL); /* reaped ones are ESRCH-safe: not reaped yet */
}

static int cmp_double(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static char **expand_argv(char **tmpl, guint id)
{
  guint n = g_strv_length(tmpl);
  char **out = g_new0(char *, n + 1);
  g_autofree char *ids = g_strdup_printf("%04u", id);
  g_autofree char *serial = g_strdup_printf("NF-%06u", id);
  for (guint i = 0; i < n; i++) {
    g_auto(GStrv) a = g_strsplit(tmpl[i], "@ID@", -1);
    g_autofree char *s1 = g_strjoinv(ids, a);
    g_auto(GStrv) b = g_strsplit(s1, "@SERIAL@", -1);
    out[i] = g_strjoinv(serial, b);
  }
  return out;
}

int main(int argc, char **argv)
{
  gint n = 1, timeout_s = 600;
  double settle_s = 0;
  g_autofree char *marker = NULL;
  GOptionEntry entries[] = {
      {"count", 'n', 0, G_OPTION_ARG_INT, &n, "Guests to start at once", "N"},
      {"timeout", 't', 0, G_OPTION_ARG_INT, &timeout_s, "Give up after S seconds", "S"},
      {"settle", 's', 0, G_OPTION_ARG_DOUBLE, &settle_s, "Idle seconds after all ready", "S"},
      {"marker", 'm', 0, G_OPTION_ARG_STRING, &marker, "Ready line text", "TEXT"},
      {NULL}};
  g_autoptr(GOptionContext) ctx = g_option_context_new("-- QEMU ARGV...");
  g_option_context_add_main_entries(ctx, entries, NULL);
  g_autoptr(GError) error = NULL;
  if (!g_option_context_parse(ctx, &argc, &argv, &error) || argc < 2 || n < 1) {
    fprintf(stderr, "storm: %s\n", error ? error->message : "usage: storm [-n N] -- ARGV");
    return 2;
  }
  char **tmpl = argv + 1;
  if (g_strcmp0(tmpl[0], "--") == 0)
    tmpl++;

  storm.n = (guint)n;
  storm.marker = marker ? marker : "nervesfleet-ready";
  storm.settle_s = settle_s;
  storm.guests = g_new0(Guest, storm.n);
  storm.loop = g_main_loop_new(NULL, FALSE);
  signal(SIGPIPE, SIG_IGN);

  storm.t0 = g_get_monotonic_time();
  for (guint i = 0; i < storm.n; i++) {
    Guest *g = &storm.guests[i];
    g->id = i + 1;
    g->ready_s = -1;
    g->line = g_string_new(NULL);
    g_auto(GStrv) gargv = expand_argv(tmpl, g->id);
    if (!g_spawn_async_with_pipes(NULL, gargv, NULL,
                                  G_SPAWN_DO_NOT_REAP_CHILD | G_SPAWN_SEARCH_PATH |
                                      G_SPAWN_STDIN_FROM_DEV_NULL,
                                  child_setup, NULL, &g->pid, NULL, &g->out_fd, NULL, &error)) {
      fprintf(stderr, "storm: cannot start %s: %s\n", gargv[0], error->message);
      return 1; /* children die with us */
    }
    g_unix_set_fd_nonblocking(g->out_fd, TRUE, NULL);
    g->watch = g_unix_fd_add(g->out_fd, G_IO_IN | G_IO_HUP | G_IO_ERR, out_cb, g);
  }
  double spawn_s = now_s(&storm);
  guint timer = g_timeout_add_seconds((guint)timeout_s, timeout_cb, NULL);
  double cpu_before_settle = 0;
  g_main_loop_run(storm.loop);
  double all_ready_s = storm.n_ready == storm.n ? 0 : -1;
  for (guint i = 0; i < storm.n; i++)
    if (storm.guests[i].ready_s > all_ready_s && all_ready_s >= 0)
      all_ready_s = storm.guests[i].ready_s;

  /* Samples while every child still runs. */
  guint64 rss = 0, pss = 0;
  double cpu_now = 0;
  for (guint i = 0; i < storm.n; i++) {
    rss += proc_kib(storm.guests[i].pid, "status", "VmRSS:");
    pss += proc_kib(storm.guests[i].pid, "smaps_rollup", "\nPss:");
    cpu_now += proc_cpu_s(storm.guests[i].pid);
    cpu_before_settle += storm.guests[i].cpu_at_ready;
  }
  guint64 avail = meminfo_kib("MemAvailable:");
  double idle_pct = settle_s > 0 && all_ready_s >= 0
                        ? 100.0 * (cpu_now - cpu_before_settle) / (now_s(&storm) - all_ready_s)
                        : -1;

  GString *j = g_string_new(NULL);
  g_string_append_printf(j, "{\"n\": %u, \"ready\": %u, \"spawn_s\": %.3f, \"all_ready_s\": %.3f",
                         storm.n, storm.n_ready, spawn_s, all_ready_s);
  double *r = g_new0(double, storm.n), *c = g_new0(double, storm.n);
  guint k = 0;
  for (guint i = 0; i < storm.n; i++)
    if (storm.guests[i].ready_s >= 0) {
      r[k] = storm.guests[i].ready_s;
      c[k++] = storm.guests[i].cpu_at_ready;
    }
  qsort(r, k, sizeof(double), cmp_double);
  g_string_append(j, ", \"ready_s\": [");
  for (guint i = 0; i < k; i++)
    g_string_append_printf(j, "%s%.3f", i ? ", " : "", r[i]);
  g_string_append(j, "], \"cpu_s\": [");
  for (guint i = 0; i < k; i++)
    g_string_append_printf(j, "%s%.3f", i ? ", " : "", c[i]);
  g_string_append_printf(j,
                         "], \"rss_kib\": %" G_GUINT64_FORMAT ", \"pss_kib\": %" G_GUINT64_FORMAT
                         ", \"mem_available_kib\": %" G_GUINT64_FORMAT ", \"idle_cpu_pct\": %.2f}",
                         rss, pss, avail, idle_pct);
  puts(j->str);
  fflush(stdout);
  g_string_free(j, TRUE);
  g_free(r);
  g_free(c);

  /* Stop everything we started: SIGTERM, and SIGKILL from an alarm if any
   * child is still there 5 s later; reaping blocks on the children. */
  for (guint i = 0; i < storm.n; i++)
    kill(storm.guests[i].pid, SIGTERM);
  struct sigaction sa = {.sa_handler = alarm_handler};
  sigaction(SIGALRM, &sa, NULL);
  alarm(5);
  for (guint i = 0; i < storm.n; i++)
    while (waitpid(storm.guests[i].pid, NULL, 0) < 0 && errno == EINTR)
      ;
  alarm(0);
  g_source_remove(timer);
  return storm.n_ready == storm.n ? 0 : 1;
}
