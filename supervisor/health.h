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
 * A probe costs the supervisor a send, a wakeup and a reply (at 100 a
 * second, 0.4 % of a core), and the guest's qemu much more: qemu reads a
 * QMP command one byte per wakeup, 1-4 ms of host CPU a probe under TCG
 * here, over half of what an idle guest cost at a 10 s interval. Hence the
 * default of 30 s (config.h): 33 probes a second at 1,000 guests, where a
 * 10 s default used to be stretched with the fleet's size to the same end
 * (issue 17). Never NULL. */
NfHealthWheel *nf_health_wheel_new(guint interval_ms);

/* How often a ready guest's balloon driver reports its stats (the
 * heartbeat), in ms, for a heartbeat timeout of `heartbeat_timeout_ms`
 * (> 0). Each report wakes the guest kernel and qemu's threads: ~2.3 ms of
 * host CPU for an idle sim guest, half of what it costs at 5 s apart (side
 * by side, 4 guests each: 0.85-0.91 ms a second per guest at 5 s, 0.50-0.52
 * at 15 s, 0.39-0.43 with no reports; issue 17). So a guest reports only as
 * often as a deadline needs: a quarter of the timeout, 1-15 s, four reports
 * per deadline, lowered in a boot storm or not (boot-sched.h tells a
 * starving guest by the kernel's account, not by its stats).
 * Whole seconds: qemu takes the interval in seconds. */
#define NF_HEALTH_STATS_POLL_MAX_MS 15000
guint nf_health_stats_poll_ms(guint heartbeat_timeout_ms);

/* How long a guest lowered during a boot storm (boot-sched.h) may wait to
 * run before it runs normally again, for these settings; 0 when no health
 * check could fail (no relief needed). */
guint nf_health_relief_ms(guint heartbeat_timeout_ms, guint health_interval_ms,
                          guint health_timeout_ms);

/* Someone read a guest's RSS (`ps`, the HTTP API, metrics): for
 * NF_HEALTH_RSS_WATCH_MS from now the probes keep every guest's RSS sample
 * fresh (NF_VM_RSS_SAMPLE_US); after that they leave /proc alone and a read
 * takes a new sample itself. At 1,000 guests those samples were ~15 % of an
 * idle supervisor's CPU, spent for nobody when nobody looks. */
#define NF_HEALTH_RSS_WATCH_MS (5 * 60 * 1000)
void nf_health_wheel_rss_wanted(NfHealthWheel *wheel);

/* The interval each guest is probed at. */
guint nf_health_wheel_interval(const NfHealthWheel *wheel);

/* Stops the timer and frees. Guests still on the wheel are simply no longer
 * probed; free the wheel after the guests. NULL is a no-op. */
void nf_health_wheel_free(NfHealthWheel *wheel);
