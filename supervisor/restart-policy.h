/*
 * restart-policy.h: whether and when a guest that ended starts again.
 * Exponential backoff with jitter, plus an OTP-style intensity limit: more
 * than `max_restarts` restarts within `window_ms` and the guest is given up
 * on (FAILED) until a person restarts it. Pure functions over a small tally,
 * so the arithmetic is unit tested without a VM.
 */
#pragma once
#include <glib.h>
#include "supervisor/exit-kind.h"

typedef enum {
  NF_RESTART_ON_FAILURE = 0,
  NF_RESTART_ALWAYS,
  NF_RESTART_NEVER,
} NfRestartMode;

typedef struct {
  NfRestartMode mode;
  guint backoff_initial_ms;
  guint backoff_max_ms;
  guint max_restarts; /* R */
  guint window_ms;    /* T */
} NfRestartPolicy;

#define NF_RESTART_TALLY 32 /* recent restart times kept per guest: bounded */

typedef struct {
  gint64 times[NF_RESTART_TALLY]; /* monotonic µs of recent restarts, ring */
  guint count;                    /* valid entries */
  guint next;
  guint consecutive; /* failures since the guest was last healthy */
} NfRestartTally;

typedef enum {
  NF_RESTART_NO,      /* policy says stay down */
  NF_RESTART_AFTER,   /* restart after *delay_ms */
  NF_RESTART_GIVE_UP, /* intensity exceeded: FAILED */
} NfRestartDecision;

gboolean nf_restart_mode_parse(const char *text, NfRestartMode *mode, GError **error);
const char *nf_restart_mode_name(NfRestartMode mode);

/* Decides for an exit of `kind` at monotonic time `now_us`. `random01` is a
 * uniform draw in [0,1) for the jitter (±20%). On AFTER the tally records the
 * restart. A reboot restarts at once and does not count as a failure. */
NfRestartDecision nf_restart_decide(const NfRestartPolicy *policy, NfRestartTally *tally,
                                    NfExitKind kind, gint64 now_us, double random01,
                                    guint *delay_ms);

/* Restarts inside the window ending at `now_us`. */
guint nf_restart_recent(const NfRestartTally *tally, guint window_ms, gint64 now_us);

/* The guest proved healthy (ready for a while): backoff starts over. */
void nf_restart_tally_healthy(NfRestartTally *tally);
