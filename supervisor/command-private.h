/*
 * command-private.h: what the command layer's files share (see command.h):
 * the layer's state, the reply a handler answers through, argument
 * helpers (command-args.c), pending waits (command-wait.c) and the
 * handlers of each family. Not for use outside supervisor/command*.c.
 *
 * Adding a command: a handler in a command-*.c file, its prototype below,
 * one line in the table in command.c.
 */
#pragma once
#include "supervisor/command.h"

struct NfCommands {
  NfFleet *fleet;
  NfCommandHooks hooks;
  gpointer hooks_data;
  guint listener_id;
  GList *waits;         /* NfCommandWait* pending */
  GList *balloons;      /* balloon requests waiting for qemu or the guest */
  guint eval_src;       /* idle that re-evaluates waits after changes */
  GHashTable *writers;  /* vm id -> NfCommandPeer* holding the console's input */
  GHashTable *ps_cache; /* vm id -> its last `ps` encoding (command-ps.c) */
  guint64 ps_pass;      /* `ps` calls so far */
};

/* --- command.c: replies ------------------------------------------------------ */
/* A reply is refcounted: dispatch holds one reference while the handler
 * runs; a handler that answers later (a wait) takes its own. It holds a
 * reference on its peer. Answering twice is a bug (critical). */
NfCommandReply *nf_command_reply_ref(NfCommandReply *r);
void nf_command_reply_unref(NfCommandReply *r);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(NfCommandReply, nf_command_reply_unref)
NfCommands *nf_command_reply_commands(NfCommandReply *r);
NfFleet *nf_command_reply_fleet(NfCommandReply *r);
NfCommandPeer *nf_command_reply_peer(NfCommandReply *r);
/* The peer went away: nobody will read an answer. */
gboolean nf_command_reply_gone(NfCommandReply *r);
/* `result` stolen (NULL: {}). */
void nf_command_reply_ok(NfCommandReply *r, json_t *result);
/* The same with the result as its JSON text (stolen): the transport takes
 * the text as it is when it can (ok_text), else gets it parsed. */
void nf_command_reply_ok_text(NfCommandReply *r, GString *result);
/* `guests` (per-guest problems) stolen, may be NULL. */
void nf_command_reply_error(NfCommandReply *r, const char *code, json_t *guests, const char *fmt,
                            ...) G_GNUC_PRINTF(4, 5);
void nf_command_log(NfCommands *cmds, const char *fmt, ...) G_GNUC_PRINTF(2, 3);

/* --- command-args.c ------------------------------------------------------------ */
/* Each helper answers "bad_args" and returns FALSE (NULL) when the value
 * is there but of the wrong type or out of range; an absent (or null) key
 * takes `def`. A required key has no default (def NULL, `required`). */
gboolean nf_command_arg_string(NfCommandReply *r, json_t *args, const char *key, const char *def,
                               const char **out);
gboolean nf_command_arg_bool(NfCommandReply *r, json_t *args, const char *key, gboolean def,
                             gboolean *out);
gboolean nf_command_arg_uint(NfCommandReply *r, json_t *args, const char *key, gboolean required,
                             guint64 def, guint64 max, guint64 *out);
/* The guests named by args.targets (a TARGET string), in fleet order;
 * "no_such_guest" for an id the fleet does not have. */
GPtrArray *nf_command_arg_targets(NfCommandReply *r, json_t *args, const char *def);
/* The same, and the parsed TARGET in *kept (new) for a caller that keeps
 * matching guests against it. */
GPtrArray *nf_command_arg_targets_kept(NfCommandReply *r, json_t *args, const char *def,
                                       NfTargets **kept);
/* The guest named by args.id (an integer). */
NfVm *nf_command_arg_vm(NfCommandReply *r, json_t *args);
/* [id, ...] of `vms`. */
json_t *nf_command_ids_json(GPtrArray *vms);

/* --- command-wait.c: answers that wait for guests --------------------------------- */
typedef enum {
  NF_COMMAND_UNTIL_READY, /* READY (after a fresh transition for ids added `fresh`) */
  NF_COMMAND_UNTIL_DOWN,  /* not running and staying down, or removed */
} NfCommandUntil;
typedef struct NfCommandWait NfCommandWait;
/* A wait answering `r` with `result` (stolen) once every guest added is
 * there, "failed" as soon as one cannot get there, "timeout" at the
 * deadline. Add guests, then arm (or free, to answer otherwise). */
NfCommandWait *nf_command_wait_new(NfCommandReply *r, NfCommandUntil until, json_t *result);
void nf_command_wait_add(NfCommandWait *w, guint vm_id, gboolean fresh);
/* Pending from now on (owned by the layer); `timeout_ms` 0: none. */
void nf_command_wait_arm(NfCommandWait *w, guint64 timeout_ms);
void nf_command_wait_free(NfCommandWait *w);
/* A guest changed state: waits may be satisfied or failed. */
void nf_command_waits_changed(NfCommands *cmds, NfVm *vm, NfVmState new_state);
void nf_command_waits_free_all(NfCommands *cmds);
/* Why a guest did not make it: state, last exit, its recent console. */
json_t *nf_command_guest_problem(NfVm *vm, guint vm_id, const char *why);

/* --- command-balloon.c ------------------------------------------------------------- */
/* Drops pending balloon requests; QMP answers still due are then ignored. */
void nf_command_balloons_orphan(NfCommands *cmds);

/* --- handlers, by family ----------------------------------------------------------- */
/* command-fleet.c */
void nf_command_hello(NfCommandReply *r, json_t *args);
void nf_command_scale(NfCommandReply *r, json_t *args);
void nf_command_down(NfCommandReply *r, json_t *args);
/* command-ps.c; the cache goes with the layer */
void nf_command_ps(NfCommandReply *r, json_t *args);
void nf_commands_ps_cache_free(NfCommands *cmds);
/* command-guests.c */
void nf_command_start(NfCommandReply *r, json_t *args);
void nf_command_stop(NfCommandReply *r, json_t *args);
void nf_command_restart(NfCommandReply *r, json_t *args);
void nf_command_kill(NfCommandReply *r, json_t *args);
void nf_command_reflash(NfCommandReply *r, json_t *args);
/* command-wait.c */
void nf_command_wait(NfCommandReply *r, json_t *args);
/* command-balloon.c */
void nf_command_balloon(NfCommandReply *r, json_t *args);

/* command-mem.c */
void nf_command_mem(NfCommandReply *r, json_t *args);
/* command-streams.c */
void nf_command_logs(NfCommandReply *r, json_t *args);
void nf_command_console(NfCommandReply *r, json_t *args);
void nf_command_events(NfCommandReply *r, json_t *args);
