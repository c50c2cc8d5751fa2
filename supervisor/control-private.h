/*
 * control-private.h: the control socket's insides (control.h), shared by the
 * two files that make up its server: control.c (the server object and its
 * clients: peer checks, framing, bounded output, streams) and
 * control-listen.c (the listening socket, accepting, and putting the
 * runtime dir back when it is removed under us). Only those two include
 * this; clients stay private to control.c.
 */
#pragma once
#include <gio/gio.h>
#include "supervisor/control.h"

struct NfControl {
  NfFleet *fleet;
  NfControlHooks hooks;
  gpointer hooks_data;
  NfCommands *cmds;
  char *path;
  int listen_fd;
  guint listen_src;
  guint resume_src;       /* out of fds: accepting again after a pause */
  GFileMonitor *watch[2]; /* the fleet lock and our socket, should they go */
  guint repair_src;
  guint listener_id;
  GList *clients; /* Client*, each holding one ref */
  guint n_clients;
};

/* --- control.c ---------------------------------------------------------------- */
/* A line for the supervisor's output: through hooks.log, or to stderr. */
void nf_control_log(NfControl *ctl, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
/* Takes over the accepted connection `fd` (its to close) as a client of
 * `ctl`: a peer that is neither our uid nor root, or one past
 * NF_CONTROL_MAX_CLIENTS, gets an error reply and is closed. */
void nf_control_client_new(NfControl *ctl, int fd);

/* --- control-listen.c --------------------------------------------------------- */
/* A non-blocking listening socket bound at `path`, born 0600, or -1 with an
 * error. */
int nf_control_listen_at(const char *path, GError **error);
/* ctl->listen_fd's GSource callback (`data`: the NfControl): accepts
 * waiting connections; out of fds, pauses the listener (ctl->resume_src). */
gboolean nf_control_accept_cb(int fd, GIOCondition cond, gpointer data);
/* The fleet lock's and the socket's file monitors' "changed" handler
 * (`data`: the NfControl): on their removal, schedules ctl->repair_src to
 * take the lock and make the socket again. */
void nf_control_runtime_changed_cb(GFileMonitor *monitor, GFile *file, GFile *other,
                                   GFileMonitorEvent event, gpointer data);
