/*
 * fuzz-ubootenv.c: libFuzzer target for the U-Boot env codec
 * (overlay/ubootenv.c), which reads env blocks from images users bring.
 *
 * The input is the block itself, with a correct CRC patched in half the
 * time so that the decoder's body is reached, not only the CRC check. A
 * block that decodes must encode again, and decode to the same variables.
 */
#include "overlay/ubootenv.h"

#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  if (size < 1 || size > 65536)
    return 0;
  g_autofree guint8 *block = g_memdup2(data, size);
  if ((data[0] & 1) && size > 4) {
    guint32 crc = nf_ubootenv_crc32(block + 4, size - 4);
    block[0] = crc & 0xff;
    block[1] = (crc >> 8) & 0xff;
    block[2] = (crc >> 16) & 0xff;
    block[3] = (crc >> 24) & 0xff;
  }
  g_autoptr(GError) error = NULL;
  g_autoptr(NfUbootEnv) env = nf_ubootenv_parse(block, size, "fuzz", &error);
  if (!env) {
    g_assert_nonnull(error);
    return 0;
  }
  g_auto(GStrv) keys = nf_ubootenv_keys(env);
  gsize out_len = 0;
  g_autoptr(GError) ser_error = NULL;
  g_autofree guint8 *out = nf_ubootenv_serialize(env, &out_len, &ser_error);
  g_assert_no_error(ser_error);
  g_assert_cmpuint(out_len, ==, nf_ubootenv_get_size(env));
  g_autoptr(GError) again_error = NULL;
  g_autoptr(NfUbootEnv) again = nf_ubootenv_parse(out, out_len, "fuzz-again", &again_error);
  g_assert_no_error(again_error);
  g_auto(GStrv) keys2 = nf_ubootenv_keys(again);
  g_assert_cmpuint(g_strv_length(keys), ==, g_strv_length(keys2));
  for (guint i = 0; keys[i]; i++) {
    g_assert_cmpstr(keys[i], ==, keys2[i]);
    g_assert_cmpstr(nf_ubootenv_get(env, keys[i]), ==, nf_ubootenv_get(again, keys2[i]));
  }
  /* Edits on a decoded env: set one that exists, remove one. */
  if (keys[0]) {
    g_autoptr(GError) set_error = NULL;
    (void)nf_ubootenv_set(env, keys[0], "x", &set_error);
    g_assert_true(nf_ubootenv_unset(env, keys[0]));
    g_assert_null(nf_ubootenv_get(env, keys[0]));
  }
  return 0;
}
