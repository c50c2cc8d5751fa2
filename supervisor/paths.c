/*
 * paths.c: fleet directory layout and socket path checks (see paths.h).
 */
#include "supervisor/paths.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>
#include <glib/gstdio.h>

/* Spelled out rather than G_DEFINE_QUARK(a-b-c, ...): clang-format
 * reads the dashes as operators and the quark string would change. */
GQuark nf_paths_error_quark(void)
{
  return g_quark_from_static_string("nf-paths-error-quark");
}

static gboolean name_ok(const char *name);

static gboolean name_ok(const char *name)
{
  gsize n = strlen(name);
  if (n == 0 || n > 64 || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
    return FALSE;
  for (const char *c = name; *c; c++)
    if (!g_ascii_isalnum(*c) && *c != '-' && *c != '_' && *c != '.')
      return FALSE;
  return TRUE;
}

gboolean nf_paths_resolve(NfFleetPaths *paths, const char *name, const char *runtime_override,
                          const char *state_override, GError **error)
{
  if (!name_ok(name)) {
    g_set_error(error, NF_PATHS_ERROR, NF_PATHS_ERROR_NAME,
                "--name '%s': a fleet name is 1-64 letters, digits, '-', '_' or '.'", name);
    return FALSE;
  }
  if (runtime_override) {
    paths->runtime_dir = g_canonicalize_filename(runtime_override, NULL);
  } else {
    const char *xdg = g_getenv("XDG_RUNTIME_DIR");
    if (xdg && *xdg)
      paths->runtime_dir = g_build_filename(xdg, "nervesfleet", name, NULL);
    else if (getuid() == 0)
      paths->runtime_dir = g_build_filename("/run/nervesfleet", name, NULL);
    else {
      g_autofree char *base = g_strdup_printf("/tmp/nervesfleet-%u", (unsigned)getuid());
      paths->runtime_dir = g_build_filename(base, name, NULL);
    }
  }
  if (state_override) {
    paths->state_dir = g_canonicalize_filename(state_override, NULL);
  } else {
    const char *xdg = g_getenv("XDG_STATE_HOME");
    if (xdg && *xdg)
      paths->state_dir = g_build_filename(xdg, "nervesfleet", name, NULL);
    else
      paths->state_dir =
          g_build_filename(g_get_home_dir(), ".local", "state", "nervesfleet", name, NULL);
  }
  return TRUE;
}

void nf_paths_clear(NfFleetPaths *paths)
{
  g_clear_pointer(&paths->runtime_dir, g_free);
  g_clear_pointer(&paths->state_dir, g_free);
}

gboolean nf_paths_ensure_dir(const char *dir, int mode, const char *flag, GError **error)
{
  if (g_mkdir_with_parents(dir, mode) != 0) {
    int e = errno;
    g_set_error(error, NF_PATHS_ERROR, NF_PATHS_ERROR_CREATE,
                "cannot create directory %s: %s; choose another with %s", dir, g_strerror(e), flag);
    return FALSE;
  }
  /* mkdir -p leaves an existing dir's mode alone; ours must stay private. */
  if (mode == 0700 && g_chmod(dir, 0700) != 0) {
    int e = errno;
    g_set_error(error, NF_PATHS_ERROR, NF_PATHS_ERROR_CREATE, "cannot chmod %s: %s; use %s", dir,
                g_strerror(e), flag);
    return FALSE;
  }
  if (access(dir, W_OK | X_OK) != 0) {
    int e = errno;
    g_set_error(error, NF_PATHS_ERROR, NF_PATHS_ERROR_CREATE,
                "directory %s is not writable: %s; choose another with %s", dir, g_strerror(e),
                flag);
    return FALSE;
  }
  return TRUE;
}

gboolean nf_paths_check_socket(const char *path, GError **error)
{
  struct sockaddr_un sun;
  gsize len = strlen(path);
  if (len > sizeof(sun.sun_path) - 1) {
    g_set_error(error, NF_PATHS_ERROR, NF_PATHS_ERROR_TOO_LONG,
                "socket path %s is %zu bytes, longer than the %zu a unix socket allows; "
                "use a shorter --runtime-dir or --name",
                path, len, sizeof(sun.sun_path) - 1);
    return FALSE;
  }
  return TRUE;
}

char *nf_paths_guest_name(guint id)
{
  return g_strdup_printf("vm-%04u", id);
}

char *nf_paths_guest_state_dir(const NfFleetPaths *p, guint id)
{
  g_autofree char *name = nf_paths_guest_name(id);
  return g_build_filename(p->state_dir, name, NULL);
}

char *nf_paths_guest_runtime(const NfFleetPaths *p, guint id, const char *suffix)
{
  g_autofree char *file = g_strdup_printf("vm-%04u.%s", id, suffix);
  return g_build_filename(p->runtime_dir, file, NULL);
}

void nf_paths_guest_files(const NfFleetPaths *p, guint id, NfGuestFiles *files)
{
  g_autofree char *dir = nf_paths_guest_state_dir(p, id);
  char *parts[] = {
      g_strdup(dir),
      g_build_filename(dir, "qemu.log", NULL),
      g_build_filename(dir, "console.log", NULL),
      g_build_filename(dir, "status.json", NULL),
      nf_paths_guest_runtime(p, id, "pid"),
      nf_paths_guest_runtime(p, id, "ctl"),
      nf_paths_guest_runtime(p, id, "qmp"),
      nf_paths_guest_runtime(p, id, "serial"),
  };
  const char **slots[G_N_ELEMENTS(parts)] = {
      &files->state_dir, &files->qemu_log, &files->console_log, &files->status_path,
      &files->pidfile,   &files->ctl_path, &files->qmp_path,    &files->serial_path,
  };
  gsize total = 0;
  for (guint i = 0; i < G_N_ELEMENTS(parts); i++)
    total += strlen(parts[i]) + 1;
  char *at = files->block = g_malloc(total);
  for (guint i = 0; i < G_N_ELEMENTS(parts); i++) {
    gsize len = strlen(parts[i]) + 1;
    memcpy(at, parts[i], len);
    *slots[i] = at;
    at += len;
    g_free(parts[i]);
  }
}

char *nf_paths_default_guest_dir(void)
{
  const char *env = g_getenv("NERVESFLEET_GUEST_DIR");
  if (env && *env)
    return g_strdup(env);
  const char *xdg = g_getenv("XDG_CACHE_HOME");
  if (xdg && *xdg)
    return g_build_filename(xdg, "nervesfleet", "guest", NULL);
  return g_build_filename(g_get_home_dir(), ".cache", "nervesfleet", "guest", NULL);
}

char *nf_paths_cgroup_name(const NfFleetPaths *p, const char *fleet)
{
  return g_strdup_printf("%s-%08x", fleet, g_str_hash(p->runtime_dir));
}

char *nf_paths_first_missing(const char *dir)
{
  g_autofree char *missing = NULL;
  g_autofree char *d = g_canonicalize_filename(dir, NULL);
  while (!g_file_test(d, G_FILE_TEST_EXISTS)) {
    g_free(missing);
    missing = g_strdup(d);
    char *parent = g_path_get_dirname(d);
    if (g_str_equal(parent, d)) {
      g_free(parent);
      break;
    }
    g_free(d);
    d = parent;
  }
  return g_steal_pointer(&missing);
}

void nf_paths_remove_empty_dirs(const char *dir, const char *top)
{
  if (top == NULL)
    return;
  g_autofree char *d = g_canonicalize_filename(dir, NULL);
  /* Only dirs at or below `top`, and only empty ones (rmdir refuses
   * others); one already gone (the fleet removed it) is passed over. */
  while (g_str_has_prefix(d, top) && (g_rmdir(d) == 0 || errno == ENOENT) && !g_str_equal(d, top)) {
    char *parent = g_path_get_dirname(d);
    g_free(d);
    d = parent;
  }
}

gboolean nf_paths_probe_write(const char *dir, const char *flag, GError **error)
{
  g_autofree char *path = g_strdup_printf("%s/.nervesfleet-probe-%d", dir, (int)getpid());
  char block[4096];
  memset(block, '\n', sizeof(block));
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  int e = fd < 0 ? errno : 0;
  if (fd >= 0) {
    /* A whole block, flushed: a full filesystem fails here, not at the
     * first console line. */
    ssize_t n = write(fd, block, sizeof(block));
    if (n != (ssize_t)sizeof(block))
      e = n < 0 ? errno : ENOSPC;
    else if (fsync(fd) != 0)
      e = errno;
    close(fd);
    g_unlink(path);
  }
  if (e == 0)
    return TRUE;
  g_set_error(error, NF_PATHS_ERROR, NF_PATHS_ERROR_CREATE,
              "cannot write in %s: %s; %s, or choose another dir with %s", dir, g_strerror(e),
              e == ENOSPC || e == EDQUOT ? "free space on its filesystem"
              : e == EROFS               ? "it is on a read-only filesystem"
                                         : "check its permissions",
              flag);
  return FALSE;
}
