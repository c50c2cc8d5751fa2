/*
 * vm-net.c: a guest's networking for one spawn: its forwarded ports
 * (user networking, net.h), checked free before qemu is started, and with
 * --net tap a fresh tap and the guest's address (tap.h). Apart from vm.c's
 * spawn because it is the one step that asks the host for resources of its
 * own, whose failures name the network option to change.
 */
#include "supervisor/vm-private.h"

#include "supervisor/net.h"
#include "supervisor/tap.h"

/* Networking of one spawn (see net.h, tap.h): the forwarded ports, checked
 * free; with --net tap a new tap (*tap_fd, for qemu) and the guest's
 * "ADDR,GATEWAY" (*ip, caller frees). */
gboolean nf_vm_prepare_net(NfVm *vm, NfNetForward *forwards, guint *n_forwards, int *tap_fd,
                           char **ip, GError **error)
{
  if (vm->env->net) {
    if (!nf_net_check_guest(vm->env->net, vm->id, error))
      return FALSE;
    *n_forwards = nf_net_forwards(vm->env->net, vm->id, forwards);
  }
  if (vm->env->tap) {
    g_autofree char *addr = nf_tap_guest_addr(vm->env->tap, vm->id - vm->env->config->id_offset);
    if (addr == NULL) {
      g_set_error(error, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                  "--net tap: no address left for guest %u in the fleet's /16", vm->id);
      return FALSE;
    }
    if ((*tap_fd = nf_tap_open(vm->env->tap, error)) < 0)
      return FALSE;
    *ip = g_strdup_printf("%s,%s", addr, nf_tap_host_addr(vm->env->tap));
  }
  return TRUE;
}
