/*
 * console-log.c: the console log qemu writes, read back and capped by the
 * supervisor (see console-log.h for why qemu writes it).
 *
 * Every call opens, reads or writes, and closes: nothing stays open between
 * calls. Reads are bounded (a tail, a 64 KiB window for markers), so a
 * chatty guest's log costs the supervisor no more than a quiet one's.
 */
#include "supervisor/console-log.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FIND_WINDOW (64 * 1024)

static char *read_range(const char *path, gint64 from, gsize max, gsize *len);

/* The one filesystem seen refusing a collapse, so that each rotation on it
 * does not copy the head first in vain (logs of a fleet share a dir). */
static dev_t unsupported_dev;
static gboolean unsupported_known;

static gboolean collapse_unsupported(dev_t dev)
{
  return unsupported_known && unsupported_dev == dev;
}

static void remember_unsupported(dev_t dev)
{
  unsupported_dev = dev;
  unsupported_known = TRUE;
}

gint64 nf_console_log_size(const char *path)
{
  struct stat st;
  return stat(path, &st) == 0 ? (gint64)st.st_size : 0;
}

/* Up to `max` bytes from `from`, NUL-terminated (never NULL); *len: how
 * many were read. */
static char *read_range(const char *path, gint64 from, gsize max, gsize *len)
{
  char *buf = g_malloc(max + 1);
  gsize got = 0;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    while (got < max) {
      ssize_t n = pread(fd, buf + got, max - got, from + (gint64)got);
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0)
        break;
      got += (gsize)n;
    }
    close(fd);
  }
  buf[got] = '\0';
  *len = got;
  return buf;
}

char *nf_console_log_tail(const char *path, gsize max)
{
  return nf_console_log_tail_at(path, nf_console_log_size(path), max);
}

char *nf_console_log_tail_at(const char *path, gint64 end, gsize max)
{
  gint64 from = end > (gint64)max ? end - (gint64)max : 0;
  gsize len;
  return read_range(path, from, (gsize)(end - from), &len);
}

/* The log from `from` (at most the last FIND_WINDOW bytes), NULs turned
 * into spaces so that binary noise does not end a search early. */
static char *read_window(const char *path, gint64 from)
{
  gint64 size = nf_console_log_size(path);
  if (from > size)
    from = 0; /* rotated (truncated) since */
  if (size - from > FIND_WINDOW)
    from = size - FIND_WINDOW;
  gsize len;
  char *text = read_range(path, from, (gsize)(size - from), &len);
  for (gsize i = 0; i < len; i++)
    if (text[i] == '\0')
      text[i] = ' ';
  return text;
}

gboolean nf_console_log_find(const char *path, gint64 from, const char *needle)
{
  g_autofree char *text = read_window(path, from);
  return strstr(text, needle) != NULL;
}

gboolean nf_console_log_find_line(const char *path, gint64 from, const char *line)
{
  g_autofree char *text = read_window(path, from);
  gsize n = strlen(line);
  if (n == 0)
    return FALSE;
  for (const char *p = text; (p = strstr(p, line)) != NULL; p++)
    if (p[n] == '\n' || (p[n] == '\r' && p[n + 1] == '\n'))
      return TRUE;
  return FALSE;
}

char *nf_console_log_read(const char *path, gint64 from, gint64 to, gsize *len)
{
  return read_range(path, from, to > from ? (gsize)(to - from) : 0, len);
}

/* Writes the log's first `len` bytes (-1: all it holds) to `old`, through
 * a temporary file renamed over it, in the kernel (no buffer of the log's
 * size here, whatever --log-max). *copied: how many. */
static gboolean copy_head(int fd, const char *path, const char *old, gint64 len, gint64 *copied,
                          GError **error)
{
  g_autofree char *tmp = g_strconcat(old, ".tmp", NULL);
  int out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (out < 0) {
    int e = errno;
    g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(e), "cannot write %s: %s", tmp,
                g_strerror(e));
    return FALSE;
  }
  loff_t at = 0;
  int e = 0;
  while (len < 0 || at < len) {
    size_t want = len < 0 ? 1 << 20 : (size_t)MIN(len - at, 1 << 20);
    loff_t in_at = at;
    ssize_t n = copy_file_range(fd, &in_at, out, NULL, want, 0);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && (errno == EXDEV || errno == ENOSYS || errno == EOPNOTSUPP || errno == EINVAL)) {
      char buf[64 * 1024];
      n = pread(fd, buf, MIN(want, sizeof buf), at);
      if (n > 0 && write(out, buf, (size_t)n) != n)
        n = -1;
    }
    if (n < 0) {
      e = errno ? errno : EIO;
      break;
    }
    if (n == 0)
      break; /* the end of the log */
    at += n;
  }
  if (close(out) != 0 && e == 0)
    e = errno;
  if (e == 0 && len >= 0 && at != len)
    e = EIO; /* shorter than it was a moment ago: not ours to cut */
  if (e == 0 && rename(tmp, old) != 0)
    e = errno;
  if (e != 0) {
    unlink(tmp);
    g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(e), "cannot copy %s to %s: %s", path,
                old, g_strerror(e));
    return FALSE;
  }
  *copied = at;
  return TRUE;
}

gboolean nf_console_log_cap(const char *path, gsize max, gint64 *moved, GError **error)
{
  int fd = open(path, O_RDWR | O_CLOEXEC);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0 || st.st_size <= (off_t)max) {
    if (fd >= 0)
      close(fd);
    return FALSE; /* missing (not yet written) or under the cap */
  }
  g_autofree char *old = g_strconcat(path, ".1", NULL);
  gint64 block = st.st_blksize > 0 ? (gint64)st.st_blksize : 4096;
  /* Whole blocks only, and not the last byte (a collapse may not reach the
   * end of the file): the log keeps less than a block, the line being
   * written among it. */
  gint64 head = (((gint64)st.st_size - 1) / block) * block;
  gint64 done = 0;
  gboolean ok = FALSE;
  if (head > 0 && !collapse_unsupported(st.st_dev)) {
    if (!copy_head(fd, path, old, head, &done, error)) {
      close(fd);
      return FALSE;
    }
    /* qemu's appends wait for the collapse: each lands before it, past
     * `head` and kept, or after it, at the new end. */
    if (fallocate(fd, FALLOC_FL_COLLAPSE_RANGE, 0, head) == 0) {
      ok = TRUE;
    } else if (errno == EOPNOTSUPP || errno == ENOSYS) {
      remember_unsupported(st.st_dev); /* tmpfs */
    } else if (errno == EINVAL) {
      /* This file only (an ext4 file without extents, a size the
       * filesystem will not cut at): the copy this time. */
    } else {
      int e = errno;
      g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(e),
                  "cannot drop the start of %s: %s", path, g_strerror(e));
      close(fd);
      return FALSE;
    }
  }
  if (!ok && copy_head(fd, path, old, -1, &done, error)) {
    /* What qemu writes from here to the truncation is lost (see .h). */
    ok = ftruncate(fd, 0) == 0;
    if (!ok) {
      int e = errno;
      g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(e), "cannot truncate %s: %s", path,
                  g_strerror(e));
    }
  }
  close(fd);
  if (ok && moved)
    *moved = done;
  return ok;
}
