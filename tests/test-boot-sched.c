/*
 * test-boot-sched.c: the boot-storm scheduling levers (supervisor/boot-sched.c),
 * read back from the kernel (/proc/PID/task/TID/status, sched_getscheduler).
 * Guards: affinity and class reach every thread of a process, and come
 * back; in a fleet (fake qemu, 6 guests through a window of 2, TCG
 * defaults) each booting guest runs on one core that no other booting guest
 * has, a guest ready while others still boot is SCHED_IDLE and unpinned,
 * and once the storm is over every guest is SCHED_OTHER again; a lowered
 * guest that waits to run gets relief (SCHED_OTHER) before its health
 * deadlines and is lowered again once it no longer waits, while an idle
 * lowered guest stays lowered and keeps the normal stats interval; `run`
 * refuses an unknown class and --print-config shows both settings.
 */
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "qmp/qmp.h"
#include "supervisor/boot-sched.h"
#include "supervisor/health.h"
#include "tests/lib/fake-fleet.h"
#include "tests/lib/nf-test.h"

#define WAIT_MS 60000

/* Cpus_allowed_list of thread `tid` of `pid` ("0", "0-1"...). */
static char *cpus_of(GPid pid, long tid)
{
  g_autofree char *path = g_strdup_printf("/proc/%d/task/%ld/status", (int)pid, tid);
  g_autofree char *text = NULL;
  if (!g_file_get_contents(path, &text, NULL, NULL))
    return NULL;
  const char *line = strstr(text, "Cpus_allowed_list:");
  g_assert_nonnull(line);
  line += strlen("Cpus_allowed_list:");
  while (*line == ' ' || *line == '\t')
    line++;
  return g_strndup(line, strcspn(line, "\n"));
}

/* The thread ids of `pid`. */
static GArray *threads_of(GPid pid)
{
  GArray *tids = g_array_new(FALSE, FALSE, sizeof(long));
  g_autofree char *dir_path = g_strdup_printf("/proc/%d/task", (int)pid);
  g_autoptr(GDir) dir = g_dir_open(dir_path, 0, NULL);
  g_assert_nonnull(dir);
  for (const char *name; (name = g_dir_read_name(dir)) != NULL;) {
    long tid = strtol(name, NULL, 10);
    g_array_append_val(tids, tid);
  }
  return tids;
}

static char *all_cpus(void)
{
  return cpus_of(getpid(), getpid());
}

static gpointer parked_thread(gpointer data)
{
  GMutex *m = data;
  g_mutex_lock(m); /* held by the test until it is done */
  g_mutex_unlock(m);
  return NULL;
}

/* Affinity and class on a process of three threads (this one): every thread
 * changes, and both come back. */
static void test_every_thread(void)
{
  if (sysconf(_SC_NPROCESSORS_ONLN) < 2 || !nf_boot_sched_can_raise()) {
    g_test_skip("needs 2 CPUs and the right to raise priority");
    return;
  }
  g_autofree char *before = all_cpus();
  GMutex m;
  g_mutex_init(&m);
  g_mutex_lock(&m);
  GThread *t1 = g_thread_new("parked-1", parked_thread, &m);
  GThread *t2 = g_thread_new("parked-2", parked_thread, &m);
  g_autoptr(GArray) tids = threads_of(getpid());
  g_assert_cmpuint(tids->len, >=, 3);

  g_autoptr(GError) error = NULL;
  g_assert_true(nf_boot_sched_set_cpu(getpid(), 1, &error));
  g_assert_no_error(error);
  for (guint i = 0; i < tids->len; i++) {
    g_autofree char *c = cpus_of(getpid(), g_array_index(tids, long, i));
    g_assert_cmpstr(c, ==, "1");
  }
  g_assert_true(nf_boot_sched_set_cpu(getpid(), -1, &error));
  for (guint i = 0; i < tids->len; i++) {
    g_autofree char *c = cpus_of(getpid(), g_array_index(tids, long, i));
    g_assert_cmpstr(c, ==, before);
  }

  int nice_before = getpriority(PRIO_PROCESS, 0);
  g_assert_true(nf_boot_sched_set_class(getpid(), NF_READY_SCHED_BATCH, &error));
  for (guint i = 0; i < tids->len; i++) {
    long tid = g_array_index(tids, long, i);
    g_assert_cmpint(sched_getscheduler((pid_t)tid), ==, SCHED_BATCH);
    g_assert_cmpint(getpriority(PRIO_PROCESS, (id_t)tid), ==, 10);
  }
  /* Back to normal means the caller's own nice (the supervisor's); here the
   * caller was lowered with the rest, so it goes back first. */
  g_assert_cmpint(setpriority(PRIO_PROCESS, 0, nice_before), ==, 0);
  g_assert_true(nf_boot_sched_set_class(getpid(), NF_READY_SCHED_IDLE, &error));
  for (guint i = 0; i < tids->len; i++)
    g_assert_cmpint(sched_getscheduler((pid_t)g_array_index(tids, long, i)), ==, SCHED_IDLE);
  g_assert_true(nf_boot_sched_set_class(getpid(), NF_READY_SCHED_NORMAL, &error));
  g_assert_no_error(error);
  for (guint i = 0; i < tids->len; i++) {
    long tid = g_array_index(tids, long, i);
    g_assert_cmpint(sched_getscheduler((pid_t)tid), ==, SCHED_OTHER);
    g_assert_cmpint(getpriority(PRIO_PROCESS, (id_t)tid), ==, nice_before);
  }
  g_mutex_unlock(&m);
  g_thread_join(t1);
  g_thread_join(t2);
  g_mutex_clear(&m);

  /* A process that is gone is an error, not a crash. */
  g_assert_false(nf_boot_sched_set_cpu(G_MAXINT32 - 1, 0, &error));
  g_assert_nonnull(error);
}

typedef struct {
  guint pinned_checks;  /* booting guests seen pinned */
  guint lowered_checks; /* guests seen SCHED_IDLE at ready while others waited */
} StormCheck;

/* At every state change (after the fleet applied its levers): a booting
 * guest runs on one core that no other booting guest has; a ready one may
 * run anywhere, and is SCHED_IDLE while others still boot or wait. */
static void storm_changed_cb(NfFleet *fleet, NfVm *vm, NfVmState old_state, const char *reason,
                             gpointer data)
{
  StormCheck *sc = data;
  GPid pid = nf_vm_pid(vm);
  NfVmState s = nf_vm_state(vm);
  if (pid <= 0)
    return;
  g_autofree char *mine = cpus_of(pid, pid);
  g_autofree char *all = all_cpus();
  g_assert_nonnull(mine);
  if (s == NF_VM_STARTING || s == NF_VM_BOOTING) {
    g_assert_null(strpbrk(mine, "-,"));
    for (guint i = 0; i < nf_fleet_size(fleet); i++) {
      NfVm *other = nf_fleet_vm(fleet, i);
      NfVmState os = nf_vm_state(other);
      if (other == vm || nf_vm_pid(other) <= 0 || (os != NF_VM_STARTING && os != NF_VM_BOOTING))
        continue;
      g_autofree char *theirs = cpus_of(nf_vm_pid(other), nf_vm_pid(other));
      g_assert_cmpstr(theirs, !=, mine);
    }
    sc->pinned_checks++;
  } else if (s == NF_VM_READY) {
    g_assert_cmpstr(mine, ==, all);
    NfFleetCounts c;
    nf_fleet_counts(fleet, &c);
    if (c.queued + c.booting > 0) {
      g_assert_cmpint(sched_getscheduler(pid), ==, SCHED_IDLE);
      sc->lowered_checks++;
    } else {
      g_assert_cmpint(sched_getscheduler(pid), ==, SCHED_OTHER);
    }
  }
}

/* 6 fake guests through a window of 2 under TCG, both levers on (affinity
 * by its default, auto: pinned under TCG). */
static void test_fleet_storm(void)
{
  if (sysconf(_SC_NPROCESSORS_ONLN) < 2 || !nf_boot_sched_can_raise()) {
    g_test_skip("needs 2 CPUs and the right to raise priority");
    return;
  }
  NfFakeFleet *f = nf_fake_fleet_new(6, 2);
  g_assert_cmpint(f->config.ready_sched, ==, NF_READY_SCHED_IDLE); /* the default */
  g_assert_cmpint(f->config.boot_affinity, ==, NF_BOOT_AFFINITY_AUTO);
  g_setenv("FAKE_QEMU_BOOT_MS", "200", TRUE); /* both slots stay busy a while */
  nf_fake_fleet_start(f);
  StormCheck sc = {0};
  static const NfFleetCallbacks cb = {.vm_changed = storm_changed_cb};
  nf_fleet_add_listener(f->fleet, &cb, &sc);
  g_assert_true(nf_fake_fleet_wait_all(f, NF_VM_READY, WAIT_MS));
  g_assert_cmpuint(f->max_booting, ==, 2);
  g_assert_cmpuint(sc.pinned_checks, >=, 6);
  g_assert_cmpuint(sc.lowered_checks, >=, 4);
  /* The storm is over: every guest, every thread, back to normal. */
  for (guint i = 0; i < nf_fleet_size(f->fleet); i++) {
    GPid pid = nf_vm_pid(nf_fleet_vm(f->fleet, i));
    g_autoptr(GArray) tids = threads_of(pid);
    for (guint t = 0; t < tids->len; t++)
      g_assert_cmpint(sched_getscheduler((pid_t)g_array_index(tids, long, t)), ==, SCHED_OTHER);
  }
  nf_fake_fleet_finish(f, FALSE);
}

typedef struct {
  NfFakeFleet *f;
  int policy; /* wanted for guest `id`'s qemu (1 when 0) */
  guint id;
} PolicyWait;

static PolicyWait *policy_wait;

static int policy_of(NfFakeFleet *f, guint id)
{
  GPid pid = nf_vm_pid(nf_fleet_find_vm(f->fleet, id));
  return pid > 0 ? sched_getscheduler(pid) : -1;
}

static gboolean guest_has_policy(NfFakeFleet *f)
{
  return policy_of(f, policy_wait->id ? policy_wait->id : 1) == policy_wait->policy;
}

/* Starts `f` with the guests named in `stuck` never ready (the storm lasts)
 * and waits until guest 1 is ready and lowered (SCHED_IDLE). */
static void start_with_guest1_lowered(NfFakeFleet *f, const char *stuck)
{
  g_setenv("FAKE_QEMU_FAULT_GUESTS", stuck, TRUE);
  g_setenv("FAKE_QEMU_NO_READY", "1", TRUE);
  nf_fake_fleet_start(f);
  g_assert_true(nf_fake_fleet_wait_vm(f, 1, NF_VM_READY, WAIT_MS));
  PolicyWait pw = {f, SCHED_IDLE, 1};
  policy_wait = &pw;
  g_assert_true(nf_fake_fleet_wait(f, guest_has_policy, WAIT_MS));
  policy_wait = NULL;
}

typedef struct {
  gint64 interval; /* -1: no reply yet */
} IntervalQuery;

static void interval_cb(NfQmp *qmp, const NfQmpReply *reply, gpointer data)
{
  g_assert_no_error(reply->error);
  ((IntervalQuery *)data)->interval = json_integer_value(reply->ret);
}

static gboolean interval_known(gpointer data)
{
  return ((IntervalQuery *)data)->interval >= 0;
}

/* The stats interval guest 1's qemu was told, in seconds. */
static gint64 stats_interval_of(NfFakeFleet *f)
{
  IntervalQuery q = {-1};
  nf_qmp_qom_get(nf_vm_qmp(nf_fleet_find_vm(f->fleet, 1)), NF_QMP_BALLOON_PATH,
                 "guest-stats-polling-interval", 10000, interval_cb, &q);
  g_assert_true(nf_test_wait_for(interval_known, &q, 10000));
  return q.interval;
}

/* How long all threads of `pid` have waited to run, in ms (the second
 * field of /proc/PID/task/TID/schedstat, summed). */
static guint64 waited_ms_of(GPid pid)
{
  g_autoptr(GArray) tids = threads_of(pid);
  guint64 ns = 0;
  for (guint i = 0; i < tids->len; i++) {
    g_autofree char *path =
        g_strdup_printf("/proc/%d/task/%ld/schedstat", (int)pid, g_array_index(tids, long, i));
    g_autofree char *text = NULL;
    unsigned long long ran, waited;
    if (g_file_get_contents(path, &text, NULL, NULL) &&
        sscanf(text, "%llu %llu", &ran, &waited) == 2)
      ns += waited;
  }
  return ns / 1000000;
}

/* Guest 2 (idle) is still lowered, or, if relief put it back, it did wait
 * to run for most of a relief window since `waited_ms` (the tests run in
 * parallel on a host with few cores, where a SCHED_IDLE guest next to a
 * hog can really starve: then relief is right to raise it). A relief that
 * put back a guest that waited for nothing fails here: an idle fake waits
 * a few ms a window. */
static void assert_guest2_lowered_unless_starved(NfFakeFleet *f, GPid pid2, guint64 waited_ms)
{
  if (policy_of(f, 2) == SCHED_IDLE)
    return;
  /* Not relief's doing if guest 2 has another qemu or the storm ended
   * (guests 3-4 no longer booting): say which. */
  for (guint id = 2; id <= 4; id++)
    g_test_message("guest %u: %s", id,
                   nf_vm_state_name(nf_vm_state(nf_fleet_find_vm(f->fleet, id))));
  g_assert_cmpint(nf_vm_pid(nf_fleet_find_vm(f->fleet, 2)), ==, pid2);
  guint64 now = waited_ms_of(pid2);
  g_test_message("guest 2 raised after waiting %" G_GUINT64_FORMAT " ms to run", now - waited_ms);
  g_assert_cmpuint(now - waited_ms, >=, 1000);
}

/* A child spinning on `cpu` at the supervisor's class, as a booting guest
 * does on its core. */
static pid_t hog_start(int cpu)
{
  pid_t pid = fork();
  g_assert_cmpint(pid, >=, 0);
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* gone with a test that failed */
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    sched_setaffinity(0, sizeof set, &set);
    for (;;) {
    }
  }
  return pid;
}

/* Guest 1 lowered and busy on one core next to a hog at the supervisor's
 * class (fake qemu's SIGUSR2) waits to run nearly all the time, as a
 * starved guest does: it is put back to normal before its health deadlines
 * while the storm goes on, and lowered again once it no longer waits (busy
 * off). Guest 2, lowered and idle, waits for nothing and stays lowered all
 * along (relief that put back every lowered guest after a while would fail
 * here), unless the host's other work really starved it, and a lowered guest keeps the normal stats
 * interval (3 s for a 12 s heartbeat; relief does not need them faster). Guests 3-4 never become
 * ready, so the storm lasts. */
static void test_relief(void)
{
  if (!nf_boot_sched_can_raise()) {
    g_test_skip("needs the right to raise priority");
    return;
  }
  NfFakeFleet *f = nf_fake_fleet_new(4, 2);
  f->config.health_interval_ms = 1000;
  f->config.health_timeout_ms = 6000; /* relief after 2 s of waiting */
  f->config.heartbeat_timeout_ms = 12000;
  start_with_guest1_lowered(f, "vm-0003,vm-0004");
  PolicyWait pw = {f, SCHED_IDLE, 2};
  policy_wait = &pw;
  g_assert_true(nf_fake_fleet_wait(f, guest_has_policy, WAIT_MS));
  GPid pid2 = nf_vm_pid(nf_fleet_find_vm(f->fleet, 2));
  guint64 waited2 = waited_ms_of(pid2);
  g_assert_cmpint(stats_interval_of(f), ==, nf_health_stats_poll_ms(12000) / 1000);

  cpu_set_t mine;
  g_assert_cmpint(sched_getaffinity(0, sizeof mine, &mine), ==, 0);
  int cpu = 0;
  while (!CPU_ISSET(cpu, &mine))
    cpu++;
  GPid pid = nf_vm_pid(nf_fleet_find_vm(f->fleet, 1));
  g_assert_true(nf_boot_sched_set_cpu(pid, cpu, NULL));
  pid_t hog = hog_start(cpu);
  g_assert_cmpint(kill(pid, SIGUSR2), ==, 0); /* busy */
  pw = (PolicyWait){f, SCHED_OTHER, 1};
  g_assert_true(nf_fake_fleet_wait(f, guest_has_policy, 20000));
  assert_guest2_lowered_unless_starved(f, pid2, waited2);
  waited2 = waited_ms_of(pid2);               /* the second look judges what came after */
  g_assert_cmpint(kill(pid, SIGUSR2), ==, 0); /* idle again */
  pw.policy = SCHED_IDLE;
  g_assert_true(nf_fake_fleet_wait(f, guest_has_policy, 20000));
  g_assert_cmpint(kill(hog, SIGKILL), ==, 0);
  g_assert_cmpint(waitpid(hog, NULL, 0), ==, hog);
  assert_guest2_lowered_unless_starved(f, pid2, waited2);
  g_assert_cmpint(nf_vm_state(nf_fleet_find_vm(f->fleet, 1)), ==, NF_VM_READY);
  g_assert_cmpint(nf_vm_state(nf_fleet_find_vm(f->fleet, 2)), ==, NF_VM_READY);
  policy_wait = NULL;
  nf_fake_fleet_finish(f, TRUE);
}

/* The flags: a bad class is exit 2 naming the choices; --print-config
 * shows what was asked. */
static void test_flags(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  g_autofree char *out = NULL;
  const char *bad[] = {"run", "2", "--ready-sched", "lazy", NULL};
  g_assert_cmpint(nf_test_run_cli(tmp, bad, 30000, &out), ==, 2);
  g_assert_nonnull(strstr(out, "--ready-sched"));
  g_assert_nonnull(strstr(out, "idle"));
  g_clear_pointer(&out, g_free);
  const char *bad2[] = {"run", "2", "--boot-affinity", "numa", NULL};
  g_assert_cmpint(nf_test_run_cli(tmp, bad2, 30000, &out), ==, 2);
  g_assert_nonnull(strstr(out, "--boot-affinity"));
  g_clear_pointer(&out, g_free);
  const char *good[] = {
      "run", "2", "--ready-sched", "batch", "--boot-affinity", "none", "--print-config", NULL};
  g_assert_cmpint(nf_test_run_cli(tmp, good, 30000, &out), ==, 0);
  g_assert_nonnull(strstr(out, "\"ready_sched\":\"batch\""));
  g_assert_nonnull(strstr(out, "\"boot_affinity\":\"none\""));
  nf_test_tmpdir_cleanup(tmp);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/boot-sched/every-thread", test_every_thread);
  g_test_add_func("/boot-sched/fleet-storm", test_fleet_storm);
  g_test_add_func("/boot-sched/relief", test_relief);
  g_test_add_func("/boot-sched/flags", test_flags);
  return g_test_run();
}
