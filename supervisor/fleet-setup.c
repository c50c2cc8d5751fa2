/*
 * fleet-setup.c: what a fleet checks and claims before any guest exists:
 * its inputs (values, the qemu binary, guest files), its runtime and state
 * dirs, the fleet lock that makes one supervisor per fleet name, and an open
 * file limit big enough for its guests; and the fleet's error domain, since
 * most of its errors are made here. Apart from nf_fleet_new (fleet.c) so
 * that the fleet's core reads as orchestration; every failure here is one
 * clear error before anything runs (fleet.h). nf_fleet_scale (fleet-scale.c)
 * checks the open file limit again for the guests it adds.
 */
#include "supervisor/fleet-private.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <unistd.h>
#include <glib/gstdio.h>

#include "supervisor/disks.h"
#include "supervisor/identity.h"

#define NF_FLEET_FDS_PER_GUEST 1
#define NF_FLEET_FDS_SPARE 256 /* clients, spawning, libraries */

static gboolean check_file(const char *path, const char *what, const char *fix, GError **error);
static gboolean take_lock(NfFleet *fleet, GError **error);
static gboolean take_state_lock(NfFleet *fleet, GError **error);

/* Spelled out rather than G_DEFINE_QUARK(a-b-c, ...): clang-format
 * reads the dashes as operators and the quark string would change. */
GQuark nf_fleet_error_quark(void)
{
  return g_quark_from_static_string("nf-fleet-error-quark");
}

static gboolean check_file(const char *path, const char *what, const char *fix, GError **error)
{
  if (path == NULL || !g_file_test(path, G_FILE_TEST_IS_REGULAR) || access(path, R_OK) != 0) {
    g_set_error(
        error, NF_FLEET_ERROR, NF_FLEET_ERROR_INPUT, "%s %s %s; %s", what, path ? path : "(none)",
        path && g_file_test(path, G_FILE_TEST_EXISTS) ? "is not a readable file" : "does not exist",
        fix);
    return FALSE;
  }
  return TRUE;
}

gboolean nf_fleet_check_input(NfFleet *fleet, GError **error)
{
  const NfFleetConfig *config = fleet->config;
  if (config->count == 0) {
    g_set_error(error, NF_FLEET_ERROR, NF_FLEET_ERROR_INPUT,
                "the guest count must be a positive integer");
    return FALSE;
  }
  if (config->memory_mib < 16) {
    g_set_error(error, NF_FLEET_ERROR, NF_FLEET_ERROR_INPUT,
                "--memory %" G_GUINT64_FORMAT "M is too small; a guest needs at least 16M",
                config->memory_mib);
    return FALSE;
  }
  if (!nf_identity_validate_serial_format(config->serial_format, error)) {
    g_prefix_error(error, "--serial-format: ");
    return FALSE;
  }

  fleet->env.qemu_path = g_find_program_in_path(config->qemu);
  if (fleet->env.qemu_path == NULL) {
    g_set_error(error, NF_FLEET_ERROR, NF_FLEET_ERROR_INPUT,
                "%s not found%s; install it with `make deps` (Debian package "
                "qemu-system-arm) or pass --qemu PATH",
                config->qemu, strchr(config->qemu, '/') ? "" : " in PATH");
    return FALSE;
  }
  gboolean nerves = config->profile == NF_PROFILE_NERVES;
  if (!check_file(config->kernel, nerves ? "--loader" : "guest kernel",
                  nerves ? "pass the path of little_loader.elf"
                         : "build the default guest with `make guest`, or pass --kernel",
                  error) ||
      (config->initrd && !check_file(config->initrd, "guest initramfs",
                                     "build the default guest with `make guest`, or pass "
                                     "--initrd",
                                     error)))
    return FALSE;
  return TRUE;
}

gboolean nf_fleet_claim_dirs(NfFleet *fleet, GError **error)
{
  const NfFleetConfig *config = fleet->config;
  if (!nf_paths_resolve(&fleet->paths, config->name, config->runtime_dir, config->state_dir, error))
    return FALSE;
  /* The longest socket name this fleet will use, checked before anything runs. */
  guint last_id = config->id_offset + config->count;
  g_autofree char *longest = nf_paths_guest_runtime(&fleet->paths, MAX(last_id, 9999), "serial");
  if (!nf_paths_check_socket(longest, error))
    return FALSE;
  /* A fleet that cannot start leaves no dir it made behind. */
  fleet->made_runtime_dir = nf_paths_first_missing(fleet->paths.runtime_dir);
  fleet->made_state_dir = nf_paths_first_missing(fleet->paths.state_dir);
  if (!nf_paths_ensure_dir(fleet->paths.runtime_dir, 0700, "--runtime-dir", error) ||
      !nf_paths_ensure_dir(fleet->paths.state_dir, 0755, "--state-dir", error) ||
      !nf_paths_probe_write(fleet->paths.state_dir, "--state-dir", error))
    return FALSE;
  if (!take_lock(fleet, error) || !take_state_lock(fleet, error))
    return FALSE;
  /* Before any disk is made: a fleet refused for another's ids leaves none. */
  fleet->ids = nf_shard_claim(config, fleet->paths.runtime_dir, error);
  return fleet->ids != NULL;
}

/* Opens `path` (made if missing, `mode`) and takes it with flock, our pid
 * written in it (a hint for the next one's message). -1 with `error` when
 * it cannot be made (naming `flag`, the option that moves it); -1 with
 * *holder set (its pid as written, "?" if none) when another process holds
 * it. */
static int take_lock_file(const char *path, mode_t mode, const char *flag, char **holder,
                          GError **error)
{
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, mode);
  if (fd < 0) {
    int e = errno;
    g_set_error(error, NF_FLEET_ERROR, NF_FLEET_ERROR_INPUT,
                "cannot create %s: %s; choose another %s", path, g_strerror(e), flag);
    return -1;
  }
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    char pid[32] = "";
    ssize_t n = pread(fd, pid, sizeof(pid) - 1, 0);
    pid[n > 0 ? n : 0] = '\0';
    g_strchomp(pid);
    *holder = g_strdup(pid[0] ? pid : "?");
    close(fd);
    return -1;
  }
  g_autofree char *pid = g_strdup_printf("%d\n", (int)getpid());
  if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, strlen(pid), 0) < 0) {
    /* Only a hint for the message above: the lock is what counts. */
  }
  return fd;
}

/* The runtime dir's lock is per runtime dir, and the state dir does not
 * follow it: `run` from a login shell and from cron (no XDG_RUNTIME_DIR)
 * are two runtime dirs and one ~/.local/state/nervesfleet/NAME, two
 * supervisors on the same overlays and logs. The state dir is locked too.
 * Its lock file stays (the state dir does): removing a lock file races
 * with the next supervisor opening it. */
static gboolean take_state_lock(NfFleet *fleet, GError **error)
{
  g_autofree char *path = g_build_filename(fleet->paths.state_dir, NF_FLEET_STATE_LOCK, NULL);
  g_autofree char *holder = NULL;
  fleet->state_lock_fd = take_lock_file(path, 0644, "--state-dir", &holder, error);
  if (holder)
    g_set_error(error, NF_FLEET_ERROR, NF_FLEET_ERROR_BUSY,
                "fleet '%s' is already running from another runtime dir (supervisor pid %s, "
                "state dir %s; a different XDG_RUNTIME_DIR or --runtime-dir?); stop it first, "
                "or give this one another --name or --state-dir",
                fleet->config->name, holder, fleet->paths.state_dir);
  return fleet->state_lock_fd >= 0;
}

void nf_fleet_release_dirs(NfFleet *fleet)
{
  if (fleet->state_lock_fd >= 0) {
    if (!fleet->built && fleet->made_state_dir) {
      /* The dir is this failed start's to remove, lock and all (a `run`
       * that opened the file meanwhile finds it held and says so). */
      g_autofree char *path = g_build_filename(fleet->paths.state_dir, NF_FLEET_STATE_LOCK, NULL);
      g_unlink(path);
    }
    close(fleet->state_lock_fd);
    fleet->state_lock_fd = -1;
  }
  if (fleet->built)
    return;
  /* A state dir this start made holds nothing of anyone else's: its disks
   * (the base's record, overlays a failed preparation left) go too. */
  if (fleet->made_state_dir && fleet->env.disks)
    nf_disks_remove_all(fleet->env.disks);
  nf_paths_remove_empty_dirs(fleet->paths.runtime_dir, fleet->made_runtime_dir);
  nf_paths_remove_empty_dirs(fleet->paths.state_dir, fleet->made_state_dir);
}

int nf_fleet_keep_state_lock(NfFleet *fleet)
{
  int fd = fleet->state_lock_fd;
  fleet->state_lock_fd = -1;
  return fd;
}

static gboolean take_lock(NfFleet *fleet, GError **error)
{
  fleet->lock_path = g_build_filename(fleet->paths.runtime_dir, "fleet.lock", NULL);
  g_autofree char *holder = NULL;
  fleet->lock_fd = take_lock_file(fleet->lock_path, 0600, "--runtime-dir", &holder, error);
  if (holder) {
    g_set_error(error, NF_FLEET_ERROR, NF_FLEET_ERROR_BUSY,
                "fleet '%s' is already running (supervisor pid %s); stop it first or choose "
                "another --name",
                fleet->config->name, holder);
    g_clear_pointer(&fleet->lock_path, g_free); /* not ours to remove */
  }
  return fleet->lock_fd >= 0;
}

/* A running guest holds one fd of ours (its QMP socket); one booting or
 * watched also its console socket (vm-console.c), one exiting its pidfd for
 * a moment (vm.c); the console log is written by qemu. Thousands of guests
 * need more than the usual soft limit of 1024. Raises the soft limit as far
 * as allowed and fails, naming the numbers and the fix, when `guests` cannot
 * fit with a full boot window (up to twice the batch when adaptive). */
gboolean nf_fleet_ensure_fd_limit(NfFleet *fleet, guint guests, GError **error)
{
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
    return TRUE;
  guint batch = fleet->config->batch ? fleet->config->batch : 2 * nf_limiter_batch(fleet->limiter);
  rlim_t window = MIN((rlim_t)guests, (rlim_t)batch);
  rlim_t need = (rlim_t)guests * NF_FLEET_FDS_PER_GUEST + window + NF_FLEET_FDS_SPARE;
  if (rl.rlim_cur < need && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = MIN(rl.rlim_max, MAX(need, rl.rlim_cur));
    setrlimit(RLIMIT_NOFILE, &rl);
    getrlimit(RLIMIT_NOFILE, &rl);
  }
  if (rl.rlim_cur >= need)
    return TRUE;
  rlim_t room = rl.rlim_cur - MIN(rl.rlim_cur, NF_FLEET_FDS_SPARE + window);
  g_set_error(error, NF_FLEET_ERROR, NF_FLEET_ERROR_INPUT,
              "%u guests need about %lu open files (%d each, one more while booting) but this "
              "process may open only %lu (hard limit %lu); raise the limit (`ulimit -Hn %lu` as "
              "root, or LimitNOFILE= in a service unit) or run at most %lu guests per supervisor",
              guests, (unsigned long)need, NF_FLEET_FDS_PER_GUEST, (unsigned long)rl.rlim_cur,
              (unsigned long)rl.rlim_max, (unsigned long)need,
              (unsigned long)(room / NF_FLEET_FDS_PER_GUEST));
  return FALSE;
}

gboolean nf_fleet_retake_lock(NfFleet *fleet, GError **error)
{
  if (fleet->lock_path && g_file_test(fleet->lock_path, G_FILE_TEST_EXISTS))
    return TRUE;
  if (g_mkdir_with_parents(fleet->paths.runtime_dir, 0700) != 0) {
    int e = errno;
    g_set_error(error, NF_FLEET_ERROR, NF_FLEET_ERROR_INPUT, "cannot create %s: %s",
                fleet->paths.runtime_dir, g_strerror(e));
    return FALSE;
  }
  /* The old lock's inode is gone with its name: a new one, held again. */
  if (fleet->lock_fd >= 0)
    close(fleet->lock_fd);
  fleet->lock_fd = -1;
  g_clear_pointer(&fleet->lock_path, g_free);
  return take_lock(fleet, error);
}

void nf_fleet_remove_stale_runtime_files(NfFleet *fleet)
{
  /* We hold the lock, so guest files here that no running guest of ours
   * owns belong to a supervisor that died without cleaning up. */
  g_autoptr(GDir) dir = g_dir_open(fleet->paths.runtime_dir, 0, NULL);
  const char *name;
  while (dir && (name = g_dir_read_name(dir)) != NULL) {
    guint id = (guint)g_ascii_strtoull(name + MIN(strlen(name), 3), NULL, 10);
    NfVm *vm = nf_fleet_find_vm(fleet, id);
    if (vm && nf_vm_is_running(vm))
      continue;
    if (fleet->strays && nf_stray_guests_running(fleet->strays, id))
      continue; /* still stopping: its files go when it is down */
    if (g_str_has_prefix(name, "vm-") &&
        (g_str_has_suffix(name, ".qmp") || g_str_has_suffix(name, ".pid") ||
         g_str_has_suffix(name, ".ctl") || g_str_has_suffix(name, ".serial"))) {
      g_autofree char *path = g_build_filename(fleet->paths.runtime_dir, name, NULL);
      g_unlink(path);
    }
  }
}

gboolean nf_fleet_check_reflash(NfFleet *fleet, GError **error)
{
  const NfFleetConfig *config = fleet->config;
  if (!config->reflash_all)
    return TRUE;
  g_autoptr(GArray) running = nf_strays_processes(fleet->paths.runtime_dir);
  if (running->len == 0)
    return TRUE;
  g_set_error(error, NF_FLEET_ERROR, NF_FLEET_ERROR_BUSY,
              "--reflash-all: %u qemu process%s of fleet '%s' still run%s on the disks (left by a "
              "supervisor that is gone); stop them first with `nervesfleet down --name %s`, or "
              "start without --reflash-all to take them over",
              running->len, running->len == 1 ? "" : "es", config->name,
              running->len == 1 ? "s" : "", config->name);
  return FALSE;
}
