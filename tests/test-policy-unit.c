/*
 * test-policy-unit.c: exit classification rules and the restart arithmetic
 * (backoff doubling with bounded jitter, the floor under every delay, the
 * R-in-T intensity limit at any R, the window counter behind it and the
 * fleet's storm guard, what each --restart mode restarts), without a VM.
 */
#include <signal.h>
#include <string.h>
#include <sys/wait.h>

#include "supervisor/exit-kind.h"
#include "supervisor/restart-policy.h"

static void test_classify(void)
{
  NfExitFacts f = {.status_known = TRUE, .wait_status = W_EXITCODE(0, 0)};
  g_assert_cmpint(nf_exit_kind_classify(&f), ==, NF_EXIT_POWEROFF);
  f.shutdown_reason = "guest-shutdown";
  g_assert_cmpint(nf_exit_kind_classify(&f), ==, NF_EXIT_POWEROFF);
  f.shutdown_reason = "guest-reset";
  g_assert_cmpint(nf_exit_kind_classify(&f), ==, NF_EXIT_REBOOT);
  /* A panic with panic=-1 and -no-reboot looks like a reset to qemu. */
  f.panic_seen = TRUE;
  g_assert_cmpint(nf_exit_kind_classify(&f), ==, NF_EXIT_PANIC);
  f.watchdog_event = TRUE;
  g_assert_cmpint(nf_exit_kind_classify(&f), ==, NF_EXIT_WATCHDOG);
  f.hung = TRUE;
  g_assert_cmpint(nf_exit_kind_classify(&f), ==, NF_EXIT_HUNG);
  f.stop_requested = TRUE;
  g_assert_cmpint(nf_exit_kind_classify(&f), ==, NF_EXIT_STOPPED);

  NfExitFacts k = {.status_known = TRUE, .wait_status = SIGKILL};
  g_assert_cmpint(nf_exit_kind_classify(&k), ==, NF_EXIT_CRASHED);
  k.oom_kill_counted = TRUE;
  g_assert_cmpint(nf_exit_kind_classify(&k), ==, NF_EXIT_OOM_KILLED);
  NfExitFacts e1 = {.status_known = TRUE, .wait_status = W_EXITCODE(1, 0)};
  g_assert_cmpint(nf_exit_kind_classify(&e1), ==, NF_EXIT_CRASHED);
  NfExitFacts sig = {
      .status_known = TRUE, .wait_status = W_EXITCODE(0, 0), .shutdown_reason = "host-signal"};
  g_assert_cmpint(nf_exit_kind_classify(&sig), ==, NF_EXIT_CRASHED);
  NfExitFacts adopted = {.status_known = FALSE};
  g_assert_cmpint(nf_exit_kind_classify(&adopted), ==, NF_EXIT_CRASHED);
  adopted.shutdown_reason = "guest-shutdown";
  g_assert_cmpint(nf_exit_kind_classify(&adopted), ==, NF_EXIT_POWEROFF);

  g_assert_cmpstr(nf_exit_kind_name(NF_EXIT_OOM_KILLED), ==, "oom-killed");
  g_assert_false(nf_exit_kind_is_failure(NF_EXIT_POWEROFF));
  g_assert_false(nf_exit_kind_is_failure(NF_EXIT_REBOOT));
  g_assert_true(nf_exit_kind_is_failure(NF_EXIT_HUNG));
}

static const NfRestartPolicy policy = {.mode = NF_RESTART_ON_FAILURE,
                                       .backoff_initial_ms = 1000,
                                       .backoff_max_ms = 8000,
                                       .max_restarts = 5,
                                       .window_ms = 60000};

static void test_backoff_doubles_with_jitter(void)
{
  NfRestartTally t = {0};
  guint d;
  gint64 now = 1000000000;
  guint expect[] = {1000, 2000, 4000, 8000, 8000};
  for (guint i = 0; i < G_N_ELEMENTS(expect); i++) {
    /* Draws at the ends of [0,1) bound the jitter to ±20%. */
    NfRestartTally lo = t, hi = t;
    g_assert_cmpint(nf_restart_decide(&policy, &lo, NF_EXIT_CRASHED, now, 0.0, &d), ==,
                    NF_RESTART_AFTER);
    g_assert_cmpuint(d, ==, expect[i] * 8 / 10);
    g_assert_cmpint(nf_restart_decide(&policy, &hi, NF_EXIT_CRASHED, now, 0.999999, &d), ==,
                    NF_RESTART_AFTER);
    g_assert_cmpuint(d, >=, expect[i] * 12 / 10 - 1);
    g_assert_cmpint(nf_restart_decide(&policy, &t, NF_EXIT_CRASHED, now, 0.5, &d), ==,
                    NF_RESTART_AFTER);
    g_assert_cmpuint(d, ==, expect[i]);
    now += 1000; /* 1 ms apart: all inside the window */
  }
  /* The sixth within a minute is one too many. */
  g_assert_cmpint(nf_restart_decide(&policy, &t, NF_EXIT_CRASHED, now, 0.5, &d), ==,
                  NF_RESTART_GIVE_UP);
  /* Past the window (and its last slice) the tally no longer counts them. */
  gint64 later = now + (60 + 60 / NF_WINDOW_SLICES + 1) * G_USEC_PER_SEC;
  g_assert_cmpuint(nf_restart_recent(&t, policy.window_ms, later), ==, 0);
  g_assert_cmpint(nf_restart_decide(&policy, &t, NF_EXIT_CRASHED, later, 0.5, &d), ==,
                  NF_RESTART_AFTER);
  /* A healthy stretch starts the backoff over. */
  nf_restart_tally_healthy(&t);
  g_assert_cmpint(nf_restart_decide(&policy, &t, NF_EXIT_CRASHED, later + G_USEC_PER_SEC, 0.5, &d),
                  ==, NF_RESTART_AFTER);
  g_assert_cmpuint(d, ==, 1000);
}

static void test_modes(void)
{
  NfRestartTally t = {0};
  guint d;
  NfRestartPolicy p = policy;
  g_assert_cmpint(nf_restart_decide(&p, &t, NF_EXIT_POWEROFF, 0, 0.5, &d), ==, NF_RESTART_NO);
  g_assert_cmpint(nf_restart_decide(&p, &t, NF_EXIT_STOPPED, 0, 0.5, &d), ==, NF_RESTART_NO);
  g_assert_cmpint(nf_restart_decide(&p, &t, NF_EXIT_REBOOT, 0, 0.5, &d), ==, NF_RESTART_AFTER);
  g_assert_cmpuint(d, ==, NF_RESTART_FLOOR_MS); /* not a failure: only the floor */
  p.mode = NF_RESTART_ALWAYS;
  g_assert_cmpint(nf_restart_decide(&p, &t, NF_EXIT_POWEROFF, 0, 0.5, &d), ==, NF_RESTART_AFTER);
  g_assert_cmpint(nf_restart_decide(&p, &t, NF_EXIT_STOPPED, 0, 0.5, &d), ==, NF_RESTART_NO);
  p.mode = NF_RESTART_NEVER;
  g_assert_cmpint(nf_restart_decide(&p, &t, NF_EXIT_PANIC, 0, 0.5, &d), ==, NF_RESTART_NO);

  NfRestartMode m;
  g_autoptr(GError) error = NULL;
  g_assert_true(nf_restart_mode_parse("always", &m, &error));
  g_assert_cmpint(m, ==, NF_RESTART_ALWAYS);
  g_assert_false(nf_restart_mode_parse("sometimes", &m, &error));
  g_assert_nonnull(strstr(error->message, "--restart 'sometimes'"));
}

/* The intensity limit holds at any --max-restarts: with a tally of 32 entries
 * a guest allowed 40 restarts was never given up on. */
static void test_intensity_above_old_tally(void)
{
  guint limits[] = {1, 32, 33, 40, 1000};
  for (guint k = 0; k < G_N_ELEMENTS(limits); k++) {
    NfRestartPolicy p = policy;
    p.max_restarts = limits[k];
    p.backoff_initial_ms = 0;
    NfRestartTally t = {0};
    guint d;
    gint64 now = 5 * G_USEC_PER_SEC;
    for (guint i = 0; i < limits[k]; i++, now += 1000)
      g_assert_cmpint(nf_restart_decide(&p, &t, NF_EXIT_CRASHED, now, 0.5, &d), ==,
                      NF_RESTART_AFTER);
    g_assert_cmpuint(nf_restart_recent(&t, p.window_ms, now), ==, limits[k]);
    g_assert_cmpint(nf_restart_decide(&p, &t, NF_EXIT_CRASHED, now, 0.5, &d), ==,
                    NF_RESTART_GIVE_UP);
  }
}

/* --backoff 0 does not make a tight loop: every restart waits the floor. */
static void test_floor(void)
{
  NfRestartPolicy p = policy;
  p.backoff_initial_ms = 0;
  p.backoff_max_ms = 0;
  p.max_restarts = 1000;
  NfRestartTally t = {0};
  guint d = 0;
  for (guint i = 0; i < 10; i++) {
    g_assert_cmpint(nf_restart_decide(&p, &t, NF_EXIT_CRASHED, i, 0.0, &d), ==, NF_RESTART_AFTER);
    g_assert_cmpuint(d, ==, NF_RESTART_FLOOR_MS);
  }
  /* Longer delays are left as they are. */
  p.backoff_initial_ms = p.backoff_max_ms = 5000;
  g_assert_cmpint(nf_restart_decide(&p, &t, NF_EXIT_CRASHED, 20, 0.5, &d), ==, NF_RESTART_AFTER);
  g_assert_cmpuint(d, ==, 5000);
}

/* The window counter: an event counts for the whole window, is gone one
 * slice after it, and any number of events fits. */
static void test_window_count(void)
{
  const guint window_ms = 16000; /* slices of exactly 1 s */
  NfWindowCount w = {0};
  gint64 t0 = 100 * G_USEC_PER_SEC + 300000;
  g_assert_cmpuint(nf_window_count_recent(&w, window_ms, t0), ==, 0);
  nf_window_count_add(&w, window_ms, t0);
  g_assert_cmpuint(nf_window_count_recent(&w, window_ms, t0), ==, 1);
  g_assert_cmpuint(nf_window_count_recent(&w, window_ms, t0 + 16 * G_USEC_PER_SEC), ==, 1);
  g_assert_cmpuint(nf_window_count_recent(&w, window_ms, t0 + 17 * G_USEC_PER_SEC), ==, 0);
  /* A million events spread over the window: all counted, in 17 slots. */
  NfWindowCount big = {0};
  for (guint i = 0; i < 1000000; i++)
    nf_window_count_add(&big, window_ms, t0 + (gint64)i * 15);
  gint64 end = t0 + 1000000LL * 15;
  g_assert_cmpuint(nf_window_count_recent(&big, window_ms, end), ==, 1000000);
  /* Slots are reused as time goes on: old counts never leak into new ones. */
  nf_window_count_add(&big, window_ms, end + 40 * G_USEC_PER_SEC);
  g_assert_cmpuint(nf_window_count_recent(&big, window_ms, end + 40 * G_USEC_PER_SEC), ==, 1);
  /* A zero window still works (everything is one-slice old at most). */
  NfWindowCount z = {0};
  nf_window_count_add(&z, 0, t0);
  g_assert_cmpuint(nf_window_count_recent(&z, 0, t0), ==, 1);
  g_assert_cmpuint(nf_window_count_recent(&z, 0, t0 + G_USEC_PER_SEC), ==, 0);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/policy/classify", test_classify);
  g_test_add_func("/policy/backoff-doubles-with-jitter", test_backoff_doubles_with_jitter);
  g_test_add_func("/policy/modes", test_modes);
  g_test_add_func("/policy/intensity-above-old-tally", test_intensity_above_old_tally);
  g_test_add_func("/policy/floor", test_floor);
  g_test_add_func("/policy/window-count", test_window_count);
  return g_test_run();
}
