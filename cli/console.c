/*
 * console.c: the console relay loop and raw terminal handling (see
 * console.h). The saved termios lives in a static so that the signal
 * handler and the atexit hook can restore it: those are the only ways to
 * reach it from an exit path we do not control.
 */
#include "cli/console.h"

#include <errno.h>
#include <gio/gio.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <termios.h>
#include <unistd.h>

#include "cli/log-print.h"

/* How long a detaching client waits for the supervisor to take its last
 * input (it closes as soon as it has read our end: milliseconds). */
#define NF_CONSOLE_DRAIN_MS 2000

static struct termios saved_tio;
static volatile sig_atomic_t tio_saved;

static void tty_restore(void);
static void tty_restore_signal(int sig);
static gboolean tty_raw(void);
static void drain_after_input(NfClient *c, char *buf, gsize size);

static void tty_restore(void)
{
  if (tio_saved) {
    tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved_tio);
    tio_saved = 0;
  }
}

/* Async-signal-safe: tcsetattr, signal and raise are. */
static void tty_restore_signal(int sig)
{
  tty_restore();
  signal(sig, SIG_DFL);
  raise(sig);
}

static gboolean tty_raw(void)
{
  if (!isatty(STDIN_FILENO) || tcgetattr(STDIN_FILENO, &saved_tio) < 0)
    return FALSE;
  static gboolean hooked;
  if (!hooked) {
    atexit(tty_restore);
    hooked = TRUE;
  }
  struct sigaction sa = {.sa_handler = tty_restore_signal};
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGHUP, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGQUIT, &sa, NULL);
  struct termios raw = saved_tio;
  cfmakeraw(&raw);
  tio_saved = 1;
  if (tcsetattr(STDIN_FILENO, TCSAFLUSH, &raw) < 0) {
    tio_saved = 0;
    return FALSE;
  }
  return TRUE;
}

gboolean nf_console_filter_keys(gboolean *escaped, const char *in, gsize len, GString *send)
{
  for (gsize i = 0; i < len; i++) {
    char ch = in[i];
    if (*escaped) {
      *escaped = FALSE;
      if (ch == 'q' || ch == 'Q' || ch == '.')
        return TRUE;
      /* Not a detach: the escape goes through, once even when doubled. */
      g_string_append_c(send, NF_CONSOLE_ESCAPE);
      if (ch != NF_CONSOLE_ESCAPE)
        g_string_append_c(send, ch);
    } else if (ch == NF_CONSOLE_ESCAPE) {
      *escaped = TRUE;
    } else {
      g_string_append_c(send, ch);
    }
  }
  return FALSE;
}

/* Input ended: half-close, so the supervisor reads every byte we sent and
 * then our end, and wait (bounded) for it to close its side. Closing at once
 * lost the input whenever the supervisor was still sending the replay: its
 * write failed with EPIPE and it dropped the client with our input unread
 * (seen by the soak: 'poweroff -f' piped in, never typed). */
static void drain_after_input(NfClient *c, char *buf, gsize size)
{
  if (shutdown(nf_client_fd(c), SHUT_WR) != 0)
    return;
  gint64 deadline = g_get_monotonic_time() + NF_CONSOLE_DRAIN_MS * 1000;
  for (;;) {
    if (!nf_client_has_buffered(c)) {
      gint64 left = (deadline - g_get_monotonic_time()) / 1000;
      struct pollfd p = {.fd = nf_client_fd(c), .events = POLLIN};
      int r = left > 0 ? poll(&p, 1, (int)left) : 0;
      if (r < 0 && errno == EINTR)
        continue;
      if (r <= 0)
        return;
    }
    gssize n = nf_client_read_raw(c, buf, size, NULL);
    if (n <= 0 || !nf_log_write_raw(buf, (gsize)n))
      return;
  }
}

/* Sends `data` to the guest while still reading its output: the supervisor
 * reads a writer only as fast as the guest takes the input, and one that
 * blocked here on its send, reading nothing, would be dropped for the
 * output it left unread (the guest's echo of the input, say). */
static gboolean send_draining(NfClient *c, const char *data, gsize len, GError **error)
{
  char out[16384];
  while (len > 0) {
    struct pollfd p = {.fd = nf_client_fd(c), .events = POLLIN | POLLOUT};
    if (!nf_client_has_buffered(c) && poll(&p, 1, -1) < 0) {
      if (errno == EINTR)
        continue;
      g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errno), "poll: %s", g_strerror(errno));
      return FALSE;
    }
    if (nf_client_has_buffered(c) || (p.revents & POLLIN)) {
      gssize n = nf_client_read_raw(c, out, sizeof(out), error);
      if (n <= 0) {
        if (n == 0)
          g_set_error(error, G_IO_ERROR, G_IO_ERROR_CONNECTION_CLOSED,
                      "the supervisor closed the console");
        return FALSE;
      }
      if (!nf_log_write_raw(out, (gsize)n) && errno != EPIPE) {
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errno), "cannot write to stdout: %s",
                    g_strerror(errno));
        return FALSE;
      }
      continue;
    }
    if (p.revents & (POLLOUT | POLLHUP | POLLERR)) {
      ssize_t n = send(nf_client_fd(c), data, len, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n < 0 && (errno == EINTR || errno == EAGAIN))
        continue;
      if (n < 0) {
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errno), "control socket: %s",
                    g_strerror(errno));
        return FALSE;
      }
      data += n;
      len -= (gsize)n;
    }
  }
  return TRUE;
}

/* stdout failed: a reader that went away (`console 1 | head`) detaches
 * quietly; anything else is an error that says so. */
static NfConsoleEnd output_failed(GError **error)
{
  int e = errno;
  if (e == EPIPE)
    return NF_CONSOLE_DETACHED;
  g_set_error(error, G_IO_ERROR, g_io_error_from_errno(e), "cannot write to stdout: %s",
              g_strerror(e));
  return NF_CONSOLE_ERROR;
}

NfConsoleEnd nf_console_run(NfClient *c, gboolean writer, GError **error)
{
  gboolean raw = tty_raw();
  const char *nl = raw ? "\r\n" : "\n";
  gboolean escaped = FALSE, warned = FALSE;
  NfConsoleEnd end = NF_CONSOLE_CLOSED;
  char buf[16384];
  for (;;) {
    if (nf_client_has_buffered(c)) {
      gssize n = nf_client_read_raw(c, buf, sizeof(buf), error);
      if (n > 0 && !nf_log_write_raw(buf, (gsize)n)) {
        end = output_failed(error);
        break;
      }
      continue;
    }
    struct pollfd p[2] = {{.fd = nf_client_fd(c), .events = POLLIN},
                          {.fd = STDIN_FILENO, .events = POLLIN}};
    int r = poll(p, 2, -1);
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0) {
      g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errno), "poll: %s", g_strerror(errno));
      end = NF_CONSOLE_ERROR;
      break;
    }
    if (p[0].revents) {
      gssize n = nf_client_read_raw(c, buf, sizeof(buf), error);
      if (n < 0) {
        end = NF_CONSOLE_ERROR;
        break;
      }
      if (n == 0) {
        end = NF_CONSOLE_CLOSED;
        break;
      }
      if (!nf_log_write_raw(buf, (gsize)n)) {
        end = output_failed(error);
        break;
      }
    }
    if (p[1].revents) {
      ssize_t n = read(STDIN_FILENO, buf, sizeof(buf));
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0) {
        /* stdin ended (a pipe, /dev/null, a closed fd): all it gave was
         * sent as it came, and nothing more will: detach, as a script
         * piping commands in expects, once the supervisor has read it. */
        end = NF_CONSOLE_INPUT_ENDED;
        drain_after_input(c, buf, sizeof(buf));
        break;
      }
      g_autoptr(GString) send = g_string_new(NULL);
      gboolean detach = nf_console_filter_keys(&escaped, buf, (gsize)n, send);
      if (send->len && writer) {
        if (!send_draining(c, send->str, send->len, error)) {
          end = NF_CONSOLE_ERROR;
          break;
        }
      } else if (send->len && !warned) {
        g_autofree char *note = g_strdup_printf(
            "%s[read-only console: input ignored; " NF_CONSOLE_ESCAPE_HINT "]%s", nl, nl);
        nf_log_write_raw(note, strlen(note));
        warned = TRUE;
      }
      if (detach) {
        end = NF_CONSOLE_DETACHED;
        break;
      }
    }
  }
  tty_restore();
  return end;
}
