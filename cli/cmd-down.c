/*
 * cmd-down.c: `nervesfleet down`: stops a fleet whose supervisor runs
 * elsewhere (typically `run -d`). It signals the supervisor named in the
 * fleet lock (SIGTERM: the same orderly stop as Ctrl-C) and waits on a pidfd
 * until it is gone. With no supervisor left but guests still running (a
 * detached supervisor that was killed), it kills those orphans itself; and
 * after a supervisor has stopped, it kills any guest of the fleet still
 * alive (found in /proc by its pid file path, see strays.h), so `down`
 * always leaves nothing behind, whatever guest count the runs had.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <glib/gstdio.h>

#include "cli/client.h"
#include "cli/parse.h"
#include "cli/verbs.h"
#include "supervisor/cgroup.h"
#include "supervisor/tap.h"
#include "supervisor/ksm.h"
#include "supervisor/paths.h"
#include "supervisor/strays.h"

static int kill_orphans(const char *runtime_dir);
static int kill_guests(const char *runtime_dir);
static gboolean wait_gone(GPid pid, guint timeout_ms);

static gboolean wait_gone(GPid pid, guint timeout_ms)
{
  int fd = (int)syscall(SYS_pidfd_open, pid, 0);
  if (fd < 0)
    return errno == ESRCH;
  struct pollfd pfd = {.fd = fd, .events = POLLIN};
  int r;
  do
    r = poll(&pfd, 1, (int)timeout_ms);
  while (r < 0 && errno == EINTR);
  close(fd);
  return r > 0;
}

/* Kills every live process of the fleet: qemu (and a wrapper script given
 * as --qemu) carrying one of its pid file paths, whether or not the pid file
 * is still there and whatever guest count the last `run` had. Waits until
 * they are gone. Returns how many guests (ids) were killed. */
static int kill_guests(const char *runtime_dir)
{
  g_autoptr(GArray) found = nf_strays_processes(runtime_dir);
  g_autoptr(GHashTable) ids = g_hash_table_new(NULL, NULL);
  for (guint i = 0; i < found->len; i++) {
    NfStrayProcess *sp = &g_array_index(found, NfStrayProcess, i);
    if (kill(sp->pid, SIGKILL) == 0)
      g_hash_table_add(ids, GUINT_TO_POINTER(sp->id));
  }
  for (guint i = 0; i < found->len; i++)
    wait_gone(g_array_index(found, NfStrayProcess, i).pid, 5000);
  return (int)g_hash_table_size(ids);
}

static int kill_orphans(const char *runtime_dir)
{
  int killed = kill_guests(runtime_dir);
  /* Then every file of ours in the runtime dir, and the dir itself. */
  g_autoptr(GDir) dir = g_dir_open(runtime_dir, 0, NULL);
  const char *name;
  while (dir && (name = g_dir_read_name(dir)) != NULL)
    if (g_str_has_prefix(name, "vm-") || g_str_equal(name, "fleet.lock") ||
        g_str_equal(name, "control.sock") || g_str_equal(name, "net.base") ||
        g_str_equal(name, "ids")) { /* ids: the fleet's id range (supervisor/shard.h) */
      g_autofree char *path = g_build_filename(runtime_dir, name, NULL);
      g_unlink(path);
    }
  g_rmdir(runtime_dir);
  return killed;
}

int nf_cmd_down(int argc, char **argv)
{
  g_autofree char *name = NULL, *runtime_dir = NULL, *timeout = NULL;
  gboolean leave = FALSE;
  g_autoptr(GError) error = NULL;
  GOptionEntry entries[] = {
      {"name", 'n', 0, G_OPTION_ARG_STRING, &name, "Fleet name (default: default)", "NAME"},
      {"runtime-dir", 0, 0, G_OPTION_ARG_FILENAME, &runtime_dir, "The fleet's runtime dir", "DIR"},
      {"leave-running", 0, 0, G_OPTION_ARG_NONE, &leave,
       "Stop only the supervisor; the guests keep running for the next one (upgrade)", NULL},
      {"timeout", 0, 0, G_OPTION_ARG_STRING, &timeout,
       "Seconds to wait for the supervisor to finish (default: 120)", "S"},
      {NULL}};
  g_set_prgname("nervesfleet down");
  g_autoptr(GOptionContext) ctx = g_option_context_new(NULL);
  g_option_context_set_summary(ctx, "Stops a fleet started with `nervesfleet run -d`.");
  g_option_context_add_main_entries(ctx, entries, NULL);
  guint timeout_ms = 120000;
  if (!g_option_context_parse(ctx, &argc, &argv, &error) ||
      (timeout && !nf_parse_seconds_ms("--timeout", timeout, &timeout_ms, &error))) {
    nf_cli_error("down: %s; see `nervesfleet down --help`", error->message);
    return NF_EXIT_USAGE;
  }
  if (argc > 1) {
    nf_cli_error("down: unexpected argument '%s'; see `nervesfleet down --help`", argv[1]);
    return NF_EXIT_USAGE;
  }
  NfFleetPaths paths = {0};
  /* As every other verb (client.c): inside `run --exec CMD` the fleet's own
   * coordinates are the default. */
  const char *env_name = g_getenv("NERVESFLEET_NAME");
  const char *fleet = name ? name : env_name ? env_name : "default";
  const char *dir = runtime_dir;
  if (!dir && !name && env_name)
    dir = g_getenv("NERVESFLEET_RUNTIME_DIR");
  if (!nf_paths_resolve(&paths, fleet, dir, NULL, &error)) {
    nf_cli_error("down: %s", error->message);
    return NF_EXIT_USAGE;
  }
  g_autofree char *lock = g_build_filename(paths.runtime_dir, "fleet.lock", NULL);
  int fd = open(lock, O_RDONLY | O_CLOEXEC);
  /* No lock file but guests still running: a `run` that failed to start
   * over a dead supervisor's guests (refused --reflash-all, say) removed
   * the file, not them. */
  g_autoptr(GArray) left = fd < 0 ? nf_strays_processes(paths.runtime_dir) : NULL;
  gboolean unlocked = fd < 0 || flock(fd, LOCK_SH | LOCK_NB) == 0;
  if (fd < 0 && left->len == 0) {
    nf_ksm_recover(paths.runtime_dir); /* host KSM settings a crash left behind */
    nf_cli_error("down: no fleet '%s' running (no %s); start one with `nervesfleet run N -d "
                 "--name %s`",
                 fleet, lock, fleet);
    nf_paths_clear(&paths);
    return NF_EXIT_FAILURE;
  }
  int code = NF_EXIT_OK;
  if (unlocked && leave) {
    if (fd >= 0)
      close(fd);
    nf_cli_error("down: no supervisor runs fleet '%s'; nothing to leave", fleet);
    nf_paths_clear(&paths);
    return NF_EXIT_FAILURE;
  }
  if (unlocked) {
    /* Nobody holds the lock: the supervisor died. Clean up after it. */
    if (fd >= 0)
      close(fd);
    int n = kill_orphans(paths.runtime_dir);
    g_autofree char *cgroup_name = nf_paths_cgroup_name(&paths, fleet);
    nf_cgroup_sweep(cgroup_name);
    nf_tap_sweep(paths.runtime_dir); /* --net tap: the bridge its guests used */
    if (nf_ksm_recover(paths.runtime_dir))
      printf("host KSM settings restored\n");
    printf("fleet '%s' had no supervisor; killed %d orphaned guest%s and removed its files\n",
           fleet, n, n == 1 ? "" : "s");
  } else {
    char buf[32] = "";
    ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
    close(fd);
    buf[n > 0 ? n : 0] = '\0';
    GPid pid = (GPid)g_ascii_strtoll(buf, NULL, 10);
    /* A supervisor that cannot answer (stopped, wedged) cannot stop either:
     * say so at once, and leave no signal pending for when it resumes. */
    if (!nf_client_check_answering(fleet, runtime_dir, &error)) {
      nf_cli_error("down: %s", error->message);
      code = NF_EXIT_FAILURE;
    } else if (pid <= 0 || kill(pid, leave ? SIGUSR1 : SIGTERM) != 0) {
      nf_cli_error("down: cannot signal the supervisor of '%s' (pid %s): %s", fleet, buf,
                   g_strerror(errno));
      code = NF_EXIT_FAILURE;
    } else if (!wait_gone(pid, timeout_ms)) {
      nf_cli_error("down: the supervisor of '%s' (pid %d) is still stopping after %.0f s; run "
                   "`nervesfleet down` again to wait more",
                   fleet, (int)pid, timeout_ms / 1000.0);
      code = NF_EXIT_FAILURE;
    } else if (leave) {
      printf("supervisor of '%s' stopped; its guests keep running (`nervesfleet run N -d "
             "--name %s` adopts them)\n",
             fleet, fleet);
    } else {
      /* The supervisor stops the guests it knows; a guest it never knew
       * of (left by an older version) must not outlive `down` either. */
      int swept = kill_guests(paths.runtime_dir);
      g_autofree char *cgroup_name = nf_paths_cgroup_name(&paths, fleet);
      nf_cgroup_sweep(cgroup_name);
      if (swept > 0)
        printf("fleet '%s' stopped; also killed %d guest%s its supervisor did not know of\n", fleet,
               swept, swept == 1 ? "" : "s");
      else
        printf("fleet '%s' stopped\n", fleet);
    }
  }
  nf_paths_clear(&paths);
  return code;
}
