/*
 * console-log.h: a guest's console log as qemu writes it (chardev
 * `logfile=`), read and bounded by the supervisor without holding the
 * console.
 *
 * The supervisor holds a guest's console socket only while someone needs the
 * live stream: from spawn to ready (the ready line), and while a person or a
 * `logs --follow` watches. The rest of the time qemu, which appends every
 * byte of the console to the log whether or not a client is connected, is
 * the only writer, and the supervisor holds no fd for it: at 10,000 guests
 * under a 20,000 open-file limit every fd per guest counts (issue 17). What
 * the supervisor still needs from the console after ready (a kernel panic's
 * line, to tell a panic from a plain reboot; the recent output quoted when
 * a guest fails) is read back from the file.
 */
#pragma once
#include <glib.h>

/* Bytes in the log now; 0 when it does not exist. */
gint64 nf_console_log_size(const char *path);

/* Keeps a log that qemu appends to (O_APPEND) under `max` bytes: past it,
 * moves the log's head, all but its last partial filesystem block, to
 * `path`.1 and drops it from the log in place (fallocate's COLLAPSE_RANGE,
 * which qemu's appends wait for: no byte is lost, and the writer's fd stays
 * valid, where a rename would send its writes to the .1). Offsets in the
 * log move down by the bytes moved, and a line may begin in the .1 and end
 * in the log. Where the filesystem cannot collapse (tmpfs), the whole log
 * is copied and truncated to 0: what qemu writes between the copy and the
 * truncation is then missing from both. TRUE when it rotated (*moved: the
 * bytes that left the log's head for the .1; may be NULL); FALSE when under
 * the cap, missing, or on an error (then `error` says which file). */
gboolean nf_console_log_cap(const char *path, gsize max, gint64 *moved, GError **error);

/* Bytes [from, to) of the log (fewer where it is shorter), NUL-terminated
 * (never NULL); *len: how many. */
char *nf_console_log_read(const char *path, gint64 from, gint64 to, gsize *len);

/* The last `max` bytes of the log (never NULL; "" when missing). */
char *nf_console_log_tail(const char *path, gsize max);

/* The (at most) `max` bytes of the log that end at byte `end` (never NULL;
 * shorter when the log is): a replay that a follower from `end` continues. */
char *nf_console_log_tail_at(const char *path, gint64 end, gsize max);

/* TRUE when a line of the log that starts at or after byte `from` (at most
 * the last 64 KiB are read) contains `needle`. A log rotated since `from`
 * is read from its start. */
gboolean nf_console_log_find(const char *path, gint64 from, const char *needle);

/* The same for a whole line: `line` followed by its end of line (LF or
 * CRLF), in one read of the log. */
gboolean nf_console_log_find_line(const char *path, gint64 from, const char *line);
