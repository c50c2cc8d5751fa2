/*
 * test-serial-unit.c: the console capture's log (supervisor/serial.c) without
 * a VM, on a socketpair. Guards what holding no log fd must not cost: no fd
 * is kept open for the log; whoever acts on a marker finds the marker's line
 * already in the log; output is written out by the end of the stream; the
 * log rotates to .1 past its cap and keeps the newest bytes, in order.
 */
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <glib/gstdio.h>

#include "supervisor/poller.h"
#include "supervisor/serial.h"
#include "tests/lib/nf-test.h"

#define WAIT_MS 10000
#define LOG_MAX 4096

typedef struct {
  char *log;
  gboolean marker_seen;
  gboolean marker_line_in_log;
  gboolean eof;
} Rec;

static void marker_cb(NfSerial *serial, guint which, const char *line, gpointer data)
{
  Rec *r = data;
  g_autofree char *text = NULL;
  r->marker_seen = TRUE;
  r->marker_line_in_log =
      g_file_get_contents(r->log, &text, NULL, NULL) && strstr(text, "READY here") != NULL;
}

static void eof_cb(NfSerial *serial, gpointer data)
{
  ((Rec *)data)->eof = TRUE;
}

static gboolean marker_seen(gpointer data)
{
  return ((Rec *)data)->marker_seen;
}

static gboolean eof_seen(gpointer data)
{
  return ((Rec *)data)->eof;
}

static void send_all(int fd, const char *buf, gsize len)
{
  while (len > 0) {
    ssize_t n = write(fd, buf, len);
    g_assert_cmpint(n, >, 0);
    buf += n;
    len -= (gsize)n;
  }
}

static void test_log(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  Rec r = {.log = g_build_filename(tmp, "console.log", NULL)};
  g_autofree char *old = g_strconcat(r.log, ".1", NULL);
  int sv[2];
  g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), ==, 0);
  static const char *const markers[] = {"READY", NULL};
  NfSerialCallbacks cbs = {.marker = marker_cb, .eof = eof_cb};
  /* The poller's own epoll fd (and GLib's wakeup fd) come with its first use. */
  nf_poller_remove(nf_poller_add(sv[1], EPOLLIN, NULL, NULL));
  guint before = nf_test_count_open_fds();
  g_autoptr(GError) error = NULL;
  NfSerial *s = nf_serial_new(sv[0], r.log, LOG_MAX, markers, &cbs, &r, &error);
  g_assert_no_error(error);
  /* The stream fd was already counted; the log holds none. */
  g_assert_cmpuint(nf_test_count_open_fds(), ==, before);

  const char *first = "booting\r\nREADY here\r\n";
  send_all(sv[1], first, strlen(first));
  g_assert_true(nf_test_wait_for(marker_seen, &r, WAIT_MS));
  g_assert_true(r.marker_line_in_log);
  g_assert_cmpuint(nf_test_count_open_fds(), ==, before);

  /* 3 x LOG_MAX of numbered lines, then the end of the stream. */
  g_autoptr(GString) all = g_string_new(first);
  for (guint i = 0; all->len < 3 * LOG_MAX; i++)
    g_string_append_printf(all, "line %05u\n", i);
  send_all(sv[1], all->str + strlen(first), all->len - strlen(first));
  close(sv[1]);
  g_assert_true(nf_test_wait_for(eof_seen, &r, WAIT_MS));

  g_autofree char *cur = NULL, *prev = NULL;
  gsize cur_len = 0, prev_len = 0;
  g_assert_true(g_file_get_contents(r.log, &cur, &cur_len, NULL));
  g_assert_true(g_file_get_contents(old, &prev, &prev_len, NULL));
  g_assert_cmpuint(cur_len, <=, LOG_MAX);
  g_assert_cmpuint(prev_len, <=, LOG_MAX);
  /* .1 then the log are the newest bytes of the stream, in order. */
  g_autofree char *both = g_strconcat(prev, cur, NULL);
  g_assert_cmpuint(strlen(both), >, 0);
  g_assert_true(g_str_has_suffix(all->str, both));
  g_assert_true(g_str_has_suffix(cur, "\n"));

  nf_serial_free(s);
  g_assert_cmpuint(nf_test_count_open_fds(), ==, before - 2); /* both ends closed now */
  g_free(r.log);
  nf_test_tmpdir_cleanup(tmp);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/serial/log-without-fd", test_log);
  return g_test_run();
}
