/*
 * log-mux.c: several guests' console output on one framed stream (see
 * log-mux.h).
 */
#include "supervisor/log-mux.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "supervisor/command.h" /* nf_commands_log_document */

typedef struct {
  NfVm *vm;
  guint id; /* its nf_vm_console_watch id */
} Watch;

struct NfLogMux {
  NfFleet *fleet;
  NfTargets *targets;
  GHashTable *watches; /* guest id -> Watch (the guest, until it goes: vm.h) */
  NfLogMuxSink sink;
  gpointer user_data;
  guint listener_id;
};

/* One frame out; the caller touches the mux no more (see log-mux.h). */
static void emit(NfLogMux *m, const char *kind, guint id, const char *body, gsize len)
{
  char head[64];
  int n = g_snprintf(head, sizeof(head), "%s %u %" G_GSIZE_FORMAT "\n", kind, id, len);
  struct iovec parts[] = {{.iov_base = head, .iov_len = (size_t)n},
                          {.iov_base = (void *)body, .iov_len = len}};
  m->sink(parts, len ? 2 : 1, m->user_data);
}

static void output_cb(NfVm *vm, const char *buf, gsize len, gpointer data)
{
  NfLogMux *m = data;
  guint id = nf_vm_id(vm);
  if (buf == NULL) {
    Watch *w = g_hash_table_lookup(m->watches, GUINT_TO_POINTER(id));
    if (w == NULL || w->vm != vm)
      return; /* not the guest of that id we follow */
    g_hash_table_remove(m->watches, GUINT_TO_POINTER(id));
    emit(m, "leave", id, NULL, 0);
  } else if (len > 0) {
    emit(m, "out", id, buf, len);
  }
}

static void vm_changed_cb(NfFleet *fleet, NfVm *vm, NfVmState old_state, const char *reason,
                          gpointer data);

static void watch(NfLogMux *m, NfVm *vm)
{
  g_autofree char *tail = NULL; /* no replay: the document's range came first */
  Watch *w = g_new(Watch, 1);
  w->vm = vm;
  w->id = nf_vm_console_watch(vm, 0, &tail, output_cb, m);
  g_hash_table_insert(m->watches, GUINT_TO_POINTER(nf_vm_id(vm)), w);
}

NfLogMux *nf_log_mux_new(NfFleet *fleet, GPtrArray *vms, NfTargets *targets, NfLogMuxSink sink,
                         gpointer user_data)
{
  NfLogMux *m = g_new0(NfLogMux, 1);
  m->fleet = fleet;
  m->targets = targets;
  m->watches = g_hash_table_new_full(NULL, NULL, NULL, g_free);
  m->sink = sink;
  m->user_data = user_data;
  for (guint i = 0; i < vms->len; i++)
    watch(m, vms->pdata[i]);
  m->listener_id =
      nf_fleet_add_listener(fleet, &(NfFleetCallbacks){.vm_changed = vm_changed_cb}, m);
  return m;
}

/* A guest changed state: one named by the targets and not yet followed
 * (it just joined) is followed from now. */
static void vm_changed_cb(NfFleet *fleet, NfVm *vm, NfVmState old_state, const char *reason,
                          gpointer data)
{
  NfLogMux *m = data;
  guint id = nf_vm_id(vm);
  if (!nf_targets_contains(m->targets, id) ||
      g_hash_table_contains(m->watches, GUINT_TO_POINTER(id)))
    return;
  /* No history: what the guest prints from its joining on is its part. */
  gint64 at = nf_vm_console_watch_start(vm);
  json_t *doc = nf_commands_log_document(vm, at, at, NULL);
  char *text = json_dumps(doc, JSON_COMPACT);
  json_decref(doc);
  watch(m, vm);
  if (text)
    emit(m, "join", id, text, strlen(text));
  free(text);
}

guint nf_log_mux_size(const NfLogMux *m)
{
  return g_hash_table_size(m->watches);
}

void nf_log_mux_free(NfLogMux *m)
{
  if (m == NULL)
    return;
  nf_fleet_remove_listener(m->fleet, m->listener_id);
  GHashTableIter it;
  gpointer w;
  g_hash_table_iter_init(&it, m->watches);
  while (g_hash_table_iter_next(&it, NULL, &w))
    nf_vm_console_unwatch(((Watch *)w)->vm, ((Watch *)w)->id);
  g_hash_table_unref(m->watches);
  nf_targets_free(m->targets);
  g_free(m);
}
