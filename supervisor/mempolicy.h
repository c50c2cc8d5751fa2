/*
 * mempolicy.h: the fleet's memory policy (`run --balloon-policy guard|auto`). One
 * module reads fleet state (each guest's balloon stats, as the health probe
 * last saw them; the host's /proc/meminfo MemAvailable and the memory PSI of
 * /proc/pressure/memory) and emits two things:
 *  - balloon targets: idle guests shrink toward their working set plus a
 *    headroom, in bounded steps (auto: always; guard, the default: only
 *    while the host is under pressure, since a shrunk guest can panic on a
 *    burst it would have survived, see mempolicy.c); a guest whose available
 *    memory falls below a low mark gets memory back at once (up to
 *    --memory). Targets move only on fresh stats and once the previous
 *    change has landed; a band around the headroom, plus a pause on
 *    shrinking after a grow, keeps a guest from oscillating. After a squeeze
 *    guests keep their smaller size until they need more (giving it all back
 *    at once could tip the host straight back into pressure).
 *  - a "may admit" signal to the boot window (limiter.c): when the host nears
 *    OOM (MemAvailable under a fraction of MemTotal, or memory PSI high) no
 *    new guest boots and every guest is squeezed to a smaller headroom, so
 *    the fleet stops growing before the kernel's OOM killer picks a qemu;
 *    admission resumes only once the host is clearly out of trouble
 *    (hysteresis). Both changes are announced as fleet notices.
 *
 * Contract: one fleet-wide tick (like health.c's wheel), no per-guest timers,
 * no QMP traffic of its own except the balloon commands it sends (the stats
 * come with the health probe; without health probes or heartbeat there are no
 * stats and only the host back-pressure acts). Guests whose balloon a user
 * set by hand (`nervesfleet balloon`) are left alone until their next start.
 * The arithmetic is pure (nf_mempolicy_guest_step, nf_mempolicy_host_admit)
 * so that it can be tested on synthetic numbers without guests.
 */
#pragma once
#include <glib.h>
#include "supervisor/config.h"
#include "supervisor/limiter.h"

typedef struct NfMemPolicy NfMemPolicy;

#define NF_MIB ((guint64)1024 * 1024)

/* Tunables. Sizes in bytes, fractions of host MemTotal in 0..1, PSI in %. */
typedef struct {
  guint64 memory;        /* each guest's RAM (--memory): the most a balloon gives back */
  guint64 headroom;      /* available memory a guest is left with (the band's centre) */
  guint64 shrink_step;   /* at most this much taken from a guest per step */
  guint64 grow_step;     /* at most this much given back per step */
  guint64 floor;         /* never shrink a guest below this */
  guint hold_after_grow; /* fresh samples after a grow before shrinking again; doubles
                          * (up to 64x) while shrinks keep being undone by grows */
  double host_low;       /* MemAvailable below this fraction: pressure */
  double host_ok;        /* ... above this (and PSI calm) again: no pressure */
  double psi_high;       /* memory PSI "some" avg10 at or above this: pressure */
  double psi_ok;         /* ... below this again: calm */
  double psi_full_high;  /* memory PSI "full" avg10 at or above this: pressure */
  guint tick_ms;         /* the policy's period */
  const char *proc_dir;  /* where meminfo and pressure/memory live ("/proc"; tests: a dir) */
  gboolean shrink_idle;  /* shrink idle guests always (auto), not only under pressure (guard) */
} NfMemPolicyParams;

/* Defaults for guests of `memory_mib`: headroom max(24 MiB, 1/4 of RAM),
 * steps of 16 MiB down and half the RAM up, floor max(32 MiB, 1/4 of RAM),
 * pressure under 10 % MemAvailable or PSI some >= 10 % / full >= 5 %, calm
 * again over 15 % and PSI some < 2 %, a 2 s tick, /proc. */
void nf_mempolicy_params_default(NfMemPolicyParams *params, guint64 memory_mib);

/* The defaults for a fleet's config (--memory, the hidden test knobs
 * mem_tick_ms and mem_proc_dir). */
void nf_mempolicy_params_from_config(NfMemPolicyParams *params, const NfFleetConfig *config);

/* --- the pure arithmetic ------------------------------------------------- */

/* What the policy knows of one guest. The caller fills the sample fields
 * each step; the step updates the memory fields. Zero-initialise. */
typedef struct {
  /* sample */
  guint64 max;       /* --memory: the balloon's upper bound */
  guint64 actual;    /* balloon actual (BALLOON_CHANGE) */
  guint64 available; /* guest's stat-available-memory */
  guint64 seq;       /* counts fresh stats reports; 0: none yet */
  /* memory */
  guint64 target;        /* last target set; 0: none */
  guint64 seq_at_change; /* seq when that target was set */
  guint hold;            /* fresh samples left before shrinking is allowed */
  guint hold_len;        /* the next hold: doubles when a shrink soon had to be undone */
  guint64 seq_at_shrink; /* seq at the last shrink */
  gboolean shrinking;    /* went over the band: shrinking down to its centre */
  guint64 last_seq;      /* seq seen at the previous step */
} NfMemGuest;

/* One step for one guest: returns the new balloon target in bytes, or 0 to
 * leave it. `squeeze` (host under pressure) halves the headroom and doubles
 * the shrink step. Acts only on a fresh sample; shrinks only once the last
 * change has landed (actual within 1 MiB of it) and a newer sample showed its
 * effect; grows on the first sample that shows need. */
guint64 nf_mempolicy_guest_step(const NfMemPolicyParams *params, gboolean squeeze, NfMemGuest *g);

/* The host as read from meminfo and PSI; negative PSI: not available. */
typedef struct {
  guint64 mem_total;
  guint64 mem_available;
  double psi_some10;
  double psi_full10;
} NfMemHost;

/* Reads <proc_dir>/meminfo and <proc_dir>/pressure/memory. FALSE with an
 * error when meminfo cannot be read or lacks MemTotal/MemAvailable; a
 * missing pressure file (kernel without PSI) gives negative PSI values. */
gboolean nf_mempolicy_read_host(const char *proc_dir, NfMemHost *host, GError **error);

/* Whether new guests may boot, given whether they may now (the hysteresis):
 * admitting stops when MemAvailable < host_low or PSI is at or above its high
 * marks; it resumes when MemAvailable >= host_ok and PSI some < psi_ok. */
gboolean nf_mempolicy_host_admit(const NfMemPolicyParams *params, gboolean admitting,
                                 const NfMemHost *host);

/* --- the running policy --------------------------------------------------- */

typedef void (*NfMemPolicyNotice)(const char *message, gpointer user_data);

/* Starts the tick. `vms` (NfVm*) is borrowed and read at each tick (the
 * fleet's array: guests added or removed later are seen); `limiter` is paused
 * and resumed by it; `notice` gets the admission messages. Frees nothing of
 * those. */
NfMemPolicy *nf_mempolicy_new(const NfMemPolicyParams *params, GPtrArray *vms, NfLimiter *limiter,
                              NfMemPolicyNotice notice, gpointer user_data);
/* Stops the tick and frees; the limiter is left admitting. */
void nf_mempolicy_free(NfMemPolicy *policy);
/* Runs one tick now (the timer calls it; tests call it to step by hand). */
void nf_mempolicy_tick(NfMemPolicy *policy);
/* FALSE while host pressure holds new guests back. */
gboolean nf_mempolicy_admitting(const NfMemPolicy *policy);
