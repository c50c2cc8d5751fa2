/*
 * test-identity-unit: guards guest identity (supervisor/identity.c). A serial
 * format is user input that reaches printf, so anything but one integer
 * conversion must be refused; MACs must be locally administered unicast,
 * stable, and distinct across a fleet.
 */
#include <glib.h>
#include <string.h>

#include "supervisor/identity.h"

static void test_serial_formats(void)
{
  const char *good[] = {"NF-%06u", "dev%u", "%x", "A%%B-%04d", "%-8i", "sn.%#o:x", "%.3X", NULL};
  const char *bad[] = {"%s",    "%n",  "NF",     "%u%u", "%lu", "%*u", "NF %u", "a,%u",
                       "%100u", "%u%", "%.123u", "%p",   "é%u", "",    NULL};
  for (const char **f = good; *f; f++) {
    g_autoptr(GError) error = NULL;
    if (!nf_identity_validate_serial_format(*f, &error))
      g_error("rejected good format \"%s\": %s", *f, error->message);
  }
  for (const char **f = bad; *f; f++) {
    g_autoptr(GError) error = NULL;
    if (nf_identity_validate_serial_format(*f, &error))
      g_error("accepted bad format \"%s\"", *f);
    g_assert_error(error, NF_IDENTITY_ERROR, NF_IDENTITY_ERROR_BAD_FORMAT);
    g_assert_nonnull(strstr(error->message, *f));
  }
}

static void test_serial_values(void)
{
  g_autofree char *a = nf_identity_serial(NULL, 42, NULL);
  g_assert_cmpstr(a, ==, "NF-000042");
  g_autofree char *b = nf_identity_serial("dev-%x", 255, NULL);
  g_assert_cmpstr(b, ==, "dev-ff");
  g_autofree char *c = nf_identity_serial("100%%-%u", 7, NULL);
  g_assert_cmpstr(c, ==, "100%-7");
  g_autoptr(GError) error = NULL;
  g_assert_null(nf_identity_serial("%s", 1, &error));
  g_assert_error(error, NF_IDENTITY_ERROR, NF_IDENTITY_ERROR_BAD_FORMAT);
  g_clear_error(&error);
  g_assert_null(nf_identity_serial(
      "XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX%u", 1, &error));
  g_assert_error(error, NF_IDENTITY_ERROR, NF_IDENTITY_ERROR_RANGE);
}

static void test_mac(void)
{
  g_autoptr(GHashTable) seen = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  for (guint i = 0; i < 5000; i++) {
    char *mac = nf_identity_mac("lab", i, NULL);
    g_assert_cmpuint(strlen(mac), ==, 17);
    guint first = (guint)g_ascii_strtoull(mac, NULL, 16);
    g_assert_true(first & 0x02);                /* locally administered */
    g_assert_false(first & 0x01);               /* unicast */
    g_assert_true(g_hash_table_add(seen, mac)); /* unique */
  }
  g_autofree char *again = nf_identity_mac("lab", 42, NULL);
  g_autofree char *same = nf_identity_mac("lab", 42, NULL);
  g_assert_cmpstr(again, ==, same);
  g_autofree char *other = nf_identity_mac("lab2", 42, NULL);
  g_assert_cmpstr(again + 9, ==, other + 9); /* index part */
  g_assert_cmpstr(again, !=, other);         /* fleet part */
  g_autofree char *last = nf_identity_mac("lab", 0xffffff, NULL);
  g_assert_nonnull(last);
  g_assert_true(g_str_has_suffix(last, ":ff:ff:ff"));
  g_autoptr(GError) error = NULL;
  g_assert_null(nf_identity_mac("lab", 0x1000000, &error));
  g_assert_error(error, NF_IDENTITY_ERROR, NF_IDENTITY_ERROR_RANGE);
}

static void test_name(void)
{
  g_autofree char *n = nf_identity_name("lab", 7);
  g_assert_cmpstr(n, ==, "lab-7");
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/identity/serial-formats", test_serial_formats);
  g_test_add_func("/identity/serial-values", test_serial_values);
  g_test_add_func("/identity/mac", test_mac);
  g_test_add_func("/identity/name", test_name);
  return g_test_run();
}
