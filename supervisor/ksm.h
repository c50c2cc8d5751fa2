/*
 * ksm.h: the host's Kernel Samepage Merging as a fleet memory lever. Guests
 * of one fleet run the same kernel and initramfs, and each qemu keeps its own
 * copy of the kernel image to reload at reset, so much of a fleet's memory is
 * identical; KSM (off by default) stores such pages once.
 *
 * KSM is host-wide, so a fleet that turns it on must give the host back
 * exactly what it found, even after a crash, and must not undo the settings
 * of another fleet still using KSM. The module keeps its books in a small
 * directory (NF_KSM_STATE_DIR, root-only like KSM itself):
 *   - `saved`: the host's settings as the first fleet found them;
 *   - `owner-<hash of the fleet's runtime dir>`: one file per fleet using KSM
 *     (its supervisor's pid and start time, so that a dead one's reused pid
 *     does not keep it alive, and the scan rate it asked for);
 *   - `lock`: flock'ed around every read-modify-write.
 * The applied scan rate is the sum of the live owners' rates. When the last
 * owner goes (stop, or a dead supervisor's entry pruned at the next start of
 * any fleet or at `down`), `saved` is written back and removed.
 *
 * NERVESFLEET_KSM_SYSFS and NERVESFLEET_KSM_STATE override the two dirs
 * (tests use them so they never race other users of the real host KSM).
 */
#pragma once
#include <glib.h>
#include "supervisor/config.h"

#define NF_KSM_SYSFS_DIR "/sys/kernel/mm/ksm"
#define NF_KSM_STATE_DIR "/run/nervesfleet-ksm"

/* --ksm auto: on for fleets of at least this many guests (when allowed). */
#define NF_KSM_AUTO_MIN_GUESTS 8

typedef struct NfKsm NfKsm;

/* What /sys/kernel/mm/ksm says now. `present` FALSE: no KSM in this kernel. */
typedef struct {
  gboolean present;
  gboolean writable; /* we may change it (root) */
  guint run;
  guint pages_to_scan;
  guint sleep_ms;
  guint64 pages_shared;  /* distinct merged pages kept */
  guint64 pages_sharing; /* pages mapped onto them: the saving */
  guint64 zero_pages;    /* pages merged into the zero page (use_zero_pages) */
  guint64 full_scans;    /* passes ksmd completed over all mergeable memory */
} NfKsmState;

/* Parses "auto", "on" or "off"; an error naming --ksm otherwise. */
gboolean nf_ksm_mode_parse(const char *text, NfKsmMode *mode, GError **error);

/* Whether a fleet of `guests` guests should run KSM in `mode`: ON always,
 * OFF never, AUTO when guests >= NF_KSM_AUTO_MIN_GUESTS and KSM is writable. */
gboolean nf_ksm_wanted(NfKsmMode mode, guint guests);

/* qemu's own memory beyond guest RAM (heap with the kernel image's reset
 * copy, TCG buffer): what ksmd has to scan per guest besides its RAM. */
#define NF_KSM_QEMU_MIB 64

/* ksmd pages per 20 ms wake-up so that `guests` guests of about `mib` MiB of
 * qemu memory each are scanned once in ~10 s: fast enough to merge a boot
 * storm's pages within a minute, slow enough that ksmd does not eat the
 * cores the boots need. Clamped to [100, 20000]. */
guint nf_ksm_scan_pages(guint guests, guint64 mib);

/* Registers the fleet whose runtime dir is `owner_key` as a KSM user and
 * turns merging on (saving the host's settings first if no fleet did).
 * NULL with an error naming the file and the fix when KSM is missing or not
 * writable (root). */
NfKsm *nf_ksm_acquire(const char *owner_key, guint pages_to_scan, GError **error);

/* A fleet whose guests up grew or shrank: its scan rate becomes `pages_to_scan` (the
 * applied rate stays the sum over live owners). */
void nf_ksm_set_rate(NfKsm *ksm, guint pages_to_scan);

/* Unregisters; the last owner restores the saved settings. Frees. */
void nf_ksm_release(NfKsm *ksm);

/* Frees without unregistering: a detached supervisor going away while its
 * guests still run (its entry is pruned once its pid is gone). */
void nf_ksm_forget(NfKsm *ksm);

/* Crash recovery, at every fleet start and at `down`: drops the entry of
 * `owner_key` (may be NULL) and those of dead supervisors; when no owner is
 * left and settings were saved, restores them. TRUE when it restored. Quiet
 * when there is nothing to do or no right to do it. */
gboolean nf_ksm_recover(const char *owner_key);

/* Reads the host's KSM state (never fails: see `present`). */
void nf_ksm_read_state(NfKsmState *state);

/* KSM's saving on the whole host in bytes ((pages_sharing + zero_pages) x
 * page size); 0 when KSM is absent. */
guint64 nf_ksm_saved_bytes(void);

/* KSM's saving in one process, from /proc/PID/ksm_stat: pages of it that are
 * merged (ksm_merging_pages + ksm_zero_pages), in bytes; 0 when unknown. */
guint64 nf_ksm_process_saved_bytes(GPid pid);
