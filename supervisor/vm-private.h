/*
 * vm-private.h: the guest's insides, shared by the files that make up one
 * guest (vm.c: channels, spawn, teardown and accessors; vm-qemu.c: what its
 * qemu says over QMP, its exit and stderr; vm-net.c: a spawn's
 * networking; vm-adopt.c: taking over a guest a previous supervisor left;
 * vm-status.c: its status file and events log; vm-disk.c: the wait for its
 * disk; lifecycle.c: the state table; health.c: deadlines). Nothing outside
 * supervisor/vm*.c, lifecycle.c and health.c includes this.
 */
#pragma once
#include "supervisor/cgroup.h"
#include "supervisor/deadlines.h"
#include "supervisor/health.h"
#include "supervisor/log-follow.h"
#include "supervisor/log-watch.h"
#include "supervisor/net.h"
#include "supervisor/paths.h"
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
  NF_VM_EV_DISK_READY,   /* its overlay is made (or failed: disk_error) */
  NF_VM_N_EVENTS
} NfVmEvent;

typedef struct {
  guint id;
  NfVmConsoleFunc func;
  gpointer user_data;
} NfVmWatcher;

/* Whether qemu is the process we spawned or a wrapper's child (health.c). */
typedef enum { NF_VM_QEMU_CHILD_UNKNOWN, NF_VM_QEMU_CHILD_YES, NF_VM_QEMU_CHILD_NO } NfVmQemuChild;

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
  struct NfDisksJob *disk_job; /* overlay being made before this run's spawn */
  gboolean disk_job_reflash;
  GError *disk_error; /* why the last disk job failed, until acted on */
  gboolean state_dir_made;
  guint status_timer;
  gboolean detached; /* let go of a running qemu: its files are not ours to remove */
  /* The running qemu was spawned with PR_SET_PDEATHSIG (a foreground fleet):
   * recorded in status.json, so the next supervisor knows why it is gone. */
  gboolean dies_with_supervisor;
  char *write_error; /* last failed write of a file of ours; NULL when fine */
  guint reboots;
  char *disk_path;
  gboolean requeue_after_stop;
  char *restore_file; /* this run restores from it (snapshot.h) until MIGRATION completes */

  /* the last exit */
  NfExitKind exit_kind;
  char *exit_reason;
  gint64 exit_time;
  gboolean failed_at_start;
  gboolean found_dead; /* recorded as up, gone when adopted (vm-adopt.c) */
  int wait_status;
  gboolean status_known;

  NfRestartTally tally;
  guint restarts;
  gint64 started_at;
  gint64 started_wall;
  gint64 ready_at;
  guint64 balloon_actual;
  gboolean balloon_unknown; /* adopted: ask QMP its size (no event says it) */

  NfGuestFiles files;

  /* the running qemu */
  NfProcess *proc;
  NfQmp *qmp;
  NfSerial *console;
  NfCgroup *cgroup;
  guint boot_timer;
  guint kill_timer;
  guint qmp_gone_timer; /* QMP closed, qemu still running: hung if it stays so */
  guint backoff_timer;
  gint64 next_probe_at;
  GList *health_link; /* in the health wheel's queue (health.c) */
  guint64 rss_bytes;  /* last sample of qemu's RSS */
  gint64 rss_at;      /* monotonic µs of that sample */
  gint64 slow_at;     /* monotonic µs of the probe's last slow checks (health.c) */
  gboolean ping_in_flight;
  gboolean stats_in_flight;
  gboolean stats_polling_set;
  NfVmQemuChild qemu_child; /* its pid file names the process we spawned (health.c) */
  gint64 stats_last_update; /* guest's own clock, seconds */
  gint64 stats_advanced_at; /* monotonic µs when last-update last moved */
  gint64 stats_asked_at;    /* monotonic µs of the last guest-stats read sent */
  NfVmGuestMem guest_mem;   /* from the same guest-stats (health.c) */
  gboolean balloon_manual;  /* a user set the balloon: the policy keeps off */
  guint64 balloon_target;   /* last `balloon` asked this run; 0: none */
  guint64 pss_bytes;        /* last sample of qemu's PSS (nf_vm_pss) */
  gint64 pss_at;            /* monotonic µs of that sample */

  const char *markers[3];       /* console markers: ready, panic (borrowed) */
  gboolean console_by_qemu;     /* qemu appends the console to console_log itself */
  gint64 console_log_start;     /* console_log's size when this run began */
  gint64 console_log_moved;     /* bytes the cap has moved out of the log's head, in all */
  gint64 console_run_mark;      /* this run's first byte, counted as console_log_moved is */
  NfLogWatch console_log_watch; /* armed at each cap check: quiet logs need no stat */
  guint console_linger_timer;   /* console held after input nobody watches */
  NfLogFollow *console_follow;  /* watchers' stream, read from the log qemu writes */
  guint ready_wait_timer;       /* the ready line seen, not yet in the log */
  guint ready_waits;
  char *ready_line;
  char *ready_reason;
  GArray *watchers; /* NfVmWatcher */
  guint next_watcher_id;
};

#define NF_VM_STATUS_DELAY_MS 500
/* qemu's RSS and PSS are sampled by the health probe when older than
 * *_SAMPLE_US (RSS only while someone reads it: NF_HEALTH_RSS_WATCH_MS),
 * and read by `ps` itself past *_MAX_AGE_US: /proc reads were most of an
 * idle fleet's CPU, PSS above all (smaps_rollup walks qemu's page tables),
 * so they follow their own, slower clocks rather than the probe's (issue
 * 17). PSS: 0.5 ms a read for a ready sim guest (175 MiB resident), i.e.
 * 0.8 % of a core at 1,000 guests read once a minute; once in 5 minutes it
 * is 0.17 %. `mem` reads it fresh. The console log's size cap (for a log
 * written to since the last check: log-watch.h) and the PSS clock are
 * checked at most every NF_VM_SLOW_CHECK_US (vm.h; config slow_check_ms). */
#define NF_VM_RSS_SAMPLE_US (30 * G_USEC_PER_SEC)
#define NF_VM_RSS_MAX_AGE_US (60 * G_USEC_PER_SEC)
#define NF_VM_PSS_SAMPLE_US (300 * G_USEC_PER_SEC)
#define NF_VM_PSS_MAX_AGE_US (600 * G_USEC_PER_SEC)

/* vm-memory.c: read qemu's RSS (statm) or PSS (smaps_rollup) from /proc now, for the
 * health probe and for nf_vm_rss/nf_vm_pss when their sample is stale. */
void nf_vm_sample_rss(NfVm *vm);
void nf_vm_sample_pss(NfVm *vm);
/* The guest printed its ready line: samples taken while it booted are taken again. */
void nf_vm_memory_ready(NfVm *vm);

/* lifecycle.c */
void nf_vm_dispatch(NfVm *vm, NfVmEvent event, const char *detail);
void nf_vm_set_state(NfVm *vm, NfVmState state, const char *reason);
/* (Re)arms the --boot-timeout deadline: spawned or adopted, a guest that
 * reaches no QMP handshake, or no ready line, in time is hung. */
void nf_vm_arm_boot_timer(NfVm *vm);

/* vm-disk.c: the wait for the disk before a spawn.
 * Starts making this run's overlay if it needs one (missing, or a reflash
 * pending) without blocking: TRUE when the guest must wait for
 * NF_VM_EV_DISK_READY, with *what saying what it waits for. */
gboolean nf_vm_disk_prepare(NfVm *vm, const char **what);
/* Stops waiting for the disk (the job runs to its end unreported); a reflash
 * dropped before it began stays pending. */
void nf_vm_disk_cancel(NfVm *vm);

/* Console markers (NfVm.markers): index 0 is the configured ready marker. */
enum { NF_VM_MARKER_READY, NF_VM_MARKER_PANIC };

/* vm-console.c: the console held only while needed (see there).
 * Connects to qemu's console socket unless connected; FALSE with `error`. */
gboolean nf_vm_console_attach(NfVm *vm, GError **error);
#define NF_VM_CONSOLE_LINGER_MS 10000
/* Lets go of the console of a ready guest nobody watches and no input was
 * written to within NF_VM_CONSOLE_LINGER_MS, nor a watcher left within it
 * (qemu logs it). */
void nf_vm_console_settle(NfVm *vm);
/* Before a spawn whose qemu logs its console: caps the log, notes its size. */
void nf_vm_console_note_start(NfVm *vm);
/* At exit: a panic line in this run's log that nobody read live counts. */
void nf_vm_console_check_exit(NfVm *vm);

/* vm.c: mechanics the table's actions use */
gboolean nf_vm_spawn(NfVm *vm, GError **error);
void nf_vm_release(NfVm *vm); /* drop channels, timers, runtime files */
/* Per-guest timers (boot, kill, backoff, status write) are deadlines.h
 * deadlines, not GLib sources: an iteration of the loop must not walk one
 * source per guest. Cancels *id (0: none) and zeroes it. */
void nf_vm_clear_timer(guint *id);
/* Connects to the QMP monitor and the console qemu listens on for us
 * (spawned or adopted); FALSE with `error` set when either fails. */
gboolean nf_vm_attach_channels(NfVm *vm, GError **error);
/* Forgets what the last run showed, before a new run or an adoption. */
void nf_vm_reset_run_facts(NfVm *vm);
/* vm-qemu.c: the process is gone (NfProcess exit callback), and the
 * callbacks of the guest's own QMP connection. */
void nf_vm_on_exit_cb(NfProcess *proc, int status, gpointer data);
extern const NfQmpCallbacks nf_vm_qmp_callbacks;
/* Unlinks the guest's sockets and pid file in the runtime dir. */
void nf_vm_remove_runtime_files(NfVm *vm);

/* vm-adopt.c: an adopted guest's QMP is up: learn what its status file does
 * not keep (the balloon's actual size). No-op for a guest we spawned. */
void nf_vm_adopted_qmp_up(NfVm *vm);
/* The pid in qemu's pid file (vm->pidfile); FALSE when it has none (yet). */
gboolean nf_vm_read_pidfile(const NfVm *vm, GPid *pid);

/* vm-net.c: networking of one spawn (see net.h, tap.h): the forwarded
 * ports, checked free; with --net tap a new tap (*tap_fd, for qemu) and the
 * guest's "ADDR,GATEWAY" (*ip, caller frees). */
gboolean nf_vm_prepare_net(NfVm *vm, NfNetForward *forwards, guint *n_forwards, int *tap_fd,
                           char **ip, GError **error);

/* vm-status.c: status.json, events.log, write failures */
void nf_vm_write_status(NfVm *vm);
/* Writes a status whose write was deferred (nf_vm_write_status) now. */
void nf_vm_flush_status(NfVm *vm);
/* Writing `path` failed with `err`: remembered (nf_vm_write_error) and told
 * once through the notice callback, until a status write succeeds again. */
void nf_vm_note_write(NfVm *vm, const char *path, int err);
/* The same with the whole message ("cannot copy ... : No space left"). */
void nf_vm_note_write_message(NfVm *vm, const char *message);
/* Appends "<time> <old> -> <new>: <reason>" to <state>/vm-NNNN/events.log. */
void nf_vm_log_transition(NfVm *vm, NfVmState old_state, NfVmState new_state, const char *reason);

/* health.c: a guest on the fleet's wheel (health.h) */
void nf_vm_health_start(NfVm *vm); /* after QMP is up */
void nf_vm_health_ready(NfVm *vm); /* after the ready line: heartbeat too */
void nf_vm_health_stop(NfVm *vm);
