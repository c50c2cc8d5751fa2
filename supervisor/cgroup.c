/*
 * cgroup.c: per-guest memory cgroups (see cgroup.h).
 */
#include "supervisor/cgroup.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <glib/gstdio.h>

struct NfCgroup {
  char *dir;
  gboolean v2;
};

static char *own_cgroup_path(const char *controller_tag);
static gboolean write_file(const char *dir, const char *file, const char *value, GError **error);
static char *own_memory_cgroup(gboolean *v2);
static char *find_own_memory_cgroup(gboolean *v2);

/* Our cgroup path from /proc/self/cgroup: the line whose controller list is
 * `tag` ("" for the v2 line "0::/path"). */
static char *own_cgroup_path(const char *tag)
{
  g_autofree char *text = NULL;
  if (!g_file_get_contents("/proc/self/cgroup", &text, NULL, NULL))
    return NULL;
  g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
  for (char **l = lines; *l; l++) {
    g_auto(GStrv) f = g_strsplit(*l, ":", 3);
    if (g_strv_length(f) != 3)
      continue;
    g_auto(GStrv) controllers = g_strsplit(f[1], ",", -1);
    if (*tag == '\0' ? (strcmp(f[0], "0") == 0 && f[1][0] == '\0')
                     : g_strv_contains((const char *const *)controllers, tag))
      return g_strdup(f[2]);
  }
  return NULL;
}

static gboolean write_file(const char *dir, const char *file, const char *value, GError **error)
{
  g_autofree char *path = g_build_filename(dir, file, NULL);
  FILE *f = fopen(path, "we");
  if (f == NULL || fputs(value, f) < 0 || fclose(f) != 0) {
    int e = errno;
    g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(e), "cannot write %s: %s", path,
                g_strerror(e));
    return FALSE;
  }
  return TRUE;
}

/* The memory cgroup we live in, where guests' cgroups go; NULL if none.
 * Found once: the fleet's last sweep may run when no fd is left to read
 * /proc/self/cgroup with (a supervisor held at its open-file limit, as
 * test-exhaustion does), and then left the fleet's cgroup behind. */
static char *own_memory_cgroup(gboolean *v2)
{
  static gsize found;
  static char *base;
  static gboolean base_v2;
  if (g_once_init_enter(&found)) {
    base = find_own_memory_cgroup(&base_v2);
    g_once_init_leave(&found, 1);
  }
  *v2 = base_v2;
  return g_strdup(base);
}

static char *find_own_memory_cgroup(gboolean *v2)
{
  g_autofree char *v1_path = own_cgroup_path("memory");
  g_autofree char *v2_path = own_cgroup_path("");
  *v2 = FALSE;
  if (v1_path && g_file_test("/sys/fs/cgroup/memory/memory.limit_in_bytes", G_FILE_TEST_EXISTS))
    return g_build_filename("/sys/fs/cgroup/memory", v1_path, NULL);
  if (v2_path) {
    g_autofree char *controllers = NULL;
    g_file_get_contents("/sys/fs/cgroup/cgroup.controllers", &controllers, NULL, NULL);
    if (controllers && strstr(controllers, "memory")) {
      *v2 = TRUE;
      return g_build_filename("/sys/fs/cgroup", v2_path, NULL);
    }
  }
  return NULL;
}

void nf_cgroup_sweep(const char *fleet)
{
  gboolean v2;
  g_autofree char *base = own_memory_cgroup(&v2);
  if (base == NULL)
    return;
  g_autofree char *name = g_strdup_printf("nervesfleet-%s", fleet);
  g_autofree char *parent = g_build_filename(base, name, NULL);
  g_autoptr(GDir) dir = g_dir_open(parent, 0, NULL);
  const char *entry;
  while (dir && (entry = g_dir_read_name(dir)) != NULL) {
    if (!g_str_has_prefix(entry, "vm-"))
      continue;
    g_autofree char *child = g_build_filename(parent, entry, NULL);
    g_rmdir(child); /* fails, as it should, while a guest lives in it */
  }
  g_rmdir(parent);
}

NfCgroup *nf_cgroup_new(const char *fleet, const char *guest, guint64 limit_mib, GError **error)
{
  g_autofree char *fleet_dir_name = g_strdup_printf("nervesfleet-%s", fleet);
  gboolean v2 = FALSE;
  g_autofree char *base = own_memory_cgroup(&v2);
  if (base == NULL || access(base, W_OK) != 0) {
    g_set_error(error, G_FILE_ERROR, G_FILE_ERROR_NOENT,
                "no writable memory cgroup (need root and the memory controller)");
    return NULL;
  }
  g_autofree char *parent = g_build_filename(base, fleet_dir_name, NULL);
  g_autofree char *dir = g_build_filename(parent, guest, NULL);
  if (g_mkdir_with_parents(dir, 0755) != 0) {
    int e = errno;
    g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(e), "cannot create cgroup %s: %s", dir,
                g_strerror(e));
    return NULL;
  }
  /* v2 delegates the controller level by level; failing here means no limit
   * but still an oom_kill count. */
  if (v2) {
    write_file(base, "cgroup.subtree_control", "+memory", NULL);
    write_file(parent, "cgroup.subtree_control", "+memory", NULL);
  }
  NfCgroup *cg = g_new0(NfCgroup, 1);
  cg->dir = g_steal_pointer(&dir);
  cg->v2 = v2;
  if (limit_mib) {
    g_autofree char *bytes = g_strdup_printf("%" G_GUINT64_FORMAT, limit_mib * 1024 * 1024);
    if (!write_file(cg->dir, v2 ? "memory.max" : "memory.limit_in_bytes", bytes, error)) {
      nf_cgroup_free(cg);
      return NULL;
    }
  }
  return cg;
}

gboolean nf_cgroup_add_pid(NfCgroup *cg, GPid pid, GError **error)
{
  g_autofree char *s = g_strdup_printf("%d", (int)pid);
  return write_file(cg->dir, "cgroup.procs", s, error);
}

guint64 nf_cgroup_oom_kills(NfCgroup *cg)
{
  g_autofree char *path =
      g_build_filename(cg->dir, cg->v2 ? "memory.events" : "memory.oom_control", NULL);
  g_autofree char *text = NULL;
  if (!g_file_get_contents(path, &text, NULL, NULL))
    return 0;
  const char *p = strstr(text, "oom_kill ");
  return p ? g_ascii_strtoull(p + strlen("oom_kill "), NULL, 10) : 0;
}

void nf_cgroup_free(NfCgroup *cg)
{
  if (cg == NULL)
    return;
  /* Not the fleet's parent: trying it at each guest's end made the kernel
   * walk the parent's other children every time (css_has_online_children),
   * a fifth of the supervisor's CPU while stopping 4,000 guests and
   * quadratic in the fleet. nf_cgroup_sweep removes it at the fleet's end. */
  g_rmdir(cg->dir);
  nf_cgroup_forget(cg);
}

void nf_cgroup_forget(NfCgroup *cg)
{
  if (cg == NULL)
    return;
  g_free(cg->dir);
  g_free(cg);
}
