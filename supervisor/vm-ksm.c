/*
 * vm-ksm.c: with KSM on for the fleet (ksm.h), a guest's RAM is out of
 * ksmd's reach while the guest boots and joins once it is ready.
 *
 * Why: a booting guest rewrites much of what ksmd would merge (each such
 * write a copy-on-write fault), so merging it early costs CPU when CPU is
 * what a boot storm lacks; a ready guest's pages hold still. At 100 guests
 * booting on 2 cores this was ~5 % more CPU per boot (bench/README).
 *
 * How: qemu's RAM backend has a "merge" property settable at run time; a
 * change makes qemu madvise the RAM MADV_UNMERGEABLE or MADV_MERGEABLE. qemu
 * starts with it on (and with PR_SET_MEMORY_MERGE, process.c, every mapping
 * is mergeable anyway), so once QMP is up a booting guest's is set off, and
 * on at ready. The rest of qemu's memory stays mergeable throughout. A
 * guest whose backend cannot be set (another qemu or machine) stays as qemu
 * made it, and the fleet's notice says so.
 */
#include "supervisor/vm-private.h"

/* The RAM backend that `-m` makes for the virt machine. */
#define NF_VM_RAM_PATH "/objects/mach-virt.ram"

static void merge_reply_cb(NfQmp *qmp, const NfQmpReply *reply, gpointer data);

void nf_vm_ksm_update(NfVm *vm)
{
  if (!vm->env->ksm || vm->qmp == NULL)
    return;
  NfVmKsm want = vm->ready_at ? NF_VM_KSM_JOINED : NF_VM_KSM_HELD;
  if (vm->ram_ksm == want)
    return;
  vm->ram_ksm = want;
  nf_qmp_qom_set(vm->qmp, NF_VM_RAM_PATH, "merge", json_boolean(want == NF_VM_KSM_JOINED), 0,
                 merge_reply_cb, vm);
}

static void merge_reply_cb(NfQmp *qmp, const NfQmpReply *reply, gpointer data)
{
  NfVm *vm = data;
  /* A connection that closed took the guest's run with it: nothing to say. */
  if (reply->error == NULL || vm->qmp != qmp ||
      g_error_matches(reply->error, NF_QMP_ERROR, NF_QMP_ERROR_DISCONNECTED))
    return;
  g_autofree char *why = g_strdup_printf(
      "KSM: guest %u's RAM could not be set %s (qom-set %s merge: %s); qemu's own setting holds",
      vm->id, vm->ram_ksm == NF_VM_KSM_JOINED ? "mergeable" : "aside while it boots",
      NF_VM_RAM_PATH, reply->error->message);
  if (vm->cb.notice)
    vm->cb.notice(vm, why, vm->user_data);
}
