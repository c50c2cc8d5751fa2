/*
 * test-run.c: `nervesfleet run N` end to end with real qemu under TCG.
 * Guards: a fleet boots with distinct identities, stops in order on SIGTERM
 * and leaves no process, socket or runtime file; a supervisor killed with
 * SIGKILL takes its guests with it (no orphans); one fleet name, one
 * supervisor.
 */
#include <signal.h>
#include <string.h>
#include <unistd.h>
#include <glib/gstdio.h>

#include "tests/lib/nf-test.h"

#define BOOT_MS 120000
#define STOP_MS 60000

static void assert_runtime_gone(const char *tmp)
{
  g_autofree char *rt = g_build_filename(tmp, "run", "nervesfleet", NULL);
  g_assert_false(g_file_test(rt, G_FILE_TEST_EXISTS));
}

static void test_boot_and_sigterm(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  const char *args[] = {"run", "3", "--name", "t3", "--stop-timeout", "20", NULL};
  g_autoptr(NfTestProc) p = nf_test_proc_spawn(tmp, args);

  g_assert_true(nf_test_proc_wait_output(p, "all 3 guests ready", BOOT_MS));
  const char *out = nf_test_proc_output(p);
  g_assert_null(strstr(out, "in another terminal")); /* a log, not a person */
  for (guint id = 1; id <= 3; id++) {
    g_autofree char *line = g_strdup_printf("vm-%04u ready NF-%06u", id, id);
    g_assert_nonnull(strstr(out, line));
    /* The guest itself said who it is, on its own console. */
    g_autofree char *log = g_strdup_printf("%s/state/nervesfleet/t3/vm-%04u/console.log", tmp, id);
    g_autofree char *text = NULL;
    g_assert_true(g_file_get_contents(log, &text, NULL, NULL));
    g_autofree char *ready = g_strdup_printf("nervesfleet-ready serial=NF-%06u", id);
    g_assert_nonnull(strstr(text, ready));
    /* The exact command is logged per guest. */
    g_autofree char *qlog = g_strdup_printf("%s/state/nervesfleet/t3/vm-%04u/qemu.log", tmp, id);
    g_autofree char *qtext = NULL;
    g_assert_true(g_file_get_contents(qlog, &qtext, NULL, NULL));
    g_assert_nonnull(strstr(qtext, "qemu-system-aarch64"));
  }
  g_autofree char *sock = g_build_filename(tmp, "run/nervesfleet/t3/vm-0002.qmp", NULL);
  g_assert_true(g_file_test(sock, G_FILE_TEST_EXISTS));
  g_autoptr(GArray) qemus = nf_test_pids_matching(tmp);
  g_assert_cmpuint(qemus->len, ==, 3);

  nf_test_proc_signal(p, SIGTERM);
  g_assert_cmpint(nf_test_proc_wait_exit(p, STOP_MS), ==, 0);
  g_assert_nonnull(strstr(nf_test_proc_output(p), "fleet stopped (3 stopped, 0 failed)"));
  assert_runtime_gone(tmp);
  nf_test_tmpdir_cleanup(tmp);
}

/* <our memory cgroup>/nervesfleet-<fleet>-<hash>, where the fleet's guest cgroups go
 * (cgroup v1 here; NULL elsewhere). */
static char *fleet_cgroup(const char *tmp, const char *fleet)
{
  g_autofree char *rt = g_strdup_printf("%s/run/nervesfleet/%s", tmp, fleet);
  g_autofree char *text = NULL;
  if (!g_file_get_contents("/proc/self/cgroup", &text, NULL, NULL))
    return NULL;
  const char *m = strstr(text, ":memory:");
  if (m == NULL)
    return NULL;
  g_autofree char *path = g_strndup(m + 8, strcspn(m + 8, "\n"));
  return g_strdup_printf("/sys/fs/cgroup/memory%s/nervesfleet-%s-%08x", path, fleet,
                         g_str_hash(rt));
}

static void test_sigkill_leaves_no_orphans(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  const char *args[] = {"run", "2", "--name", "orphans", NULL};
  g_autoptr(NfTestProc) p = nf_test_proc_spawn(tmp, args);

  g_assert_true(nf_test_proc_wait_output(p, "ready NF-", BOOT_MS));
  g_autoptr(GArray) qemus = nf_test_pids_matching(tmp);
  g_assert_cmpuint(qemus->len, >=, 1);

  nf_test_proc_signal(p, SIGKILL);
  g_assert_cmpint(nf_test_proc_wait_exit(p, STOP_MS), ==, 128 + SIGKILL);
  /* PR_SET_PDEATHSIG does the work: nothing of ours may survive. */
  g_assert_true(nf_test_wait_pids_gone(qemus, STOP_MS));

  /* The stale runtime files of the dead supervisor do not block a new one,
   * which also sweeps the dead one's guest cgroups (vm-0002 is not its own). */
  const char *again[] = {"run", "1", "--name", "orphans", NULL};
  g_autoptr(NfTestProc) p2 = nf_test_proc_spawn(tmp, again);
  g_assert_true(nf_test_proc_wait_output(p2, "all 1 guests ready", BOOT_MS));
  nf_test_proc_signal(p2, SIGINT);
  g_assert_cmpint(nf_test_proc_wait_exit(p2, STOP_MS), ==, 0);
  assert_runtime_gone(tmp);
  g_autofree char *cg = fleet_cgroup(tmp, "orphans");
  if (cg)
    g_assert_false(g_file_test(cg, G_FILE_TEST_EXISTS));
  nf_test_tmpdir_cleanup(tmp);
}

static void test_fleet_name_is_exclusive(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  const char *args[] = {"run", "1", "--name", "solo", NULL};
  g_autoptr(NfTestProc) p = nf_test_proc_spawn(tmp, args);
  g_assert_true(nf_test_proc_wait_output(p, "fleet 'solo'", BOOT_MS));

  g_autofree char *out = NULL;
  g_assert_cmpint(nf_test_run_cli(tmp, args, 30000, &out), ==, 1);
  g_assert_nonnull(strstr(out, "fleet 'solo' is already running"));

  /* The refused second supervisor must not have disturbed the first. */
  g_assert_true(nf_test_proc_wait_output(p, "all 1 guests ready", BOOT_MS));
  nf_test_proc_signal(p, SIGINT);
  g_assert_cmpint(nf_test_proc_wait_exit(p, STOP_MS), ==, 0);
  assert_runtime_gone(tmp);
  nf_test_tmpdir_cleanup(tmp);
}

static void test_second_signal_kills_now(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  /* A guest that ignores quit can't be had; a long stop timeout shows that
   * the second signal does not wait for it. SIGSTOP makes qemu deaf to QMP. */
  const char *args[] = {"run", "1", "--name", "force", "--stop-timeout", "600", NULL};
  g_autoptr(NfTestProc) p = nf_test_proc_spawn(tmp, args);
  g_assert_true(nf_test_proc_wait_output(p, "all 1 guests ready", BOOT_MS));
  g_autoptr(GArray) qemus = nf_test_pids_matching(tmp);
  g_assert_cmpuint(qemus->len, ==, 1);
  kill(g_array_index(qemus, GPid, 0), SIGSTOP);

  nf_test_proc_signal(p, SIGINT);
  g_assert_true(nf_test_proc_wait_output(p, "Ctrl-C again", STOP_MS));
  nf_test_proc_signal(p, SIGINT);
  g_assert_cmpint(nf_test_proc_wait_exit(p, STOP_MS), ==, 0);
  g_assert_nonnull(strstr(nf_test_proc_output(p), "killing all guests now"));
  assert_runtime_gone(tmp);
  nf_test_tmpdir_cleanup(tmp);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/run/boot-three-then-sigterm", test_boot_and_sigterm);
  g_test_add_func("/run/sigkill-leaves-no-orphans", test_sigkill_leaves_no_orphans);
  g_test_add_func("/run/fleet-name-is-exclusive", test_fleet_name_is_exclusive);
  g_test_add_func("/run/second-signal-kills-now", test_second_signal_kills_now);
  return g_test_run();
}
