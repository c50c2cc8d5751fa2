/*
 * parse.c: the CLI's value parsers (see parse.h).
 */
#include "cli/parse.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>

gboolean nf_parse_size_kib(const char *flag, const char *text, guint64 *kib, GError **error)
{
  char *end = NULL;
  errno = 0;
  guint64 v = g_ascii_strtoull(text, &end, 10);
  guint64 mult_k = 1024; /* in KiB: no suffix means MiB */
  if (end && *end) {
    switch (g_ascii_toupper(*end)) {
    case 'K':
      mult_k = 1;
      break;
    case 'M':
      mult_k = 1024;
      break;
    case 'G':
      mult_k = 1024 * 1024;
      break;
    default:
      mult_k = 0;
    }
    end++;
    if (*end == 'i' || *end == 'I')
      end++;
    if (*end == 'b' || *end == 'B')
      end++;
  }
  if (end == text || !end || *end || mult_k == 0 || errno || v == 0 ||
      v > G_MAXUINT64 / mult_k / 1024) {
    g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                "%s '%s': expected a size such as 128M or 1G", flag, text);
    return FALSE;
  }
  *kib = v * mult_k;
  return TRUE;
}

gboolean nf_parse_size_mib(const char *flag, const char *text, guint64 *mib, GError **error)
{
  guint64 kib;
  if (!nf_parse_size_kib(flag, text, &kib, error))
    return FALSE;
  *mib = kib / 1024;
  if (*mib == 0) {
    g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                "%s '%s': less than 1M; use e.g. 128M", flag, text);
    return FALSE;
  }
  return TRUE;
}

gboolean nf_parse_count(const char *what, const char *text, guint max, guint *out, GError **error)
{
  char *end = NULL;
  errno = 0;
  gint64 v = g_ascii_strtoll(text, &end, 10);
  if (!text[0] || *end || errno || v <= 0 || (guint64)v > max || !g_ascii_isdigit(text[0])) {
    g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                "%s '%s': expected a whole number from 1 to %u", what, text, max);
    return FALSE;
  }
  *out = (guint)v;
  return TRUE;
}

gboolean nf_parse_seconds_ms(const char *flag, const char *text, guint *ms, GError **error)
{
  char *end = NULL;
  double v = g_ascii_strtod(text, &end);
  if (end == text || *end || !isfinite(v) || v < 0 || v > 86400.0) {
    g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                "%s '%s': expected seconds, such as 10 or 2.5", flag, text);
    return FALSE;
  }
  *ms = (guint)(v * 1000.0 + 0.5);
  return TRUE;
}
