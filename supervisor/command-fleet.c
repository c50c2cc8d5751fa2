/*
 * command-fleet.c: the commands about the fleet as a whole: `hello` (who
 * answers, where its files are), `scale` and `down` (`ps` has its own
 * file, command-ps.c). See control-protocol.md for the documents.
 */
#include "supervisor/command-private.h"

#include <unistd.h>

#include "supervisor/control.h"

static gint cmp_uint(gconstpointer a, gconstpointer b);

static gint cmp_uint(gconstpointer a, gconstpointer b)
{
  guint x = *(const guint *)a, y = *(const guint *)b;
  return x < y ? -1 : x > y;
}

void nf_command_hello(NfCommandReply *r, json_t *args)
{
  NfFleet *fleet = nf_command_reply_fleet(r);
  g_autofree char *socket =
      g_build_filename(nf_fleet_runtime_dir(fleet), NF_CONTROL_SOCKET_NAME, NULL);
  nf_command_reply_ok(r, json_pack("{s:i, s:s, s:i, s:I, s:s, s:s, s:s}", "protocol",
                                   NF_CONTROL_PROTOCOL, "fleet", nf_fleet_name(fleet), "pid",
                                   (int)getpid(), "count", (json_int_t)nf_fleet_size(fleet),
                                   "runtime_dir", nf_fleet_runtime_dir(fleet), "state_dir",
                                   nf_fleet_state_dir(fleet), "socket", socket));
}

/* --- scale ------------------------------------------------------------------------ */

void nf_command_scale(NfCommandReply *r, json_t *args)
{
  guint64 count, timeout_ms;
  gboolean wait;
  if (!nf_command_arg_uint(r, args, "count", TRUE, 0, 100000, &count) ||
      !nf_command_arg_bool(r, args, "wait", FALSE, &wait) ||
      !nf_command_arg_uint(r, args, "timeout_ms", FALSE, 0, G_MAXUINT, &timeout_ms))
    return;
  if (count == 0) {
    nf_command_reply_error(r, "bad_args", NULL,
                           "args.count must be an integer from 1 to 100000 (a fleet keeps at "
                           "least one guest; `down` stops it)");
    return;
  }
  NfFleet *fleet = nf_command_reply_fleet(r);
  guint before = nf_fleet_size(fleet);
  g_autoptr(GHashTable) old_ids = g_hash_table_new(g_direct_hash, g_direct_equal);
  g_autoptr(GArray) sorted = g_array_new(FALSE, FALSE, sizeof(guint));
  for (guint i = 0; i < before; i++) {
    guint vid = nf_vm_id(nf_fleet_vm(fleet, i));
    g_hash_table_add(old_ids, GUINT_TO_POINTER(vid));
    g_array_append_val(sorted, vid);
  }
  g_autoptr(GError) error = NULL;
  if (!nf_fleet_scale(fleet, (guint)count, &error)) {
    nf_command_reply_error(r, "failed", NULL, "%s", error->message);
    return;
  }
  json_t *result =
      json_pack("{s:I, s:I}", "previous", (json_int_t)before, "count", (json_int_t)count);
  if (!wait) {
    nf_command_reply_ok(r, result);
    return;
  }
  NfCommandWait *w = nf_command_wait_new(
      r, count < before ? NF_COMMAND_UNTIL_DOWN : NF_COMMAND_UNTIL_READY, result);
  if (count < before) {
    /* The highest ids go: wait until each is down (or already freed). */
    g_array_sort(sorted, cmp_uint);
    for (guint i = (guint)count; i < before; i++)
      nf_command_wait_add(w, g_array_index(sorted, guint, i), FALSE);
  } else {
    for (guint i = 0; i < nf_fleet_size(fleet); i++) {
      guint vid = nf_vm_id(nf_fleet_vm(fleet, i));
      if (!g_hash_table_contains(old_ids, GUINT_TO_POINTER(vid)))
        nf_command_wait_add(w, vid, FALSE);
    }
  }
  nf_command_wait_arm(w, timeout_ms);
}

/* --- down ---------------------------------------------------------------------------- */

void nf_command_down(NfCommandReply *r, json_t *args)
{
  gboolean force;
  if (!nf_command_arg_bool(r, args, "force", FALSE, &force))
    return;
  NfCommands *cmds = nf_command_reply_commands(r);
  if (!cmds->hooks.down) {
    nf_command_reply_error(r, "unsupported", NULL, "this supervisor cannot be stopped remotely");
    return;
  }
  NfCommandPeer *peer = nf_command_reply_peer(r);
  nf_command_log(cmds, "stop asked over the %s (pid %d)%s", peer->transport->name, (int)peer->pid,
                 force ? ", killing" : "");
  /* The connection stays open: the client sees EOF when the supervisor is gone. */
  nf_command_reply_ok(r, json_pack("{s:i}", "pid", (int)getpid()));
  cmds->hooks.down(force, cmds->hooks_data);
}
