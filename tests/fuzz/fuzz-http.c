/*
 * fuzz-http.c: libFuzzer target for the HTTP API's own parsing of outside
 * text (http/access.c): the Host header check that guards against DNS
 * rebinding, and --http's [ADDR:]PORT. Request lines, headers and bodies
 * are parsed by libsoup and jansson, not by us; routing works on libsoup's
 * message objects and is covered by tests/test-http*.c instead.
 */
#include "http/http-private.h"

#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  g_autofree char *text = g_strndup((const char *)data, size);
  (void)nf_http_host_is_loopback(text);
  g_autofree char *addr = NULL;
  guint port = 0;
  g_autoptr(GError) error = NULL;
  if (nf_http_parse_listen(text, &addr, &port, &error)) {
    g_assert_no_error(error);
    g_assert_nonnull(addr);
    g_assert_cmpuint(port, <=, 65535);
  } else {
    g_assert_nonnull(error);
  }
  return 0;
}
