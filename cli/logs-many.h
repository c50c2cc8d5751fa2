/*
 * logs-many.h: `logs TARGET` for several guests (a range, a list, all).
 * Without -f: each guest's log in id order, every line behind its name.
 * With -f: the same, then what every one of them prints from then on, as it
 * comes, through ONE connection whatever the number of guests: a `logs`
 * request with `targets` and `follow`, whose stream carries every guest's
 * bytes in frames (supervisor/log-mux.h), each guest's starting at the byte
 * its history ended on. Guests that join while TARGET names them (`scale`
 * up under `logs all -f`) are followed from their joining on; one that
 * leaves ends quietly. Lines of different guests meet in one output, so
 * only whole lines go out: qemu logs a byte at a time, and a guest's
 * unfinished line waits for its end (up to 200 ms or 4 KiB: a prompt never
 * gets one; then it goes out, and is ended if another guest speaks). Ends
 * when the fleet stops or stdout is gone; if the supervisor drops the stream
 * while the fleet runs (a reader too far behind), that is said on stderr and
 * the exit status is 1.
 */
#pragma once
#include "cli/client.h"

/* The exit status of `logs`. */
int nf_logs_many(const NfClientOptions *o, const char *target, const char *since, gboolean follow);
