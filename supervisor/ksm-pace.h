/*
 * ksm-pace.h: how fast ksmd scans for one fleet. Paced to go over the memory
 * of the guests up once in ~10 s (nf_ksm_scan_pages) for as long as the fleet
 * ran, ksmd kept ~40 % of a core busy next to 100 idle guests whose qemus used
 * 2.5 % together, a minute after it had merged all it ever would
 * (bench/README.md, "eighth pass"). So the pace is fast only while there is
 * something to find: when a guest comes up (new memory), and while each full
 * scan merges more. A full scan that merged less than a hundredth more (and
 * less than 1 MiB) halves the pace, down to 1/64 (one pass in ~10 min); one
 * that merged more puts it back to fast.
 *
 * Pure logic, no I/O: the fleet reads ksmd's counters (nf_ksm_read_state) on
 * a timer, feeds them here and applies nf_ksm_pace_pages (nf_ksm_set_rate).
 */
#pragma once
#include <glib.h>

#define NF_KSM_PACE_MAX_SHIFT 6        /* slowest: fast / 64 */
#define NF_KSM_PACE_MIN_GAIN_PAGES 256 /* 1 MiB: a pass that merged less found nothing */

typedef struct {
  guint fast;         /* pages per wake-up for the guests up (nf_ksm_scan_pages) */
  guint shift;        /* the pace is fast >> shift */
  gboolean seen;      /* full_scans and saved hold a reading */
  guint64 full_scans; /* ksmd's full_scans at the last reading */
  guint64 saved;      /* pages merged (sharing + zero pages) at the last full scan */
} NfKsmPace;

/* The pace for the guests up now is `fast`; the slowdown, if any, stays. */
void nf_ksm_pace_set_fast(NfKsmPace *p, guint fast);

/* A guest came up: its memory is new to ksmd, so back to fast. */
void nf_ksm_pace_wake(NfKsmPace *p);

/* ksmd's counters now: after each full scan, fast again if it merged enough,
 * else one step slower. TRUE when the pace changed. */
gboolean nf_ksm_pace_observe(NfKsmPace *p, guint64 full_scans, guint64 saved);

/* Pages per wake-up to ask ksmd for now (at least 1). */
guint nf_ksm_pace_pages(const NfKsmPace *p);
