/*
 * ps-summary.c: the line under the `ps` table (see ps-summary.h), apart
 * from the verb so that it can be tested without a fleet.
 */
#include "cli/ps-summary.h"
char *nf_ps_summary(json_t *ps)
{
  json_t *k = json_object_get(ps, "counts");
#define COUNT(key) json_integer_value(json_object_get(k, key))
  json_int_t n = json_integer_value(json_object_get(ps, "count"));
  GString *s = g_string_new(NULL);
  g_string_append_printf(s,
                         "%" JSON_INTEGER_FORMAT " guest%s: %" JSON_INTEGER_FORMAT
                         " ready, %" JSON_INTEGER_FORMAT " booting",
                         n, n == 1 ? "" : "s", COUNT("ready"), COUNT("booting"));
  /* The states most fleets never show appear only when some guest is in
   * them, so that the line always adds up to the count. */
  static const char *const rare[][2] = {{"queued", "queued"},
                                        {"unhealthy", "unhealthy"},
                                        {"stopping", "stopping"},
                                        {"backoff", "waiting to restart"}};
  for (gsize i = 0; i < G_N_ELEMENTS(rare); i++)
    if (COUNT(rare[i][0]) > 0)
      g_string_append_printf(s, ", %" JSON_INTEGER_FORMAT " %s", COUNT(rare[i][0]), rare[i][1]);
  g_string_append_printf(s, ", %" JSON_INTEGER_FORMAT " stopped, %" JSON_INTEGER_FORMAT " failed",
                         COUNT("stopped"), COUNT("failed"));
#undef COUNT
  return g_string_free(s, FALSE);
}
