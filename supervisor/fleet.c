/*
 * fleet.c: the fleet's core: nf_fleet_new's order of steps, guests queued
 * through the boot window (limiter.c), their state changes counted and told
 * to listeners, the fleet-wide failure-storm guard, notices, the orderly stop
 * and the accessors (see fleet.h). The steps with their own concern live
 * beside it: input checks, dirs, lock and open file limit in fleet-setup.c;
 * KSM, networking and the ready listener on the host in fleet-host.c;
 * scaling and retiring in fleet-scale.c (all share fleet-private.h).
 */
#include "supervisor/fleet-private.h"

#include <malloc.h>
#include <string.h>
#include <unistd.h>
#include <glib/gstdio.h>

#include "supervisor/accel.h"
#include "supervisor/cgroup.h"
#include "supervisor/disks.h"
#include "supervisor/health.h"
#include "supervisor/net.h"
#include "supervisor/tap.h"
#include "supervisor/snapshot.h"

typedef struct {
  guint id;
  NfFleetCallbacks cb;
  gpointer user_data;
} Listener;

static void vm_changed_cb(NfVm *vm, NfVmState old_state, NfVmState new_state, const char *reason,
                          gpointer data);
static guint booting_cb(gpointer data);
static void start_cb(NfVm *vm, gpointer data);
static void maybe_stopped(NfFleet *fleet);
static gboolean stopped_idle_cb(gpointer data);
static gboolean is_booting(NfVmState s);
static gboolean trim_cb(gpointer data);
static gboolean resume_cb(gpointer data);
static void notice(NfFleet *fleet, const char *message);
static void mempolicy_notice_cb(const char *message, gpointer data);
static void note_failure(NfFleet *fleet, NfVm *vm);
static void emit_vm_changed(NfFleet *fleet, NfVm *vm, NfVmState old_state, const char *reason);
static void adopt_strays(NfFleet *fleet);
static void strays_notice_cb(const char *message, gpointer data);
static void strays_down_cb(gpointer data);
static void vm_notice_cb(NfVm *vm, const char *message, gpointer data);
static void snapshot_notice_cb(const char *message, gpointer data);
static void snapshot_done_cb(NfSnapshot *snap, gpointer data);

const NfVmCallbacks nf_fleet_vm_callbacks = {.state_changed = vm_changed_cb,
                                             .notice = vm_notice_cb};

NfFleet *nf_fleet_new(const NfFleetConfig *config, const NfFleetCallbacks *callbacks,
                      gpointer user_data, GError **error)
{
  g_autoptr(NfFleet) fleet = g_new0(NfFleet, 1);
  fleet->config = config;
  fleet->cb = *callbacks;
  fleet->user_data = user_data;
  fleet->lock_fd = -1;
  fleet->state_lock_fd = -1;
  fleet->vms = g_ptr_array_new_with_free_func((GDestroyNotify)nf_vm_free);
  fleet->listeners = g_array_new(FALSE, FALSE, sizeof(Listener));
  fleet->retiring = g_hash_table_new(NULL, NULL);

  if (!nf_fleet_check_input(fleet, error))
    return NULL;

  NfHostInfo host;
  nf_accel_detect_host(&host);
  if (!nf_accel_resolve(config->accel, &host, &fleet->env.accel, error))
    return NULL;
  static const NfLimiterOps limiter_ops = {.booting = booting_cb, .start = start_cb};
  /* Restores are cheap: a snapshot fleet's default window is wider. */
  guint batch = nf_accel_default_batch(fleet->env.accel, &host) *
                (config->snapshot ? NF_SNAPSHOT_BATCH_FACTOR : 1);
  fleet->limiter = nf_limiter_new(config->batch ? config->batch : batch, config->batch == 0,
                                  host.cores, &limiter_ops, fleet);
  /* Pinning pays where a boot is one busy thread (TCG); a KVM guest's boot
   * waits on I/O as much as it computes, and was not measured. */
  NfBootAffinity affinity = config->boot_affinity;
  if (affinity == NF_BOOT_AFFINITY_AUTO)
    affinity = fleet->env.accel == NF_ACCEL_TCG ? NF_BOOT_AFFINITY_CORE : NF_BOOT_AFFINITY_NONE;
  fleet->boot_sched =
      nf_boot_sched_new(config->ready_sched, affinity,
                        nf_health_relief_ms(config->heartbeat_timeout_ms,
                                            config->health_interval_ms, config->health_timeout_ms));
  if (config->balloon_policy != NF_BALLOON_POLICY_OFF) {
    NfMemPolicyParams mp;
    nf_mempolicy_params_from_config(&mp, config);
    fleet->mempolicy =
        nf_mempolicy_new(&mp, fleet->vms, fleet->limiter, mempolicy_notice_cb, fleet);
  }

  if (!nf_fleet_claim_dirs(fleet, error))
    return NULL;
  fleet->env.cgroup_name = nf_paths_cgroup_name(&fleet->paths, config->name);
  if (!nf_fleet_ensure_fd_limit(fleet, config->count, error))
    return NULL;
  if (config->health_interval_ms)
    fleet->env.health = nf_health_wheel_new(config->health_interval_ms);
  if (!nf_fleet_host_setup(fleet, error))
    return NULL;
  fleet->env.use_cgroups = TRUE;
  if (config->disk) {
    if (!nf_fleet_check_reflash(fleet, error))
      return NULL;
    fleet->env.disks = nf_disks_new(config, &fleet->paths, error);
    if (fleet->env.disks == NULL ||
        !nf_disks_prepare(fleet->env.disks, config->id_offset + 1, config->count, error))
      return NULL;
  }

  fleet->env.config = config;
  fleet->env.paths = &fleet->paths;
  if (config->snapshot &&
      (!nf_snapshot_check_config(config, error) ||
       (fleet->env.snapshot = nf_snapshot_new(&fleet->env, snapshot_notice_cb, snapshot_done_cb,
                                              fleet, error)) == NULL))
    return NULL;
  for (guint i = 0; i < config->count; i++) {
    NfVm *vm = nf_vm_new(config->id_offset + i + 1, &fleet->env, &nf_fleet_vm_callbacks, fleet);
    g_ptr_array_add(fleet->vms, vm);
    fleet->per_state[NF_VM_CREATED]++;
  }
  fleet->built = TRUE;
  return g_steal_pointer(&fleet);
}

/* The boots are over: what each boot needed until ready (its console's
 * ring and line buffers, QMP's first replies) is freed, but glibc keeps
 * the freed pages, scattered among what stays. Giving them back once per
 * storm: 1.7 of 16.8 MiB after 1,000 fake guests booted at once. */
static gboolean trim_cb(gpointer data)
{
  NfFleet *fleet = data;
  fleet->trim_idle = 0;
  malloc_trim(0);
  return G_SOURCE_REMOVE;
}

static gboolean is_booting(NfVmState s)
{
  return s == NF_VM_STARTING || s == NF_VM_BOOTING;
}

void nf_fleet_start(NfFleet *fleet)
{
  /* A snapshot fleet first finds or makes its snapshot; snapshot_done_cb
   * comes back here. */
  if (fleet->env.snapshot && !fleet->snapshot_prepared) {
    nf_snapshot_prepare(fleet->env.snapshot);
    return;
  }
  /* Guests a dead supervisor of this fleet left running are taken over, not
   * started twice; the rest queue up for the limiter. Only those not yet
   * touched: while a snapshot was made, `start` or `scale` may have started
   * some, which adopting would kill (their status file says they die with
   * this supervisor) or wire up twice. */
  for (guint i = 0; i < fleet->vms->len; i++) {
    NfVm *vm = g_ptr_array_index(fleet->vms, i);
    if (nf_vm_state(vm) != NF_VM_CREATED)
      continue;
    if (!(fleet->config->adopt && nf_vm_adopt(vm)))
      nf_vm_queue(vm);
  }
  if (fleet->config->adopt)
    adopt_strays(fleet);
  nf_fleet_remove_stale_runtime_files(fleet);
  nf_cgroup_sweep(fleet->env.cgroup_name);
  if (fleet->ksm)
    notice(fleet,
           fleet->config->ksm == NF_KSM_AUTO
               ? "host KSM on for this fleet (--ksm auto: 8 guests or more, or --snapshot); its "
                 "settings "
                 "come back when the fleet stops (--ksm off leaves it alone)"
               : "host KSM on for this fleet; its settings come back when the fleet stops");
  nf_limiter_kick(fleet->limiter);
}

/* Guests of this fleet beyond its ids (an earlier run had more) are
 * adopted and stopped (strays.h); then a qemu of the fleet that no pid file
 * names is killed, since nothing can adopt it. */
static void adopt_strays(NfFleet *fleet)
{
  static const NfStrayGuestsCallbacks cb = {
      .notice = strays_notice_cb, .vm_notice = vm_notice_cb, .all_down = strays_down_cb};
  guint first = fleet->config->id_offset + 1;
  fleet->strays =
      nf_stray_guests_adopt(&fleet->env, first, first + fleet->vms->len - 1, &cb, fleet);
  g_autoptr(GArray) pids = g_array_new(FALSE, FALSE, sizeof(GPid));
  for (guint i = 0; i < fleet->vms->len; i++) {
    GPid pid = nf_vm_pid(g_ptr_array_index(fleet->vms, i));
    if (pid)
      g_array_append_val(pids, pid);
  }
  guint killed = nf_stray_guests_kill_unowned(fleet->strays, fleet->paths.runtime_dir, pids);
  if (killed) {
    g_autofree char *msg = g_strdup_printf(
        "killed %u process%s of fleet '%s' that no guest owned (qemu left without a pid file)",
        killed, killed == 1 ? "" : "es", fleet->config->name);
    notice(fleet, msg);
  }
}

static void strays_notice_cb(const char *message, gpointer data)
{
  notice(data, message);
}

static void snapshot_notice_cb(const char *message, gpointer data)
{
  notice(data, message);
}

static void strays_down_cb(gpointer data)
{
  NfFleet *fleet = data;
  if (fleet->stopping)
    maybe_stopped(fleet);
}

/* A guest could not write one of its files (a full or read-only state
 * dir). Said once per fleet: on a full disk every guest fails alike, and
 * `ps` shows each guest's error. */
static void vm_notice_cb(NfVm *vm, const char *message, gpointer data)
{
  NfFleet *fleet = data;
  if (fleet->write_error_told)
    return;
  fleet->write_error_told = TRUE;
  g_autofree char *msg = g_strdup_printf(
      "%s: %s; logs and status files are incomplete until that is fixed (other guests' files "
      "in %s are likely affected too; `nervesfleet ps` shows which)",
      nf_vm_name(vm), message, fleet->paths.state_dir);
  notice(fleet, msg);
}

static void snapshot_done_cb(NfSnapshot *snap, gpointer data)
{
  NfFleet *fleet = data;
  fleet->snapshot_prepared = TRUE;
  if (!fleet->stopping)
    nf_fleet_start(fleet);
}

static guint booting_cb(gpointer data)
{
  NfFleet *fleet = data;
  return fleet->per_state[NF_VM_STARTING] + fleet->per_state[NF_VM_BOOTING];
}

static void start_cb(NfVm *vm, gpointer data)
{
  NfFleet *fleet = data;
  fleet->started++;
  nf_vm_start(vm, NULL); /* a failure arrives as a state change */
}

static gboolean resume_cb(gpointer data)
{
  NfFleet *fleet = data;
  fleet->resume_timer = 0;
  notice(fleet, "restarts resumed");
  nf_limiter_kick(fleet->limiter);
  return G_SOURCE_REMOVE;
}

/* Listeners are called from a copy of the list, since one may add or
 * remove listeners; one removed meanwhile (its owner may be freed) is
 * skipped. The list is in id order (ids only grow, removal keeps the
 * order), so the check is a binary search: a walk stays O(n log n) with
 * hundreds of `logs -f` and `events` clients listening. */
static gint listener_index(NfFleet *fleet, guint id)
{
  guint lo = 0, hi = fleet->listeners->len;
  while (lo < hi) {
    guint mid = lo + (hi - lo) / 2;
    guint at = g_array_index(fleet->listeners, Listener, mid).id;
    if (at == id)
      return (gint)mid;
    if (at < id)
      lo = mid + 1;
    else
      hi = mid;
  }
  return -1;
}

static gboolean listening(NfFleet *fleet, guint id)
{
  return listener_index(fleet, id) >= 0;
}

static void notice(NfFleet *fleet, const char *message)
{
  if (fleet->cb.notice)
    fleet->cb.notice(fleet, message, fleet->user_data);
  g_autoptr(GArray) ls = g_array_copy(fleet->listeners);
  for (guint i = 0; i < ls->len; i++) {
    Listener *li = &g_array_index(ls, Listener, i);
    if (li->cb.notice && listening(fleet, li->id))
      li->cb.notice(fleet, message, li->user_data);
  }
}

static void mempolicy_notice_cb(const char *message, gpointer data)
{
  notice(data, message);
}

/* A fleet-wide failure storm (host trouble: OOM, disk, a bad base image)
 * must not turn into a restart storm: when at least half the fleet (3 guests
 * at least) has failed within the restart window, restarts wait a window
 * before going on. Guests are counted, not failures, so one guest in a crash
 * loop is left to its own intensity limit; each guest counts once per window
 * (its tally remembers when). The count lives in a window counter of fixed
 * size, so this works the same at 10 guests and at 10,000. */
static void note_failure(NfFleet *fleet, NfVm *vm)
{
  const NfRestartPolicy *p = &fleet->config->restart;
  gint64 now = g_get_monotonic_time();
  if (!nf_vm_storm_count_once(vm, p->window_ms, now))
    return; /* already counted within this window */
  nf_window_count_add(&fleet->failing, p->window_ms, now);
  guint recent = nf_window_count_recent(&fleet->failing, p->window_ms, now);
  guint threshold = MAX(3, (fleet->vms->len + 1) / 2);
  if (recent >= threshold && !nf_limiter_restarts_held(fleet->limiter) && fleet->vms->len >= 3) {
    nf_limiter_hold_restarts(fleet->limiter, now + (gint64)p->window_ms * 1000);
    g_autofree char *msg =
        g_strdup_printf("restarts paused for %g s: %u guests failed within %g s (host trouble?)",
                        p->window_ms / 1000.0, recent, p->window_ms / 1000.0);
    notice(fleet, msg);
    g_clear_handle_id(&fleet->resume_timer, g_source_remove);
    fleet->resume_timer = g_timeout_add(p->window_ms, resume_cb, fleet);
  }
}

static void emit_vm_changed(NfFleet *fleet, NfVm *vm, NfVmState old_state, const char *reason)
{
  if (fleet->cb.vm_changed)
    fleet->cb.vm_changed(fleet, vm, old_state, reason, fleet->user_data);
  g_autoptr(GArray) ls = g_array_copy(fleet->listeners);
  for (guint i = 0; i < ls->len; i++) {
    Listener *li = &g_array_index(ls, Listener, i);
    if (li->cb.vm_changed && listening(fleet, li->id))
      li->cb.vm_changed(fleet, vm, old_state, reason, li->user_data);
  }
}

static void vm_changed_cb(NfVm *vm, NfVmState old_state, NfVmState new_state, const char *reason,
                          gpointer data)
{
  NfFleet *fleet = data;
  fleet->per_state[old_state]--;
  fleet->per_state[new_state]++;
  if (fleet->ksm && nf_fleet_state_has_qemu(old_state) != nf_fleet_state_has_qemu(new_state))
    nf_fleet_ksm_follow(fleet, nf_fleet_state_has_qemu(new_state));
  if (new_state == NF_VM_BOOTING || new_state == NF_VM_READY)
    fleet->any_up = TRUE;
  if (fleet->boot_sched && fleet->limiter) {
    /* A storm: some guest booting or waiting for a slot (one just queued
     * is not in the limiter yet). */
    gboolean storm = new_state == NF_VM_QUEUED || booting_cb(fleet) > 0 ||
                     nf_limiter_waiting(fleet->limiter) > 0;
    nf_boot_sched_update(fleet->boot_sched, vm, nf_vm_pid(vm), new_state, storm);
  }

  emit_vm_changed(fleet, vm, old_state, reason);

  if ((new_state == NF_VM_BACKOFF || new_state == NF_VM_FAILED) && nf_vm_failed_at_start(vm) &&
      !fleet->any_up && !fleet->start_failed_sent && !fleet->stopping) {
    /* No guest of this fleet ever came up: it is the setup, not the guest. */
    fleet->start_failed_sent = TRUE;
    nf_limiter_close(fleet->limiter);
    g_autoptr(GError) error =
        g_error_new(NF_FLEET_ERROR, NF_FLEET_ERROR_START, "%s: qemu failed before it was up: %s",
                    nf_vm_name(vm), nf_vm_exit_reason(vm));
    if (fleet->cb.start_failed)
      fleet->cb.start_failed(fleet, error, fleet->user_data);
    return;
  }
  /* Guests found dead at adoption are no storm: after a host reboot every
   * one is, at once (that paused the whole fleet's boot for a window). */
  if ((new_state == NF_VM_BACKOFF || new_state == NF_VM_FAILED) &&
      nf_exit_kind_is_failure(nf_vm_exit_kind(vm)) && !nf_vm_found_dead(vm))
    note_failure(fleet, vm);
  if (new_state == NF_VM_QUEUED) {
    if (fleet->stopping)
      nf_vm_stop(vm, FALSE);
    else
      nf_limiter_push(fleet->limiter, vm);
  }
  if (old_state == NF_VM_QUEUED && new_state != NF_VM_STARTING)
    nf_limiter_remove(fleet->limiter, vm);
  if (is_booting(old_state) && !is_booting(new_state)) {
    nf_limiter_kick(fleet->limiter);
    if (booting_cb(fleet) == 0 && fleet->trim_idle == 0)
      fleet->trim_idle = g_idle_add(trim_cb, fleet);
  }
  if (!nf_vm_is_running(vm) && g_hash_table_contains(fleet->retiring, vm) &&
      fleet->retire_idle == 0)
    fleet->retire_idle = g_idle_add(nf_fleet_retire_cb, fleet);
  if (fleet->stopping)
    maybe_stopped(fleet);
}

guint nf_fleet_add_listener(NfFleet *fleet, const NfFleetCallbacks *callbacks, gpointer user_data)
{
  Listener li = {.id = ++fleet->next_listener, .cb = *callbacks, .user_data = user_data};
  g_array_append_val(fleet->listeners, li);
  return li.id;
}

void nf_fleet_remove_listener(NfFleet *fleet, guint id)
{
  gint i = listener_index(fleet, id);
  if (i >= 0)
    g_array_remove_index(fleet->listeners, (guint)i); /* (keeps the id order) */
}

/* A guest being scaled away takes no start, restart or reflash: requeued,
 * it could be spawned before its retirement, and run on unseen. */
static gboolean takes_commands(NfFleet *fleet, NfVm *vm)
{
  return !fleet->stopping && !g_hash_table_contains(fleet->retiring, vm);
}

void nf_fleet_start_vm(NfFleet *fleet, NfVm *vm)
{
  if (takes_commands(fleet, vm))
    nf_vm_queue(vm);
}

void nf_fleet_stop_vm(NfFleet *fleet, NfVm *vm, gboolean force)
{
  nf_vm_stop(vm, force);
}

void nf_fleet_restart_vm(NfFleet *fleet, NfVm *vm)
{
  if (takes_commands(fleet, vm))
    nf_vm_restart(vm);
}

gboolean nf_fleet_reflash_vm(NfFleet *fleet, NfVm *vm, GError **error)
{
  if (fleet->env.disks == NULL) {
    g_set_error(error, NF_FLEET_ERROR, NF_FLEET_ERROR_INPUT,
                "fleet '%s' has no disks to reflash (start it with --disk or --profile nerves "
                "--firmware)",
                fleet->config->name);
    return FALSE;
  }
  if (takes_commands(fleet, vm))
    nf_vm_reflash(vm);
  return TRUE;
}

void nf_fleet_detach(NfFleet *fleet)
{
  fleet->detaching = TRUE;
}

void nf_fleet_stop(NfFleet *fleet, gboolean force)
{
  if (fleet->ksm && !fleet->stopping) {
    NfKsmState ks;
    nf_ksm_read_state(&ks);
    guint64 pages = ks.pages_sharing + ks.zero_pages;
    g_autofree char *msg =
        g_strdup_printf("KSM saved %" G_GUINT64_FORMAT " MiB by merging identical guest pages",
                        pages * (guint64)sysconf(_SC_PAGESIZE) / (1024 * 1024));
    notice(fleet, msg);
  }
  fleet->stopping = TRUE;
  g_clear_handle_id(&fleet->ksm_timer, g_source_remove);
  nf_snapshot_cancel(fleet->env.snapshot);
  g_clear_handle_id(&fleet->resume_timer, g_source_remove);
  nf_limiter_close(fleet->limiter);
  for (NfVm *vm; (vm = nf_limiter_pop(fleet->limiter)) != NULL;)
    nf_vm_stop(vm, force);
  for (guint i = 0; i < fleet->vms->len; i++)
    nf_vm_stop(g_ptr_array_index(fleet->vms, i), force);
  if (fleet->strays)
    nf_stray_guests_stop(fleet->strays, force);
  maybe_stopped(fleet);
}

static void maybe_stopped(NfFleet *fleet)
{
  if (fleet->stopped_sent || fleet->stopped_idle)
    return;
  /* Called at every transition while stopping, and guests go down roughly
   * in id order: a scan from the first guest each time passed all those
   * already down, quadratic in the fleet. The scan resumes at the guest
   * that was running last time; only a scan that reaches the end looks at
   * every guest again, and that one decides. */
  for (; fleet->stop_scan < fleet->vms->len; fleet->stop_scan++)
    if (nf_vm_is_running(g_ptr_array_index(fleet->vms, fleet->stop_scan)))
      return;
  for (guint i = 0; i < fleet->vms->len; i++)
    if (nf_vm_is_running(g_ptr_array_index(fleet->vms, i))) {
      fleet->stop_scan = i;
      return;
    }
  if (fleet->strays && nf_stray_guests_any_running(fleet->strays))
    return;
  /* From an idle, so the caller of nf_fleet_stop never sees it re-entrantly. */
  fleet->stopped_idle = g_idle_add(stopped_idle_cb, fleet);
}

static gboolean stopped_idle_cb(gpointer data)
{
  NfFleet *fleet = data;
  fleet->stopped_idle = 0;
  fleet->stopped_sent = TRUE;
  if (fleet->cb.stopped)
    fleet->cb.stopped(fleet, fleet->user_data);
  return G_SOURCE_REMOVE;
}

void nf_fleet_free(NfFleet *fleet)
{
  if (fleet == NULL)
    return;
  if (fleet->stopped_idle)
    g_source_remove(fleet->stopped_idle);
  /* GLib sources, not deadlines (nf_vm_clear_timer would remove whichever
   * deadline had the same number and leave these to fire on a freed fleet). */
  g_clear_handle_id(&fleet->retire_idle, g_source_remove);
  g_clear_handle_id(&fleet->trim_idle, g_source_remove);
  g_clear_handle_id(&fleet->resume_timer, g_source_remove);
  g_clear_pointer(&fleet->mempolicy, nf_mempolicy_free);
  g_clear_pointer(&fleet->limiter, nf_limiter_free);
  if (fleet->detaching) {
    for (guint i = 0; i < fleet->vms->len; i++)
      nf_vm_detach(g_ptr_array_index(fleet->vms, i));
    if (fleet->strays)
      nf_stray_guests_detach(fleet->strays);
  }
  g_clear_pointer(&fleet->strays, nf_stray_guests_free);
  /* Freeing a guest kills and reaps whatever still runs (detached ones were
   * let go above). */
  GPtrArray *vms = g_steal_pointer(&fleet->vms);
  fleet->vms = g_ptr_array_new();
  g_ptr_array_unref(vms);
  g_clear_pointer(&fleet->boot_sched, nf_boot_sched_free);
  /* Before the runtime dir goes: its net.base is the plan's to remove. */
  nf_net_free(fleet->env.net, fleet->detaching);
  fleet->env.net = NULL;
  /* After the guests: their taps are gone with their qemu. */
  g_clear_pointer(&fleet->ready_http, nf_ready_http_free);
  nf_tap_free(fleet->env.tap, fleet->detaching);
  fleet->env.tap = NULL;
  g_clear_pointer(&fleet->ids, nf_shard_claim_release);
  if (fleet->lock_fd >= 0) {
    if (!fleet->detaching)
      nf_fleet_remove_stale_runtime_files(fleet);
    g_unlink(fleet->lock_path);
    close(fleet->lock_fd);
    /* Only empty dirs go: anything else in there is not ours to delete. */
    g_rmdir(fleet->paths.runtime_dir);
    if (fleet->config->runtime_dir == NULL) {
      g_autofree char *parent = g_path_get_dirname(fleet->paths.runtime_dir);
      g_rmdir(parent);
    }
  }
  if (!fleet->detaching && fleet->env.cgroup_name)
    nf_cgroup_sweep(fleet->env.cgroup_name);
  nf_fleet_release_dirs(fleet);
  g_free(fleet->made_runtime_dir);
  g_free(fleet->made_state_dir);
  g_ptr_array_unref(fleet->vms);
  g_array_unref(fleet->listeners);
  g_hash_table_unref(fleet->retiring);
  g_free(fleet->lock_path);
  g_free(fleet->env.qemu_path);
  g_free(fleet->env.cgroup_name);
  g_clear_pointer(&fleet->env.disks, nf_disks_free);
  g_clear_pointer(&fleet->env.snapshot, nf_snapshot_free);
  g_clear_handle_id(&fleet->ksm_timer, g_source_remove);
  g_clear_handle_id(&fleet->log_cap_timer, g_source_remove);
  if (fleet->detaching)
    g_clear_pointer(&fleet->ksm, nf_ksm_forget);
  else
    g_clear_pointer(&fleet->ksm, nf_ksm_release);
  g_clear_pointer(&fleet->env.health, nf_health_wheel_free);
  nf_paths_clear(&fleet->paths);
  g_free(fleet);
}
