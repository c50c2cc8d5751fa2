/*
 * tap.h: `--net tap`: a shared L2 segment per fleet, for devices that must
 * see each other or one server on a real link. One Linux bridge per fleet
 * (nfbr-XXXXXXXX, named from the runtime dir as the fleet's cgroup is) with
 * the host at 10.B.0.1/16, and one tap per guest; guest number k gets the
 * fixed address 10.B.(k+1)/16 (k+1 spread over the last two bytes), passed
 * through fw_cfg `opt/nervesfleet/ip` as "ADDR,GATEWAY". B is taken from
 * an existing bridge of the fleet, else picked so that no host interface
 * has an address in 10.B.0.0/16.
 *
 * Leak-proof by construction: taps are not persistent. The supervisor
 * creates each one, attaches it to the bridge, hands the fd to qemu and
 * closes its own copy, so the kernel deletes the tap as soon as its qemu
 * ends, however it ends and whatever happens to the supervisor. Only the
 * bridge outlives guests: it is removed when the fleet stops, kept when a
 * detached fleet's supervisor lets go (its guests still use it), and a
 * bridge left behind by a killed supervisor is taken over, then removed, by
 * the next run of that fleet.
 *
 * Needs CAP_NET_ADMIN (root); anything else is refused with the fix.
 */
#pragma once
#include <glib.h>

typedef struct NfTap NfTap;

/* The bridge name of a fleet: "nfbr-" + 10 hex digits of its runtime
 * dir's SHA-256 (15 characters, the most an interface name holds). */
char *nf_tap_bridge_name(const char *runtime_dir);

/* Creates (or takes over) the fleet's bridge and its /16. NULL with an
 * error naming the cause and the fix (not root, no /dev/net/tun...). */
NfTap *nf_tap_new(const char *runtime_dir, GError **error);

/* A new tap on the bridge, up; returns its fd (CLOEXEC; the caller hands
 * it to qemu and closes it), or -1 with an error. */
int nf_tap_open(NfTap *tap, GError **error);

/* "10.B.x.y" for guest number k (from 1), or NULL past the /16. */
char *nf_tap_guest_addr(const NfTap *tap, guint k);

/* The host's address on the bridge, "10.B.0.1". */
const char *nf_tap_host_addr(const NfTap *tap);

/* Removes the bridge unless `keep`, then frees. NULL is fine. */
void nf_tap_free(NfTap *tap, gboolean keep);

/* TRUE when the bridge exists (tests, sweeps). */
gboolean nf_tap_bridge_exists(const char *name);

/* `down` without a supervisor, once the orphaned guests are killed (their
 * taps went with them): removes the fleet's bridge if one is left. */
void nf_tap_sweep(const char *runtime_dir);
