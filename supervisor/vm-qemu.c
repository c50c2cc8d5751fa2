/*
 * vm-qemu.c: what a guest's qemu tells the supervisor, and what it means:
 * its QMP greeting and events (the SHUTDOWN reason, watchdog, panic and
 * reboot that classify an exit, a snapshot restore's progress, the
 * balloon's size), a monitor that closes while qemu runs on, the process
 * exit itself, and the tail of its stderr for messages. Each becomes a
 * fact on the NfVm or an event for lifecycle.c (nf_vm_dispatch); nothing
 * here decides what a state does.
 */
#include "supervisor/vm-private.h"

#include <string.h>
#include <sys/wait.h>
#include <jansson.h>

#include "supervisor/deadlines.h"
#include "supervisor/snapshot.h"

static void qmp_ready_cb(NfQmp *qmp, gpointer data);
static void qmp_event_cb(NfQmp *qmp, const char *name, json_t *data, gint64 ts, gpointer ud);
static gboolean qmp_gone_cb(gpointer data);
static void qmp_closed_cb(NfQmp *qmp, const GError *error, gpointer data);
static gboolean is_qemu_info(const char *line);

const NfQmpCallbacks nf_vm_qmp_callbacks = {
    .ready = qmp_ready_cb, .event = qmp_event_cb, .closed = qmp_closed_cb};

static void qmp_ready_cb(NfQmp *qmp, gpointer data)
{
  NfVm *vm = data;
  vm->qmp_negotiated = TRUE;
  nf_vm_adopted_qmp_up(vm);
  if (vm->restore_file)
    nf_snapshot_restore_begin(qmp, vm->restore_file);
  nf_vm_dispatch(vm, NF_VM_EV_QMP_UP, "QMP connected");
}

static void qmp_event_cb(NfQmp *qmp, const char *name, json_t *data, gint64 ts, gpointer ud)
{
  NfVm *vm = ud;
  if (g_str_equal(name, "SHUTDOWN")) {
    /* qemu's own word for why it is going: it classifies the exit. */
    g_free(vm->shutdown_reason);
    vm->shutdown_reason = g_strdup(json_string_value(json_object_get(data, "reason")));
  } else if (g_str_equal(name, "WATCHDOG")) {
    vm->watchdog_event = TRUE;
  } else if (g_str_equal(name, "RESET")) {
    /* Only without -no-reboot (Nerves): the guest rebooted in place and
     * will print its ready line again. */
    if (json_is_true(json_object_get(data, "guest")))
      vm->reboots++;
  } else if (g_str_equal(name, "GUEST_PANICKED")) {
    vm->panic_seen = TRUE;
  } else if (g_str_equal(name, "MIGRATION") && vm->restore_file) {
    /* Restoring from the fleet's snapshot: resumed once loaded. */
    if (nf_snapshot_restore_event(qmp, data))
      g_clear_pointer(&vm->restore_file, g_free);
  } else if (g_str_equal(name, "BALLOON_CHANGE")) {
    json_t *actual = json_object_get(data, "actual");
    if (json_is_integer(actual))
      vm->balloon_actual = (guint64)json_integer_value(actual);
  }
}

static gboolean qmp_gone_cb(gpointer data)
{
  NfVm *vm = data;
  vm->qmp_gone_timer = 0;
  if (vm->proc && !nf_process_has_exited(vm->proc))
    nf_vm_dispatch(vm, NF_VM_EV_HEALTH_FAIL, "its QMP monitor closed while qemu kept running");
  return G_SOURCE_REMOVE;
}

static void qmp_closed_cb(NfQmp *qmp, const GError *error, gpointer data)
{
  NfVm *vm = data;
  /* The process exit is the authority on a guest's end; a closed monitor
   * alone is not. But it is when we start watching the process (spawned
   * with watch_later): everything qemu said over QMP has been read by now,
   * its SHUTDOWN reason included, and its exit callback follows. */
  if (vm->proc)
    nf_process_watch(vm->proc);
  /* Follows within moments, that is. A qemu that runs on without its
   * monitor (it broke) can no longer be probed or stopped in order: the
   * probes' deadline later it is hung, killed and restarted, where it
   * used to go unjudged. */
  if (vm->proc && vm->qmp_gone_timer == 0 &&
      (vm->state == NF_VM_STARTING || vm->state == NF_VM_BOOTING || vm->state == NF_VM_READY))
    vm->qmp_gone_timer =
        nf_deadline_add(MAX(vm->env->config->health_timeout_ms, 1000), qmp_gone_cb, vm);
}

void nf_vm_on_exit_cb(NfProcess *proc, int status, gpointer data)
{
  NfVm *vm = data;
  vm->wait_status = status;
  vm->status_known = nf_process_status_known(proc);
  /* qemu exits by itself when it cannot load the snapshot: drop it, so this
   * guest's restart (and every later start) boots instead. */
  if (vm->restore_file && !vm->stop_requested && WIFEXITED(status) && WEXITSTATUS(status) != 0) {
    g_autofree char *tail = nf_vm_stderr_tail(vm, 4);
    const char *last = strrchr(tail, '\n');
    g_autofree char *why = g_strdup_printf("%s: %s", vm->name, last ? last + 1 : tail);
    if (nf_snapshot_restore_rejected(tail))
      nf_snapshot_restore_failed(vm->env->snapshot, why);
  }
  /* A pidfd can win the race with qemu's last QMP words (SHUTDOWN and its
   * reason, written just before it exits): read them first, or a guest
   * reboot or a SIGTERM looks like a poweroff. (A spawned guest is watched
   * only once QMP has closed, so this matters for adopted ones.) The
   * console's ring keeps what arrived; a reader may not block here. */
  nf_qmp_drain(vm->qmp);
  nf_vm_console_check_exit(vm);
  nf_vm_dispatch(vm, NF_VM_EV_EXIT, NULL);
}

/* One of qemu's info_report lines: "PROGRAM: [LOCATION: ]info: ...", such
 * as "QEMU waiting for connection on: ..." for every server socket that
 * waits. They say nothing about a failure. */
static gboolean is_qemu_info(const char *line)
{
  const char *colon = strstr(line, ": ");
  if (colon == NULL || !g_str_has_prefix(line, "qemu") || memchr(line, ' ', colon - line))
    return FALSE; /* not "qemu...: " at the start */
  return strstr(colon, ": info: ") != NULL;
}

char *nf_vm_stderr_tail(const NfVm *vm, guint max_lines)
{
  g_autofree char *text = NULL;
  if (!g_file_get_contents(vm->files.qemu_log, &text, NULL, NULL))
    return g_strdup("");
  /* Only what the latest run wrote: after the last header line. */
  char *start = g_strrstr(text, "\n=== ");
  start = start ? strchr(start + 1, '\n') : strchr(text, '\n');
  start = start ? start + 1 : text;
  g_auto(GStrv) all = g_strsplit(g_strchomp(start), "\n", -1);
  g_autoptr(GPtrArray) lines = g_ptr_array_new();
  for (char **l = all; *l; l++)
    if (!is_qemu_info(*l))
      g_ptr_array_add(lines, *l);
  guint from = lines->len > max_lines ? lines->len - max_lines : 0;
  g_ptr_array_add(lines, NULL);
  return g_strjoinv("\n", (char **)lines->pdata + from);
}
