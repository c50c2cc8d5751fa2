/*
 * targets.c: TARGET parsing (see targets.h). A list of inclusive ranges kept
 * as written; membership is a scan of at most 1024 ranges, which is cheaper
 * than expanding "1-7000" into a set for every request.
 */
#include "supervisor/targets.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define MAX_ITEMS 1024

typedef struct {
  guint lo, hi;
} Range;

struct NfTargets {
  gboolean all;
  GArray *ranges; /* of Range */
};

/* Spelled out rather than G_DEFINE_QUARK(a-b-c, ...): clang-format
 * reads the dashes as operators and the quark string would change. */
GQuark nf_targets_error_quark(void)
{
  return g_quark_from_static_string("nf-targets-error-quark");
}

static gboolean parse_id(const char *text, gsize len, guint *out);
static gint cmp_uint(gconstpointer a, gconstpointer b);

/* One id: decimal digits, optionally prefixed "vm-"; 1..NF_TARGETS_MAX_ID. */
static gboolean parse_id(const char *text, gsize len, guint *out)
{
  if (len > 3 && strncmp(text, "vm-", 3) == 0) {
    text += 3;
    len -= 3;
  }
  if (len == 0 || len > 9)
    return FALSE;
  guint64 v = 0;
  for (gsize i = 0; i < len; i++) {
    if (!g_ascii_isdigit(text[i]))
      return FALSE;
    v = v * 10 + (guint64)(text[i] - '0');
  }
  if (v == 0 || v > NF_TARGETS_MAX_ID)
    return FALSE;
  *out = (guint)v;
  return TRUE;
}

NfTargets *nf_targets_parse(const char *text, GError **error)
{
  g_autoptr(GArray) ranges = g_array_new(FALSE, FALSE, sizeof(Range));
  if (text == NULL || !*text)
    goto bad;
  if (g_ascii_strcasecmp(text, "all") == 0) {
    NfTargets *t = g_new0(NfTargets, 1);
    t->all = TRUE;
    t->ranges = g_steal_pointer(&ranges);
    return t;
  }
  for (const char *p = text;;) {
    const char *comma = strchr(p, ',');
    gsize len = comma ? (gsize)(comma - p) : strlen(p);
    const char *dash = memchr(p, '-', len);
    /* "vm-0003" holds a dash that is not a range. */
    if (dash && dash - p == 2 && strncmp(p, "vm-", 3) == 0)
      dash = memchr(dash + 1, '-', len - 3);
    Range r;
    if (dash) {
      if (!parse_id(p, (gsize)(dash - p), &r.lo) ||
          !parse_id(dash + 1, len - (gsize)(dash - p) - 1, &r.hi) || r.hi < r.lo)
        goto bad;
    } else {
      if (!parse_id(p, len, &r.lo))
        goto bad;
      r.hi = r.lo;
    }
    if (ranges->len >= MAX_ITEMS)
      goto bad;
    g_array_append_val(ranges, r);
    if (!comma)
      break;
    p = comma + 1;
  }
  NfTargets *t = g_new0(NfTargets, 1);
  t->ranges = g_steal_pointer(&ranges);
  return t;

bad:
  g_set_error(error, NF_TARGETS_ERROR, NF_TARGETS_ERROR_SYNTAX,
              "bad TARGET '%s': expected an id (3), a range (3-17), a list (1,4,7-9) or 'all'",
              text ? text : "");
  return NULL;
}

void nf_targets_free(NfTargets *t)
{
  if (!t)
    return;
  g_array_unref(t->ranges);
  g_free(t);
}

gboolean nf_targets_is_all(const NfTargets *t)
{
  return t->all;
}

gboolean nf_targets_contains(const NfTargets *t, guint id)
{
  if (t->all)
    return TRUE;
  for (guint i = 0; i < t->ranges->len; i++) {
    const Range *r = &g_array_index(t->ranges, Range, i);
    if (id >= r->lo && id <= r->hi)
      return TRUE;
  }
  return FALSE;
}

static gint cmp_uint(gconstpointer a, gconstpointer b)
{
  guint x = *(const guint *)a, y = *(const guint *)b;
  return x < y ? -1 : x > y;
}

/* The first index of `sorted` (n unique ids) whose id is >= `id`. */
static gsize lower_bound(const guint *sorted, gsize n, guint64 id)
{
  gsize lo = 0, hi = n;
  while (lo < hi) {
    gsize mid = lo + (hi - lo) / 2;
    if (sorted[mid] < id)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

/* The last index of the run of consecutive ids that starts at index k
 * (sorted[k], sorted[k]+1, ...): where sorted[m] - m stops being equal. */
static gsize run_end(const guint *sorted, gsize n, gsize k)
{
  gsize lo = k, hi = n - 1;
  while (lo < hi) {
    gsize mid = lo + (hi - lo + 1) / 2;
    if (sorted[mid] - mid == sorted[k] - k)
      lo = mid;
    else
      hi = mid - 1;
  }
  return lo;
}

gboolean nf_targets_check(const NfTargets *t, const guint *present, gsize n, GError **error)
{
  if (t->all)
    return TRUE;
  g_autofree guint *sorted = g_memdup2(present, n * sizeof(guint));
  if (n)
    qsort(sorted, n, sizeof(guint), cmp_uint);
  gsize u = 0; /* unique */
  for (gsize i = 0; i < n; i++)
    if (u == 0 || sorted[i] != sorted[u - 1])
      sorted[u++] = sorted[i];
  n = u;
  g_autoptr(GString) missing = g_string_new(NULL);
  guint64 nmissing = 0;
  guint shown = 0;
  /* Counted with two binary searches a range, and only the first five
   * missing ids looked for, jumping over runs of present ones: a request
   * of 1,024 huge ranges costs microseconds, wherever the fleet's ids are. */
  for (guint i = 0; i < t->ranges->len; i++) {
    const Range *r = &g_array_index(t->ranges, Range, i);
    gsize first = lower_bound(sorted, n, r->lo), after = lower_bound(sorted, n, (guint64)r->hi + 1);
    nmissing += (guint64)r->hi - r->lo + 1 - (after - first);
    guint64 id = r->lo;
    for (gsize k = first; shown < 5 && id <= r->hi;) {
      if (k < after && sorted[k] == id) {
        gsize m = run_end(sorted, after, k);
        id = (guint64)sorted[m] + 1;
        k = m + 1;
      } else {
        g_string_append_printf(missing, "%s%u", shown ? ", " : "", (guint)id);
        shown++;
        id++;
      }
    }
  }
  if (nmissing == 0)
    return TRUE;
  if (nmissing > 5)
    g_string_append_printf(missing, " (and %" G_GUINT64_FORMAT " more)", nmissing - 5);
  g_set_error(error, NF_TARGETS_ERROR, NF_TARGETS_ERROR_MISSING, "no guest %s in this fleet",
              missing->str);
  return FALSE;
}

char *nf_targets_to_string(const NfTargets *t)
{
  if (t->all)
    return g_strdup("all");
  GString *s = g_string_new(NULL);
  for (guint i = 0; i < t->ranges->len; i++) {
    const Range *r = &g_array_index(t->ranges, Range, i);
    if (i)
      g_string_append_c(s, ',');
    if (r->lo == r->hi)
      g_string_append_printf(s, "%u", r->lo);
    else
      g_string_append_printf(s, "%u-%u", r->lo, r->hi);
  }
  return g_string_free(s, FALSE);
}
