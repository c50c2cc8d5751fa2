/*
 * test-policy-unit.c: exit classification rules and the restart arithmetic
 * (backoff doubling with bounded jitter, the R-in-T intensity limit, what
 * each --restart mode restarts), without a VM.
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
  /* Outside the window the tally no longer counts them. */
  g_assert_cmpuint(nf_restart_recent(&t, policy.window_ms, now + 61 * G_USEC_PER_SEC), ==, 0);
  g_assert_cmpint(
      nf_restart_decide(&policy, &t, NF_EXIT_CRASHED, now + 61 * G_USEC_PER_SEC, 0.5, &d), ==,
      NF_RESTART_AFTER);
  /* A healthy stretch starts the backoff over. */
  nf_restart_tally_healthy(&t);
  g_assert_cmpint(
      nf_restart_decide(&policy, &t, NF_EXIT_CRASHED, now + 62 * G_USEC_PER_SEC, 0.5, &d), ==,
      NF_RESTART_AFTER);
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
  g_assert_cmpuint(d, ==, 0); /* a reboot is not a failure: no delay */
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

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/policy/classify", test_classify);
  g_test_add_func("/policy/backoff-doubles-with-jitter", test_backoff_doubles_with_jitter);
  g_test_add_func("/policy/modes", test_modes);
  return g_test_run();
}
