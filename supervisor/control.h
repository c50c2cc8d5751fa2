/*
 * control.h: the control socket, the supervisor's door for every other verb
 * (`ps`, `stop`, `console`, ...) and for scripts. A unix socket
 * <runtime dir>/control.sock (0600 in a 0700 dir; peers checked with
 * SO_PEERCRED: same uid or root) speaking versioned JSON lines, documented in
 * supervisor/control-protocol.md next to this code. It is one transport over
 * the command layer (command.h), which it creates and owns.
 *
 * Everything runs on the supervisor's one GMainLoop: sockets are
 * non-blocking, each client has a bounded output buffer (a client that stops
 * reading is dropped, the supervisor never waits for it), and a bad request
 * gets an error reply, never a crash or a stall.
 */
#pragma once
#include <glib.h>
#include "supervisor/fleet.h"

#define NF_CONTROL_PROTOCOL 1
#define NF_CONTROL_SOCKET_NAME "control.sock"
/* Longest request line; longer gets a "too_large" error. */
#define NF_CONTROL_MAX_LINE (64 * 1024)
/* A client with this much unread output when more is queued is dropped
 * (one following several guests' logs: this much per guest, 16 at most). */
#define NF_CONTROL_OUT_MAX (1024 * 1024)
/* Connections at once; more are answered "busy" and closed. */
#define NF_CONTROL_MAX_CLIENTS 1024

typedef struct NfControl NfControl;
typedef struct NfCommands NfCommands;

typedef struct {
  /* A client asked the fleet to stop (`down`); `force` kills at once. The
   * owner stops the fleet as on SIGTERM. May be NULL (then `down` fails). */
  void (*down)(gboolean force, gpointer user_data);
  /* Something worth a line in the supervisor's output (a refused peer).
   * May be NULL (then it goes to stderr). */
  void (*log)(const char *message, gpointer user_data);
} NfControlHooks;

/* Binds <runtime dir>/control.sock (replacing a stale one: the caller holds
 * the fleet lock) and starts serving. `fleet` must outlive the server;
 * `hooks` is copied. NULL with an error naming the path when the socket
 * cannot be made. */
NfControl *nf_control_new(NfFleet *fleet, const NfControlHooks *hooks, gpointer user_data,
                          GError **error);

/* Closes every client and the socket, and removes the socket file. */
void nf_control_free(NfControl *ctl);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(NfControl, nf_control_free)

const char *nf_control_socket_path(const NfControl *ctl);
/* The command layer this socket serves (owned by `ctl`), for another
 * transport to serve the same commands, waits and console seats. */
NfCommands *nf_control_commands(NfControl *ctl);

/* Clients connected now (for tests and `hello`). */
guint nf_control_n_clients(const NfControl *ctl);
