/*
 * base.h: the fleet's base image, the one read-only disk all guests share.
 *
 * Before any guest starts, the base is inspected with QEMU's own tools
 * (`qemu-img info`, and `qemu-img check` for qcow2, which is the only thing
 * that notices a truncated qcow2), so that a bad path or a broken image is
 * one clear error at startup instead of a thousand qemu failures. Its
 * identity (size, mtime, SHA-256 of its first MiB) is what overlay.c records
 * to notice a base replaced under existing overlays.
 */
#pragma once
#include <glib.h>

#include "overlay/tool.h"

typedef struct {
  char *path;           /* absolute (not symlink-resolved) */
  char *format;         /* "raw" or "qcow2" */
  guint64 virtual_size; /* bytes the guest sees */
  char *backing_file;   /* the base's own backing file (absolute), or NULL */
  guint chain_length;   /* 1 + number of backing files below the base */
} NfOverlayBase;

/* Inspects `path`. `format` is what the user named ("raw"/"qcow2") or NULL to
 * accept what qemu-img detects. Blocks (tens of ms; qemu-img check reads all
 * of a qcow2's metadata). Returns a new NfOverlayBase, or NULL with
 * NF_OVERLAY_ERROR_BASE_MISSING, _BASE_INVALID, _FORMAT_MISMATCH or _TOOL,
 * the message naming the file and what to do. */
NfOverlayBase *nf_overlay_base_inspect(const char *path, const char *format, GError **error);

void nf_overlay_base_free(NfOverlayBase *base);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(NfOverlayBase, nf_overlay_base_free)

typedef struct {
  char *path;   /* absolute path of the base */
  char *format; /* "raw" / "qcow2" */
  guint64 size; /* file size in bytes */
  gint64 mtime_ns;
  char *sha256_head; /* hex SHA-256 of the first MiB (or the whole file if smaller) */
} NfOverlayBaseId;

/* Computes the identity of the inspected base (reads up to 1 MiB). Returns a
 * new NfOverlayBaseId, or NULL with a G_FILE_ERROR. */
NfOverlayBaseId *nf_overlay_base_id_compute(const NfOverlayBase *base, GError **error);

/* NULL if a and b are the same base, else a new human-readable list of what
 * differs, e.g. "size 4194304 -> 8388608, content of the first MiB". */
char *nf_overlay_base_id_diff(const NfOverlayBaseId *a, const NfOverlayBaseId *b);

/* Writes the identity as JSON to `json_path` atomically (temp + rename).
 * FALSE with NF_OVERLAY_ERROR_IO on failure (no temp left). */
gboolean nf_overlay_base_id_save(const NfOverlayBaseId *id, const char *json_path, GError **error);

/* Reads an identity written by nf_overlay_base_id_save(). NULL with
 * G_FILE_ERROR_NOENT if the file does not exist, NF_OVERLAY_ERROR_RECORD if
 * it is malformed. */
NfOverlayBaseId *nf_overlay_base_id_load(const char *json_path, GError **error);

void nf_overlay_base_id_free(NfOverlayBaseId *id);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(NfOverlayBaseId, nf_overlay_base_id_free)
