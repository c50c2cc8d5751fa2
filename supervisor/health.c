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
 * QMP answers), sent when new stats can be there; the probes in between
 * stay a query-status. Either way a ready guest costs one round trip per
 * interval.
 * The same reply's memory figures are kept on the guest (nf_vm_guest_mem)
 * for the memory policy (mempolicy.c) and `ps`, at no extra QMP cost.
 *
 * Cost at thousands of guests: one fleet-wide timer (the wheel), not one per
 * guest. Each tick probes every guest whose interval is up, so the replies of
 * many guests arrive together and are handled in a few main loop wakeups
 * instead of one wakeup per guest: with GLib's poll loop every wakeup walks
 * every source, so wakeups, not probes, are what idle CPU is made of. The
 * guests wait in a queue in the order they are due, so a tick touches only
 * those it probes: walking every guest every second cost ~0.5 % of a core
 * at 10,000 (idle supervisor 1.87 → 1.37 %; not measurable at 1,000).
 * Process death is not polled here: the end of the QMP stream, then a
 * pidfd, tell us (vm.c); a probe only checks, with one waitid(WNOWAIT), that
 * the child it spawned is not a zombie behind a stream kept open. The boot
 * deadline lives in lifecycle.c.
 */
#include "supervisor/health.h"

#include <jansson.h>

#include "supervisor/vm-private.h"

struct NfHealthWheel {
  guint interval_ms;
  guint timer;
  GQueue due;              /* NfVm* being probed, by next_probe_at (each vm->health_link) */
  gint64 rss_wanted_until; /* monotonic µs (nf_health_wheel_rss_wanted) */
};

static gboolean wheel_tick_cb(gpointer data);
static void schedule(NfHealthWheel *w, NfVm *vm);
static void probe(NfVm *vm);
static void ping_reply_cb(NfQmp *qmp, const NfQmpReply *reply, gpointer data);
static void stats_reply_cb(NfQmp *qmp, const NfQmpReply *reply, gpointer data);
static void store_guest_mem(NfVm *vm, json_t *ret);

NfHealthWheel *nf_health_wheel_new(guint interval_ms)
{
  NfHealthWheel *w = g_new0(NfHealthWheel, 1);
  w->interval_ms = interval_ms;
  /* Whole seconds let GLib align this wakeup with the process's others. */
  if (interval_ms >= 1000)
    w->timer = g_timeout_add_seconds(1, wheel_tick_cb, w);
  else
    w->timer = g_timeout_add(interval_ms, wheel_tick_cb, w);
  return w;
}

guint nf_health_wheel_interval(const NfHealthWheel *w)
{
  return w->interval_ms;
}

void nf_health_wheel_rss_wanted(NfHealthWheel *w)
{
  w->rss_wanted_until = g_get_monotonic_time() + (gint64)NF_HEALTH_RSS_WATCH_MS * 1000;
}

void nf_health_wheel_free(NfHealthWheel *w)
{
  if (w == NULL)
    return;
  g_source_remove(w->timer);
  g_queue_clear(&w->due);
  g_free(w);
}

guint nf_health_stats_poll_ms(guint heartbeat_timeout_ms)
{
  guint s = heartbeat_timeout_ms / 4 / 1000;
  return CLAMP(s, 1, NF_HEALTH_STATS_POLL_MAX_MS / 1000) * 1000;
}

guint nf_health_relief_ms(guint heartbeat_timeout_ms, guint health_interval_ms,
                          guint health_timeout_ms)
{
  /* A third of the tighter deadline a starving guest could miss: its
   * heartbeat (the guest kernel must run) and a QMP probe's (qemu's main
   * thread must answer). Relief judges windows that long, so a guest that
   * starts starving is put back within two thirds of the deadline, with a
   * third left to catch up. Relief sees only guests that wait to run, so a
   * short one costs the storm nothing; but not under relief's own tick (1 s). */
  gboolean probes = health_interval_ms && health_timeout_ms;
  if (heartbeat_timeout_ms == 0 && !probes)
    return 0;
  guint relief_ms = heartbeat_timeout_ms ? heartbeat_timeout_ms / 3 : G_MAXUINT;
  if (probes)
    relief_ms = MIN(relief_ms, health_timeout_ms / 3);
  return MAX(relief_ms, 1000);
}

void nf_vm_health_start(NfVm *vm)
{
  NfHealthWheel *w = vm->env->health;
  if (w == NULL || vm->qmp == NULL)
    return;
  if (vm->health_link)
    g_queue_delete_link(&w->due, g_steal_pointer(&vm->health_link));
  vm->next_probe_at = g_get_monotonic_time() + (gint64)nf_health_wheel_interval(w) * 1000;
  schedule(w, vm);
}

/* Into the queue by next_probe_at. Every guest is due one fixed interval
 * after it was last probed or came up, so this is the tail; the walk back
 * only keeps the order should that ever not hold. */
static void schedule(NfHealthWheel *w, NfVm *vm)
{
  GList *after = w->due.tail;
  while (after && ((NfVm *)after->data)->next_probe_at > vm->next_probe_at)
    after = after->prev;
  if (after) {
    g_queue_insert_after(&w->due, after, vm);
    vm->health_link = after->next;
  } else {
    g_queue_push_head(&w->due, vm);
    vm->health_link = w->due.head;
  }
}

void nf_vm_health_ready(NfVm *vm)
{
  if (vm->env->config->heartbeat_timeout_ms == 0 || vm->qmp == NULL || vm->stats_polling_set)
    return;
  vm->stats_polling_set = TRUE;
  vm->stats_advanced_at = g_get_monotonic_time();
  guint poll_ms = nf_health_stats_poll_ms(vm->env->config->heartbeat_timeout_ms);
  nf_qmp_qom_set(vm->qmp, NF_QMP_BALLOON_PATH, "guest-stats-polling-interval",
                 json_integer(poll_ms / 1000), 0, NULL, NULL);
}

void nf_vm_health_stop(NfVm *vm)
{
  if (vm->env->health && vm->health_link)
    g_queue_delete_link(&vm->env->health->due, g_steal_pointer(&vm->health_link));
}

static gboolean wheel_tick_cb(gpointer data)
{
  NfHealthWheel *w = data;
  gint64 now = g_get_monotonic_time();
  gint64 interval_us = (gint64)nf_health_wheel_interval(w) * 1000;
  /* Requeued before the probe: a probe's failure can take the guest off. */
  while (w->due.head && ((NfVm *)w->due.head->data)->next_probe_at <= now) {
    NfVm *vm = g_queue_pop_head(&w->due);
    vm->next_probe_at = now + interval_us;
    schedule(w, vm);
    probe(vm);
  }
  return G_SOURCE_CONTINUE;
}

/* Whether qemu's pid file names the process we watch; UNKNOWN while it
 * cannot be read (qemu writes it early). An adopted guest answers YES: it
 * was found through that file, and is no child of ours to reap anyway. */
static NfVmQemuChild qemu_is_child(NfVm *vm)
{
  GPid pid;
  if (!nf_vm_read_pidfile(vm, &pid))
    return NF_VM_QEMU_CHILD_UNKNOWN;
  return pid == nf_process_pid(vm->proc) ? NF_VM_QEMU_CHILD_YES : NF_VM_QEMU_CHILD_NO;
}

static void probe(NfVm *vm)
{
  if (vm->qmp == NULL)
    return;
  /* A spawned guest is watched once its QMP stream ends (vm.c); a wrapper
   * given as --qemu can die while the qemu it forked keeps the stream up.
   * When the pid file names our child, qemu is the child itself (the usual
   * case) and that check, a waitid at each probe, is not needed. */
  if (vm->qemu_child == NF_VM_QEMU_CHILD_UNKNOWN)
    vm->qemu_child = qemu_is_child(vm);
  if (vm->qemu_child != NF_VM_QEMU_CHILD_YES && nf_process_check_exit(vm->proc))
    return;
  gint64 now = g_get_monotonic_time();
  if (now < vm->env->health->rss_wanted_until && now - vm->rss_at >= NF_VM_RSS_SAMPLE_US)
    nf_vm_sample_rss(vm);
  guint slow_ms = vm->env->config->slow_check_ms;
  if (now - vm->slow_at >= (slow_ms ? (gint64)slow_ms * 1000 : NF_VM_SLOW_CHECK_US)) {
    vm->slow_at = now;
    nf_vm_console_cap_log(vm); /* a stat, if its log was written to */
    if (now - vm->pss_at > NF_VM_PSS_SAMPLE_US)
      nf_vm_sample_pss(vm);
  }
  guint deadline = vm->env->config->health_timeout_ms;
  /* One probe at a time: a slow qemu must not pile them up. A ready guest's
   * stats are read only once new ones can be there (its balloon driver
   * reports every stats interval); that reply also proves QMP answers, and
   * the probes in between are a plain ping. What a probe costs is qemu's:
   * its QMP reader takes a command one byte per read and wakeup, so the
   * guest-stats qom-get (106 bytes) costs it twice what query-status (34)
   * does: 2.1 against 1.0 ms of CPU, one at a time under TCG here. Probed
   * more often than the stats interval (a person's --health-interval), a
   * guest was read stats it had already given (issue 17). */
  if (vm->stats_in_flight || vm->ping_in_flight)
    return;
  gint64 stats_every_us =
      (gint64)nf_health_stats_poll_ms(vm->env->config->heartbeat_timeout_ms) * 1000;
  if (vm->stats_polling_set && now - vm->stats_asked_at >= stats_every_us) {
    vm->stats_in_flight = TRUE;
    vm->stats_asked_at = now;
    nf_qmp_qom_get(vm->qmp, NF_QMP_BALLOON_PATH, "guest-stats", deadline, stats_reply_cb, vm);
  } else {
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
  json_t *lu = json_object_get(reply->ret, "last-update");
  gint64 last = json_is_integer(lu) ? json_integer_value(lu) : 0;
  if (last != vm->stats_last_update) {
    gboolean first = vm->stats_last_update == 0;
    vm->stats_last_update = last;
    vm->stats_advanced_at = now;
    if (last != 0)
      store_guest_mem(vm, reply->ret);
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

/* Guest-stats values are bytes, or -1 for what the guest does not report. */
static guint64 stat_bytes(json_t *stats, const char *name)
{
  json_t *v = json_object_get(stats, name);
  return json_is_integer(v) && json_integer_value(v) > 0 ? (guint64)json_integer_value(v) : 0;
}

static void store_guest_mem(NfVm *vm, json_t *ret)
{
  json_t *stats = json_object_get(ret, "stats");
  vm->guest_mem.total = stat_bytes(stats, "stat-total-memory");
  vm->guest_mem.free = stat_bytes(stats, "stat-free-memory");
  vm->guest_mem.available = stat_bytes(stats, "stat-available-memory");
  vm->guest_mem.seq++;
}

void nf_vm_guest_mem(const NfVm *vm, NfVmGuestMem *mem)
{
  *mem = vm->guest_mem;
}
