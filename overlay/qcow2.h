/*
 * qcow2.h: a minimal in-process reader of a byte range of a qcow2 image,
 * following its backing chain (raw or qcow2 backing files).
 *
 * It exists for speed: `ps` shows every guest's firmware slot from the env
 * block inside its overlay, and spawning qemu-img for each of 1,000 guests
 * costs tens of seconds of CPU, while reading two clusters' mappings here
 * costs microseconds. It only handles what `qemu-img create` makes and a
 * guest writes (plain and zero clusters, no encryption, compression,
 * extended L2 or external data file); anything else is
 * NF_OVERLAY_ERROR_UNSUPPORTED, and callers fall back to qemu's tools.
 */
#pragma once
#include <glib.h>

#include "overlay/tool.h"

/* Reads `len` bytes at guest offset `offset` of the qcow2 image `path` into
 * `buf`, reading unallocated clusters from the backing chain (zeros where
 * there is none). Returns TRUE, or FALSE with NF_OVERLAY_ERROR_UNSUPPORTED
 * (use qemu-img), _BASE_INVALID (not qcow2, range beyond the disk, broken
 * metadata) or a G_FILE_ERROR. Never writes. */
gboolean nf_overlay_qcow2_pread(const char *path, guint8 *buf, gsize len, guint64 offset,
                                GError **error);
