/*
 * test-health-unit.c: the heartbeat's arithmetic (supervisor/health.h).
 * A ready guest reports its balloon stats a quarter of the heartbeat
 * timeout apart, 1-15 s, so a 60 s deadline costs an idle guest a report
 * every 15 s, not every 5; and a guest lowered during a boot storm that
 * waits to run is put back within a third of its tighter deadline.
 */
#include "supervisor/health.h"
#include "tests/lib/nf-test.h"

static void test_stats_poll(void)
{
  /* A quarter of the deadline, 1-15 s. */
  g_assert_cmpuint(nf_health_stats_poll_ms(60000), ==, 15000); /* the default */
  g_assert_cmpuint(nf_health_stats_poll_ms(30000), ==, 7000);
  g_assert_cmpuint(nf_health_stats_poll_ms(12000), ==, 3000);
  g_assert_cmpuint(nf_health_stats_poll_ms(1000), ==, 1000);
  g_assert_cmpuint(nf_health_stats_poll_ms(3600000), ==, NF_HEALTH_STATS_POLL_MAX_MS);
  /* Whole seconds (qemu's unit), at least 4 reports per deadline from 4 s up. */
  for (guint t = 1000; t <= 600000; t += 500) {
    guint poll = nf_health_stats_poll_ms(t);
    g_assert_cmpuint(poll % 1000, ==, 0);
    if (t >= 4000)
      g_assert_cmpuint(poll * 4, <=, t);
  }
}

static void test_relief(void)
{
  /* Defaults (60 s heartbeat, probe every 10 s with a 15 s deadline):
   * the probe's deadline is the nearer one. */
  g_assert_cmpuint(nf_health_relief_ms(60000, 10000, 15000), ==, 5000);
  /* A third of the heartbeat when that is nearer, or the only one. */
  g_assert_cmpuint(nf_health_relief_ms(12000, 10000, 15000), ==, 4000);
  g_assert_cmpuint(nf_health_relief_ms(30000, 0, 0), ==, 10000);
  /* Probes only. */
  g_assert_cmpuint(nf_health_relief_ms(0, 10000, 15000), ==, 5000);
  /* Short timeouts: not under relief's 1 s tick. */
  g_assert_cmpuint(nf_health_relief_ms(60000, 10000, 2000), ==, 1000);
  g_assert_cmpuint(nf_health_relief_ms(0, 1000, 1000), ==, 1000);
  /* No check that could fail: no relief. */
  g_assert_cmpuint(nf_health_relief_ms(0, 0, 0), ==, 0);
  g_assert_cmpuint(nf_health_relief_ms(0, 10000, 0), ==, 0);
  /* Always within a third of the tighter deadline, from 3 s up. */
  for (guint hb = 3000; hb <= 300000; hb += 1000)
    for (guint to = 3000; to <= 60000; to += 3000) {
      guint r = nf_health_relief_ms(hb, 10000, to);
      g_assert_cmpuint(r * 3, <=, MIN(hb, to));
      g_assert_cmpuint(r, >=, 1000);
    }
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/health/stats-poll", test_stats_poll);
  g_test_add_func("/health/relief", test_relief);
  return g_test_run();
}
