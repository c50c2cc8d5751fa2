/*
 * log-print.h: a guest's console log as `logs` prints it: the rotated part,
 * then the live log up to the offset the supervisor gave (so that a stream
 * from that offset on neither repeats nor misses a byte), then streamed
 * bytes. For several guests every line goes out behind its guest's name
 * (`vm-0003 | ...`), so `logs all | grep` says which guest printed what.
 */
#pragma once
#include <glib.h>
#include <jansson.h>

/* Where one guest's output stands. */
typedef struct {
  const char *prefix; /* "vm-0003 | "; NULL: bytes as they are (one guest) */
  gboolean at_line_start;
} NfLogOut;

/* Writes `len` bytes to stdout as they are (the console client's output
 * too); FALSE (errno set) when stdout is gone or failed. */
gboolean nf_log_write_raw(const char *buf, gsize len);
/* After a write to stdout failed (errno as it left): 0 for a reader that
 * went away (EPIPE, as `| head` does), else says why and 1 (a full disk
 * must not pass for a complete log). */
int nf_log_write_failed(const char *verb);
/* Writes `len` bytes to stdout, each line behind out->prefix. FALSE when
 * stdout is gone (`logs -f | head`): the caller stops, without an error. */
gboolean nf_log_write(NfLogOut *out, const char *buf, gsize len);
/* Ends a line left open (a prompt), so the next guest's starts on its own. */
gboolean nf_log_end_line(NfLogOut *out);
/* The log a `logs` reply names (rotated_path, path, start, end) to stdout.
 * FALSE with `error` set when a file cannot be read (one never made is
 * empty); FALSE without one when stdout is gone. */
gboolean nf_log_print(json_t *reply, NfLogOut *out, GError **error);
/* The same log appended to `into` (as it is, no prefix). */
gboolean nf_log_read(json_t *reply, GString *into, GError **error);
