/*
 * net.c: flag checks and the host port allocator of user-mode networking
 * (see net.h for the port layout and why plain routing reaches the server).
 * The allocator is arithmetic plus a bind probe: no state beyond the base,
 * so adoption and restarts need no bookkeeping.
 */
#include "supervisor/net.h"

#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <glib/gstdio.h>

#include "supervisor/fleet.h"

struct NfNet {
  const NfFleetConfig *config;
  guint base;
  char *guest_server;
  char *base_file;
};

static guint range_first_taken(guint first, guint n);
static gboolean read_base_file(const char *path, guint *base);

gboolean nf_net_parse_mode(const char *text, NfNetMode *mode, GError **error)
{
  if (g_strcmp0(text, "none") == 0)
    *mode = NF_NET_NONE;
  else if (g_strcmp0(text, "user") == 0)
    *mode = NF_NET_USER;
  else if (g_strcmp0(text, "tap") == 0)
    *mode = NF_NET_TAP;
  else {
    g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                "--net '%s': use none, user or tap (e.g. --net user)", text);
    return FALSE;
  }
  return TRUE;
}

gboolean nf_net_parse_port(const char *flag, const char *text, guint16 *port, GError **error)
{
  guint64 v = 0;
  if (text == NULL || !g_ascii_isdigit(*text) ||
      !g_ascii_string_to_unsigned(text, 10, 1, 65535, &v, NULL)) {
    g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                "%s '%s': expected a TCP port from 1 to 65535 (e.g. %s 22)", flag, text ? text : "",
                flag);
    return FALSE;
  }
  *port = (guint16)v;
  return TRUE;
}

gboolean nf_net_parse_server(const char *text, const char *host_addr, char **guest_addr,
                             GError **error)
{
  const char *colon = text ? strrchr(text, ':') : NULL;
  g_autofree char *host = colon ? g_strndup(text, (gsize)(colon - text)) : NULL;
  guint16 port = 0;
  gboolean host_ok = host && *host && strchr(host, ':') == NULL;
  for (const char *p = host; host_ok && *p; p++)
    host_ok = g_ascii_isalnum(*p) || *p == '.' || *p == '-' || *p == '_';
  if (!host_ok || !nf_net_parse_port("--server", colon + 1, &port, NULL)) {
    g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                "--server '%s': expected HOST:PORT with an IPv4 address or host name and a "
                "port from 1 to 65535 (e.g. --server 127.0.0.1:4000)",
                text ? text : "");
    return FALSE;
  }
  /* slirp maps its gateway address onto the host's own loopback; on a
   * bridge the host has an address of its own. */
  gboolean loopback = g_ascii_strcasecmp(host, "localhost") == 0 ||
                      g_str_has_prefix(host, "127.") || g_str_equal(host, "0.0.0.0");
  *guest_addr =
      g_strdup_printf("%s:%u", loopback ? (host_addr ? host_addr : NF_NET_HOST_ADDR) : host, port);
  return TRUE;
}

gboolean nf_net_port_is_free(guint port)
{
  if (port == 0 || port > 65535)
    return FALSE;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return FALSE;
  int one = 1;
  struct sockaddr_in sin = {.sin_family = AF_INET,
                            .sin_port = htons((guint16)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  gboolean ok = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == 0 &&
                bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0;
  close(fd);
  return ok;
}

/* The first taken port of [first, first + n), or 0 when all are free. */
static guint range_first_taken(guint first, guint n)
{
  for (guint p = first; p < first + n; p++)
    if (!nf_net_port_is_free(p))
      return p;
  return 0;
}

static gboolean read_base_file(const char *path, guint *base)
{
  g_autofree char *text = NULL;
  guint64 v = 0;
  if (!g_file_get_contents(path, &text, NULL, NULL))
    return FALSE;
  g_strstrip(text);
  if (!g_ascii_string_to_unsigned(text, 10, 1, 65535, &v, NULL))
    return FALSE;
  *base = (guint)v;
  return TRUE;
}

NfNet *nf_net_new(const NfFleetConfig *config, const char *runtime_dir, const char *host_addr,
                  GError **error)
{
  g_autoptr(GError) local = NULL;
  NfNet *net = g_new0(NfNet, 1);
  net->config = config;
  if (config->server && !nf_net_parse_server(config->server, host_addr, &net->guest_server, error))
    goto fail;
  if (config->n_forwards == 0 || config->net != NF_NET_USER)
    return net;

  guint span = config->count * config->n_forwards;
  net->base_file = g_build_filename(runtime_dir, "net.base", NULL);
  guint kept = 0;
  if (config->forward_base) {
    net->base = config->forward_base;
    if (net->base + span - 1 > 65535) {
      g_set_error(error, NF_FLEET_ERROR, NF_FLEET_ERROR_INPUT,
                  "--forward-base %u: %u guests x %u forwards need ports up to %u, past 65535; "
                  "choose a lower --forward-base",
                  net->base, config->count, config->n_forwards, net->base + span - 1);
      goto fail;
    }
    guint taken = range_first_taken(net->base, span);
    if (taken) {
      g_set_error(error, NF_FLEET_ERROR, NF_FLEET_ERROR_INPUT,
                  "--forward-base %u: host port %u (of %u-%u) is already in use; choose another "
                  "--forward-base or leave it out to pick a free range",
                  net->base, taken, net->base, net->base + span - 1);
      goto fail;
    }
  } else if (read_base_file(net->base_file, &kept)) {
    /* A supervisor of this fleet died and left guests holding these ports:
     * the lock is ours now, and adopted guests keep their ports. */
    net->base = kept;
  } else {
    guint low = NF_NET_AUTO_BASE_LOW, high = NF_NET_AUTO_BASE_HIGH;
    if (span > high - low) {
      g_set_error(error, NF_FLEET_ERROR, NF_FLEET_ERROR_INPUT,
                  "%u guests x %u forwards need %u host ports, more than the %u of the automatic "
                  "range; pass --forward-base",
                  config->count, config->n_forwards, span, high - low);
      goto fail;
    }
    guint slots = (high - low) / span;
    guint start = g_str_hash(config->name) % slots;
    for (guint i = 0; i < slots && net->base == 0; i++) {
      guint candidate = low + ((start + i) % slots) * span;
      if (range_first_taken(candidate, span) == 0)
        net->base = candidate;
    }
    if (net->base == 0) {
      g_set_error(error, NF_FLEET_ERROR, NF_FLEET_ERROR_INPUT,
                  "no free range of %u host ports between %u and %u for --forward; pass "
                  "--forward-base",
                  span, low, high);
      goto fail;
    }
  }
  {
    g_autofree char *text = g_strdup_printf("%u\n", net->base);
    if (!g_file_set_contents(net->base_file, text, -1, &local))
      g_warning("cannot record the forward base: %s", local->message);
  }
  return net;

fail:
  g_clear_pointer(&net->base_file, g_free); /* not ours: leave it */
  nf_net_free(net, TRUE);
  return NULL;
}

void nf_net_free(NfNet *net, gboolean keep)
{
  if (net == NULL)
    return;
  if (net->base_file && !keep)
    g_unlink(net->base_file);
  g_free(net->base_file);
  g_free(net->guest_server);
  g_free(net);
}

guint nf_net_forwards(const NfNet *net, guint id, NfNetForward *out)
{
  const NfFleetConfig *c = net->config;
  if (net->base == 0 || id <= c->id_offset)
    return 0;
  guint first = net->base + (id - c->id_offset - 1) * c->n_forwards;
  guint n = 0;
  for (guint j = 0; j < c->n_forwards && first + j <= 65535; j++)
    out[n++] = (NfNetForward){.host = (guint16)(first + j), .guest = c->forwards[j]};
  return n;
}

gboolean nf_net_check_guest(const NfNet *net, guint id, GError **error)
{
  const NfFleetConfig *c = net->config;
  if (net->base == 0)
    return TRUE;
  NfNetForward f[NF_NET_MAX_FORWARDS];
  guint n = nf_net_forwards(net, id, f);
  if (n < c->n_forwards) {
    g_set_error(error, NF_FLEET_ERROR, NF_FLEET_ERROR_INPUT,
                "guest %u has no host port left for --forward (base %u, %u per guest, past "
                "65535); lower --forward-base",
                id, net->base, c->n_forwards);
    return FALSE;
  }
  for (guint j = 0; j < n; j++)
    if (!nf_net_port_is_free(f[j].host)) {
      g_set_error(error, NF_FLEET_ERROR, NF_FLEET_ERROR_INPUT,
                  "host port %u (forwarded to guest %u's port %u) is in use by another "
                  "program; free it or run the fleet with another --forward-base",
                  f[j].host, id, f[j].guest);
      return FALSE;
    }
  return TRUE;
}

guint nf_net_base(const NfNet *net)
{
  return net->base;
}

const char *nf_net_guest_server(const NfNet *net)
{
  return net->guest_server;
}
