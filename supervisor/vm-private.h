/*
 * vm-private.h: the guest's insides, shared by the files that make up one
 * guest (vm.c: channels and process; lifecycle.c: the state table; health.c:
 * deadlines). Nothing outside supervisor/vm*.c, lifecycle.c and health.c
 * includes this.
 */
#pragma once
#include "supervisor/cgroup.h"
#include "supervisor/process.h"
#include "supervisor/restart-policy.h"
#include "supervisor/serial.h"
#include "supervisor/vm.h"

typedef enum {
  NF_VM_EV_QUEUE,        /* someone wants it running */
  NF_VM_EV_ADMIT,        /* the limiter let it boot */
  NF_VM_EV_QMP_UP,       /* QMP negotiated */
  NF_VM_EV_READY,        /* ready line on the console */
  NF_VM_EV_HEALTH_FAIL,  /* a health deadline passed */
  NF_VM_EV_EXIT,         /* the qemu process is gone */
  NF_VM_EV_STOP,         /* orderly stop asked */
  NF_VM_EV_KILL,         /* immediate stop asked */
  NF_VM_EV_BACKOFF_DONE, /* the restart delay is over */
  NF_VM_N_EVENTS
} NfVmEvent;

typedef struct {
  guint id;
  NfVmConsoleFunc func;
  gpointer user_data;
} NfVmWatcher;

struct NfVm {
  guint id;
  char *name;
  char *serial;
  char *mac;
  const NfVmEnv *env;
  NfVmCallbacks cb;
  gpointer user_data;

  NfVmState state;

  /* what the current run has shown (reset at each spawn) */
  gboolean qmp_negotiated;
  gboolean stop_requested;
  gboolean hung;
  gboolean watchdog_event;
  gboolean panic_seen;
  char *shutdown_reason;
  char *health_problem;
  guint64 oom_kills_at_start;
  gboolean restart_pending;
  gboolean reflash_pending;
  gboolean state_dir_made;
  guint status_timer;
  gboolean detached; /* let go of a running qemu: its files are not ours to remove */
  guint reboots;
  char *disk_path;
  gboolean requeue_after_stop;
  char *restore_file; /* this run restores from it (snapshot.h) until MIGRATION completes */

  /* the last exit */
  NfExitKind exit_kind;
  char *exit_reason;
  gint64 exit_time;
  gboolean failed_at_start;
  int wait_status;
  gboolean status_known;

  NfRestartTally tally;
  guint restarts;
  gint64 started_at;
  gint64 started_wall;
  gint64 ready_at;
  guint64 balloon_actual;

  /* files */
  char *state_dir;
  char *qemu_log;
  char *console_log;
  char *status_path;
  char *pidfile;
  char *ctl_path;
  char *qmp_path;
  char *serial_path;

  /* the running qemu */
  NfProcess *proc;
  NfQmp *qmp;
  NfSerial *console;
  NfCgroup *cgroup;
  guint boot_timer;
  guint kill_timer;
  guint backoff_timer;
  gint64 next_probe_at;
  guint64 rss_bytes;                               /* last sample of qemu's RSS */
  gint64 rss_at; /* monotonic µs of that sample */ /* monotonic µs; see health.c's wheel */
  gboolean ping_in_flight;
  gboolean stats_in_flight;
  gboolean stats_polling_set;
  gint64 stats_last_update; /* guest's own clock, seconds */
  gint64 stats_advanced_at; /* monotonic µs when last-update last moved */

  const char *markers[3]; /* console markers: ready, panic (borrowed) */
  GArray *watchers;       /* NfVmWatcher */
  guint next_watcher_id;
};

#define NF_VM_STATUS_DELAY_MS 500
#define NF_VM_RSS_MAX_AGE_US (30 * G_USEC_PER_SEC)

/* Reads qemu's RSS from /proc now (the health probe calls it). */
void nf_vm_sample_rss(NfVm *vm);

/* lifecycle.c */
void nf_vm_dispatch(NfVm *vm, NfVmEvent event, const char *detail);
void nf_vm_set_state(NfVm *vm, NfVmState state, const char *reason);

/* vm.c: mechanics the table's actions use */
gboolean nf_vm_spawn(NfVm *vm, GError **error);
void nf_vm_release(NfVm *vm); /* drop channels, timers, runtime files */
void nf_vm_write_status(NfVm *vm);
/* Appends "<time> <old> -> <new>: <reason>" to <state>/vm-NNNN/events.log. */
void nf_vm_log_transition(NfVm *vm, NfVmState old_state, NfVmState new_state, const char *reason);
void nf_vm_clear_timer(guint *id);

/* health.c: a fleet-wide probe timer shared by all guests */
NfHealthWheel *nf_health_wheel_new(guint interval_ms);
void nf_health_wheel_free(NfHealthWheel *wheel);
void nf_vm_health_start(NfVm *vm); /* after QMP is up */
void nf_vm_health_ready(NfVm *vm); /* after the ready line: heartbeat too */
void nf_vm_health_stop(NfVm *vm);
