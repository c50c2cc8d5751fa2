/*
 * log-print.c: a guest's console log to stdout (see log-print.h).
 */
#include "cli/log-print.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

gboolean nf_log_write_raw(const char *buf, gsize len)
{
  while (len > 0) {
    ssize_t n = write(STDOUT_FILENO, buf, len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return FALSE;
    buf += n;
    len -= (gsize)n;
  }
  return TRUE;
}

int nf_log_write_failed(const char *verb)
{
  int e = errno;
  if (e == EPIPE)
    return 0; /* `| head`: the reader had what it wanted */
  fprintf(stderr, "nervesfleet: %s: cannot write to stdout: %s\n", verb, g_strerror(e));
  return 1;
}

gboolean nf_log_write(NfLogOut *out, const char *buf, gsize len)
{
  if (out->prefix == NULL)
    return nf_log_write_raw(buf, len);
  while (len > 0) {
    if (out->at_line_start && !nf_log_write_raw(out->prefix, strlen(out->prefix)))
      return FALSE;
    const char *nl = memchr(buf, '\n', len);
    gsize n = nl ? (gsize)(nl - buf) + 1 : len;
    if (!nf_log_write_raw(buf, n))
      return FALSE;
    out->at_line_start = nl != NULL;
    buf += n;
    len -= n;
  }
  return TRUE;
}

gboolean nf_log_end_line(NfLogOut *out)
{
  if (out->at_line_start)
    return TRUE;
  out->at_line_start = TRUE;
  return nf_log_write_raw("\n", 1);
}

typedef gboolean (*Sink)(const char *buf, gsize len, gpointer data);

static gboolean to_stdout(const char *buf, gsize len, gpointer data)
{
  return nf_log_write(data, buf, len);
}

static gboolean to_string(const char *buf, gsize len, gpointer data)
{
  g_string_append_len(data, buf, (gssize)len);
  return TRUE;
}

/* Bytes [from, to) of `path` (to < 0: to the end) into `sink`. */
static gboolean copy_range(const char *path, gint64 from, gint64 to, Sink sink, gpointer data,
                           GError **error)
{
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT)
      return TRUE; /* never started: no log yet */
    g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(errno), "%s: %s", path,
                g_strerror(errno));
    return FALSE;
  }
  gboolean ok = TRUE;
  if (from > 0 && lseek(fd, from, SEEK_SET) < 0) {
    close(fd);
    return TRUE;
  }
  char buf[65536];
  gint64 left = to < 0 ? G_MAXINT64 : to - from;
  while (left > 0) {
    ssize_t n = read(fd, buf, (gsize)MIN(left, (gint64)sizeof(buf)));
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    if (!sink(buf, (gsize)n, data)) {
      ok = FALSE;
      break;
    }
    left -= n;
  }
  close(fd);
  return ok;
}

static gboolean print_into(json_t *reply, Sink sink, gpointer data, GError **error)
{
  const char *rotated = json_string_value(json_object_get(reply, "rotated_path"));
  if (rotated && !copy_range(rotated, 0, -1, sink, data, error))
    return FALSE;
  return copy_range(json_string_value(json_object_get(reply, "path")),
                    json_integer_value(json_object_get(reply, "start")),
                    json_integer_value(json_object_get(reply, "end")), sink, data, error);
}

gboolean nf_log_print(json_t *reply, NfLogOut *out, GError **error)
{
  return print_into(reply, to_stdout, out, error);
}

gboolean nf_log_read(json_t *reply, GString *into, GError **error)
{
  return print_into(reply, to_string, into, error);
}
