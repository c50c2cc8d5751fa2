/*
 * strays.h: what a fleet left on the host that its present supervisor does
 * not own: guests of an earlier, larger run of the same fleet (`run 3 -d`,
 * the supervisor killed, then `run 1`), and qemu processes whose pid files
 * are gone. A new supervisor adopts and stops them; `down` kills them. Both
 * must find every one, whatever guest count they were given.
 *
 * Identity is the pid file path qemu got on its command line
 * (<runtime>/vm-NNNN.pid): unique to the fleet (its runtime dir) and the
 * guest, so a recycled pid or another fleet's qemu never matches.
 */
#pragma once
#include <glib.h>
#include "supervisor/paths.h"
#include "supervisor/vm.h"

/* Ids of guests the fleet has traces of: a vm-NNNN.pid in the runtime dir,
 * or a <state>/vm-NNNN/status.json recording it as up (starting, booting,
 * ready, unhealthy, stopping). Sorted, each once. Never NULL. */
GArray *nf_strays_ids(const NfFleetPaths *paths);

typedef struct {
  guint id;
  GPid pid;
  GPid ppid;
} NfStrayProcess;

/* Live processes whose command line carries `-pidfile <runtime_dir>/vm-NNNN.pid`
 * (qemu itself, and a wrapper script given as --qemu that forked it), from a
 * scan of /proc. Never NULL. */
GArray *nf_strays_processes(const char *runtime_dir);

/* The guests a fleet found beyond its ids, adopted only to be stopped in
 * order (their status files then say "stopped"), and freed once down. A
 * user of `run 1` expects one guest: growing the fleet behind their back
 * would hide the leftovers instead. */
typedef struct NfStrayGuests NfStrayGuests;

typedef struct {
  /* A sentence for people ("vm-0002, vm-0003: left running by ..."). */
  void (*notice)(const char *message, gpointer user_data);
  /* A stray could not write one of its files (see NfVmCallbacks.notice). */
  void (*vm_notice)(NfVm *vm, const char *message, gpointer user_data);
  /* The last running stray is down. */
  void (*all_down)(gpointer user_data);
} NfStrayGuestsCallbacks;

/* Finds (nf_strays_ids) the guests outside ids [first_id, last_id], adopts
 * each (nf_vm_adopt: a dead one gets its exit recorded) and stops it. Never
 * NULL. `env` and `callbacks` are borrowed and must outlive the result. */
NfStrayGuests *nf_stray_guests_adopt(const NfVmEnv *env, guint first_id, guint last_id,
                                     const NfStrayGuestsCallbacks *callbacks, gpointer user_data);
/* Whether stray `id` still runs (its runtime files are still its own). */
gboolean nf_stray_guests_running(const NfStrayGuests *strays, guint id);
gboolean nf_stray_guests_any_running(const NfStrayGuests *strays);
/* Stops them again (`force`: SIGKILL now), as the fleet's stop does. */
void nf_stray_guests_stop(NfStrayGuests *strays, gboolean force);
/* Kills every process of the fleet (nf_strays_processes) that is neither
 * one of `pids` (the fleet's running guests), a stray, nor a parent or child
 * of one (a wrapper script): a qemu that no pid file names. Returns how many. */
guint nf_stray_guests_kill_unowned(const NfStrayGuests *strays, const char *runtime_dir,
                                   GArray *pids);
/* Leaves the strays still running for the next supervisor (daemon hand-over). */
void nf_stray_guests_detach(NfStrayGuests *strays);
/* Kills (unless detached) and frees what is left. */
void nf_stray_guests_free(NfStrayGuests *strays);
