/*
 * ksm.h: the host's Kernel Samepage Merging as a fleet memory lever. Guests
 * of one fleet run the same kernel and initramfs, so much of their RAM is
 * identical; qemu already marks guest RAM mergeable, and KSM (off by default)
 * only has to be switched on. The settings found are restored when the fleet
 * stops: a fleet tool must not leave the host tuned behind it.
 */
#pragma once
#include <glib.h>

typedef struct NfKsm NfKsm;

/* Saves the current KSM settings and turns merging on with the given scan
 * rate. NULL with an error naming the file and the fix when KSM is missing or
 * not writable (needs root). */
NfKsm *nf_ksm_enable(guint pages_to_scan, guint sleep_ms, GError **error);

/* Writes back what nf_ksm_enable found, and frees. */
void nf_ksm_restore(NfKsm *ksm);

/* Pages currently shared (deduplicated) host-wide: pages_sharing. */
guint64 nf_ksm_pages_sharing(void);
