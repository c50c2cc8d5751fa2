/*
 * test-fleet-lifecycle.c: rows of a guest's state x event table
 * (supervisor/lifecycle.c) and fleet scaling, driven through the fleet on the
 * fake qemu, whose fault knobs make a guest fail at start, crash, never
 * print its ready line or hang on cue. Each test names the rows it covers as
 * STATE+EVENT; each asserts the transitions the fleet reported and the exit
 * classification, not timings. Also: ksmd's pace follows the guests that
 * have a qemu (KSM's files a stand-in dir); a ready guest's probes read its
 * stats only when new ones can be there. What needs a real guest
 * (panics, watchdogs, OOM kills) is in test-lifecycle.c.
 */
#include <signal.h>
#include <string.h>

#include "qmp/qmp.h"
#include "supervisor/ksm.h"
#include "tests/lib/fake-fleet.h"
#include "tests/lib/nf-test.h"

#define WAIT_MS 60000

static NfVm *vm_of(NfFakeFleet *f, guint id)
{
  NfVm *vm = nf_fleet_find_vm(f->fleet, id);
  g_assert_nonnull(vm);
  return vm;
}

static void kill_guest(NfFakeFleet *f, guint id)
{
  GPid pid = nf_vm_pid(vm_of(f, id));
  g_assert_cmpint(pid, >, 0);
  g_assert_cmpint(kill(pid, SIGKILL), ==, 0);
}

static gboolean any_reason_has(NfFakeFleet *f, const char *needle)
{
  for (guint i = 0; i < f->reasons->len; i++)
    if (strstr(g_ptr_array_index(f->reasons, i), needle))
      return TRUE;
  return FALSE;
}

/* CREATED+QUEUE, QUEUED+ADMIT, STARTING+QMP_UP, BOOTING+READY: a guest whose
 * ready line comes after the QMP handshake goes the long way; READY+STOP,
 * STOPPING+EXIT: an orderly stop of one guest is `stopped`, not restarted;
 * STOPPED+QUEUE: started again by hand. */
static void test_boot_stop_start(void)
{
  NfFakeFleet *f = nf_fake_fleet_new(3, 3);
  g_setenv("FAKE_QEMU_BOOT_MS", "200", TRUE);
  nf_fake_fleet_start(f);
  g_assert_true(nf_fake_fleet_wait_all(f, NF_VM_READY, WAIT_MS));
  g_assert_cmpuint(nf_fake_fleet_seen(f, NF_VM_CREATED, NF_VM_QUEUED), ==, 3);
  g_assert_cmpuint(nf_fake_fleet_seen(f, NF_VM_QUEUED, NF_VM_STARTING), ==, 3);
  /* The long way is the likely one (the ready line comes 200 ms after the
   * spawn), but a loaded host can hold the QMP handshake back past it, and a
   * ready line first goes STARTING+READY: each guest took one of the two. */
  guint long_way = nf_fake_fleet_seen(f, NF_VM_STARTING, NF_VM_BOOTING);
  g_assert_cmpuint(nf_fake_fleet_seen(f, NF_VM_BOOTING, NF_VM_READY), ==, long_way);
  g_assert_cmpuint(long_way + nf_fake_fleet_seen(f, NF_VM_STARTING, NF_VM_READY), ==, 3);

  nf_fleet_stop_vm(f->fleet, vm_of(f, 2), FALSE);
  g_assert_true(nf_fake_fleet_wait_vm(f, 2, NF_VM_STOPPED, WAIT_MS));
  g_assert_cmpuint(nf_fake_fleet_seen(f, NF_VM_READY, NF_VM_STOPPING), ==, 1);
  g_assert_cmpuint(nf_fake_fleet_seen(f, NF_VM_STOPPING, NF_VM_STOPPED), ==, 1);
  g_assert_cmpint(nf_vm_exit_kind(vm_of(f, 2)), ==, NF_EXIT_STOPPED);
  g_assert_cmpuint(nf_fake_fleet_seen(f, NF_VM_STOPPED, NF_VM_QUEUED), ==, 0);

  nf_fleet_start_vm(f->fleet, vm_of(f, 2));
  g_assert_true(nf_fake_fleet_wait_all(f, NF_VM_READY, WAIT_MS));
  g_assert_cmpuint(nf_fake_fleet_seen(f, NF_VM_STOPPED, NF_VM_QUEUED), ==, 1);
  g_assert_cmpuint(nf_vm_restarts(vm_of(f, 2)), ==, 0); /* a start, not a restart */
  nf_fake_fleet_finish(f, FALSE);
}

static gboolean start_failed(NfFakeFleet *f)
{
  return f->start_error != NULL;
}

/* STARTING+EXIT before QMP on the first guest: the setup is broken, the
 * fleet says so once, and the rest of the fleet is not spawned in vain. */
static void test_fail_at_start(void)
{
  NfFakeFleet *f = nf_fake_fleet_new(20, 1);
  g_setenv("FAKE_QEMU_FAIL_START", "1", TRUE);
  nf_fake_fleet_start(f);
  g_assert_true(nf_fake_fleet_wait(f, start_failed, WAIT_MS));
  g_assert_nonnull(strstr(f->start_error, "qemu failed before it was up"));
  g_assert_nonnull(strstr(f->start_error, "FAKE_QEMU_FAIL_START"));
  NfFleetCounts c;
  nf_fleet_counts(f->fleet, &c);
  g_assert_cmpuint(c.started, ==, 1);
  g_assert_cmpuint(nf_fake_fleet_seen(f, NF_VM_STARTING, NF_VM_BACKOFF), ==, 1);
  g_assert_cmpint(nf_vm_exit_kind(vm_of(f, 1)), ==, NF_EXIT_CRASHED);
  nf_fake_fleet_finish(f, FALSE);
}

/* READY+EXIT (a crash) -> BACKOFF, BACKOFF+BACKOFF_DONE -> QUEUED, and back
 * to READY as a restart; BACKOFF+STOP: a guest waiting out its backoff is
 * stopped at once; BACKOFF+QUEUE: a restart asked for by hand does not wait
 * for the backoff. */
static void test_crash_backoff(void)
{
  /* 7 guests: three failures stay under the storm guard's threshold (4). */
  NfFakeFleet *f = nf_fake_fleet_new(7, 7);
  nf_fake_fleet_start(f);
  g_assert_true(nf_fake_fleet_wait_all(f, NF_VM_READY, WAIT_MS));

  kill_guest(f, 1);
  g_assert_true(nf_fake_fleet_wait_vm(f, 1, NF_VM_BACKOFF, WAIT_MS));
  g_assert_cmpint(nf_vm_exit_kind(vm_of(f, 1)), ==, NF_EXIT_CRASHED);
  g_assert_true(nf_fake_fleet_wait_vm(f, 1, NF_VM_READY, WAIT_MS));
  g_assert_cmpuint(nf_fake_fleet_seen(f, NF_VM_READY, NF_VM_BACKOFF), ==, 1);
  g_assert_cmpuint(nf_fake_fleet_seen(f, NF_VM_BACKOFF, NF_VM_QUEUED), ==, 1);
  g_assert_cmpuint(nf_vm_restarts(vm_of(f, 1)), ==, 1);

  /* Long backoffs from here on (the config is read at each decision). */
  f->config.restart.backoff_initial_ms = f->config.restart.backoff_max_ms = 600000;
  kill_guest(f, 2);
  kill_guest(f, 3);
  g_assert_true(nf_fake_fleet_wait_vm(f, 2, NF_VM_BACKOFF, WAIT_MS));
  g_assert_true(nf_fake_fleet_wait_vm(f, 3, NF_VM_BACKOFF, WAIT_MS));
  nf_fleet_stop_vm(f->fleet, vm_of(f, 2), FALSE);
  g_assert_cmpint(nf_vm_state(vm_of(f, 2)), ==, NF_VM_STOPPED);
  nf_fleet_restart_vm(f->fleet, vm_of(f, 3));
  g_assert_true(nf_fake_fleet_wait_vm(f, 3, NF_VM_READY, WAIT_MS));
  g_assert_cmpuint(nf_fake_fleet_seen(f, NF_VM_BACKOFF, NF_VM_STOPPED), ==, 1);
  g_assert_cmpuint(nf_fake_fleet_seen(f, NF_VM_BACKOFF, NF_VM_QUEUED), ==, 2);
  nf_fake_fleet_finish(f, FALSE);
}

/* BOOTING+HEALTH_FAIL: no ready line within --boot-timeout is a hung guest,
 * killed (UNHEALTHY+EXIT) and classified `hung`; with --restart never it is
 * FAILED. FAILED+QUEUE: started by hand, with a healed guest, it comes up. */
static void test_boot_timeout_hung(void)
{
  NfFakeFleet *f = nf_fake_fleet_new(1, 1);
  f->config.boot_timeout_ms = 300;
  f->config.restart.mode = NF_RESTART_NEVER;
  g_setenv("FAKE_QEMU_NO_READY", "1", TRUE);
  nf_fake_fleet_start(f);
  g_assert_true(nf_fake_fleet_wait_vm(f, 1, NF_VM_FAILED, WAIT_MS));
  g_assert_cmpuint(nf_fake_fleet_seen(f, NF_VM_BOOTING, NF_VM_UNHEALTHY), ==, 1);
  g_assert_cmpuint(nf_fake_fleet_seen(f, NF_VM_UNHEALTHY, NF_VM_FAILED), ==, 1);
  g_assert_cmpint(nf_vm_exit_kind(vm_of(f, 1)), ==, NF_EXIT_HUNG);
  g_assert_true(any_reason_has(f, "--boot-timeout"));
  g_assert_null(f->start_error); /* QMP was up: the setup works */

  g_unsetenv("FAKE_QEMU_NO_READY");
  nf_fleet_start_vm(f->fleet, vm_of(f, 1));
  g_assert_true(nf_fake_fleet_wait_vm(f, 1, NF_VM_READY, WAIT_MS));
  g_assert_cmpuint(nf_fake_fleet_seen(f, NF_VM_FAILED, NF_VM_QUEUED), ==, 1);
  nf_fake_fleet_finish(f, FALSE);
}

/* READY+HEALTH_FAIL: a qemu that stops answering QMP after it was ready is
 * found by the health probe, killed and restarted. */
/* Starts `f` (one guest) with the fake's fault `var`=`value`: the guest
 * comes up, goes unhealthy, and its restart (the fault unset) is ready. */
static void fault_then_back(NfFakeFleet *f, const char *var, const char *value)
{
  g_setenv(var, value, TRUE);
  nf_fake_fleet_start(f);
  g_assert_true(nf_fake_fleet_wait_vm(f, 1, NF_VM_READY, WAIT_MS));
  g_assert_true(nf_fake_fleet_wait_vm(f, 1, NF_VM_UNHEALTHY, WAIT_MS));
  g_unsetenv(var); /* the restarted one stays well */
  g_assert_true(nf_fake_fleet_wait_vm(f, 1, NF_VM_READY, WAIT_MS));
}

static void test_ready_then_hung(void)
{
  NfFakeFleet *f = nf_fake_fleet_new(1, 1);
  f->config.health_interval_ms = 100;
  f->config.health_timeout_ms = 300;
  fault_then_back(f, "FAKE_QEMU_HANG_MS", "300");
  g_assert_cmpuint(nf_fake_fleet_seen(f, NF_VM_READY, NF_VM_UNHEALTHY), ==, 1);
  g_assert_cmpuint(nf_fake_fleet_seen(f, NF_VM_UNHEALTHY, NF_VM_BACKOFF), ==, 1);
  g_assert_cmpint(nf_vm_exit_kind(vm_of(f, 1)), ==, NF_EXIT_HUNG);
  g_assert_cmpuint(nf_vm_restarts(vm_of(f, 1)), ==, 1);
  nf_fake_fleet_finish(f, FALSE);
}

/* READY, then its QMP sockets close while qemu runs on (a broken monitor):
 * judged hung after the probes' deadline, killed, restarted. It was never
 * judged: probes on a closed connection are not failures, and the exit
 * that normally follows the close never came. */
static void test_monitor_gone(void)
{
  NfFakeFleet *f = nf_fake_fleet_new(1, 1);
  f->config.health_timeout_ms = 1000;
  fault_then_back(f, "FAKE_QEMU_MONITOR_GONE_MS", "300");
  g_assert_true(any_reason_has(f, "QMP monitor closed while qemu kept running"));
  g_assert_cmpint(nf_vm_exit_kind(vm_of(f, 1)), ==, NF_EXIT_HUNG);
  nf_fake_fleet_finish(f, FALSE);
}

/* A ready guest's probes read its balloon stats only once new ones can be
 * there (every stats interval: 1 s for a 4 s heartbeat); the probes in
 * between are a query-status, which costs qemu half as much (health.c). A
 * supervisor that read the stats at every probe, or never, fails here. */
static const char *probe_log;
static gboolean four_stats_reads(NfFakeFleet *f)
{
  g_autofree char *text = NULL;
  if (!g_file_get_contents(probe_log, &text, NULL, NULL))
    return FALSE;
  guint reads = 0;
  for (const char *p = text; (p = strstr(p, "qom-get guest-stats\n")) != NULL; p++)
    reads++;
  return reads >= 4;
}

static void test_probes_read_stats_when_due(void)
{
  NfFakeFleet *f = nf_fake_fleet_new(1, 1);
  f->config.health_interval_ms = 250;
  f->config.health_timeout_ms = 5000;
  f->config.heartbeat_timeout_ms = 4000;
  g_autofree char *log = g_build_filename(f->tmp, "qmp.log", NULL);
  probe_log = log;
  g_setenv("FAKE_QEMU_QMP_LOG", log, TRUE);
  nf_fake_fleet_start(f);
  g_assert_true(nf_fake_fleet_wait_vm(f, 1, NF_VM_READY, WAIT_MS));
  g_assert_true(nf_fake_fleet_wait(f, four_stats_reads, WAIT_MS));
  g_autofree char *text = NULL;
  g_assert_true(g_file_get_contents(log, &text, NULL, NULL));
  g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
  /* From the first read on: between two reads, pings; never a read twice
   * in a row (four probes per stats interval). */
  gint last_read = -1;
  guint reads = 0, pings = 0;
  for (guint i = 0; lines[i]; i++) {
    if (g_str_has_suffix(lines[i], " qom-get guest-stats")) {
      if (last_read >= 0) {
        g_test_message("read %u: %u pings since the one before", reads, (guint)(i - last_read - 1));
        g_assert_cmpuint(i - (guint)last_read - 1, >=, 1);
      }
      last_read = (gint)i;
      reads++;
    } else if (last_read >= 0 && g_str_has_suffix(lines[i], " query-status")) {
      pings++;
    }
  }
  g_assert_cmpuint(reads, >=, 4);
  g_assert_cmpuint(pings, >=, reads - 1);
  nf_fake_fleet_finish(f, FALSE);
}

/* STOPPING+KILL: a stop that qemu ignores (hung: QMP quit unanswered) is
 * escalated by a forced stop; and by the stop timeout on its own. QUEUED+STOP:
 * a guest still waiting for a boot slot is stopped without a spawn. */
static void test_stop_hung_and_queued(void)
{
  NfFakeFleet *f = nf_fake_fleet_new(3, 2);
  f->config.stop_timeout_ms = 300;
  g_setenv("FAKE_QEMU_BOOT_MS", "1000", TRUE);
  g_setenv("FAKE_QEMU_HANG_MS", "0", TRUE); /* hung before its ready line */
  nf_fake_fleet_start(f);
  g_assert_true(nf_fake_fleet_wait_vm(f, 1, NF_VM_BOOTING, WAIT_MS));
  g_assert_true(nf_fake_fleet_wait_vm(f, 2, NF_VM_BOOTING, WAIT_MS));
  g_assert_cmpint(nf_vm_state(vm_of(f, 3)), ==, NF_VM_QUEUED); /* the window is full */

  nf_fleet_stop_vm(f->fleet, vm_of(f, 3), FALSE);
  g_assert_cmpint(nf_vm_state(vm_of(f, 3)), ==, NF_VM_STOPPED);
  g_assert_cmpuint(nf_fake_fleet_seen(f, NF_VM_QUEUED, NF_VM_STOPPED), ==, 1);

  nf_fleet_stop_vm(f->fleet, vm_of(f, 1), FALSE);
  g_assert_cmpint(nf_vm_state(vm_of(f, 1)), ==, NF_VM_STOPPING);
  nf_fleet_stop_vm(f->fleet, vm_of(f, 1), TRUE);
  g_assert_true(nf_fake_fleet_wait_vm(f, 1, NF_VM_STOPPED, WAIT_MS));
  g_assert_cmpint(nf_vm_exit_kind(vm_of(f, 1)), ==, NF_EXIT_STOPPED);
  g_assert_nonnull(strstr(nf_vm_exit_reason(vm_of(f, 1)), "killed by signal 9"));

  nf_fleet_stop_vm(f->fleet, vm_of(f, 2), FALSE); /* the stop timeout kills it */
  g_assert_true(nf_fake_fleet_wait_vm(f, 2, NF_VM_STOPPED, WAIT_MS));
  g_assert_cmpint(nf_vm_exit_kind(vm_of(f, 2)), ==, NF_EXIT_STOPPED);
  g_assert_nonnull(strstr(nf_vm_exit_reason(vm_of(f, 2)), "killed by signal 9"));
  g_assert_cmpuint(nf_fake_fleet_seen(f, NF_VM_BOOTING, NF_VM_STOPPING), ==, 2);
  g_assert_cmpuint(nf_fake_fleet_seen(f, NF_VM_STOPPING, NF_VM_STOPPED), ==, 2);
  nf_fake_fleet_finish(f, FALSE);
}

typedef struct {
  gboolean done;
} Replied;

static void replied_cb(NfQmp *qmp, const NfQmpReply *reply, gpointer data)
{
  ((Replied *)data)->done = TRUE;
}

static gboolean replied(gpointer data)
{
  return ((Replied *)data)->done;
}

/* READY+EXIT as a poweroff (the guest shut itself down): under the default
 * --restart on-failure it stays off, `stopped`, not restarted. */
static void test_poweroff_stays_off(void)
{
  NfFakeFleet *f = nf_fake_fleet_new(1, 1);
  nf_fake_fleet_start(f);
  g_assert_true(nf_fake_fleet_wait_vm(f, 1, NF_VM_READY, WAIT_MS));
  Replied r = {FALSE};
  nf_qmp_execute(nf_vm_qmp(vm_of(f, 1)), "system_powerdown", NULL, 5000, replied_cb, &r);
  g_assert_true(nf_test_wait_for(replied, &r, WAIT_MS));
  g_assert_true(nf_fake_fleet_wait_vm(f, 1, NF_VM_STOPPED, WAIT_MS));
  g_assert_cmpint(nf_vm_exit_kind(vm_of(f, 1)), ==, NF_EXIT_POWEROFF);
  g_assert_cmpuint(nf_fake_fleet_seen(f, NF_VM_READY, NF_VM_STOPPED), ==, 1);
  g_assert_cmpuint(nf_fake_fleet_seen(f, NF_VM_STOPPED, NF_VM_QUEUED), ==, 0);
  nf_fake_fleet_finish(f, FALSE);
}

/* The 50 looping guests have ended, one way or the other. */
static gboolean loops_ended(NfFakeFleet *f)
{
  return nf_fake_fleet_count(f, NF_VM_FAILED) + nf_fake_fleet_count(f, NF_VM_STOPPED) >= 50;
}

/* READY+EXIT as a reboot (the guest reset itself; qemu runs with -no-reboot,
 * so it exits 0 right after its SHUTDOWN event): restarted after the floor
 * only, not a failure (the storm guard stays quiet though the whole fleet
 * does it), yet counted toward the intensity limit, so a reboot loop ends in
 * FAILED. 50 guests x 4 exits: each must be read as a reboot, never as a
 * poweroff (the exit used to be judged before qemu's last QMP event was
 * read, and a guest that rebooted stayed off). */
static void test_reboot_loop(void)
{
  NfFakeFleet *f = nf_fake_fleet_new(51, 51);
  f->config.restart.max_restarts = 3;
  f->config.restart.backoff_initial_ms = 5000; /* a failure would wait this */
  g_autoptr(GString) looping = g_string_new("vm-0002");
  for (guint id = 3; id <= 51; id++)
    g_string_append_printf(looping, ",vm-%04u", id);
  g_setenv("FAKE_QEMU_FAULT_GUESTS", looping->str, TRUE);
  g_setenv("FAKE_QEMU_REBOOT_MS", "20", TRUE);
  nf_fake_fleet_start(f);
  g_assert_true(nf_fake_fleet_wait_vm(f, 1, NF_VM_READY, WAIT_MS));
  g_assert_true(nf_fake_fleet_wait(f, loops_ended, WAIT_MS));
  g_assert_cmpuint(nf_fake_fleet_count(f, NF_VM_STOPPED), ==, 0);
  g_assert_cmpuint(nf_fake_fleet_count(f, NF_VM_FAILED), ==, 50);
  for (guint id = 2; id <= 51; id++) {
    g_assert_cmpint(nf_vm_exit_kind(vm_of(f, id)), ==, NF_EXIT_REBOOT);
    g_assert_cmpuint(nf_vm_restarts(vm_of(f, id)), ==, 3);
  }
  guint to_backoff = 0;
  for (NfVmState s = 0; s < NF_VM_N_STATES; s++)
    to_backoff += nf_fake_fleet_seen(f, s, NF_VM_BACKOFF);
  g_assert_cmpuint(to_backoff, ==, 150);
  g_assert_true(any_reason_has(f, "exited: reboot (qemu reported guest-reset"));
  g_assert_true(any_reason_has(f, "more than 3 restarts within 60 s"));
  g_assert_false(any_reason_has(f, "restarting in 4.")); /* no failure backoff */
  g_assert_cmpuint(f->notices->len, ==, 0);
  g_assert_cmpint(nf_vm_state(vm_of(f, 1)), ==, NF_VM_READY);
  nf_fake_fleet_finish(f, FALSE);
}

static gboolean size_is_100_and_reaped(NfFakeFleet *f)
{
  return nf_fleet_size(f->fleet) == 100 && nf_fake_fleet_count(f, NF_VM_READY) == 100;
}

/* Scale 200 -> 500 (new ids queued through the window, all ready) -> 100
 * (the highest ids stopped, reaped and freed; the lowest keep running). */
static void test_scale_up_down(void)
{
  NfFakeFleet *f = nf_fake_fleet_new(200, 50);
  nf_fake_fleet_start(f);
  g_assert_true(nf_fake_fleet_wait_all(f, NF_VM_READY, WAIT_MS));
  g_autoptr(GError) error = NULL;
  g_assert_true(nf_fleet_scale(f->fleet, 500, &error));
  g_assert_no_error(error);
  g_assert_cmpuint(nf_fleet_size(f->fleet), ==, 500);
  g_assert_true(nf_fake_fleet_wait_all(f, NF_VM_READY, WAIT_MS));
  g_assert_cmpuint(f->max_booting, <=, 50);
  g_assert_nonnull(nf_fleet_find_vm(f->fleet, 500));

  GPid kept = nf_vm_pid(vm_of(f, 100));
  g_assert_true(nf_fleet_scale(f->fleet, 100, &error));
  g_assert_true(nf_fake_fleet_wait(f, size_is_100_and_reaped, WAIT_MS));
  g_assert_null(nf_fleet_find_vm(f->fleet, 101));
  g_assert_cmpint(nf_vm_pid(vm_of(f, 100)), ==, kept);
  g_autoptr(GArray) pids = nf_test_pids_matching(f->tmp);
  g_assert_cmpuint(pids->len, ==, 100); /* the 400 retired qemus are gone */
  NfFleetCounts c;
  nf_fleet_counts(f->fleet, &c);
  g_assert_cmpuint(c.total, ==, 100);
  g_assert_cmpuint(c.ready, ==, 100);

  g_assert_false(nf_fleet_scale(f->fleet, 0, &error));
  g_assert_nonnull(strstr(error->message, "out of range"));
  nf_fake_fleet_finish(f, FALSE);
}

static gboolean size_is_9(NfFakeFleet *f)
{
  return nf_fleet_size(f->fleet) == 9;
}

static gboolean size_is_8_all_ready(NfFakeFleet *f)
{
  return nf_fleet_size(f->fleet) == 8 && nf_fake_fleet_count(f, NF_VM_READY) == 8;
}

/* Scale 10 -> 7 while guests 9 and 10 cannot stop (SIGSTOPped, the stop
 * timeout long): 8 goes at once. Back to 8, then 9: guest 9 is still
 * stopping, so no second guest 9 may start (it would share its files).
 * The new guest 8 went behind the stopping ones, where the check did not
 * look, and a second guest 9 started. */
static void test_scale_up_past_stopping(void)
{
  NfFakeFleet *f = nf_fake_fleet_new(10, 10);
  f->config.stop_timeout_ms = 120000;
  nf_fake_fleet_start(f);
  g_assert_true(nf_fake_fleet_wait_all(f, NF_VM_READY, WAIT_MS));
  GPid stuck[2] = {nf_vm_pid(vm_of(f, 9)), nf_vm_pid(vm_of(f, 10))};
  for (guint i = 0; i < 2; i++)
    g_assert_cmpint(kill(stuck[i], SIGSTOP), ==, 0);
  g_autoptr(GError) error = NULL;
  g_assert_true(nf_fleet_scale(f->fleet, 7, &error));
  g_assert_true(nf_fake_fleet_wait(f, size_is_9, WAIT_MS)); /* 8 freed; 9, 10 stopping */
  g_assert_true(nf_fleet_scale(f->fleet, 8, &error));
  g_assert_no_error(error);
  g_assert_false(nf_fleet_scale(f->fleet, 9, &error));
  g_assert_nonnull(strstr(error->message, "vm-0009 is still stopping"));
  g_assert_cmpuint(nf_fleet_size(f->fleet), ==, 10);
  /* In id order, the stopping ones last (ps, scale down). */
  for (guint i = 0; i < 10; i++)
    g_assert_cmpuint(nf_vm_id(nf_fleet_vm(f->fleet, i)), ==, i + 1);
  for (guint i = 0; i < 2; i++)
    g_assert_cmpint(kill(stuck[i], SIGCONT), ==, 0);
  g_assert_true(nf_fake_fleet_wait(f, size_is_8_all_ready, WAIT_MS));
  nf_fake_fleet_finish(f, FALSE);
}

/* `restart` and `start` of a guest being scaled away (`restart all` right
 * after `scale`): it is not requeued. It used to be, and it could be
 * spawned before its retirement, then run on where no one saw it. */
static gboolean size_is_2(NfFakeFleet *f)
{
  return nf_fleet_size(f->fleet) == 2;
}

static void test_restart_while_retiring(void)
{
  NfFakeFleet *f = nf_fake_fleet_new(3, 3);
  f->config.stop_timeout_ms = 120000;
  nf_fake_fleet_start(f);
  g_assert_true(nf_fake_fleet_wait_all(f, NF_VM_READY, WAIT_MS));
  NfVm *going = vm_of(f, 3);
  GPid stuck = nf_vm_pid(going);
  g_assert_cmpint(kill(stuck, SIGSTOP), ==, 0); /* it stays stopping */
  g_autoptr(GError) error = NULL;
  g_assert_true(nf_fleet_scale(f->fleet, 2, &error));
  nf_fleet_restart_vm(f->fleet, going);
  nf_fleet_start_vm(f->fleet, going);
  g_assert_cmpint(kill(stuck, SIGCONT), ==, 0);
  g_assert_true(nf_fake_fleet_wait(f, size_is_2, WAIT_MS));
  g_assert_cmpuint(nf_fake_fleet_seen(f, NF_VM_STOPPED, NF_VM_QUEUED), ==, 0);
  g_assert_cmpuint(nf_fake_fleet_count(f, NF_VM_READY), ==, 2);
  nf_fake_fleet_finish(f, FALSE);
}

/* KSM's files, a stand-in dir (main) so the host's own KSM is never touched. */
static char *ksm_tmp;

static char *ksm_knob(const char *name)
{
  return nf_test_ksm_knob(g_getenv("NERVESFLEET_KSM_SYSFS"), name);
}

static guint ksm_pages(void)
{
  g_autofree char *v = ksm_knob("pages_to_scan");
  return (guint)g_ascii_strtoull(v, NULL, 10);
}

static void ksm_knob_set(const char *name, guint64 value)
{
  g_autofree char *p = g_build_filename(g_getenv("NERVESFLEET_KSM_SYSFS"), name, NULL);
  g_autofree char *v = g_strdup_printf("%" G_GUINT64_FORMAT "\n", value);
  g_assert_true(g_file_set_contents(p, v, -1, NULL));
}

/* Until the pace drops: another full scan by "ksmd" that merged nothing,
 * at each look (the fleet reads the counters every few seconds). */
static guint64 ksm_scans;
static guint ksm_fast;
static gboolean ksm_slowed(NfFakeFleet *f)
{
  if (ksm_pages() < ksm_fast)
    return TRUE;
  ksm_knob_set("full_scans", ++ksm_scans);
  return FALSE;
}

static gboolean ksm_fast_and_all_ready(NfFakeFleet *f)
{
  return ksm_pages() == ksm_fast && nf_fake_fleet_count(f, NF_VM_READY) == 40;
}

static gboolean size_is_10_and_reaped(NfFakeFleet *f)
{
  return nf_fleet_size(f->fleet) == 10 && nf_fake_fleet_count(f, NF_VM_READY) == 10;
}

/* ksmd's pace follows the guests that have a qemu: low while the first of
 * 40 boot (two at a time), the pace for 40 once all are up; halved after a
 * full scan that merged nothing, fast again when a guest comes back up; for
 * 10 after scaling down; the host's settings come back at the stop. */
static void test_ksm_pace_follows_guests(void)
{
  nf_test_ksm_standin(g_getenv("NERVESFLEET_KSM_SYSFS"));
  NfFakeFleet *f = nf_fake_fleet_new(40, 2);
  f->config.ksm = NF_KSM_ON;
  guint64 mib = f->config.memory_mib + NF_KSM_QEMU_MIB;
  nf_fake_fleet_start(f);
  g_autofree char *run = ksm_knob("run");
  g_assert_cmpstr(run, ==, "1");

  g_assert_true(nf_fake_fleet_wait_vm(f, 1, NF_VM_READY, WAIT_MS));
  guint early = ksm_pages();
  g_test_message("pages_to_scan at the first ready: %u (40 up: %u)", early,
                 nf_ksm_scan_pages(40, mib));
  g_assert_cmpuint(early, <=, nf_ksm_scan_pages(4, mib)); /* 2 booting, 2 ready at most */

  g_assert_true(nf_fake_fleet_wait_all(f, NF_VM_READY, WAIT_MS));
  g_assert_cmpuint(ksm_pages(), ==, nf_ksm_scan_pages(40, mib));
  g_assert_cmpuint(nf_ksm_scan_pages(4, mib), <, nf_ksm_scan_pages(40, mib));

  ksm_fast = nf_ksm_scan_pages(40, mib);
  ksm_knob_set("pages_sharing", 1000);
  g_assert_true(nf_fake_fleet_wait(f, ksm_slowed, WAIT_MS));
  g_assert_cmpuint(ksm_pages(), ==, ksm_fast / 2);
  GPid pid = nf_vm_pid(vm_of(f, 7));
  g_assert_cmpint(kill(pid, SIGKILL), ==, 0); /* restarts: new memory */
  g_assert_true(nf_fake_fleet_wait(f, ksm_fast_and_all_ready, WAIT_MS));

  g_autoptr(GError) error = NULL;
  g_assert_true(nf_fleet_scale(f->fleet, 10, &error));
  g_assert_no_error(error);
  g_assert_true(nf_fake_fleet_wait(f, size_is_10_and_reaped, WAIT_MS));
  g_assert_cmpuint(ksm_pages(), ==, nf_ksm_scan_pages(10, mib));

  nf_fake_fleet_finish(f, FALSE);
  g_assert_cmpuint(ksm_pages(), ==, 100);
  g_autofree char *run_after = ksm_knob("run");
  g_assert_cmpstr(run_after, ==, "0");
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  /* Before any thread exists (setenv is not thread-safe). */
  ksm_tmp = nf_test_tmpdir_new();
  g_autofree char *ksm_sysfs = g_build_filename(ksm_tmp, "ksm", NULL);
  g_autofree char *ksm_books = g_build_filename(ksm_tmp, "books", NULL);
  g_setenv("NERVESFLEET_KSM_SYSFS", ksm_sysfs, TRUE);
  g_setenv("NERVESFLEET_KSM_STATE", ksm_books, TRUE);
  g_test_add_func("/fleet-lifecycle/boot-stop-start", test_boot_stop_start);
  g_test_add_func("/fleet-lifecycle/fail-at-start", test_fail_at_start);
  g_test_add_func("/fleet-lifecycle/crash-backoff", test_crash_backoff);
  g_test_add_func("/fleet-lifecycle/boot-timeout-hung", test_boot_timeout_hung);
  g_test_add_func("/fleet-lifecycle/ready-then-hung", test_ready_then_hung);
  g_test_add_func("/fleet-lifecycle/monitor-gone", test_monitor_gone);
  g_test_add_func("/fleet-lifecycle/probes-read-stats-when-due", test_probes_read_stats_when_due);
  g_test_add_func("/fleet-lifecycle/stop-hung-and-queued", test_stop_hung_and_queued);
  g_test_add_func("/fleet-lifecycle/poweroff-stays-off", test_poweroff_stays_off);
  g_test_add_func("/fleet-lifecycle/reboot-loop", test_reboot_loop);
  g_test_add_func("/fleet-lifecycle/scale-up-down", test_scale_up_down);
  g_test_add_func("/fleet-lifecycle/scale-up-past-stopping", test_scale_up_past_stopping);
  g_test_add_func("/fleet-lifecycle/restart-while-retiring", test_restart_while_retiring);
  g_test_add_func("/fleet-lifecycle/ksm-pace-follows-guests", test_ksm_pace_follows_guests);
  int rc = g_test_run();
  nf_test_tmpdir_cleanup(ksm_tmp);
  g_free(ksm_tmp);
  return rc;
}
