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
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FIND_WINDOW (64 * 1024)

static char *read_range(const char *path, gint64 from, gsize max, gsize *len);

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

gboolean nf_console_log_cap(const char *path, gsize max, gint64 *copied, GError **error)
{
  if (nf_console_log_size(path) <= (gint64)max)
    return FALSE;
  g_autofree char *old = g_strconcat(path, ".1", NULL);
  g_autofree char *text = NULL;
  gsize len = 0;
  if (!g_file_get_contents(path, &text, &len, error) ||
      !g_file_set_contents_full(old, text, (gssize)len, G_FILE_SET_CONTENTS_NONE, 0644, error))
    return FALSE;
  if (truncate(path, 0) != 0) {
    int e = errno;
    g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(e), "cannot truncate %s: %s", path,
                g_strerror(e));
    return FALSE;
  }
  if (copied)
    *copied = (gint64)len;
  return TRUE;
}
