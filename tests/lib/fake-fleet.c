/*
 * fake-fleet.c: an in-process fleet on the fake qemu, with its state changes
 * recorded for assertions (see fake-fleet.h).
 */
#include "tests/lib/fake-fleet.h"

#include <string.h>

#include "tests/lib/nf-test.h"

static void vm_changed_cb(NfFleet *fleet, NfVm *vm, NfVmState old_state, const char *reason,
                          gpointer data);
static void start_failed_cb(NfFleet *fleet, const GError *error, gpointer data);
static void stopped_cb(NfFleet *fleet, gpointer data);
static void notice_cb(NfFleet *fleet, const char *message, gpointer data);
static gboolean done_cb(gpointer data);

NfFakeFleet *nf_fake_fleet_new(guint count, guint batch)
{
  static const char *const knobs[] = {"FAKE_QEMU_BOOT_MS",
                                      "FAKE_QEMU_FAIL_START",
                                      "FAKE_QEMU_EXIT_MS",
                                      "FAKE_QEMU_EXIT_CODE",
                                      "FAKE_QEMU_NO_READY",
                                      "FAKE_QEMU_HANG_MS",
                                      "FAKE_QEMU_FAULT_GUESTS",
                                      "FAKE_QEMU_REBOOT_MS",
                                      "FAKE_QEMU_QMP_LOG",
                                      "FAKE_QEMU_READY_KB",
                                      NULL};
  for (const char *const *k = knobs; *k; k++)
    g_unsetenv(*k);

  NfFakeFleet *f = g_new0(NfFakeFleet, 1);
  f->tmp = nf_test_tmpdir_new();
  f->notices = g_ptr_array_new_with_free_func(g_free);
  f->reasons = g_ptr_array_new_with_free_func(g_free);
  f->keep_reasons = count <= 200;

  const char *helpers = g_getenv("NF_HELPERS");
  g_assert_nonnull(helpers);
  NfFleetConfig *c = &f->config;
  nf_fleet_config_init(c);
  g_free(c->name);
  c->name = g_path_get_basename(f->tmp);
  g_free(c->qemu);
  c->qemu = g_build_filename(helpers, "fake-qemu", NULL);
  g_assert_true(g_file_test(c->qemu, G_FILE_TEST_IS_EXECUTABLE));
  /* The fake boots nothing, but the fleet checks that a kernel is there. */
  c->kernel = g_build_filename(f->tmp, "Image", NULL);
  g_assert_true(g_file_set_contents(c->kernel, "not a kernel", -1, NULL));
  c->state_dir = g_build_filename(f->tmp, "state", NULL);
  c->runtime_dir = g_build_filename(f->tmp, "run", NULL);
  c->count = count;
  c->batch = batch;
  c->accel = NF_ACCEL_TCG;
  c->adopt = FALSE;
  c->health_interval_ms = 0;
  c->heartbeat_timeout_ms = 0;
  c->boot_timeout_ms = 60000;
  c->stop_timeout_ms = 5000;
  c->restart.backoff_initial_ms = 100;
  /* Fleet logic only: leave the host's page merging and memory pressure out
   * of it (--ksm auto would turn KSM on from 8 fake guests, and the memory
   * guard reads the real host). */
  c->ksm = NF_KSM_OFF;
  c->balloon_policy = NF_BALLOON_POLICY_OFF;
  return f;
}

void nf_fake_fleet_start(NfFakeFleet *f)
{
  static const NfFleetCallbacks cb = {.vm_changed = vm_changed_cb,
                                      .start_failed = start_failed_cb,
                                      .stopped = stopped_cb,
                                      .notice = notice_cb};
  g_autoptr(GError) error = NULL;
  f->fleet = nf_fleet_new(&f->config, &cb, f, &error);
  g_assert_no_error(error);
  nf_fleet_start(f->fleet);
}

static void vm_changed_cb(NfFleet *fleet, NfVm *vm, NfVmState old_state, const char *reason,
                          gpointer data)
{
  NfFakeFleet *f = data;
  NfFleetCounts c;
  nf_fleet_counts(fleet, &c);
  f->max_booting = MAX(f->max_booting, c.booting);
  f->seen[old_state][nf_vm_state(vm)]++;
  if (f->keep_reasons)
    g_ptr_array_add(f->reasons,
                    g_strdup_printf("%s %s -> %s: %s", nf_vm_name(vm), nf_vm_state_name(old_state),
                                    nf_vm_state_name(nf_vm_state(vm)), reason));
}

static void start_failed_cb(NfFleet *fleet, const GError *error, gpointer data)
{
  NfFakeFleet *f = data;
  g_free(f->start_error);
  f->start_error = g_strdup(error->message);
}

static void stopped_cb(NfFleet *fleet, gpointer data)
{
  ((NfFakeFleet *)data)->stopped = TRUE;
}

static void notice_cb(NfFleet *fleet, const char *message, gpointer data)
{
  NfFakeFleet *f = data;
  g_test_message("fleet notice: %s", message);
  g_ptr_array_add(f->notices, g_strdup(message));
}

typedef struct {
  NfFakeFleet *f;
  gboolean (*pred)(NfFakeFleet *f, gconstpointer arg, guint n);
  gconstpointer arg;
  guint n;
  gboolean (*user)(NfFakeFleet *f);
} Wait;

static gboolean done_cb(gpointer data)
{
  Wait *w = data;
  return w->pred(w->f, w->arg, w->n);
}

static gboolean all_in(NfFakeFleet *f, gconstpointer arg, guint state)
{
  return nf_fake_fleet_count(f, (NfVmState)state) == nf_fleet_size(f->fleet);
}

gboolean nf_fake_fleet_wait_all(NfFakeFleet *f, NfVmState state, guint timeout_ms)
{
  Wait w = {f, all_in, NULL, state, NULL};
  return nf_test_wait_for(done_cb, &w, timeout_ms);
}

static gboolean has_notice(NfFakeFleet *f, gconstpointer needle, guint unused)
{
  for (guint i = 0; i < f->notices->len; i++)
    if (strstr(g_ptr_array_index(f->notices, i), needle))
      return TRUE;
  return FALSE;
}

gboolean nf_fake_fleet_wait_notice(NfFakeFleet *f, const char *needle, guint timeout_ms)
{
  Wait w = {f, has_notice, needle, 0, NULL};
  return nf_test_wait_for(done_cb, &w, timeout_ms);
}

static gboolean vm_in(NfFakeFleet *f, gconstpointer id, guint state)
{
  NfVm *vm = nf_fleet_find_vm(f->fleet, GPOINTER_TO_UINT(id));
  return vm && nf_vm_state(vm) == (NfVmState)state;
}

gboolean nf_fake_fleet_wait_vm(NfFakeFleet *f, guint id, NfVmState state, guint timeout_ms)
{
  Wait w = {f, vm_in, GUINT_TO_POINTER(id), state, NULL};
  return nf_test_wait_for(done_cb, &w, timeout_ms);
}

static gboolean custom(NfFakeFleet *f, gconstpointer arg, guint unused)
{
  return ((const Wait *)arg)->user(f);
}

gboolean nf_fake_fleet_wait(NfFakeFleet *f, gboolean (*done)(NfFakeFleet *f), guint timeout_ms)
{
  Wait w = {f, custom, NULL, 0, done};
  w.arg = &w;
  return nf_test_wait_for(done_cb, &w, timeout_ms);
}

guint nf_fake_fleet_count(NfFakeFleet *f, NfVmState state)
{
  guint n = 0;
  for (guint i = 0; i < nf_fleet_size(f->fleet); i++)
    if (nf_vm_state(nf_fleet_vm(f->fleet, i)) == state)
      n++;
  return n;
}

guint nf_fake_fleet_seen(NfFakeFleet *f, NfVmState from, NfVmState to)
{
  return f->seen[from][to];
}

static gboolean is_stopped(NfFakeFleet *f)
{
  return f->stopped;
}

void nf_fake_fleet_finish(NfFakeFleet *f, gboolean force)
{
  if (f->fleet) {
    nf_fleet_stop(f->fleet, force);
    gboolean ok = nf_fake_fleet_wait(f, is_stopped, 60000);
    if (!ok)
      nf_fleet_stop(f->fleet, TRUE);
    g_assert_true(ok);
    nf_fleet_free(f->fleet);
  }
  nf_test_tmpdir_cleanup(f->tmp);
  nf_fleet_config_clear(&f->config);
  g_ptr_array_unref(f->notices);
  g_ptr_array_unref(f->reasons);
  g_free(f->start_error);
  g_free(f->tmp);
  g_free(f);
}
