/*
 * reply-scan.c: a top-level member of a JSON object, found by skipping
 * values rather than parsing them (see reply-scan.h for why).
 */
#include "cli/reply-scan.h"

#include <string.h>

static const char *skip_ws(const char *p, const char *end);
static const char *skip_string(const char *p, const char *end);
static const char *skip_value(const char *p, const char *end);

static const char *skip_ws(const char *p, const char *end)
{
  while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
    p++;
  return p;
}

/* `p` at an opening quote: past the closing one, or NULL. */
static const char *skip_string(const char *p, const char *end)
{
  for (p++; p < end; p++) {
    if (*p == '\\')
      p++; /* the escaped character, whatever it is */
    else if (*p == '"')
      return p + 1;
  }
  return NULL;
}

/* Past one value (string, object, array or scalar), or NULL. */
static const char *skip_value(const char *p, const char *end)
{
  if (p >= end)
    return NULL;
  if (*p == '"')
    return skip_string(p, end);
  if (*p == '{' || *p == '[') {
    int depth = 0;
    while (p < end) {
      if (*p == '"') {
        if ((p = skip_string(p, end)) == NULL)
          return NULL;
        continue;
      }
      if (*p == '{' || *p == '[') {
        depth++;
      } else if (*p == '}' || *p == ']') {
        if (--depth == 0)
          return p + 1;
      }
      p++;
    }
    return NULL;
  }
  const char *q = p;
  while (q < end && *q != ',' && *q != '}' && *q != ']' && *q != ' ' && *q != '\t' && *q != '\n' &&
         *q != '\r' && *q != '\0')
    q++;
  return q > p ? q : NULL;
}

gboolean nf_reply_scan_member(const char *text, gsize len, const char *key, const char **value,
                              gsize *value_len)
{
  const char *end = text + len;
  gsize key_len = strlen(key);
  const char *p = skip_ws(text, end);
  if (p >= end || *p != '{')
    return FALSE;
  p = skip_ws(p + 1, end);
  for (;;) {
    if (p >= end || *p != '"')
      return FALSE;
    const char *k = p + 1;
    const char *k_end = skip_string(p, end);
    if (k_end == NULL)
      return FALSE;
    gboolean match = (gsize)(k_end - 1 - k) == key_len && memcmp(k, key, key_len) == 0;
    p = skip_ws(k_end, end);
    if (p >= end || *p != ':')
      return FALSE;
    p = skip_ws(p + 1, end);
    const char *v_end = skip_value(p, end);
    if (v_end == NULL)
      return FALSE;
    if (match) {
      *value = p;
      *value_len = (gsize)(v_end - p);
      return TRUE;
    }
    p = skip_ws(v_end, end);
    if (p >= end || *p != ',')
      return FALSE;
    p = skip_ws(p + 1, end);
  }
}
