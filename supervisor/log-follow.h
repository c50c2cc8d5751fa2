/*
 * log-follow.h: every byte appended to a file from a given offset on, as it
 * is written (`tail -f` on the main loop).
 *
 * A guest's console log, which qemu writes itself (console-log.h), is the
 * one complete record of its console: qemu logs each chunk whether or not a
 * client is connected to the console socket, but sends a chunk only to a
 * client it has already accepted. So a watcher fed from the socket misses
 * what the guest printed between the replay read from the log and qemu's
 * accept (a prompt printed just after the ready line, say); fed from the
 * log, from the very offset its replay ended at, it misses nothing and sees
 * nothing twice.
 *
 * All followers share one inotify fd on the poller (poller.h); a follower
 * holds an inotify watch, not an open fd: each change is read with an open,
 * preads to the end, and a close. A file found shorter than the follower's
 * offset was truncated: it is read again from its start (a truncated file
 * that grew back past the offset before the follower looked is not seen as
 * one: an owner that truncates says so with nf_log_follow_restart).
 *
 * Lives on the default main context. The callback may free the follower.
 */
#pragma once
#include <glib.h>

typedef struct NfLogFollow NfLogFollow;
typedef void (*NfLogFollowFunc)(const char *buf, gsize len, gpointer user_data);

/* Follows `path` from byte `from` on: what is past `from` now is delivered
 * from the main loop soon, later appends as they are written. NULL with
 * `error` when the file cannot be watched (no inotify, the user's watch limit
 * reached: the error says which and the fix). */
NfLogFollow *nf_log_follow_new(const char *path, gint64 from, NfLogFollowFunc func,
                               gpointer user_data, GError **error);

/* Delivers what the file holds past the follower's offset now, at once
 * (before the owner truncates it, say). */
void nf_log_follow_drain(NfLogFollow *f);

/* The owner truncated the file (or it was made anew): read on from `from`,
 * watching the file now at the path. FALSE with `error` when it cannot be
 * watched (then nothing more comes until a restart succeeds). */
gboolean nf_log_follow_restart(NfLogFollow *f, gint64 from, GError **error);

/* FALSE once the file is no longer watched: deleted or moved away, or a
 * restart failed. */
gboolean nf_log_follow_watching(const NfLogFollow *f);

/* The offset up to which bytes were delivered. */
gint64 nf_log_follow_offset(const NfLogFollow *f);

void nf_log_follow_free(NfLogFollow *f);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(NfLogFollow, nf_log_follow_free)
