/*
 * command-wait.c: answers that wait for guests (see command-private.h):
 * the `wait` command, and `start`/`stop`/`restart`/`scale`... with `wait`.
 * A wait holds the request's reply and a set of guest ids not there yet; it
 * answers ok when the set is empty, "failed" as soon as a guest cannot get
 * there (naming it, its last exit and console), "timeout" at its deadline.
 *
 * Waits are evaluated from an idle after guest changes, not inside the
 * change: a guest passing through STOPPED on its way back up (restart) is
 * seen where it settled, not mid-way. A wait whose peer went away is
 * dropped at its next evaluation.
 */
#include "supervisor/command-private.h"

#include <string.h>

#define FAIL_TAIL_BYTES 1500

struct NfCommandWait {
  NfCommands *cmds;
  NfCommandReply *reply; /* ref */
  NfCommandUntil until;
  GHashTable *pending; /* ids not there yet */
  GHashTable *fresh;   /* ids that must become READY anew (restart) */
  json_t *result;      /* the answer on success (owned) */
  guint timer;
};

static gboolean wait_timeout_cb(gpointer data);
static GHashTable *guests_by_id(NfFleet *fleet);
static NfVm *wait_find(NfCommandWait *w, GHashTable *all, guint vm_id);
static gboolean eval_idle_cb(gpointer data);
static void waits_evaluate(NfCommands *cmds);

void nf_command_wait(NfCommandReply *r, json_t *args)
{
  g_autoptr(GPtrArray) vms = nf_command_arg_targets(r, args, "all");
  const char *until;
  guint64 timeout_ms;
  if (!vms || !nf_command_arg_string(r, args, "until", "ready", &until) ||
      !nf_command_arg_uint(r, args, "timeout_ms", FALSE, 0, G_MAXUINT, &timeout_ms))
    return;
  NfCommandUntil u;
  if (strcmp(until, "ready") == 0)
    u = NF_COMMAND_UNTIL_READY;
  else if (strcmp(until, "down") == 0)
    u = NF_COMMAND_UNTIL_DOWN;
  else {
    nf_command_reply_error(r, "bad_args", NULL, "args.until must be \"ready\" or \"down\"");
    return;
  }
  NfCommandWait *w =
      nf_command_wait_new(r, u, json_pack("{s:o}", "guests", nf_command_ids_json(vms)));
  for (guint i = 0; i < vms->len; i++)
    nf_command_wait_add(w, nf_vm_id(vms->pdata[i]), FALSE);
  nf_command_wait_arm(w, timeout_ms);
}

NfCommandWait *nf_command_wait_new(NfCommandReply *r, NfCommandUntil until, json_t *result)
{
  NfCommandWait *w = g_new0(NfCommandWait, 1);
  w->cmds = nf_command_reply_commands(r);
  w->reply = nf_command_reply_ref(r);
  w->until = until;
  w->pending = g_hash_table_new(g_direct_hash, g_direct_equal);
  w->fresh = g_hash_table_new(g_direct_hash, g_direct_equal);
  w->result = result;
  return w;
}

void nf_command_wait_add(NfCommandWait *w, guint vm_id, gboolean fresh)
{
  g_hash_table_add(w->pending, GUINT_TO_POINTER(vm_id));
  if (fresh)
    g_hash_table_add(w->fresh, GUINT_TO_POINTER(vm_id));
}

void nf_command_wait_arm(NfCommandWait *w, guint64 timeout_ms)
{
  NfCommands *cmds = w->cmds;
  cmds->waits = g_list_append(cmds->waits, w);
  if (timeout_ms)
    w->timer = g_timeout_add((guint)MIN(timeout_ms, G_MAXUINT), wait_timeout_cb, w);
  if (!cmds->eval_src)
    cmds->eval_src = g_idle_add(eval_idle_cb, cmds);
}

void nf_command_wait_free(NfCommandWait *w)
{
  w->cmds->waits = g_list_remove(w->cmds->waits, w);
  if (w->timer)
    g_source_remove(w->timer);
  nf_command_reply_unref(w->reply);
  json_decref(w->result);
  g_hash_table_unref(w->pending);
  g_hash_table_unref(w->fresh);
  g_free(w);
}

void nf_command_waits_free_all(NfCommands *cmds)
{
  while (cmds->waits)
    nf_command_wait_free(cmds->waits->data);
}

json_t *nf_command_guest_problem(NfVm *vm, guint vm_id, const char *why)
{
  if (!vm)
    return json_pack("{s:I, s:s}", "id", (json_int_t)vm_id, "problem", why);
  g_autofree char *tail = nf_commands_console_tail(vm, FAIL_TAIL_BYTES);
  json_t *p = json_pack("{s:I, s:s, s:s?, s:s, s:s}", "id", (json_int_t)vm_id, "name",
                        nf_vm_name(vm), "serial", nf_vm_serial(vm), "state",
                        nf_vm_state_name(nf_vm_state(vm)), "problem", why);
  if (nf_vm_exit_kind(vm) != NF_EXIT_NONE) {
    json_object_set_new(p, "exit", json_string(nf_exit_kind_name(nf_vm_exit_kind(vm))));
    if (nf_vm_exit_reason(vm))
      json_object_set_new(p, "reason", json_string(nf_vm_exit_reason(vm)));
  }
  json_object_set_new(p, "console_tail", json_string(tail));
  return p;
}

/* Every guest of the fleet by id, those being removed by a scale-down
 * included: nf_fleet_find_vm() hides them, but they are not down yet. */
static GHashTable *guests_by_id(NfFleet *fleet)
{
  GHashTable *all = g_hash_table_new(g_direct_hash, g_direct_equal);
  for (guint i = 0; i < nf_fleet_size(fleet); i++) {
    NfVm *vm = nf_fleet_vm(fleet, i);
    g_hash_table_insert(all, GUINT_TO_POINTER(nf_vm_id(vm)), vm);
  }
  return all;
}

/* The guest a wait is about: for "down", any guest still there (being
 * removed counts as there until it is down); for "ready", only guests that
 * stay in the fleet. NULL when gone. */
static NfVm *wait_find(NfCommandWait *w, GHashTable *all, guint vm_id)
{
  if (w->until == NF_COMMAND_UNTIL_DOWN)
    return g_hash_table_lookup(all, GUINT_TO_POINTER(vm_id));
  return nf_fleet_find_vm(w->cmds->fleet, vm_id);
}

static gboolean wait_timeout_cb(gpointer data)
{
  NfCommandWait *w = data;
  w->timer = 0;
  json_t *details = json_array();
  g_autoptr(GString) names = g_string_new(NULL);
  GHashTableIter it;
  gpointer key;
  g_autoptr(GHashTable) all = guests_by_id(w->cmds->fleet);
  g_hash_table_iter_init(&it, w->pending);
  while (g_hash_table_iter_next(&it, &key, NULL)) {
    NfVm *vm = wait_find(w, all, GPOINTER_TO_UINT(key));
    json_array_append_new(details, nf_command_guest_problem(vm, GPOINTER_TO_UINT(key), "timeout"));
    if (names->len < 200)
      g_string_append_printf(names, "%s%s", names->len ? ", " : "",
                             vm ? nf_vm_name(vm) : "(removed)");
  }
  guint n = g_hash_table_size(w->pending);
  nf_command_reply_error(w->reply, "timeout", details, "timed out waiting for %u guest%s: %s", n,
                         n == 1 ? "" : "s", names->str);
  nf_command_wait_free(w);
  return G_SOURCE_REMOVE;
}

void nf_command_waits_changed(NfCommands *cmds, NfVm *vm, NfVmState new_state)
{
  if (!cmds->waits)
    return;
  if (new_state == NF_VM_READY)
    for (GList *l = cmds->waits; l; l = l->next)
      g_hash_table_remove(((NfCommandWait *)l->data)->fresh, GUINT_TO_POINTER(nf_vm_id(vm)));
  if (!cmds->eval_src)
    cmds->eval_src = g_idle_add(eval_idle_cb, cmds);
}

static gboolean eval_idle_cb(gpointer data)
{
  NfCommands *cmds = data;
  cmds->eval_src = 0;
  waits_evaluate(cmds);
  return G_SOURCE_REMOVE;
}

static void waits_evaluate(NfCommands *cmds)
{
  /* One O(guests) index per evaluation, not a scan per pending id. */
  g_autoptr(GHashTable) all = guests_by_id(cmds->fleet);
  GList *copy = g_list_copy(cmds->waits);
  for (GList *l = copy; l; l = l->next) {
    NfCommandWait *w = l->data;
    if (nf_command_reply_gone(w->reply)) {
      nf_command_wait_free(w);
      continue;
    }
    json_t *failed = json_array();
    g_autoptr(GString) names = g_string_new(NULL);
    GHashTableIter it;
    gpointer key;
    g_hash_table_iter_init(&it, w->pending);
    while (g_hash_table_iter_next(&it, &key, NULL)) {
      guint vid = GPOINTER_TO_UINT(key);
      NfVm *vm = wait_find(w, all, vid);
      NfVmState s = vm ? nf_vm_state(vm) : NF_VM_STOPPED;
      const char *why = NULL;
      gboolean done = FALSE;
      if (w->until == NF_COMMAND_UNTIL_DOWN) {
        done = !vm || (!nf_vm_is_running(vm) &&
                       (s == NF_VM_STOPPED || s == NF_VM_FAILED || s == NF_VM_CREATED));
      } else if (!vm) {
        why = "removed from the fleet";
      } else if (s == NF_VM_READY) {
        done = !g_hash_table_contains(w->fresh, key);
      } else if (s == NF_VM_FAILED) {
        why = "failed";
      } else if (s == NF_VM_STOPPED || s == NF_VM_CREATED) {
        why = "stopped";
      }
      if (done) {
        g_hash_table_iter_remove(&it);
      } else if (why) {
        json_array_append_new(failed, nf_command_guest_problem(vm, vid, why));
        if (names->len < 300) {
          const char *reason = vm ? nf_vm_exit_reason(vm) : NULL;
          g_string_append_printf(names, "%s%s %s%s%s%s", names->len ? "; " : "",
                                 vm ? nf_vm_name(vm) : "?", why, reason ? " (" : "",
                                 reason ? reason : "", reason ? ")" : "");
        }
      }
    }
    if (json_array_size(failed) > 0) {
      nf_command_reply_error(w->reply, "failed", failed, "%s", names->str);
      nf_command_wait_free(w);
    } else {
      json_decref(failed);
      if (g_hash_table_size(w->pending) == 0) {
        nf_command_reply_ok(w->reply, json_incref(w->result));
        nf_command_wait_free(w);
      }
    }
  }
  g_list_free(copy);
}
