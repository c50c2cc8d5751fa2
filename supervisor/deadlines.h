/*
 * deadlines.h: many one-shot timers behind one GLib source.
 *
 * Every GLib source is visited at each main loop iteration (prepare and
 * check), so a timer per guest (boot deadline, stop grace period, restart
 * backoff, deferred status write) makes each wakeup cost O(guests): at
 * 5,000 guests stopping at once, 5,000 kill timers made stop-all 8-12x
 * slower than at 1,000 (issue 17). Here the timers live in one ordered
 * tree and one source wakes up for the earliest: adding, removing and
 * firing cost O(log n), and an iteration costs the same with none or
 * 10,000 pending.
 */
#pragma once
#include <glib.h>

/* Calls `func(data)` once, from the default main context, `ms` from now
 * (its return value is ignored). Returns an id > 0. */
guint nf_deadline_add(guint ms, GSourceFunc func, gpointer data);

/* Cancels a deadline not yet fired; unknown or fired ids (and 0) are
 * ignored, so a callback may remove its own. */
void nf_deadline_remove(guint id);
