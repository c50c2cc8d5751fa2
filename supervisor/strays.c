/*
 * strays.c: finding a fleet's guests on the host from its files and from
 * /proc (see strays.h).
 */
#include "supervisor/strays.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <jansson.h>

static gboolean parse_guest_name(const char *name, const char *suffix, guint *id);
static int cmp_uint(gconstpointer a, gconstpointer b);
static GPid read_ppid(GPid pid);

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

static GPid read_ppid(GPid pid)
{
  char path[64];
  g_snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
  g_autofree char *text = NULL;
  if (!g_file_get_contents(path, &text, NULL, NULL))
    return 0;
  /* "pid (comm) state ppid ...": comm may hold spaces and parentheses. */
  const char *p = strrchr(text, ')');
  return p ? (GPid)atoi(p + 4) : 0;
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
        NfStrayProcess sp = {.id = id, .pid = pid, .ppid = read_ppid(pid)};
        g_array_append_val(found, sp);
      }
      break;
    }
  }
  return found;
}
