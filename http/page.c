/*
 * page.c: serves the dashboard's files (http/static/: index.html, app.js,
 * style.css), embedded in the binary (static.h), with their content types.
 * The page is one HTML document with its script and style; it fetches
 * nothing from elsewhere. The files hold no fleet data: with a token they
 * are served without it, and the page sends the token on its API calls.
 */
#include "http/http-private.h"

#include <string.h>

#include "http/static.h"

static const char *content_type(const char *name);

static const char *content_type(const char *name)
{
  if (g_str_has_suffix(name, ".html"))
    return "text/html; charset=utf-8";
  if (g_str_has_suffix(name, ".js"))
    return "text/javascript; charset=utf-8";
  if (g_str_has_suffix(name, ".css"))
    return "text/css; charset=utf-8";
  if (g_str_has_suffix(name, ".svg"))
    return "image/svg+xml";
  return "application/octet-stream";
}

gboolean nf_http_page_handle(NfHttp *http, SoupServerMessage *msg, const char *path)
{
  const char *name = g_str_equal(path, "/") ? "index.html" : path + 1;
  for (const NfHttpStaticFile *f = nf_http_static_files; f->name; f++) {
    if (strcmp(f->name, name) != 0)
      continue;
    soup_server_message_set_status(msg, 200, NULL);
    SoupMessageHeaders *h = soup_server_message_get_response_headers(msg);
    soup_message_headers_replace(h, "Cache-Control", "no-cache");
    soup_message_headers_replace(h, "X-Content-Type-Options", "nosniff");
    soup_message_headers_replace(
        h, "Content-Security-Policy",
        "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'");
    soup_server_message_set_response(msg, content_type(f->name), SOUP_MEMORY_STATIC,
                                     (const char *)f->data, f->len);
    return TRUE;
  }
  return FALSE;
}
