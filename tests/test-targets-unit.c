/*
 * test-targets-unit.c: TARGET parsing (supervisor/targets.c), no VM.
 * Guards: ids, ranges, lists and "all" parse; junk, zero, reversed ranges and
 * oversize lists are refused with a message quoting the text; huge ranges are
 * not expanded; missing ids are named against a fleet's ids.
 */
#include <string.h>

#include "supervisor/targets.h"

static void test_good(void)
{
  static const struct {
    const char *in, *norm;
  } cases[] = {
      {"3", "3"},           {"3-17", "3-17"}, {"1,4,7-9", "1,4,7-9"},
      {"all", "all"},       {"ALL", "all"},   {"vm-0003", "3"},
      {"vm-1-vm-3", "1-3"}, {"5-5", "5"},     {"10000000", "10000000"},
  };
  for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
    g_autoptr(GError) error = NULL;
    g_autoptr(NfTargets) t = nf_targets_parse(cases[i].in, &error);
    g_assert_no_error(error);
    g_autofree char *s = nf_targets_to_string(t);
    g_assert_cmpstr(s, ==, cases[i].norm);
  }
}

static void test_bad(void)
{
  static const char *bad[] = {
      "",    "0",   "-",   "3-",    "-3",          "17-3",     "1,,2",  "1,", ",1", "a",
      "1 2", "3-x", "vm-", "all,1", "99999999999", "10000001", "1-2-3", "+1", " 1"};
  for (gsize i = 0; i < G_N_ELEMENTS(bad); i++) {
    g_autoptr(GError) error = NULL;
    g_autoptr(NfTargets) t = nf_targets_parse(bad[i], &error);
    g_assert_null(t);
    g_assert_error(error, NF_TARGETS_ERROR, NF_TARGETS_ERROR_SYNTAX);
    g_assert_nonnull(strstr(error->message, "bad TARGET"));
  }
  g_autoptr(GError) error = NULL;
  g_assert_null(nf_targets_parse(NULL, &error));
  g_assert_error(error, NF_TARGETS_ERROR, NF_TARGETS_ERROR_SYNTAX);

  /* More than 1024 items is refused, 1024 is fine. */
  g_autoptr(GString) s = g_string_new("1");
  for (guint i = 2; i <= 1024; i++)
    g_string_append_printf(s, ",%u", i);
  g_autoptr(NfTargets) ok = nf_targets_parse(s->str, NULL);
  g_assert_nonnull(ok);
  g_string_append(s, ",1025");
  g_assert_null(nf_targets_parse(s->str, NULL));
}

static void test_contains(void)
{
  g_autoptr(NfTargets) t = nf_targets_parse("1,4,7-9", NULL);
  gboolean want[] = {FALSE, TRUE, FALSE, FALSE, TRUE, FALSE, FALSE, TRUE, TRUE, TRUE, FALSE};
  for (guint id = 0; id < G_N_ELEMENTS(want); id++)
    g_assert_cmpint(nf_targets_contains(t, id), ==, want[id]);
  g_assert_false(nf_targets_is_all(t));
  g_autoptr(NfTargets) all = nf_targets_parse("all", NULL);
  g_assert_true(nf_targets_is_all(all));
  g_assert_true(nf_targets_contains(all, 12345));
}

static void test_check(void)
{
  guint ids[] = {4, 2, 3, 1};
  g_autoptr(GError) error = NULL;
  g_autoptr(NfTargets) in = nf_targets_parse("1-4", NULL);
  g_assert_true(nf_targets_check(in, ids, G_N_ELEMENTS(ids), &error));
  g_assert_no_error(error);

  g_autoptr(NfTargets) out = nf_targets_parse("3,5,9-10", NULL);
  g_assert_false(nf_targets_check(out, ids, G_N_ELEMENTS(ids), &error));
  g_assert_error(error, NF_TARGETS_ERROR, NF_TARGETS_ERROR_MISSING);
  g_assert_cmpstr(error->message, ==, "no guest 5, 9, 10 in this fleet");
  g_clear_error(&error);

  /* A huge range is counted, not walked id by id. */
  g_autoptr(NfTargets) huge = nf_targets_parse("1-10000000", NULL);
  g_assert_false(nf_targets_check(huge, ids, G_N_ELEMENTS(ids), &error));
  g_assert_cmpstr(error->message, ==, "no guest 5, 6, 7, 8, 9 (and 9999991 more) in this fleet");
  g_clear_error(&error);

  /* Ids below the fleet's (--id-offset, a shard), 1,024 times: counted
   * without a walk (it took minutes) and without a 32-bit count wrapping;
   * the first missing ones found past runs of present ids. */
  guint high[10];
  for (guint i = 0; i < 10; i++)
    high[i] = 9000001 + i;
  g_autoptr(GString) many = g_string_new(NULL);
  for (guint i = 0; i < 1024; i++)
    g_string_append_printf(many, "%s1-9000000", i ? "," : "");
  g_autoptr(NfTargets) below = nf_targets_parse(many->str, NULL);
  g_assert_false(nf_targets_check(below, high, G_N_ELEMENTS(high), &error));
  g_assert_cmpstr(error->message, ==, "no guest 1, 2, 3, 4, 5 (and 9215999995 more) in this fleet");
  g_clear_error(&error);
  guint gaps[] = {7, 3, 4, 5, 3, 10, 11, 12};
  g_autoptr(NfTargets) span = nf_targets_parse("3-14", NULL);
  g_assert_false(nf_targets_check(span, gaps, G_N_ELEMENTS(gaps), &error));
  g_assert_cmpstr(error->message, ==, "no guest 6, 8, 9, 13, 14 in this fleet");
  g_clear_error(&error);

  g_autoptr(NfTargets) all = nf_targets_parse("all", NULL);
  g_assert_true(nf_targets_check(all, NULL, 0, &error));
  g_assert_false(nf_targets_check(in, NULL, 0, &error));
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/targets/good", test_good);
  g_test_add_func("/targets/bad", test_bad);
  g_test_add_func("/targets/contains", test_contains);
  g_test_add_func("/targets/check", test_check);
  return g_test_run();
}
