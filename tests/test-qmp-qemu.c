/*
 * test-qmp-qemu.c: the QMP client against a real qemu-system-aarch64 running
 * the default guest.
 *
 * Guards what a scripted peer cannot: that the client negotiates with the
 * qemu we ship against, that the typed helpers spell commands and arguments
 * the way qemu 7.2 accepts them, and that the events the supervisor relies on
 * (BALLOON_CHANGE, SHUTDOWN reason host-qmp-quit) arrive as expected, along
 * with the balloon stats heartbeat (guest-stats last-update advancing), and
 * that qemu's uint64 "no value" stats (beyond int64) don't break the parser.
 *
 * qemu gets its QMP monitor and serial port as socketpair ends (no socket
 * files to wait for). It runs with -pidfile inside the test's temp dir so the
 * leftover check can find it, and with PDEATHSIG so that a failed assertion
 * (which aborts this process) still takes qemu down with it.
 */
#include "qmp/qmp.h"
#include "tests/lib/nf-test.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <glib-unix.h>

#define DEADLINE_MS 60000
#define QMP_FD 3
#define SERIAL_FD 4

typedef struct {
  char *dir;
  GPid pid;
  gboolean exited;
  int wait_status;
  guint child_watch;
  int serial_fd;
  guint serial_watch;
  GString *console;
  NfQmp *qmp;
  gboolean ready;
  gboolean closed;
  GError *closed_error;
  json_t *last_balloon_change; /* data of the latest BALLOON_CHANGE */
  char *shutdown_reason;
  /* the latest command result */
  int replies;
  json_t *ret;
  GError *error;
} Vm;

static void child_setup(gpointer data);
static void vm_start(Vm *vm);
static void vm_reap(Vm *vm);
static void child_exit_cb(GPid pid, gint status, gpointer data);
static gboolean serial_read_cb(gint fd, GIOCondition cond, gpointer data);
static void ready_cb(NfQmp *qmp, gpointer data);
static void event_cb(NfQmp *qmp, const char *name, json_t *data, gint64 ts, gpointer ud);
static void closed_cb(NfQmp *qmp, const GError *error, gpointer data);
static void reply_cb(NfQmp *qmp, const NfQmpReply *reply, gpointer data);
static gboolean vm_ready(gpointer data);
static gboolean vm_booted(gpointer data);
static gboolean vm_replied(gpointer data);
static gboolean vm_balloon_at_64m(gpointer data);
static gboolean vm_shut_down(gpointer data);
static gboolean vm_exited(gpointer data);
static json_t *vm_call(Vm *vm, void (*issue)(Vm *vm));

static const NfQmpCallbacks callbacks = {ready_cb, event_cb, closed_cb};

static void child_setup(gpointer data)
{
  /* If the test dies (a failed assertion aborts), qemu must not outlive it. */
  prctl(PR_SET_PDEATHSIG, SIGKILL);
}

static void vm_start(Vm *vm)
{
  int qmp_sv[2], ser_sv[2];
  g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, qmp_sv), ==, 0);
  g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ser_sv), ==, 0);

  g_autofree char *kernel = nf_test_guest_kernel();
  g_autofree char *initrd = nf_test_guest_initrd();
  g_autofree char *pidfile = g_build_filename(vm->dir, "qemu.pid", NULL);
  g_autofree char *qmp_chardev = g_strdup_printf("socket,id=mon0,fd=%d", QMP_FD);
  g_autofree char *ser_chardev = g_strdup_printf("socket,id=ser0,fd=%d", SERIAL_FD);
  const char *argv[] = {"qemu-system-aarch64",
                        "-M",
                        "virt",
                        "-accel",
                        "tcg",
                        "-cpu",
                        "cortex-a53",
                        "-m",
                        "128",
                        "-display",
                        "none",
                        "-no-reboot",
                        "-nodefaults",
                        "-kernel",
                        kernel,
                        "-initrd",
                        initrd,
                        "-append",
                        "console=ttyAMA0 quiet panic=-1 cma=0",
                        "-device",
                        "virtio-balloon-pci,id=balloon0,free-page-reporting=on",
                        "-chardev",
                        qmp_chardev,
                        "-mon",
                        "chardev=mon0,mode=control",
                        "-chardev",
                        ser_chardev,
                        "-serial",
                        "chardev:ser0",
                        "-pidfile",
                        pidfile,
                        NULL};
  int source_fds[] = {qmp_sv[1], ser_sv[1]};
  int target_fds[] = {QMP_FD, SERIAL_FD};
  g_autoptr(GError) error = NULL;
  gboolean ok = g_spawn_async_with_pipes_and_fds(
      vm->dir, argv, NULL, G_SPAWN_SEARCH_PATH | G_SPAWN_DO_NOT_REAP_CHILD, child_setup, NULL, -1,
      -1, -1, source_fds, target_fds, G_N_ELEMENTS(source_fds), &vm->pid, NULL, NULL, NULL, &error);
  g_assert_no_error(error);
  g_assert_true(ok);
  close(qmp_sv[1]);
  close(ser_sv[1]);
  vm->child_watch = g_child_watch_add(vm->pid, child_exit_cb, vm);

  vm->console = g_string_new(NULL);
  vm->serial_fd = ser_sv[0];
  g_unix_set_fd_nonblocking(vm->serial_fd, TRUE, NULL);
  vm->serial_watch = g_unix_fd_add(vm->serial_fd, G_IO_IN | G_IO_HUP, serial_read_cb, vm);
  vm->qmp = nf_qmp_new_from_fd(qmp_sv[0], NULL, &callbacks, vm);
}

static void child_exit_cb(GPid pid, gint status, gpointer data)
{
  Vm *vm = data;
  vm->exited = TRUE;
  vm->wait_status = status;
  vm->child_watch = 0;
  g_spawn_close_pid(pid);
}

/* Keep draining the serial port: a guest whose UART is not read stalls. */
static gboolean serial_read_cb(gint fd, GIOCondition cond, gpointer data)
{
  Vm *vm = data;
  char buf[4096];
  ssize_t n = read(fd, buf, sizeof(buf));
  if (n > 0) {
    g_string_append_len(vm->console, buf, n);
    return G_SOURCE_CONTINUE;
  }
  if (n < 0 && errno == EAGAIN)
    return G_SOURCE_CONTINUE;
  vm->serial_watch = 0;
  return G_SOURCE_REMOVE;
}

/* Waits for qemu to exit (killing it if it won't) and releases everything. */
static void vm_reap(Vm *vm)
{
  if (!vm->exited && !nf_test_wait_for(vm_exited, vm, DEADLINE_MS)) {
    kill(vm->pid, SIGKILL);
    g_assert_true(nf_test_wait_for(vm_exited, vm, DEADLINE_MS));
  }
  if (vm->serial_watch)
    g_source_remove(vm->serial_watch);
  close(vm->serial_fd);
  if (vm->qmp) {
    nf_qmp_close(vm->qmp);
    g_clear_pointer(&vm->qmp, nf_qmp_unref);
  }
  g_string_free(vm->console, TRUE);
  g_clear_pointer(&vm->last_balloon_change, json_decref);
  g_clear_pointer(&vm->shutdown_reason, g_free);
  g_clear_pointer(&vm->ret, json_decref);
  g_clear_error(&vm->error);
  g_clear_error(&vm->closed_error);
}

static void ready_cb(NfQmp *qmp, gpointer data)
{
  ((Vm *)data)->ready = TRUE;
}

static void event_cb(NfQmp *qmp, const char *name, json_t *data, gint64 ts, gpointer ud)
{
  Vm *vm = ud;
  g_test_message("event %s at %" G_GINT64_FORMAT, name, ts);
  g_assert_cmpint(ts, >, 0);
  if (g_str_equal(name, "BALLOON_CHANGE")) {
    g_clear_pointer(&vm->last_balloon_change, json_decref);
    vm->last_balloon_change = json_incref(data);
  } else if (g_str_equal(name, "SHUTDOWN")) {
    g_free(vm->shutdown_reason);
    vm->shutdown_reason = g_strdup(json_string_value(json_object_get(data, "reason")));
  }
}

static void closed_cb(NfQmp *qmp, const GError *error, gpointer data)
{
  Vm *vm = data;
  g_assert_false(vm->closed);
  vm->closed = TRUE;
  if (error)
    vm->closed_error = g_error_copy(error);
}

static void reply_cb(NfQmp *qmp, const NfQmpReply *reply, gpointer data)
{
  Vm *vm = data;
  vm->replies++;
  g_clear_pointer(&vm->ret, json_decref);
  g_clear_error(&vm->error);
  if (reply->ret)
    vm->ret = json_incref(reply->ret);
  else
    vm->error = g_error_copy(reply->error);
}

static gboolean vm_ready(gpointer data)
{
  return ((Vm *)data)->ready;
}

static gboolean vm_booted(gpointer data)
{
  return strstr(((Vm *)data)->console->str, "nervesfleet-ready serial=") != NULL;
}

static gboolean vm_replied(gpointer data)
{
  return ((Vm *)data)->replies > 0;
}

static gboolean vm_balloon_at_64m(gpointer data)
{
  Vm *vm = data;
  return json_integer_value(json_object_get(vm->last_balloon_change, "actual")) == 64 << 20;
}

static gboolean vm_shut_down(gpointer data)
{
  Vm *vm = data;
  return vm->shutdown_reason != NULL && vm->closed;
}

static gboolean vm_exited(gpointer data)
{
  return ((Vm *)data)->exited;
}

/* Issues one command and waits for its reply; returns the "return" member (a
 * new reference), failing the test on any error. */
static json_t *vm_call(Vm *vm, void (*issue)(Vm *vm))
{
  vm->replies = 0;
  issue(vm);
  g_assert_true(nf_test_wait_for(vm_replied, vm, DEADLINE_MS));
  g_assert_no_error(vm->error);
  g_assert_nonnull(vm->ret);
  return json_incref(vm->ret);
}

static void issue_query_status(Vm *vm)
{
  nf_qmp_query_status(vm->qmp, DEADLINE_MS, reply_cb, vm);
}

static void issue_balloon_64m(Vm *vm)
{
  nf_qmp_balloon(vm->qmp, 64 << 20, DEADLINE_MS, reply_cb, vm);
}

static void issue_query_balloon(Vm *vm)
{
  nf_qmp_query_balloon(vm->qmp, DEADLINE_MS, reply_cb, vm);
}

static void issue_stats_interval(Vm *vm)
{
  nf_qmp_qom_set(vm->qmp, NF_QMP_BALLOON_PATH, "guest-stats-polling-interval", json_integer(1),
                 DEADLINE_MS, reply_cb, vm);
}

static void issue_guest_stats(Vm *vm)
{
  nf_qmp_qom_get(vm->qmp, NF_QMP_BALLOON_PATH, "guest-stats", DEADLINE_MS, reply_cb, vm);
}

static void issue_quit(Vm *vm)
{
  nf_qmp_quit(vm->qmp, DEADLINE_MS, reply_cb, vm);
}

/* A one-shot wake-up, so that "wait until last-update advances" is a
 * sequence of timed queries, never a sleep. */
static gboolean flag_cb(gpointer data)
{
  *(gboolean *)data = TRUE;
  return G_SOURCE_REMOVE;
}

static gboolean flag_set(gpointer data)
{
  return *(gboolean *)data;
}

static void test_qemu_session(void)
{
  Vm vm = {0};
  vm.dir = nf_test_tmpdir_new();
  vm_start(&vm);

  g_assert_true(nf_test_wait_for(vm_ready, &vm, DEADLINE_MS));
  g_assert_nonnull(nf_qmp_version_string(vm.qmp));
  g_test_message("qemu %s", nf_qmp_version_string(vm.qmp));
  g_assert_true(g_str_has_prefix(nf_qmp_version_string(vm.qmp), "7."));

  json_auto_t *status = vm_call(&vm, issue_query_status);
  g_assert_cmpstr(json_string_value(json_object_get(status, "status")), ==, "running");
  g_assert_true(json_is_true(json_object_get(status, "running")));

  /* Before the guest reported any stats, qemu prints each as uint64 -1
   * (18446744073709551615, beyond jansson's int64): the reply must still
   * arrive, with the values wrapped to -1, and the connection stay up. */
  json_auto_t *early = vm_call(&vm, issue_guest_stats);
  if (json_integer_value(json_object_get(early, "last-update")) == 0) /* not booted yet */
    g_assert_cmpint(
        json_integer_value(json_object_get(json_object_get(early, "stats"), "stat-total-memory")),
        ==, -1);
  else
    g_test_message("guest reported stats already; uint64 -1 path not exercised");
  g_assert_false(nf_qmp_is_closed(vm.qmp));

  /* The balloon driver and stats need the guest kernel up. */
  g_assert_true(nf_test_wait_for(vm_booted, &vm, DEADLINE_MS));

  json_auto_t *b = vm_call(&vm, issue_balloon_64m);
  g_assert_true(nf_test_wait_for(vm_balloon_at_64m, &vm, DEADLINE_MS));
  json_auto_t *qb = vm_call(&vm, issue_query_balloon);
  g_assert_cmpint(json_integer_value(json_object_get(qb, "actual")), ==,
                  json_integer_value(json_object_get(vm.last_balloon_change, "actual")));
  g_assert_cmpint(json_integer_value(json_object_get(qb, "actual")), ==, 64 << 20);

  json_auto_t *set = vm_call(&vm, issue_stats_interval);
  json_auto_t *first = NULL;
  json_int_t t0 = 0;
  gint64 give_up = g_get_monotonic_time() + (gint64)DEADLINE_MS * 1000;
  /* The first read may predate any stats (last-update 0); then wait for a
   * later one. */
  for (;;) {
    json_auto_t *stats = vm_call(&vm, issue_guest_stats);
    json_int_t t = json_integer_value(json_object_get(stats, "last-update"));
    g_assert_nonnull(json_object_get(stats, "stats"));
    if (first == NULL && t > 0) {
      first = json_incref(stats);
      t0 = t;
    } else if (first != NULL && t > t0) {
      g_test_message("guest-stats last-update %" JSON_INTEGER_FORMAT " -> %" JSON_INTEGER_FORMAT,
                     t0, t);
      break;
    }
    g_assert_cmpint(g_get_monotonic_time(), <, give_up);
    gboolean woke = FALSE;
    g_timeout_add(500, flag_cb, &woke);
    g_assert_true(nf_test_wait_for(flag_set, &woke, DEADLINE_MS));
  }

  json_decref(vm_call(&vm, issue_quit)); /* qemu answers before it goes */
  g_assert_true(nf_test_wait_for(vm_shut_down, &vm, DEADLINE_MS));
  g_assert_cmpstr(vm.shutdown_reason, ==, "host-qmp-quit");
  g_assert_error(vm.closed_error, NF_QMP_ERROR, NF_QMP_ERROR_DISCONNECTED);
  g_assert_true(nf_qmp_is_closed(vm.qmp));

  vm_reap(&vm);
  g_assert_true(WIFEXITED(vm.wait_status));
  g_assert_cmpint(WEXITSTATUS(vm.wait_status), ==, 0);
  nf_test_tmpdir_cleanup(vm.dir);
  g_free(vm.dir);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/qmp/qemu/session", test_qemu_session);
  return g_test_run();
}
