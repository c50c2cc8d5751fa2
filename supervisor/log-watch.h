/*
 * log-watch.h: "has this file changed since I last looked?" for thousands of
 * files, at the cost of one inotify fd on the poller (poller.h).
 *
 * The console log cap (vm-console.c) stat()ed every guest's log every 30 s
 * to see whether it had outgrown its cap: at 1,000 idle guests ~10 % of the
 * idle supervisor's CPU (side by side 0.232 → 0.207 % of a core without it;
 * issue 17), nearly all of it spent on logs nobody had written to, since a
 * ready guest is quiet. A watch is one-shot (IN_ONESHOT): the first change
 * after arming disarms it and the kernel drops it, so a chatty log costs one
 * event per look, not one per write.
 *
 * Lives on the default main context, like the poller; an NfLogWatch is
 * embedded in its owner, which disarms it before freeing it.
 */
#pragma once
#include <glib.h>
#include <sys/inotify.h>

typedef struct {
  int wd; /* inotify watch descriptor while armed and unchanged since; else -1 */
} NfLogWatch;

#define NF_LOG_WATCH_INIT                                                                          \
  {                                                                                                \
    .wd = -1                                                                                       \
  }

/* Arms `w` on `path`: nf_log_watch_quiet() answers TRUE until the file is
 * next written to, truncated, moved or deleted. FALSE when it cannot (no
 * inotify, the user's watch limit reached, no such file, or another
 * NfLogWatch armed on the same file): the caller then looks every time. */
gboolean nf_log_watch_arm(NfLogWatch *w, const char *path);

/* TRUE while armed and the file unchanged since it was armed. */
gboolean nf_log_watch_quiet(const NfLogWatch *w);

/* Disarms; a disarmed watch is left alone. */
void nf_log_watch_disarm(NfLogWatch *w);

/* Reads the events queued on the non-blocking inotify fd `fd` until none is
 * left, calling `func` for each: the loop of this file's fd and of
 * log-follow.c's. */
typedef void (*NfInotifyFunc)(const struct inotify_event *ev, gpointer data);
void nf_inotify_drain(int fd, NfInotifyFunc func, gpointer data);
