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
