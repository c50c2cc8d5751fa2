/*
 * progress.h: what `run` tells a person (or a CI log) while a fleet boots and
 * stops. On a terminal, one status line redrawn in place with notable events
 * printed above it; elsewhere, plain timestamped lines only.
 */
#pragma once
#include <stdio.h>
#include <glib.h>
#include "supervisor/fleet.h"

typedef struct NfProgress NfProgress;

NfProgress *nf_progress_new(FILE *out, gboolean tty, gboolean quiet);
void nf_progress_free(NfProgress *p);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(NfProgress, nf_progress_free)

/* A guest changed state. */
void nf_progress_vm(NfProgress *p, NfFleet *fleet, NfVm *vm, NfVmState old_state,
                    const char *reason);
/* A line said once, right after "all N guests ready", on a terminal only
 * (what a person can do next); NULL: none. */
void nf_progress_set_ready_hint(NfProgress *p, const char *hint);
/* A line of its own, timestamped. */
void nf_progress_say(NfProgress *p, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
/* Ends the status line so later output starts on a fresh line. */
void nf_progress_finish(NfProgress *p);
