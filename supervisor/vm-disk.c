/*
 * vm-disk.c: a guest's wait for its disk before qemu starts (see spawn in
 * lifecycle.c). Making or reflashing an overlay runs qemu-img and, for
 * Nerves, qemu-io: tens to hundreds of ms that the supervisor's loop must
 * not spend blocked, so the guest asks disks.c for its overlay and waits in
 * STARTING until NF_VM_EV_DISK_READY (the error, if any, in disk_error).
 */
#include "supervisor/disks.h"
#include "supervisor/vm-private.h"

static void disk_done_cb(const GError *error, gpointer data);

static void disk_done_cb(const GError *error, gpointer data)
{
  NfVm *vm = data;
  vm->disk_job = NULL;
  g_clear_error(&vm->disk_error);
  if (error)
    vm->disk_error = g_error_copy(error);
  nf_vm_dispatch(vm, NF_VM_EV_DISK_READY, NULL);
}

gboolean nf_vm_disk_prepare(NfVm *vm, const char **what)
{
  if (vm->env->disks == NULL)
    return FALSE;
  gboolean reflash = vm->reflash_pending;
  vm->reflash_pending = FALSE;
  vm->disk_job_reflash = reflash;
  /* qemu-img and qemu-io run as children: the loop keeps serving the fleet. */
  vm->disk_job = nf_disks_ensure_async(vm->env->disks, vm->id, reflash, disk_done_cb, vm);
  *what = reflash ? "reflashing its disk" : "making its disk";
  return vm->disk_job != NULL;
}

void nf_vm_disk_cancel(NfVm *vm)
{
  if (vm->disk_job && nf_disks_cancel(g_steal_pointer(&vm->disk_job)) && vm->disk_job_reflash)
    vm->reflash_pending = TRUE;
}
