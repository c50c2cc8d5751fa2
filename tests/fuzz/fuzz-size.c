/*
 * fuzz-size.c: libFuzzer target for the number parsers of cli/parse.c
 * (sizes like "512M", counts, seconds like "2.5"): flags and fleet files
 * hand them any text. Checks that success and failure are exclusive (an
 * error set exactly when FALSE is returned) and that results stay in range.
 */
#include "cli/parse.h"

#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  g_autofree char *text = g_strndup((const char *)data, size);
  g_autoptr(GError) e1 = NULL, e2 = NULL, e3 = NULL;
  guint64 mib = 0;
  gboolean ok = nf_parse_size_mib("--memory", text, &mib, &e1);
  g_assert_true(ok == (e1 == NULL));
  guint count = 0;
  ok = nf_parse_count("COUNT", text, 1000, &count, &e2);
  g_assert_true(ok == (e2 == NULL));
  if (ok)
    g_assert_true(count >= 1 && count <= 1000);
  guint ms = 0;
  ok = nf_parse_seconds_ms("--boot-timeout", text, &ms, &e3);
  g_assert_true(ok == (e3 == NULL));
  return 0;
}
