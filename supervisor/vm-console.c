/*
 * vm-console.c: a guest's console as the supervisor holds it: only while
 * the live stream is needed (issue 17).
 *
 * qemu appends every byte of a guest's console to its console.log itself
 * (chardev logfile=, see console-log.h), connected client or not. So the
 * supervisor connects to the console socket qemu listens on for us only:
 *  - from spawn until the guest is ready: the ready line is read live;
 *  - for input (a `console` writer): connected at the first keystroke, let
 *    go NF_VM_CONSOLE_LINGER_MS after the last input or the last watcher.
 * Watchers (a `console` client, `logs --follow`, the HTTP console stream)
 * read the log, not the socket (log-follow.h): qemu logs every chunk but
 * sends one only to a client it has already accepted, so a watcher fed from
 * the socket missed what the guest printed between its replay and qemu's
 * accept (a prompt printed just after the ready line). A read-only watcher
 * needs no socket of its own (one held for the boot or for input stays held
 * until the last watcher leaves, as before).
 * A ready guest nobody watches costs no fd and no buffer for its console:
 * one fd per guest (QMP) instead of two, which is what lets 10,000 guests
 * fit under a 20,000 open-file limit. What the live scanner would have seen
 * after that (a kernel panic's line, which tells a panic from the reboot
 * that follows it) is looked for in the log when the guest exits; the recent
 * output quoted on failures comes from the log's tail.
 *
 * A guest adopted from a supervisor whose qemu does not log by itself (an
 * older version: no logfile= on its command line) keeps its console held,
 * and the supervisor writes the log as before.
 */
#include "supervisor/vm-private.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "supervisor/console-log.h"

static int connect_unix(const char *path, GError **error);
static void marker_cb(NfSerial *serial, guint which, const char *line, gpointer data);
static void console_data_cb(NfSerial *serial, const char *buf, gsize len, gpointer data);
static void log_failed_cb(NfSerial *serial, int err, gpointer data);
static void console_eof_cb(NfSerial *serial, gpointer data);
static gboolean linger_done_cb(gpointer data);
static void linger_from_now(NfVm *vm);
static gboolean line_logged(NfVm *vm, const char *line);
static gboolean ready_wait_cb(gpointer data);
static void to_watchers(NfVm *vm, const char *buf, gsize len);
static void follow_cb(const char *buf, gsize len, gpointer data);

static int connect_unix(const char *path, GError **error)
{
  struct sockaddr_un sun = {.sun_family = AF_UNIX};
  g_strlcpy(sun.sun_path, path, sizeof(sun.sun_path));
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  /* A listening unix socket with room in its backlog accepts at once. */
  if (fd >= 0 && connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0)
    return fd;
  int e = errno;
  if (fd >= 0)
    close(fd);
  g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(e), "cannot connect to %s: %s", path,
              g_strerror(e));
  return -1;
}

gboolean nf_vm_console_attach(NfVm *vm, GError **error)
{
  static const NfSerialCallbacks ser_cb = {.marker = marker_cb,
                                           .data = console_data_cb,
                                           .log_failed = log_failed_cb,
                                           .eof = console_eof_cb};
  if (vm->console)
    return TRUE;
  int fd = connect_unix(vm->files.serial_path, error);
  if (fd < 0)
    return FALSE;
  /* qemu writes the log; only a qemu that does not is logged by us. */
  vm->console = nf_serial_new(fd, vm->console_by_qemu ? NULL : vm->files.console_log,
                              vm->env->config->log_max, vm->markers, &ser_cb, vm, error);
  return vm->console != NULL;
}

void nf_vm_console_settle(NfVm *vm)
{
  if (vm->console == NULL || !vm->console_by_qemu || vm->state != NF_VM_READY ||
      vm->watchers->len > 0 || vm->console_linger_timer)
    return;
  g_clear_pointer(&vm->console, nf_serial_free);
}

/* Watchers read the log from `from` on. With no follower (no inotify, the
 * watch limit reached: told once) they read the socket, as for a qemu that
 * does not log. */
static void follow_from(NfVm *vm, gint64 from)
{
  /* qemu appends to the log (logappend=on) and makes it if missing: made
   * here first, so that it can be watched before qemu opens it. */
  int fd = open(vm->files.console_log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd >= 0)
    close(fd);
  g_autoptr(GError) error = NULL;
  if (vm->console_follow == NULL)
    vm->console_follow = nf_log_follow_new(vm->files.console_log, from, follow_cb, vm, &error);
  else if (!nf_log_follow_restart(vm->console_follow, from, &error)) /* a new file? */
    g_clear_pointer(&vm->console_follow, nf_log_follow_free);
  /* Watchers left without a follower: the socket, connected if let go. */
  if (vm->console_follow == NULL && vm->watchers->len > 0 && vm->console == NULL && vm->proc &&
      !nf_process_has_exited(vm->proc))
    nf_vm_console_attach(vm, NULL);
  static gboolean told;
  if (error && !told && vm->cb.notice) {
    told = TRUE;
    g_autofree char *msg =
        g_strdup_printf("console watchers read the console socket instead of the log, and may "
                        "miss output printed as they attach: %s",
                        error->message);
    vm->cb.notice(vm, msg, vm->user_data);
  }
}

/* Caps the log qemu writes; watchers get all the log held first, then what
 * the cap moved to the .1 past their offset, and read on in the log from
 * where that left them. Sets *moved (the bytes that left the log's head). */
static gboolean cap_log(NfVm *vm, gint64 *moved)
{
  if (vm->console_follow)
    nf_log_follow_drain(vm->console_follow);
  const char *log = vm->files.console_log;
  guint64 max = vm->env->config->log_max ? vm->env->config->log_max : NF_DEFAULT_LOG_MAX;
  g_autoptr(GError) error = NULL;
  if (!nf_console_log_cap(log, max, moved, &error)) {
    if (error) /* a full disk, say: the log grows past its cap, and someone should know */
      nf_vm_note_write_message(vm, error->message);
    return FALSE;
  }
  vm->console_log_moved += *moved;
  if (vm->console_follow == NULL)
    return TRUE;
  gint64 at = nf_log_follow_offset(vm->console_follow);
  if (*moved > at) {
    /* What qemu appended between the drain and the cap's read is in the .1. */
    g_autofree char *old = g_strconcat(log, ".1", NULL);
    gsize len;
    g_autofree char *rest = nf_console_log_read(old, at, *moved, &len);
    to_watchers(vm, rest, len);
  }
  if (vm->console_follow) /* (a watcher's callback may have ended it) */
    follow_from(vm, at > *moved ? at - *moved : 0);
  return TRUE;
}

void nf_vm_console_note_start(NfVm *vm)
{
  vm->console_by_qemu = TRUE;
  /* Bounded before qemu opens it (it only appends); health keeps it so. */
  gint64 moved;
  cap_log(vm, &moved);
  vm->console_log_start = nf_console_log_size(vm->files.console_log);
  vm->console_run_mark = vm->console_log_start + vm->console_log_moved;
  /* Watchers read on from here (those of an adopted guest whose qemu did
   * not log read the socket so far; this qemu logs). */
  if (vm->watchers->len > 0)
    follow_from(vm, vm->console_log_start);
}

void nf_vm_console_cap_log(NfVm *vm)
{
  if (!vm->console_by_qemu)
    return; /* serial.c caps the log it writes */
  if (nf_log_watch_quiet(&vm->console_log_watch))
    return; /* nothing written since the last look: nothing to cap */
  /* Armed before the look, so what qemu writes during it is seen next time
   * (a rotation's own truncation too: one look more, harmless). */
  nf_log_watch_arm(&vm->console_log_watch, vm->files.console_log);
  gint64 moved;
  if (cap_log(vm, &moved)) /* the current run's start moved down with the rest */
    vm->console_log_start = vm->console_log_start > moved ? vm->console_log_start - moved : 0;
}

void nf_vm_console_check_exit(NfVm *vm)
{
  /* Only where a panic would change the verdict (nf_exit_kind_classify). */
  if (!vm->console_by_qemu || vm->panic_seen || vm->stop_requested || vm->hung ||
      vm->watchdog_event)
    return;
  if (nf_console_log_find(vm->files.console_log, vm->console_log_start,
                          vm->markers[NF_VM_MARKER_PANIC]))
    vm->panic_seen = TRUE;
}

static void marker_cb(NfSerial *serial, guint which, const char *line, gpointer data)
{
  NfVm *vm = data;
  if (which == NF_VM_MARKER_PANIC) {
    vm->panic_seen = TRUE;
    return;
  }
  if (vm->env->ready_url)
    return; /* --ready http: only the guest's request counts */
  const char *s = strstr(line, "serial=");
  g_autofree char *reason = g_strdup_printf("ready (%s)", s ? s : line);
  /* qemu writes a chunk to our socket, then to the log: whoever acts on
   * "ready" (a test, `run --exec`) may read the log at once, so ready waits,
   * 1 ms at a time and 200 ms at most, until the line is there too. */
  if (vm->console_by_qemu && vm->state != NF_VM_READY && !line_logged(vm, line)) {
    g_free(vm->ready_line);
    vm->ready_line = g_strdup(line);
    g_free(vm->ready_reason);
    vm->ready_reason = g_steal_pointer(&reason);
    vm->ready_waits = 0;
    nf_vm_clear_timer(&vm->ready_wait_timer);
    vm->ready_wait_timer = nf_deadline_add(1, ready_wait_cb, vm);
    return;
  }
  nf_vm_dispatch(vm, NF_VM_EV_READY, reason);
}

/* This run's log holds `line` and its end of line. */
static gboolean line_logged(NfVm *vm, const char *line)
{
  return nf_console_log_find_line(vm->files.console_log, vm->console_log_start, line);
}

static gboolean ready_wait_cb(gpointer data)
{
  NfVm *vm = data;
  vm->ready_wait_timer = 0;
  if (++vm->ready_waits < 200 && !line_logged(vm, vm->ready_line)) {
    vm->ready_wait_timer = nf_deadline_add(1, ready_wait_cb, vm);
    return G_SOURCE_REMOVE;
  }
  g_autofree char *reason = g_steal_pointer(&vm->ready_reason);
  g_clear_pointer(&vm->ready_line, g_free);
  nf_vm_dispatch(vm, NF_VM_EV_READY, reason);
  return G_SOURCE_REMOVE;
}

static void console_data_cb(NfSerial *serial, const char *buf, gsize len, gpointer data)
{
  NfVm *vm = data;
  if (vm->console_follow == NULL) /* a qemu that does not log, or no inotify */
    to_watchers(vm, buf, len);
}

static void follow_cb(const char *buf, gsize len, gpointer data)
{
  NfVm *vm = data;
  nf_vm_console_unanchor(vm); /* started for a watcher that never came */
  to_watchers(vm, buf, len);
}

/* A watcher's callback may unwatch any of them: walk a copy, and call
 * only those still watching. */
static void to_watchers(NfVm *vm, const char *buf, gsize len)
{
  if (vm->watchers->len == 0)
    return;
  g_autoptr(GArray) copy = g_array_copy(vm->watchers);
  for (guint i = 0; i < copy->len; i++) {
    NfVmWatcher *w = &g_array_index(copy, NfVmWatcher, i);
    for (guint j = 0; j < vm->watchers->len; j++)
      if (g_array_index(vm->watchers, NfVmWatcher, j).id == w->id) {
        w->func(vm, buf, len, w->user_data);
        break;
      }
  }
}

static void log_failed_cb(NfSerial *serial, int err, gpointer data)
{
  NfVm *vm = data;
  nf_vm_note_write(vm, vm->files.console_log, err);
}

static void console_eof_cb(NfSerial *serial, gpointer data)
{
  NfVm *vm = data;
  /* Before QMP is up, the console may be the first stream to end. */
  if (vm->proc)
    nf_process_watch(vm->proc);
}

guint nf_vm_console_watch(NfVm *vm, gsize replay, char **tail, NfVmConsoleFunc func,
                          gpointer user_data)
{
  NfVmWatcher w = {.id = ++vm->next_watcher_id, .func = func, .user_data = user_data};
  if (vm->console_by_qemu) {
    /* The replay ends where the watchers' stream stands: at the follower's
     * offset (what is past it reaches every watcher next). */
    gint64 end = nf_vm_console_watch_start(vm);
    if (vm->console_follow) {
      *tail = nf_console_log_tail_at(vm->files.console_log, end, replay);
      g_array_append_val(vm->watchers, w);
      return w.id;
    }
  }
  /* No follower: the live stream is the socket's, for a guest whose console
   * we let go, too. */
  *tail = nf_vm_console_tail(vm, replay);
  g_array_append_val(vm->watchers, w);
  if (vm->console == NULL && vm->proc && !nf_process_has_exited(vm->proc))
    nf_vm_console_attach(vm, NULL);
  return w.id;
}

gint64 nf_vm_console_watch_start(NfVm *vm)
{
  /* A follower whose file went away (deleted, made anew) watches again, or
   * goes. Watchers on the socket (no follower when they came) stay there
   * until the next spawn: a switch mid-stream would repeat or drop what qemu
   * had sent but not yet logged, or logged but we not yet read. */
  if (vm->console_follow && !nf_log_follow_watching(vm->console_follow))
    follow_from(vm, nf_log_follow_offset(vm->console_follow));
  else if (vm->console_follow == NULL && vm->console_by_qemu && vm->watchers->len == 0)
    follow_from(vm, nf_console_log_size(vm->files.console_log));
  /* Two looks at the log's size could differ: the follower is the anchor. */
  if (vm->console_follow)
    return nf_log_follow_offset(vm->console_follow);
  return nf_console_log_size(vm->files.console_log);
}

void nf_vm_console_unanchor(NfVm *vm)
{
  if (vm->watchers->len == 0)
    g_clear_pointer(&vm->console_follow, nf_log_follow_free);
}

void nf_vm_console_unwatch(NfVm *vm, guint id)
{
  for (guint i = 0; i < vm->watchers->len; i++)
    if (g_array_index(vm->watchers, NfVmWatcher, i).id == id) {
      g_array_remove_index(vm->watchers, i);
      break;
    }
  /* Not at once: what the last watcher typed may still sit unread in the
   * socket (qemu reads it as fast as the guest's UART takes it, and drops
   * what is left when we hang up). */
  nf_vm_console_unanchor(vm);
  if (vm->watchers->len == 0 && vm->console)
    linger_from_now(vm);
}

/* With nobody watching, the console is let go NF_VM_CONSOLE_LINGER_MS
 * from now (a console qemu logs itself; serial.c's own log needs it held). */
static void linger_from_now(NfVm *vm)
{
  if (!vm->console_by_qemu)
    return;
  nf_vm_clear_timer(&vm->console_linger_timer);
  vm->console_linger_timer = nf_deadline_add(NF_VM_CONSOLE_LINGER_MS, linger_done_cb, vm);
}

static gboolean linger_done_cb(gpointer data)
{
  NfVm *vm = data;
  vm->console_linger_timer = 0;
  if (vm->console && nf_serial_input_pending(vm->console)) {
    linger_from_now(vm); /* typed or piped input still on its way in */
    return G_SOURCE_REMOVE;
  }
  nf_vm_console_settle(vm);
  return G_SOURCE_REMOVE;
}

gssize nf_vm_console_write(NfVm *vm, const char *buf, gsize len)
{
  /* Input for a guest whose console we let go: connect again, and with
   * nobody watching, let go a while after the last input (the guest may
   * answer, and qemu must read what we sent before we hang up). */
  if (vm->console == NULL && vm->proc && !nf_process_has_exited(vm->proc))
    nf_vm_console_attach(vm, NULL);
  if (vm->console == NULL)
    return -1;
  gssize n = nf_serial_write(vm->console, buf, len);
  if (vm->watchers->len == 0)
    linger_from_now(vm);
  return n;
}

char *nf_vm_console_tail(const NfVm *vm, gsize max_bytes)
{
  if (vm->console) {
    char *tail = nf_serial_tail(vm->console, max_bytes);
    if (*tail)
      return tail;
    g_free(tail);
  }
  return nf_console_log_tail(vm->files.console_log, max_bytes);
}
