/*
 * fleet-host.c: what a fleet sets up on the host for its guests, beyond
 * dirs and lock: KSM tuned for its guests (--ksm, ksm.h) and paced for those
 * up (ksm-pace.h), the --net tap bridge (tap.h), user networking's port plan
 * (net.h), the --ready http listener (ready-http.h), and, with health
 * probes off, the timer that keeps guests' console logs under --log-max on
 * the host's disk (the probes' slow check does it otherwise). Each lands in
 * fleet->env, where the guests find it; nf_fleet_free (fleet.c) gives it all
 * back. Kept apart from fleet.c because these are host resources with their
 * own failure modes, not the fleet's bookkeeping.
 */
#include "supervisor/fleet-private.h"

#include "supervisor/net.h"
#include "supervisor/tap.h"

static gboolean ready_http_cb(const char *serial, gpointer data);
static void ksm_apply(NfFleet *fleet);
static gboolean ksm_tick_cb(gpointer data);
static gboolean log_cap_cb(gpointer data);

/* How often ksmd's counters are read for the pace (a full scan takes ~10 s
 * at the fast pace). */
#define NF_FLEET_KSM_TICK_S 5

gboolean nf_fleet_host_setup(NfFleet *fleet, GError **error)
{
  const NfFleetConfig *config = fleet->config;
  /* A supervisor of this or another fleet that died with KSM on left the
   * host tuned: put it back unless a live fleet still uses it. */
  nf_ksm_recover(fleet->paths.runtime_dir);
  /* Restored guests hold identical pages, which is what KSM merges best:
   * --ksm auto turns it on for a snapshot fleet of any size. */
  if (nf_ksm_wanted(config->ksm, config->snapshot ? MAX(config->count, NF_KSM_AUTO_MIN_GUESTS)
                                                  : config->count)) {
    g_autoptr(GError) ksm_error = NULL;
    /* No guest is up yet: the least pace, raised as they come (below). */
    nf_ksm_pace_set_fast(&fleet->ksm_pace,
                         nf_ksm_scan_pages(0, config->memory_mib + NF_KSM_QEMU_MIB));
    fleet->ksm_applied = nf_ksm_pace_pages(&fleet->ksm_pace);
    fleet->ksm = nf_ksm_acquire(fleet->paths.runtime_dir, fleet->ksm_applied, &ksm_error);
    if (fleet->ksm == NULL && config->ksm == NF_KSM_ON) {
      g_propagate_error(error, g_steal_pointer(&ksm_error));
      return FALSE;
    }
    if (fleet->ksm)
      fleet->ksm_timer = g_timeout_add_seconds(NF_FLEET_KSM_TICK_S, ksm_tick_cb, fleet);
  }
  fleet->env.ksm = fleet->ksm != NULL;
  const char *host_addr = NULL; /* the host as guests see it; NULL: slirp's */
  if (config->net == NF_NET_TAP) {
    fleet->env.tap = nf_tap_new(fleet->paths.runtime_dir, error);
    if (fleet->env.tap == NULL)
      return FALSE;
    host_addr = nf_tap_host_addr(fleet->env.tap);
  }
  if (config->net != NF_NET_NONE || config->server) {
    fleet->env.net = nf_net_new(config, fleet->paths.runtime_dir, host_addr, error);
    if (fleet->env.net == NULL)
      return FALSE;
  }
  if (config->ready_http) {
    fleet->ready_http = nf_ready_http_new(host_addr, host_addr, ready_http_cb, fleet, error);
    if (fleet->ready_http == NULL)
      return FALSE;
    fleet->env.ready_url = nf_ready_http_guest_url(fleet->ready_http);
  }
  if (config->health_interval_ms == 0) {
    guint ms = config->slow_check_ms ? config->slow_check_ms : NF_VM_SLOW_CHECK_US / 1000;
    fleet->log_cap_timer = g_timeout_add(ms, log_cap_cb, fleet);
  }
  return TRUE;
}

/* --health-interval 0: no probe looks at the guests' logs, which qemu
 * appends to for as long as a guest runs. A stat per guest whose log was
 * written to since the last look (vm-console.c). */
static gboolean log_cap_cb(gpointer data)
{
  NfFleet *fleet = data;
  for (guint i = 0; i < fleet->vms->len; i++) {
    NfVm *vm = g_ptr_array_index(fleet->vms, i);
    if (nf_vm_is_running(vm))
      nf_vm_console_cap_log(vm);
  }
  return G_SOURCE_CONTINUE;
}

/* ksmd's fast pace follows the guests that have a qemu, not the fleet's
 * size: paced for all of a 100-guest fleet from the start, it went over the
 * first guests of a storm several times a second, merging pages the booting
 * guests then wrote to again, and took ~3 % of the host's CPU from the boots
 * (bench/README.md, "eighth pass"). A change within a tenth of the last size
 * keeps the pace (not worth the books' lock and two writes per guest),
 * except to land exactly on the fleet's size once it is all up. A guest that
 * came up is new memory: fast again (ksm-pace.h). */
void nf_fleet_ksm_follow(NfFleet *fleet, gboolean came_up)
{
  if (fleet->ksm == NULL || fleet->stopping)
    return;
  if (came_up)
    nf_ksm_pace_wake(&fleet->ksm_pace);
  guint up = 0;
  for (NfVmState s = 0; s < NF_VM_N_STATES; s++)
    if (nf_fleet_state_has_qemu(s))
      up += fleet->per_state[s];
  guint size = fleet->vms->len - g_hash_table_size(fleet->retiring);
  guint last = fleet->ksm_guests;
  gboolean near = (guint64)up * 10 < (guint64)last * 11 && (guint64)up * 11 > (guint64)last * 10;
  if (up != last && (!near || up == size)) {
    fleet->ksm_guests = up;
    nf_ksm_pace_set_fast(&fleet->ksm_pace,
                         nf_ksm_scan_pages(up, fleet->config->memory_mib + NF_KSM_QEMU_MIB));
  }
  ksm_apply(fleet);
}

/* The books' lock and two writes, only when the pace asked for changes. */
static void ksm_apply(NfFleet *fleet)
{
  guint pages = nf_ksm_pace_pages(&fleet->ksm_pace);
  if (pages == fleet->ksm_applied)
    return;
  fleet->ksm_applied = pages;
  nf_ksm_set_rate(fleet->ksm, pages);
}

/* After each of ksmd's full scans: slower if it merged (next to) nothing. */
static gboolean ksm_tick_cb(gpointer data)
{
  NfFleet *fleet = data;
  NfKsmState ks;
  nf_ksm_read_state(&ks);
  if (ks.present &&
      nf_ksm_pace_observe(&fleet->ksm_pace, ks.full_scans, ks.pages_sharing + ks.zero_pages))
    ksm_apply(fleet);
  return G_SOURCE_CONTINUE;
}

/* --ready http: a guest's request names its serial. A linear search: one
 * request per guest boot. */
static gboolean ready_http_cb(const char *serial, gpointer data)
{
  NfFleet *fleet = data;
  for (guint i = 0; i < fleet->vms->len; i++) {
    NfVm *vm = g_ptr_array_index(fleet->vms, i);
    if (g_strcmp0(nf_vm_serial(vm), serial) == 0) {
      nf_vm_report_ready(vm, "http");
      return TRUE;
    }
  }
  return FALSE;
}
