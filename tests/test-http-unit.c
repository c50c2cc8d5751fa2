/*
 * test-http-unit.c: the --http flag values, without a server. Guards:
 * [ADDR:]PORT parsing (default address, IPv6 in brackets, bad ports and
 * addresses refused with the flag named), which addresses count as
 * loopback (the no-token rule), and token files (trimmed; too short,
 * several words or missing refused).
 */
#include <string.h>

#include "http/http.h"
#include "tests/lib/nf-test.h"

static void parse_ok(const char *spec, const char *addr, guint port)
{
  g_autofree char *a = NULL;
  guint p = 1;
  g_autoptr(GError) error = NULL;
  g_assert_true(nf_http_parse_listen(spec, &a, &p, &error));
  g_assert_no_error(error);
  g_assert_cmpstr(a, ==, addr);
  g_assert_cmpuint(p, ==, port);
}

static void parse_bad(const char *spec, const char *needle)
{
  g_autofree char *a = NULL;
  guint p = 0;
  g_autoptr(GError) error = NULL;
  g_assert_false(nf_http_parse_listen(spec, &a, &p, &error));
  g_assert_null(a);
  g_assert_nonnull(error);
  g_assert_nonnull(strstr(error->message, "--http"));
  g_assert_nonnull(strstr(error->message, needle));
}

static void test_listen(void)
{
  parse_ok("8080", "127.0.0.1", 8080);
  parse_ok("0", "127.0.0.1", 0);
  parse_ok(":9000", "127.0.0.1", 9000);
  parse_ok("0.0.0.0:80", "0.0.0.0", 80);
  parse_ok("[::1]:8080", "::1", 8080);
  parse_ok("[::]:1", "::", 1);
  parse_bad("65536", "port");
  parse_bad("127.0.0.1:http", "port");
  parse_bad("127.0.0.1:", "port");
  parse_bad("localhost:8080", "not an IP address");
  parse_bad("::1:8080", "brackets");
  parse_bad("[::1]8080", "brackets");
}

static void test_loopback(void)
{
  g_assert_true(nf_http_addr_is_loopback("127.0.0.1"));
  g_assert_true(nf_http_addr_is_loopback("127.1.2.3"));
  g_assert_true(nf_http_addr_is_loopback("::1"));
  g_assert_false(nf_http_addr_is_loopback("0.0.0.0"));
  g_assert_false(nf_http_addr_is_loopback("::"));
  g_assert_false(nf_http_addr_is_loopback("192.168.1.5"));
  g_assert_false(nf_http_addr_is_loopback("not-an-address"));
}

static void test_token(void)
{
  g_autofree char *dir = nf_test_tmpdir_new();
  g_autofree char *path = g_build_filename(dir, "token", NULL);
  g_assert_true(g_file_set_contents(path, "  0123456789abcdef-xyz \n", -1, NULL));
  g_autoptr(GError) error = NULL;
  g_autofree char *tok = nf_http_read_token(path, &error);
  g_assert_no_error(error);
  g_assert_cmpstr(tok, ==, "0123456789abcdef-xyz");

  const char *bad[] = {"short\n", "0123456789abcdef 0123456789abcdef\n", "\n"};
  for (gsize i = 0; i < G_N_ELEMENTS(bad); i++) {
    g_assert_true(g_file_set_contents(path, bad[i], -1, NULL));
    g_autoptr(GError) e = NULL;
    g_autofree char *t = nf_http_read_token(path, &e);
    g_assert_null(t);
    g_assert_nonnull(strstr(e->message, "at least 16 characters"));
  }
  g_autofree char *missing = g_build_filename(dir, "nope", NULL);
  g_autoptr(GError) e2 = NULL;
  g_autofree char *t2 = nf_http_read_token(missing, &e2);
  g_assert_null(t2);
  g_assert_nonnull(strstr(e2->message, "--http-token"));
  nf_test_tmpdir_cleanup(dir);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/http-unit/listen", test_listen);
  g_test_add_func("/http-unit/loopback", test_loopback);
  g_test_add_func("/http-unit/token", test_token);
  return g_test_run();
}
