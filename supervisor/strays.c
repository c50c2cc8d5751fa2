/*
 * strays.c: finding a fleet's guests on the host from its files and from
 * /proc, and stopping those beyond its ids (see strays.h).
 */
#include "supervisor/strays.h"
#include "supervisor/process.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <jansson.h>

static gboolean parse_guest_name(const char *name, const char *suffix, guint *id);
static int cmp_uint(gconstpointer a, gconstpointer b);

/* "vm-NNNN<suffix>" -> NNNN; FALSE for anything else. */
static gboolean parse_guest_name(const char *name, const char *suffix, guint *id)
{
  if (!g_str_has_prefix(name, "vm-") || !g_ascii_isdigit(name[3]))
    return FALSE;
  char *end = NULL;
  guint64 v = g_ascii_strtoull(name + 3, &end, 10);
  if (v == 0 || v > G_MAXUINT || strcmp(end, suffix) != 0)
    return FALSE;
  *id = (guint)v;
  return TRUE;
}

static int cmp_uint(gconstpointer a, gconstpointer b)
{
  guint x = *(const guint *)a, y = *(const guint *)b;
  return x < y ? -1 : x > y;
}

GArray *nf_strays_ids(const NfFleetPaths *paths)
{
  GArray *ids = g_array_new(FALSE, FALSE, sizeof(guint));
  const char *name;
  guint id;
  g_autoptr(GDir) run = g_dir_open(paths->runtime_dir, 0, NULL);
  while (run && (name = g_dir_read_name(run)) != NULL)
    if (parse_guest_name(name, ".pid", &id))
      g_array_append_val(ids, id);
  g_autoptr(GDir) state = g_dir_open(paths->state_dir, 0, NULL);
  while (state && (name = g_dir_read_name(state)) != NULL) {
    if (!parse_guest_name(name, "", &id))
      continue;
    g_autofree char *path = g_build_filename(paths->state_dir, name, "status.json", NULL);
    json_auto_t *status = json_load_file(path, 0, NULL);
    const char *s = json_string_value(json_object_get(status, "state"));
    static const char *const up[] = {"starting", "booting", "ready", "unhealthy", "stopping", NULL};
    if (s && g_strv_contains(up, s))
      g_array_append_val(ids, id);
  }
  g_array_sort(ids, cmp_uint);
  for (guint i = 1; i < ids->len;)
    if (g_array_index(ids, guint, i) == g_array_index(ids, guint, i - 1))
      g_array_remove_index(ids, i);
    else
      i++;
  return ids;
}

GArray *nf_strays_processes(const char *runtime_dir)
{
  GArray *found = g_array_new(FALSE, FALSE, sizeof(NfStrayProcess));
  g_autofree char *prefix = g_build_filename(runtime_dir, "vm-", NULL);
  g_autoptr(GDir) proc = g_dir_open("/proc", 0, NULL);
  const char *name;
  GPid self = getpid();
  while (proc && (name = g_dir_read_name(proc)) != NULL) {
    if (!g_ascii_isdigit(name[0]))
      continue;
    GPid pid = (GPid)atoi(name);
    if (pid == self)
      continue;
    char path[64];
    g_snprintf(path, sizeof(path), "/proc/%s/cmdline", name);
    g_autofree char *cmd = NULL;
    gsize len = 0;
    if (!g_file_get_contents(path, &cmd, &len, NULL))
      continue;
    /* Arguments are NUL-separated: look for "-pidfile" followed by ours. */
    for (gsize off = 0; off < len; off += strlen(cmd + off) + 1) {
      const char *arg = cmd + off;
      gsize next = off + strlen(arg) + 1;
      guint id;
      if (strcmp(arg, "-pidfile") != 0 || next >= len || !g_str_has_prefix(cmd + next, prefix))
        continue;
      g_autofree char *base = g_path_get_basename(cmd + next);
      g_autofree char *dir = g_path_get_dirname(cmd + next);
      if (strcmp(dir, runtime_dir) == 0 && parse_guest_name(base, ".pid", &id)) {
        NfStrayProcess sp = {.id = id, .pid = pid, .ppid = (GPid)nf_process_stat_field(pid, 4)};
        g_array_append_val(found, sp);
      }
      break;
    }
  }
  return found;
}

struct NfStrayGuests {
  GPtrArray *vms; /* NfVm*, stopping or down */
  NfStrayGuestsCallbacks cb;
  gpointer user_data;
  guint idle; /* frees the strays that are down */
};

static void changed_cb(NfVm *vm, NfVmState old_state, NfVmState new_state, const char *reason,
                       gpointer data);
static void vm_notice_cb(NfVm *vm, const char *message, gpointer data);
static gboolean idle_cb(gpointer data);
static gboolean pid_in(GArray *pids, GPid pid);

NfStrayGuests *nf_stray_guests_adopt(const NfVmEnv *env, guint first_id, guint last_id,
                                     const NfStrayGuestsCallbacks *callbacks, gpointer user_data)
{
  static const NfVmCallbacks vm_cb = {.state_changed = changed_cb, .notice = vm_notice_cb};
  NfStrayGuests *sg = g_new0(NfStrayGuests, 1);
  sg->vms = g_ptr_array_new_with_free_func((GDestroyNotify)nf_vm_free);
  sg->cb = *callbacks;
  sg->user_data = user_data;
  g_autoptr(GArray) ids = nf_strays_ids(env->paths);
  g_autoptr(GString) names = g_string_new(NULL);
  for (guint i = 0; i < ids->len; i++) {
    guint id = g_array_index(ids, guint, i);
    if (id >= first_id && id <= last_id)
      continue;
    NfVm *vm = nf_vm_new(id, env, &vm_cb, sg);
    g_ptr_array_add(sg->vms, vm);
    nf_vm_adopt(vm);
    if (nf_vm_is_running(vm))
      g_string_append_printf(names, "%s%s", names->len ? ", " : "", nf_vm_name(vm));
    /* Also a dead one (its exit was just recorded): its status says stopped. */
    if (nf_vm_state(vm) != NF_VM_CREATED)
      nf_vm_stop(vm, FALSE);
  }
  if (names->len && sg->cb.notice) {
    g_autofree char *msg = g_strdup_printf(
        "%s: left running by a previous supervisor of fleet '%s' but beyond the %u guests asked "
        "for; stopping %s",
        names->str, env->config->name, last_id - first_id + 1,
        strchr(names->str, ',') ? "them" : "it");
    sg->cb.notice(msg, sg->user_data);
  }
  sg->idle = g_idle_add(idle_cb, sg);
  return sg;
}

static void changed_cb(NfVm *vm, NfVmState old_state, NfVmState new_state, const char *reason,
                       gpointer data)
{
  NfStrayGuests *sg = data;
  if (new_state == NF_VM_STOPPED && old_state == NF_VM_STOPPING && sg->cb.notice) {
    g_autofree char *msg =
        g_strdup_printf("%s stopped (beyond this fleet's guests)", nf_vm_name(vm));
    sg->cb.notice(msg, sg->user_data);
  }
  /* Freed from an idle: the guest is inside its own callback here. */
  if (!nf_vm_is_running(vm) && sg->idle == 0)
    sg->idle = g_idle_add(idle_cb, sg);
}

static void vm_notice_cb(NfVm *vm, const char *message, gpointer data)
{
  NfStrayGuests *sg = data;
  if (sg->cb.vm_notice)
    sg->cb.vm_notice(vm, message, sg->user_data);
}

static gboolean idle_cb(gpointer data)
{
  NfStrayGuests *sg = data;
  sg->idle = 0;
  guint before = sg->vms->len;
  for (guint i = sg->vms->len; i-- > 0;)
    if (!nf_vm_is_running(g_ptr_array_index(sg->vms, i)))
      g_ptr_array_remove_index(sg->vms, i); /* frees it */
  if (before > 0 && sg->vms->len == 0 && sg->cb.all_down)
    sg->cb.all_down(sg->user_data);
  return G_SOURCE_REMOVE;
}

gboolean nf_stray_guests_running(const NfStrayGuests *sg, guint id)
{
  for (guint i = 0; i < sg->vms->len; i++) {
    NfVm *vm = g_ptr_array_index(sg->vms, i);
    if (nf_vm_id(vm) == id && nf_vm_is_running(vm))
      return TRUE;
  }
  return FALSE;
}

gboolean nf_stray_guests_any_running(const NfStrayGuests *sg)
{
  for (guint i = 0; i < sg->vms->len; i++)
    if (nf_vm_is_running(g_ptr_array_index(sg->vms, i)))
      return TRUE;
  return FALSE;
}

void nf_stray_guests_stop(NfStrayGuests *sg, gboolean force)
{
  for (guint i = 0; i < sg->vms->len; i++)
    nf_vm_stop(g_ptr_array_index(sg->vms, i), force);
}

static gboolean pid_in(GArray *pids, GPid pid)
{
  for (guint i = 0; i < pids->len; i++)
    if (g_array_index(pids, GPid, i) == pid)
      return TRUE;
  return FALSE;
}

guint nf_stray_guests_kill_unowned(const NfStrayGuests *sg, const char *runtime_dir, GArray *pids)
{
  g_autoptr(GArray) ours = g_array_copy(pids);
  for (guint i = 0; i < sg->vms->len; i++) {
    GPid pid = nf_vm_pid(g_ptr_array_index(sg->vms, i));
    if (pid)
      g_array_append_val(ours, pid);
  }
  g_autoptr(GArray) found = nf_strays_processes(runtime_dir);
  g_autoptr(GArray) parents = g_array_new(FALSE, FALSE, sizeof(GPid));
  for (guint i = 0; i < found->len; i++) {
    NfStrayProcess *sp = &g_array_index(found, NfStrayProcess, i);
    if (pid_in(ours, sp->pid))
      g_array_append_val(parents, sp->ppid);
  }
  guint killed = 0;
  for (guint i = 0; i < found->len; i++) {
    NfStrayProcess *sp = &g_array_index(found, NfStrayProcess, i);
    if (pid_in(ours, sp->pid) || pid_in(ours, sp->ppid) || pid_in(parents, sp->pid))
      continue;
    if (kill(sp->pid, SIGKILL) == 0)
      killed++;
  }
  return killed;
}

void nf_stray_guests_detach(NfStrayGuests *sg)
{
  for (guint i = 0; i < sg->vms->len; i++)
    nf_vm_detach(g_ptr_array_index(sg->vms, i));
}

void nf_stray_guests_free(NfStrayGuests *sg)
{
  if (sg == NULL)
    return;
  if (sg->idle)
    g_source_remove(sg->idle);
  g_ptr_array_unref(sg->vms); /* kills what still runs, unless detached */
  g_free(sg);
}
