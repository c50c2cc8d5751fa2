/*
 * fuzz-ready-http.c: libFuzzer target for the --ready http request parser
 * (nf_ready_http_parse_serial, supervisor/ready-http.c): any guest, or
 * anything that reaches the port, sends it bytes.
 *
 * A serial it accepts must be what the parser promises (1-64 characters of
 * [A-Za-z0-9._:+-]), and a refusal must say why.
 */
#include "supervisor/ready-http.h"

#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  if (size > NF_READY_HTTP_MAX_HEAD)
    return 0; /* the server never holds more */
  g_autofree char *head = g_strndup((const char *)data, size);
  const char *problem = NULL;
  g_autofree char *serial = nf_ready_http_parse_serial(head, &problem);
  if (!serial) {
    g_assert_nonnull(problem);
    return 0;
  }
  gsize n = strlen(serial);
  g_assert_true(n >= 1 && n <= 64);
  for (const char *p = serial; *p; p++)
    g_assert_true(g_ascii_isalnum(*p) || strchr("._:+-", *p));
  return 0;
}
