/*
 * fake-fleet.h: a fleet run in the test process (the supervisor library,
 * not the binary) on the fake qemu (tests/helpers/fake-qemu), so fleet logic
 * is tested at hundreds to a thousand guests in seconds, with every state
 * change seen as it happens: the boot window's high-water mark, which
 * (state -> state) transitions occurred, the fleet's notices.
 *
 * Faults are chosen with the fake's FAKE_QEMU_* environment variables (see
 * tests/helpers/fake-qemu.c), which every guest spawned afterwards inherits;
 * nf_fake_fleet_new() clears them, so each test starts from well-behaved
 * guests. Everything lives in the fleet's own nf_test_tmpdir_new() dir, which
 * is on every fake's command line (-pidfile), so nf_fake_fleet_finish() proves
 * that nothing is left running.
 */
#pragma once
#include <glib.h>

#include "supervisor/fleet.h"

typedef struct {
  char *tmp;
  NfFleetConfig config; /* defaults for the fake; tests adjust before _start */
  NfFleet *fleet;
  guint max_booting; /* highest starting + booting seen at any state change */
  guint seen[NF_VM_N_STATES][NF_VM_N_STATES]; /* transitions seen, old x new */
  GPtrArray *notices;                         /* the fleet's notices, in order */
  GPtrArray *reasons;                         /* "vm-NNNN old -> new: reason" of every transition */
  gboolean keep_reasons;                      /* fill `reasons` (off for the biggest fleets) */
  char *start_error;                          /* the start_failed error, if any */
  gboolean stopped;
} NfFakeFleet;

/* A fleet of `count` guests booting `batch` at once, not yet created: fixed
 * batch, no adoption, health probes off, boot timeout 60 s, stop timeout 5 s,
 * restart backoff 0.1 s, the fake as qemu and a placeholder kernel. Clears
 * every FAKE_QEMU_* variable. Never NULL. */
NfFakeFleet *nf_fake_fleet_new(guint count, guint batch);

/* Creates the fleet from `config` and starts it; the test fails on an error. */
void nf_fake_fleet_start(NfFakeFleet *f);

/* Iterates the main loop until every guest is in `state` (and none is
 * leaving), or `timeout_ms`; TRUE when they are. */
gboolean nf_fake_fleet_wait_all(NfFakeFleet *f, NfVmState state, guint timeout_ms);

/* Iterates until a notice containing `needle` has arrived, or `timeout_ms`. */
gboolean nf_fake_fleet_wait_notice(NfFakeFleet *f, const char *needle, guint timeout_ms);

/* Iterates until guest `id` is in `state`, or `timeout_ms`. */
gboolean nf_fake_fleet_wait_vm(NfFakeFleet *f, guint id, NfVmState state, guint timeout_ms);

/* Iterates until `done(f)` holds, or `timeout_ms`. */
gboolean nf_fake_fleet_wait(NfFakeFleet *f, gboolean (*done)(NfFakeFleet *f), guint timeout_ms);

/* Count of guests in `state` right now. */
guint nf_fake_fleet_count(NfFakeFleet *f, NfVmState state);

/* How many times a guest went from `from` to `to`. */
guint nf_fake_fleet_seen(NfFakeFleet *f, NfVmState from, NfVmState to);

/* Stops the fleet (force: kill at once), waits until all is reaped, frees
 * it, asserts that no process of the test is left and removes the dir. */
void nf_fake_fleet_finish(NfFakeFleet *f, gboolean force);
