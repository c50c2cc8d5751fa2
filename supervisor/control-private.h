/*
 * control-private.h: the control socket's insides (control.h), shared by the
 * three files that make up its server: control.c (the server object and its
 * clients: peer checks, framing, bounded output), control-streams.c (what a
 * client switched to a stream gets: console bytes, several guests' logs,
 * events) and control-listen.c (the listening socket, accepting, and
 * putting the runtime dir back when it is removed under us). Only those
 * include this.
 */
#pragma once
#include <gio/gio.h>
#include <sys/uio.h>
#include "supervisor/command.h"
#include "supervisor/control.h"
#include "supervisor/log-mux.h"

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

typedef enum {
  NF_CONTROL_MODE_REQUESTS, /* JSON lines in, replies out */
  NF_CONTROL_MODE_EVENTS,   /* after `events`: event lines out, input ignored */
  NF_CONTROL_MODE_RAW,      /* after `logs -f`/`console`: raw console bytes */
  NF_CONTROL_MODE_LOGS,     /* after `logs TARGET -f`: log-mux.h frames, input ignored */
} NfControlMode;

/* One connection. */
typedef struct {
  NfCommandPeer peer; /* first: the command layer's view of this client */
  NfControl *ctl;
  int refs;
  int fd;
  uid_t uid;
  guint in_src, out_src;
  GString *in;
  gboolean discarding; /* skipping the rest of an oversize line */
  GByteArray *out;
  gsize out_pos;
  gsize out_max;  /* unread output at which the client is dropped */
  gsize out_base; /* LOGS: unread when the stream began */
  gboolean close_when_flushed;
  gboolean read_closed; /* REQUESTS: the peer shut its side; answer, then close */
  guint unanswered;     /* requests dispatched and not yet answered */
  gboolean dropping;    /* too much unread output: closing on the next idle */
  NfControlMode mode;
  guint vm_id;           /* RAW: whose console */
  NfVm *watched;         /* RAW: that guest while watched (vm.h: until it goes) */
  guint watch_id;        /* RAW: nf_vm_console_watch id */
  gboolean writer;       /* RAW: input goes to the guest */
  GByteArray *in_hold;   /* RAW writer: input the guest has not taken yet (control-streams.c) */
  guint in_retry;        /* RAW writer: offers in_hold again while it is not empty */
  gboolean input_paused; /* not read from while in_hold waits: backpressure */
  NfLogMux *mux;         /* LOGS: the guests followed */
} NfControlClient;

/* --- control.c ---------------------------------------------------------------- */
/* A line for the supervisor's output: through hooks.log, or to stderr. */
void nf_control_log(NfControl *ctl, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
/* Takes over the accepted connection `fd` (its to close) as a client of
 * `ctl`: a peer that is neither our uid nor root, or one past
 * NF_CONTROL_MAX_CLIENTS, gets an error reply and is closed. */
void nf_control_client_new(NfControl *ctl, int fd);
/* Queues `parts` as one message for `c` (sent now as far as the socket
 * takes it); a client with out_max unread is dropped from an idle. */
void nf_control_send_parts(NfControlClient *c, const struct iovec *parts, int n);
void nf_control_send_bytes(NfControlClient *c, const char *buf, gsize len);
/* Writes what the socket takes now; closes a client whose close_when_flushed
 * is set once all is out. */
void nf_control_client_flush(NfControlClient *c);
/* A client whose input was paused (input_paused) is read from again. */
void nf_control_client_resume_input(NfControlClient *c);

/* --- control-streams.c -------------------------------------------------------- */
/* The transport's stream callbacks (command.h). */
void nf_control_peer_console(NfCommandPeer *peer, NfVm *vm, gboolean writer, gsize replay);
void nf_control_peer_events(NfCommandPeer *peer);
void nf_control_peer_logs_many(NfCommandPeer *peer, GPtrArray *vms, NfTargets *targets);
/* Input on a client switched to a stream: a console writer's keys go to
 * the guest, anything else is dropped. FALSE: the client takes requests. */
gboolean nf_control_stream_input(NfControlClient *c, const char *buf, gsize len);
/* The client goes: its guest unwatched, its writer seat and its mux let go. */
void nf_control_stream_end(NfControlClient *c);
/* The fleet listener's callbacks: state and notice events to every events
 * client (`data`: the NfControl). */
void nf_control_vm_changed_cb(NfFleet *fleet, NfVm *vm, NfVmState old_state, const char *reason,
                              gpointer data);
void nf_control_notice_cb(NfFleet *fleet, const char *message, gpointer data);

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
