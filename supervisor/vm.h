/*
 * vm.h: one guest: its qemu process, QMP connection, serial console and
 * state. The fleet decides *when* a guest starts (batching); the guest owns
 * *how*: channels, argv, spawn, readiness, orderly stop, and what its exit
 * means.
 */
#pragma once
#include <glib.h>
#include "supervisor/config.h"
#include "supervisor/paths.h"

typedef enum {
  NF_VM_CREATED,   /* not asked to run yet */
  NF_VM_QUEUED,    /* waiting for the batch limiter */
  NF_VM_STARTING,  /* qemu spawned, QMP not negotiated yet */
  NF_VM_BOOTING,   /* QMP up, waiting for the ready line */
  NF_VM_READY,     /* ready line seen */
  NF_VM_STOPPING,  /* we asked it to quit */
  NF_VM_STOPPED,   /* ended because we asked */
  NF_VM_FAILED,    /* ended on its own, or missed its boot deadline */
  NF_VM_N_STATES
} NfVmState;

const char *nf_vm_state_name(NfVmState state);

/* What every guest of a fleet shares; owned by the fleet, outlives its guests. */
typedef struct {
  const NfFleetConfig *config;
  const NfFleetPaths *paths;
  NfAccel accel;   /* resolved */
  char *qemu_path; /* resolved binary */
} NfVmEnv;

typedef struct NfVm NfVm;

typedef struct {
  /* Every transition, with a short reason for the log ("ready", "qemu exited
   * with status 1", ...). */
  void (*state_changed)(NfVm *vm, NfVmState old_state, NfVmState new_state,
                        const char *reason, gpointer user_data);
} NfVmCallbacks;

NfVm *nf_vm_new(guint id, const NfVmEnv *env, const NfVmCallbacks *callbacks,
                gpointer user_data);
/* Stops (SIGKILL) anything still running, removes its runtime files, frees. */
void nf_vm_free(NfVm *vm);

/* Marks the guest queued (the fleet's limiter will call nf_vm_start). */
void nf_vm_set_queued(NfVm *vm);

/* Creates the channels and spawns qemu. On failure the guest is FAILED and
 * the error says why (it is also the reason given to state_changed). */
gboolean nf_vm_start(NfVm *vm, GError **error);

/* Orderly stop: QMP quit (SIGTERM before QMP is up), SIGKILL after the
 * fleet's stop timeout. `force`: SIGKILL now. A guest not running goes to
 * STOPPED at once. Safe to call again (a second call may force). */
void nf_vm_stop(NfVm *vm, gboolean force);

guint nf_vm_id(const NfVm *vm);
const char *nf_vm_name(const NfVm *vm);
const char *nf_vm_serial(const NfVm *vm);
NfVmState nf_vm_state(const NfVm *vm);
GPid nf_vm_pid(const NfVm *vm);           /* 0 when not running */
gboolean nf_vm_is_running(const NfVm *vm); /* a qemu process exists */
/* Why it last ended ("exited with status 1", "boot timeout"), or NULL. */
const char *nf_vm_exit_reason(const NfVm *vm);
/* TRUE when qemu ended before its QMP handshake: a start failure (bad argv,
 * missing file, ...), as opposed to a guest that ran and then died. */
gboolean nf_vm_failed_at_start(const NfVm *vm);
/* Last lines qemu wrote to stderr (from its log), for error messages. */
char *nf_vm_stderr_tail(const NfVm *vm, guint max_lines);
/* Recent console output. */
char *nf_vm_console_tail(const NfVm *vm, gsize max_bytes);
/* Monotonic times (g_get_monotonic_time) of the last spawn and ready; 0 if none. */
gint64 nf_vm_started_at(const NfVm *vm);
gint64 nf_vm_ready_at(const NfVm *vm);
