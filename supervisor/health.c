/*
 * health.c: is a running guest alive? Two probes on one timer per guest:
 *  - QMP responsive: a cheap query-status with a deadline; a missed deadline
 *    means qemu itself is stuck (or stopped), and the guest is hung.
 *  - guest kernel alive: the balloon driver's guest-stats carry the guest's
 *    own "last-update" time, which only advances while the guest kernel runs.
 *    Checked once the guest is ready and the stats have moved at least once
 *    (a guest without the balloon driver is not called hung for it).
 * Process death is not polled here: the pidfd tells us (vm.c). The boot
 * deadline lives in lifecycle.c. Everything is one timer and at most two
 * QMP commands in flight per guest.
 */
#include <jansson.h>

#include "supervisor/vm-private.h"

#define STATS_POLL_SECONDS 2

static gboolean tick_cb(gpointer data);
static void ping_reply_cb(NfQmp *qmp, const NfQmpReply *reply, gpointer data);
static void stats_reply_cb(NfQmp *qmp, const NfQmpReply *reply, gpointer data);

void nf_vm_health_start(NfVm *vm)
{
  guint interval = vm->env->config->health_interval_ms;
  if (interval && vm->health_timer == 0)
    vm->health_timer = g_timeout_add(interval, tick_cb, vm);
}

void nf_vm_health_ready(NfVm *vm)
{
  if (vm->env->config->heartbeat_timeout_ms == 0 || vm->qmp == NULL || vm->stats_polling_set)
    return;
  vm->stats_polling_set = TRUE;
  vm->stats_advanced_at = g_get_monotonic_time();
  nf_qmp_qom_set(vm->qmp, NF_QMP_BALLOON_PATH, "guest-stats-polling-interval",
                 json_integer(STATS_POLL_SECONDS), 0, NULL, NULL);
}

void nf_vm_health_stop(NfVm *vm)
{
  nf_vm_clear_timer(&vm->health_timer);
}

static gboolean tick_cb(gpointer data)
{
  NfVm *vm = data;
  if (vm->qmp == NULL)
    return G_SOURCE_CONTINUE;
  /* One probe of each kind at a time: a slow qemu must not pile them up. */
  if (!vm->ping_in_flight) {
    vm->ping_in_flight = TRUE;
    nf_qmp_query_status(vm->qmp, vm->env->config->health_timeout_ms, ping_reply_cb, vm);
  }
  if (vm->stats_polling_set && !vm->stats_in_flight) {
    vm->stats_in_flight = TRUE;
    nf_qmp_qom_get(vm->qmp, NF_QMP_BALLOON_PATH, "guest-stats",
                   vm->env->config->health_timeout_ms, stats_reply_cb, vm);
  }
  return G_SOURCE_CONTINUE;
}

static void ping_reply_cb(NfQmp *qmp, const NfQmpReply *reply, gpointer data)
{
  NfVm *vm = data;
  vm->ping_in_flight = FALSE;
  if (vm->qmp != qmp)
    return; /* an old connection closing */
  if (reply->error && g_error_matches(reply->error, NF_QMP_ERROR, NF_QMP_ERROR_TIMEOUT)) {
    g_autofree char *why =
        g_strdup_printf("QMP did not answer within %.0f s", vm->env->config->health_timeout_ms / 1000.0);
    nf_vm_dispatch(vm, NF_VM_EV_HEALTH_FAIL, why);
  }
}

static void stats_reply_cb(NfQmp *qmp, const NfQmpReply *reply, gpointer data)
{
  NfVm *vm = data;
  vm->stats_in_flight = FALSE;
  if (vm->qmp != qmp || reply->ret == NULL)
    return;
  gint64 now = g_get_monotonic_time();
  json_t *lu = json_object_get(reply->ret, "last-update");
  gint64 last = json_is_integer(lu) ? json_integer_value(lu) : 0;
  if (last != vm->stats_last_update) {
    gboolean first = vm->stats_last_update == 0;
    vm->stats_last_update = last;
    vm->stats_advanced_at = now;
    if (first)
      return;
  }
  if (vm->stats_last_update == 0)
    return; /* the guest never reported stats: no balloon driver, no verdict */
  guint limit = vm->env->config->heartbeat_timeout_ms;
  if (now - vm->stats_advanced_at > (gint64)limit * 1000) {
    g_autofree char *why =
        g_strdup_printf("guest kernel stopped updating its balloon stats for %.0f s",
                        limit / 1000.0);
    nf_vm_dispatch(vm, NF_VM_EV_HEALTH_FAIL, why);
  }
}
