/*
 * health.c: is a running guest alive? Two probes per guest, driven by one
 * fleet-wide timer (the wheel, below):
 *  - QMP responsive: a cheap query-status with a deadline; a missed deadline
 *    means qemu itself is stuck (or stopped), and the guest is hung.
 *  - guest kernel alive: the balloon driver's guest-stats carry the guest's
 *    own "last-update" time, which only advances while the guest kernel runs.
 *    Checked once the guest is ready and the stats have moved at least once
 *    (a guest without the balloon driver is not called hung for it).
 * Once the heartbeat runs, its qom-get is also the QMP probe (a reply proves
 * QMP answers), so a ready guest costs one round trip per interval.
 *
 * Cost at thousands of guests: one fleet-wide timer (the wheel), not one per
 * guest. Each tick probes every guest whose interval is up, so the replies of
 * many guests arrive together and are handled in a few main loop wakeups
 * instead of one wakeup per guest: with GLib's poll loop every wakeup walks
 * every source, so wakeups, not probes, are what idle CPU is made of.
 * Process death is not polled here: the pidfd tells us (vm.c). The boot
 * deadline lives in lifecycle.c.
 */
#include <jansson.h>

#include "supervisor/vm-private.h"

#define STATS_POLL_SECONDS 2

struct NfHealthWheel {
  guint interval_ms;
  guint timer;
  GHashTable *vms; /* NfVm* being probed */
};

static gboolean wheel_tick_cb(gpointer data);
static void probe(NfVm *vm);
static void ping_reply_cb(NfQmp *qmp, const NfQmpReply *reply, gpointer data);
static void stats_reply_cb(NfQmp *qmp, const NfQmpReply *reply, gpointer data);
static void note_guest_mem(NfVm *vm, json_t *ret);

NfHealthWheel *nf_health_wheel_new(guint interval_ms)
{
  NfHealthWheel *w = g_new0(NfHealthWheel, 1);
  w->interval_ms = interval_ms;
  w->vms = g_hash_table_new(NULL, NULL);
  /* Whole seconds let GLib align this wakeup with the process's others. */
  if (interval_ms >= 1000)
    w->timer = g_timeout_add_seconds(1, wheel_tick_cb, w);
  else
    w->timer = g_timeout_add(interval_ms, wheel_tick_cb, w);
  return w;
}

void nf_health_wheel_free(NfHealthWheel *w)
{
  if (w == NULL)
    return;
  g_source_remove(w->timer);
  g_hash_table_unref(w->vms);
  g_free(w);
}

void nf_vm_health_start(NfVm *vm)
{
  NfHealthWheel *w = vm->env->health;
  if (w == NULL || vm->qmp == NULL)
    return;
  vm->next_probe_at = g_get_monotonic_time() + (gint64)w->interval_ms * 1000;
  g_hash_table_add(w->vms, vm);
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
  if (vm->env->health)
    g_hash_table_remove(vm->env->health->vms, vm);
}

static gboolean wheel_tick_cb(gpointer data)
{
  NfHealthWheel *w = data;
  gint64 now = g_get_monotonic_time();
  GHashTableIter it;
  gpointer key;
  g_hash_table_iter_init(&it, w->vms);
  while (g_hash_table_iter_next(&it, &key, NULL)) {
    NfVm *vm = key;
    if (now >= vm->next_probe_at) {
      vm->next_probe_at = now + (gint64)w->interval_ms * 1000;
      probe(vm);
    }
  }
  return G_SOURCE_CONTINUE;
}

static void probe(NfVm *vm)
{
  if (vm->qmp == NULL)
    return;
  nf_vm_sample_rss(vm);
  guint deadline = vm->env->config->health_timeout_ms;
  /* One probe at a time: a slow qemu must not pile them up. The heartbeat's
   * reply also proves QMP answers, so a ready guest needs no separate ping. */
  if (vm->stats_polling_set) {
    if (!vm->stats_in_flight) {
      vm->stats_in_flight = TRUE;
      nf_qmp_qom_get(vm->qmp, NF_QMP_BALLOON_PATH, "guest-stats", deadline, stats_reply_cb, vm);
    }
  } else if (!vm->ping_in_flight) {
    vm->ping_in_flight = TRUE;
    nf_qmp_query_status(vm->qmp, deadline, ping_reply_cb, vm);
  }
}

static void ping_reply_cb(NfQmp *qmp, const NfQmpReply *reply, gpointer data)
{
  NfVm *vm = data;
  vm->ping_in_flight = FALSE;
  if (vm->qmp != qmp)
    return; /* an old connection closing */
  if (reply->error && g_error_matches(reply->error, NF_QMP_ERROR, NF_QMP_ERROR_TIMEOUT)) {
    g_autofree char *why = g_strdup_printf("QMP did not answer within %.0f s",
                                           vm->env->config->health_timeout_ms / 1000.0);
    nf_vm_dispatch(vm, NF_VM_EV_HEALTH_FAIL, why);
  }
}

/* Keeps what the guest said about its memory for `nervesfleet mem`: the
 * heartbeat fetches these stats anyway. qemu reports -1 for a stat the
 * guest never sent. */
static void note_guest_mem(NfVm *vm, json_t *ret)
{
  json_t *stats = json_object_get(ret, "stats");
  json_t *lu = json_object_get(ret, "last-update");
  if (!json_is_object(stats) || !json_is_integer(lu) || json_integer_value(lu) == 0)
    return;
  json_t *v;
  vm->guest_mem.total =
      json_is_integer(v = json_object_get(stats, "stat-total-memory")) ? json_integer_value(v) : -1;
  vm->guest_mem.free =
      json_is_integer(v = json_object_get(stats, "stat-free-memory")) ? json_integer_value(v) : -1;
  vm->guest_mem.available = json_is_integer(v = json_object_get(stats, "stat-available-memory"))
                                ? json_integer_value(v)
                                : -1;
  vm->guest_mem.updated = json_integer_value(lu);
}

static void stats_reply_cb(NfQmp *qmp, const NfQmpReply *reply, gpointer data)
{
  NfVm *vm = data;
  vm->stats_in_flight = FALSE;
  if (vm->qmp != qmp)
    return;
  if (reply->error && g_error_matches(reply->error, NF_QMP_ERROR, NF_QMP_ERROR_TIMEOUT)) {
    g_autofree char *why = g_strdup_printf("QMP did not answer within %.0f s",
                                           vm->env->config->health_timeout_ms / 1000.0);
    nf_vm_dispatch(vm, NF_VM_EV_HEALTH_FAIL, why);
    return;
  }
  if (reply->ret == NULL)
    return;
  gint64 now = g_get_monotonic_time();
  note_guest_mem(vm, reply->ret);
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
    g_autofree char *why = g_strdup_printf(
        "guest kernel stopped updating its balloon stats for %.0f s", limit / 1000.0);
    nf_vm_dispatch(vm, NF_VM_EV_HEALTH_FAIL, why);
  }
}
