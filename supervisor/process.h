/*
 * process.h: start a child (qemu) with inherited channel fds and watch it exit.
 *
 * The child gets its own process group, so a terminal's Ctrl-C reaches only
 * the supervisor, which then stops guests in order; and PR_SET_PDEATHSIG, so
 * a supervisor killed with SIGKILL never leaves orphans behind. Exit is
 * noticed through a pidfd on the main loop (no SIGCHLD handler, no polling);
 * kernels without pidfd fall back to a GLib child watch.
 *
 * A pidfd is one open file per guest, and at 10,000 guests open files are
 * what runs out (issue 17). A caller that already holds a stream the child
 * ends when it dies (the QMP socket) can spawn with `watch_later` and call
 * nf_process_watch() when that stream ends: a child of ours keeps its pid
 * until we reap it, so the pidfd opened late is still the right process,
 * and it is readable at once if the child is already gone.
 */
#pragma once
#include <glib.h>

typedef struct NfProcess NfProcess;

/* `wait_status` as from waitpid(). The NfProcess stays valid; free it later. */
typedef void (*NfProcessExitFunc)(NfProcess *proc, int wait_status, gpointer user_data);

/* Spawns argv[0] (searched in PATH). `source_fds[i]` appears in the child as
 * `target_fds[i]`; stdin is /dev/null; stdout and stderr go to `log_fd`
 * (-1: inherit). `on_exit` runs once from the main loop when the child is
 * reaped. `die_with_parent`: kill the child if the supervisor dies. */
NfProcess *nf_process_spawn(char *const *argv, const int *source_fds, const int *target_fds,
                            guint n_fds, int log_fd, gboolean die_with_parent,
                            NfProcessExitFunc on_exit, gpointer user_data, GError **error);

/* Memory settings the child takes before exec (both survive exec; see
 * qemu-argv.h for why qemu gets them), and its environment. */
typedef struct {
  gboolean no_thp;    /* PR_SET_THP_DISABLE: no transparent huge pages */
  gboolean merge_any; /* PR_SET_MEMORY_MERGE: all its anonymous memory KSM-mergeable */
  gboolean no_aslr;   /* personality ADDR_NO_RANDOMIZE: the same layout in every child */
  char *const *envp;  /* the child's whole environment; NULL: ours */
  /* No pidfd yet: the caller calls nf_process_watch() once a stream that
   * ends with the child ends (or nf_process_check_exit() now and then). */
  gboolean watch_later;
} NfProcessExtras;

/* nf_process_spawn with `extras` (may be NULL). A prctl the kernel does not
 * know is skipped: these are savings, not requirements. */
NfProcess *nf_process_spawn_with(char *const *argv, const NfProcessExtras *extras,
                                 const int *source_fds, const int *target_fds, guint n_fds,
                                 int log_fd, gboolean die_with_parent, NfProcessExitFunc on_exit,
                                 gpointer user_data, GError **error);

/* Watches a running process that is not our child (a guest adopted from a
 * supervisor that died). Its exit is seen through a pidfd, but its exit
 * status cannot be: nf_process_status_known() is FALSE then. Fails when the
 * process is already gone. */
NfProcess *nf_process_adopt(GPid pid, NfProcessExitFunc on_exit, gpointer user_data,
                            GError **error);
gboolean nf_process_status_known(const NfProcess *proc);

/* Starts watching a child spawned with `watch_later` (its exit callback
 * follows, from the main loop, once it is gone; at once if it already is).
 * Idempotent; a no-op once watched or exited. */
void nf_process_watch(NfProcess *proc);

/* For a child not watched yet: TRUE when it has exited (a zombie waiting to
 * be reaped), and then it is watched, so its exit callback follows. One
 * waitid(WNOWAIT) call, no fd: a safety net for a child whose stream
 * outlives it (a wrapper given as --qemu killed while its qemu runs on). */
gboolean nf_process_check_exit(NfProcess *proc);

GPid nf_process_pid(const NfProcess *proc);
gboolean nf_process_has_exited(const NfProcess *proc);

/* Sends `sig` unless the child was already reaped (then does nothing). A
 * child of ours gets it with its whole process group (what a wrapper script
 * forked goes too); an adopted process through its pidfd, so a recycled pid
 * is never hit. When a child exits, whatever is left in its group is
 * SIGKILLed before it is reaped. */
void nf_process_signal(NfProcess *proc, int sig);

/* Frees the handle. A child still running is SIGKILLed and reaped first
 * (blocking, bounded by the kernel's kill latency): no zombie, no orphan. */
void nf_process_free(NfProcess *proc);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(NfProcess, nf_process_free)

/* Frees the handle but leaves the process running (a detached supervisor
 * going away without stopping its guests). */
void nf_process_forget(NfProcess *proc);

/* Field `field` (numbered from 1, as in proc(5): 4 ppid, 22 starttime) of
 * /proc/PID/stat, or 0 when the process or the field is not there. A pid
 * with its start time names one process: pids are reused, the pair is not. */
guint64 nf_process_stat_field(GPid pid, guint field);

/* Describes a wait status for people: "exited with status 1",
 * "killed by signal 9 (Killed)". */
char *nf_process_describe_status(int wait_status);
