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

/* Probes each guest every `interval_ms` (> 0; the wheel ticks every second
 * from 1000 up, so GLib can align the wakeup with the process's others).
 * `stretch` (the default interval, not one a person chose): with many
 * guests, each is probed every NF_HEALTH_STRETCH_MS_PER_GUEST × guests, up
 * to NF_HEALTH_STRETCH_MAX_MS, so the probes of a large fleet stay near 50
 * a second (each costs the supervisor a send, a wakeup and a reply: at 100
 * a second, 0.4 % of a core; issue 17). Never NULL. */
#define NF_HEALTH_STRETCH_MS_PER_GUEST 20
#define NF_HEALTH_STRETCH_MAX_MS 30000
NfHealthWheel *nf_health_wheel_new(guint interval_ms, gboolean stretch);

/* The interval each guest is probed at now. */
guint nf_health_wheel_interval(const NfHealthWheel *wheel);

/* Stops the timer and frees. Guests still on the wheel are simply no longer
 * probed; free the wheel after the guests. NULL is a no-op. */
void nf_health_wheel_free(NfHealthWheel *wheel);
