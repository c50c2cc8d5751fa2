/*
 * net.h: a fleet's user-mode networking plan: the values of --net,
 * --forward and --server checked, and the host ports forwarded to each
 * guest.
 *
 * Port layout (the contract): guest number k of the fleet (k = id - id_offset,
 * from 1) gets host port `base + (k - 1) * F + j` for its j-th --forward
 * (F forwards per guest), so a person can compute any guest's port, and a
 * restarted supervisor finds the same ports for the guests it adopts. The
 * base is --forward-base, or chosen at start as the first candidate whose
 * whole range of `count * F` ports is free on the host (candidates start at
 * a point derived from the fleet name, so two fleets started at once rarely
 * pick the same range); it is kept in <runtime>/net.base while the fleet
 * runs. Each guest's ports are checked again right before each spawn: a port
 * some other program took meanwhile fails that guest with a message naming
 * the port, instead of a qemu error. Forwards listen on 127.0.0.1 only.
 *
 * The server: slirp routes the guest's connections to any host address;
 * the host's own loopback is reachable as 10.0.2.2. qemu 7.2's guestfwd
 * (a chardev connected once at startup, one connection for the guest's
 * life) is not used: plain routing is what works for repeated requests.
 */
#pragma once
#include <glib.h>
#include "supervisor/config.h"

#define NF_NET_HOST_ADDR "10.0.2.2" /* the host, as a user-mode guest sees it */
#define NF_NET_AUTO_BASE_LOW 20000  /* automatic bases lie in [LOW, HIGH) */
#define NF_NET_AUTO_BASE_HIGH 60000

typedef struct {
  guint16 host;
  guint16 guest;
} NfNetForward;

/* "none", "user" or "tap". FALSE with an error naming --net otherwise. */
gboolean nf_net_parse_mode(const char *text, NfNetMode *mode, GError **error);

/* A guest TCP port for --forward: 1-65535, decimal. */
gboolean nf_net_parse_port(const char *flag, const char *text, guint16 *port, GError **error);

/* --server HOST:PORT: HOST an IPv4 address or a host name, PORT 1-65535.
 * On success *guest_addr (caller frees) is the address as the guest must
 * dial it: loopback hosts (localhost, 127.x.y.z, 0.0.0.0) become
 * `host_addr` (the host as the guest sees it: NF_NET_HOST_ADDR under
 * slirp, the bridge's address with taps), anything else is kept (routed,
 * names resolved by the guest's DNS). */
gboolean nf_net_parse_server(const char *text, const char *host_addr, char **guest_addr,
                             GError **error);

/* TRUE when nothing listens on 127.0.0.1:port (TCP) right now; the probe
 * binds with SO_REUSEADDR, as qemu's hostfwd does, so TIME_WAIT leftovers
 * do not count as taken. */
gboolean nf_net_port_is_free(guint port);

typedef struct NfNet NfNet;

/* The plan of a fleet (config borrowed, must outlive it). With forwards,
 * picks the base (see above: --forward-base, else <runtime_dir>/net.base
 * when a previous supervisor of this fleet left one, else the first free
 * candidate range) and records it in <runtime_dir>/net.base. `host_addr`:
 * see nf_net_parse_server (NULL: NF_NET_HOST_ADDR). Fails when
 * the range passes 65535 or (explicit base) a port of the first `count`
 * guests is taken, naming the port and the fix. */
NfNet *nf_net_new(const NfFleetConfig *config, const char *runtime_dir, const char *host_addr,
                  GError **error);

/* Removes <runtime>/net.base unless `keep` (detached guests still use the
 * ports), then frees. NULL is fine. */
void nf_net_free(NfNet *net, gboolean keep);

/* The forwards of guest `id`, written to out[] (room for
 * NF_NET_MAX_FORWARDS); returns how many. 0 when the fleet has none. */
guint nf_net_forwards(const NfNet *net, guint id, NfNetForward *out);

/* Checks right before a spawn that guest `id`'s host ports exist and are
 * free; the error names the port, the guest and the fix. */
gboolean nf_net_check_guest(const NfNet *net, guint id, GError **error);

/* The first guest's first host port, 0 without forwards. */
guint nf_net_base(const NfNet *net);

/* The server as the guest dials it ("10.0.2.2:4000"), or NULL. */
const char *nf_net_guest_server(const NfNet *net);
