/*
 * overlay.h: per-guest copy-on-write disks over the fleet's base image.
 *
 * Each guest writes to its own qcow2 overlay (`qemu-img create -f qcow2 -F
 * <fmt> -b <base>`), so a fleet of a thousand devices costs a thousand small
 * files plus one shared base. An overlay directory belongs to one fleet and
 * to this module: it holds the overlays (<name>.qcow2), their creation temps
 * (<name>.qcow2.tmp-XXXXXX, only while qemu-img runs) and base.json, the
 * identity of the base the overlays were made from. An overlay appears under
 * its final name only once complete (temp + fsync + rename), so a crash, a
 * full disk or a permission problem never leaves a half-written overlay that
 * a later run would mistake for a good one.
 *
 * Creation is asynchronous on the caller's thread-default GMainContext: the
 * first overlay comes from a qemu-img child, the others are copies of it;
 * writing, fsync and rename run in GLib's worker threads. The caller's loop
 * only reads the ~200 KiB template and dispatches completions, so the
 * supervisor keeps serving running guests meanwhile.
 */
#pragma once
#include <gio/gio.h>

#include "overlay/base.h"

#define NF_OVERLAY_BASE_RECORD "base.json"

/* <dir>/<name>.qcow2 (new string). */
char *nf_overlay_path(const char *dir, const char *name);

/* Checks that the overlays in `dir` were made from `base`, creating `dir`
 * (0700) if needed. If base.json is missing, or no overlay exists yet, the
 * current identity is recorded and TRUE returned. If it differs and overlays
 * exist, returns FALSE with NF_OVERLAY_ERROR_BASE_CHANGED saying what changed
 * and the way out (reflash, or restoring the base). Other failures:
 * NF_OVERLAY_ERROR_IO / _RECORD. Blocking (reads 1 MiB of the base). */
gboolean nf_overlay_check_base(const char *dir, const NfOverlayBase *base, GError **error);

/* Records `base` as the base of the overlays in `dir` unconditionally: call
 * it after every overlay was reflashed over a new base. */
gboolean nf_overlay_record_base(const char *dir, const NfOverlayBase *base, GError **error);

typedef enum {
  NF_OVERLAY_ENSURE_DEFAULT = 0,
  NF_OVERLAY_ENSURE_REPLACE = 1 << 0, /* reflash: recreate even if present */
} NfOverlayEnsureFlags;

/* Called once per path, in completion order, on the caller's context:
 * `created` is FALSE for an overlay that already existed; `error` (owned by
 * the callee, NULL on success) is that guest's failure. */
typedef void (*NfOverlayItemFunc)(guint index, const char *path, gboolean created,
                                  const GError *error, gpointer user_data);

/* Makes sure an overlay over `base` exists at each of `paths` (NULL-terminated).
 * `max_parallel` (0: number of CPUs, at least 2) bounds concurrent qemu-img
 * runs, which only matters when copying is off (an overlay over 16 MiB).
 * One guest's failure does not stop the others. `base` and `paths` are copied. When all
 * are done (or, after `cancellable` fires, all started ones), `done_cb` runs;
 * call nf_overlay_ensure_finish() from it. Cancellation starts no new ones. */
void nf_overlay_ensure_async(const NfOverlayBase *base, const char *const *paths,
                             NfOverlayEnsureFlags flags, guint max_parallel,
                             GCancellable *cancellable, NfOverlayItemFunc item_cb,
                             gpointer item_data, GAsyncReadyCallback done_cb, gpointer user_data);

/* TRUE if every overlay is in place. Otherwise FALSE with the first failure,
 * prefixed with how many failed (G_IO_ERROR_CANCELLED if cancelled).
 * `n_created` (optional) is set either way. */
gboolean nf_overlay_ensure_finish(GAsyncResult *result, guint *n_created, GError **error);

/* The same, blocking the calling thread on a private main context (for the
 * CLI and tests; the supervisor should use the async form). */
gboolean nf_overlay_ensure_sync(const NfOverlayBase *base, const char *const *paths,
                                NfOverlayEnsureFlags flags, guint max_parallel,
                                NfOverlayItemFunc item_cb, gpointer item_data, guint *n_created,
                                GError **error);

/* Blocks until no qemu-img/qemu-io child and no file work (write, fsync,
 * rename) started by this library runs any more, whatever main context
 * their completions wait on (they are still delivered if it is iterated
 * later). For teardown: a supervisor leaving must not leave work behind in
 * its state dir. */
void nf_overlay_wait_all(void);

/* Factory reset of one overlay: atomically replaced by a fresh one over
 * `base`. The guest must not be running. Blocking (~20 ms). */
gboolean nf_overlay_reflash(const NfOverlayBase *base, const char *path, GError **error);

/* Deletes an overlay (ephemeral mode). Absent is success. */
gboolean nf_overlay_remove(const char *path, GError **error);

/* Deletes creation temps left in `dir` by a crashed run; returns how many.
 * Call at startup, before any creation runs in `dir`. */
guint nf_overlay_clean_temps(const char *dir);

/* Ephemeral teardown: removes every overlay, temp and base.json of `dir`,
 * then `dir` itself if that left it empty. Absent dir is success. */
gboolean nf_overlay_remove_all(const char *dir, GError **error);
