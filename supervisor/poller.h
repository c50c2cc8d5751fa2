/*
 * poller.h: one epoll set for the many quiet fds of a fleet, seen by GLib as
 * a single fd.
 *
 * GLib's main loop polls every fd of every source at every wakeup, so with
 * thousands of guests the poll itself (and GLib's walk over its sources)
 * becomes the idle cost. Guests' pidfds and console sockets are quiet almost
 * all the time; registered here they cost nothing per wakeup: the kernel's
 * epoll tells us which few are ready. Level-triggered, like poll, so a
 * callback may read only part of what is there.
 */
#pragma once
#include <glib.h>
#include <sys/epoll.h>

/* Returns FALSE to be removed (like G_SOURCE_REMOVE). */
typedef gboolean (*NfPollerFunc)(int fd, guint32 events, gpointer user_data);

/* Watches `fd` for `events` (EPOLLIN, ...) on the poller of the default
 * main context (made on first use). Returns an id > 0, or 0 when the fd
 * cannot be added (the caller may fall back to g_unix_fd_add). */
guint nf_poller_add(int fd, guint32 events, NfPollerFunc func, gpointer user_data);

/* Changes the events watched for entry `id` (EPOLLOUT on and off, say).
 * Unknown ids are ignored. */
void nf_poller_modify(guint id, guint32 events);

/* Stops watching; safe from inside the entry's own callback. Unknown ids
 * are ignored. The fd is not closed. */
void nf_poller_remove(guint id);
