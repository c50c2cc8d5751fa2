/*
 * test-ksm-pace-unit.c: ksmd's pace for a fleet (supervisor/ksm-pace.c), fed
 * counters by hand. Guards: fast until a full scan ends; each full scan that
 * merged less than a hundredth more (and under 1 MiB) halves the pace, down
 * to 1/64 and no further; a scan that merged enough, or a guest coming up,
 * makes it fast again; readings without a new full scan change nothing; a
 * ksmd restarted underneath (full_scans back to 0) only re-bases.
 */
#include "supervisor/ksm-pace.h"

static void test_slows_when_nothing_merges(void)
{
  NfKsmPace p = {0};
  nf_ksm_pace_set_fast(&p, 6400);
  g_assert_cmpuint(nf_ksm_pace_pages(&p), ==, 6400);
  g_assert_false(nf_ksm_pace_observe(&p, 10, 100000)); /* the base */
  g_assert_false(nf_ksm_pace_observe(&p, 10, 100000)); /* no full scan since */
  g_assert_cmpuint(nf_ksm_pace_pages(&p), ==, 6400);

  /* Each full scan that merged nothing: half. */
  guint64 scans = 10;
  for (guint want = 3200; want >= 100; want /= 2) {
    g_assert_true(nf_ksm_pace_observe(&p, ++scans, 100000));
    g_assert_cmpuint(nf_ksm_pace_pages(&p), ==, want);
  }
  g_assert_cmpuint(p.shift, ==, NF_KSM_PACE_MAX_SHIFT);
  g_assert_false(nf_ksm_pace_observe(&p, ++scans, 100000)); /* the slowest */
  g_assert_cmpuint(nf_ksm_pace_pages(&p), ==, 6400 >> NF_KSM_PACE_MAX_SHIFT);
}

static void test_fast_while_merging(void)
{
  NfKsmPace p = {0};
  nf_ksm_pace_set_fast(&p, 1000);
  nf_ksm_pace_observe(&p, 0, 0);
  /* From nothing, 1 MiB more is enough. */
  g_assert_false(nf_ksm_pace_observe(&p, 1, NF_KSM_PACE_MIN_GAIN_PAGES));
  g_assert_cmpuint(nf_ksm_pace_pages(&p), ==, 1000);
  g_assert_true(nf_ksm_pace_observe(&p, 2, NF_KSM_PACE_MIN_GAIN_PAGES * 2 - 1));
  g_assert_cmpuint(nf_ksm_pace_pages(&p), ==, 500);

  /* At a million pages merged, a hundredth is the bar: 9,999 more is not
   * enough; a hundredth more puts the pace back. */
  nf_ksm_pace_observe(&p, 3, 1000000);
  g_assert_cmpuint(p.shift, ==, 0); /* that scan merged a lot */
  g_assert_true(nf_ksm_pace_observe(&p, 4, 1009999));
  g_assert_cmpuint(nf_ksm_pace_pages(&p), ==, 500);
  g_assert_true(nf_ksm_pace_observe(&p, 5, 1009999 + 10099));
  g_assert_cmpuint(nf_ksm_pace_pages(&p), ==, 1000);

  /* Fewer merged pages (guests wrote to theirs) is no reason to hurry. */
  g_assert_true(nf_ksm_pace_observe(&p, 6, 500000));
  g_assert_cmpuint(nf_ksm_pace_pages(&p), ==, 500);
}

static void test_wake_and_size(void)
{
  NfKsmPace p = {0};
  nf_ksm_pace_set_fast(&p, 640);
  nf_ksm_pace_observe(&p, 1, 5000);
  for (guint64 s = 2; s < 6; s++)
    nf_ksm_pace_observe(&p, s, 5000);
  g_assert_cmpuint(nf_ksm_pace_pages(&p), ==, 40);
  /* More guests up: their pace, still slowed. */
  nf_ksm_pace_set_fast(&p, 1280);
  g_assert_cmpuint(nf_ksm_pace_pages(&p), ==, 80);
  /* A guest came up: fast. */
  nf_ksm_pace_wake(&p);
  g_assert_cmpuint(nf_ksm_pace_pages(&p), ==, 1280);
  /* Never 0, however slow. */
  nf_ksm_pace_set_fast(&p, 3);
  for (guint64 s = 6; s < 20; s++)
    nf_ksm_pace_observe(&p, s, 5000);
  g_assert_cmpuint(nf_ksm_pace_pages(&p), ==, 1);
}

static void test_ksmd_restarted(void)
{
  NfKsmPace p = {0};
  nf_ksm_pace_set_fast(&p, 800);
  nf_ksm_pace_observe(&p, 50, 90000);
  g_assert_true(nf_ksm_pace_observe(&p, 51, 90000));
  g_assert_cmpuint(nf_ksm_pace_pages(&p), ==, 400);
  /* Someone stopped and restarted ksmd: counters from 0. A base, no step. */
  g_assert_false(nf_ksm_pace_observe(&p, 0, 0));
  g_assert_cmpuint(nf_ksm_pace_pages(&p), ==, 400);
  g_assert_true(nf_ksm_pace_observe(&p, 1, 90000)); /* merged again: fast */
  g_assert_cmpuint(nf_ksm_pace_pages(&p), ==, 800);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/ksm-pace/slows-when-nothing-merges", test_slows_when_nothing_merges);
  g_test_add_func("/ksm-pace/fast-while-merging", test_fast_while_merging);
  g_test_add_func("/ksm-pace/wake-and-size", test_wake_and_size);
  g_test_add_func("/ksm-pace/ksmd-restarted", test_ksmd_restarted);
  return g_test_run();
}
