/*
 * fuzz-qmp-parser.c: libFuzzer target for the QMP framing and JSON decoding.
 *
 * Feeds each input twice, once whole and once cut into pseudo-random chunks
 * (from 1 byte up), and requires both to yield the same messages and the same
 * verdict: framing must not depend on how the kernel happens to split reads.
 * ASan/UBSan catch the memory errors; the comparison catches logic ones.
 */
#include "qmp/qmp.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
static void collect_cb(json_t *message, gpointer user_data);
static gboolean run(const uint8_t *data, size_t size, guint32 seed, GString *out);

static void collect_cb(json_t *message, gpointer user_data)
{
  GString *out = user_data;
  char *s = json_dumps(message, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
  g_assert_nonnull(s);
  g_string_append(out, s);
  g_string_append_c(out, '\n');
  free(s);
}

/* seed 0: all at once; otherwise chunk sizes from a xorshift generator. */
static gboolean run(const uint8_t *data, size_t size, guint32 seed, GString *out)
{
  g_autoptr(NfQmpParser) parser = nf_qmp_parser_new(collect_cb, out);
  size_t off = 0;
  do {
    size_t n = size - off;
    if (seed != 0) {
      seed ^= seed << 13;
      seed ^= seed >> 17;
      seed ^= seed << 5;
      n = MIN(n, 1 + seed % ((seed & 0x100) ? 7 : 300));
    }
    g_autoptr(GError) error = NULL;
    if (!nf_qmp_parser_feed(parser, (const char *)data + off, n, &error)) {
      g_assert_true(g_error_matches(error, NF_QMP_ERROR, NF_QMP_ERROR_PROTOCOL));
      /* Broken for good. */
      g_autoptr(GError) again = NULL;
      g_assert_false(nf_qmp_parser_feed(parser, "{}\n", 3, &again));
      return FALSE;
    }
    off += n;
  } while (off < size);
  return TRUE;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  g_autoptr(GString) whole = g_string_new(NULL);
  g_autoptr(GString) chunked = g_string_new(NULL);
  gboolean ok_whole = run(data, size, 0, whole);
  guint32 seed = 0x9e3779b9u ^ (guint32)size ^ (size ? data[size - 1] << 8 : 0);
  gboolean ok_chunked = run(data, size, seed, chunked);
  g_assert_cmpint(ok_whole, ==, ok_chunked);
  g_assert_cmpstr(whole->str, ==, chunked->str);
  return 0;
}
