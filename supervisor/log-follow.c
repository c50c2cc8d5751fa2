/*
 * log-follow.c: files followed as they grow, behind one inotify fd (see
 * log-follow.h).
 *
 * The table maps a watch descriptor to the followers of that file (the
 * kernel gives one descriptor per file and inotify fd, so two followers of
 * one file share it; the watch goes when the last of them does). Any event
 * on a descriptor reads its followers on to the end of the file; an
 * overflowed queue reads every follower.
 */
#include "supervisor/log-follow.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include "supervisor/log-watch.h" /* nf_inotify_drain */
#include "supervisor/poller.h"

#define FOLLOW_EVENTS (IN_MODIFY | IN_MOVE_SELF | IN_DELETE_SELF)
#define READ_CHUNK (64 * 1024)

struct NfLogFollow {
  char *path;
  gint64 offset; /* delivered up to here */
  int wd;        /* -1: the file is not watched (gone, or a restart failed) */
  guint first_read_src;
  NfLogFollowFunc func;
  gpointer user_data;
  gboolean reading; /* in read_on: a free from the callback is deferred */
  gboolean freed;
};

static int follow_fd = -1;
static GHashTable *by_wd; /* wd -> GPtrArray of NfLogFollow* */

static gboolean events_cb(int fd, guint32 events, gpointer data);

static gboolean ensure_fd(GError **error)
{
  if (follow_fd >= 0)
    return TRUE;
  int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(e),
                "cannot follow files: inotify_init1: %s (raise "
                "/proc/sys/fs/inotify/max_user_instances)",
                g_strerror(e));
    return FALSE;
  }
  if (nf_poller_add(fd, EPOLLIN, events_cb, NULL) == 0) {
    close(fd);
    g_set_error(error, G_FILE_ERROR, G_FILE_ERROR_FAILED,
                "cannot follow files: the inotify fd cannot be polled");
    return FALSE;
  }
  follow_fd = fd;
  by_wd = g_hash_table_new_full(NULL, NULL, NULL, (GDestroyNotify)g_ptr_array_unref);
  return TRUE;
}

static gboolean watch(NfLogFollow *f, GError **error)
{
  int wd = inotify_add_watch(follow_fd, f->path, FOLLOW_EVENTS);
  if (wd < 0) {
    int e = errno;
    g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(e), "cannot follow %s: %s%s", f->path,
                g_strerror(e), e == ENOSPC ? " (raise /proc/sys/fs/inotify/max_user_watches)" : "");
    return FALSE;
  }
  GPtrArray *list = g_hash_table_lookup(by_wd, GINT_TO_POINTER(wd));
  if (list == NULL) {
    list = g_ptr_array_new();
    g_hash_table_insert(by_wd, GINT_TO_POINTER(wd), list);
  }
  g_ptr_array_add(list, f);
  f->wd = wd;
  return TRUE;
}

static void unwatch(NfLogFollow *f)
{
  if (f->wd < 0)
    return;
  GPtrArray *list = g_hash_table_lookup(by_wd, GINT_TO_POINTER(f->wd));
  if (list) {
    g_ptr_array_remove(list, f);
    if (list->len == 0) {
      g_hash_table_remove(by_wd, GINT_TO_POINTER(f->wd));
      inotify_rm_watch(follow_fd, f->wd);
    }
  }
  f->wd = -1;
}

static void really_free(NfLogFollow *f)
{
  unwatch(f);
  if (f->first_read_src)
    g_source_remove(f->first_read_src);
  g_free(f->path);
  g_free(f);
}

/* Reads from the offset to the end of the file, chunk by chunk, each to the
 * callback. A file shorter than the offset was truncated: from its start. */
static void read_on(NfLogFollow *f)
{
  int fd = open(f->path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return;
  struct stat st;
  if (fstat(fd, &st) == 0 && st.st_size < f->offset)
    f->offset = 0;
  g_autofree char *buf = g_malloc(READ_CHUNK);
  f->reading = TRUE;
  while (!f->freed) {
    ssize_t n = pread(fd, buf, READ_CHUNK, f->offset);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    f->offset += n;
    f->func(buf, (gsize)n, f->user_data);
  }
  f->reading = FALSE;
  close(fd);
  if (f->freed)
    really_free(f);
}

static gboolean first_read_cb(gpointer data)
{
  NfLogFollow *f = data;
  f->first_read_src = 0;
  nf_log_follow_drain(f); /* not inside a read (a callback's nested loop) */
  return G_SOURCE_REMOVE;
}

NfLogFollow *nf_log_follow_new(const char *path, gint64 from, NfLogFollowFunc func,
                               gpointer user_data, GError **error)
{
  if (!ensure_fd(error))
    return NULL;
  NfLogFollow *f = g_new0(NfLogFollow, 1);
  f->path = g_strdup(path);
  f->wd = -1;
  f->offset = from;
  f->func = func;
  f->user_data = user_data;
  if (!watch(f, error)) {
    really_free(f);
    return NULL;
  }
  /* What was appended between the caller's look at the file and the watch
   * raised no event: read it from the loop, not from inside this call. */
  f->first_read_src = g_idle_add(first_read_cb, f);
  return f;
}

void nf_log_follow_drain(NfLogFollow *f)
{
  if (!f->reading)
    read_on(f);
}

gboolean nf_log_follow_restart(NfLogFollow *f, gint64 from, GError **error)
{
  f->offset = from;
  unwatch(f);
  if (!watch(f, error))
    return FALSE;
  if (f->first_read_src == 0)
    f->first_read_src = g_idle_add(first_read_cb, f);
  return TRUE;
}

gboolean nf_log_follow_watching(const NfLogFollow *f)
{
  return f->wd >= 0;
}

gint64 nf_log_follow_offset(const NfLogFollow *f)
{
  return f->offset;
}

void nf_log_follow_free(NfLogFollow *f)
{
  if (f == NULL)
    return;
  if (f->reading) {
    f->freed = TRUE; /* read_on frees it on its way out */
    return;
  }
  really_free(f);
}

static GPtrArray *followers_of(int wd)
{
  return g_hash_table_lookup(by_wd, GINT_TO_POINTER(wd));
}

static void read_list(int wd, gboolean gone)
{
  GPtrArray *list = followers_of(wd);
  if (list == NULL)
    return;
  /* Callbacks may free followers of this file (and with the last, the
   * list): walk a copy, and read only those still on the list. */
  g_autoptr(GPtrArray) copy = g_ptr_array_copy(list, NULL, NULL);
  for (guint i = 0; i < copy->len; i++) {
    list = followers_of(wd);
    if (list && g_ptr_array_find(list, copy->pdata[i], NULL))
      nf_log_follow_drain(copy->pdata[i]);
  }
  list = followers_of(wd);
  if (gone && list) {
    /* The kernel dropped the watch (IN_IGNORED): nothing more comes on it. */
    for (guint i = 0; i < list->len; i++)
      ((NfLogFollow *)list->pdata[i])->wd = -1;
    g_hash_table_remove(by_wd, GINT_TO_POINTER(wd));
  }
}

static void on_event(const struct inotify_event *ev, gpointer data)
{
  if (ev->mask & IN_Q_OVERFLOW) {
    /* Events were lost: any file may have grown. */
    g_autofree gpointer *wds = (gpointer *)g_hash_table_get_keys_as_array(by_wd, NULL);
    for (gpointer *w = wds; *w; w++)
      read_list(GPOINTER_TO_INT(*w), FALSE);
    return;
  }
  read_list(ev->wd, (ev->mask & IN_IGNORED) != 0);
}

static gboolean events_cb(int fd, guint32 events, gpointer data)
{
  nf_inotify_drain(fd, on_event, NULL);
  return G_SOURCE_CONTINUE;
}
