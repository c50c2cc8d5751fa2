/*
 * limiter.h: the boot window that keeps a boot storm from melting the host.
 *
 * A sliding window, not fixed batches: at most `batch` guests are between
 * spawn and ready at once, and each guest that leaves that stretch (ready,
 * failed, stopped) lets the next in, so early guests are usable early.
 * Without a user-given batch the window adapts: while guests wait and a core
 * sits idle, one more is admitted (up to twice the batch); a saturated host
 * takes the extra back. Restarts go through the same window and can be held
 * back as a group (the fleet's failure-storm guard), and all admission can
 * be paused (the memory policy's back-pressure). Spawning happens in
 * short slices per main loop iteration, so the control socket and QMP stay
 * responsive during a storm of thousands.
 */
#pragma once
#include <glib.h>
#include "supervisor/vm.h"

typedef struct NfLimiter NfLimiter;

typedef struct {
  /* Guests between spawn and ready right now. */
  guint (*booting)(gpointer user_data);
  /* Admit `vm`: spawn it (a failure arrives as a state change). */
  void (*start)(NfVm *vm, gpointer user_data);
} NfLimiterOps;

NfLimiter *nf_limiter_new(guint batch, gboolean adaptive, guint cores, const NfLimiterOps *ops,
                          gpointer user_data);
void nf_limiter_free(NfLimiter *limiter);

/* Queues `vm` (at the tail) and admits what the window allows. */
void nf_limiter_push(NfLimiter *limiter, NfVm *vm);
/* Takes `vm` out of the queue, if it is there. */
void nf_limiter_remove(NfLimiter *limiter, NfVm *vm);
/* The head of the queue, removed; NULL when empty (for draining at stop). */
NfVm *nf_limiter_pop(NfLimiter *limiter);
/* A slot may have opened, or restarts resumed: admit what now fits. */
void nf_limiter_kick(NfLimiter *limiter);
/* Admit nothing more, ever (the fleet is stopping or cannot start). */
void nf_limiter_close(NfLimiter *limiter);

/* Restarts (guests queued again after an exit) wait until `until_us`
 * (monotonic); first boots still go. */
void nf_limiter_hold_restarts(NfLimiter *limiter, gint64 until_us);
gboolean nf_limiter_restarts_held(NfLimiter *limiter);

/* While paused no guest is admitted, first boots or restarts (host memory
 * back-pressure, mempolicy.c); resuming admits what fits. */
void nf_limiter_pause(NfLimiter *limiter, gboolean paused);
gboolean nf_limiter_paused(NfLimiter *limiter);

guint nf_limiter_batch(NfLimiter *limiter);
/* Guests waiting for a slot. */
guint nf_limiter_waiting(NfLimiter *limiter);
