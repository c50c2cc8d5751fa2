/*
 * lifecycle.c: a guest's life as an explicit state x event table (after s6's
 * s6-supervise): every (state, event) pair names an action, if only
 * `ignore`, so no combination is handled by accident. Actions do the side
 * effects and pick the next state; the exit action classifies the exit and
 * applies the restart policy.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <gio/gio.h>

#include "supervisor/vm-private.h"

typedef void (*Action)(NfVm *vm, const char *detail);

static void ignore(NfVm *vm, const char *detail);
static void queue(NfVm *vm, const char *detail);
static void requeue_fresh(NfVm *vm, const char *detail);
static void spawn(NfVm *vm, const char *detail);
static void disk_ready(NfVm *vm, const char *detail);
static void launch(NfVm *vm);
static void fail_start(NfVm *vm, const char *why);
static gboolean stop_while_preparing(NfVm *vm, const char *detail);
static void qmp_up(NfVm *vm, const char *detail);
static void qmp_up_late(NfVm *vm, const char *detail);
static void ready(NfVm *vm, const char *detail);
static void kill_hung(NfVm *vm, const char *detail);
static void exited(NfVm *vm, const char *detail);
static void stop(NfVm *vm, const char *detail);
static void kill_now(NfVm *vm, const char *detail);
static void stop_idle(NfVm *vm, const char *detail);
static void mark_stop(NfVm *vm, const char *detail);
static gboolean boot_timeout_cb(gpointer data);
static gboolean kill_timeout_cb(gpointer data);
static gboolean backoff_done_cb(gpointer data);
static char *describe_exit(NfVm *vm, const char *detail);

/* STARTING covers the wait for the guest's disk too (no qemu yet, see
 * spawn): only DISK_READY, STOP and KILL can reach a guest then, and a
 * --ready http report, which ready() ignores without a qemu. */
/* clang-format off */
static const Action table[NF_VM_N_STATES][NF_VM_N_EVENTS] = {
  /*                 QUEUE          ADMIT   QMP_UP  READY   HEALTH_FAIL EXIT    STOP       KILL       BACKOFF_DONE DISK_READY */
  [NF_VM_CREATED]   = {queue,         ignore, ignore, ignore, ignore,     ignore, stop_idle, stop_idle, ignore,      ignore},
  [NF_VM_QUEUED]    = {ignore,        spawn,  ignore, ignore, ignore,     ignore, stop_idle, stop_idle, ignore,      ignore},
  [NF_VM_STARTING]  = {ignore,        ignore, qmp_up, ready,  kill_hung,  exited, stop,      kill_now,  ignore,      disk_ready},
  [NF_VM_BOOTING]   = {ignore,        ignore, ignore, ready,  kill_hung,  exited, stop,      kill_now,  ignore,      ignore},
  [NF_VM_READY]     = {ignore,        ignore, qmp_up_late, ignore, kill_hung, exited, stop,   kill_now,  ignore,      ignore},
  [NF_VM_UNHEALTHY] = {ignore,        ignore, ignore, ignore, ignore,     exited, mark_stop, kill_now,  ignore,      ignore},
  [NF_VM_STOPPING]  = {ignore,        ignore, ignore, ignore, ignore,     exited, ignore,    kill_now,  ignore,      ignore},
  [NF_VM_STOPPED]   = {requeue_fresh, ignore, ignore, ignore, ignore,     ignore, ignore,    ignore,    ignore,      ignore},
  [NF_VM_BACKOFF]   = {queue,         ignore, ignore, ignore, ignore,     ignore, stop_idle, stop_idle, queue,       ignore},
  [NF_VM_FAILED]    = {requeue_fresh, ignore, ignore, ignore, ignore,     ignore, ignore,    ignore,    ignore,      ignore},
};
/* clang-format on */

static const char *const state_names[NF_VM_N_STATES] = {
    [NF_VM_CREATED] = "created",   [NF_VM_QUEUED] = "queued",   [NF_VM_STARTING] = "starting",
    [NF_VM_BOOTING] = "booting",   [NF_VM_READY] = "ready",     [NF_VM_UNHEALTHY] = "unhealthy",
    [NF_VM_STOPPING] = "stopping", [NF_VM_STOPPED] = "stopped", [NF_VM_BACKOFF] = "backoff",
    [NF_VM_FAILED] = "failed",
};

const char *nf_vm_state_name(NfVmState state)
{
  return state < NF_VM_N_STATES ? state_names[state] : "?";
}

void nf_vm_set_state(NfVm *vm, NfVmState state, const char *reason)
{
  NfVmState old = vm->state;
  if (old == state)
    return;
  vm->state = state;
  nf_vm_log_transition(vm, old, state, reason);
  nf_vm_write_status(vm);
  if (vm->cb.state_changed)
    vm->cb.state_changed(vm, old, state, reason, vm->user_data);
}

void nf_vm_dispatch(NfVm *vm, NfVmEvent event, const char *detail)
{
  table[vm->state][event](vm, detail);
}

/* Public entry points: each is one event. */
void nf_vm_queue(NfVm *vm)
{
  nf_vm_dispatch(vm, NF_VM_EV_QUEUE, "start requested");
}

gboolean nf_vm_start(NfVm *vm, GError **error)
{
  if (vm->state != NF_VM_QUEUED) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_BUSY, "%s is %s, not queued", vm->name,
                nf_vm_state_name(vm->state));
    return FALSE;
  }
  nf_vm_dispatch(vm, NF_VM_EV_ADMIT, NULL);
  if (vm->state == NF_VM_FAILED) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED, "%s", vm->exit_reason);
    return FALSE;
  }
  return TRUE;
}

void nf_vm_stop(NfVm *vm, gboolean force)
{
  vm->requeue_after_stop = FALSE;
  nf_vm_dispatch(vm, force ? NF_VM_EV_KILL : NF_VM_EV_STOP,
                 force ? "kill requested" : "stop requested");
}

void nf_vm_restart(NfVm *vm)
{
  if (nf_vm_is_running(vm) || vm->disk_job) {
    /* Set first: a guest still waiting for its disk stops at once. */
    vm->requeue_after_stop = TRUE;
    nf_vm_dispatch(vm, NF_VM_EV_STOP, "restart requested");
  } else {
    nf_vm_dispatch(vm, NF_VM_EV_QUEUE, "restart requested");
  }
}

gboolean nf_vm_reflash(NfVm *vm)
{
  if (vm->env->disks == NULL)
    return FALSE;
  vm->reflash_pending = TRUE;
  nf_vm_restart(vm);
  return TRUE;
}

/* Actions */

static void ignore(NfVm *vm, const char *detail) {}

static void queue(NfVm *vm, const char *detail)
{
  nf_vm_clear_timer(&vm->backoff_timer);
  nf_vm_set_state(vm, NF_VM_QUEUED, detail ? detail : "waiting for a boot slot");
}

static void requeue_fresh(NfVm *vm, const char *detail)
{
  /* A person asked: whatever the tally said, it gets a fresh start. */
  memset(&vm->tally, 0, sizeof(vm->tally));
  vm->restart_pending = FALSE;
  queue(vm, detail);
}

/* Admitted: qemu starts now, or once its disk is made. The wait holds the
 * guest's boot slot, so a reflash or scale-up stays inside the boot window. */
static void spawn(NfVm *vm, const char *detail)
{
  if (vm->restart_pending) {
    vm->restarts++;
    vm->restart_pending = FALSE;
  }
  const char *what = NULL;
  if (nf_vm_disk_prepare(vm, &what)) {
    nf_vm_set_state(vm, NF_VM_STARTING, what);
    return;
  }
  launch(vm);
}

static void disk_ready(NfVm *vm, const char *detail)
{
  if (vm->disk_error) {
    g_autoptr(GError) error = g_steal_pointer(&vm->disk_error);
    fail_start(vm, error->message);
    return;
  }
  launch(vm);
}

static void launch(NfVm *vm)
{
  g_autoptr(GError) error = NULL;
  if (!nf_vm_spawn(vm, &error)) {
    fail_start(vm, error->message);
    return;
  }
  nf_vm_arm_boot_timer(vm);
  if (vm->state == NF_VM_STARTING) {
    /* After its disk: the same state, one step further (and a pid now). */
    nf_vm_log_transition(vm, NF_VM_STARTING, NF_VM_STARTING, "disk ready, qemu spawned");
    nf_vm_write_status(vm);
    return;
  }
  nf_vm_set_state(vm, NF_VM_STARTING, "qemu spawned");
}

static void fail_start(NfVm *vm, const char *why)
{
  g_free(vm->exit_reason);
  vm->exit_reason = g_strdup(why);
  vm->exit_kind = NF_EXIT_CRASHED;
  vm->exit_time = g_get_real_time();
  vm->failed_at_start = TRUE;
  nf_vm_set_state(vm, NF_VM_FAILED, why);
}

/* A guest still waiting for its disk has no qemu to stop: it is stopped at
 * once (and requeued if that was a restart). FALSE if it has a qemu. */
static gboolean stop_while_preparing(NfVm *vm, const char *detail)
{
  if (vm->disk_job == NULL)
    return FALSE;
  nf_vm_disk_cancel(vm);
  gboolean again = vm->requeue_after_stop;
  vm->requeue_after_stop = FALSE;
  nf_vm_set_state(vm, NF_VM_STOPPED, detail);
  if (again)
    nf_vm_dispatch(vm, NF_VM_EV_QUEUE, "restart requested");
  return TRUE;
}

static void qmp_up(NfVm *vm, const char *detail)
{
  nf_vm_health_start(vm);
  nf_vm_set_state(vm, vm->ready_at ? NF_VM_READY : NF_VM_BOOTING,
                  vm->ready_at ? "adopted: was ready, QMP answers" : detail);
  if (vm->ready_at) {
    /* Adopted while ready: no ready line will come again. */
    nf_vm_clear_timer(&vm->boot_timer);
    nf_vm_health_ready(vm);
    nf_vm_console_settle(vm);
  }
}

/* The ready line beat the QMP handshake (a fast guest): probes start now. */
static void qmp_up_late(NfVm *vm, const char *detail)
{
  nf_vm_health_start(vm);
  nf_vm_health_ready(vm);
}

static void ready(NfVm *vm, const char *detail)
{
  /* A guest waiting for its disk has no qemu, yet a --ready http report
   * naming its serial can come (a late one from its last run, or one sent
   * by anyone on the host): READY then would never spawn qemu, and a stop
   * would signal no process. */
  if (vm->proc == NULL)
    return;
  nf_vm_clear_timer(&vm->boot_timer);
  vm->ready_at = g_get_monotonic_time();
  nf_vm_memory_ready(vm);
  nf_vm_set_state(vm, NF_VM_READY, detail);
  /* After the state: a guest lowered for a storm on becoming ready
   * (boot-sched.c) is told the storm's stats interval, and only that. */
  if (vm->state == NF_VM_READY)
    nf_vm_health_ready(vm);
  /* The ready line was what we read the console for (vm-console.c). */
  nf_vm_console_settle(vm);
}

static void kill_hung(NfVm *vm, const char *detail)
{
  vm->hung = TRUE;
  g_free(vm->health_problem);
  vm->health_problem = g_strdup(detail);
  nf_process_signal(vm->proc, SIGKILL);
  nf_vm_set_state(vm, NF_VM_UNHEALTHY, detail);
}

static void stop(NfVm *vm, const char *detail)
{
  if (stop_while_preparing(vm, detail))
    return;
  vm->stop_requested = TRUE;
  nf_vm_clear_timer(&vm->boot_timer);
  nf_vm_health_stop(vm);
  if (vm->qmp && vm->qmp_negotiated)
    nf_qmp_quit(vm->qmp, vm->env->config->stop_timeout_ms, NULL, NULL);
  else
    nf_process_signal(vm->proc, SIGTERM); /* qemu also exits cleanly on SIGTERM */
  vm->kill_timer = nf_deadline_add(MAX(vm->env->config->stop_timeout_ms, 1), kill_timeout_cb, vm);
  nf_vm_set_state(vm, NF_VM_STOPPING, detail);
}

static void mark_stop(NfVm *vm, const char *detail)
{
  vm->stop_requested = TRUE; /* already being killed; just don't restart */
}

static void kill_now(NfVm *vm, const char *detail)
{
  if (stop_while_preparing(vm, detail))
    return;
  vm->stop_requested = TRUE;
  nf_vm_health_stop(vm);
  nf_process_signal(vm->proc, SIGKILL);
  nf_vm_set_state(vm, NF_VM_STOPPING, detail);
}

static void stop_idle(NfVm *vm, const char *detail)
{
  nf_vm_clear_timer(&vm->backoff_timer);
  vm->restart_pending = FALSE;
  nf_vm_set_state(vm, NF_VM_STOPPED, detail);
}

static char *describe_exit(NfVm *vm, const char *detail)
{
  g_autofree char *how = vm->status_known ? nf_process_describe_status(vm->wait_status)
                                          : g_strdup("ended (exit status unknown: adopted)");
  GString *s = g_string_new(nf_exit_kind_name(vm->exit_kind));
  g_string_append(s, " (");
  if (detail)
    g_string_append_printf(s, "%s; ", detail);
  if (vm->exit_kind == NF_EXIT_HUNG && vm->health_problem)
    g_string_append_printf(s, "%s; ", vm->health_problem);
  if (vm->shutdown_reason && vm->exit_kind != NF_EXIT_STOPPED)
    g_string_append_printf(s, "qemu reported %s; ", vm->shutdown_reason);
  g_string_append_printf(s, "qemu %s)", how);
  if (vm->exit_kind == NF_EXIT_CRASHED) {
    g_autofree char *tail = nf_vm_stderr_tail(vm, 3);
    if (*tail)
      g_string_append_printf(s, ": %s", tail);
  }
  return g_string_free(s, FALSE);
}

static void exited(NfVm *vm, const char *detail)
{
  const NfFleetConfig *cfg = vm->env->config;
  gboolean oom = vm->cgroup && nf_cgroup_oom_kills(vm->cgroup) > vm->oom_kills_at_start;
  NfExitFacts facts = {
      .stop_requested = vm->stop_requested,
      .hung = vm->hung,
      .watchdog_event = vm->watchdog_event,
      .panic_seen = vm->panic_seen,
      .shutdown_reason = vm->shutdown_reason,
      .status_known = vm->status_known,
      .wait_status = vm->wait_status,
      .oom_kill_counted = oom,
  };
  vm->exit_kind = nf_exit_kind_classify(&facts);
  vm->exit_time = g_get_real_time();
  vm->failed_at_start = !vm->qmp_negotiated && !vm->stop_requested && vm->status_known &&
                        vm->exit_kind == NF_EXIT_CRASHED;
  g_free(vm->exit_reason);
  vm->exit_reason = describe_exit(vm, detail);

  if (vm->proc) {
    if (nf_process_has_exited(vm->proc))
      nf_process_free(vm->proc);
    else
      nf_process_forget(vm->proc);
    vm->proc = NULL;
  }
  nf_vm_release(vm);

  g_autofree char *reason = g_strdup_printf("exited: %s", vm->exit_reason);
  if (vm->exit_kind == NF_EXIT_STOPPED) {
    gboolean again = vm->requeue_after_stop;
    vm->requeue_after_stop = FALSE;
    nf_vm_set_state(vm, NF_VM_STOPPED, reason);
    if (again)
      nf_vm_dispatch(vm, NF_VM_EV_QUEUE, "restart requested");
    return;
  }
  guint delay_ms = 0;
  gint64 now = g_get_monotonic_time();
  /* Healthy is ready for a while, a whole restart window: then the backoff
   * starts over. Reset at every ready line, a guest that crashed soon after
   * each one restarted at the first delay forever, under the intensity
   * limit when its boots were long. */
  if (vm->ready_at && now - vm->ready_at >= (gint64)cfg->restart.window_ms * 1000)
    nf_restart_tally_healthy(&vm->tally);
  NfRestartDecision d = nf_restart_decide(&cfg->restart, &vm->tally, vm->exit_kind, now,
                                          g_random_double(), &delay_ms);
  switch (d) {
  case NF_RESTART_NO:
    nf_vm_set_state(vm, nf_exit_kind_is_failure(vm->exit_kind) ? NF_VM_FAILED : NF_VM_STOPPED,
                    reason);
    break;
  case NF_RESTART_GIVE_UP: {
    g_autofree char *why =
        g_strdup_printf("%s; more than %u restarts within %u s: giving up until restarted by hand",
                        reason, cfg->restart.max_restarts, cfg->restart.window_ms / 1000);
    nf_vm_set_state(vm, NF_VM_FAILED, why);
    break;
  }
  case NF_RESTART_AFTER: {
    vm->restart_pending = TRUE;
    vm->backoff_timer = nf_deadline_add(delay_ms, backoff_done_cb, vm);
    g_autofree char *why = g_strdup_printf("%s; restarting in %.1f s", reason, delay_ms / 1000.0);
    nf_vm_set_state(vm, NF_VM_BACKOFF, why);
    break;
  }
  }
}

void nf_vm_arm_boot_timer(NfVm *vm)
{
  const guint boot_ms = vm->env->config->boot_timeout_ms;
  nf_vm_clear_timer(&vm->boot_timer);
  if (boot_ms)
    vm->boot_timer = nf_deadline_add(boot_ms, boot_timeout_cb, vm);
}

static gboolean boot_timeout_cb(gpointer data)
{
  NfVm *vm = data;
  vm->boot_timer = 0;
  g_autofree char *why =
      g_strdup_printf("no %s within %.0f s (--boot-timeout)",
                      vm->state == NF_VM_STARTING ? "QMP handshake" : "ready line",
                      vm->env->config->boot_timeout_ms / 1000.0);
  nf_vm_dispatch(vm, NF_VM_EV_HEALTH_FAIL, why);
  return G_SOURCE_REMOVE;
}

static gboolean kill_timeout_cb(gpointer data)
{
  NfVm *vm = data;
  vm->kill_timer = 0;
  nf_process_signal(vm->proc, SIGKILL);
  return G_SOURCE_REMOVE;
}

static gboolean backoff_done_cb(gpointer data)
{
  NfVm *vm = data;
  vm->backoff_timer = 0;
  nf_vm_dispatch(vm, NF_VM_EV_BACKOFF_DONE, "restarting after backoff");
  return G_SOURCE_REMOVE;
}
