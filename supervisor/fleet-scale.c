/*
 * fleet-scale.c: changing a running fleet's size (nf_fleet_scale). New
 * guests take the next ids and queue like any other; the highest ids retire:
 * stopped in an orderly way, then freed from an idle once down
 * (nf_fleet_retire_cb), never while a callback of theirs may still run.
 * Apart from fleet.c because scaling has its own checks (id reuse while a
 * guest of that id is still stopping, socket path length, open files).
 */
#include "supervisor/fleet-private.h"

gboolean nf_fleet_scale(NfFleet *fleet, guint count, GError **error)
{
  if (count == 0 || count > 100000) {
    g_set_error(error, NF_FLEET_ERROR, NF_FLEET_ERROR_INPUT, "%u guests is out of range (1-100000)",
                count);
    return FALSE;
  }
  if (fleet->stopping) {
    g_set_error(error, NF_FLEET_ERROR, NF_FLEET_ERROR_INPUT, "the fleet is stopping");
    return FALSE;
  }
  guint live = fleet->vms->len - g_hash_table_size(fleet->retiring);
  if (count > live && !nf_fleet_ensure_fd_limit(fleet, fleet->vms->len + (count - live), error))
    return FALSE;
  if (count > live) {
    guint last = fleet->config->id_offset + live;
    g_autofree char *longest =
        nf_paths_guest_runtime(&fleet->paths, last + (count - live), "serial");
    if (!nf_paths_check_socket(longest, error))
      return FALSE;
    /* A guest of these ids still stopping (scaled away, or a stray) would
     * share its files (sockets, pid file) with the new one. */
    for (guint id = last + 1; id <= last + (count - live); id++) {
      NfVm *old = NULL;
      for (guint i = live; i < fleet->vms->len && !old; i++)
        if (nf_vm_id(g_ptr_array_index(fleet->vms, i)) == id)
          old = g_ptr_array_index(fleet->vms, i);
      if (old || (fleet->strays && nf_stray_guests_running(fleet->strays, id))) {
        g_autofree char *name = nf_paths_guest_name(id);
        g_set_error(error, NF_FLEET_ERROR, NF_FLEET_ERROR_INPUT,
                    "scale: %s is still stopping; try again once it is down", name);
        return FALSE;
      }
    }
    /* Before the retiring ones: the array stays in id order with those
     * last, which the check above and a later scale down rely on. */
    guint at = live;
    for (guint id = last + 1; id <= last + (count - live); id++) {
      NfVm *vm = nf_vm_new(id, &fleet->env, &nf_fleet_vm_callbacks, fleet);
      g_ptr_array_insert(fleet->vms, (gint)at++, vm);
      fleet->per_state[NF_VM_CREATED]++;
      nf_vm_queue(vm);
    }
  } else {
    /* The highest ids go: the vms array is in id order, retiring ones last. */
    guint to_retire = live - count;
    for (guint i = fleet->vms->len; i-- > 0 && to_retire > 0;) {
      NfVm *vm = g_ptr_array_index(fleet->vms, i);
      if (g_hash_table_contains(fleet->retiring, vm))
        continue;
      g_hash_table_add(fleet->retiring, vm);
      to_retire--;
      nf_vm_stop(vm, FALSE);
      if (!nf_vm_is_running(vm) && fleet->retire_idle == 0)
        fleet->retire_idle = g_idle_add(nf_fleet_retire_cb, fleet);
    }
  }
  return TRUE;
}

gboolean nf_fleet_retire_cb(gpointer data)
{
  NfFleet *fleet = data;
  fleet->retire_idle = 0;
  for (guint i = fleet->vms->len; i-- > 0;) {
    NfVm *vm = g_ptr_array_index(fleet->vms, i);
    if (g_hash_table_contains(fleet->retiring, vm) && !nf_vm_is_running(vm)) {
      g_hash_table_remove(fleet->retiring, vm);
      nf_limiter_remove(fleet->limiter, vm);
      fleet->per_state[nf_vm_state(vm)]--;
      /* Out of the array first: its watchers, told as it is freed, must
       * not find it by id any more. */
      nf_vm_free(g_ptr_array_steal_index(fleet->vms, i));
    }
  }
  return G_SOURCE_REMOVE;
}
