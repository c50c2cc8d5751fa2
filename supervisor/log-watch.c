/*
 * log-watch.c: one-shot inotify watches behind one fd (see log-watch.h).
 *
 * The table maps each armed watch descriptor to its NfLogWatch. Any event
 * for it (a write, a truncation, the file moved or deleted, the kernel's
 * IN_IGNORED) disarms it; events for descriptors no longer in the table
 * (the IN_IGNORED that follows every one-shot event, or one queued before a
 * disarm) are dropped. The kernel numbers watches cyclically, so a stale
 * event does not meet a new watch of the same number in practice; if it
 * did, that watch would be looked at once too often, never too rarely.
 */
#include "supervisor/log-watch.h"

#include <errno.h>
#include <sys/inotify.h>
#include <unistd.h>

#include "supervisor/poller.h"

#define LOG_WATCH_EVENTS (IN_MODIFY | IN_MOVE_SELF | IN_DELETE_SELF | IN_ONESHOT)

static int watch_fd = -1;       /* -1: not made yet, or cannot be (then `broken`) */
static gboolean broken;         /* no inotify here: every arm fails */
static GHashTable *armed_by_wd; /* wd -> NfLogWatch* */

static gboolean events_cb(int fd, guint32 events, gpointer data);

static gboolean ensure_fd(void)
{
  if (watch_fd >= 0)
    return TRUE;
  if (broken)
    return FALSE;
  int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (fd < 0 || nf_poller_add(fd, EPOLLIN, events_cb, NULL) == 0) {
    if (fd >= 0)
      close(fd);
    broken = TRUE;
    return FALSE;
  }
  watch_fd = fd;
  armed_by_wd = g_hash_table_new(NULL, NULL);
  return TRUE;
}

gboolean nf_log_watch_arm(NfLogWatch *w, const char *path)
{
  nf_log_watch_disarm(w);
  if (!ensure_fd())
    return FALSE;
  int wd = inotify_add_watch(watch_fd, path, LOG_WATCH_EVENTS);
  if (wd < 0)
    return FALSE;
  if (g_hash_table_contains(armed_by_wd, GINT_TO_POINTER(wd)))
    return FALSE; /* another NfLogWatch has this file; it keeps the watch */
  g_hash_table_insert(armed_by_wd, GINT_TO_POINTER(wd), w);
  w->wd = wd;
  return TRUE;
}

gboolean nf_log_watch_quiet(const NfLogWatch *w)
{
  return w->wd >= 0;
}

void nf_log_watch_disarm(NfLogWatch *w)
{
  if (w->wd < 0)
    return;
  g_hash_table_remove(armed_by_wd, GINT_TO_POINTER(w->wd));
  inotify_rm_watch(watch_fd, w->wd);
  w->wd = -1;
}

static void disarm_all(void)
{
  GHashTableIter it;
  gpointer value;
  g_hash_table_iter_init(&it, armed_by_wd);
  while (g_hash_table_iter_next(&it, NULL, &value)) {
    NfLogWatch *w = value;
    inotify_rm_watch(watch_fd, w->wd);
    w->wd = -1;
    g_hash_table_iter_remove(&it);
  }
}

void nf_inotify_drain(int fd, NfInotifyFunc func, gpointer data)
{
  char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
  for (;;) {
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return; /* drained (EAGAIN) */
    for (char *p = buf; p < buf + n;) {
      const struct inotify_event *ev = (const struct inotify_event *)p;
      p += sizeof(*ev) + ev->len;
      func(ev, data);
    }
  }
}

static void on_event(const struct inotify_event *ev, gpointer data)
{
  if (ev->mask & IN_Q_OVERFLOW) {
    disarm_all(); /* events were lost: every file may have changed */
    return;
  }
  NfLogWatch *w = g_hash_table_lookup(armed_by_wd, GINT_TO_POINTER(ev->wd));
  if (w == NULL)
    return;
  g_hash_table_remove(armed_by_wd, GINT_TO_POINTER(ev->wd));
  w->wd = -1; /* one-shot: the kernel has dropped the watch */
}

static gboolean events_cb(int fd, guint32 events, gpointer data)
{
  nf_inotify_drain(fd, on_event, NULL);
  return G_SOURCE_CONTINUE;
}
