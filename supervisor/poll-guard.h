/*
 * poll-guard.h: keeps the supervisor's main loop waiting, not spinning, when
 * its open-file limit is lowered under it.
 *
 * poll(2) refuses (EINVAL) a set of more descriptors than RLIMIT_NOFILE
 * allows, even descriptors that are already open. GLib's loop polls one fd
 * per control client and HTTP connection besides its own few, so a limit
 * lowered below that number (`prlimit --nofile` on a running supervisor, a
 * service manager's LimitNOFILE= applied late) made every iteration fail at
 * once: GLib warned and went round again, at 100 % CPU and a million log
 * lines in seconds. The guard is the loop's poll function: when poll
 * refuses for that reason it raises the soft limit back up to the hard one
 * if it can; if it cannot, it says so once, naming the limit and the fix,
 * and waits through a reserve epoll set made at install time (epoll has no
 * such limit), so the fleet keeps being supervised. Once the set fits the
 * limit again it says so and polls as before. Not guarded: GLib's own
 * worker thread, which polls two fds, so only a limit under 2 reaches it.
 */
#pragma once
#include <glib.h>

typedef struct NfPollGuard NfPollGuard;

/* Called with a one-line message (no newline) when the guard acts. */
typedef void (*NfPollGuardNotice)(const char *message, gpointer user_data);

/* Becomes the poll function of `ctx` (NULL: the default context). One guard
 * per process (a poll function has no user data); a second install while
 * one is live returns NULL with an error, as does a failure to make the
 * reserve epoll set. Free it before the context goes away. */
NfPollGuard *nf_poll_guard_install(GMainContext *ctx, NfPollGuardNotice notice, gpointer user_data,
                                   GError **error);

/* Gives the context its plain g_poll back and closes the reserve set.
 * NULL is ignored. */
void nf_poll_guard_free(NfPollGuard *guard);
