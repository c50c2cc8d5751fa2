/*
 * disks.h: the fleet's disks: one shared base image and a qcow2 overlay per
 * guest in <state>/disks/, kept across restarts (persistent) until reflashed.
 * The base is inspected and its identity checked against what the overlays
 * were made from before any guest starts; overlays are made in parallel and
 * only when missing. For the Nerves profile each new overlay gets the guest's
 * serial written into its U-Boot environment before first boot.
 *
 * Once the fleet runs, overlays are made without blocking its main loop
 * (qemu-img and qemu-io run as children; copies of a template overlay in
 * short slices): a guest asks with nf_disks_ensure_async() and boots when
 * told its disk is ready. Requests made in the same loop iteration share
 * one batch, so a `reflash all` or a scale-up pays for one qemu-img run,
 * not one per guest. Requests for one guest run one after the other.
 */
#pragma once
#include <glib.h>
#include "overlay/env.h"
#include "supervisor/config.h"
#include "supervisor/paths.h"

typedef struct NfDisks NfDisks;
typedef struct NfDisksJob NfDisksJob;

/* Inspects the base (cfg->disk), cleans temps of a crashed run, checks (or
 * with cfg->reflash_all, re-records) the base identity. NULL with an error
 * naming the file and the fix. Blocking: startup only. `cfg` must outlive
 * the NfDisks. */
NfDisks *nf_disks_new(const NfFleetConfig *cfg, const NfFleetPaths *paths, GError **error);

/* Drops the requests not started yet, then blocks until the qemu-img/qemu-io
 * children of started ones have exited (tens of ms), so that none is left
 * writing in the state dir; their done callbacks are never called. */
void nf_disks_free(NfDisks *disks);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(NfDisks, nf_disks_free)

/* <state>/disks/<fleet>-<id>.qcow2 (new string). */
char *nf_disks_overlay_path(NfDisks *disks, guint id);

/* Makes the overlays of guests first_id..first_id+count-1 (in parallel; all
 * of them anew with cfg->reflash_all), injecting serials for Nerves (up to
 * one qemu-io per CPU at a time). Blocks until done, running its children
 * on a private main context: startup only. The error names the first
 * failure. */
gboolean nf_disks_prepare(NfDisks *disks, guint first_id, guint count, GError **error);

/* Called once on the thread-default main context of the request: `error`
 * is NULL when the overlay is ready (borrowed). */
typedef void (*NfDisksDoneFunc)(const GError *error, gpointer user_data);

/* One guest's overlay before it boots: made if missing, or made anew when
 * `reflash` (a fresh overlay over the base, serial injected again), without
 * blocking. Returns NULL when there is nothing to do (the overlay exists, no
 * reflash, nothing pending for this guest): the guest may boot now and
 * `done` is never called. Otherwise a handle, valid until `done` has been
 * called or nf_disks_cancel(). */
NfDisksJob *nf_disks_ensure_async(NfDisks *disks, guint id, gboolean reflash, NfDisksDoneFunc done,
                                  gpointer user_data);

/* The requester goes away: `done` will not be called. Work not started yet
 * is dropped (returns TRUE); started work (a qemu-img or qemu-io child) runs
 * to its end so the overlay is left whole, unreported (returns FALSE). */
gboolean nf_disks_cancel(NfDisksJob *job);

/* The guest's firmware env as of its overlay (cached by overlay mtime), or
 * NULL when it has none. Borrowed until the next call for that guest. */
const NfUbootEnv *nf_disks_env(NfDisks *disks, guint id);

/* Deletes every overlay and the disks dir (--ephemeral). */
void nf_disks_remove_all(NfDisks *disks);
