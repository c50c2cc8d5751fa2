/*
 * command-args.c: reading a request's `args` document for the handlers
 * (see command-private.h). One place decides what a wrong type or an out
 * of range value is answered with ("bad_args", naming the key and what it
 * takes), so every command and every transport says it the same way.
 * Unknown keys are ignored (newer clients, older servers).
 */
#include "supervisor/command-private.h"

#include "supervisor/targets.h"

gboolean nf_command_arg_string(NfCommandReply *r, json_t *args, const char *key, const char *def,
                               const char **out)
{
  json_t *v = json_object_get(args, key);
  if (!v || json_is_null(v)) {
    if (!def) {
      nf_command_reply_error(r, "bad_args", NULL, "args.%s is required (a string)", key);
      return FALSE;
    }
    *out = def;
    return TRUE;
  }
  if (!json_is_string(v)) {
    nf_command_reply_error(r, "bad_args", NULL, "args.%s must be a string", key);
    return FALSE;
  }
  *out = json_string_value(v);
  return TRUE;
}

gboolean nf_command_arg_bool(NfCommandReply *r, json_t *args, const char *key, gboolean def,
                             gboolean *out)
{
  json_t *v = json_object_get(args, key);
  if (!v || json_is_null(v)) {
    *out = def;
    return TRUE;
  }
  if (!json_is_boolean(v)) {
    nf_command_reply_error(r, "bad_args", NULL, "args.%s must be true or false", key);
    return FALSE;
  }
  *out = json_is_true(v);
  return TRUE;
}

gboolean nf_command_arg_uint(NfCommandReply *r, json_t *args, const char *key, gboolean required,
                             guint64 def, guint64 max, guint64 *out)
{
  json_t *v = json_object_get(args, key);
  if (!v || json_is_null(v)) {
    if (required) {
      nf_command_reply_error(r, "bad_args", NULL, "args.%s is required (an integer)", key);
      return FALSE;
    }
    *out = def;
    return TRUE;
  }
  if (!json_is_integer(v) || json_integer_value(v) < 0 || (guint64)json_integer_value(v) > max) {
    nf_command_reply_error(r, "bad_args", NULL,
                           "args.%s must be an integer from 0 to %" G_GUINT64_FORMAT, key, max);
    return FALSE;
  }
  *out = (guint64)json_integer_value(v);
  return TRUE;
}

GPtrArray *nf_command_arg_targets(NfCommandReply *r, json_t *args, const char *def)
{
  return nf_command_arg_targets_kept(r, args, def, NULL);
}

GPtrArray *nf_command_arg_targets_kept(NfCommandReply *r, json_t *args, const char *def,
                                       NfTargets **kept)
{
  const char *text;
  if (!nf_command_arg_string(r, args, "targets", def, &text))
    return NULL;
  g_autoptr(GError) error = NULL;
  g_autoptr(NfTargets) t = nf_targets_parse(text, &error);
  if (!t) {
    nf_command_reply_error(r, "bad_args", NULL, "%s", error->message);
    return NULL;
  }
  NfFleet *fleet = nf_command_reply_fleet(r);
  guint n = nf_fleet_size(fleet);
  g_autofree guint *present = g_new(guint, n + 1);
  GPtrArray *vms = g_ptr_array_new();
  for (guint i = 0; i < n; i++) {
    NfVm *vm = nf_fleet_vm(fleet, i);
    present[i] = nf_vm_id(vm);
    if (nf_targets_contains(t, present[i]))
      g_ptr_array_add(vms, vm);
  }
  if (!nf_targets_check(t, present, n, &error)) {
    g_ptr_array_unref(vms);
    nf_command_reply_error(r, "no_such_guest", NULL, "%s", error->message);
    return NULL;
  }
  if (kept)
    *kept = g_steal_pointer(&t);
  return vms;
}

NfVm *nf_command_arg_vm(NfCommandReply *r, json_t *args)
{
  guint64 vm_id;
  if (!nf_command_arg_uint(r, args, "id", TRUE, 0, G_MAXUINT, &vm_id))
    return NULL;
  NfVm *vm = nf_fleet_find_vm(nf_command_reply_fleet(r), (guint)vm_id);
  if (!vm)
    nf_command_reply_error(r, "no_such_guest", NULL, "no guest %" G_GUINT64_FORMAT " in this fleet",
                           vm_id);
  return vm;
}

json_t *nf_command_ids_json(GPtrArray *vms)
{
  json_t *a = json_array();
  for (guint i = 0; i < vms->len; i++)
    json_array_append_new(a, json_integer(nf_vm_id(vms->pdata[i])));
  return a;
}
