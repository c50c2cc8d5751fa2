/*
 * poll-guard.c: the main loop's poll function, which survives an open-file
 * limit lowered below the number of fds the loop polls (poll-guard.h says
 * why). Normal path: one g_poll, nothing else. Only a poll refused with
 * EINVAL while the set is larger than RLIMIT_NOFILE takes the other paths:
 * raise the soft limit back (once per lowering), else wait on the reserve
 * epoll set: each fd added for the one wait and removed after, so the set
 * always mirrors what GLib asked for (slow, a few syscalls per fd, but this
 * is a state to get out of, not to live in).
 */
#include "supervisor/poll-guard.h"

#include <errno.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <unistd.h>

struct NfPollGuard {
  GMainContext *ctx;
  int epfd; /* the reserve set, made while fds were still allowed */
  NfPollGuardNotice notice;
  gpointer user_data;
  gboolean degraded; /* waiting through the reserve set */
};

/* GPollFunc has no user data: the one live guard. */
static NfPollGuard *the_guard;

static gint guard_poll(GPollFD *fds, guint nfds, gint timeout);
static gint reserve_poll(NfPollGuard *g, GPollFD *fds, guint nfds, gint timeout);
static void say(NfPollGuard *g, const char *fmt, ...) G_GNUC_PRINTF(2, 3);

NfPollGuard *nf_poll_guard_install(GMainContext *ctx, NfPollGuardNotice notice, gpointer user_data,
                                   GError **error)
{
  if (the_guard) {
    g_set_error(error, G_FILE_ERROR, G_FILE_ERROR_EXIST,
                "a poll guard is already installed in this process");
    return NULL;
  }
  int epfd = epoll_create1(EPOLL_CLOEXEC);
  if (epfd < 0) {
    int e = errno;
    g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(e),
                "cannot make the main loop's reserve epoll set: %s", g_strerror(e));
    return NULL;
  }
  NfPollGuard *g = g_new0(NfPollGuard, 1);
  g->ctx = g_main_context_ref(ctx ? ctx : g_main_context_default());
  g->epfd = epfd;
  g->notice = notice;
  g->user_data = user_data;
  the_guard = g;
  g_main_context_set_poll_func(g->ctx, guard_poll);
  return g;
}

void nf_poll_guard_free(NfPollGuard *guard)
{
  if (guard == NULL)
    return;
  g_main_context_set_poll_func(guard->ctx, NULL);
  g_main_context_unref(guard->ctx);
  close(guard->epfd);
  if (the_guard == guard)
    the_guard = NULL;
  g_free(guard);
}

static void say(NfPollGuard *g, const char *fmt, ...)
{
  if (g->notice == NULL)
    return;
  va_list ap;
  va_start(ap, fmt);
  g_autofree char *msg = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  g->notice(msg, g->user_data);
}

static gint guard_poll(GPollFD *fds, guint nfds, gint timeout)
{
  NfPollGuard *g = the_guard;
  gint r = g_poll(fds, nfds, timeout);
  if (g == NULL)
    return r;
  if (r >= 0) {
    if (g->degraded) {
      g->degraded = FALSE;
      say(g, "the main loop's %u descriptors fit the open-file limit again: polling as before",
          nfds);
    }
    return r;
  }
  int e = errno;
  struct rlimit rl;
  if (e != EINVAL || getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= nfds) {
    errno = e; /* not the limit: GLib reports it as usual */
    return r;
  }
  if (rl.rlim_max >= nfds) {
    rlim_t low = rl.rlim_cur;
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) == 0) {
      say(g,
          "open-file limit lowered to %lu under the running supervisor, below the %u "
          "descriptors its main loop polls: raised the soft limit back to %lu (the hard limit)",
          (unsigned long)low, nfds, (unsigned long)rl.rlim_max);
      /* Guarded again: the limit may have been lowered once more meanwhile
       * (test-exhaustion lowers the hard one on seeing this notice; a plain
       * retry then failed and GLib warned once). */
      return guard_poll(fds, nfds, timeout);
    }
  }
  if (!g->degraded) {
    g->degraded = TRUE;
    say(g,
        "open-file limit %lu (hard %lu) is below the %u descriptors the main loop polls: "
        "waiting through a reserve epoll set; the guests keep running, but anything that "
        "needs a new descriptor (a client, a guest's restart, a log write) fails until the "
        "limit is raised (`prlimit --pid %d --nofile=N:N`, LimitNOFILE= in a service unit)",
        (unsigned long)rl.rlim_cur, (unsigned long)rl.rlim_max, nfds, (int)getpid());
  }
  return reserve_poll(g, fds, nfds, timeout);
}

/* poll(2) semantics on the reserve epoll set: level-triggered, ERR and HUP
 * always reported, NVAL for a closed fd. GLib merges a source's duplicate
 * fds, but two sources may still poll one fd: the later entry takes the
 * first one's result, filtered by what it asked for. */
static gint reserve_poll(NfPollGuard *g, GPollFD *fds, guint nfds, gint timeout)
{
  gint ready = 0;
  gboolean dups = FALSE;
  for (guint i = 0; i < nfds; i++) {
    fds[i].revents = 0;
    if (fds[i].fd < 0)
      continue;
    struct epoll_event ev = {.events = fds[i].events & (EPOLLIN | EPOLLOUT | EPOLLPRI),
                             .data.u32 = i};
    if (epoll_ctl(g->epfd, EPOLL_CTL_ADD, fds[i].fd, &ev) == 0)
      continue;
    if (errno == EEXIST) {
      dups = TRUE;
      for (guint j = 0; j < i; j++) {
        if (fds[j].fd == fds[i].fd) {
          ev.events |= fds[j].events & (EPOLLIN | EPOLLOUT | EPOLLPRI);
          ev.data.u32 = j;
          epoll_ctl(g->epfd, EPOLL_CTL_MOD, fds[i].fd, &ev);
          break;
        }
      }
    } else if (errno == EBADF) {
      fds[i].revents = G_IO_NVAL;
      ready++;
    } else {
      /* EPERM: a regular file, which poll calls always ready. */
      fds[i].revents = fds[i].events & (G_IO_IN | G_IO_OUT);
      ready += fds[i].revents != 0;
    }
  }
  struct epoll_event evs[256];
  int n = epoll_wait(g->epfd, evs, G_N_ELEMENTS(evs), ready ? 0 : timeout);
  int e = errno;
  for (int k = 0; k < n; k++) {
    guint i = evs[k].data.u32;
    fds[i].revents |= evs[k].events & (EPOLLIN | EPOLLOUT | EPOLLPRI | EPOLLERR | EPOLLHUP);
  }
  if (dups) {
    for (guint i = 0; i < nfds; i++)
      for (guint j = 0; j < i; j++)
        if (fds[i].fd >= 0 && fds[j].fd == fds[i].fd) {
          fds[i].revents = fds[j].revents & (fds[i].events | G_IO_ERR | G_IO_HUP | G_IO_NVAL);
          break;
        }
  }
  for (guint i = 0; i < nfds; i++)
    if (fds[i].fd >= 0)
      epoll_ctl(g->epfd, EPOLL_CTL_DEL, fds[i].fd, NULL);
  if (n < 0) {
    errno = e;
    return -1;
  }
  ready = 0;
  for (guint i = 0; i < nfds; i++)
    ready += fds[i].revents != 0;
  return ready;
}
