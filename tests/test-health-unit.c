/*
 * test-health-unit.c: the heartbeat's arithmetic (supervisor/health.h).
 * A ready guest reports its balloon stats a quarter of the heartbeat
 * timeout apart, 1-15 s (a twelfth, 1-5 s, while lowered in a boot storm),
 * so a 60 s deadline costs an idle guest a report every 15 s, not every 5;
 * and a guest lowered during a boot storm is never
 * raised before its stats could have moved three times, whatever the
 * timeouts, or every lowered guest would be raised at each report gap.
 */
#include "supervisor/health.h"
#include "tests/lib/nf-test.h"

static void test_stats_poll(void)
{
  /* Normally a quarter of the deadline, 1-15 s. */
  g_assert_cmpuint(nf_health_stats_poll_ms(60000, FALSE), ==, 15000); /* the default */
  g_assert_cmpuint(nf_health_stats_poll_ms(30000, FALSE), ==, 7000);
  g_assert_cmpuint(nf_health_stats_poll_ms(12000, FALSE), ==, 3000);
  g_assert_cmpuint(nf_health_stats_poll_ms(1000, FALSE), ==, 1000);
  g_assert_cmpuint(nf_health_stats_poll_ms(3600000, FALSE), ==, NF_HEALTH_STATS_POLL_MAX_MS);
  /* Lowered in a storm, a twelfth, 1-5 s. */
  g_assert_cmpuint(nf_health_stats_poll_ms(60000, TRUE), ==, 5000);
  g_assert_cmpuint(nf_health_stats_poll_ms(30000, TRUE), ==, 2000);
  g_assert_cmpuint(nf_health_stats_poll_ms(12000, TRUE), ==, 1000);
  g_assert_cmpuint(nf_health_stats_poll_ms(3600000, TRUE), ==, NF_HEALTH_STORM_STATS_POLL_MAX_MS);
  /* Whole seconds (qemu's unit), at least 4 reports per deadline from 4 s
   * up (12 in a storm, from 12 s up), and never fewer in a storm. */
  for (guint t = 1000; t <= 600000; t += 500) {
    guint poll = nf_health_stats_poll_ms(t, FALSE), storm = nf_health_stats_poll_ms(t, TRUE);
    g_assert_cmpuint(poll % 1000, ==, 0);
    g_assert_cmpuint(storm % 1000, ==, 0);
    g_assert_cmpuint(storm, <=, poll);
    if (t >= 4000)
      g_assert_cmpuint(poll * 4, <=, t);
    if (t >= 12000)
      g_assert_cmpuint(storm * 12, <=, t);
  }
}

static void test_relief(void)
{
  /* Defaults (60 s heartbeat, probe every 10 s with a 15 s deadline):
   * the probe's deadline is the nearer one. */
  g_assert_cmpuint(nf_health_relief_ms(60000, 10000, 15000), ==, 15000);
  /* A third of the heartbeat when that is nearer. */
  g_assert_cmpuint(nf_health_relief_ms(30000, 10000, 15000), ==, 10000);
  g_assert_cmpuint(nf_health_relief_ms(30000, 0, 0), ==, 10000);
  /* A short probe deadline: not before three stats reports (5 s apart). */
  g_assert_cmpuint(nf_health_relief_ms(60000, 10000, 2000), ==, 15000);
  /* Short timeouts: the 4 s floor. */
  g_assert_cmpuint(nf_health_relief_ms(12000, 1000, 12000), ==, 4000);
  g_assert_cmpuint(nf_health_relief_ms(0, 1000, 1000), ==, 4000);
  /* No check that could fail: no relief. */
  g_assert_cmpuint(nf_health_relief_ms(0, 0, 0), ==, 0);
  g_assert_cmpuint(nf_health_relief_ms(0, 10000, 0), ==, 0);
  for (guint hb = 1000; hb <= 300000; hb += 1000) {
    guint r = nf_health_relief_ms(hb, 10000, 1000);
    g_assert_cmpuint(r, >=, 3 * nf_health_stats_poll_ms(hb, TRUE));
  }
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/health/stats-poll", test_stats_poll);
  g_test_add_func("/health/relief", test_relief);
  return g_test_run();
}
