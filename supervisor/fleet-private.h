/*
 * fleet-private.h: the fleet's insides (fleet.h), shared by the files that
 * make up one fleet: fleet.c (building it, guests' state changes, the storm
 * guard, listeners, the orderly stop), fleet-setup.c (input checks, dirs,
 * lock, stale runtime files, open file limit, the error domain), fleet-host.c (KSM, networking
 * and the --ready http listener it sets up on the host) and fleet-scale.c
 * (scaling and retiring). Nothing outside supervisor/fleet*.c includes this.
 */
#pragma once
#include "supervisor/fleet.h"
#include "supervisor/ksm.h"
#include "supervisor/ksm-pace.h"
#include "supervisor/boot-sched.h"
#include "supervisor/limiter.h"
#include "supervisor/mempolicy.h"
#include "supervisor/paths.h"
#include "supervisor/ready-http.h"
#include "supervisor/restart-policy.h"
#include "supervisor/shard.h"
#include "supervisor/strays.h"

struct NfFleet {
  const NfFleetConfig *config;
  NfFleetCallbacks cb;
  gpointer user_data;
  NfFleetPaths paths;
  NfVmEnv env;
  char *lock_path;
  int lock_fd;
  NfShardClaim *ids; /* this fleet's ids, recorded for other fleets on the host (shard.h) */
  int state_lock_fd; /* NF_FLEET_STATE_LOCK in the state dir (fleet-setup.c) */
  GPtrArray *vms;
  NfLimiter *limiter;      /* the boot window */
  NfBootSched *boot_sched; /* booting guests pinned, ready ones lowered (boot-sched.h) */
  NfMemPolicy *mempolicy;  /* balloons and admission back-pressure, or NULL */
  guint per_state[NF_VM_N_STATES];
  guint started;
  gboolean stopping;
  gboolean start_failed_sent;
  guint stopped_idle;
  guint stop_scan; /* maybe_stopped(): where the last running guest was */
  gboolean stopped_sent;
  gboolean any_up;    /* some guest got as far as QMP: the setup works */
  gboolean detaching; /* leave guests running when freed */
  GArray *listeners;  /* Listener */
  guint next_listener;
  GHashTable *retiring; /* NfVm* being scaled away */
  guint retire_idle;
  guint trim_idle; /* malloc_trim once a boot storm is over */
  guint resume_timer;
  NfKsm *ksm;                /* host KSM settings to restore, when --ksm */
  guint ksm_guests;          /* guests up that ksmd's fast pace was last set for */
  NfKsmPace ksm_pace;        /* fast while ksmd finds pages to merge (ksm-pace.h) */
  guint ksm_applied;         /* the pages per wake-up last asked for */
  guint ksm_timer;           /* reads ksmd's counters for ksm_pace */
  guint log_cap_timer;       /* --health-interval 0: caps console logs (fleet-host.c) */
  NfStrayGuests *strays;     /* guests beyond our ids a dead supervisor left: being stopped */
  gboolean write_error_told; /* a guest's file could not be written: said once */
  gboolean built;            /* nf_fleet_new succeeded */
  char *made_runtime_dir;    /* top-most dirs nf_fleet_new created, removed if it fails */
  char *made_state_dir;
  NfWindowCount failing;      /* guests that failed within the restart window */
  NfReadyHttp *ready_http;    /* --ready http listener, or NULL */
  gboolean snapshot_prepared; /* --snapshot: the snapshot is ready (or given up): guests go */
};

/* fleet.c: the callbacks every guest of the fleet reports through. */
extern const NfVmCallbacks nf_fleet_vm_callbacks;

/* fleet-setup.c: what nf_fleet_new checks and claims before anything runs.
 * Each fails with an NF_FLEET_ERROR naming the thing and the fix. */
/* The config's values, the qemu binary (sets env.qemu_path) and the guest
 * files. */
gboolean nf_fleet_check_input(NfFleet *fleet, GError **error);
/* Resolves the fleet's paths, checks its longest socket path, makes the
 * runtime and state dirs (remembering the ones it made) and takes the
 * fleet lock. */
gboolean nf_fleet_claim_dirs(NfFleet *fleet, GError **error);
/* At free: lets the state dir's lock go; for a fleet that never started,
 * removes what nf_fleet_claim_dirs and the disks' preparation made. */
void nf_fleet_release_dirs(NfFleet *fleet);
/* Removes guest files in the runtime dir that no running guest of ours (or
 * stray still stopping) owns: a dead supervisor's. */
void nf_fleet_remove_stale_runtime_files(NfFleet *fleet);
/* --reflash-all while guests a dead supervisor left still run on the disks:
 * FALSE (NF_FLEET_ERROR_BUSY). Removing the disks would leave those qemus on
 * deleted files and the old base, adopted as if reflashed, and what they
 * write lost at their next restart. TRUE otherwise. */
gboolean nf_fleet_check_reflash(NfFleet *fleet, GError **error);
/* Raises the soft open file limit for `guests` running guests (and the
 * fleet's boot window), or fails naming the numbers and the fix. */
gboolean nf_fleet_ensure_fd_limit(NfFleet *fleet, guint guests, GError **error);

/* fleet-host.c: KSM (--ksm), the --net tap bridge, user networking's port
 * plan and the --ready http listener, into fleet->env; nf_fleet_free gives
 * them back. nf_fleet_ksm_follow sets ksmd's pace for the guests that have a
 * qemu now (called when that number changes; `came_up`: it grew, new memory
 * to scan). */
gboolean nf_fleet_host_setup(NfFleet *fleet, GError **error);
void nf_fleet_ksm_follow(NfFleet *fleet, gboolean came_up);
/* The states in which a guest has a qemu process (spawned, not yet reaped). */
static inline gboolean nf_fleet_state_has_qemu(NfVmState s)
{
  return s == NF_VM_STARTING || s == NF_VM_BOOTING || s == NF_VM_READY || s == NF_VM_UNHEALTHY ||
         s == NF_VM_STOPPING;
}

/* fleet-scale.c: frees the retiring guests that are down (an idle source). */
gboolean nf_fleet_retire_cb(gpointer data);
