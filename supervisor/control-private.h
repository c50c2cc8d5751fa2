/*
 * control-private.h: what the control server's two halves share. control.c
 * owns sockets, framing, buffers and the fleet listener; control-cmds.c owns
 * the commands (one handler each) and the waits they may leave pending.
 * Not for use outside supervisor/control*.c.
 */
#pragma once
#include <jansson.h>
#include <sys/types.h>
#include "supervisor/control.h"

typedef enum {
  NF_CTL_MODE_REQUESTS, /* JSON lines in, replies out */
  NF_CTL_MODE_EVENTS,   /* after `events`: event lines out, input ignored */
  NF_CTL_MODE_RAW,      /* after `logs -f`/`console`: raw console bytes */
} NfCtlMode;

typedef struct NfCtlClient NfCtlClient;
typedef struct NfCtlWait NfCtlWait;

struct NfControl {
  NfFleet *fleet;
  NfControlHooks hooks;
  gpointer hooks_data;
  char *path;
  int listen_fd;
  guint listen_src;
  guint listener_id;
  GList *clients; /* NfCtlClient*, each holding one ref */
  guint n_clients;
  GList *waits;           /* NfCtlWait* pending */
  GList *balloons;        /* balloon requests waiting for qemu or the guest */
  guint eval_src;         /* idle that re-evaluates waits after changes */
  GHashTable *writers;    /* vm id -> NfCtlClient* holding the console's input */
  GHashTable *run_starts; /* vm id -> console.log offset at its latest spawn */
};

struct NfCtlClient {
  NfControl *ctl;
  int refs;
  gboolean dead;
  int fd;
  uid_t uid;
  pid_t pid;
  guint in_src, out_src;
  GString *in;
  gboolean discarding; /* skipping the rest of an oversize line */
  GByteArray *out;
  gsize out_pos;
  gboolean close_when_flushed;
  gboolean dropping; /* too much unread output: closing on the next idle */
  NfCtlMode mode;
  guint vm_id;     /* RAW: whose console */
  guint watch_id;  /* RAW: nf_vm_console_watch id */
  gboolean writer; /* RAW: input goes to the guest */
};

/* --- control.c -------------------------------------------------------------- */
NfCtlClient *nf_ctl_client_ref(NfCtlClient *c);
void nf_ctl_client_unref(NfCtlClient *c);
/* Queues bytes / one JSON line (stolen); drops the client when it has not
 * read NF_CONTROL_OUT_MAX of earlier output. No-op on a dead client. */
void nf_ctl_send(NfCtlClient *c, const char *buf, gsize len);
void nf_ctl_send_json(NfCtlClient *c, json_t *msg);
void nf_ctl_reply_ok(NfCtlClient *c, json_t *id, json_t *result);
void nf_ctl_reply_error(NfCtlClient *c, json_t *id, const char *code, json_t *details,
                        const char *fmt, ...) G_GNUC_PRINTF(5, 6);
/* Switches a client to a console stream of `vm` (replay included). */
void nf_ctl_client_attach_console(NfCtlClient *c, NfVm *vm, gboolean writer, gsize replay);
void nf_ctl_log(NfControl *ctl, const char *fmt, ...) G_GNUC_PRINTF(2, 3);

/* --- control-cmds.c ---------------------------------------------------------- */
/* Runs one parsed request (`req` borrowed). Always replies, now or later. */
void nf_ctl_dispatch(NfCtlClient *c, json_t *id, const char *cmd, json_t *args);
/* A guest changed state: waits may be satisfied or failed. */
void nf_ctl_waits_changed(NfControl *ctl, NfVm *vm, NfVmState new_state);
void nf_ctl_waits_evaluate(NfControl *ctl);
void nf_ctl_waits_free_all(NfControl *ctl);
/* Cancels pending balloon requests; QMP answers still due are then ignored. */
void nf_ctl_balloons_orphan(NfControl *ctl);
/* JSON for one guest, as in `ps` (see control-protocol.md). */
json_t *nf_ctl_guest_json(NfControl *ctl, NfVm *vm, gint64 now_mono);
