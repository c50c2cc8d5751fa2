/*
 * command-guests.c: the commands that act on a set of guests named by a
 * TARGET: `start`, `stop`, `kill`, `restart` and `reflash` (a factory reset
 * of the guest's disk overlay, then a start). Each answers with the ids it
 * acted on, at once, or with `wait` once they are all ready (start,
 * restart, reflash) or down (stop, kill), through a wait (command-wait.c).
 *
 * `reflash` checks the fleet's base image before touching any guest: a
 * guest stopped for a reset that cannot happen would be a healthy device
 * lost for nothing.
 */
#include "supervisor/command-private.h"

#include <errno.h>
#include <sys/stat.h>
#include <glib/gstdio.h>

typedef enum {
  ACT_START,
  ACT_STOP,
  ACT_KILL,
  ACT_RESTART,
  ACT_REFLASH,
} Action;

static void act_on_targets(NfCommandReply *r, json_t *args, Action what);
static gboolean base_usable(NfFleet *fleet, GError **error);

/* Whether the fleet's base image (if it has one) is still there and
 * readable, so that a reflash can work. The error says what is wrong and
 * that nothing was done. */
static gboolean base_usable(NfFleet *fleet, GError **error)
{
  const char *base = nf_fleet_config(fleet)->disk;
  if (!base)
    return TRUE; /* no disks: nf_fleet_reflash_vm() says so */
  GStatBuf st;
  int e = 0;
  if (g_stat(base, &st) < 0)
    e = errno;
  else if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
    e = EINVAL;
  else if (g_access(base, R_OK) < 0)
    e = errno;
  if (e) {
    g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(e),
                "cannot reflash: the fleet's base image %s %s; no guest was touched (put the "
                "base back, then reflash again)",
                base, e == EINVAL ? "is not a regular file" : g_strerror(e));
    return FALSE;
  }
  return TRUE;
}

static void act_on_targets(NfCommandReply *r, json_t *args, Action what)
{
  g_autoptr(GPtrArray) vms = nf_command_arg_targets(r, args, NULL);
  gboolean wait;
  if (!vms || !nf_command_arg_bool(r, args, "wait", FALSE, &wait))
    return;
  guint64 timeout_ms;
  if (!nf_command_arg_uint(r, args, "timeout_ms", FALSE, 0, G_MAXUINT, &timeout_ms))
    return;
  NfFleet *fleet = nf_command_reply_fleet(r);
  if (what == ACT_REFLASH) {
    g_autoptr(GError) error = NULL;
    if (!base_usable(fleet, &error)) {
      nf_command_reply_error(r, "failed", NULL, "%s", error->message);
      return;
    }
  }
  gboolean down = what == ACT_STOP || what == ACT_KILL;
  /* A reflashed guest is stopped and started too: `wait` means ready again. */
  gboolean fresh = what == ACT_REFLASH || what == ACT_RESTART;
  NfCommandWait *w =
      wait ? nf_command_wait_new(r, down ? NF_COMMAND_UNTIL_DOWN : NF_COMMAND_UNTIL_READY,
                                 json_pack("{s:o}", "guests", nf_command_ids_json(vms)))
           : NULL;
  for (guint i = 0; i < vms->len; i++) {
    NfVm *vm = vms->pdata[i];
    if (w)
      nf_command_wait_add(w, nf_vm_id(vm), fresh);
    switch (what) {
    case ACT_START: {
      NfVmState s = nf_vm_state(vm);
      if (s == NF_VM_CREATED || s == NF_VM_STOPPED || s == NF_VM_FAILED || s == NF_VM_BACKOFF)
        nf_fleet_start_vm(fleet, vm);
      break;
    }
    case ACT_STOP:
    case ACT_KILL:
      nf_fleet_stop_vm(fleet, vm, what == ACT_KILL);
      break;
    case ACT_RESTART:
      nf_fleet_restart_vm(fleet, vm);
      break;
    case ACT_REFLASH: {
      g_autoptr(GError) error = NULL;
      if (!nf_fleet_reflash_vm(fleet, vm, &error)) {
        /* Only a fleet without disks refuses, and then it refuses its
         * first guest: nothing was done, so one error says it all. */
        if (w)
          nf_command_wait_free(w);
        nf_command_reply_error(r, "unsupported", NULL, "%s", error->message);
        return;
      }
      break;
    }
    }
  }
  if (w)
    nf_command_wait_arm(w, timeout_ms);
  else
    nf_command_reply_ok(r, json_pack("{s:o}", "guests", nf_command_ids_json(vms)));
}

void nf_command_start(NfCommandReply *r, json_t *args)
{
  act_on_targets(r, args, ACT_START);
}

void nf_command_stop(NfCommandReply *r, json_t *args)
{
  act_on_targets(r, args, ACT_STOP);
}

void nf_command_kill(NfCommandReply *r, json_t *args)
{
  act_on_targets(r, args, ACT_KILL);
}

void nf_command_restart(NfCommandReply *r, json_t *args)
{
  act_on_targets(r, args, ACT_RESTART);
}

void nf_command_reflash(NfCommandReply *r, json_t *args)
{
  act_on_targets(r, args, ACT_REFLASH);
}
