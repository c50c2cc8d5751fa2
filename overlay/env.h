/*
 * env.h: the U-Boot environment block inside a guest's qcow2 overlay.
 *
 * Nerves firmware keeps its state (active slot, upgrade flags, serial number)
 * in a U-Boot env block on the disk. Writes go through `qemu-io` so they land
 * in the overlay, never in the shared base. Reads have three paths, measured
 * for `ps` over 1,000 guests (see env.c): an in-process qcow2 reader (the
 * default), `qemu-img dd`, and `qemu-io read -v`. Callers should still cache
 * by overlay mtime: the env only changes when a guest runs.
 */
#pragma once
#include <gio/gio.h>

#include "overlay/ubootenv.h"

typedef enum {
  NF_OVERLAY_ENV_READ_AUTO,     /* in-process, falling back to qemu-img on unsupported images */
  NF_OVERLAY_ENV_READ_NATIVE,   /* in-process qcow2 reader only */
  NF_OVERLAY_ENV_READ_QEMU_IMG, /* `qemu-img dd` into a temp file */
  NF_OVERLAY_ENV_READ_QEMU_IO,  /* `qemu-io read -v`, hex dump parsed */
} NfOverlayEnvReader;

/* Reads and decodes the env block at `offset` (`size` bytes) of the qcow2
 * overlay, as the guest would see it (the base shows through where the
 * overlay has no data). Works while the guest runs (shared read). On success
 * stores a new env in *env and returns TRUE; otherwise FALSE with
 * NF_UBOOTENV_ERROR_BAD_CRC (naming the overlay: no env written there yet, or
 * corrupt), NF_OVERLAY_ERROR_* or G_FILE_ERROR. Blocking: microseconds
 * natively, ~20 ms per qemu tool run. */
gboolean nf_overlay_env_read(const char *overlay, guint64 offset, gsize size, NfUbootEnv **env,
                             GError **error);
gboolean nf_overlay_env_read_with(NfOverlayEnvReader how, const char *overlay, guint64 offset,
                                  gsize size, NfUbootEnv **env, GError **error);

/* Encodes `env` (valid CRC) and writes it at `offset` of the qcow2 overlay
 * with qemu-io. The guest must not be running (qemu-io takes the write lock
 * and fails otherwise). Not atomic against a crash mid-write: a torn block
 * has a bad CRC, which U-Boot and nf_overlay_env_read() both detect. Returns
 * TRUE, or FALSE with NF_OVERLAY_ERROR_TOOL/_IO or NF_UBOOTENV_ERROR. */
gboolean nf_overlay_env_write(const char *overlay, guint64 offset, const NfUbootEnv *env,
                              GError **error);

/* Read-modify-write of one variable (value NULL unsets it). If the block has
 * a bad CRC and `create_if_invalid` is TRUE, starts from an empty env of
 * `size` bytes instead of failing (a blank disk). */
gboolean nf_overlay_env_set(const char *overlay, guint64 offset, gsize size, const char *key,
                            const char *value, gboolean create_if_invalid, GError **error);

/* The same without blocking the caller's loop on qemu-io (~20-100 ms): the
 * read and encode happen now (microseconds), the write in a qemu-io child;
 * `done` runs on the thread-default main context: call
 * nf_overlay_env_set_finish() from it. Not cancellable (see
 * nf_overlay_tool_run_async). */
void nf_overlay_env_set_async(const char *overlay, guint64 offset, gsize size, const char *key,
                              const char *value, gboolean create_if_invalid,
                              GAsyncReadyCallback done, gpointer user_data);
gboolean nf_overlay_env_set_finish(GAsyncResult *result, GError **error);

/* A cache of decoded env blocks for `ps`-style polling of many overlays: an
 * overlay is re-read only when its size or mtime changed (the env changes
 * only while its guest runs). Failures are cached the same way. Caveats: a
 * running qemu may hold qcow2 metadata updates not yet written, so a read
 * can lag behind the guest's last writes until it flushes; mtime ticks are
 * coarse (a few ms), so a write in the same tick as a read may be missed
 * until the next one. */
typedef struct NfOverlayEnvCache NfOverlayEnvCache;

/* A cache for blocks at `offset`, `size` bytes. Never NULL. */
NfOverlayEnvCache *nf_overlay_env_cache_new(guint64 offset, gsize size);
void nf_overlay_env_cache_free(NfOverlayEnvCache *cache);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(NfOverlayEnvCache, nf_overlay_env_cache_free)

/* The env of `overlay`, borrowed from the cache (valid until the next
 * nf_overlay_env_cache_get/forget for that overlay, or the cache's free), or
 * NULL with the (possibly cached) error of nf_overlay_env_read(). A missing
 * overlay is a G_FILE_ERROR_NOENT and is not cached. */
const NfUbootEnv *nf_overlay_env_cache_get(NfOverlayEnvCache *cache, const char *overlay,
                                           GError **error);

/* Drops what is cached for `overlay` (after a reflash or remove). */
void nf_overlay_env_cache_forget(NfOverlayEnvCache *cache, const char *overlay);

#define NF_OVERLAY_ENV_SERIAL_KEY "nerves_serial_number"

/* Sets nerves_serial_number (where Nerves devices read their serial from) in
 * the default block (0x2000, 0x20000), keeping every other variable. The
 * block must exist (the firmware image provides it). */
gboolean nf_overlay_env_set_serial(const char *overlay, const char *serial, GError **error);
/* The same without blocking; finish with nf_overlay_env_set_finish(). */
void nf_overlay_env_set_serial_async(const char *overlay, const char *serial,
                                     GAsyncReadyCallback done, gpointer user_data);
