/*
 * health.h: the fleet-wide health wheel: one timer that probes every running
 * guest whose interval is up (QMP answering, guest kernel heartbeat), instead
 * of a timer per guest (see health.c for why wakeups are what costs). The
 * fleet owns the wheel and hands it to its guests through NfVmEnv; guests
 * join and leave it themselves as they come up and go down (vm-private.h).
 */
#pragma once
#include <glib.h>

typedef struct NfHealthWheel NfHealthWheel;

/* A wheel ticking every `interval_ms` (> 0; whole seconds from 1000 up, so
 * GLib can align the wakeup with the process's others). Never NULL. */
NfHealthWheel *nf_health_wheel_new(guint interval_ms);

/* Stops the timer and frees. Guests still on the wheel are simply no longer
 * probed; free the wheel after the guests. NULL is a no-op. */
void nf_health_wheel_free(NfHealthWheel *wheel);
