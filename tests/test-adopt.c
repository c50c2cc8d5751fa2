/*
 * test-adopt.c: no guest and no status lost across supervisor restarts, and
 * no process of a guest left behind. Guards: a new supervisor adopts or
 * stops every guest the fleet left running, whatever guest count it was
 * given (`run 3 -d`, kill -9, `run 1 -d`), keeps each guest's last exit and
 * restart count, and `down` leaves no qemu and no memory cgroup; guests of
 * a killed foreground supervisor are reported as stopped with it, not as
 * crashed; an adopted guest's balloon size is asked of qemu, not assumed
 * full; a wrapper script given as --qemu does not leave its qemu running
 * when the guest is killed; a guest that became ready while no supervisor
 * ran is adopted as ready. Real qemu under TCG.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <glib/gstdio.h>
#include <jansson.h>

#include "tests/lib/nf-test.h"

#define BOOT_MS 180000
#define STOP_MS 60000

static GArray *one_pid(GPid pid)
{
  GArray *a = g_array_new(FALSE, FALSE, sizeof(GPid));
  g_array_append_val(a, pid);
  return a;
}

/* The qemu processes of the test (their command line carries <tmp>/run/). */
static GArray *qemus(const char *tmp)
{
  g_autofree char *run = g_build_filename(tmp, "run", "", NULL);
  return nf_test_pids_matching(run);
}

static json_t *status_of(const char *tmp, const char *name, const char *vm)
{
  g_autofree char *path = g_build_filename(tmp, "state/nervesfleet", name, vm, "status.json", NULL);
  json_t *j = json_load_file(path, 0, NULL);
  g_assert_nonnull(j);
  return j;
}

static GPid pid_of(const char *tmp, const char *name, const char *vm)
{
  json_auto_t *j = status_of(tmp, name, vm);
  return (GPid)json_integer_value(json_object_get(j, "pid"));
}

/* SIGKILLs fleet `name`'s supervisor (as a crash would) and waits until
 * it is gone; its guests, spawned detached, run on. */
static void kill_supervisor(const char *tmp, const char *name)
{
  nf_test_kill_supervisor(tmp, name, STOP_MS);
}

/* Before: guests 2 and 3 kept running unsupervised and invisible, `down`
 * did not find them, their cgroups stayed; vm-0001's last exit was lost. */
static void test_smaller_run_adopts_all(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  g_autofree char *log = g_build_filename(tmp, "state/nervesfleet/big/supervisor.log", NULL);
  const char *run3[] = {"run", "3", "-d", "--name", "big", "--backoff", "0.2", NULL};
  g_assert_cmpint(nf_test_run_cli(tmp, run3, 30000, NULL), ==, 0);
  g_assert_true(nf_test_wait_file_contains(log, "all 3 guests ready", BOOT_MS));

  /* vm-0001 gets a last exit worth keeping: a crash and a restart. */
  kill(pid_of(tmp, "big", "vm-0001"), SIGKILL);
  g_assert_true(nf_test_wait_file_contains(log, "restart 1)", BOOT_MS));
  GPid first = pid_of(tmp, "big", "vm-0001");
  GPid second = pid_of(tmp, "big", "vm-0002");
  GPid third = pid_of(tmp, "big", "vm-0003");

  kill_supervisor(tmp, "big");
  g_autoptr(GArray) alive = qemus(tmp);
  g_assert_cmpuint(alive->len, ==, 3); /* detached guests outlive it */
  g_assert_cmpuint(nf_test_cgroups_of(tmp, "big"), >,
                   0); /* (so the count after `down` means something) */

  gint64 t0 = g_get_monotonic_time();
  const char *run1[] = {"run", "1", "-d", "--name", "big", NULL};
  g_assert_cmpint(nf_test_run_cli(tmp, run1, 30000, NULL), ==, 0);
  g_assert_true(nf_test_wait_file_contains(
      log, "vm-0002, vm-0003: left running by a previous supervisor", STOP_MS));
  g_assert_true(nf_test_wait_file_contains(log, "vm-0001 NF-000001 adopted", BOOT_MS));
  g_autoptr(GArray) extras = g_array_new(FALSE, FALSE, sizeof(GPid));
  g_array_append_val(extras, second);
  g_array_append_val(extras, third);
  g_assert_true(nf_test_wait_pids_gone(extras, STOP_MS));
  g_test_message("new supervisor: 1 guest adopted, 2 stopped in %.1f s",
                 (g_get_monotonic_time() - t0) / 1e6);
  /* Each extra's own line: their exits may be handled in either order. */
  g_assert_true(nf_test_wait_file_contains(log, "vm-0002 stopped (beyond", STOP_MS));
  g_assert_true(nf_test_wait_file_contains(log, "vm-0003 stopped (beyond", STOP_MS));
  g_clear_pointer(&alive, g_array_unref);
  alive = qemus(tmp);
  g_assert_cmpuint(alive->len, ==, 1);
  g_assert_cmpint(g_array_index(alive, GPid, 0), ==, first); /* adopted, not restarted */
  {
    json_auto_t *s2 = status_of(tmp, "big", "vm-0002");
    g_assert_cmpstr(json_string_value(json_object_get(s2, "state")), ==, "stopped");
  }

  /* The status survived the supervisor's death. */
  {
    json_auto_t *s1 = status_of(tmp, "big", "vm-0001");
    g_assert_cmpstr(json_string_value(json_object_get(s1, "last_exit")), ==, "crashed");
    g_assert_cmpint(json_integer_value(json_object_get(s1, "restarts")), ==, 1);
    g_assert_nonnull(
        strstr(json_string_value(json_object_get(s1, "last_exit_reason")), "killed by signal 9"));
  }
  const char *ps[] = {"ps", "--json", "--name", "big", NULL};
  g_autofree char *ps_out = NULL;
  g_assert_cmpint(nf_test_run_cli(tmp, ps, 30000, &ps_out), ==, 0);
  g_assert_nonnull(strstr(ps_out, "\"kind\":\"crashed\""));
  {
    /* Uptime counts from the qemu's start (status.json), not from its
     * adoption: before, it restarted at 0 although the guest had booted
     * (seconds under TCG) before the supervisor was killed. */
    gint64 now = g_get_real_time();
    json_auto_t *s1 = status_of(tmp, "big", "vm-0001");
    double since_start = (now - json_integer_value(json_object_get(s1, "started_at_us"))) / 1e6;
    json_auto_t *doc = json_loads(ps_out, 0, NULL);
    json_t *g1 = json_array_get(json_object_get(doc, "guests"), 0);
    g_assert_cmpfloat(json_real_value(json_object_get(g1, "uptime_s")) + 0.5, >=, since_start);
  }

  const char *down[] = {"down", "--name", "big", NULL};
  g_autofree char *out = NULL;
  g_assert_cmpint(nf_test_run_cli(tmp, down, STOP_MS, &out), ==, 0);
  g_clear_pointer(&alive, g_array_unref);
  alive = qemus(tmp);
  g_assert_cmpuint(alive->len, ==, 0);
  g_assert_cmpuint(nf_test_cgroups_of(tmp, "big"), ==, 0);
  nf_test_tmpdir_cleanup(tmp);
}

/* A balloon moved under the previous supervisor is known to the next one.
 * Before, the adopted guest showed its full size in `ps`, and a `balloon`
 * to the size it already had timed out waiting for a change qemu never
 * reports (the soak, seed 1616, step 679). */
static void test_balloon_adopted(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  const char *run[] = {"run", "1", "-d", "--name", "bal", NULL};
  const char *wait[] = {"wait", "--name", "bal", "--timeout", "180", NULL};
  const char *balloon[] = {"balloon", "1", "96M", "--name", "bal", "--timeout", "60", NULL};
  g_assert_cmpint(nf_test_run_cli(tmp, run, 30000, NULL), ==, 0);
  g_assert_cmpint(nf_test_run_cli(tmp, wait, BOOT_MS, NULL), ==, 0);
  g_assert_cmpint(nf_test_run_cli(tmp, balloon, 90000, NULL), ==, 0);
  GPid guest = pid_of(tmp, "bal", "vm-0001");

  kill_supervisor(tmp, "bal");
  g_assert_cmpint(nf_test_run_cli(tmp, run, 30000, NULL), ==, 0);
  g_assert_cmpint(nf_test_run_cli(tmp, wait, BOOT_MS, NULL), ==, 0);
  g_assert_cmpint(pid_of(tmp, "bal", "vm-0001"), ==, guest); /* adopted */

  /* The size set by hand is still the guest's target: the memory policy
   * keeps off it (before, the adopting supervisor forgot it). */
  const char *mem[] = {"mem", "--json", "--name", "bal", NULL};
  g_autofree char *mem_out = NULL;
  g_assert_cmpint(nf_test_run_cli(tmp, mem, 30000, &mem_out), ==, 0);
  json_auto_t *mem_doc = json_loads(mem_out, 0, NULL);
  json_t *m1 = json_array_get(json_object_get(mem_doc, "guests"), 0);
  g_assert_cmpint(json_integer_value(json_object_get(m1, "balloon_target_bytes")), ==, 96 << 20);

  /* Already there: answered at once, not after the timeout. */
  g_autofree char *out = NULL;
  const char *again[] = {"balloon", "1", "96M", "--name", "bal", "--timeout", "20", NULL};
  int rc = nf_test_run_cli(tmp, again, 60000, &out);
  g_test_message("balloon after adoption -> %d: %s", rc, out);
  g_assert_cmpint(rc, ==, 0);
  const char *ps[] = {"ps", "--json", "--name", "bal", NULL};
  g_autofree char *ps_out = NULL;
  g_assert_cmpint(nf_test_run_cli(tmp, ps, 30000, &ps_out), ==, 0);
  json_auto_t *doc = json_loads(ps_out, 0, NULL);
  json_t *g1 = json_array_get(json_object_get(doc, "guests"), 0);
  g_assert_cmpint(json_integer_value(json_object_get(g1, "balloon_bytes")), ==, 96 << 20);

  const char *down[] = {"down", "--name", "bal", NULL};
  g_assert_cmpint(nf_test_run_cli(tmp, down, STOP_MS, NULL), ==, 0);
  nf_test_tmpdir_cleanup(tmp);
}

/* `down` with no supervisor left finds every guest, pid file or not. */
static void test_down_sweeps_without_pidfiles(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  g_autofree char *log = g_build_filename(tmp, "state/nervesfleet/sw/supervisor.log", NULL);
  const char *run2[] = {"run", "2", "-d", "--name", "sw", NULL};
  g_assert_cmpint(nf_test_run_cli(tmp, run2, 30000, NULL), ==, 0);
  g_assert_true(nf_test_wait_file_contains(log, "all 2 guests ready", BOOT_MS));
  kill_supervisor(tmp, "sw");
  /* What an older supervisor did to guests beyond its count. */
  g_autofree char *pidfile = g_build_filename(tmp, "run/nervesfleet/sw/vm-0002.pid", NULL);
  g_assert_cmpint(g_unlink(pidfile), ==, 0);
  g_autoptr(GArray) alive = qemus(tmp);
  g_assert_cmpuint(alive->len, ==, 2);

  const char *down[] = {"down", "--name", "sw", NULL};
  g_autofree char *out = NULL;
  g_assert_cmpint(nf_test_run_cli(tmp, down, STOP_MS, &out), ==, 0);
  g_assert_nonnull(strstr(out, "killed 2 orphaned guests"));
  g_assert_true(nf_test_wait_pids_gone(alive, STOP_MS));
  g_assert_cmpuint(nf_test_cgroups_of(tmp, "sw"), ==, 0);
  nf_test_tmpdir_cleanup(tmp);
}

/* A stray still stopping keeps its id: growing the fleet over it would
 * share its sockets and pid file. The stray is held (SIGSTOP) so that it is
 * still stopping when `scale` asks, whatever the host's speed. */
static void test_scale_waits_for_stray(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  g_autofree char *log = g_build_filename(tmp, "state/nervesfleet/sc/supervisor.log", NULL);
  const char *run2[] = {"run", "2", "-d", "--name", "sc", NULL};
  g_assert_cmpint(nf_test_run_cli(tmp, run2, 30000, NULL), ==, 0);
  g_assert_true(nf_test_wait_file_contains(log, "all 2 guests ready", BOOT_MS));
  kill_supervisor(tmp, "sc");
  GPid held = pid_of(tmp, "sc", "vm-0002");
  kill(held, SIGSTOP);

  const char *run1[] = {"run", "1", "-d", "--name", "sc", "--stop-timeout", "600", NULL};
  g_assert_cmpint(nf_test_run_cli(tmp, run1, 30000, NULL), ==, 0);
  g_assert_true(nf_test_wait_file_contains(log, "vm-0002: left running", STOP_MS));
  const char *scale[] = {"scale", "2", "--name", "sc", NULL};
  g_autofree char *out = NULL;
  g_assert_cmpint(nf_test_run_cli(tmp, scale, 30000, &out), ==, 1);
  g_assert_nonnull(strstr(out, "vm-0002 is still stopping"));

  g_autoptr(GArray) stray = one_pid(held);
  kill(held, SIGCONT); /* the SIGTERM it was sent ends it now */
  g_assert_true(nf_test_wait_pids_gone(stray, STOP_MS));
  g_assert_true(nf_test_wait_file_contains(log, "vm-0002 stopped (beyond", STOP_MS));
  const char *scale_wait[] = {"scale", "2", "--name", "sc", "--wait", NULL};
  g_assert_cmpint(nf_test_run_cli(tmp, scale_wait, BOOT_MS, NULL), ==, 0);
  const char *down[] = {"down", "--name", "sc", NULL};
  g_assert_cmpint(nf_test_run_cli(tmp, down, STOP_MS, NULL), ==, 0);
  nf_test_tmpdir_cleanup(tmp);
}

/* Before: "crashed (died while no supervisor was watching)", a restart
 * counted, for guests that died with their supervisor by design. */
static void test_foreground_killed(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  const char *args[] = {"run", "1", "--name", "fg", NULL};
  g_autoptr(NfTestProc) p = nf_test_proc_spawn(tmp, args);
  g_assert_true(nf_test_proc_wait_output(p, "all 1 guests ready", BOOT_MS));
  g_autoptr(GArray) guest = qemus(tmp);
  g_assert_cmpuint(guest->len, ==, 1);
  nf_test_proc_signal(p, SIGKILL);
  g_assert_cmpint(nf_test_proc_wait_exit(p, STOP_MS), ==, 128 + SIGKILL);
  g_assert_true(nf_test_wait_pids_gone(guest, STOP_MS)); /* PR_SET_PDEATHSIG */

  g_autoptr(NfTestProc) again = nf_test_proc_spawn(tmp, args);
  g_assert_true(nf_test_proc_wait_output(again, "all 1 guests ready", BOOT_MS));
  const char *out = nf_test_proc_output(again);
  g_test_message("%s", out);
  g_assert_nonnull(strstr(out, "vm-0001 stopped: stopped with its supervisor"));
  g_assert_null(strstr(out, "crashed"));
  g_assert_null(strstr(out, "restart 1"));
  {
    json_auto_t *s = status_of(tmp, "fg", "vm-0001");
    g_assert_cmpint(json_integer_value(json_object_get(s, "restarts")), ==, 0);
    g_assert_cmpstr(json_string_value(json_object_get(s, "last_exit")), ==, "stopped");
    g_assert_true(json_is_true(json_object_get(s, "dies_with_supervisor")));
  }
  nf_test_proc_signal(again, SIGTERM);
  g_assert_cmpint(nf_test_proc_wait_exit(again, STOP_MS), ==, 0);
  nf_test_tmpdir_cleanup(tmp);
}

/* A guest adopted while its qemu cannot answer (SIGSTOPped here; wedged
 * in life) is judged hung after --boot-timeout and restarted. Before, it
 * sat in `starting` for ever: no deadline was armed for an adoption. */
static void test_adopted_wedged(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  g_autofree char *log = g_build_filename(tmp, "state/nervesfleet/wedge/supervisor.log", NULL);
  const char *run1[] = {"run", "1", "-d", "--name", "wedge", "--backoff", "0.2", "--boot-timeout",
                        "4",   NULL};
  g_assert_cmpint(nf_test_run_cli(tmp, run1, 30000, NULL), ==, 0);
  g_assert_true(nf_test_wait_file_contains(log, "all 1 guests ready", BOOT_MS));
  kill_supervisor(tmp, "wedge");
  GPid wedged = pid_of(tmp, "wedge", "vm-0001");
  g_assert_cmpint(kill(wedged, SIGSTOP), ==, 0);

  g_assert_cmpint(nf_test_run_cli(tmp, run1, 30000, NULL), ==, 0);
  g_autofree char *events =
      g_build_filename(tmp, "state/nervesfleet/wedge/vm-0001/events.log", NULL);
  g_assert_true(nf_test_wait_file_contains(events, "no QMP handshake within 4 s", BOOT_MS));
  const char *wait[] = {"wait", "--name", "wedge", "--timeout", "170", NULL};
  g_assert_cmpint(nf_test_run_cli(tmp, wait, BOOT_MS, NULL), ==, 0);
  g_assert_cmpint(pid_of(tmp, "wedge", "vm-0001"), !=, wedged);
  const char *down[] = {"down", "--name", "wedge", NULL};
  g_assert_cmpint(nf_test_run_cli(tmp, down, STOP_MS, NULL), ==, 0);
  nf_test_tmpdir_cleanup(tmp);
}

/* A guest whose channels refuse the new supervisor (its QMP socket, .ctl, gone
 * here; no fd left while adopting thousands, in life) is ended and started
 * afresh, said so, no restart counted. It was recorded as a crash
 * ("died while no supervisor was watching"), the live qemu left to the
 * stray sweep. */
static void test_adopt_refused(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  g_autofree char *log = g_build_filename(tmp, "state/nervesfleet/refuse/supervisor.log", NULL);
  const char *run1[] = {"run", "1", "-d", "--name", "refuse", NULL};
  g_assert_cmpint(nf_test_run_cli(tmp, run1, 30000, NULL), ==, 0);
  g_assert_true(nf_test_wait_file_contains(log, "all 1 guests ready", BOOT_MS));
  kill_supervisor(tmp, "refuse");
  g_autoptr(GArray) old = one_pid(pid_of(tmp, "refuse", "vm-0001"));
  g_autofree char *qmp = g_build_filename(tmp, "run/nervesfleet/refuse/vm-0001.ctl", NULL);
  g_assert_cmpint(g_unlink(qmp), ==, 0);

  g_assert_cmpint(nf_test_run_cli(tmp, run1, 30000, NULL), ==, 0);
  const char *wait[] = {"wait", "--name", "refuse", "--timeout", "170", NULL};
  g_assert_cmpint(nf_test_run_cli(tmp, wait, BOOT_MS, NULL), ==, 0);
  g_assert_true(nf_test_wait_pids_gone(old, STOP_MS));
  g_autofree char *events =
      g_build_filename(tmp, "state/nervesfleet/refuse/vm-0001/events.log", NULL);
  g_assert_true(nf_test_wait_file_contains(events, "could not be taken over", 1000));
  {
    json_auto_t *s = status_of(tmp, "refuse", "vm-0001");
    g_assert_cmpint(json_integer_value(json_object_get(s, "restarts")), ==, 0);
  }
  const char *down[] = {"down", "--name", "refuse", NULL};
  g_assert_cmpint(nf_test_run_cli(tmp, down, STOP_MS, NULL), ==, 0);
  nf_test_tmpdir_cleanup(tmp);
}

/* Before: killing the guest killed the wrapper and left its qemu running. */
static void test_wrapper_group_killed(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  g_autofree char *wrap = g_build_filename(tmp, "qemu-wrap", NULL);
  /* Not exec: qemu is the wrapper's child. */
  const char *script = "#!/bin/sh\nqemu-system-aarch64 \"$@\"\nexit $?\n";
  g_assert_true(g_file_set_contents(wrap, script, -1, NULL));
  g_assert_cmpint(g_chmod(wrap, 0755), ==, 0);
  const char *args[] = {"run", "1", "--name", "wrap", "--qemu", wrap, "--restart", "never", NULL};
  g_autoptr(NfTestProc) p = nf_test_proc_spawn(tmp, args);
  g_assert_true(nf_test_proc_wait_output(p, "all 1 guests ready", BOOT_MS));
  g_autoptr(GArray) procs = qemus(tmp);
  g_assert_cmpuint(procs->len, ==, 2); /* the wrapper and its qemu */

  const char *kill1[] = {"kill", "1", "--name", "wrap", NULL};
  g_assert_cmpint(nf_test_run_cli(tmp, kill1, STOP_MS, NULL), ==, 0);
  g_assert_true(nf_test_wait_pids_gone(procs, 10000));
  nf_test_proc_signal(p, SIGTERM);
  g_assert_cmpint(nf_test_proc_wait_exit(p, STOP_MS), ==, 0);
  nf_test_tmpdir_cleanup(tmp);
}

/* A guest that prints its ready line while no supervisor runs (its
 * supervisor killed mid-boot, or a hand-over) is adopted as ready. It used
 * to stay `booting` until --boot-timeout killed it as hung: the line was in
 * its log, not on the socket the new supervisor reads. */
static void test_ready_while_unsupervised(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  g_autofree char *status =
      g_build_filename(tmp, "state/nervesfleet/gap/vm-0001/status.json", NULL);
  g_autofree char *console =
      g_build_filename(tmp, "state/nervesfleet/gap/vm-0001/console.log", NULL);
  const char *run[] = {"run", "1", "-d", "--name", "gap", "--boot-timeout", "150", NULL};
  g_assert_cmpint(nf_test_run_cli(tmp, run, 30000, NULL), ==, 0);
  g_assert_true(nf_test_wait_file_contains(status, "\"state\":\"booting\"", BOOT_MS));
  kill_supervisor(tmp, "gap");
  const char *down[] = {"down", "--name", "gap", NULL};
  if (nf_test_path_exists(console) && nf_test_file_contains(console, "nervesfleet-ready")) {
    g_test_skip("the guest was ready before its supervisor was killed");
    g_assert_cmpint(nf_test_run_cli(tmp, down, STOP_MS, NULL), ==, 0);
    nf_test_tmpdir_cleanup(tmp);
    return;
  }
  g_assert_true(nf_test_wait_file_contains(console, "nervesfleet-ready", BOOT_MS));
  GPid pid = pid_of(tmp, "gap", "vm-0001");

  g_assert_cmpint(nf_test_run_cli(tmp, run, 30000, NULL), ==, 0);
  /* Well inside the boot timeout the old code waited out. */
  const char *wait[] = {"wait", "--name", "gap", "--timeout", "60", NULL};
  g_assert_cmpint(nf_test_run_cli(tmp, wait, BOOT_MS, NULL), ==, 0);
  g_assert_cmpint(pid_of(tmp, "gap", "vm-0001"), ==, pid);
  g_assert_cmpint(nf_test_run_cli(tmp, down, STOP_MS, NULL), ==, 0);
  nf_test_tmpdir_cleanup(tmp);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/adopt/smaller-run-adopts-all", test_smaller_run_adopts_all);
  g_test_add_func("/adopt/balloon-adopted", test_balloon_adopted);
  g_test_add_func("/adopt/down-sweeps-without-pidfiles", test_down_sweeps_without_pidfiles);
  g_test_add_func("/adopt/scale-waits-for-stray", test_scale_waits_for_stray);
  g_test_add_func("/adopt/foreground-killed", test_foreground_killed);
  g_test_add_func("/adopt/wrapper-group-killed", test_wrapper_group_killed);
  g_test_add_func("/adopt/adopted-wedged", test_adopted_wedged);
  g_test_add_func("/adopt/adopt-refused", test_adopt_refused);
  g_test_add_func("/adopt/ready-while-unsupervised", test_ready_while_unsupervised);
  return g_test_run();
}
