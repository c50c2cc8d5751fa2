/*
 * tool.h: running the qemu-img / qemu-io helpers (internal to overlay/).
 *
 * Everything overlay/ knows about disk formats it learns from QEMU's own
 * tools, so their failures must become readable errors: the tool's first
 * stderr line ("qemu-img: Could not open 'x': ...") is what the user needs.
 * Every tool child is started here and remembered until it has exited, so
 * that a supervisor going away can wait for the ones still writing in its
 * directories (nf_overlay_tool_wait_all) instead of leaving them behind.
 */
#pragma once
#include <gio/gio.h>

#define NF_OVERLAY_ERROR (nf_overlay_error_quark())
GQuark nf_overlay_error_quark(void);

typedef enum {
  NF_OVERLAY_ERROR_BASE_MISSING,    /* base image (or its backing file) does not exist */
  NF_OVERLAY_ERROR_BASE_INVALID,    /* unreadable, truncated, corrupt, unsupported format */
  NF_OVERLAY_ERROR_FORMAT_MISMATCH, /* the named format is not what the file is */
  NF_OVERLAY_ERROR_BASE_CHANGED,    /* base differs from the one overlays were made from */
  NF_OVERLAY_ERROR_TOOL,            /* qemu-img / qemu-io failed or could not run */
  NF_OVERLAY_ERROR_IO,              /* creating, writing or renaming our files failed */
  NF_OVERLAY_ERROR_RECORD,          /* base.json unreadable or malformed */
  NF_OVERLAY_ERROR_UNSUPPORTED,     /* qcow2 feature the in-process reader leaves to qemu */
} NfOverlayError;

/* Starts argv (argv[0] looked up in PATH) with `flags`, and remembers the
 * child for nf_overlay_tool_wait_all(). `fd3` (taken; -1 for none) becomes
 * the child's fd 3, which it can open as /dev/fd/3. NULL with GLib's error
 * if it cannot start. Call from one thread only (the supervisor's). */
GSubprocess *nf_overlay_tool_spawn(const char *const *argv, GSubprocessFlags flags, int fd3,
                                   GError **error);

/* Runs argv (argv[0] looked up in PATH) to completion, blocking the calling
 * thread, and returns TRUE if it exited 0. `out`/`err` (optional) receive
 * its stdout/stderr. A non-zero exit is NF_OVERLAY_ERROR_TOOL with the first
 * non-empty stderr line; `exit_status` (optional) gets the code either way
 * (-1 if it did not exit normally). */
gboolean nf_overlay_tool_run(const char *const *argv, char **out, char **err, int *exit_status,
                             GError **error);

/* The same without blocking (`fd3` as for nf_overlay_tool_spawn): `done` runs on the caller's
 * thread-default main context once the tool has exited and its output is read; call
 * nf_overlay_tool_run_finish() from it (same results as nf_overlay_tool_run).
 * Not cancellable: a started tool is left to finish, so that when `done`
 * runs nothing writes its files any more. */
void nf_overlay_tool_run_async(const char *const *argv, int fd3, GAsyncReadyCallback done,
                               gpointer user_data);
gboolean nf_overlay_tool_run_finish(GAsyncResult *result, char **out, char **err, int *exit_status,
                                    GError **error);

/* Blocks until every child started by nf_overlay_tool_spawn() has exited
 * (tools take tens of ms), whatever main context their callbacks wait on;
 * those callbacks still run later if their context is iterated. For
 * teardown. Returns how many were still running. */
guint nf_overlay_tool_wait_all(void);

/* The first non-empty line of a tool's stderr, newly allocated ("" if none). */
char *nf_overlay_tool_first_line(const char *text);
