/*
 * command.h: the command layer: every request a client can make of a
 * running fleet (`ps`, `stop`, `scale`, `console`...), as ONE table of
 * named handlers behind ONE dispatch. A handler takes a request document
 * (the JSON `args` object) and answers through a reply (a result document,
 * or an error with a code from control-protocol.md), never by writing to a
 * connection: transports own connections. The control socket (control.c,
 * JSON lines) is one transport over this table; an HTTP API can be another,
 * sharing the same NfCommands so that waits, console seats and documents
 * are the same whichever door a request came in by.
 *
 * A transport gives each of its clients an NfCommandPeer (embedded in its
 * own client struct) with a vtable: how to answer, how to keep the client
 * alive while an answer is pending (a `wait`, a `balloon`), and, when it
 * can, how to switch the client to a stream (console bytes, several
 * guests' logs, events).
 * Everything runs on the supervisor's one GMainLoop.
 */
#pragma once
#include <glib.h>
#include <jansson.h>
#include <sys/types.h>
#include "supervisor/fleet.h"
#include "supervisor/targets.h"

typedef struct NfCommands NfCommands;
typedef struct NfCommandPeer NfCommandPeer;

typedef struct {
  /* For messages: "stop asked over the <name> (pid N)". */
  const char *name;
  /* Keep the peer's memory alive while an answer is pending. */
  void (*ref)(NfCommandPeer *peer);
  void (*unref)(NfCommandPeer *peer);
  /* The answer to request `id` (borrowed; JSON null when none). `result`
   * and `guests` are stolen; `guests` (per-guest problems) may be NULL.
   * Called at most once per request, never after the peer is gone. */
  void (*ok)(NfCommandPeer *peer, json_t *id, json_t *result);
  void (*error)(NfCommandPeer *peer, json_t *id, const char *code, const char *message,
                json_t *guests);
  /* The same answer as JSON text (`len` bytes, borrowed), for a document
   * too large to encode at each request (`ps` of thousands of guests).
   * NULL: the text is parsed and goes to `ok`. */
  void (*ok_text)(NfCommandPeer *peer, json_t *id, const char *result, gsize len);
  /* Streams, right after an ok answer. NULL when the transport has none:
   * the commands that need one then answer "unsupported". `replay`: bytes
   * of recent console output to send first. */
  void (*console)(NfCommandPeer *peer, NfVm *vm, gboolean writer, gsize replay);
  void (*events)(NfCommandPeer *peer);
  /* Several guests' console output on one stream (`logs` with `targets`
   * and `follow`): `vms` (borrowed) from the offsets the reply gave
   * (nf_vm_console_watch_start), then guests that join the fleet while
   * `targets` (stolen) names them, each announced with
   * nf_commands_log_document. NULL: "unsupported". */
  void (*logs_many)(NfCommandPeer *peer, GPtrArray *vms, NfTargets *targets);
} NfCommandTransport;

/* One client of a transport, as the command layer sees it. */
struct NfCommandPeer {
  const NfCommandTransport *transport;
  pid_t pid;     /* the client's process when known (0 otherwise), for messages */
  gboolean gone; /* set by the transport when the client went away */
};

typedef struct {
  /* `down` asked the fleet to stop (`force`: kill). NULL: `down` answers
   * "unsupported". */
  void (*down)(gboolean force, gpointer user_data);
  /* A line for the supervisor's output. NULL: stderr. */
  void (*log)(const char *message, gpointer user_data);
} NfCommandHooks;

/* Command flags, for transports that map commands onto their own verbs
 * (HTTP GET for READONLY ones). */
enum {
  NF_COMMAND_READONLY = 1 << 0, /* changes nothing */
  NF_COMMAND_STREAM = 1 << 1,   /* may switch the peer to a stream */
};

typedef struct NfCommandReply NfCommandReply;
typedef void (*NfCommandHandler)(NfCommandReply *reply, json_t *args);

typedef struct {
  const char *name;
  NfCommandHandler handler;
  unsigned flags;
} NfCommandEntry;

/* The layer for `fleet` (which must outlive it); `hooks` copied, may be NULL. */
NfCommands *nf_commands_new(NfFleet *fleet, const NfCommandHooks *hooks, gpointer user_data);
/* Drops pending waits and balloon requests unanswered (their QMP replies
 * still due are then ignored). Peers' memory is released through their
 * transports' unref. */
void nf_commands_free(NfCommands *cmds);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(NfCommands, nf_commands_free)

NfFleet *nf_commands_fleet(NfCommands *cmds);

/* The command called `name`, or NULL. */
const NfCommandEntry *nf_commands_lookup(const char *name);
/* Every command, in table order; *n set to their number. */
const NfCommandEntry *nf_commands_table(gsize *n);

/* Runs command `name` for `peer` with `args` (an object, borrowed; the
 * transport checked the envelope). Always answers, now or later (unless
 * the peer goes away first): "unknown_command" for a name not in the table. */
void nf_commands_dispatch(NfCommands *cmds, NfCommandPeer *peer, json_t *id, const char *name,
                          json_t *args);

/* A transport's client whose console stream ended: frees its writer seat
 * on guest `vm_id` if it held it. */
void nf_commands_console_release(NfCommands *cmds, guint vm_id, NfCommandPeer *peer);

/* Documents shared by every transport (control-protocol.md): a
 * state-change event and a notice event (both carry the fleet's name and
 * the host's, for collectors of several supervisors). New references. */
json_t *nf_commands_state_event(NfFleet *fleet, NfVm *vm, NfVmState old_state, const char *reason);
json_t *nf_commands_notice_event(NfFleet *fleet, const char *message);
/* Where guest `vm`'s console log stands for `logs` (control-protocol.md):
 * its id, name, path, the byte range [start, end) to read from it, and
 * rotated_path (the older part) when given. New reference. */
json_t *nf_commands_log_document(NfVm *vm, gint64 start, gint64 end, const char *rotated_path);
/* A guest's recent console output: the live ring, or, once qemu is gone,
 * the end of its console log (at most `max` bytes, valid UTF-8). New string. */
char *nf_commands_console_tail(NfVm *vm, gsize max);
