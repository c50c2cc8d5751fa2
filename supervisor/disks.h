/*
 * disks.h: the fleet's disks: one shared base image and a qcow2 overlay per
 * guest in <state>/disks/, kept across restarts (persistent) until reflashed.
 * The base is inspected and its identity checked against what the overlays
 * were made from before any guest starts; overlays are made in parallel and
 * only when missing. For the Nerves profile each new overlay gets the guest's
 * serial written into its U-Boot environment before first boot.
 */
#pragma once
#include <glib.h>
#include "overlay/env.h"
#include "supervisor/config.h"
#include "supervisor/paths.h"

typedef struct NfDisks NfDisks;

/* Inspects the base (cfg->disk), cleans temps of a crashed run, checks (or
 * with cfg->reflash_all, re-records) the base identity. NULL with an error
 * naming the file and the fix. Blocking: startup only. */
NfDisks *nf_disks_new(const NfFleetConfig *cfg, const NfFleetPaths *paths, GError **error);
void nf_disks_free(NfDisks *disks);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(NfDisks, nf_disks_free)

/* <state>/disks/<fleet>-<id>.qcow2 (new string). */
char *nf_disks_overlay_path(NfDisks *disks, guint id);

/* Makes the overlays of guests first_id..first_id+count-1 (in parallel; all
 * of them anew with cfg->reflash_all), injecting serials for Nerves. Blocks
 * until done; the error names the first failure. */
gboolean nf_disks_prepare(NfDisks *disks, guint first_id, guint count, GError **error);

/* One guest's overlay, just before it boots: made if missing, or made anew
 * when `reflash`. Blocking (ms; ~100 ms with a Nerves serial to inject). */
gboolean nf_disks_ensure_one(NfDisks *disks, guint id, gboolean reflash, GError **error);

/* The guest's firmware env as of its overlay (cached by overlay mtime), or
 * NULL when it has none. Borrowed until the next call for that guest. */
const NfUbootEnv *nf_disks_env(NfDisks *disks, guint id);

/* Deletes every overlay and the disks dir (--ephemeral). */
void nf_disks_remove_all(NfDisks *disks);
