/*
 * fleet-query.c: what a fleet tells about itself without changing anything:
 * a guest by id, the counts per state, its size, paths, name, config and
 * host pieces. Every function here only reads fleet fields; the fleet's
 * bookkeeping (fleet.c) is what keeps them true.
 */
#include "supervisor/fleet-private.h"

#include "supervisor/disks.h"
#include "supervisor/health.h"
#include "supervisor/limiter.h"
#include "supervisor/tap.h"

NfVm *nf_fleet_find_vm(const NfFleet *fleet, guint id)
{
  /* Ids are contiguous from id_offset + 1 in array order (scale inserts
   * new ids before the guests still stopping and retires the highest), so
   * this is a direct index; called per runtime file
   * at start and per TARGET id, a scan would be quadratic at thousands. */
  guint i = id - fleet->config->id_offset - 1;
  if (id > fleet->config->id_offset && i < fleet->vms->len) {
    NfVm *vm = g_ptr_array_index(fleet->vms, i);
    if (nf_vm_id(vm) == id)
      return g_hash_table_contains(fleet->retiring, vm) ? NULL : vm;
  }
  for (i = 0; i < fleet->vms->len; i++) {
    NfVm *vm = g_ptr_array_index(fleet->vms, i);
    if (nf_vm_id(vm) == id && !g_hash_table_contains(fleet->retiring, vm))
      return vm;
  }
  return NULL;
}

const NfUbootEnv *nf_fleet_vm_firmware_env(NfFleet *fleet, NfVm *vm)
{
  return fleet->env.disks ? nf_disks_env(fleet->env.disks, nf_vm_id(vm)) : NULL;
}

void nf_fleet_counts(const NfFleet *fleet, NfFleetCounts *c)
{
  const guint *s = fleet->per_state;
  *c = (NfFleetCounts){
      .total = fleet->vms->len,
      .queued = s[NF_VM_QUEUED] + s[NF_VM_CREATED],
      .booting = s[NF_VM_STARTING] + s[NF_VM_BOOTING],
      .ready = s[NF_VM_READY],
      .unhealthy = s[NF_VM_UNHEALTHY],
      .stopping = s[NF_VM_STOPPING],
      .stopped = s[NF_VM_STOPPED],
      .backoff = s[NF_VM_BACKOFF],
      .failed = s[NF_VM_FAILED],
      .started = fleet->started,
  };
}

guint nf_fleet_size(const NfFleet *fleet)
{
  return fleet->vms->len;
}
NfVm *nf_fleet_vm(const NfFleet *fleet, guint index)
{
  return index < fleet->vms->len ? g_ptr_array_index(fleet->vms, index) : NULL;
}
guint nf_fleet_batch(const NfFleet *fleet)
{
  return nf_limiter_batch(fleet->limiter);
}
guint nf_fleet_health_interval(const NfFleet *fleet)
{
  return fleet->env.health ? nf_health_wheel_interval(fleet->env.health) : 0;
}
NfAccel nf_fleet_accel(const NfFleet *fleet)
{
  return fleet->env.accel;
}
const char *nf_fleet_runtime_dir(const NfFleet *fleet)
{
  return fleet->paths.runtime_dir;
}
const char *nf_fleet_state_dir(const NfFleet *fleet)
{
  return fleet->paths.state_dir;
}
const char *nf_fleet_name(const NfFleet *fleet)
{
  return fleet->config->name;
}
const struct NfNet *nf_fleet_net(const NfFleet *fleet)
{
  return fleet->env.net;
}

char *nf_fleet_guest_ip(const NfFleet *fleet, guint id)
{
  if (fleet->env.tap == NULL || id <= fleet->config->id_offset)
    return NULL;
  return nf_tap_guest_addr(fleet->env.tap, id - fleet->config->id_offset);
}

const NfFleetConfig *nf_fleet_config(const NfFleet *fleet)
{
  return fleet->config;
}
const char *nf_fleet_qemu_path(const NfFleet *fleet)
{
  return fleet->env.qemu_path;
}
gboolean nf_fleet_ksm_active(const NfFleet *fleet)
{
  return fleet->ksm != NULL;
}
