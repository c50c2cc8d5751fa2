/*
 * command.c: the command layer's core (see command.h): the one table of
 * commands and the one dispatch over it, the reply a handler answers
 * through, and the layer's fleet listener (where each run's console output
 * starts, for `logs --since start`; waits re-evaluated after changes).
 *
 * The reply is the seam between handlers and transports: a handler never
 * sees a socket, only nf_command_reply_ok/error, and a transport never
 * sees a handler, only its NfCommandTransport callbacks. That is what lets
 * the control socket and an HTTP API share one set of commands.
 */
#include "supervisor/command-private.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <glib/gstdio.h>

struct NfCommandReply {
  int refs;
  NfCommands *cmds;
  NfCommandPeer *peer; /* ref through its transport */
  json_t *id;          /* ref; JSON null when the request had none */
  gboolean answered;
};

/* The command set. A new command is one line here, a prototype in
 * command-private.h and its handler in a command-*.c file. */
static const NfCommandEntry commands[] = {
    {"hello", nf_command_hello, NF_COMMAND_READONLY},
    {"ps", nf_command_ps, NF_COMMAND_READONLY},
    {"start", nf_command_start, 0},
    {"stop", nf_command_stop, 0},
    {"restart", nf_command_restart, 0},
    {"kill", nf_command_kill, 0},
    {"scale", nf_command_scale, 0},
    {"balloon", nf_command_balloon, 0},
    {"logs", nf_command_logs, NF_COMMAND_READONLY | NF_COMMAND_STREAM},
    {"console", nf_command_console, NF_COMMAND_STREAM},
    {"events", nf_command_events, NF_COMMAND_READONLY | NF_COMMAND_STREAM},
    {"wait", nf_command_wait, NF_COMMAND_READONLY},
    {"down", nf_command_down, 0},
    {"reflash", nf_command_reflash, 0},
    {"mem", nf_command_mem, NF_COMMAND_READONLY},
};

static void vm_changed_cb(NfFleet *fleet, NfVm *vm, NfVmState old_state, const char *reason,
                          gpointer data);

NfCommands *nf_commands_new(NfFleet *fleet, const NfCommandHooks *hooks, gpointer user_data)
{
  NfCommands *cmds = g_new0(NfCommands, 1);
  cmds->fleet = fleet;
  if (hooks)
    cmds->hooks = *hooks;
  cmds->hooks_data = user_data;
  cmds->writers = g_hash_table_new(g_direct_hash, g_direct_equal);
  static const NfFleetCallbacks listener = {.vm_changed = vm_changed_cb};
  cmds->listener_id = nf_fleet_add_listener(fleet, &listener, cmds);
  return cmds;
}

void nf_commands_free(NfCommands *cmds)
{
  if (!cmds)
    return;
  nf_fleet_remove_listener(cmds->fleet, cmds->listener_id);
  nf_command_waits_free_all(cmds);
  nf_command_balloons_orphan(cmds);
  nf_commands_ps_cache_free(cmds);
  if (cmds->eval_src)
    g_source_remove(cmds->eval_src);
  g_hash_table_unref(cmds->writers);
  g_free(cmds);
}

NfFleet *nf_commands_fleet(NfCommands *cmds)
{
  return cmds->fleet;
}

const NfCommandEntry *nf_commands_lookup(const char *name)
{
  for (gsize i = 0; i < G_N_ELEMENTS(commands); i++)
    if (strcmp(name, commands[i].name) == 0)
      return &commands[i];
  return NULL;
}

const NfCommandEntry *nf_commands_table(gsize *n)
{
  *n = G_N_ELEMENTS(commands);
  return commands;
}

void nf_commands_dispatch(NfCommands *cmds, NfCommandPeer *peer, json_t *id, const char *name,
                          json_t *args)
{
  NfCommandReply *r = g_new0(NfCommandReply, 1);
  r->refs = 1;
  r->cmds = cmds;
  r->peer = peer;
  peer->transport->ref(peer);
  r->id = json_incref(id ? id : json_null());
  const NfCommandEntry *entry = nf_commands_lookup(name);
  if (entry)
    entry->handler(r, args);
  else
    nf_command_reply_error(r, "unknown_command", NULL, "unknown command '%s'", name);
  nf_command_reply_unref(r);
}

void nf_commands_console_release(NfCommands *cmds, guint vm_id, NfCommandPeer *peer)
{
  if (g_hash_table_lookup(cmds->writers, GUINT_TO_POINTER(vm_id)) == peer)
    g_hash_table_remove(cmds->writers, GUINT_TO_POINTER(vm_id));
}

void nf_command_log(NfCommands *cmds, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  g_autofree char *msg = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  if (cmds->hooks.log)
    cmds->hooks.log(msg, cmds->hooks_data);
  else
    fprintf(stderr, "nervesfleet: control: %s\n", msg);
}

/* --- replies ------------------------------------------------------------------- */

NfCommandReply *nf_command_reply_ref(NfCommandReply *r)
{
  r->refs++;
  return r;
}

void nf_command_reply_unref(NfCommandReply *r)
{
  if (--r->refs > 0)
    return;
  r->peer->transport->unref(r->peer);
  json_decref(r->id);
  g_free(r);
}

NfCommands *nf_command_reply_commands(NfCommandReply *r)
{
  return r->cmds;
}

NfFleet *nf_command_reply_fleet(NfCommandReply *r)
{
  return r->cmds->fleet;
}

NfCommandPeer *nf_command_reply_peer(NfCommandReply *r)
{
  return r->peer;
}

gboolean nf_command_reply_gone(NfCommandReply *r)
{
  return r->peer->gone;
}

void nf_command_reply_ok(NfCommandReply *r, json_t *result)
{
  if (!result)
    result = json_object();
  if (r->answered || r->peer->gone) {
    /* Answering twice is a handler's bug; a gone peer reads nothing. */
    if (r->answered)
      g_critical("command answered twice (ok after an answer)");
    json_decref(result);
    return;
  }
  r->answered = TRUE;
  r->peer->transport->ok(r->peer, r->id, result);
}

void nf_command_reply_ok_text(NfCommandReply *r, GString *result)
{
  const NfCommandTransport *t = r->peer->transport;
  if (r->answered || r->peer->gone) {
    g_string_free(result, TRUE);
    nf_command_reply_ok(r, NULL); /* says what is wrong, or drops it */
    return;
  }
  if (!t->ok_text) {
    json_error_t err;
    json_t *doc = json_loadb(result->str, result->len, 0, &err);
    g_string_free(result, TRUE);
    if (!doc) { /* a bug of ours: said, and answered as a failure */
      g_critical("command result is not JSON: %s", err.text);
      nf_command_reply_error(r, "failed", NULL, "internal error: the result was not JSON");
      return;
    }
    nf_command_reply_ok(r, doc);
    return;
  }
  r->answered = TRUE;
  t->ok_text(r->peer, r->id, result->str, result->len);
  g_string_free(result, TRUE);
}

void nf_command_reply_error(NfCommandReply *r, const char *code, json_t *guests, const char *fmt,
                            ...)
{
  va_list ap;
  va_start(ap, fmt);
  g_autofree char *msg = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  if (r->answered || r->peer->gone) {
    if (r->answered)
      g_critical("command answered twice (error \"%s\" after an answer)", code);
    if (guests)
      json_decref(guests);
    return;
  }
  r->answered = TRUE;
  r->peer->transport->error(r->peer, r->id, code, msg, guests);
}

/* --- fleet listener -------------------------------------------------------------- */

static void vm_changed_cb(NfFleet *fleet, NfVm *vm, NfVmState old_state, const char *reason,
                          gpointer data)
{
  NfCommands *cmds = data;
  NfVmState state = nf_vm_state(vm);
  nf_command_waits_changed(cmds, vm, state);
}
