/*
 * vm.c: one guest's life from spawn to reap (see vm.h).
 *
 * Channels are made here, before the spawn, and handed to qemu as inherited
 * fds: a socketpair for our private QMP monitor, a socketpair for the serial
 * console, and a listening unix socket in the runtime dir as a second, public
 * QMP monitor for other tools. Nothing waits for a socket file to appear.
 * qemu's stdout/stderr go to <state>/vm-NNNN/qemu.log after a header line
 * holding the exact command, so a failure can quote qemu's own words.
 */
#include "supervisor/vm.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <glib/gstdio.h>

#include "qmp/qmp.h"
#include "supervisor/accel.h"
#include "overlay/identity.h"
#include "supervisor/process.h"
#include "supervisor/qemu-argv.h"
#include "supervisor/serial.h"

struct NfVm {
  guint id;
  char *name;
  char *serial;
  const NfVmEnv *env;
  NfVmCallbacks cb;
  gpointer user_data;

  NfVmState state;
  char *exit_reason;
  gboolean failed_at_start;
  gboolean qmp_negotiated;
  gint64 started_at;
  gint64 ready_at;

  char *state_dir;
  char *qemu_log;
  char *console_log;
  char *pidfile;
  char *qmp_path;

  NfProcess *proc;
  NfQmp *qmp;
  NfSerial *console;
  guint boot_timer;
  guint kill_timer;
};

static void set_state(NfVm *vm, NfVmState state, const char *reason);
static void release_channels(NfVm *vm);
static void remove_runtime_files(NfVm *vm);
static int listen_unix(const char *path, GError **error);
static void on_exit_cb(NfProcess *proc, int status, gpointer data);
static void qmp_ready_cb(NfQmp *qmp, gpointer data);
static void qmp_event_cb(NfQmp *qmp, const char *name, json_t *data, gint64 ts, gpointer ud);
static void qmp_closed_cb(NfQmp *qmp, const GError *error, gpointer data);
static void marker_cb(NfSerial *serial, const char *line, gpointer data);
static void serial_eof_cb(NfSerial *serial, gpointer data);
static gboolean boot_timeout_cb(gpointer data);
static gboolean kill_timeout_cb(gpointer data);
static void clear_timer(guint *id);

static const char *const state_names[NF_VM_N_STATES] = {
    [NF_VM_CREATED] = "created",   [NF_VM_QUEUED] = "queued",
    [NF_VM_STARTING] = "starting", [NF_VM_BOOTING] = "booting",
    [NF_VM_READY] = "ready",       [NF_VM_STOPPING] = "stopping",
    [NF_VM_STOPPED] = "stopped",   [NF_VM_FAILED] = "failed",
};

const char *nf_vm_state_name(NfVmState state)
{
  return state < NF_VM_N_STATES ? state_names[state] : "?";
}

NfVm *nf_vm_new(guint id, const NfVmEnv *env, const NfVmCallbacks *callbacks,
                gpointer user_data)
{
  NfVm *vm = g_new0(NfVm, 1);
  vm->id = id;
  vm->env = env;
  vm->cb = *callbacks;
  vm->user_data = user_data;
  vm->name = nf_paths_guest_name(id);
  /* The format was validated when the fleet was built. */
  vm->serial = nf_identity_serial(env->config->serial_format, id, NULL);
  vm->state_dir = nf_paths_guest_state_dir(env->paths, id);
  vm->qemu_log = g_build_filename(vm->state_dir, "qemu.log", NULL);
  vm->console_log = g_build_filename(vm->state_dir, "console.log", NULL);
  vm->pidfile = nf_paths_guest_runtime(env->paths, id, "pid");
  vm->qmp_path = nf_paths_guest_runtime(env->paths, id, "qmp");
  return vm;
}

static void clear_timer(guint *id)
{
  if (*id) {
    g_source_remove(*id);
    *id = 0;
  }
}

static void set_state(NfVm *vm, NfVmState state, const char *reason)
{
  NfVmState old = vm->state;
  if (old == state)
    return;
  vm->state = state;
  if (vm->cb.state_changed)
    vm->cb.state_changed(vm, old, state, reason, vm->user_data);
}

void nf_vm_set_queued(NfVm *vm)
{
  set_state(vm, NF_VM_QUEUED, "waiting for a boot slot");
}

static int listen_unix(const char *path, GError **error)
{
  struct sockaddr_un sun = {.sun_family = AF_UNIX};
  if (!nf_paths_check_socket(path, error))
    return -1;
  g_strlcpy(sun.sun_path, path, sizeof(sun.sun_path));
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    goto fail;
  unlink(path); /* a stale socket from a killed supervisor */
  if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0 || listen(fd, 4) < 0)
    goto fail;
  return fd;
fail:;
  int e = errno;
  if (fd >= 0)
    close(fd);
  g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(e), "cannot listen on %s: %s",
              path, g_strerror(e));
  return -1;
}

gboolean nf_vm_start(NfVm *vm, GError **error)
{
  const NfFleetConfig *cfg = vm->env->config;
  int qmp_pair[2] = {-1, -1}, ser_pair[2] = {-1, -1}, qmp_listen = -1, log_fd = -1;
  g_autoptr(GError) local = NULL;
  g_auto(GStrv) argv = NULL;

  g_return_val_if_fail(!nf_vm_is_running(vm), FALSE);
  g_clear_pointer(&vm->exit_reason, g_free);
  vm->failed_at_start = FALSE;
  vm->qmp_negotiated = FALSE;
  vm->ready_at = 0;

  if (g_mkdir_with_parents(vm->state_dir, 0755) != 0) {
    int e = errno;
    g_set_error(&local, G_FILE_ERROR, g_file_error_from_errno(e), "cannot create %s: %s",
                vm->state_dir, g_strerror(e));
    goto fail;
  }
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, qmp_pair) < 0 ||
      socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ser_pair) < 0) {
    int e = errno;
    g_set_error(&local, G_FILE_ERROR, g_file_error_from_errno(e), "socketpair: %s%s",
                g_strerror(e), e == EMFILE ? " (raise the open file limit: ulimit -n)" : "");
    goto fail;
  }
  qmp_listen = listen_unix(vm->qmp_path, &local);
  if (qmp_listen < 0)
    goto fail;
  log_fd = open(vm->qemu_log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) {
    int e = errno;
    g_set_error(&local, G_FILE_ERROR, g_file_error_from_errno(e), "cannot open %s: %s",
                vm->qemu_log, g_strerror(e));
    goto fail;
  }

  NfQemuSpec spec = {
      .qemu = vm->env->qemu_path,
      .accel = vm->env->accel,
      .memory_mib = cfg->memory_mib,
      .kernel = cfg->kernel,
      .initrd = cfg->initrd,
      .append = cfg->append,
      .guest_name = vm->name,
      .serial = vm->serial,
      .pidfile = vm->pidfile,
      .public_qmp = TRUE,
      .extra = cfg->qemu_args,
  };
  argv = nf_qemu_argv_build(&spec);
  {
    g_autofree char *line = nf_qemu_argv_to_string(argv);
    g_autoptr(GDateTime) now = g_date_time_new_now_local();
    g_autofree char *stamp = g_date_time_format_iso8601(now);
    g_autofree char *header = g_strdup_printf("=== %s starting %s: %s\n", stamp, vm->name, line);
    if (write(log_fd, header, strlen(header)) < 0) {
    }
  }

  int sources[] = {qmp_pair[1], qmp_listen, ser_pair[1]};
  int targets[] = {NF_QEMU_FD_QMP, NF_QEMU_FD_QMP_PUBLIC, NF_QEMU_FD_SERIAL};
  vm->proc = nf_process_spawn(argv, sources, targets, G_N_ELEMENTS(sources), log_fd, TRUE,
                              on_exit_cb, vm, &local);
  if (vm->proc == NULL) {
    g_prefix_error(&local, "cannot start %s: ", vm->env->qemu_path);
    goto fail;
  }
  /* The child holds its ends now; ours would keep EOF from ever arriving. */
  close(qmp_pair[1]);
  close(ser_pair[1]);
  close(qmp_listen);
  close(log_fd);

  static const NfQmpCallbacks qmp_cb = {
      .ready = qmp_ready_cb, .event = qmp_event_cb, .closed = qmp_closed_cb};
  vm->qmp = nf_qmp_new_from_fd(qmp_pair[0], NULL, &qmp_cb, vm);
  static const NfSerialCallbacks ser_cb = {.marker = marker_cb, .eof = serial_eof_cb};
  vm->console = nf_serial_new(ser_pair[0], vm->console_log, cfg->ready_marker, &ser_cb, vm,
                              &local);
  if (vm->console == NULL) {
    /* Spawned but unusable: kill it, the exit callback is not wanted now. */
    nf_process_free(g_steal_pointer(&vm->proc));
    g_clear_pointer(&vm->qmp, nf_qmp_unref);
    goto fail_quiet;
  }
  vm->started_at = g_get_monotonic_time();
  if (cfg->boot_timeout_ms)
    vm->boot_timer = g_timeout_add(cfg->boot_timeout_ms, boot_timeout_cb, vm);
  set_state(vm, NF_VM_STARTING, "qemu spawned");
  return TRUE;

fail:
  for (int i = 0; i < 2; i++) {
    if (qmp_pair[i] >= 0)
      close(qmp_pair[i]);
    if (ser_pair[i] >= 0)
      close(ser_pair[i]);
  }
  if (qmp_listen >= 0)
    close(qmp_listen);
  if (log_fd >= 0)
    close(log_fd);
fail_quiet:
  remove_runtime_files(vm);
  vm->exit_reason = g_strdup(local->message);
  vm->failed_at_start = TRUE;
  set_state(vm, NF_VM_FAILED, local->message);
  g_propagate_error(error, g_steal_pointer(&local));
  return FALSE;
}

static void qmp_ready_cb(NfQmp *qmp, gpointer data)
{
  NfVm *vm = data;
  vm->qmp_negotiated = TRUE;
  if (vm->state == NF_VM_STARTING)
    set_state(vm, NF_VM_BOOTING, "QMP connected");
}

static void qmp_event_cb(NfQmp *qmp, const char *name, json_t *data, gint64 ts, gpointer ud)
{
  NfVm *vm = ud;
  if (g_strcmp0(name, "SHUTDOWN") == 0 && vm->state != NF_VM_STOPPING) {
    /* Keep qemu's own word for why it is going: it classifies the exit. */
    const char *reason = json_string_value(json_object_get(data, "reason"));
    g_free(vm->exit_reason);
    vm->exit_reason = g_strdup_printf("guest shutdown (%s)", reason ? reason : "unknown");
  }
}

static void qmp_closed_cb(NfQmp *qmp, const GError *error, gpointer data)
{
  /* Process exit is the authority on a guest's end; a closed monitor alone
   * is not (the exit callback follows). */
}

static void marker_cb(NfSerial *serial, const char *line, gpointer data)
{
  NfVm *vm = data;
  if (vm->state != NF_VM_STARTING && vm->state != NF_VM_BOOTING)
    return;
  clear_timer(&vm->boot_timer);
  vm->ready_at = g_get_monotonic_time();
  const char *s = strstr(line, "serial=");
  g_autofree char *reason = g_strdup_printf("ready (%s)", s ? s : line);
  set_state(vm, NF_VM_READY, reason);
}

static void serial_eof_cb(NfSerial *serial, gpointer data)
{
}

static gboolean boot_timeout_cb(gpointer data)
{
  NfVm *vm = data;
  vm->boot_timer = 0;
  g_free(vm->exit_reason);
  vm->exit_reason = g_strdup_printf("no ready line within %u s (boot timeout)",
                                    vm->env->config->boot_timeout_ms / 1000);
  nf_process_signal(vm->proc, SIGKILL);
  return G_SOURCE_REMOVE;
}

static gboolean kill_timeout_cb(gpointer data)
{
  NfVm *vm = data;
  vm->kill_timer = 0;
  nf_process_signal(vm->proc, SIGKILL);
  return G_SOURCE_REMOVE;
}

void nf_vm_stop(NfVm *vm, gboolean force)
{
  if (!nf_vm_is_running(vm)) {
    if (vm->state != NF_VM_FAILED)
      set_state(vm, NF_VM_STOPPED, "stopped before it started");
    return;
  }
  if (force) {
    nf_process_signal(vm->proc, SIGKILL);
    set_state(vm, NF_VM_STOPPING, "killing");
    return;
  }
  if (vm->state == NF_VM_STOPPING)
    return;
  if (vm->qmp_negotiated)
    nf_qmp_quit(vm->qmp, vm->env->config->stop_timeout_ms, NULL, NULL);
  else
    nf_process_signal(vm->proc, SIGTERM); /* qemu exits cleanly on SIGTERM too */
  clear_timer(&vm->boot_timer);
  vm->kill_timer = g_timeout_add(MAX(vm->env->config->stop_timeout_ms, 1), kill_timeout_cb, vm);
  set_state(vm, NF_VM_STOPPING, "asked to quit");
}

static void on_exit_cb(NfProcess *proc, int status, gpointer data)
{
  NfVm *vm = data;
  g_autofree char *how = nf_process_describe_status(status);
  gboolean asked = vm->state == NF_VM_STOPPING;
  /* `exit_reason` may already hold the cause (boot timeout, the guest's own
   * SHUTDOWN reason); the process status completes it. */
  g_autofree char *cause = g_steal_pointer(&vm->exit_reason);

  if (!vm->qmp_negotiated && !asked && cause == NULL)
    vm->failed_at_start = TRUE;
  if (cause && !asked)
    vm->exit_reason = g_strdup_printf("%s; qemu %s", cause, how);
  else
    vm->exit_reason = g_strdup_printf("qemu %s", how);
  release_channels(vm);
  nf_process_free(g_steal_pointer(&vm->proc));
  set_state(vm, asked ? NF_VM_STOPPED : NF_VM_FAILED, vm->exit_reason);
}

static void release_channels(NfVm *vm)
{
  clear_timer(&vm->boot_timer);
  clear_timer(&vm->kill_timer);
  if (vm->qmp) {
    nf_qmp_close(vm->qmp);
    g_clear_pointer(&vm->qmp, nf_qmp_unref);
  }
  g_clear_pointer(&vm->console, nf_serial_free);
  remove_runtime_files(vm);
}

static void remove_runtime_files(NfVm *vm)
{
  g_unlink(vm->qmp_path);
  g_unlink(vm->pidfile);
}

void nf_vm_free(NfVm *vm)
{
  if (vm == NULL)
    return;
  if (vm->proc) {
    /* Freeing kills and reaps synchronously; no exit callback then. */
    nf_process_free(g_steal_pointer(&vm->proc));
  }
  release_channels(vm);
  g_free(vm->name);
  g_free(vm->serial);
  g_free(vm->exit_reason);
  g_free(vm->state_dir);
  g_free(vm->qemu_log);
  g_free(vm->console_log);
  g_free(vm->pidfile);
  g_free(vm->qmp_path);
  g_free(vm);
}

guint nf_vm_id(const NfVm *vm)
{
  return vm->id;
}
const char *nf_vm_name(const NfVm *vm)
{
  return vm->name;
}
const char *nf_vm_serial(const NfVm *vm)
{
  return vm->serial;
}
NfVmState nf_vm_state(const NfVm *vm)
{
  return vm->state;
}
GPid nf_vm_pid(const NfVm *vm)
{
  return vm->proc ? nf_process_pid(vm->proc) : 0;
}
gboolean nf_vm_is_running(const NfVm *vm)
{
  return vm->proc != NULL;
}
const char *nf_vm_exit_reason(const NfVm *vm)
{
  return vm->exit_reason;
}
gboolean nf_vm_failed_at_start(const NfVm *vm)
{
  return vm->failed_at_start;
}
gint64 nf_vm_started_at(const NfVm *vm)
{
  return vm->started_at;
}
gint64 nf_vm_ready_at(const NfVm *vm)
{
  return vm->ready_at;
}

char *nf_vm_console_tail(const NfVm *vm, gsize max_bytes)
{
  return vm->console ? nf_serial_tail(vm->console, max_bytes) : g_strdup("");
}

char *nf_vm_stderr_tail(const NfVm *vm, guint max_lines)
{
  g_autofree char *text = NULL;
  if (!g_file_get_contents(vm->qemu_log, &text, NULL, NULL))
    return g_strdup("");
  /* Only what the latest run wrote: after the last header line. */
  char *start = g_strrstr(text, "\n=== ");
  start = start ? strchr(start + 1, '\n') : strchr(text, '\n');
  start = start ? start + 1 : text;
  g_auto(GStrv) lines = g_strsplit(g_strchomp(start), "\n", -1);
  guint n = g_strv_length(lines);
  guint from = n > max_lines ? n - max_lines : 0;
  return g_strjoinv("\n", lines + from);
}
