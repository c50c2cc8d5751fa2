/*
 * process.c: child spawn with fd mapping, pdeathsig and pidfd exit watch
 * (see process.h for why each).
 */
#include "supervisor/process.h"
#include "supervisor/poller.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <glib-unix.h>
#include <gio/gio.h>

struct NfProcess {
  GPid pid;
  int pidfd;      /* -1 when the kernel has none: child watch instead */
  guint watch_id; /* poller id (pidfd) or GLib child watch */
  gboolean exited;
  gboolean is_child;
  gboolean status_known;
  int status;
  NfProcessExitFunc on_exit;
  gpointer user_data;
};

typedef struct {
  pid_t parent;
  gboolean die_with_parent;
  gboolean no_thp;
  gboolean merge_any;
} ChildSetup;

#ifndef PR_SET_MEMORY_MERGE
#define PR_SET_MEMORY_MERGE 67
#endif

static void child_setup(gpointer data);
static gboolean pidfd_cb(int fd, guint32 events, gpointer data);
static void unwatch(NfProcess *proc);
static void child_watch_cb(GPid pid, int status, gpointer data);
static void deliver_exit(NfProcess *proc, int status);

static void child_setup(gpointer data)
{
  const ChildSetup *cs = data;
  /* Only async-signal-safe calls between fork and exec. */
  setpgid(0, 0);
  if (cs->die_with_parent) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    /* The parent may have died between fork and prctl: nobody would tell us. */
    if (getppid() != cs->parent)
      _exit(127);
  }
  if (cs->no_thp)
    prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0);
  if (cs->merge_any)
    prctl(PR_SET_MEMORY_MERGE, 1, 0, 0, 0);
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
  ChildSetup cs = {.parent = getpid(),
                   .die_with_parent = die_with_parent,
                   .no_thp = extras && extras->no_thp,
                   .merge_any = extras && extras->merge_any};
  GPid pid = 0;
  GSpawnFlags flags = G_SPAWN_DO_NOT_REAP_CHILD | G_SPAWN_SEARCH_PATH | G_SPAWN_STDIN_FROM_DEV_NULL;

  if (!g_spawn_async_with_pipes_and_fds(NULL, (const char *const *)argv, NULL, flags, child_setup,
                                        &cs, -1, log_fd, log_fd, source_fds, target_fds, n_fds,
                                        &pid, NULL, NULL, NULL, error))
    return NULL;

  NfProcess *proc = g_new0(NfProcess, 1);
  proc->pid = pid;
  proc->is_child = TRUE;
  proc->on_exit = on_exit;
  proc->user_data = user_data;
  proc->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
  if (proc->pidfd >= 0) {
    g_unix_set_fd_nonblocking(proc->pidfd, TRUE, NULL);
    proc->watch_id = nf_poller_add(proc->pidfd, EPOLLIN, pidfd_cb, proc);
  }
  if (proc->watch_id == 0) {
    if (proc->pidfd >= 0)
      close(proc->pidfd);
    proc->pidfd = -1;
    proc->watch_id = g_child_watch_add(pid, child_watch_cb, proc);
  }
  return proc;
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
  /* A child of ours leads its own process group (child_setup) and is not
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

char *nf_process_describe_status(int wait_status)
{
  if (WIFEXITED(wait_status))
    return g_strdup_printf("exited with status %d", WEXITSTATUS(wait_status));
  if (WIFSIGNALED(wait_status))
    return g_strdup_printf("killed by signal %d (%s)", WTERMSIG(wait_status),
                           g_strsignal(WTERMSIG(wait_status)));
  return g_strdup_printf("ended with wait status 0x%x", wait_status);
}
