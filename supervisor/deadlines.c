/*
 * deadlines.c: one-shot timers in a tree under one source (see
 * deadlines.h for why not one GLib timeout each).
 *
 * Entries are ordered by (due time, id), so equal due times fire in the
 * order they were added, as GLib timeouts of equal length do. The source's
 * ready time is the earliest due time; dispatch fires everything due, each
 * entry unlinked before its callback runs, so a callback may add or remove
 * deadlines (its own included) freely.
 */
#include "supervisor/deadlines.h"

typedef struct {
  gint64 due_us;
  guint id;
  GSourceFunc func;
  gpointer data;
} Entry;

typedef struct {
  GSource *source;
  GTree *by_due;       /* Entry* -> Entry*, ordered by (due_us, id) */
  GHashTable *entries; /* id -> Entry* (owned) */
  guint next_id;
  gint64 armed_us; /* the source's ready time, as last set */
} Deadlines;

static Deadlines *deadlines;

static gint entry_cmp(gconstpointer a, gconstpointer b, gpointer unused);
static gboolean dispatch_cb(GSource *source, GSourceFunc unused, gpointer data);
static void rearm(Deadlines *d);
static Deadlines *get(void);

static GSourceFuncs deadline_source_funcs = {NULL, NULL, dispatch_cb, NULL, NULL, NULL};

static gint entry_cmp(gconstpointer a, gconstpointer b, gpointer unused)
{
  const Entry *x = a, *y = b;
  if (x->due_us != y->due_us)
    return x->due_us < y->due_us ? -1 : 1;
  return x->id < y->id ? -1 : x->id > y->id;
}

static Deadlines *get(void)
{
  if (deadlines)
    return deadlines;
  deadlines = g_new0(Deadlines, 1);
  deadlines->by_due = g_tree_new_full(entry_cmp, NULL, NULL, NULL);
  deadlines->entries = g_hash_table_new_full(NULL, NULL, NULL, g_free);
  deadlines->source = g_source_new(&deadline_source_funcs, sizeof(GSource));
  g_source_set_static_name(deadlines->source, "nf-deadlines");
  g_source_set_callback(deadlines->source, NULL, deadlines, NULL);
  deadlines->armed_us = -1;
  g_source_set_ready_time(deadlines->source, -1);
  g_source_attach(deadlines->source, NULL);
  return deadlines;
}

static void rearm(Deadlines *d)
{
  /* Only when the earliest changes: each call wakes the GLib loop (an
   * eventfd write), and most adds and removes are not the earliest. */
  GTreeNode *first = g_tree_node_first(d->by_due);
  gint64 due = first ? ((Entry *)g_tree_node_key(first))->due_us : -1;
  if (due == d->armed_us)
    return;
  d->armed_us = due;
  g_source_set_ready_time(d->source, due);
}

guint nf_deadline_add(guint ms, GSourceFunc func, gpointer data)
{
  Deadlines *d = get();
  Entry *e = g_new0(Entry, 1);
  e->id = ++d->next_id ? d->next_id : ++d->next_id;
  e->due_us = g_get_monotonic_time() + (gint64)ms * 1000;
  e->func = func;
  e->data = data;
  g_hash_table_insert(d->entries, GUINT_TO_POINTER(e->id), e);
  g_tree_insert(d->by_due, e, e);
  rearm(d);
  return e->id;
}

void nf_deadline_remove(guint id)
{
  Deadlines *d = deadlines;
  if (d == NULL || id == 0)
    return;
  Entry *e = g_hash_table_lookup(d->entries, GUINT_TO_POINTER(id));
  if (e == NULL)
    return;
  g_tree_remove(d->by_due, e);
  g_hash_table_remove(d->entries, GUINT_TO_POINTER(id)); /* frees e */
  rearm(d);
}

static gboolean dispatch_cb(GSource *source, GSourceFunc unused, gpointer data)
{
  Deadlines *d = data;
  gint64 now = g_source_get_time(source);
  GTreeNode *first;
  while ((first = g_tree_node_first(d->by_due)) != NULL) {
    Entry *e = g_tree_node_key(first);
    if (e->due_us > now)
      break;
    GSourceFunc func = e->func;
    gpointer arg = e->data;
    g_tree_remove(d->by_due, e);
    g_hash_table_remove(d->entries, GUINT_TO_POINTER(e->id)); /* frees e */
    func(arg);
  }
  rearm(d);
  return G_SOURCE_CONTINUE;
}
