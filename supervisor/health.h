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

/* How often a ready guest's balloon driver reports its stats (the
 * heartbeat), in ms, for a heartbeat timeout of `heartbeat_timeout_ms`
 * (> 0): a twelfth of it, from 1 s to 5 s. Each report wakes the guest and
 * both of qemu's busy threads: at 2 s it was ~40 % of an idle sim guest's
 * host CPU (35 ms in 20 s, 22 ms without reports; bench/README, issue 17),
 * and a 60 s deadline needs no report every 2 s. */
#define NF_HEALTH_STATS_POLL_MAX_MS 5000
guint nf_health_stats_poll_ms(guint heartbeat_timeout_ms);

/* How long a guest lowered during a boot storm (boot-sched.h) may go with
 * its balloon stats standing still before it runs normally again, for these
 * settings (0: off); 0 when no health check could fail (no relief needed). */
guint nf_health_relief_ms(guint heartbeat_timeout_ms, guint health_interval_ms,
                          guint health_timeout_ms);

/* Someone read a guest's RSS (`ps`, the HTTP API, metrics): for
 * NF_HEALTH_RSS_WATCH_MS from now the probes keep every guest's RSS sample
 * fresh (NF_VM_RSS_SAMPLE_US); after that they leave /proc alone and a read
 * takes a new sample itself. At 1,000 guests those samples were ~15 % of an
 * idle supervisor's CPU, spent for nobody when nobody looks. */
#define NF_HEALTH_RSS_WATCH_MS (5 * 60 * 1000)
void nf_health_wheel_rss_wanted(NfHealthWheel *wheel);

/* The interval each guest is probed at now. */
guint nf_health_wheel_interval(const NfHealthWheel *wheel);

/* Stops the timer and frees. Guests still on the wheel are simply no longer
 * probed; free the wheel after the guests. NULL is a no-op. */
void nf_health_wheel_free(NfHealthWheel *wheel);
