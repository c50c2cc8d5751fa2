/*
 * test-mempolicy.c: the memory policy against one real guest under TCG, at
 * library level (a fleet built in this process, so the policy's tick and the
 * health probe can be short and the balloon read directly). Guards: an idle
 * guest's balloon shrinks (BALLOON_CHANGE brings `actual` down) and, when
 * the guest allocates 60 MiB at once from its console, it survives (the
 * balloon's deflate-on-oom) and gets memory back (actual grows again);
 * `--balloon-policy off` leaves the balloon alone (and the guest's init set
 * free page reporting's order to 0); a host short of memory (a fake meminfo)
 * holds the fleet's first boot until it recovers; a bad --balloon-policy is
 * refused with exit 2.
 */
#include <string.h>
#include <glib/gstdio.h>

#include "supervisor/fleet.h"
#include "supervisor/mempolicy.h"
#include "tests/lib/nf-test.h"

#define BOOT_MS 180000
#define POLICY_MS 180000

typedef struct {
  NfFleet *fleet;
  gboolean stopped;
  guint64 below, above; /* what the wait functions compare against */
  guint64 lowest;
  const char *needle;
  GString *notices;
} Ctx;

static void stopped_cb(NfFleet *fleet, gpointer data)
{
  ((Ctx *)data)->stopped = TRUE;
}

static void notice_cb(NfFleet *fleet, const char *message, gpointer data)
{
  g_string_append_printf(((Ctx *)data)->notices, "%s\n", message);
}

static gboolean ready(gpointer data)
{
  NfFleetCounts c;
  nf_fleet_counts(((Ctx *)data)->fleet, &c);
  return c.ready == 1;
}

static gboolean stopped(gpointer data)
{
  return ((Ctx *)data)->stopped;
}

static gboolean shrunk(gpointer data)
{
  Ctx *c = data;
  return nf_vm_balloon_actual(nf_fleet_vm(c->fleet, 0)) < c->below;
}

/* Grown by `above` bytes over the lowest balloon seen since the allocation
 * began (the policy may still be finishing a shrink when it starts). */
static gboolean grown(gpointer data)
{
  Ctx *c = data;
  guint64 actual = nf_vm_balloon_actual(nf_fleet_vm(c->fleet, 0));
  c->lowest = MIN(c->lowest, actual);
  return actual > c->lowest + c->above;
}

/* The burst's marker is on the console, or the guest went down trying. */
static gboolean burst_over(gpointer data)
{
  Ctx *c = data;
  NfVm *vm = nf_fleet_vm(c->fleet, 0);
  g_autofree char *log = NULL;
  if (nf_vm_restarts(vm) > 0 || nf_vm_state(vm) != NF_VM_READY)
    return TRUE;
  return g_file_get_contents(c->needle, &log, NULL, NULL) && strstr(log, "nf-burst-42");
}

static gboolean stats_seen(gpointer data)
{
  NfVmGuestMem m;
  nf_vm_guest_mem(nf_fleet_vm(((Ctx *)data)->fleet, 0), &m);
  return m.seq >= 3;
}

static gboolean has_notice(gpointer data)
{
  Ctx *c = data;
  return strstr(c->notices->str, c->needle) != NULL;
}

/* Builds and starts the fleet; waits for its guest to be ready unless
 * `proc_dir` (a fake host for the policy) is given. */
static NfFleet *start_fleet(const char *tmp, NfFleetConfig *cfg, Ctx *c, NfBalloonPolicy policy,
                            const char *proc_dir)
{
  nf_fleet_config_init(cfg);
  g_free(cfg->name);
  cfg->name = g_strdup("mem");
  cfg->count = 1;
  cfg->kernel = nf_test_guest_kernel();
  cfg->initrd = nf_test_guest_initrd();
  cfg->runtime_dir = g_build_filename(tmp, "run", NULL);
  cfg->state_dir = g_build_filename(tmp, "state", NULL);
  cfg->stop_timeout_ms = 5000;
  cfg->health_interval_ms = 500;
  cfg->balloon_policy = policy;
  cfg->mem_tick_ms = 500;
  cfg->mem_proc_dir = g_strdup(proc_dir);
  c->notices = g_string_new(NULL);
  static const NfFleetCallbacks cb = {.stopped = stopped_cb, .notice = notice_cb};
  g_autoptr(GError) error = NULL;
  c->fleet = nf_fleet_new(cfg, &cb, c, &error);
  g_assert_no_error(error);
  nf_fleet_start(c->fleet);
  if (proc_dir == NULL)
    g_assert_true(nf_test_wait_for(ready, c, BOOT_MS));
  return c->fleet;
}

static void stop_fleet(Ctx *c, NfFleetConfig *cfg, char *tmp)
{
  nf_fleet_stop(c->fleet, FALSE);
  g_assert_true(nf_test_wait_for(stopped, c, 60000));
  nf_fleet_free(c->fleet);
  nf_fleet_config_clear(cfg);
  g_string_free(c->notices, TRUE);
  nf_test_tmpdir_cleanup(tmp);
}

static void test_shrinks_idle_then_gives_back(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  NfFleetConfig cfg;
  Ctx c = {0};
  start_fleet(tmp, &cfg, &c, NF_BALLOON_POLICY_AUTO, NULL);
  NfVm *vm = nf_fleet_vm(c.fleet, 0);
  guint64 full = cfg.memory_mib * NF_MIB;
  g_assert_cmpuint(nf_vm_balloon_actual(vm), ==, full);

  /* Idle: the balloon comes down toward the headroom (76 MiB left of 128
   * when measured); at least 44 MiB of it. */
  c.below = full - 44 * NF_MIB;
  g_assert_true(nf_test_wait_for(shrunk, &c, POLICY_MS));
  NfVmGuestMem m;
  nf_vm_guest_mem(vm, &m);
  g_test_message("idle guest shrunk from %" G_GUINT64_FORMAT " to %" G_GUINT64_FORMAT
                 " MiB (guest reports %" G_GUINT64_FORMAT " MiB available)",
                 full / NF_MIB, nf_vm_balloon_actual(vm) / NF_MIB, m.available / NF_MIB);
  g_assert_cmpuint(m.available, >, 0);
  g_assert_cmpuint(m.total, >, 0);

  /* The guest writes 60 MiB to its RAM-backed root at once, far faster
   * than the policy's tick: it survives only by taking pages back from the
   * balloon itself (deflate-on-oom) until the policy catches up. Without
   * deflate-on-oom a guest shrunk this far panicked ("System is deadlocked
   * on memory"). The marker's output differs from the echoed command. */
  c.lowest = nf_vm_balloon_actual(vm);
  const char *burst = "dd if=/dev/zero of=/nf-burst bs=1M count=60 2>/dev/null; sync; "
                      "echo nf-burst-$((6*7))\n";
  g_assert_cmpint(nf_vm_console_write(vm, burst, strlen(burst)), ==, (gssize)strlen(burst));
  g_autofree char *console = g_build_filename(cfg.state_dir, "vm-0001", "console.log", NULL);
  c.needle = console;
  g_assert_true(nf_test_wait_for(burst_over, &c, POLICY_MS));
  g_assert_cmpuint(nf_vm_restarts(vm), ==, 0);
  g_assert_cmpint(nf_vm_state(vm), ==, NF_VM_READY);
  c.above = 24 * NF_MIB;
  g_assert_true(nf_test_wait_for(grown, &c, POLICY_MS));
  g_test_message("after a one-shot 60 MiB allocation the balloon grew from %" G_GUINT64_FORMAT
                 " back to %" G_GUINT64_FORMAT " MiB",
                 c.lowest / NF_MIB, nf_vm_balloon_actual(vm) / NF_MIB);
  /* The guest survived it: still ready, never restarted. */
  g_assert_cmpint(nf_vm_state(vm), ==, NF_VM_READY);
  g_assert_cmpuint(nf_vm_restarts(vm), ==, 0);
  stop_fleet(&c, &cfg, tmp);
}

static void test_off_leaves_balloon(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  NfFleetConfig cfg;
  Ctx c = {0};
  start_fleet(tmp, &cfg, &c, NF_BALLOON_POLICY_OFF, NULL);
  NfVm *vm = nf_fleet_vm(c.fleet, 0);
  /* Stats arrive (the heartbeat), yet nothing moves the balloon. */
  g_assert_true(nf_test_wait_for(stats_seen, &c, POLICY_MS));
  g_assert_cmpuint(nf_vm_balloon_actual(vm), ==, cfg.memory_mib * NF_MIB);
  /* The guest's init lowered free page reporting's order after the balloon
   * driver registered (which resets it to 9): small free blocks go back. */
  const char *ask = "echo pro=$(cat /sys/module/page_reporting/parameters/page_reporting_order)\n";
  g_assert_cmpint(nf_vm_console_write(vm, ask, strlen(ask)), ==, (gssize)strlen(ask));
  g_autofree char *console = g_build_filename(cfg.state_dir, "vm-0001", "console.log", NULL);
  g_assert_true(nf_test_wait_file_contains(console, "\npro=0", POLICY_MS));
  stop_fleet(&c, &cfg, tmp);
}

static void write_meminfo(const char *dir, guint64 total_mib, guint64 avail_mib)
{
  g_autofree char *path = g_build_filename(dir, "meminfo", NULL);
  g_autofree char *text = g_strdup_printf("MemTotal: %" G_GUINT64_FORMAT
                                          " kB\nMemAvailable: %" G_GUINT64_FORMAT " kB\n",
                                          total_mib * 1024, avail_mib * 1024);
  g_assert_true(g_file_set_contents(path, text, -1, NULL));
}

/* The fleet's wiring of the back-pressure: a (fake) host short of memory
 * holds the first boot back; once it recovers the guest boots. */
static void test_backpressure_holds_boot(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  g_autofree char *host = g_build_filename(tmp, "host", NULL);
  g_assert_cmpint(g_mkdir(host, 0700), ==, 0);
  write_meminfo(host, 10000, 400);
  NfFleetConfig cfg;
  Ctx c = {0};
  start_fleet(tmp, &cfg, &c, NF_BALLOON_POLICY_GUARD, host);
  c.needle = "admission paused: host MemAvailable 400 MiB (4% of 10000 MiB)";
  g_assert_true(nf_test_wait_for(has_notice, &c, 30000));
  NfFleetCounts n;
  nf_fleet_counts(c.fleet, &n);
  g_assert_cmpuint(n.started, ==, 0);
  g_assert_cmpuint(n.queued, ==, 1);

  write_meminfo(host, 10000, 6000);
  c.needle = "admission resumed: host MemAvailable 6000 MiB";
  g_assert_true(nf_test_wait_for(has_notice, &c, 30000));
  g_assert_true(nf_test_wait_for(ready, &c, BOOT_MS));
  stop_fleet(&c, &cfg, tmp);
}

/* A mode the flag does not know: exit 2, naming the flag and the choices. */
static void test_bad_flag(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  const char *args[] = {"run", "1", "--balloon-policy", "maybe", NULL};
  g_autofree char *out = NULL;
  g_assert_cmpint(nf_test_run_cli(tmp, args, 30000, &out), ==, 2);
  g_assert_nonnull(strstr(out, "--balloon-policy 'maybe': use guard, auto or off"));
  nf_test_tmpdir_cleanup(tmp);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/mempolicy/shrinks-idle-then-gives-back", test_shrinks_idle_then_gives_back);
  g_test_add_func("/mempolicy/off-leaves-balloon", test_off_leaves_balloon);
  g_test_add_func("/mempolicy/backpressure-holds-boot", test_backpressure_holds_boot);
  g_test_add_func("/mempolicy/bad-flag", test_bad_flag);
  return g_test_run();
}
