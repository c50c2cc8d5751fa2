/*
 * vm.h: one guest: its qemu process, QMP connection, serial console, health
 * and restart state. The fleet decides *when* a guest may boot (the batch
 * limiter); the guest owns *how*: channels, argv, spawn or adoption,
 * readiness, health, orderly stop, what its exit means and whether it comes
 * back. Its life is an explicit state x event table (lifecycle.c).
 */
#pragma once
#include <glib.h>
#include "qmp/qmp.h"
#include "supervisor/config.h"
#include "supervisor/exit-kind.h"
#include "supervisor/paths.h"

typedef enum {
  NF_VM_CREATED,   /* not asked to run yet */
  NF_VM_QUEUED,    /* waiting for the batch limiter */
  NF_VM_STARTING,  /* qemu spawned, QMP not negotiated yet */
  NF_VM_BOOTING,   /* QMP up, waiting for the ready line */
  NF_VM_READY,     /* ready line seen, health checks passing */
  NF_VM_UNHEALTHY, /* missed a health deadline; being killed */
  NF_VM_STOPPING,  /* we asked it to quit */
  NF_VM_STOPPED,   /* down, and staying down (asked, or policy says so) */
  NF_VM_BACKOFF,   /* ended; restarts when its backoff delay is over */
  NF_VM_FAILED,    /* given up on: a person must restart it */
  NF_VM_N_STATES
} NfVmState;

const char *nf_vm_state_name(NfVmState state);

/* What every guest of a fleet shares; owned by the fleet, outlives its guests. */
typedef struct {
  const NfFleetConfig *config;
  const NfFleetPaths *paths;
  NfAccel accel;                /* resolved */
  char *qemu_path;              /* resolved binary */
  gboolean use_cgroups;         /* per-guest memory cgroups (set by the fleet) */
  struct NfDisks *disks;        /* per-guest overlays, or NULL */
  struct NfHealthWheel *health; /* probe scheduler, NULL when probes are off */
  char *cgroup_name;            /* this fleet's cgroup dir name (see nf_paths_cgroup_name) */
  struct NfNet *net;            /* user-mode networking plan (net.h), or NULL */
  struct NfTap *tap;            /* --net tap: the fleet's bridge (tap.h), or NULL */
  const char *ready_url;        /* --ready http: where guests report (ready-http.h), or NULL */
  gboolean ksm;                 /* host KSM is on for this fleet: qemu memory all mergeable */
  struct NfSnapshot *snapshot;  /* --snapshot: what guests restore from, else NULL */
} NfVmEnv;

typedef struct NfVm NfVm;

/* Removes the GLib source `*id` if set and zeroes it (guests' and the
 * fleet's timers). */
void nf_vm_clear_timer(guint *id);

typedef struct {
  /* Every transition, with a short reason ("ready", "exited: crashed (qemu
   * killed by signal 9)", ...). */
  void (*state_changed)(NfVm *vm, NfVmState old_state, NfVmState new_state, const char *reason,
                        gpointer user_data);
  /* One of the guest's files (console log, status, events, qemu log) could
   * not be written: "cannot write <path>: <cause>". Once per guest until a
   * write of its status succeeds again. May be NULL. */
  void (*notice)(NfVm *vm, const char *message, gpointer user_data);
} NfVmCallbacks;

NfVm *nf_vm_new(guint id, const NfVmEnv *env, const NfVmCallbacks *callbacks, gpointer user_data);
/* Kills (or, for a detached fleet going away, leaves running: see
 * nf_vm_detach) whatever runs, removes its runtime files, frees. */
void nf_vm_free(NfVm *vm);

/* Asks for the guest to run: CREATED/STOPPED/FAILED/BACKOFF -> QUEUED (the
 * fleet's limiter then calls nf_vm_start). A user restart of a FAILED guest
 * starts its restart tally afresh. */
void nf_vm_queue(NfVm *vm);

/* The limiter admitted it: creates the channels and spawns qemu, or first
 * waits in STARTING (no qemu yet) while its disk overlay is made off the
 * loop. On failure, now or once the disk is done, the guest is FAILED with
 * why (returned in `error` when it is known now). */
gboolean nf_vm_start(NfVm *vm, GError **error);

/* Takes over a guest left running by a supervisor that died: checks the pid
 * file names a live qemu of ours (its command line carries our pid file),
 * reconnects QMP and the console, and watches it through a pidfd. Its
 * restart count and last exit are read back from status.json. Returns TRUE
 * when adopted, or when a guest recorded as running died meanwhile (it is
 * classified and goes through the restart policy); FALSE when there was
 * nothing to adopt (stale files are removed), including a guest of a
 * killed foreground supervisor (status.json says it dies with its
 * supervisor): that one is STOPPED "with its supervisor", not a crash, and
 * the caller queues it afresh. */
gboolean nf_vm_adopt(NfVm *vm);

/* Orderly stop: QMP quit (SIGTERM before QMP is up), SIGKILL after the
 * stop timeout. `force`: SIGKILL now. A guest not running goes to STOPPED.
 * The guest stays down afterwards. */
void nf_vm_stop(NfVm *vm, gboolean force);

/* Stop, then queue again (restart in place). */
void nf_vm_restart(NfVm *vm);

/* Factory reset: stop (if running), recreate the guest's disk from the
 * base, start again. FALSE when the fleet has no disks. */
gboolean nf_vm_reflash(NfVm *vm);

/* The supervisor leaves without stopping the guest (daemon mode): drop the
 * channels, leave qemu and its runtime files for the next supervisor. */
void nf_vm_detach(NfVm *vm);

guint nf_vm_id(const NfVm *vm);
const char *nf_vm_name(const NfVm *vm);
const char *nf_vm_serial(const NfVm *vm);
const char *nf_vm_mac(const NfVm *vm);

/* The guest reported ready through another channel than its console
 * (--ready http): the same event as the ready line, `how` goes into the
 * transition's reason. Ignored unless the guest is starting or booting. */
void nf_vm_report_ready(NfVm *vm, const char *how);
NfVmState nf_vm_state(const NfVm *vm);
GPid nf_vm_pid(const NfVm *vm);            /* 0 when not running */
gboolean nf_vm_is_running(const NfVm *vm); /* a qemu process exists */
gboolean nf_vm_is_restart(const NfVm *vm); /* queued to come back after an exit */
guint nf_vm_restarts(const NfVm *vm);      /* restarts since the supervisor began */
guint nf_vm_reboots(const NfVm *vm);       /* in-place guest resets (Nerves profile) */
/* Path of the guest's disk overlay, or NULL when the fleet has no disks. */
const char *nf_vm_disk_path(const NfVm *vm);
/* The last exit: kind (NF_EXIT_NONE if none), a sentence, and when (unix µs). */
NfExitKind nf_vm_exit_kind(const NfVm *vm);
const char *nf_vm_exit_reason(const NfVm *vm);
gint64 nf_vm_exit_time(const NfVm *vm);
/* The last failed write of one of the guest's files, or NULL while they are
 * written fine (see NfVmCallbacks.notice). */
const char *nf_vm_write_error(const NfVm *vm);
/* TRUE when qemu ended before its QMP handshake: a start failure (bad argv,
 * missing file, ...), as opposed to a guest that ran and then died. */
gboolean nf_vm_failed_at_start(const NfVm *vm);
/* TRUE when its last end was found, not seen: recorded as up by a previous
 * supervisor, and gone when this one came to adopt it (a host reboot). */
gboolean nf_vm_found_dead(const NfVm *vm);
/* Last lines qemu wrote to stderr (from its log), for error messages. */
char *nf_vm_stderr_tail(const NfVm *vm, guint max_lines);
/* Recent console output (from the in-memory ring). */
char *nf_vm_console_tail(const NfVm *vm, gsize max_bytes);
const char *nf_vm_console_log_path(const NfVm *vm);
/* Where this run's output starts in the console log (`logs --since
 * start`): its size when qemu was spawned, moved down with each rotation
 * since; 0 (the whole log) where that is not known (adopted, or a log
 * rotated by rename). Taken before the spawn: at the STARTING state change
 * a fast guest had already printed its boot and ready lines. */
gint64 nf_vm_console_run_start(const NfVm *vm);
/* Monotonic times (g_get_monotonic_time) of the last spawn and ready; 0 if none. */
gint64 nf_vm_started_at(const NfVm *vm);
gint64 nf_vm_ready_at(const NfVm *vm);
/* Balloon size in bytes as last reported (BALLOON_CHANGE / query-balloon). */
guint64 nf_vm_balloon_actual(const NfVm *vm);
/* TRUE once a balloon target was set by hand (nf_vm_balloon) in this run:
 * the memory policy then leaves this guest alone until its next start. */
gboolean nf_vm_balloon_manual(const NfVm *vm);
/* The guest's own memory report (virtio-balloon guest-stats) as the last
 * health probe read it, in bytes (0: not reported); `seq` counts fresh
 * reports in this run (0: none yet). No QMP traffic of its own. */
typedef struct {
  guint64 total, free, available;
  guint64 seq;
} NfVmGuestMem;
void nf_vm_guest_mem(const NfVm *vm, NfVmGuestMem *mem);
/* qemu's resident set in bytes, 0 when not running: sampled from /proc by
 * the health probes while it is being read (at most 60 s old). */
guint64 nf_vm_rss(const NfVm *vm);
/* qemu's proportional set size in bytes (shared and KSM-merged pages split
 * among their users), 0 when not running: sampled by the health probes
 * every 5 minutes, read here past 10. */
guint64 nf_vm_pss(const NfVm *vm);
/* The balloon target last asked for this run, in bytes; 0: none. */
guint64 nf_vm_balloon_target(const NfVm *vm);
/* The supervisor's QMP connection, or NULL when not connected. Borrowed. */
NfQmp *nf_vm_qmp(const NfVm *vm);

/* Console watchers: *tail gets (at most) the last `replay` bytes of output
 * (never NULL; free it), and every byte after those, also across restarts,
 * goes to `func` from the main loop until unwatched: read from the log qemu
 * writes, none missed or twice (from the socket where qemu does not log, or
 * inotify fails). Returns an id > 0. When the guest itself goes (scaled
 * away: nf_vm_free), `func` gets buf NULL and len 0 once, and the watch is
 * gone: a client following it hears the end rather than silence. So a
 * watcher may keep `vm` to unwatch it until then (nf_fleet_find_vm no
 * longer finds a guest that is being scaled away). */
typedef void (*NfVmConsoleFunc)(NfVm *vm, const char *buf, gsize len, gpointer user_data);
guint nf_vm_console_watch(NfVm *vm, gsize replay, char **tail, NfVmConsoleFunc func,
                          gpointer user_data);
void nf_vm_console_unwatch(NfVm *vm, guint id);
/* The log offset at which a watcher added now starts (where its replay
 * ends): `logs --follow` sends the file up to here, then the stream. Starts
 * following the log if nobody does; a caller whose watcher does not come
 * after all (its client went) lets it go with nf_vm_console_unanchor. */
gint64 nf_vm_console_watch_start(NfVm *vm);
void nf_vm_console_unanchor(NfVm *vm);
/* Keeps the console log qemu writes under --log-max (a stat, when the log
 * was written to since the last look): the health probes' slow check calls
 * it every NF_VM_SLOW_CHECK_US (config slow_check_ms), and with probes off
 * a fleet timer at the same period. */
#define NF_VM_SLOW_CHECK_US (30 * G_USEC_PER_SEC)
void nf_vm_console_cap_log(NfVm *vm);
/* Input for the guest's console; -1 when it has no console now. */
gssize nf_vm_console_write(NfVm *vm, const char *buf, gsize len);

/* For the fleet's storm guard: TRUE (and remembers `now_us`) unless this
 * guest was already counted within the last `window_ms`. */
gboolean nf_vm_storm_count_once(NfVm *vm, guint window_ms, gint64 now_us);

/* Sets the balloon target (bytes) over QMP; `cb` gets qemu's reply. FALSE
 * (and no callback) when the guest has no QMP connection now. */
gboolean nf_vm_balloon(NfVm *vm, guint64 bytes, NfQmpReplyFunc cb, gpointer user_data);
