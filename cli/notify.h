/*
 * notify.h: the supervisor speaking systemd's notify protocol (Type=notify)
 * through libsystemd's sd_notify. Without NOTIFY_SOCKET in the environment
 * every call is a cheap no-op, so `run` always creates one. libsystemd is
 * opened (nf_notify_load) only when NOTIFY_SOCKET is set: linked in, it and
 * the compression and crypto libraries it pulls in would cost every
 * `nervesfleet` call ~3 ms of start-up for what only a service uses.
 *
 * What it sends, and when:
 *   READY=1      once: when every guest is ready (NF_NOTIFY_READY_READY), or
 *                as soon as the fleet has started (NF_NOTIFY_READY_STARTED:
 *                huge fleets that boot for longer than a start timeout).
 *   STATUS=...   the fleet's counts, at most once per second (the last
 *                change is never lost: a pending one is sent when the second
 *                is over).
 *   WATCHDOG=1   every half WATCHDOG_USEC, from a main-loop timer: a stuck
 *                loop stops petting and systemd restarts the supervisor.
 *   STOPPING=1   when the orderly stop begins.
 */
#pragma once
#include <glib.h>
#include "supervisor/fleet.h"

typedef enum {
  NF_NOTIFY_READY_READY = 0, /* READY=1 once all guests are ready (default) */
  NF_NOTIFY_READY_STARTED,   /* READY=1 once the fleet is started */
} NfNotifyReady;

typedef struct NfNotify NfNotify;

/* Parses --notify-ready's value ("ready" or "started"); FALSE with a
 * G_OPTION_ERROR naming the flag otherwise. */
gboolean nf_notify_ready_parse(const char *text, NfNotifyReady *out, GError **error);

/* The soname this binary was compiled against. */
#define NF_NOTIFY_SONAME "libsystemd.so.0"

/* Opens libsystemd if NOTIFY_SOCKET is set (TRUE and nothing loaded
 * otherwise; once per process). FALSE with an error naming the library and
 * the package to install. Call before nf_notify_new(), which sends nothing
 * without it. */
gboolean nf_notify_load(GError **error);

/* Watches `fleet` (a listener on its state changes) and arms the watchdog
 * timer if WATCHDOG_USEC asks for one. Call after nf_fleet_new(); `fleet`
 * must outlive the notifier. Never NULL. */
NfNotify *nf_notify_new(NfFleet *fleet, NfNotifyReady when);

/* The fleet has been started (nf_fleet_start called): READY=1 now in
 * NF_NOTIFY_READY_STARTED mode, or now if every guest is already ready. */
void nf_notify_started(NfNotify *notify);

/* The orderly stop begins: STOPPING=1 (once) and a last STATUS. NULL is a
 * no-op. */
void nf_notify_stopping(NfNotify *notify);

/* Removes the listener and the timers. NULL is a no-op. */
void nf_notify_free(NfNotify *notify);
