/*
 * test-ps-summary-unit.c: the line under the `ps` table. Guards: queued
 * guests are counted as queued, not booting; the rarer states appear only
 * when some guest is in them, so the line adds up to the count; one guest
 * is "1 guest".
 */
#include <glib.h>
#include <jansson.h>

#include "cli/ps-summary.h"

static char *summary(const char *doc)
{
  json_error_t err;
  json_auto_t *ps = json_loads(doc, 0, &err);
  g_assert_nonnull(ps);
  return nf_ps_summary(ps);
}

static void test_queued_not_booting(void)
{
  g_autofree char *s = summary("{\"count\":5,\"counts\":{\"total\":5,\"queued\":3,\"booting\":1,"
                               "\"ready\":1,\"unhealthy\":0,\"stopping\":0,\"stopped\":0,"
                               "\"backoff\":0,\"failed\":0}}");
  g_assert_cmpstr(s, ==, "5 guests: 1 ready, 1 booting, 3 queued, 0 stopped, 0 failed");
}

static void test_rare_states(void)
{
  g_autofree char *s = summary("{\"count\":6,\"counts\":{\"total\":6,\"queued\":0,\"booting\":0,"
                               "\"ready\":1,\"unhealthy\":1,\"stopping\":1,\"stopped\":1,"
                               "\"backoff\":1,\"failed\":1}}");
  g_assert_cmpstr(s, ==,
                  "6 guests: 1 ready, 0 booting, 1 unhealthy, 1 stopping, 1 waiting to restart, "
                  "1 stopped, 1 failed");
}

static void test_one_guest(void)
{
  g_autofree char *s = summary("{\"count\":1,\"counts\":{\"total\":1,\"queued\":0,\"booting\":0,"
                               "\"ready\":1,\"unhealthy\":0,\"stopping\":0,\"stopped\":0,"
                               "\"backoff\":0,\"failed\":0}}");
  g_assert_cmpstr(s, ==, "1 guest: 1 ready, 0 booting, 0 stopped, 0 failed");
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/ps-summary/queued-not-booting", test_queued_not_booting);
  g_test_add_func("/ps-summary/rare-states", test_rare_states);
  g_test_add_func("/ps-summary/one-guest", test_one_guest);
  return g_test_run();
}
