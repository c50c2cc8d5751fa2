/*
 * fuzz-console.c: libFuzzer target for the console relay's escape handling
 * (nf_console_filter_keys, cli/console.c): the keys a user types or pipes.
 *
 * The same input fed whole and cut into chunks must send the same bytes and
 * detach at the same point, since the kernel splits reads as it likes; and
 * a detach must never leak the escape's 'q' to the guest.
 */
#include "cli/console.h"

#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  if (size == 0)
    return 0;
  /* First byte: chunk size for the split feed. */
  gsize chunk = 1 + data[0] % 7;
  const char *in = (const char *)data + 1;
  gsize len = size - 1;

  g_autoptr(GString) whole = g_string_new(NULL);
  gboolean esc = FALSE;
  gboolean detach_whole = nf_console_filter_keys(&esc, in, len, whole);

  g_autoptr(GString) split = g_string_new(NULL);
  gboolean esc2 = FALSE, detach_split = FALSE;
  for (gsize off = 0; off < len && !detach_split; off += chunk)
    detach_split = nf_console_filter_keys(&esc2, in + off, MIN(chunk, len - off), split);

  g_assert_cmpint(detach_whole, ==, detach_split);
  g_assert_cmpuint(whole->len, ==, split->len);
  g_assert_true(memcmp(whole->str, split->str, whole->len) == 0);
  /* Nothing sent can be longer than what was typed. */
  g_assert_cmpuint(whole->len, <=, len);
  if (!detach_whole)
    g_assert_cmpint(esc, ==, esc2);
  return 0;
}
