/*
 * fleet.h: a fleet of guests under one supervisor: directories, the fleet
 * lock, the batch limiter that keeps a boot storm from melting the host, and
 * the orderly stop of everything.
 *
 * The fleet is built from a config in two steps: nf_fleet_new() checks every
 * input (qemu binary, guest files, dirs, socket path lengths, the lock) before
 * anything runs, so bad input fails with one clear error and nothing left
 * behind; nf_fleet_start() then admits guests through the limiter.
 */
#pragma once
#include <glib.h>
#include "supervisor/config.h"
#include "overlay/ubootenv.h"
#include "supervisor/vm.h"

#define NF_FLEET_ERROR (nf_fleet_error_quark())
GQuark nf_fleet_error_quark(void);
typedef enum {
  NF_FLEET_ERROR_INPUT, /* a missing or unusable file, binary or value */
  NF_FLEET_ERROR_BUSY,  /* another supervisor runs this fleet */
  NF_FLEET_ERROR_START, /* qemu could not start at all */
} NfFleetError;

typedef struct NfFleet NfFleet;

/* In the state dir: held (flock) by the fleet's supervisor while it runs,
 * so two supervisors of one name cannot share a state dir from two runtime
 * dirs. Left in place when it stops. */
#define NF_FLEET_STATE_LOCK "supervisor.lock"
/* Hands the state dir's lock (an fd, -1 if none) to the caller, who closes
 * it: held past nf_fleet_free while the caller removes the state dir
 * (--ephemeral), no other supervisor of the name can start in it. */
int nf_fleet_keep_state_lock(NfFleet *fleet);

typedef struct {
  guint total;
  guint queued;
  guint booting; /* starting + booting */
  guint ready;
  guint unhealthy;
  guint stopping;
  guint stopped;
  guint backoff;
  guint failed;
  guint started; /* spawns so far, restarts included */
} NfFleetCounts;

typedef struct {
  /* A guest changed state (the fleet's counts are already updated). */
  void (*vm_changed)(NfFleet *fleet, NfVm *vm, NfVmState old_state, const char *reason,
                     gpointer user_data);
  /* Starting cannot work (qemu fails before its monitor is up: a bad
   * argument, a broken binary); the caller should stop the fleet and report
   * `error`. Called at most once. */
  void (*start_failed)(NfFleet *fleet, const GError *error, gpointer user_data);
  /* After nf_fleet_stop(): every guest has been reaped. Called once. */
  void (*stopped)(NfFleet *fleet, gpointer user_data);
  /* A fleet-wide message for people ("restarts paused: ..."). May be NULL. */
  void (*notice)(NfFleet *fleet, const char *message, gpointer user_data);
} NfFleetCallbacks;

/* Validates `config` (borrowed; must outlive the fleet), resolves the
 * accelerator, creates the dirs and takes the fleet lock. */
NfFleet *nf_fleet_new(const NfFleetConfig *config, const NfFleetCallbacks *callbacks,
                      gpointer user_data, GError **error);

/* Adopts the guests a dead supervisor of this fleet left running (see
 * nf_vm_adopt) and queues the rest; the limiter starts up to `batch` at once
 * and admits the next as each becomes ready or fails. Guests found beyond
 * this fleet's ids (an earlier run had more) are adopted and stopped with a
 * notice; a qemu of the fleet that no pid file names is killed. */
void nf_fleet_start(NfFleet *fleet);

/* Stops every guest (see nf_vm_stop); `force` kills at once. Calling it again
 * with force escalates. callbacks.stopped follows when all are reaped. */
void nf_fleet_stop(NfFleet *fleet, gboolean force);

/* Kills what still runs, removes the runtime dir and releases the lock. */
void nf_fleet_free(NfFleet *fleet);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(NfFleet, nf_fleet_free)

/* More observers of the same callbacks (the control socket, event streams).
 * start_failed and stopped go to the owner only. Returns an id > 0. */
guint nf_fleet_add_listener(NfFleet *fleet, const NfFleetCallbacks *callbacks, gpointer user_data);
void nf_fleet_remove_listener(NfFleet *fleet, guint id);

/* Per-guest operations, for the CLI and the control socket. They act through
 * the guest's state table, so any may be asked at any time. */
NfVm *nf_fleet_find_vm(const NfFleet *fleet, guint id); /* NULL if no such id */
void nf_fleet_start_vm(NfFleet *fleet, NfVm *vm);       /* queue it (limiter) */
void nf_fleet_stop_vm(NfFleet *fleet, NfVm *vm, gboolean force);
void nf_fleet_restart_vm(NfFleet *fleet, NfVm *vm);

/* Factory reset of one guest's disk (see nf_vm_reflash). */
gboolean nf_fleet_reflash_vm(NfFleet *fleet, NfVm *vm, GError **error);

/* The guest's firmware (U-Boot) environment read from its overlay, cached;
 * NULL when the fleet has no disks or the disk has no valid env. Borrowed. */
const NfUbootEnv *nf_fleet_vm_firmware_env(NfFleet *fleet, NfVm *vm);

/* Grows (new guests with the next ids, queued through the limiter) or
 * shrinks (stops the highest ids, freed once reaped) the fleet to `count`. */
gboolean nf_fleet_scale(NfFleet *fleet, guint count, GError **error);

/* The runtime dir or its lock file was removed under the running fleet:
 * makes the dir again and takes a new lock file (with our pid). TRUE when
 * there was nothing to do. FALSE with NF_FLEET_ERROR_BUSY when another
 * supervisor of this fleet took the lock meanwhile. */
gboolean nf_fleet_retake_lock(NfFleet *fleet, GError **error);

/* The fleet leaves its guests running when freed (daemon mode hand-over). */
void nf_fleet_detach(NfFleet *fleet);

const char *nf_fleet_name(const NfFleet *fleet);
const NfFleetConfig *nf_fleet_config(const NfFleet *fleet);
/* The networking plan (ports per guest; see net.h), NULL without a network. */
const struct NfNet *nf_fleet_net(const NfFleet *fleet);
/* --net tap: guest `id`'s address on the fleet's bridge (caller frees);
 * NULL otherwise. */
char *nf_fleet_guest_ip(const NfFleet *fleet, guint id);
void nf_fleet_counts(const NfFleet *fleet, NfFleetCounts *counts);
guint nf_fleet_size(const NfFleet *fleet);
NfVm *nf_fleet_vm(const NfFleet *fleet, guint index);
guint nf_fleet_batch(const NfFleet *fleet);
/* How often each running guest is probed, in ms (0: health off). */
guint nf_fleet_health_interval(const NfFleet *fleet);
NfAccel nf_fleet_accel(const NfFleet *fleet);
const char *nf_fleet_runtime_dir(const NfFleet *fleet);
const char *nf_fleet_state_dir(const NfFleet *fleet);
const char *nf_fleet_qemu_path(const NfFleet *fleet);
/* Host KSM is on for this fleet (--ksm on, or auto and it applied). */
gboolean nf_fleet_ksm_active(const NfFleet *fleet);
