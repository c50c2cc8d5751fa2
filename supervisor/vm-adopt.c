/*
 * vm-adopt.c: taking over a guest that a previous supervisor of this fleet
 * left (nf_vm_adopt, vm.h). Its pid file names the qemu, checked against
 * /proc so a recycled pid is never taken for ours; its status.json says what
 * it was doing and why it last ended. A live qemu is reconnected through the
 * very sockets it was started with (vm.c); one that died with a killed
 * foreground supervisor is made sure of and counted as stopped; one recorded
 * as up but gone gets the exit nobody saw. Apart from vm.c because it is a
 * second way into the running state, with its own evidence to weigh.
 */
#include "supervisor/vm-private.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <jansson.h>

#include "supervisor/console-log.h"

static char *read_cmdline(GPid pid);
static gboolean pid_is_our_qemu(NfVm *vm, GPid pid);
static gboolean cmdline_has(GPid pid, const char *needle);
static void load_recorded(NfVm *vm, json_t *status);
static void finish_dying(GPid pid);
static gboolean booted_unseen(NfVm *vm, json_t *status);
static void balloon_reply_cb(NfQmp *qmp, const NfQmpReply *reply, gpointer data);

gboolean nf_vm_read_pidfile(const NfVm *vm, GPid *pid)
{
  g_autofree char *text = NULL;
  if (!g_file_get_contents(vm->files.pidfile, &text, NULL, NULL))
    return FALSE;
  *pid = (GPid)g_ascii_strtoll(g_strstrip(text), NULL, 10);
  return *pid > 0;
}

/* Its command line, arguments joined by spaces; NULL when gone. */
static char *read_cmdline(GPid pid)
{
  g_autofree char *path = g_strdup_printf("/proc/%d/cmdline", (int)pid);
  char *cmd = NULL;
  gsize len = 0;
  if (!g_file_get_contents(path, &cmd, &len, NULL))
    return NULL;
  for (gsize i = 0; i + 1 < len; i++)
    if (cmd[i] == '\0')
      cmd[i] = ' ';
  return cmd;
}

static gboolean pid_is_our_qemu(NfVm *vm, GPid pid)
{
  /* Our pid file path is unique to this fleet and guest, and qemu got it on
   * its command line: a recycled pid cannot carry it. */
  g_autofree char *cmd = read_cmdline(pid);
  return cmd && strstr(cmd, vm->files.pidfile) != NULL && strstr(cmd, "-name guest=") != NULL;
}

static gboolean cmdline_has(GPid pid, const char *needle)
{
  g_autofree char *cmd = read_cmdline(pid);
  return cmd && strstr(cmd, needle) != NULL;
}

/* What a previous supervisor recorded: the restart count and the last exit
 * survive it (a tool reading status.json or `ps` after a supervisor crash
 * still sees why the guest last ended). */
static void load_recorded(NfVm *vm, json_t *status)
{
  vm->restarts = (guint)json_integer_value(json_object_get(status, "restarts"));
  const char *kind = json_string_value(json_object_get(status, "last_exit"));
  for (int k = NF_EXIT_NONE; kind && k < NF_EXIT_N_KINDS; k++)
    if (g_str_equal(kind, nf_exit_kind_name((NfExitKind)k)))
      vm->exit_kind = (NfExitKind)k;
  g_free(vm->exit_reason);
  vm->exit_reason = g_strdup(json_string_value(json_object_get(status, "last_exit_reason")));
  vm->exit_time = json_integer_value(json_object_get(status, "last_exit_at_us"));
}

/* A guest of a foreground supervisor that was killed: the kernel is killing
 * it too (PR_SET_PDEATHSIG), maybe not done yet. Make sure, and wait
 * (bounded) so its sockets and cgroup are free for the new run. */
static void finish_dying(GPid pid)
{
  int fd = (int)syscall(SYS_pidfd_open, pid, 0);
  if (fd < 0)
    return;
  syscall(SYS_pidfd_send_signal, fd, SIGKILL, NULL, 0);
  struct pollfd pfd = {.fd = fd, .events = POLLIN};
  while (poll(&pfd, 1, 5000) < 0 && errno == EINTR)
    ;
  close(fd);
}

/* Whether a guest recorded as booting printed its ready line while no
 * supervisor watched (an upgrade's hand-over mid-boot): its qemu logged it,
 * from the run's start that status.json keeps (`console_at`; a rotation
 * since only moves it down, so a stale one can miss the line, never find a
 * line of an earlier run). A --ready http guest's report is not in the log. */
static gboolean booted_unseen(NfVm *vm, json_t *status)
{
  json_t *at = json_object_get(status, "console_at");
  if (!vm->console_by_qemu || vm->env->ready_url || !json_is_integer(at))
    return FALSE;
  gint64 from = MIN((gint64)json_integer_value(at), vm->console_log_start);
  return nf_console_log_find(vm->files.console_log, from, vm->markers[NF_VM_MARKER_READY]);
}

gboolean nf_vm_adopt(NfVm *vm)
{
  GPid pid = 0;
  gboolean have_pid = nf_vm_read_pidfile(vm, &pid);
  g_autoptr(GError) error = NULL;
  json_auto_t *status = json_load_file(vm->files.status_path, 0, NULL);
  const char *was = json_string_value(json_object_get(status, "state"));
  /* Absent in files of older versions: then nothing is known. */
  gboolean died_with_it = json_is_true(json_object_get(status, "dies_with_supervisor"));
  gboolean ours = have_pid && pid_is_our_qemu(vm, pid);
  gboolean was_up = was && (g_str_equal(was, "ready") || g_str_equal(was, "booting") ||
                            g_str_equal(was, "starting") || g_str_equal(was, "unhealthy"));

  /* A guest that was down when its supervisor ended starts afresh. */
  if (ours || was_up)
    load_recorded(vm, status);
  if (ours && died_with_it) {
    finish_dying(pid);
  } else if (ours) {
    nf_vm_reset_run_facts(vm);
    vm->balloon_unknown = TRUE;
    /* A size a person set stays theirs: the memory policy keeps off it. */
    json_int_t target = json_integer_value(json_object_get(status, "balloon_target_bytes"));
    if (target > 0) {
      vm->balloon_target = (guint64)target;
      vm->balloon_manual = TRUE;
    }
    vm->proc = nf_process_adopt(pid, nf_vm_on_exit_cb, vm, &error);
    /* Its qemu logs its console itself unless an older version spawned it:
     * then the console stays held and we write the log (vm-console.c). */
    vm->console_by_qemu = cmdline_has(pid, ",logfile=");
    vm->console_log_start = nf_console_log_size(vm->files.console_log);
    if (vm->proc && nf_vm_attach_channels(vm, &error)) {
      vm->dies_with_supervisor = FALSE; /* spawned detached; adopting does not change that */
      vm->started_wall = json_integer_value(json_object_get(status, "started_at_us"));
      /* Uptime counts from the qemu's own start, not from its adoption. */
      gint64 age = vm->started_wall ? g_get_real_time() - vm->started_wall : 0;
      vm->started_at = g_get_monotonic_time() - CLAMP(age, 0, g_get_monotonic_time());
      if (vm->env->use_cgroups)
        vm->cgroup = nf_cgroup_new(vm->env->cgroup_name, vm->name, 0, NULL);
      if (vm->cgroup)
        vm->oom_kills_at_start = nf_cgroup_oom_kills(vm->cgroup);
      nf_vm_set_state(vm, NF_VM_STARTING, "adopted from a previous supervisor");
      /* Judged as a boot is: a qemu that never completes its QMP handshake
       * (stopped, wedged) is hung, not a guest that holds a boot slot for
       * ever. */
      nf_vm_arm_boot_timer(vm);
      if (g_strcmp0(was, "ready") != 0 && booted_unseen(vm, status))
        was = "ready";
      if (g_strcmp0(was, "ready") == 0) {
        vm->ready_at = g_get_monotonic_time();
        /* It was ready before; the QMP handshake and health confirm it is alive. */
        vm->qmp_negotiated = FALSE;
      }
      return TRUE;
    }
    gboolean running = vm->proc != NULL; /* adopted, but its sockets refused us */
    g_clear_pointer(&vm->proc, nf_process_forget);
    nf_vm_release(vm);
    if (running) {
      /* Alive, but not ours to supervise (no fd left while adopting
       * thousands, a socket gone): not a crash of the guest. It is ended
       * here, not left to the stray sweep, and starts afresh, nothing
       * counted against it. */
      finish_dying(pid);
      nf_vm_remove_runtime_files(vm);
      vm->exit_kind = NF_EXIT_STOPPED;
      vm->exit_time = g_get_real_time();
      g_free(vm->exit_reason);
      vm->exit_reason = g_strdup_printf("could not be taken over (%s): stopped, to start again",
                                        error ? error->message : "its channels did not answer");
      nf_vm_set_state(vm, NF_VM_STOPPED, vm->exit_reason);
      return FALSE;
    }
  }
  nf_vm_remove_runtime_files(vm);
  if (was_up && died_with_it) {
    /* By design, not a failure of the guest: no crash, no restart counted;
     * the caller queues it afresh. */
    vm->exit_kind = NF_EXIT_STOPPED;
    vm->exit_time = g_get_real_time();
    g_free(vm->exit_reason);
    vm->exit_reason = g_strdup("stopped with its supervisor (a foreground supervisor was killed; "
                               "its guests end with it by design)");
    nf_vm_set_state(vm, NF_VM_STOPPED, vm->exit_reason);
    return FALSE;
  }
  /* Recorded as up, but gone: it died while nobody was watching. */
  if (was_up) {
    nf_vm_reset_run_facts(vm);
    vm->status_known = FALSE;
    vm->found_dead = TRUE;
    nf_vm_set_state(vm, NF_VM_STARTING, "recorded as running by a previous supervisor");
    nf_vm_dispatch(vm, NF_VM_EV_EXIT, "died while no supervisor was watching");
    return TRUE;
  }
  return FALSE;
}

/* The balloon may have been moved by the previous supervisor, and qemu
 * reports a size only when it changes: without asking, `ps` showed the full
 * size, and a `balloon` to the size the guest already had waited for a
 * change that never came (found by the soak, seed 1616 step 679). */
void nf_vm_adopted_qmp_up(NfVm *vm)
{
  if (!vm->balloon_unknown || vm->qmp == NULL)
    return;
  vm->balloon_unknown = FALSE;
  nf_qmp_query_balloon(vm->qmp, 0, balloon_reply_cb, vm);
}

static void balloon_reply_cb(NfQmp *qmp, const NfQmpReply *reply, gpointer data)
{
  NfVm *vm = data;
  if (vm->qmp != qmp || reply->ret == NULL)
    return; /* an old connection closing, or no balloon device */
  json_t *actual = json_object_get(reply->ret, "actual");
  if (json_is_integer(actual))
    vm->balloon_actual = (guint64)json_integer_value(actual);
}
