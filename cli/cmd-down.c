/*
 * cmd-down.c: `nervesfleet down`: stops a fleet whose supervisor runs
 * elsewhere (typically `run -d`). It signals the supervisor named in the
 * fleet lock (SIGTERM: the same orderly stop as Ctrl-C) and waits on a pidfd
 * until it is gone. With no supervisor left but guests still running (a
 * detached supervisor that was killed), it kills those orphans itself, so
 * `down` always leaves nothing behind.
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

#include "cli/parse.h"
#include "cli/verbs.h"
#include "supervisor/cgroup.h"
#include "supervisor/ksm.h"
#include "supervisor/paths.h"

static int kill_orphans(const char *runtime_dir);
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

static int kill_orphans(const char *runtime_dir)
{
  int killed = 0;
  g_autoptr(GDir) dir = g_dir_open(runtime_dir, 0, NULL);
  const char *name;
  while (dir && (name = g_dir_read_name(dir)) != NULL) {
    if (!g_str_has_prefix(name, "vm-") || !g_str_has_suffix(name, ".pid"))
      continue;
    g_autofree char *path = g_build_filename(runtime_dir, name, NULL);
    g_autofree char *text = NULL;
    if (!g_file_get_contents(path, &text, NULL, NULL))
      continue;
    GPid pid = (GPid)g_ascii_strtoll(g_strstrip(text), NULL, 10);
    g_autofree char *cmdpath = g_strdup_printf("/proc/%d/cmdline", (int)pid);
    g_autofree char *cmd = NULL;
    gsize len = 0;
    if (pid > 0 && g_file_get_contents(cmdpath, &cmd, &len, NULL)) {
      for (gsize i = 0; i + 1 < len; i++)
        if (cmd[i] == '\0')
          cmd[i] = ' ';
      /* Only a qemu that got this very pid file is ours to kill. */
      if (strstr(cmd, path) && kill(pid, SIGKILL) == 0) {
        killed++;
        wait_gone(pid, 5000);
      }
    }
  }
  /* Then every file of ours in the runtime dir, and the dir itself. */
  if (dir) {
    g_dir_rewind(dir);
    while ((name = g_dir_read_name(dir)) != NULL)
      if (g_str_has_prefix(name, "vm-") || g_str_equal(name, "fleet.lock") ||
          g_str_equal(name, "control.sock")) {
        g_autofree char *path = g_build_filename(runtime_dir, name, NULL);
        g_unlink(path);
      }
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
  const char *fleet = name ? name : "default";
  if (!nf_paths_resolve(&paths, fleet, runtime_dir, NULL, &error)) {
    nf_cli_error("down: %s", error->message);
    return NF_EXIT_USAGE;
  }
  g_autofree char *lock = g_build_filename(paths.runtime_dir, "fleet.lock", NULL);
  int fd = open(lock, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    nf_ksm_recover(paths.runtime_dir); /* host KSM settings a crash left behind */
    nf_cli_error("down: no fleet '%s' running (no %s); start one with `nervesfleet run N -d "
                 "--name %s`",
                 fleet, lock, fleet);
    nf_paths_clear(&paths);
    return NF_EXIT_FAILURE;
  }
  int code = NF_EXIT_OK;
  if (flock(fd, LOCK_SH | LOCK_NB) == 0 && leave) {
    close(fd);
    nf_cli_error("down: no supervisor runs fleet '%s'; nothing to leave", fleet);
    nf_paths_clear(&paths);
    return NF_EXIT_FAILURE;
  }
  if (flock(fd, LOCK_SH | LOCK_NB) == 0) {
    /* Nobody holds the lock: the supervisor died. Clean up after it. */
    close(fd);
    int n = kill_orphans(paths.runtime_dir);
    g_autofree char *cgroup_name = nf_paths_cgroup_name(&paths, fleet);
    nf_cgroup_sweep(cgroup_name);
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
    if (pid <= 0 || kill(pid, leave ? SIGUSR1 : SIGTERM) != 0) {
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
      printf("fleet '%s' stopped\n", fleet);
    }
  }
  nf_paths_clear(&paths);
  return code;
}
