/*
 * tool.h: running the qemu-img / qemu-io helpers (internal to overlay/).
 *
 * Everything overlay/ knows about disk formats it learns from QEMU's own
 * tools, so their failures must become readable errors: the tool's first
 * stderr line ("qemu-img: Could not open 'x': ...") is what the user needs.
 */
#pragma once
#include <glib.h>

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

/* Runs argv (argv[0] looked up in PATH) to completion, blocking the calling
 * thread, and returns TRUE if it exited 0. `out`/`err` (optional) receive
 * its stdout/stderr. A non-zero exit is NF_OVERLAY_ERROR_TOOL with the first
 * non-empty stderr line; `exit_status` (optional) gets the code either way
 * (-1 if it did not exit normally). */
gboolean nf_overlay_tool_run(const char *const *argv, char **out, char **err, int *exit_status,
                             GError **error);

/* The first non-empty line of a tool's stderr, newly allocated ("" if none). */
char *nf_overlay_tool_first_line(const char *text);
