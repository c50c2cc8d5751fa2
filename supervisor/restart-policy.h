/*
 * restart-policy.h: whether and when a guest that ended starts again.
 * Exponential backoff with jitter, a floor under every restart delay, plus an
 * OTP-style intensity limit: more than `max_restarts` restarts within
 * `window_ms` and the guest is given up on (FAILED) until a person restarts
 * it. Pure functions over a small tally, so the arithmetic is unit tested
 * without a VM.
 *
 * Events are counted in a window counter of fixed size (NfWindowCount), not
 * kept one by one: any --max-restarts, and the fleet's failure-storm guard at
 * any fleet size, fit in a few hundred bytes. The price is the window's edge:
 * an event is counted for at least the window and at most one slice
 * (window / NF_WINDOW_SLICES) longer, which errs on the safe side (a guest is
 * given up on, or restarts paused, a little early, never late).
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

/* Every restart waits at least this long after the exit, whatever --backoff
 * says (0 included): a guest that fails at once costs at most ten spawns a
 * second, not a tight loop. A reboot waits it too. */
#define NF_RESTART_FLOOR_MS 100

#define NF_WINDOW_SLICES 16

/* How many events happened within a time window, in bounded memory: counts
 * per slice of window / NF_WINDOW_SLICES, one more slice than the window
 * holds so the oldest partial slice still counts. Zero-initialised is empty. */
typedef struct {
  gint64 slice[NF_WINDOW_SLICES + 1]; /* which slice (time / slice length) each count is of */
  guint count[NF_WINDOW_SLICES + 1];
} NfWindowCount;

/* Records one event at monotonic `now_us` in a window of `window_ms`. The
 * same `window_ms` must be passed on every call for one counter. */
void nf_window_count_add(NfWindowCount *w, guint window_ms, gint64 now_us);

/* Events within the window ending at `now_us` (see the header comment for
 * the edge). */
guint nf_window_count_recent(const NfWindowCount *w, guint window_ms, gint64 now_us);

typedef struct {
  NfWindowCount restarts;  /* restarts within the policy's window */
  guint consecutive;       /* failures since the guest was last healthy */
  gint64 storm_counted_us; /* when the fleet's storm guard last counted this guest; 0: never */
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
 * restart and *delay_ms is at least NF_RESTART_FLOOR_MS. A reboot restarts
 * after the floor only and does not count as a failure. */
NfRestartDecision nf_restart_decide(const NfRestartPolicy *policy, NfRestartTally *tally,
                                    NfExitKind kind, gint64 now_us, double random01,
                                    guint *delay_ms);

/* Restarts inside the window ending at `now_us`. */
guint nf_restart_recent(const NfRestartTally *tally, guint window_ms, gint64 now_us);

/* The guest proved healthy (ready for a whole restart window, judged when it
 * exits: lifecycle.c): backoff starts over. */
void nf_restart_tally_healthy(NfRestartTally *tally);
