/*
 * serial.c: console stream capture, ring buffer and ready-marker scan (see
 * serial.h for why the supervisor reads every byte).
 *
 * The console log holds no open fd between writes: with thousands of guests
 * the supervisor's fd limit, not memory, capped the fleet (issue 17). What
 * arrives is gathered in a small buffer that exists only while it holds
 * something and is appended to the file (open, write, close) when it fills,
 * NF_SERIAL_LOG_FLUSH_MS after its first byte, before a marker is reported
 * and at the end; a booting guest writes its UART a few bytes at a time, and
 * an open per read would cost more CPU than the read.
 */
#include "supervisor/serial.h"
#include "supervisor/config.h"
#include "supervisor/poller.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <stdio.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
#include <glib-unix.h>

#define NF_SERIAL_LOG_BUF 4096
#define NF_SERIAL_LOG_FLUSH_MS 100

struct NfSerial {
  int fd;
  GByteArray *log_buf; /* not yet in the log file; NULL when empty */
  guint flush_id;      /* timer flushing log_buf, or 0 */
  char *log_path;
  gsize log_max;
  gsize log_size;
  guint watch_id;
  const char *const *markers;
  NfSerialCallbacks cb;
  gpointer user_data;
  /* ring of recent output: `ring_len` valid bytes ending before `ring_pos`;
   * allocated apart and not zeroed, so that a quiet guest's ring costs
   * resident memory only for the pages its output touched (issue 17) */
  char *ring;
  gsize ring_pos;
  gsize ring_len;
  /* current line for the scanner */
  char line[NF_SERIAL_LINE_MAX + 1];
  gsize line_len;
  gboolean line_cut;
  gboolean log_failing; /* the last log write failed (told once) */
  /* Input for the guest that qemu has not taken yet: it reads the socket
   * only as fast as the guest's UART drains, so a paste or a piped file
   * waits here (up to NF_SERIAL_INPUT_MAX) instead of being dropped. */
  GByteArray *in_buf;
  /* A callback may free us (the guest's console let go on its ready line):
   * then the free waits until read_cb is done with us. */
  gboolean dispatching;
  gboolean doomed;
};

static gboolean read_cb(int fd, guint32 events, gpointer data);
static void ring_append(NfSerial *s, const char *data, gsize len);
static void scan(NfSerial *s, const char *data, gsize len);
static void finish_line(NfSerial *s);
static void log_write(NfSerial *s, const char *buf, gsize n);
static void log_append(NfSerial *s, const char *buf, gsize n);
static void log_flush(NfSerial *s);
static gboolean flush_cb(gpointer data);
static void destroy(NfSerial *s);

NfSerial *nf_serial_new(int fd, const char *log_path, gsize log_max, const char *const *markers,
                        const NfSerialCallbacks *callbacks, gpointer user_data, GError **error)
{
  int log_fd = log_path ? open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644) : -1;
  if (log_path && log_fd < 0) {
    int e = errno;
    g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(e), "cannot open console log %s: %s",
                log_path, g_strerror(e));
    close(fd);
    return NULL;
  }
  NfSerial *s = g_new0(NfSerial, 1);
  s->fd = fd;
  s->ring = g_malloc(NF_SERIAL_RING_SIZE);
  s->markers = markers;
  s->log_path = g_strdup(log_path);
  s->log_max = log_max ? log_max : NF_DEFAULT_LOG_MAX;
  if (log_fd >= 0) {
    s->log_size = (gsize)MAX(lseek(log_fd, 0, SEEK_END), 0);
    close(log_fd); /* opened again per flush: see the top of this file */
  }
  s->cb = *callbacks;
  s->user_data = user_data;
  g_unix_set_fd_nonblocking(fd, TRUE, NULL);
  s->watch_id = nf_poller_add(fd, EPOLLIN, read_cb, s);
  return s;
}

static void ring_append(NfSerial *s, const char *data, gsize len)
{
  if (len >= NF_SERIAL_RING_SIZE) {
    data += len - NF_SERIAL_RING_SIZE;
    len = NF_SERIAL_RING_SIZE;
  }
  gsize first = MIN(len, NF_SERIAL_RING_SIZE - s->ring_pos);
  memcpy(s->ring + s->ring_pos, data, first);
  memcpy(s->ring, data + first, len - first);
  s->ring_pos = (s->ring_pos + len) % NF_SERIAL_RING_SIZE;
  s->ring_len = MIN(s->ring_len + len, NF_SERIAL_RING_SIZE);
}

static void finish_line(NfSerial *s)
{
  s->line[s->line_len] = '\0';
  if (s->line_len && s->line[s->line_len - 1] == '\r')
    s->line[s->line_len - 1] = '\0';
  /* A cut line's head may still hold the marker; its tail is gone either way.
   * The log is flushed first: whoever acts on a marker may read the log. */
  for (guint i = 0; s->markers && s->markers[i] && !s->doomed; i++)
    if (s->cb.marker && strstr(s->line, s->markers[i])) {
      log_flush(s);
      s->cb.marker(s, i, s->line, s->user_data);
    }
  s->line_len = 0;
  s->line_cut = FALSE;
}

static void scan(NfSerial *s, const char *data, gsize len)
{
  for (gsize i = 0; i < len && !s->doomed; i++) {
    if (data[i] == '\n') {
      finish_line(s);
    } else if (s->line_len < NF_SERIAL_LINE_MAX) {
      s->line[s->line_len++] = data[i] ? data[i] : ' ';
    } else {
      s->line_cut = TRUE;
    }
  }
}

static void log_append(NfSerial *s, const char *buf, gsize n)
{
  if (s->log_path == NULL)
    return; /* someone else (qemu) writes the log */
  if (s->log_buf == NULL)
    s->log_buf = g_byte_array_sized_new(NF_SERIAL_LOG_BUF);
  g_byte_array_append(s->log_buf, (const guint8 *)buf, (guint)n);
  if (s->log_buf->len >= NF_SERIAL_LOG_BUF)
    log_flush(s);
  else if (s->flush_id == 0)
    s->flush_id = g_timeout_add(NF_SERIAL_LOG_FLUSH_MS, flush_cb, s);
}

static gboolean flush_cb(gpointer data)
{
  NfSerial *s = data;
  s->flush_id = 0;
  log_flush(s);
  return G_SOURCE_REMOVE;
}

static void log_flush(NfSerial *s)
{
  g_clear_handle_id(&s->flush_id, g_source_remove);
  if (s->log_buf == NULL)
    return;
  g_autoptr(GByteArray) buf = g_steal_pointer(&s->log_buf);
  log_write(s, (const char *)buf->data, buf->len);
}

static void log_write(NfSerial *s, const char *buf, gsize n)
{
  int flags = O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC;
  if (s->log_size + n > s->log_max) {
    /* One old generation is enough to read what led up to a failure. */
    g_autofree char *old = g_strconcat(s->log_path, ".1", NULL);
    if (rename(s->log_path, old) == 0) {
      flags |= O_TRUNC;
      s->log_size = 0;
    }
  }
  /* A full disk must not stall the guest: what cannot be written is
   * dropped (the ring still has it), and the owner is told once. */
  gsize done = 0;
  int err = 0;
  int fd = open(s->log_path, flags, 0644);
  if (fd < 0)
    err = errno;
  while (fd >= 0 && done < n) {
    ssize_t w = write(fd, buf + done, n - done);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0) {
      err = w < 0 ? errno : ENOSPC;
      break;
    }
    done += (gsize)w;
  }
  if (fd >= 0)
    close(fd);
  s->log_size += done;
  if (err && !s->log_failing && s->cb.log_failed)
    s->cb.log_failed(s, err, s->user_data);
  s->log_failing = err != 0;
}

/* Writes what it can of the pending input; watches for writability while
 * some is left. FALSE when the socket failed (the input is dropped: qemu
 * is going, its EOF comes on the read side). */
static gboolean input_flush(NfSerial *s)
{
  gsize done = 0;
  gboolean ok = TRUE;
  while (s->in_buf && done < s->in_buf->len) {
    /* send, not write: a qemu gone must not SIGPIPE the supervisor. */
    ssize_t n =
        send(s->fd, s->in_buf->data + done, s->in_buf->len - done, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && errno == EAGAIN)
      break;
    if (n <= 0) {
      ok = FALSE;
      done = s->in_buf->len;
      break;
    }
    done += (gsize)n;
  }
  if (s->in_buf && done > 0)
    g_byte_array_remove_range(s->in_buf, 0, (guint)done);
  if (s->watch_id)
    nf_poller_modify(s->watch_id, s->in_buf && s->in_buf->len > 0 ? EPOLLIN | EPOLLOUT : EPOLLIN);
  return ok;
}

static gboolean read_cb(int fd, guint32 events, gpointer data)
{
  NfSerial *s = data;
  if ((events & EPOLLOUT) && !(events & (EPOLLHUP | EPOLLERR)))
    input_flush(s);
  char buf[4096];
  ssize_t n = read(fd, buf, sizeof(buf));
  if (n < 0 && (errno == EAGAIN || errno == EINTR))
    return G_SOURCE_CONTINUE;
  s->dispatching = TRUE;
  gboolean more = n > 0;
  if (more) {
    log_append(s, buf, (gsize)n);
    ring_append(s, buf, (gsize)n);
    if (s->cb.data)
      s->cb.data(s, buf, (gsize)n, s->user_data);
    scan(s, buf, (gsize)n);
  } else {
    nf_poller_remove(s->watch_id); /* before anyone may close the fd */
    s->watch_id = 0;
    log_flush(s);
    if (s->cb.eof)
      s->cb.eof(s, s->user_data);
  }
  s->dispatching = FALSE;
  if (s->doomed) {
    destroy(s);
    return G_SOURCE_REMOVE;
  }
  return more ? G_SOURCE_CONTINUE : G_SOURCE_REMOVE;
}

char *nf_serial_tail(NfSerial *s, gsize max)
{
  gsize n = MIN(max, s->ring_len);
  char *out = g_malloc(n + 1);
  gsize start = (s->ring_pos + NF_SERIAL_RING_SIZE - n) % NF_SERIAL_RING_SIZE;
  gsize first = MIN(n, NF_SERIAL_RING_SIZE - start);
  memcpy(out, s->ring + start, first);
  memcpy(out + first, s->ring, n - first);
  out[n] = '\0';
  return out;
}

gssize nf_serial_write(NfSerial *s, const char *data, gsize len)
{
  if (s->in_buf == NULL)
    s->in_buf = g_byte_array_new();
  gsize room = NF_SERIAL_INPUT_MAX - MIN(s->in_buf->len, NF_SERIAL_INPUT_MAX);
  gsize take = MIN(len, room);
  g_byte_array_append(s->in_buf, (const guint8 *)data, (guint)take);
  if (!input_flush(s))
    return -1;
  return (gssize)take;
}

gboolean nf_serial_input_pending(const NfSerial *s)
{
  if (s->in_buf && s->in_buf->len > 0)
    return TRUE;
  /* Sent, but not yet read by qemu (it reads as the guest's UART drains):
   * qemu drops what is unread when we hang up. */
  int queued = 0;
  return ioctl(s->fd, SIOCOUTQ, &queued) == 0 && queued > 0;
}

void nf_serial_free(NfSerial *s)
{
  if (s == NULL)
    return;
  if (s->dispatching) {
    /* From one of our callbacks: no more callbacks; read_cb frees us. */
    memset(&s->cb, 0, sizeof(s->cb));
    s->doomed = TRUE;
    return;
  }
  destroy(s);
}

static void destroy(NfSerial *s)
{
  if (s->in_buf)
    g_byte_array_unref(s->in_buf);
  nf_poller_remove(s->watch_id);
  s->cb.log_failed = NULL; /* the owner is going away: write what is left, quietly */
  log_flush(s);
  close(s->fd);
  g_free(s->ring);
  g_free(s->log_path);
  g_free(s);
}
