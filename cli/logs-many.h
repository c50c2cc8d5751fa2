/*
 * logs-many.h: `logs TARGET` for several guests (a range, a list, all).
 * Without -f: each guest's log in id order, every line behind its name.
 * With -f: the same, then what every one of them prints from then on, as it
 * comes, through one connection per guest (each a `logs -f` stream that
 * starts at the byte its history ended on). Lines of different guests meet
 * in one output, so only whole lines go out: qemu logs a byte at a time, and
 * a guest's unfinished line waits for its end (up to 200 ms or 4 KiB: a
 * prompt never gets one; then it goes out, and is ended if another guest
 * speaks). Ends when every stream has ended (the fleet stopped) or stdout is
 * gone; a stream the supervisor dropped while its guest runs (it drops a
 * reader 1 MiB behind) is said on stderr and makes the exit status 1.
 * At most half the supervisor's control connections (512) are followed at
 * once: more is a usage error that names a range to follow instead.
 */
#pragma once
#include "cli/client.h"

/* The exit status of `logs`. */
int nf_logs_many(const NfClientOptions *o, const char *target, const char *since, gboolean follow);
