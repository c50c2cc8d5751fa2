/*
 * run-exec.c: the CI mode of `run` (see run-exec.h). A fleet listener that
 * fires CMD when the last guest becomes ready, or fails fast when one gives
 * up (FAILED) or is stopped before CMD ran: a CI job should learn in
 * seconds that guest 3 panicked at boot, not after a timeout.
 */
#include "cli/run-exec.h"
#include "supervisor/command.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <glib/gstdio.h>

#define TAIL_BYTES 2000
#define TAIL_LINES 15

struct NfRunExec {
  NfFleet *fleet;
  char **argv;
  char *socket;
  NfRunExecDone done;
  gpointer user_data;
  guint listener;
  GPid pid;
  guint child_watch;
  guint kill_timer; /* CMD did not end on SIGTERM within the stop timeout */
  gboolean started, finished;
};

static void vm_changed_cb(NfFleet *fleet, NfVm *vm, NfVmState old_state, const char *reason,
                          gpointer data);
static void child_cb(GPid pid, gint status, gpointer data);
static void fail(NfRunExec *x);
static void launch(NfRunExec *x);
static void finish(NfRunExec *x, int status);

static void finish(NfRunExec *x, int status)
{
  if (x->finished)
    return;
  x->finished = TRUE;
  x->done(status, x->user_data);
}

static void child_cb(GPid pid, gint status, gpointer data)
{
  NfRunExec *x = data;
  x->child_watch = 0;
  x->pid = 0;
  g_clear_handle_id(&x->kill_timer, g_source_remove);
  g_spawn_close_pid(pid);
  int code = WIFEXITED(status)     ? WEXITSTATUS(status)
             : WIFSIGNALED(status) ? 128 + WTERMSIG(status)
                                   : 1;
  fprintf(stderr, "nervesfleet: run --exec: %s exited with status %d; stopping the fleet\n",
          x->argv[0], code);
  finish(x, code);
}

static void launch(NfRunExec *x)
{
  x->started = TRUE;
  g_auto(GStrv) env = g_get_environ();
  g_autofree char *count = g_strdup_printf("%u", nf_fleet_size(x->fleet));
  env = g_environ_setenv(env, "NERVESFLEET_NAME", nf_fleet_name(x->fleet), TRUE);
  env = g_environ_setenv(env, "NERVESFLEET_COUNT", count, TRUE);
  env = g_environ_setenv(env, "NERVESFLEET_RUNTIME_DIR", nf_fleet_runtime_dir(x->fleet), TRUE);
  env = g_environ_setenv(env, "NERVESFLEET_STATE_DIR", nf_fleet_state_dir(x->fleet), TRUE);
  if (x->socket)
    env = g_environ_setenv(env, "NERVESFLEET_SOCKET", x->socket, TRUE);
  g_autoptr(GError) error = NULL;
  fflush(stdout);
  if (!g_spawn_async(NULL, x->argv, env,
                     G_SPAWN_SEARCH_PATH | G_SPAWN_DO_NOT_REAP_CHILD | G_SPAWN_CHILD_INHERITS_STDIN,
                     NULL, NULL, &x->pid, &error)) {
    fprintf(stderr, "nervesfleet: run --exec: %s\n", error->message);
    finish(x, 127);
    return;
  }
  x->child_watch = g_child_watch_add(x->pid, child_cb, x);
}

/* A guest will not come up: say which and why, with its last console lines. */
static void fail(NfRunExec *x)
{
  guint n = nf_fleet_size(x->fleet), bad = 0;
  for (guint i = 0; i < n; i++) {
    NfVm *vm = nf_fleet_vm(x->fleet, i);
    NfVmState s = nf_vm_state(vm);
    if (s != NF_VM_FAILED && s != NF_VM_STOPPED)
      continue;
    bad++;
    const char *reason = nf_vm_exit_reason(vm);
    fprintf(stderr, "nervesfleet: run --exec: %s (%s) %s%s%s\n", nf_vm_name(vm),
            nf_vm_serial(vm) ? nf_vm_serial(vm) : "-", nf_vm_state_name(s), reason ? ": " : "",
            reason ? reason : "");
    g_autofree char *tail = nf_commands_console_tail(vm, TAIL_BYTES);
    g_auto(GStrv) lines = g_strsplit(tail, "\n", -1);
    guint k = g_strv_length(lines);
    while (k > 0 && !*g_strstrip(lines[k - 1]))
      k--;
    if (k)
      fprintf(stderr, "  last console lines of %s:\n", nf_vm_name(vm));
    for (guint j = k > TAIL_LINES ? k - TAIL_LINES : 0; j < k; j++)
      fprintf(stderr, "    | %s\n", g_strchomp(lines[j]));
    if (nf_vm_failed_at_start(vm)) {
      g_autofree char *err = nf_vm_stderr_tail(vm, 10);
      if (*err)
        fprintf(stderr, "  qemu said:\n%s\n", err);
    }
  }
  fprintf(stderr, "nervesfleet: run --exec: %u of %u guests did not come up; not running %s\n", bad,
          n, x->argv[0]);
  finish(x, 1);
}

static void vm_changed_cb(NfFleet *fleet, NfVm *vm, NfVmState old_state, const char *reason,
                          gpointer data)
{
  NfRunExec *x = data;
  if (x->started || x->finished)
    return;
  NfVmState s = nf_vm_state(vm);
  if (s == NF_VM_FAILED || s == NF_VM_STOPPED) {
    fail(x);
    return;
  }
  NfFleetCounts c;
  nf_fleet_counts(fleet, &c);
  if (c.ready == c.total && c.total > 0)
    launch(x);
}

NfRunExec *nf_run_exec_new(NfFleet *fleet, char **argv, const char *socket, NfRunExecDone done,
                           gpointer user_data)
{
  NfRunExec *x = g_new0(NfRunExec, 1);
  x->fleet = fleet;
  x->argv = argv;
  x->socket = g_strdup(socket);
  x->done = done;
  x->user_data = user_data;
  static const NfFleetCallbacks cb = {.vm_changed = vm_changed_cb};
  x->listener = nf_fleet_add_listener(fleet, &cb, x);
  return x;
}

static gboolean kill_cb(gpointer data)
{
  NfRunExec *x = data;
  x->kill_timer = 0;
  fprintf(stderr, "nervesfleet: run --exec: %s did not end on SIGTERM; killing it\n", x->argv[0]);
  kill(x->pid, SIGKILL);
  return G_SOURCE_REMOVE;
}

void nf_run_exec_cancel(NfRunExec *x)
{
  if (x->pid > 0) {
    /* CMD's status, when it ends, is still run's: a CI job stopped by a
     * timeout or `down` must not pass. It gets as long as a guest does. */
    kill(x->pid, SIGTERM);
    if (x->kill_timer == 0)
      x->kill_timer =
          g_timeout_add(MAX(nf_fleet_config(x->fleet)->stop_timeout_ms, 100), kill_cb, x);
  } else if (!x->started && !x->finished) {
    fprintf(stderr, "nervesfleet: run --exec: stopped before the fleet was ready; not running %s\n",
            x->argv[0]);
    finish(x, 1);
  }
}

gboolean nf_run_exec_running(const NfRunExec *x)
{
  return x->pid > 0;
}

void nf_run_exec_free(NfRunExec *x)
{
  if (!x)
    return;
  nf_fleet_remove_listener(x->fleet, x->listener);
  if (x->child_watch)
    g_source_remove(x->child_watch);
  g_clear_handle_id(&x->kill_timer, g_source_remove);
  if (x->pid > 0) {
    /* The caller waits for CMD (nf_run_exec_running); if it did not, CMD
     * is not ours to leave behind. */
    kill(x->pid, SIGKILL);
    waitpid(x->pid, NULL, 0);
    g_spawn_close_pid(x->pid);
  }
  g_free(x->socket);
  g_free(x);
}

/* rm -rf `dir` (symlinks are removed, never followed). */
static void remove_tree(const char *dir)
{
  GStatBuf st;
  if (g_lstat(dir, &st) != 0)
    return;
  if (S_ISDIR(st.st_mode)) {
    g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
    const char *name;
    while (d && (name = g_dir_read_name(d)) != NULL) {
      g_autofree char *path = g_build_filename(dir, name, NULL);
      remove_tree(path);
    }
    g_rmdir(dir);
  } else {
    g_unlink(dir);
  }
}

/* vm-0003, vm-12345: a guest's dir (paths.h). */
static gboolean is_guest_dir(const char *name)
{
  if (!g_str_has_prefix(name, "vm-") || name[3] == '\0')
    return FALSE;
  for (const char *c = name + 3; *c; c++)
    if (!g_ascii_isdigit(*c))
      return FALSE;
  return TRUE;
}

void nf_run_remove_state(const char *state_dir)
{
  static const char *const ours[] = {"disks", "template", "supervisor.log", NF_FLEET_STATE_LOCK};
  g_autoptr(GDir) d = g_dir_open(state_dir, 0, NULL);
  const char *name;
  while (d && (name = g_dir_read_name(d)) != NULL) {
    gboolean mine = is_guest_dir(name);
    for (gsize i = 0; !mine && i < G_N_ELEMENTS(ours); i++)
      mine = g_str_equal(name, ours[i]);
    if (mine) {
      g_autofree char *path = g_build_filename(state_dir, name, NULL);
      remove_tree(path);
    }
  }
  if (g_rmdir(state_dir) == 0) {
    g_autofree char *parent = g_path_get_dirname(state_dir);
    g_autofree char *base = g_path_get_basename(parent);
    if (g_str_equal(base, "nervesfleet"))
      g_rmdir(parent);
  }
}
