/*
 * fuzz-targets.c: libFuzzer target for TARGET ranges (supervisor/targets.c),
 * which come from command lines and from control clients.
 *
 * Beyond memory safety it checks the parser's own promises: a parsed set
 * prints in normal form, that form parses back to the same set, and
 * nf_targets_check() answers without crashing for ids around the edges.
 */
#include "supervisor/targets.h"

#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  g_autofree char *text = g_strndup((const char *)data, size);
  g_autoptr(GError) error = NULL;
  g_autoptr(NfTargets) t = nf_targets_parse(text, &error);
  if (!t) {
    g_assert_true(g_error_matches(error, NF_TARGETS_ERROR, NF_TARGETS_ERROR_SYNTAX));
    return 0;
  }
  g_autofree char *norm = nf_targets_to_string(t);
  g_autoptr(GError) again_error = NULL;
  g_autoptr(NfTargets) again = nf_targets_parse(norm, &again_error);
  g_assert_no_error(again_error);
  g_autofree char *norm2 = nf_targets_to_string(again);
  g_assert_cmpstr(norm, ==, norm2);
  g_assert_cmpint(nf_targets_is_all(t), ==, nf_targets_is_all(again));
  static const guint probe[] = {0, 1, 2, 3, 7, 100, 4096, NF_TARGETS_MAX_ID, NF_TARGETS_MAX_ID + 1};
  for (gsize i = 0; i < G_N_ELEMENTS(probe); i++)
    g_assert_cmpint(nf_targets_contains(t, probe[i]), ==, nf_targets_contains(again, probe[i]));
  static const guint present[] = {1, 2, 3, 5, 8};
  g_autoptr(GError) check_error = NULL;
  if (!nf_targets_check(t, present, G_N_ELEMENTS(present), &check_error))
    g_assert_true(g_error_matches(check_error, NF_TARGETS_ERROR, NF_TARGETS_ERROR_MISSING));
  return 0;
}
