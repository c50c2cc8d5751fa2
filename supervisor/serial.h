/*
 * serial.h: one guest's serial console as seen by the supervisor.
 *
 * The supervisor must read every guest's UART stream at all times, or the
 * guest stalls when qemu's buffer fills. What it reads goes to the guest's
 * console log file (size-capped, rotated once to .1; no fd held open), into a small ring of
 * recent output (replayed to a person who attaches, quoted when a guest
 * fails), to any attached watchers, and through a line scanner that spots
 * markers (the ready line, a kernel panic). Memory per guest stays bounded:
 * a partial line longer than the scanner's buffer is cut, the ring never grows.
 */
#pragma once
#include <glib.h>

#define NF_SERIAL_RING_SIZE 8192
#define NF_SERIAL_LINE_MAX 512

typedef struct NfSerial NfSerial;

typedef struct {
  /* A console line containing markers[which]; `line` is borrowed, no "\r\n". */
  void (*marker)(NfSerial *serial, guint which, const char *line, gpointer user_data);
  /* Raw output as it arrives (for attached consoles). May be NULL. */
  void (*data)(NfSerial *serial, const char *buf, gsize len, gpointer user_data);
  /* Writing the console log failed (errno `err`: a full disk...). Called
   * once, then again only after a write has succeeded. May be NULL. */
  void (*log_failed)(NfSerial *serial, int err, gpointer user_data);
  /* The stream ended (qemu closed it or died). Called once. */
  void (*eof)(NfSerial *serial, gpointer user_data);
} NfSerialCallbacks;

/* Takes ownership of `fd` (a connected stream). Appends to `log_path`
 * (created 0644), rotating it to `log_path`.1 past `log_max` bytes (0: the
 * default); NULL: no log (qemu writes it itself: console-log.h). `markers` is a NULL-terminated
 * list (borrowed; must outlive the serial). Fails only when the log cannot be opened; the error
 * names it. */
NfSerial *nf_serial_new(int fd, const char *log_path, gsize log_max, const char *const *markers,
                        const NfSerialCallbacks *callbacks, gpointer user_data, GError **error);

/* Up to `max` most recent bytes of output, as a string (never NULL). */
char *nf_serial_tail(NfSerial *serial, gsize max);

/* Input for the guest (console): written now as far as the socket takes
 * it, the rest kept and written as qemu reads (never blocking the loop),
 * up to NF_SERIAL_INPUT_MAX pending. Returns the bytes taken (fewer than
 * `len` only past that cap: the writer then offers the rest again later,
 * control-streams.c), -1 when the socket failed. */
#define NF_SERIAL_INPUT_MAX (1024 * 1024)
gssize nf_serial_write(NfSerial *serial, const char *data, gsize len);
/* Input taken but not yet read by qemu (here, or in the socket). */
gboolean nf_serial_input_pending(const NfSerial *serial);

/* Stops reading and closes the fd and log. Callable from the serial's own
 * callbacks (no further callback is made then). */
void nf_serial_free(NfSerial *serial);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(NfSerial, nf_serial_free)
