/*
 * log-mux.h: several guests' console output as one framed byte stream, for
 * `logs TARGET -f` (control-protocol.md "Several guests' logs").
 *
 * One connection carries every guest a TARGET names, so following a whole
 * fleet costs the client one socket and the supervisor one buffer, however
 * many guests there are. Each guest's bytes are watched from the offset
 * its `logs` document gave (nf_vm_console_watch_start, taken in the same
 * loop turn), so with the file up to there nothing is lost or repeated.
 * Guests that join the fleet later (`scale` up, while TARGET names them:
 * always for `all`) are followed from their joining on (the mux listens to
 * the fleet's state changes itself); a guest that leaves (scaled away) is
 * said so. Frames, each a header line and a body:
 *   out ID LEN\n  + LEN bytes of guest ID's console output
 *   join ID LEN\n + LEN bytes: the guest's `logs` document (JSON)
 *   leave ID 0\n  the guest left the fleet; nothing more comes for it
 *
 * The bytes leave through `sink`, which may close the connection and free
 * the mux from inside the call: nothing here touches the mux after calling
 * it.
 */
#pragma once
#include <glib.h>
#include <sys/uio.h>

#include "supervisor/fleet.h"
#include "supervisor/targets.h"

typedef struct NfLogMux NfLogMux;
typedef void (*NfLogMuxSink)(const struct iovec *parts, int n, gpointer user_data);

/* Follows `vms` (borrowed) now, and later guests named by `targets`
 * (stolen). `fleet` must outlive the mux. */
NfLogMux *nf_log_mux_new(NfFleet *fleet, GPtrArray *vms, NfTargets *targets, NfLogMuxSink sink,
                         gpointer user_data);
/* How many guests it follows now. */
guint nf_log_mux_size(const NfLogMux *mux);
/* Stops following (the guests it still follows are unwatched). */
void nf_log_mux_free(NfLogMux *mux);
