/*
 * test-clock-unit.c: a wall-clock jump (NTP step, a person's `date -s`)
 * cannot fire or stall a supervisor deadline.
 *
 * Why it holds: every deadline is a GLib timeout (g_timeout_add*, which
 * GLib runs on CLOCK_MONOTONIC) or a difference of g_get_monotonic_time();
 * the restart policy, the storm guard and the health checks take monotonic
 * `now_us` arguments (restart-policy.h). The wall clock is read only for
 * timestamps people and files show (events, status.json, metrics) and for
 * the uptime of an adopted guest, which is clamped. The host clock cannot
 * be changed from a test (nor should it be), so this test keeps that
 * reasoning true instead: (1) the sources read the wall clock only in the
 * files listed below, each for the reason given; a new reader fails here
 * and must be reviewed; (2) the window counter behind the restart limits
 * answers from the `now` it is given, whatever the wall clock does.
 */
#include <string.h>

#include "supervisor/restart-policy.h"

/* Files allowed to read the wall clock, and for what. */
static const char *const allowed[][2] = {
    {"supervisor/command-streams.c", "event timestamps (control-protocol.md)"},
    {"supervisor/lifecycle.c", "last exit time, shown in ps and status.json"},
    {"supervisor/vm-status.c", "events.log line stamps"},
    {"supervisor/vm.c", "start/exit stamps; an adopted guest's uptime (clamped)"},
    {"supervisor/vm-adopt.c", "an adopted guest's uptime (clamped) and the time of an exit seen "
                              "at adoption"},
    {"supervisor/snapshot-build.c", "meta.json's built_at stamp (validity is by hash, not age)"},
    {"http/metrics.c", "the stats document's timestamp"},
};

static const char *const readers[] = {
    "g_get_real_time", "g_date_time_new_now", "time(NULL)",       "gettimeofday",
    "CLOCK_REALTIME",  "g_get_current_time",  "clock_gettime(0,", NULL};

static void test_wall_clock_readers(void)
{
  const char *src = g_getenv("NF_SRCDIR");
  g_assert_nonnull(src);
  static const char *const dirs[] = {"qmp", "overlay", "supervisor", "http", "cli"};
  guint checked = 0;
  for (gsize d = 0; d < G_N_ELEMENTS(dirs); d++) {
    g_autofree char *dir = g_build_filename(src, dirs[d], NULL);
    g_autoptr(GDir) it = g_dir_open(dir, 0, NULL);
    g_assert_nonnull(it);
    for (const char *name; (name = g_dir_read_name(it));) {
      if (!g_str_has_suffix(name, ".c"))
        continue;
      g_autofree char *rel = g_build_filename(dirs[d], name, NULL);
      g_autofree char *path = g_build_filename(src, rel, NULL);
      g_autofree char *text = NULL;
      g_assert_true(g_file_get_contents(path, &text, NULL, NULL));
      checked++;
      gboolean ok = FALSE;
      for (gsize a = 0; a < G_N_ELEMENTS(allowed); a++)
        ok = ok || g_str_equal(allowed[a][0], rel);
      for (const char *const *r = readers; *r && !ok; r++)
        if (strstr(text, *r))
          g_error("%s reads the wall clock (%s): if it is only a timestamp, add it to the list "
                  "in %s with why; a deadline must use g_get_monotonic_time()/g_timeout_add",
                  rel, *r, __FILE__);
    }
  }
  g_assert_cmpuint(checked, >, 50);
}

/* The restart limits count in the window ending at the `now` they are
 * given: a wall-clock step elsewhere changes nothing, and only monotonic
 * time passing forgets an exit. */
static void test_window_count_uses_given_now(void)
{
  NfWindowCount w = {0};
  const guint window_ms = 60000;
  gint64 t0 = G_GINT64_CONSTANT(5000000000); /* any monotonic origin */
  for (int i = 0; i < 3; i++)
    nf_window_count_add(&w, window_ms, t0 + i * 1000);
  g_assert_cmpuint(nf_window_count_recent(&w, window_ms, t0 + 3000), ==, 3);
  /* Asked again at the same monotonic time: the same answer. */
  g_assert_cmpuint(nf_window_count_recent(&w, window_ms, t0 + 3000), ==, 3);
  /* Two windows of monotonic time later: forgotten. */
  g_assert_cmpuint(nf_window_count_recent(&w, window_ms, t0 + 2 * window_ms * 1000), ==, 0);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/clock/wall-clock-readers", test_wall_clock_readers);
  g_test_add_func("/clock/window-count-uses-given-now", test_window_count_uses_given_now);
  return g_test_run();
}
