/*
 * control-listen.c: the control socket's listening end (control.c serves
 * the clients). It binds <runtime dir>/control.sock born 0600, accepts a
 * bounded number of connections per wake-up and hands each to control.c,
 * and rests when out of fds instead of spinning on a socket that stays
 * readable. It also keeps the fleet findable: when the runtime dir, the
 * fleet lock or the socket is removed under a running fleet, it takes the
 * lock again and makes the socket again. nf_control_new and
 * nf_control_free (control.c) start and stop what these callbacks use.
 */
#include "supervisor/control-private.h"

#include <errno.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <gio/gio.h>
#include <glib-unix.h>

/* Out of fds at accept: how long the listener rests before trying again. */
#define NF_CONTROL_ACCEPT_PAUSE_MS 500
/* After the runtime dir's files are removed: quiet time before putting back. */
#define NF_CONTROL_REPAIR_DELAY_MS 200

static gboolean accept_resume_cb(gpointer data);
static gboolean runtime_repair_cb(gpointer data);

/* A listening socket at `path` (replacing a file there), or -1 with an error. */
int nf_control_listen_at(const char *path, GError **error)
{
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    int e = errno;
    g_set_error(error, G_IO_ERROR, g_io_error_from_errno(e), "control socket: %s", g_strerror(e));
    return -1;
  }
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  g_strlcpy(addr.sun_path, path, sizeof(addr.sun_path));
  /* We hold the fleet lock, so a socket file here is a dead supervisor's. */
  (void)unlink(path);
  /* Born 0600: no window in which another user could connect. */
  mode_t old_mask = umask(0177);
  int rc = bind(fd, (struct sockaddr *)&addr, sizeof(addr));
  int e = errno;
  umask(old_mask);
  if (rc < 0 || listen(fd, 128) < 0) {
    e = rc < 0 ? e : errno;
    close(fd);
    (void)unlink(path);
    g_set_error(error, G_IO_ERROR, g_io_error_from_errno(e), "control socket %s: %s", path,
                g_strerror(e));
    return -1;
  }
  return fd;
}

gboolean nf_control_accept_cb(int fd, GIOCondition cond, gpointer data)
{
  NfControl *ctl = data;
  /* A bounded number per wake-up, so a connect storm cannot starve the loop. */
  for (int i = 0; i < 64; i++) {
    int cfd = accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (cfd < 0 && (errno == EMFILE || errno == ENFILE)) {
      /* The connection stays queued and the socket readable: watching it
       * now would spin. Pause, say so once, and try again later; the
       * guests' own fds are not at stake (they are open already). */
      nf_control_log(ctl,
                     "control socket: %s; new clients wait until some close (raise the open-file "
                     "limit: `ulimit -n`, LimitNOFILE=)",
                     g_strerror(errno));
      ctl->listen_src = 0;
      ctl->resume_src = g_timeout_add(NF_CONTROL_ACCEPT_PAUSE_MS, accept_resume_cb, ctl);
      return G_SOURCE_REMOVE;
    }
    if (cfd < 0) {
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED)
        nf_control_log(ctl, "accept: %s", g_strerror(errno));
      break;
    }
    nf_control_client_new(ctl, cfd);
  }
  return G_SOURCE_CONTINUE;
}

static gboolean accept_resume_cb(gpointer data)
{
  NfControl *ctl = data;
  ctl->resume_src = 0;
  ctl->listen_src = g_unix_fd_add(ctl->listen_fd, G_IO_IN, nf_control_accept_cb, ctl);
  return G_SOURCE_REMOVE;
}

/* The runtime dir (or the lock or socket in it) was removed under us: by
 * hand, or by a tmpfiles cleaner. Without them `ps` and `down` cannot find a
 * fleet that still runs, and another `run` could start a second supervisor
 * of it. Once the removal settles, both are put back. */
void nf_control_runtime_changed_cb(GFileMonitor *monitor, GFile *file, GFile *other,
                                   GFileMonitorEvent event, gpointer data)
{
  NfControl *ctl = data;
  if (event != G_FILE_MONITOR_EVENT_DELETED && event != G_FILE_MONITOR_EVENT_MOVED_OUT)
    return;
  /* After the last of a burst (`rm -rf` removes file by file, then the dir). */
  g_clear_handle_id(&ctl->repair_src, g_source_remove);
  ctl->repair_src = g_timeout_add(NF_CONTROL_REPAIR_DELAY_MS, runtime_repair_cb, ctl);
}

static gboolean runtime_repair_cb(gpointer data)
{
  NfControl *ctl = data;
  ctl->repair_src = 0;
  g_autoptr(GError) error = NULL;
  if (!nf_fleet_retake_lock(ctl->fleet, &error)) {
    nf_control_log(ctl, "runtime dir %s: %s", nf_fleet_runtime_dir(ctl->fleet), error->message);
    return G_SOURCE_REMOVE;
  }
  struct stat st;
  if (lstat(ctl->path, &st) == 0)
    return G_SOURCE_REMOVE;
  int fd = nf_control_listen_at(ctl->path, &error);
  if (fd < 0) {
    nf_control_log(ctl,
                   "runtime dir %s was removed; the control socket could not be made again: %s",
                   nf_fleet_runtime_dir(ctl->fleet), error->message);
    return G_SOURCE_REMOVE;
  }
  g_clear_handle_id(&ctl->listen_src, g_source_remove);
  g_clear_handle_id(&ctl->resume_src, g_source_remove);
  close(ctl->listen_fd);
  ctl->listen_fd = fd;
  ctl->listen_src = g_unix_fd_add(fd, G_IO_IN, nf_control_accept_cb, ctl);
  nf_control_log(ctl,
                 "runtime dir %s was removed under the running fleet: its lock and control socket "
                 "are back (guests kept running; their pid files are not, so if this supervisor "
                 "dies too, `down` finds them by their command lines)",
                 nf_fleet_runtime_dir(ctl->fleet));
  return G_SOURCE_REMOVE;
}
