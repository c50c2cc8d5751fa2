/*
 * process.c: child spawn with fd mapping, pdeathsig and pidfd exit watch
 * (see process.h for why each).
 *
 * Spawning is a clone(CLONE_VM | CLONE_VFORK) onto a small stack of its own,
 * as posix_spawn does, not a fork: forking copied the page tables of the
 * whole supervisor (~13 ms of its CPU per guest with 1,000 guests, and more
 * with more), for a child that only sets up a few fds and calls exec. The
 * child shares our memory until exec, so it makes system calls only, with
 * every signal blocked and its handlers reset before the mask comes back;
 * an exec failure reaches the parent through shared memory (issue 17).
 *
 * A child spawned with `watch_later` has no pidfd until its caller says its
 * stream ended (nf_process_watch) or a check finds it a zombie
 * (nf_process_check_exit): its pid stays ours until waitpid, so the late
 * pidfd cannot name another process.
 */
#include "supervisor/process.h"
#include "supervisor/poller.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <glib-unix.h>
#include <gio/gio.h>

struct NfProcess {
  GPid pid;
  int pidfd;      /* -1 when the kernel has none (child watch) or not watched yet */
  guint watch_id; /* poller id (pidfd) or GLib child watch; 0: not watched (yet) */
  gboolean exited;
  gboolean is_child;
  gboolean status_known;
  int status;
  NfProcessExitFunc on_exit;
  gpointer user_data;
};

typedef struct {
  char *const *argv;
  const int *source_fds;
  const int *target_fds;
  guint n_fds;
  int log_fd;
  pid_t parent;
  gboolean die_with_parent;
  gboolean no_thp; /* see NfProcessExtras */
  gboolean merge_any;
  gboolean no_aslr;
  char *const *envp; /* NULL: ours */
  sigset_t mask;     /* the parent's, given back to the child before exec */
  int err;           /* set by the child when it cannot exec */
} ChildSetup;

#ifndef PR_SET_MEMORY_MERGE
#define PR_SET_MEMORY_MERGE 67
#endif

#define NF_PROCESS_MAX_FDS 8
#define NF_PROCESS_STACK (64 * 1024)

static int child_main(void *data);
static gboolean pidfd_cb(int fd, guint32 events, gpointer data);
static void unwatch(NfProcess *proc);
static void child_watch_cb(GPid pid, int status, gpointer data);
static void deliver_exit(NfProcess *proc, int status);
static void watch_child(NfProcess *proc);

/* Runs in the clone, on its own stack, sharing our memory: system calls
 * only, no allocation, no locks. Not instrumented: the sanitizers' shadow of
 * this borrowed stack would outlive it. */
__attribute__((no_sanitize("address", "undefined"))) static int child_main(void *data)
{
  ChildSetup *cs = data;
  int high = 3;
  for (guint i = 0; i < cs->n_fds; i++)
    high = MAX(high, cs->target_fds[i] + 1);
  /* Every fd we keep first goes above the targets, so that no dup2 below
   * overwrites a source still to be moved. */
  int moved[NF_PROCESS_MAX_FDS];
  for (guint i = 0; i < cs->n_fds; i++)
    if ((moved[i] = fcntl(cs->source_fds[i], F_DUPFD, high)) < 0)
      goto fail;
  int log_fd = cs->log_fd >= 0 ? fcntl(cs->log_fd, F_DUPFD, high) : -1;
  int null_fd = open("/dev/null", O_RDONLY);
  if ((cs->log_fd >= 0 && log_fd < 0) || null_fd < 0)
    goto fail;
  if (dup2(null_fd, 0) < 0 || (log_fd >= 0 && (dup2(log_fd, 1) < 0 || dup2(log_fd, 2) < 0)))
    goto fail;
  for (guint i = 0; i < cs->n_fds; i++)
    if (dup2(moved[i], cs->target_fds[i]) < 0)
      goto fail;
  /* Nothing else of ours goes through exec: fds between the targets, then
   * everything above them (the moved copies included). */
  for (int fd = 3; fd < high; fd++) {
    gboolean target = FALSE;
    for (guint i = 0; i < cs->n_fds; i++)
      target = target || cs->target_fds[i] == fd;
    if (!target)
      close(fd);
  }
  syscall(SYS_close_range, high, ~0U, 0);

  setpgid(0, 0);
  if (cs->die_with_parent) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    /* The parent may have died before prctl: nobody would tell us. */
    if (getppid() != cs->parent)
      _exit(127);
  }
  if (cs->no_thp)
    prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0);
  if (cs->merge_any)
    prctl(PR_SET_MEMORY_MERGE, 1, 0, 0, 0);
  if (cs->no_aslr) {
    int persona = personality(0xffffffff);
    if (persona != -1)
      personality((unsigned long)persona | ADDR_NO_RANDOMIZE);
  }
  /* Our handlers are the supervisor's and write to its memory: reset them
   * before any signal can be delivered here. */
  for (int sig = 1; sig < NSIG; sig++) {
    struct sigaction sa;
    if (sig != SIGKILL && sig != SIGSTOP && sigaction(sig, NULL, &sa) == 0 &&
        sa.sa_handler != SIG_DFL && sa.sa_handler != SIG_IGN) {
      sa.sa_handler = SIG_DFL;
      sa.sa_flags = 0;
      sigaction(sig, &sa, NULL);
    }
  }
  sigprocmask(SIG_SETMASK, &cs->mask, NULL);
  execvpe(cs->argv[0], cs->argv, cs->envp ? cs->envp : environ);
fail:
  cs->err = errno ? errno : EINVAL;
  _exit(127);
}

NfProcess *nf_process_spawn(char *const *argv, const int *source_fds, const int *target_fds,
                            guint n_fds, int log_fd, gboolean die_with_parent,
                            NfProcessExitFunc on_exit, gpointer user_data, GError **error)
{
  return nf_process_spawn_with(argv, NULL, source_fds, target_fds, n_fds, log_fd, die_with_parent,
                               on_exit, user_data, error);
}

NfProcess *nf_process_spawn_with(char *const *argv, const NfProcessExtras *extras,
                                 const int *source_fds, const int *target_fds, guint n_fds,
                                 int log_fd, gboolean die_with_parent, NfProcessExitFunc on_exit,
                                 gpointer user_data, GError **error)
{
  g_return_val_if_fail(n_fds <= NF_PROCESS_MAX_FDS, NULL);
  ChildSetup cs = {.argv = argv,
                   .source_fds = source_fds,
                   .target_fds = target_fds,
                   .n_fds = n_fds,
                   .log_fd = log_fd,
                   .parent = getpid(),
                   .die_with_parent = die_with_parent,
                   .no_thp = extras && extras->no_thp,
                   .merge_any = extras && extras->merge_any,
                   .no_aslr = extras && extras->no_aslr,
                   .envp = extras ? extras->envp : NULL};
  void *stack = mmap(NULL, NF_PROCESS_STACK, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
  if (stack == MAP_FAILED) {
    int e = errno;
    g_set_error(error, G_SPAWN_ERROR, G_SPAWN_ERROR_FORK, "cannot spawn %s: %s", argv[0],
                g_strerror(e));
    return NULL;
  }
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &cs.mask);
  /* CLONE_VFORK: we resume once the child has exec'd or exited. */
  pid_t pid =
      clone(child_main, (char *)stack + NF_PROCESS_STACK, CLONE_VM | CLONE_VFORK | SIGCHLD, &cs);
  int clone_errno = errno;
  pthread_sigmask(SIG_SETMASK, &cs.mask, NULL);
  munmap(stack, NF_PROCESS_STACK);
  if (pid < 0) {
    g_set_error(error, G_SPAWN_ERROR, G_SPAWN_ERROR_FORK, "cannot spawn %s: %s", argv[0],
                g_strerror(clone_errno));
    return NULL;
  }
  if (cs.err) {
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
      ;
    g_set_error(error, G_SPAWN_ERROR,
                cs.err == ENOENT   ? G_SPAWN_ERROR_NOENT
                : cs.err == EACCES ? G_SPAWN_ERROR_ACCES
                                   : G_SPAWN_ERROR_FAILED,
                "Failed to execute child process \u201c%s\u201d (%s)", argv[0], g_strerror(cs.err));
    return NULL;
  }

  NfProcess *proc = g_new0(NfProcess, 1);
  proc->pid = pid;
  proc->is_child = TRUE;
  proc->on_exit = on_exit;
  proc->user_data = user_data;
  proc->pidfd = -1;
  if (!(extras && extras->watch_later))
    watch_child(proc);
  return proc;
}

/* A pidfd on the poller, else (no pidfd in this kernel) a GLib child watch. */
static void watch_child(NfProcess *proc)
{
  proc->pidfd = (int)syscall(SYS_pidfd_open, proc->pid, 0);
  if (proc->pidfd >= 0) {
    g_unix_set_fd_nonblocking(proc->pidfd, TRUE, NULL);
    proc->watch_id = nf_poller_add(proc->pidfd, EPOLLIN, pidfd_cb, proc);
  }
  if (proc->watch_id == 0) {
    if (proc->pidfd >= 0)
      close(proc->pidfd);
    proc->pidfd = -1;
    proc->watch_id = g_child_watch_add(proc->pid, child_watch_cb, proc);
  }
}

void nf_process_watch(NfProcess *proc)
{
  if (proc == NULL || proc->exited || proc->watch_id != 0)
    return;
  watch_child(proc);
}

gboolean nf_process_check_exit(NfProcess *proc)
{
  if (proc == NULL || proc->exited || proc->watch_id != 0 || !proc->is_child)
    return FALSE;
  siginfo_t info = {0};
  if (waitid(P_PID, (id_t)proc->pid, &info, WEXITED | WNOHANG | WNOWAIT) != 0 || info.si_pid == 0)
    return FALSE;
  watch_child(proc);
  return TRUE;
}

static void unwatch(NfProcess *proc)
{
  if (proc->watch_id == 0)
    return;
  /* Out of the poller before the pidfd closes: its number may be reused. */
  if (proc->pidfd >= 0)
    nf_poller_remove(proc->watch_id);
  else
    g_source_remove(proc->watch_id);
  proc->watch_id = 0;
}

static void deliver_exit(NfProcess *proc, int status)
{
  proc->exited = TRUE;
  proc->status = status;
  if (proc->pidfd >= 0)
    unwatch(proc);
  else
    proc->watch_id = 0; /* the child watch source is finishing by itself */
  if (proc->pidfd >= 0) {
    close(proc->pidfd);
    proc->pidfd = -1;
  }
  if (proc->on_exit)
    proc->on_exit(proc, status, proc->user_data);
}

static gboolean pidfd_cb(int fd, guint32 events, gpointer data)
{
  NfProcess *proc = data;
  int status = 0;
  if (!proc->is_child) {
    deliver_exit(proc, 0);
    return G_SOURCE_REMOVE;
  }
  /* Until it is reaped, the zombie keeps its pid, so its process group
   * cannot be anyone else's: whatever of the guest outlived it (children
   * of a wrapper script given as --qemu) goes with it. */
  kill(-proc->pid, SIGKILL);
  pid_t r = waitpid(proc->pid, &status, WNOHANG);
  if (r == 0)
    return G_SOURCE_CONTINUE; /* spurious: not a zombie yet */
  proc->status_known = r > 0;
  deliver_exit(proc, r > 0 ? status : 0);
  return G_SOURCE_REMOVE;
}

static void child_watch_cb(GPid pid, int status, gpointer data)
{
  ((NfProcess *)data)->status_known = TRUE;
  deliver_exit(data, status);
}

NfProcess *nf_process_adopt(GPid pid, NfProcessExitFunc on_exit, gpointer user_data, GError **error)
{
  int fd = (int)syscall(SYS_pidfd_open, pid, 0);
  if (fd < 0) {
    int e = errno;
    g_set_error(error, G_IO_ERROR, g_io_error_from_errno(e), "pid %d: %s", (int)pid, g_strerror(e));
    return NULL;
  }
  NfProcess *proc = g_new0(NfProcess, 1);
  proc->pid = pid;
  proc->pidfd = fd;
  proc->on_exit = on_exit;
  proc->user_data = user_data;
  proc->watch_id = nf_poller_add(fd, EPOLLIN, pidfd_cb, proc);
  if (proc->watch_id == 0) {
    int e = errno;
    close(fd);
    g_free(proc);
    g_set_error(error, G_IO_ERROR, g_io_error_from_errno(e), "pid %d: cannot watch: %s", (int)pid,
                g_strerror(e));
    return NULL;
  }
  return proc;
}

gboolean nf_process_status_known(const NfProcess *proc)
{
  return proc->status_known;
}

GPid nf_process_pid(const NfProcess *proc)
{
  return proc->pid;
}

gboolean nf_process_has_exited(const NfProcess *proc)
{
  return proc->exited;
}

void nf_process_signal(NfProcess *proc, int sig)
{
  if (proc->exited)
    return;
  /* A child of ours leads its own process group (child_main) and is not
   * reaped yet, so the group is the guest's: a wrapper script given as
   * --qemu and the qemu it forked both get the signal. ESRCH: the child has
   * not reached setpgid yet. */
  if (proc->is_child && kill(-proc->pid, sig) == 0)
    return;
  if (proc->pidfd >= 0)
    syscall(SYS_pidfd_send_signal, proc->pidfd, sig, NULL, 0);
  else
    kill(proc->pid, sig);
}

void nf_process_free(NfProcess *proc)
{
  if (proc == NULL)
    return;
  unwatch(proc);
  if (!proc->exited && proc->is_child) {
    nf_process_signal(proc, SIGKILL);
    int status;
    while (waitpid(proc->pid, &status, 0) < 0 && errno == EINTR)
      ;
  } else if (!proc->exited) {
    /* Not ours to reap; kill it and let its parent (init) collect it. */
    nf_process_signal(proc, SIGKILL);
  }
  if (proc->pidfd >= 0)
    close(proc->pidfd);
  g_free(proc);
}

void nf_process_forget(NfProcess *proc)
{
  if (proc == NULL)
    return;
  unwatch(proc);
  if (proc->pidfd >= 0)
    close(proc->pidfd);
  g_free(proc);
}

guint64 nf_process_stat_field(GPid pid, guint field)
{
  char path[64];
  g_snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
  g_autofree char *text = NULL;
  if (field < 3 || !g_file_get_contents(path, &text, NULL, NULL))
    return 0;
  /* "pid (comm) state ppid ...": comm may hold spaces and parentheses, so
   * fields are counted from the last ')' (field 2's end). */
  const char *p = strrchr(text, ')');
  if (p == NULL)
    return 0;
  g_auto(GStrv) rest = g_strsplit(p + 2, " ", (gint)(field - 1));
  if (g_strv_length(rest) < field - 2)
    return 0;
  return g_ascii_strtoull(rest[field - 3], NULL, 10);
}

char *nf_process_describe_status(int wait_status)
{
  if (WIFEXITED(wait_status))
    return g_strdup_printf("exited with status %d", WEXITSTATUS(wait_status));
  if (WIFSIGNALED(wait_status))
    return g_strdup_printf("killed by signal %d (%s)", WTERMSIG(wait_status),
                           g_strsignal(WTERMSIG(wait_status)));
  return g_strdup_printf("ended with wait status 0x%x", wait_status);
}
