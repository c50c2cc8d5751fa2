/*
 * vm.c: one guest's mechanics: channels, spawn, teardown and accessors (see
 * vm.h); its console, held only while needed, is vm-console.c; what its qemu says (QMP, exit,
 * stderr) is read by vm-qemu.c. A spawn's networking is prepared by
 * vm-net.c; taking over a guest a previous supervisor left is vm-adopt.c; its status file and logs
 * are written by vm-status.c; its qemu's RSS and PSS are sampled by vm-memory.c. Decisions (what an
 * event means in a state, restart or not) live in lifecycle.c; deadlines in health.c.
 *
 * Channels: the supervisor binds three unix sockets in the runtime dir and
 * hands them to qemu as inherited listening fds (vm-NNNN.ctl: our QMP
 * monitor; vm-NNNN.qmp: a QMP monitor for other tools; vm-NNNN.serial: the
 * console), then connects to its own two. No socket file to wait for, no race
 * at start, and a later supervisor reconnects to the very same sockets to
 * adopt a running guest. qemu's stdout/stderr go to <state>/vm-NNNN/qemu.log
 * after a header line holding the exact command.
 */
#include "supervisor/vm-private.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <glib/gstdio.h>

#include "supervisor/boot-image.h"
#include "supervisor/console-log.h"
#include "supervisor/deadlines.h"
#include "supervisor/disks.h"
#include "supervisor/identity.h"
#include "supervisor/net.h"
#include "supervisor/qemu-argv.h"
#include "supervisor/snapshot.h"

static int listen_unix(const char *path, GError **error);
static void drop_channels(NfVm *vm);

NfVm *nf_vm_new(guint id, const NfVmEnv *env, const NfVmCallbacks *callbacks, gpointer user_data)
{
  NfVm *vm = g_new0(NfVm, 1);
  vm->id = id;
  vm->env = env;
  vm->cb = *callbacks;
  vm->user_data = user_data;
  vm->name = nf_paths_guest_name(id);
  /* The format was validated when the fleet was built. */
  vm->serial = nf_identity_serial(env->config->serial_format, id, NULL);
  vm->mac = nf_identity_mac(env->config->name, id, NULL);
  nf_paths_guest_files(env->paths, id, &vm->files);
  vm->console_log_watch = (NfLogWatch)NF_LOG_WATCH_INIT;
  vm->balloon_actual = env->config->memory_mib * 1024 * 1024;
  if (env->disks)
    vm->disk_path = nf_disks_overlay_path(env->disks, id);
  vm->watchers = g_array_new(FALSE, FALSE, sizeof(NfVmWatcher));
  vm->markers[NF_VM_MARKER_READY] = env->config->ready_marker;
  vm->markers[NF_VM_MARKER_PANIC] = "Kernel panic - not syncing";
  return vm;
}

void nf_vm_clear_timer(guint *id)
{
  nf_deadline_remove(*id);
  *id = 0;
}

static int listen_unix(const char *path, GError **error)
{
  struct sockaddr_un sun = {.sun_family = AF_UNIX};
  if (!nf_paths_check_socket(path, error))
    return -1;
  g_strlcpy(sun.sun_path, path, sizeof(sun.sun_path));
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd >= 0) {
    unlink(path); /* a stale socket from a supervisor that died */
    if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0 && chmod(path, 0600) == 0 &&
        listen(fd, 8) == 0)
      return fd;
  }
  int e = errno;
  if (fd >= 0)
    close(fd);
  g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(e), "cannot listen on %s: %s%s", path,
              g_strerror(e), e == EMFILE ? " (raise the open file limit: ulimit -n)" : "");
  return -1;
}

gboolean nf_vm_attach_channels(NfVm *vm, GError **error)
{
  vm->qmp = nf_qmp_connect_unix(vm->files.ctl_path, NULL, &nf_vm_qmp_callbacks, vm, error);
  if (vm->qmp == NULL)
    return FALSE;
  /* Also bounds the handshake, which a host busy with a boot storm may slow. */
  nf_qmp_set_default_timeout(vm->qmp, MAX(vm->env->config->health_timeout_ms, 10000));
  return nf_vm_console_attach(vm, error);
}

void nf_vm_reset_run_facts(NfVm *vm)
{
  vm->qmp_negotiated = FALSE;
  vm->stop_requested = FALSE;
  vm->hung = FALSE;
  vm->watchdog_event = FALSE;
  vm->panic_seen = FALSE;
  g_clear_pointer(&vm->shutdown_reason, g_free);
  g_clear_pointer(&vm->health_problem, g_free);
  vm->failed_at_start = FALSE;
  vm->found_dead = FALSE;
  vm->ready_at = 0;
  vm->stats_polling_set = FALSE;
  vm->qemu_child = NF_VM_QEMU_CHILD_UNKNOWN;
  vm->stats_last_update = 0;
  vm->stats_advanced_at = 0;
  vm->stats_asked_at = 0;
  vm->guest_mem = (NfVmGuestMem){0};
  vm->balloon_manual = FALSE;
  vm->balloon_actual = vm->env->config->memory_mib * 1024 * 1024;
  vm->balloon_unknown = FALSE;
  vm->balloon_target = 0;
  vm->pss_at = 0;
  vm->rss_at = 0;
  vm->slow_at = 0;
  g_clear_pointer(&vm->restore_file, g_free);
}

gboolean nf_vm_spawn(NfVm *vm, GError **error)
{
  const NfFleetConfig *cfg = vm->env->config;
  int fds[4] = {-1, -1, -1, -1};
  g_autofree char *ip = NULL;
  int log_fd = -1;
  gboolean ok = FALSE;
  g_auto(GStrv) argv = NULL;
  g_auto(GStrv) env = NULL;
  g_autofree char *boot_elf = NULL, *boot_arg = NULL; /* boot-image.h */

  nf_vm_reset_run_facts(vm);
  if (g_mkdir_with_parents(vm->files.state_dir, 0755) != 0) {
    int e = errno;
    g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(e), "cannot create %s: %s",
                vm->files.state_dir, g_strerror(e));
    goto out;
  }
  if ((fds[0] = listen_unix(vm->files.ctl_path, error)) < 0 ||
      (fds[1] = listen_unix(vm->files.qmp_path, error)) < 0 ||
      (fds[2] = listen_unix(vm->files.serial_path, error)) < 0)
    goto out;
  log_fd = open(vm->files.qemu_log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) {
    int e = errno;
    g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(e), "cannot open %s: %s",
                vm->files.qemu_log, g_strerror(e));
    goto out;
  }
  NfNetForward forwards[NF_NET_MAX_FORWARDS];
  guint n_forwards = 0;
  if (!nf_vm_prepare_net(vm, forwards, &n_forwards, &fds[3], &ip, error))
    goto out;

  /* A snapshot fleet restores rather than boots while its snapshot is usable. */
  vm->restore_file = g_strdup(nf_snapshot_file(vm->env->snapshot));
  /* The built guest boots from its boot.elf when that carries the kernel
   * and initrd as they are now: checked at each spawn (a few stats and 232
   * bytes), so a guest rebuilt while the fleet runs is never booted with
   * the last build's initrd size. */
  if (cfg->profile == NF_PROFILE_SIM)
    nf_boot_image_find(cfg->kernel, cfg->initrd, cfg->memory_mib, &boot_elf, &boot_arg);
  NfQemuSpec spec = {
      .qemu = vm->env->qemu_path,
      .accel = vm->env->accel,
      .memory_mib = cfg->memory_mib,
      .kernel = boot_elf ? boot_elf : cfg->kernel,
      .initrd = boot_elf ? NULL : cfg->initrd,
      .boot_arg = boot_arg,
      .append = cfg->append,
      .guest_name = vm->name,
      .serial = vm->serial,
      .pidfile = vm->files.pidfile,
      .console_log = vm->files.console_log,
      .public_qmp = TRUE,
      .extra = cfg->qemu_args,
      .profile = cfg->profile,
      .disk = vm->disk_path,
      .mac = vm->mac,
      .net = cfg->net,
      .forwards = forwards,
      .n_forwards = n_forwards,
      .server = vm->env->net ? nf_net_guest_server(vm->env->net) : NULL,
      .ready_url = vm->env->ready_url,
      .ip = ip,
      .dense = cfg->dense,
      .tb_mib = cfg->tb_mib,
      .ksm = vm->env->ksm,
      .incoming = vm->restore_file ? "defer" : NULL,
      .serial_pad = vm->env->snapshot ? NF_IDENTITY_SERIAL_MAX : 0,
      .no_boot_files = vm->restore_file != NULL,
  };
  argv = nf_qemu_argv_build(&spec);
  NfQemuProcessSetup setup;
  nf_qemu_process_setup(&spec, &setup);
  env = nf_qemu_process_env(&setup, g_get_environ());
  nf_vm_console_note_start(vm);
  {
    /* What we add to qemu's environment goes first, so the line still
     * pastes into a shell as the same command. */
    const char *mmap = setup.fixed_mmap ? g_environ_getenv(env, NF_QEMU_ENV_MALLOC) : NULL;
    g_autofree char *cmd = nf_qemu_argv_to_string(argv);
    g_autofree char *line =
        mmap ? g_strdup_printf("%s=%s %s", NF_QEMU_ENV_MALLOC, mmap, cmd) : g_strdup(cmd);
    g_autoptr(GDateTime) now = g_date_time_new_now_local();
    g_autofree char *stamp = g_date_time_format_iso8601(now);
    g_autofree char *header = g_strdup_printf("=== %s starting %s: %s\n", stamp, vm->name, line);
    ssize_t n = write(log_fd, header, strlen(header));
    if (n != (ssize_t)strlen(header))
      nf_vm_note_write(vm, vm->files.qemu_log, n < 0 ? errno : ENOSPC);
  }

  if (vm->env->use_cgroups && vm->cgroup == NULL) {
    g_autoptr(GError) cg_error = NULL;
    vm->cgroup = nf_cgroup_new(vm->env->cgroup_name, vm->name, cfg->memory_limit_mib, &cg_error);
    if (vm->cgroup == NULL && cfg->memory_limit_mib) {
      g_propagate_prefixed_error(error, g_steal_pointer(&cg_error), "--memory-limit: ");
      goto out;
    }
  }

  int targets[] = {NF_QEMU_FD_QMP, NF_QEMU_FD_QMP_PUBLIC, NF_QEMU_FD_SERIAL, NF_QEMU_FD_TAP};
  /* No pidfd while the QMP socket is up: qemu's exit ends that stream
   * first (qmp_closed_cb), and one fd fewer per guest is what lets 10,000
   * guests fit under a 20,000 open-file limit (issue 17). */
  NfProcessExtras extras = {.no_thp = setup.no_thp,
                            .merge_any = setup.merge_any,
                            .no_aslr = setup.no_aslr,
                            .envp = env,
                            .watch_later = TRUE};
  vm->dies_with_supervisor = !cfg->detached;
  vm->proc = nf_process_spawn_with(argv, &extras, fds, targets, fds[3] >= 0 ? 4 : 3, log_fd,
                                   !cfg->detached, nf_vm_on_exit_cb, vm, error);
  if (vm->proc == NULL) {
    g_prefix_error(error, "cannot start %s: ", vm->env->qemu_path);
    goto out;
  }
  if (vm->cgroup) {
    nf_cgroup_add_pid(vm->cgroup, nf_process_pid(vm->proc), NULL);
    vm->oom_kills_at_start = nf_cgroup_oom_kills(vm->cgroup);
  }
  vm->started_at = g_get_monotonic_time();
  vm->started_wall = g_get_real_time();
  if (!nf_vm_attach_channels(vm, error)) {
    nf_process_free(g_steal_pointer(&vm->proc)); /* kills and reaps */
    goto out;
  }
  ok = TRUE;
out:
  /* qemu holds the listening sockets (and the tap) now; our copies would
   * only leak, and a tap must vanish with its qemu. */
  for (int i = 0; i < 4; i++)
    if (fds[i] >= 0)
      close(fds[i]);
  if (log_fd >= 0)
    close(log_fd);
  if (!ok)
    nf_vm_release(vm);
  return ok;
}

void nf_vm_report_ready(NfVm *vm, const char *how)
{
  g_autofree char *reason = g_strdup_printf("ready (%s)", how);
  nf_vm_dispatch(vm, NF_VM_EV_READY, reason);
}

void nf_vm_remove_runtime_files(NfVm *vm)
{
  g_unlink(vm->files.ctl_path);
  g_unlink(vm->files.qmp_path);
  g_unlink(vm->files.serial_path);
  g_unlink(vm->files.pidfile);
}

/* Timers, probes, QMP and console of the current run; not the process. */
static void drop_channels(NfVm *vm)
{
  nf_vm_clear_timer(&vm->boot_timer);
  nf_vm_clear_timer(&vm->kill_timer);
  nf_vm_clear_timer(&vm->qmp_gone_timer);
  nf_vm_clear_timer(&vm->console_linger_timer);
  nf_vm_clear_timer(&vm->ready_wait_timer);
  g_clear_pointer(&vm->ready_line, g_free);
  g_clear_pointer(&vm->ready_reason, g_free);
  nf_vm_health_stop(vm);
  if (vm->qmp) {
    NfQmp *qmp = g_steal_pointer(&vm->qmp);
    nf_qmp_close(qmp);
    nf_qmp_unref(qmp);
  }
  g_clear_pointer(&vm->console, nf_serial_free);
}

void nf_vm_release(NfVm *vm)
{
  drop_channels(vm);
  if (vm->proc == NULL) {
    g_clear_pointer(&vm->cgroup, nf_cgroup_free);
    nf_vm_remove_runtime_files(vm);
  }
}

void nf_vm_detach(NfVm *vm)
{
  if (vm->proc == NULL)
    return;
  /* Leave qemu, its sockets, pid file and cgroup for the next supervisor. */
  nf_process_forget(g_steal_pointer(&vm->proc));
  drop_channels(vm);
  nf_cgroup_forget(g_steal_pointer(&vm->cgroup));
  vm->detached = TRUE;
}

void nf_vm_free(NfVm *vm)
{
  if (vm == NULL)
    return;
  /* Watchers hear that the guest is gone while it still stands (they may
   * read its name); unwatching from the callback is allowed. */
  while (vm->watchers->len > 0) {
    NfVmWatcher w = g_array_index(vm->watchers, NfVmWatcher, 0);
    g_array_remove_index(vm->watchers, 0);
    w.func(vm, NULL, 0, w.user_data);
  }
  nf_vm_disk_cancel(vm);
  g_clear_error(&vm->disk_error);
  nf_vm_clear_timer(&vm->backoff_timer);
  nf_vm_clear_timer(&vm->console_linger_timer);
  nf_vm_clear_timer(&vm->ready_wait_timer);
  g_free(vm->ready_line);
  g_free(vm->ready_reason);
  nf_vm_flush_status(vm);
  if (vm->proc)
    nf_process_free(g_steal_pointer(&vm->proc)); /* kills and reaps; no callback */
  if (!vm->detached)
    nf_vm_release(vm);
  g_array_unref(vm->watchers);
  nf_log_follow_free(vm->console_follow);
  g_free(vm->name);
  g_free(vm->serial);
  g_free(vm->mac);
  g_free(vm->exit_reason);
  g_free(vm->shutdown_reason);
  g_free(vm->health_problem);
  g_free(vm->write_error);
  nf_log_watch_disarm(&vm->console_log_watch);
  g_free(vm->files.block);
  g_free(vm->disk_path);
  g_free(vm->restore_file);
  g_free(vm);
}

gboolean nf_vm_balloon(NfVm *vm, guint64 bytes, NfQmpReplyFunc cb, gpointer user_data)
{
  if (vm->qmp == NULL || !vm->qmp_negotiated)
    return FALSE;
  vm->balloon_manual = TRUE;
  nf_qmp_balloon(vm->qmp, bytes, 0, cb, user_data);
  vm->balloon_target = bytes;
  /* Recorded, so that a supervisor adopting the guest keeps the memory
   * policy off it too (vm-adopt.c). */
  nf_vm_write_status(vm);
  return TRUE;
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
const char *nf_vm_mac(const NfVm *vm)
{
  return vm->mac;
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
gboolean nf_vm_is_restart(const NfVm *vm)
{
  return vm->restart_pending;
}
guint nf_vm_restarts(const NfVm *vm)
{
  return vm->restarts;
}
guint nf_vm_reboots(const NfVm *vm)
{
  return vm->reboots;
}
const char *nf_vm_disk_path(const NfVm *vm)
{
  return vm->disk_path;
}
NfExitKind nf_vm_exit_kind(const NfVm *vm)
{
  return vm->exit_kind;
}
const char *nf_vm_exit_reason(const NfVm *vm)
{
  return vm->exit_reason;
}
gint64 nf_vm_exit_time(const NfVm *vm)
{
  return vm->exit_time;
}
gboolean nf_vm_failed_at_start(const NfVm *vm)
{
  return vm->failed_at_start;
}

gboolean nf_vm_found_dead(const NfVm *vm)
{
  return vm->found_dead;
}
gint64 nf_vm_started_at(const NfVm *vm)
{
  return vm->started_at;
}
gint64 nf_vm_ready_at(const NfVm *vm)
{
  return vm->ready_at;
}
guint64 nf_vm_balloon_actual(const NfVm *vm)
{
  return vm->balloon_actual;
}

gboolean nf_vm_balloon_manual(const NfVm *vm)
{
  return vm->balloon_manual;
}
NfQmp *nf_vm_qmp(const NfVm *vm)
{
  return vm->qmp;
}
const char *nf_vm_console_log_path(const NfVm *vm)
{
  return vm->files.console_log;
}

gint64 nf_vm_console_run_start(const NfVm *vm)
{
  gint64 at = vm->console_run_mark - vm->console_log_moved;
  /* Past the end: rotated by rename (serial.c), which the count does not see. */
  return at > 0 && at <= nf_console_log_size(vm->files.console_log) ? at : 0;
}

guint64 nf_vm_balloon_target(const NfVm *vm)
{
  return vm->balloon_target;
}

gboolean nf_vm_storm_count_once(NfVm *vm, guint window_ms, gint64 now_us)
{
  gint64 *counted = &vm->tally.storm_counted_us;
  if (*counted && now_us - *counted <= (gint64)window_ms * 1000)
    return FALSE;
  *counted = now_us;
  return TRUE;
}
