/*
 * fleet-host.c: what a fleet sets up on the host for its guests, beyond
 * dirs and lock: KSM tuned for its guests (--ksm, ksm.h), the --net tap
 * bridge (tap.h), user networking's port plan (net.h) and the --ready http
 * listener (ready-http.h). Each lands in fleet->env, where the guests find
 * it; nf_fleet_free (fleet.c) gives it all back. Kept apart from fleet.c
 * because these are host resources with their own failure modes, not the
 * fleet's bookkeeping.
 */
#include "supervisor/fleet-private.h"

#include "supervisor/net.h"
#include "supervisor/tap.h"

static gboolean ready_http_cb(const char *serial, gpointer data);

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
    fleet->ksm =
        nf_ksm_acquire(fleet->paths.runtime_dir,
                       nf_ksm_scan_pages(0, config->memory_mib + NF_KSM_QEMU_MIB), &ksm_error);
    if (fleet->ksm == NULL && config->ksm == NF_KSM_ON) {
      g_propagate_error(error, g_steal_pointer(&ksm_error));
      return FALSE;
    }
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
  return TRUE;
}

/* ksmd's pace follows the guests that have a qemu, not the fleet's size: paced
 * for all of a 100-guest fleet from the start, it went over the first guests
 * of a storm several times a second, merging pages the booting guests then
 * wrote to again, and took ~3 % of the host's CPU from the boots (now
 * ~2.3 %; bench/README.md, "eighth pass"). A change within a tenth of the last size
 * is not worth the books' lock and two writes, except to land exactly on the
 * fleet's size once it is all up. */
void nf_fleet_ksm_follow(NfFleet *fleet)
{
  if (fleet->ksm == NULL || fleet->stopping)
    return;
  guint up = 0;
  for (NfVmState s = 0; s < NF_VM_N_STATES; s++)
    if (nf_fleet_state_has_qemu(s))
      up += fleet->per_state[s];
  guint size = fleet->vms->len - g_hash_table_size(fleet->retiring);
  guint last = fleet->ksm_guests;
  gboolean near = (guint64)up * 10 < (guint64)last * 11 && (guint64)up * 11 > (guint64)last * 10;
  if (up == last || (near && up != size))
    return;
  fleet->ksm_guests = up;
  nf_ksm_set_rate(fleet->ksm, nf_ksm_scan_pages(up, fleet->config->memory_mib + NF_KSM_QEMU_MIB));
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
