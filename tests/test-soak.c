/*
 * test-soak.c: the short seeded soak (tests/soak/soak.py; `make soak` runs
 * the long one). Three real guests with disks and a fixed schedule of
 * faults: kill -9, SIGSTOP (hung and not), panic, poweroff, watchdog
 * starvation, scale, reflash, balloon, kill -9 of the daemon supervisor and
 * re-adoption, clients that disconnect mid-stream, one guest at a time (the
 * long soak pipelines them). Guards every invariant soak.py checks
 * (classification, back to ready within each guest's bound, no orphan,
 * status.json = ps --json, boot counter never backwards, bounded RSS/fds;
 * at the end nothing left and `qemu-img check` clean). A break prints the
 * seed and the step.
 */
#include <string.h>
#include <gio/gio.h>

#include "tests/lib/nf-test.h"

static void test_short_soak(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  g_autofree char *script =
      g_build_filename(g_getenv("NF_SRCDIR"), "tests", "soak", "soak.py", NULL);
  const char *argv[] = {"python3", script, "--guests", "3", "--faults", "20",
                        "--seed",  "7",    "--work",   tmp, NULL};
  g_autoptr(GError) error = NULL;
  g_autoptr(GSubprocess) p = g_subprocess_newv(
      argv, G_SUBPROCESS_FLAGS_STDOUT_PIPE | G_SUBPROCESS_FLAGS_STDERR_MERGE, &error);
  g_assert_no_error(error);
  g_autofree char *out = NULL;
  /* soak.py bounds each wait itself (a guest not back within its bound is a
   * break), so this returns. */
  g_assert_true(g_subprocess_communicate_utf8(p, NULL, NULL, &out, NULL, &error));
  g_assert_no_error(error);
  g_test_message("%s", out);
  g_assert_true(g_subprocess_get_if_exited(p));
  g_assert_cmpint(g_subprocess_get_exit_status(p), ==, 0);
  g_assert_nonnull(strstr(out, "seed 7: ok"));
  nf_test_tmpdir_cleanup(tmp);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/soak/short", test_short_soak);
  return g_test_run();
}
