/*
 * test-reply-scan-unit.c: cli/reply-scan.c, which lets `ps --json` print a
 * reply's result without parsing it: the member is found past strings with
 * escaped quotes and braces, nested values and whitespace; anything not a
 * well-formed object up to the member is refused, so the caller parses.
 */
#include <string.h>

#include "cli/reply-scan.h"

static char *member(const char *text, const char *key)
{
  const char *v = NULL;
  gsize len = 0;
  if (!nf_reply_scan_member(text, strlen(text), key, &v, &len))
    return NULL;
  return g_strndup(v, len);
}

static void test_finds_members(void)
{
  const char *reply = " {\"v\":1, \"id\" : 7,\"ok\":true,\"x\":\"a \\\" } ] { [ b\","
                      "\"nested\":{\"result\":[1,{\"k\":\"}\"}]},\"result\":{\"guests\":[{\"n\":"
                      "\"vm-1\"},{\"n\":\"v\\\\\"}],\"up\":1.5e3,\"z\":null}} ";
  g_autofree char *id = member(reply, "id");
  g_autofree char *ok = member(reply, "ok");
  g_autofree char *x = member(reply, "x");
  g_autofree char *result = member(reply, "result");
  g_assert_cmpstr(id, ==, "7");
  g_assert_cmpstr(ok, ==, "true");
  g_assert_cmpstr(x, ==, "\"a \\\" } ] { [ b\"");
  /* The top-level one, not the one nested in "nested". */
  g_assert_cmpstr(result, ==,
                  "{\"guests\":[{\"n\":\"vm-1\"},{\"n\":\"v\\\\\"}],\"up\":1.5e3,"
                  "\"z\":null}");
  g_assert_null(member(reply, "missing"));
}

static void test_refuses_malformed(void)
{
  const char *bad[] = {"",
                       "[]",
                       "{",
                       "{\"ok\"}",
                       "{\"ok\":}",
                       "{\"a\":\"unterminated,\"result\":1}",
                       "{\"a\":[1,2,\"result\":1}",
                       "{\"a\":1 \"result\":2}",
                       "{a:1,\"result\":2}"};
  for (gsize i = 0; i < G_N_ELEMENTS(bad); i++)
    g_assert_null(member(bad[i], "result"));
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/reply-scan/finds-members", test_finds_members);
  g_test_add_func("/reply-scan/refuses-malformed", test_refuses_malformed);
  return g_test_run();
}
