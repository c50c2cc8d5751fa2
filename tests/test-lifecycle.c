/*
 * test-lifecycle.c: fault injection against real guests under TCG. Guards
 * exit classification (crashed, hung, panic, watchdog, poweroff, oom-killed),
 * the restart policy (backoff growing between attempts, giving up after the
 * intensity limit, no restart of a guest that powered off), and re-adoption
 * of running guests by a new supervisor after a daemon supervisor is killed.
 * The guest's fault hooks (nf.fault=... on the kernel command line) make the
 * guest misbehave on cue; see guest/README.md.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <glib/gstdio.h>

#include "tests/lib/nf-test.h"

#define BOOT_MS 120000
#define STOP_MS 60000

/* Starts `run 1` with `extra` flags; waits until `needle` is printed. */
static NfTestProc *start_one(const char *tmp, const char *name, const char *const *extra,
                             const char *needle)
{
  g_autoptr(GPtrArray) args = g_ptr_array_new();
  const char *base[] = {"run", "1",         "--name", name, "--stop-timeout",
                        "5",   "--backoff", "0.2",    NULL};
  for (const char *const *a = base; *a; a++)
    g_ptr_array_add(args, (gpointer)*a);
  for (const char *const *a = extra; a && *a; a++)
    g_ptr_array_add(args, (gpointer)*a);
  g_ptr_array_add(args, NULL);
  NfTestProc *p = nf_test_proc_spawn(tmp, (const char *const *)args->pdata);
  if (!nf_test_proc_wait_output(p, needle, BOOT_MS))
    g_test_message("output so far:\n%s", nf_test_proc_output(p));
  g_assert_nonnull(strstr(nf_test_proc_output(p), needle));
  return p;
}

static void stop_and_clean(NfTestProc *p, char *tmp)
{
  nf_test_proc_signal(p, SIGTERM);
  g_assert_cmpint(nf_test_proc_wait_exit(p, STOP_MS), ==, 0);
  nf_test_tmpdir_cleanup(tmp);
}

static GPid only_qemu(const char *tmp)
{
  g_autoptr(GArray) pids = nf_test_pids_matching(tmp);
  g_assert_cmpuint(pids->len, ==, 1);
  return g_array_index(pids, GPid, 0);
}

static void test_kill9_crashed_then_restarted(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  g_autoptr(NfTestProc) p = start_one(tmp, "k9", NULL, "all 1 guests ready");
  GPid first = only_qemu(tmp);
  kill(first, SIGKILL);
  g_assert_true(nf_test_proc_wait_output(
      p, "vm-0001 backoff: exited: crashed (qemu killed by signal 9", BOOT_MS));
  g_assert_true(nf_test_proc_wait_output(p, "ready NF-000001 (pid", BOOT_MS));
  g_assert_true(nf_test_proc_wait_output(p, "restart 1)", BOOT_MS));
  g_assert_cmpint(only_qemu(tmp), !=, first);
  /* The status file says so too, for tools that read it after a crash. */
  g_autofree char *status = g_build_filename(tmp, "state/nervesfleet/k9/vm-0001/status.json", NULL);
  g_autofree char *text = NULL;
  g_assert_true(g_file_get_contents(status, &text, NULL, NULL));
  g_assert_nonnull(strstr(text, "\"last_exit\":\"crashed\""));
  g_assert_nonnull(strstr(text, "\"restarts\":1"));
  /* Every transition is logged with its reason. */
  g_autofree char *events = g_build_filename(tmp, "state/nervesfleet/k9/vm-0001/events.log", NULL);
  g_autofree char *etext = NULL;
  g_assert_true(g_file_get_contents(events, &etext, NULL, NULL));
  g_assert_nonnull(strstr(etext, " created -> queued: "));
  g_assert_nonnull(strstr(etext, " starting -> booting: QMP connected"));
  g_assert_nonnull(strstr(etext, " ready -> backoff: exited: crashed (qemu killed by signal 9"));
  g_assert_nonnull(strstr(etext, " backoff -> queued: restarting after backoff"));
  stop_and_clean(p, tmp);
}

static void test_sigstop_hung_then_restarted(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  const char *extra[] = {"--health-interval", "0.5", "--health-timeout", "2", NULL};
  g_autoptr(NfTestProc) p = start_one(tmp, "hung", extra, "all 1 guests ready");
  kill(only_qemu(tmp), SIGSTOP);
  g_assert_true(
      nf_test_proc_wait_output(p, "vm-0001 unhealthy: QMP did not answer within 2 s", BOOT_MS));
  g_assert_true(nf_test_proc_wait_output(p, "backoff: exited: hung", BOOT_MS));
  g_assert_true(nf_test_proc_wait_output(p, "restart 1)", BOOT_MS));
  stop_and_clean(p, tmp);
}

static void test_guest_panic(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  const char *extra[] = {"--append", "nf.fault=panic", "--restart", "never", NULL};
  g_autoptr(NfTestProc) p = start_one(tmp, "panic", extra, "vm-0001 failed: exited: panic");
  stop_and_clean(p, tmp);
}

static void test_watchdog(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  const char *extra[] = {"--append", "nf.fault=nowdt nf.wdt_timeout=2", "--restart", "never", NULL};
  g_autoptr(NfTestProc) p = start_one(tmp, "wdt", extra, "vm-0001 failed: exited: watchdog");
  stop_and_clean(p, tmp);
}

static void test_poweroff_not_restarted(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  const char *extra[] = {"--append", "nf.fault=poweroff", NULL};
  g_autoptr(NfTestProc) p = start_one(tmp, "off", extra, "vm-0001 stopped: exited: poweroff");
  g_assert_null(strstr(nf_test_proc_output(p), "restarting in"));
  stop_and_clean(p, tmp);
}

/* Parses the delays of "restarting in X s" lines, in order. */
static GArray *restart_delays(const char *out)
{
  GArray *d = g_array_new(FALSE, FALSE, sizeof(double));
  for (const char *s = strstr(out, "restarting in "); s; s = strstr(s + 1, "restarting in ")) {
    double v = g_ascii_strtod(s + strlen("restarting in "), NULL);
    g_array_append_val(d, v);
  }
  return d;
}

static void test_crash_every_boot_gives_up(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  const char *extra[] = {
      "--append", "nf.fault=boot-panic", "--max-restarts", "2", "--backoff", "0.5", NULL};
  g_autoptr(NfTestProc) p = start_one(tmp, "loop", extra, "giving up until restarted by hand");
  const char *out = nf_test_proc_output(p);
  g_autoptr(GArray) d = restart_delays(out);
  g_assert_cmpuint(d->len, ==, 2);
  /* Exponential backoff: each wait longer than the last, jitter included. */
  g_assert_cmpfloat(g_array_index(d, double, 1), >, g_array_index(d, double, 0));
  g_assert_nonnull(strstr(out, "vm-0001 failed: exited: panic"));
  stop_and_clean(p, tmp);
}

static gboolean have_memory_cgroup(void)
{
  return g_file_test("/sys/fs/cgroup/memory/memory.limit_in_bytes", G_FILE_TEST_EXISTS) ||
         g_file_test("/sys/fs/cgroup/cgroup.controllers", G_FILE_TEST_EXISTS);
}

static void test_oom_killed(void)
{
  if (!have_memory_cgroup() || getuid() != 0) {
    g_test_skip("no memory cgroup to confine a guest in (needs root and the memory controller)");
    return;
  }
  g_autofree char *tmp = nf_test_tmpdir_new();
  const char *extra[] = {"--memory-limit", "40M", "--restart", "never", NULL};
  g_autoptr(NfTestProc) p = start_one(tmp, "oom", extra, "vm-0001 failed: exited: oom-killed");
  stop_and_clean(p, tmp);
}

static void test_daemon_readoption(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  const char *args[] = {"run", "1", "-d", "--name", "adopt", NULL};
  g_autofree char *out = NULL;
  g_assert_cmpint(nf_test_run_cli(tmp, args, 30000, &out), ==, 0);
  g_assert_nonnull(strstr(out, "in the background (supervisor pid"));
  g_autofree char *log = g_build_filename(tmp, "state/nervesfleet/adopt/supervisor.log", NULL);

  g_assert_true(nf_test_wait_file_contains(log, "all 1 guests ready", BOOT_MS));
  GPid guest = only_qemu(tmp);
  nf_test_kill_supervisor(tmp, "adopt", STOP_MS);
  g_assert_cmpint(only_qemu(tmp), ==, guest); /* the guest outlived it */

  /* A new supervisor takes the guest over without restarting it. */
  const char *fg[] = {"run", "1", "--name", "adopt", NULL};
  g_autoptr(NfTestProc) p = nf_test_proc_spawn(tmp, fg);
  g_assert_true(nf_test_proc_wait_output(p, "adopted from a previous supervisor", BOOT_MS));
  g_assert_true(nf_test_proc_wait_output(p, "all 1 guests ready", BOOT_MS));
  g_assert_cmpint(only_qemu(tmp), ==, guest);
  stop_and_clean(p, tmp);
}

/* An upgrade: the supervisor goes, the guests stay, the next one adopts them. */
static void test_daemon_leave_running(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  const char *args[] = {"run", "1", "-d", "--name", "up", NULL};
  g_assert_cmpint(nf_test_run_cli(tmp, args, 30000, NULL), ==, 0);
  g_autofree char *log = g_build_filename(tmp, "state/nervesfleet/up/supervisor.log", NULL);
  g_assert_true(nf_test_wait_file_contains(log, "all 1 guests ready", BOOT_MS));
  GPid guest = only_qemu(tmp);

  const char *leave[] = {"down", "--name", "up", "--leave-running", NULL};
  g_autofree char *out = NULL;
  g_assert_cmpint(nf_test_run_cli(tmp, leave, STOP_MS, &out), ==, 0);
  g_assert_nonnull(strstr(out, "its guests keep running"));
  g_assert_cmpint(only_qemu(tmp), ==, guest);

  g_assert_cmpint(nf_test_run_cli(tmp, args, 30000, NULL), ==, 0);
  g_assert_true(nf_test_wait_file_contains(log, "adopted from a previous supervisor", BOOT_MS));
  g_assert_cmpint(only_qemu(tmp), ==, guest);
  const char *down[] = {"down", "--name", "up", NULL};
  g_clear_pointer(&out, g_free);
  g_assert_cmpint(nf_test_run_cli(tmp, down, STOP_MS, &out), ==, 0);
  g_assert_nonnull(strstr(out, "fleet 'up' stopped"));
  nf_test_tmpdir_cleanup(tmp);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/lifecycle/kill9-crashed-restarted", test_kill9_crashed_then_restarted);
  g_test_add_func("/lifecycle/sigstop-hung-restarted", test_sigstop_hung_then_restarted);
  g_test_add_func("/lifecycle/guest-panic", test_guest_panic);
  g_test_add_func("/lifecycle/watchdog", test_watchdog);
  g_test_add_func("/lifecycle/poweroff-not-restarted", test_poweroff_not_restarted);
  g_test_add_func("/lifecycle/crash-every-boot-gives-up", test_crash_every_boot_gives_up);
  g_test_add_func("/lifecycle/oom-killed", test_oom_killed);
  g_test_add_func("/lifecycle/daemon-readoption", test_daemon_readoption);
  g_test_add_func("/lifecycle/daemon-leave-running", test_daemon_leave_running);
  return g_test_run();
}
