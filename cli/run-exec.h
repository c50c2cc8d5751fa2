/*
 * run-exec.h: `run N --exec CMD...`, the CI mode. Waits until every guest is
 * ready, runs CMD with the fleet's coordinates in its environment, and
 * reports CMD's exit status; if a guest fails first, reports why (with the
 * last console lines of each failed guest) instead of running CMD. Also the
 * --ephemeral cleanup. The caller (cmd-run.c) owns the fleet and its stop.
 */
#pragma once
#include <glib.h>
#include "supervisor/fleet.h"

typedef struct NfRunExec NfRunExec;

/* Called once: CMD ended (`status` is its exit code, 128+signal if killed),
 * or it never ran because the fleet failed to come up (`status` 1, the
 * reason already printed). The caller should stop the fleet. */
typedef void (*NfRunExecDone)(int status, gpointer user_data);

/* Watches `fleet` (a listener) and starts `argv` (borrowed; must outlive
 * the watcher) once all guests are ready. `socket` is the control socket
 * path for NERVESFLEET_SOCKET (may be NULL). */
NfRunExec *nf_run_exec_new(NfFleet *fleet, char **argv, const char *socket, NfRunExecDone done,
                           gpointer user_data);
/* The fleet is being stopped for another reason (a signal, `down`): SIGTERM
 * to CMD if it runs, SIGKILL after the fleet's stop timeout; its status,
 * when it ends, still comes to `done`. Before CMD ran: `done` gets 1 now
 * (a CI job stopped before its tests ran has not passed). */
void nf_run_exec_cancel(NfRunExec *x);
/* Whether CMD is still running (the caller waits for it before exiting). */
gboolean nf_run_exec_running(const NfRunExec *x);
void nf_run_exec_free(NfRunExec *x);

/* --ephemeral: what a fleet wrote in its state dir (the guests' vm-NNNN
 * dirs, disks/, the snapshot's template/, the daemon's supervisor.log, the
 * state dir's lock),
 * then the dir if that leaves it empty, and the XDG "nervesfleet" level
 * above it if that is empty too. Anything else stays: --state-dir may name
 * a dir of the user's own ($PWD, a CI workspace). Symlinks are removed,
 * never followed. */
void nf_run_remove_state(const char *state_dir);
