/*
 * access.c: who may use the HTTP server (see http.h): the --http and
 * --http-token values checked and read, and the check every request passes
 * before anything reads its body. With a token, each API and metrics
 * request must carry it (compared in constant time); without one, only
 * loopback peers naming a loopback Host are served. Either way a browser
 * request from another origin is refused, so a web page elsewhere cannot
 * drive the fleet through the user's browser.
 */
#include "http/http-private.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

static gboolean is_page_path(const char *path);
static gboolean token_equal(const char *given, const char *token);

gboolean nf_http_parse_listen(const char *spec, char **addr, guint *port, GError **error)
{
  g_autofree char *host = NULL;
  const char *port_str = spec;
  const char *colon = strrchr(spec, ':');
  if (spec[0] == '[') {
    const char *close = strchr(spec, ']');
    if (!close || close[1] != ':') {
      g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                  "--http '%s': an IPv6 address goes in brackets before the port, e.g. [::1]:8080",
                  spec);
      return FALSE;
    }
    host = g_strndup(spec + 1, (gsize)(close - spec - 1));
    port_str = close + 2;
  } else if (colon) {
    host = g_strndup(spec, (gsize)(colon - spec));
    port_str = colon + 1;
    if (strchr(host, ':')) {
      /* "::1:8080" could be an address or an address and a port. */
      g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                  "--http '%s': an IPv6 address goes in brackets before the port, e.g. "
                  "[::1]:8080",
                  spec);
      return FALSE;
    }
  }
  guint64 p;
  if (!g_ascii_string_to_unsigned(port_str, 10, 0, 65535, &p, NULL)) {
    g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                "--http '%s': the port must be a number 0-65535, e.g. --http 8080 or "
                "--http 0.0.0.0:8080",
                spec);
    return FALSE;
  }
  if (!host || !*host) {
    g_free(host);
    host = g_strdup("127.0.0.1");
  }
  g_autoptr(GInetAddress) ia = g_inet_address_new_from_string(host);
  if (!ia) {
    g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                "--http '%s': '%s' is not an IP address (e.g. 127.0.0.1, 0.0.0.0, [::1])", spec,
                host);
    return FALSE;
  }
  *addr = g_steal_pointer(&host);
  *port = (guint)p;
  return TRUE;
}

gboolean nf_http_addr_is_loopback(const char *addr)
{
  g_autoptr(GInetAddress) ia = g_inet_address_new_from_string(addr);
  return ia && g_inet_address_get_is_loopback(ia);
}

char *nf_http_read_token(const char *path, GError **error)
{
  g_autofree char *text = NULL;
  gsize len = 0;
  if (g_str_equal(path, "-")) {
    GString *s = g_string_new(NULL);
    char buf[256];
    ssize_t n;
    while (s->len < 4096 && (n = read(STDIN_FILENO, buf, sizeof(buf))) != 0) {
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        break;
      g_string_append_len(s, buf, n);
    }
    text = g_string_free(s, FALSE);
  } else if (!g_file_get_contents(path, &text, &len, error)) {
    g_prefix_error(error, "--http-token: ");
    return NULL;
  }
  g_strstrip(text);
  if (strlen(text) < 16 || strpbrk(text, " \t\r\n")) {
    g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                "--http-token %s: the token must be one word of at least 16 characters (e.g. "
                "`head -c 24 /dev/urandom | base64 > token`)",
                path);
    return NULL;
  }
  return g_steal_pointer(&text);
}

static gboolean is_page_path(const char *path)
{
  return g_str_equal(path, "/") ||
         (path[0] == '/' && !strchr(path + 1, '/') && !g_str_equal(path, "/metrics"));
}

/* Constant time in the token's content: every byte is compared. */
static gboolean token_equal(const char *given, const char *token)
{
  gsize n = strlen(token), m = strlen(given);
  unsigned diff = n != m;
  for (gsize i = 0; i < n; i++)
    diff |= (unsigned char)token[i] ^ (unsigned char)(i < m ? given[i] : 0);
  return diff == 0;
}

/* Host header (host[:port]) names this machine by a loopback address or
 * "localhost": a page of another site that rebinds its name to 127.0.0.1
 * still sends its own name and is refused. */
gboolean nf_http_host_is_loopback(const char *host)
{
  if (!host)
    return FALSE;
  g_autofree char *name = NULL;
  if (host[0] == '[') {
    const char *close = strchr(host, ']');
    if (!close)
      return FALSE;
    name = g_strndup(host + 1, (gsize)(close - host - 1));
  } else {
    const char *colon = strchr(host, ':');
    name = colon ? g_strndup(host, (gsize)(colon - host)) : g_strdup(host);
  }
  return g_ascii_strcasecmp(name, "localhost") == 0 || nf_http_addr_is_loopback(name);
}

gboolean nf_http_check_access(NfHttp *http, SoupServerMessage *msg, const char *path)
{
  SoupMessageHeaders *h = soup_server_message_get_request_headers(msg);
  const char *host = soup_message_headers_get_one(h, "Host");
  const char *origin = soup_message_headers_get_one(h, "Origin");
  if (origin && host) {
    /* A browser on another site may send requests but not read answers;
     * refuse it before anything runs. The page itself may come over https:
     * through a TLS proxy that passes Host on, its POSTs carry that origin. */
    const char *rest = g_str_has_prefix(origin, "http://")    ? origin + 7
                       : g_str_has_prefix(origin, "https://") ? origin + 8
                                                              : NULL;
    if (rest == NULL || !g_str_equal(rest, host)) {
      nf_http_reply_error(msg, 403, "permission_denied", "cross-origin request from %s refused",
                          origin);
      return FALSE;
    }
  }
  if (http->opts.token) {
    if (is_page_path(path))
      return TRUE; /* the page's files carry no fleet data; the page sends the token */
    const char *auth = soup_message_headers_get_one(h, "Authorization");
    if (!auth || g_ascii_strncasecmp(auth, "Bearer ", 7) != 0 ||
        !token_equal(auth + 7, http->opts.token)) {
      soup_message_headers_replace(soup_server_message_get_response_headers(msg),
                                   "WWW-Authenticate", "Bearer realm=\"nervesfleet\"");
      nf_http_reply_error(msg, 401, "unauthorized",
                          auth ? "wrong token" : "this server needs `Authorization: Bearer TOKEN`");
      return FALSE;
    }
    return TRUE;
  }
  GSocketAddress *peer = soup_server_message_get_remote_address(msg);
  GInetAddress *pa = G_IS_INET_SOCKET_ADDRESS(peer)
                         ? g_inet_socket_address_get_address(G_INET_SOCKET_ADDRESS(peer))
                         : NULL;
  if (!pa || !g_inet_address_get_is_loopback(pa)) {
    nf_http_reply_error(msg, 403, "permission_denied",
                        "only this host may connect without a token (see --http-token)");
    return FALSE;
  }
  if (!nf_http_host_is_loopback(host)) {
    nf_http_reply_error(msg, 403, "permission_denied",
                        "Host '%s' is not this host: open the dashboard as http://127.0.0.1:PORT/",
                        host ? host : "");
    return FALSE;
  }
  return TRUE;
}
