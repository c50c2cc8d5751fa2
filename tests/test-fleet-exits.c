/*
 * test-fleet-exits.c: a guest's end is still seen and classified, and its
 * console still takes input, now that the supervisor holds one fd per ready
 * guest (issue 17): no pidfd until the QMP stream ends, no console socket
 * once the guest is ready and nobody watches (qemu writes the log). On the
 * fake qemu; rows that need a real guest are in test-lifecycle.c, the
 * reboot-vs-poweroff race in test-fleet-lifecycle.c.
 */
#include <signal.h>
#include <string.h>
#include <sys/stat.h>

#include "supervisor/config.h"
#include "tests/lib/fake-fleet.h"
#include "tests/lib/nf-test.h"

#define WAIT_MS 60000

static NfVm *vm_of(NfFakeFleet *f, guint id)
{
  NfVm *vm = nf_fleet_find_vm(f->fleet, id);
  g_assert_nonnull(vm);
  return vm;
}

static gboolean any_reason_has(NfFakeFleet *f, const char *needle)
{
  for (guint i = 0; i < f->reasons->len; i++)
    if (strstr(g_ptr_array_index(f->reasons, i), needle))
      return TRUE;
  return FALSE;
}

static gboolean left_ready(NfFakeFleet *f)
{
  return nf_fake_fleet_seen(f, NF_VM_READY, NF_VM_BACKOFF) >= 1;
}

/* A wrapper given as --qemu that forks the fake and waits for it: the fake,
 * not our child, holds the QMP stream. SIGKILL the wrapper and the stream
 * stays up; before the health probe checked for a zombie child, the guest
 * stayed `ready` with a dead pid and nothing noticed. Now the next probe
 * sees it: the guest's process group (the fake too) is killed and the exit
 * is a crash by signal 9, restarted as such. */
static void test_wrapper_killed(void)
{
  NfFakeFleet *f = nf_fake_fleet_new(1, 1);
  g_autofree char *wrapper = g_build_filename(f->tmp, "qemu-wrapper", NULL);
  g_autofree char *script = g_strdup_printf("#!/bin/sh\n'%s' \"$@\" &\nwait\n", f->config.qemu);
  g_assert_true(g_file_set_contents(wrapper, script, -1, NULL));
  g_assert_cmpint(chmod(wrapper, 0755), ==, 0);
  g_free(f->config.qemu);
  f->config.qemu = g_strdup(wrapper);
  f->config.health_interval_ms = 200;
  f->config.health_timeout_ms = 5000;
  nf_fake_fleet_start(f);
  g_assert_true(nf_fake_fleet_wait_vm(f, 1, NF_VM_READY, WAIT_MS));
  g_assert_cmpuint(nf_fleet_health_interval(f->fleet), ==, 200);
  GPid pid = nf_vm_pid(vm_of(f, 1));
  g_assert_cmpint(kill(pid, SIGKILL), ==, 0);
  g_assert_true(nf_fake_fleet_wait(f, left_ready, WAIT_MS));
  g_assert_cmpint(nf_vm_exit_kind(vm_of(f, 1)), ==, NF_EXIT_CRASHED);
  g_assert_true(any_reason_has(f, "killed by signal 9"));
  g_assert_true(nf_fake_fleet_wait_vm(f, 1, NF_VM_READY, WAIT_MS));
  g_assert_cmpint(nf_vm_pid(vm_of(f, 1)), !=, pid);
  nf_fake_fleet_finish(f, FALSE);
}

static gboolean left_ready_2(NfFakeFleet *f)
{
  return nf_fake_fleet_seen(f, NF_VM_READY, NF_VM_BACKOFF) +
             nf_fake_fleet_seen(f, NF_VM_READY, NF_VM_STOPPED) +
             nf_fake_fleet_seen(f, NF_VM_READY, NF_VM_FAILED) >=
         1;
}

/* A ready guest nobody watches holds one fd of ours (QMP): its console is
 * let go, qemu logs it (chardev logfile=). A kernel panic then prints its
 * line where no one reads it live, and qemu (-no-reboot) exits with
 * SHUTDOWN guest-reset: a reboot, unless the panic line is found in the
 * log. Before the exit looked there, this panic was classified a reboot. */
static void test_panic_after_console_let_go(void)
{
  guint before = nf_test_count_open_fds();
  NfFakeFleet *f = nf_fake_fleet_new(3, 3);
  nf_fake_fleet_start(f);
  g_assert_true(nf_fake_fleet_wait_all(f, NF_VM_READY, WAIT_MS));
  /* 3 QMP sockets; the fleet's own (epoll, lock, timers) are a few more. */
  guint open_fds = nf_test_count_open_fds();
  g_test_message("%u fds with 3 guests ready (%u before)", open_fds, before);
  g_assert_cmpuint(open_fds, <=, before + 3 + 12);
  g_assert_cmpint(kill(nf_vm_pid(vm_of(f, 2)), SIGUSR1), ==, 0);
  g_assert_true(nf_fake_fleet_wait(f, left_ready_2, WAIT_MS));
  g_assert_cmpint(nf_vm_exit_kind(vm_of(f, 2)), ==, NF_EXIT_PANIC);
  g_assert_true(any_reason_has(f, "exited: panic (qemu reported guest-reset"));
  /* The line is in the log, written by qemu. */
  g_autofree char *log = NULL;
  g_assert_true(g_file_get_contents(nf_vm_console_log_path(vm_of(f, 2)), &log, NULL, NULL));
  g_assert_nonnull(strstr(log, "Kernel panic - not syncing: fake"));
  g_assert_nonnull(strstr(log, "nervesfleet-ready serial=NF-000002"));
  g_assert_cmpint(nf_vm_state(vm_of(f, 1)), ==, NF_VM_READY);
  nf_fake_fleet_finish(f, FALSE);
}

/* Input for a ready guest whose console was let go (nobody watches): the
 * console is connected again for it, the guest gets it (the fake echoes it,
 * and qemu logs the echo). Before, the write failed with -1. */
static void test_input_after_console_let_go(void)
{
  NfFakeFleet *f = nf_fake_fleet_new(1, 1);
  nf_fake_fleet_start(f);
  g_assert_true(nf_fake_fleet_wait_all(f, NF_VM_READY, WAIT_MS));
  const char *line = "echo nf-input-after-let-go\n";
  g_assert_cmpint(nf_vm_console_write(vm_of(f, 1), line, strlen(line)), ==, (gssize)strlen(line));
  g_assert_true(nf_test_wait_file_contains(nf_vm_console_log_path(vm_of(f, 1)),
                                           "nf-input-after-let-go", WAIT_MS));
  nf_fake_fleet_finish(f, FALSE);
}

/* n guests, all ready, probed often (`probes` FALSE: not at all); guest 1
 * prints 5 MiB ~1.5 s after its QMP handshake (its log is capped at 4 MiB:
 * one rotation). */
static NfFakeFleet *chatty_fleet_probed(guint n, gboolean probes)
{
  NfFakeFleet *f = nf_fake_fleet_new(n, n);
  f->config.health_interval_ms = probes ? 100 : 0;
  f->config.health_timeout_ms = 5000;
  f->config.slow_check_ms = 100;
  g_setenv("FAKE_QEMU_FAULT_GUESTS", "vm-0001", TRUE);
  g_setenv("FAKE_QEMU_CHATTER_MS", "1500", TRUE);
  g_setenv("FAKE_QEMU_CHATTER_KB", "5120", TRUE);
  nf_fake_fleet_start(f);
  g_assert_true(nf_fake_fleet_wait_all(f, NF_VM_READY, WAIT_MS));
  return f;
}

static NfFakeFleet *chatty_fleet(guint n)
{
  return chatty_fleet_probed(n, TRUE);
}

/* With probes off (--health-interval 0) the log is still kept under its
 * cap: it grew without bound when only the probes looked. */
static void test_log_capped_without_probes(void)
{
  NfFakeFleet *f = chatty_fleet_probed(1, FALSE);
  const char *log = nf_vm_console_log_path(vm_of(f, 1));
  g_autofree char *old = g_strconcat(log, ".1", NULL);
  g_assert_true(nf_test_wait_for(nf_test_path_exists, old, WAIT_MS));
  struct stat st;
  g_assert_cmpint(stat(log, &st), ==, 0);
  g_assert_cmpint(st.st_size, <=, NF_DEFAULT_LOG_MAX);
  nf_fake_fleet_finish(f, FALSE);
  g_unsetenv("FAKE_QEMU_FAULT_GUESTS");
  g_unsetenv("FAKE_QEMU_CHATTER_MS");
  g_unsetenv("FAKE_QEMU_CHATTER_KB");
}

/* The log qemu writes for a ready guest nobody watches is still kept under
 * its cap by the probes' slow check, also when the guest goes chatty after
 * a quiet spell: a log found quiet is not looked at again until inotify
 * says it was written to (supervisor/log-watch.h), so that first write must
 * bring the looks back. Guest 1 prints 5 MiB ~1.5 s after its handshake,
 * ~15 checks after it went quiet; guest 2 stays quiet, its log untouched. */
static void test_log_capped_after_quiet_spell(void)
{
  NfFakeFleet *f = chatty_fleet(2);
  const char *log1 = nf_vm_console_log_path(vm_of(f, 1));
  g_autofree char *old1 = g_strconcat(log1, ".1", NULL);
  g_autofree char *old2 = g_strconcat(nf_vm_console_log_path(vm_of(f, 2)), ".1", NULL);
  g_assert_true(nf_test_wait_for(nf_test_path_exists, old1, WAIT_MS));
  struct stat st;
  g_assert_cmpint(stat(log1, &st), ==, 0);
  g_assert_cmpint(st.st_size, <=, NF_DEFAULT_LOG_MAX);
  g_assert_cmpint(stat(old1, &st), ==, 0);
  g_assert_cmpint(st.st_size, >, NF_DEFAULT_LOG_MAX);
  g_assert_false(g_file_test(old2, G_FILE_TEST_EXISTS));
  nf_fake_fleet_finish(f, FALSE);
}

static void collect_cb(NfVm *vm, const char *buf, gsize len, gpointer data)
{
  g_string_append_len(data, buf, (gssize)len);
}

typedef struct {
  GString *got;
  const char *log, *old;
  gint64 start;
} Stream;

static gint64 file_size(const char *path)
{
  struct stat st;
  return stat(path, &st) == 0 ? (gint64)st.st_size : -1;
}

/* The log was rotated and the watcher has every byte both files hold. */
static gboolean caught_up_after_rotation(gpointer data)
{
  Stream *s = data;
  gint64 old = file_size(s->old), now = file_size(s->log);
  return old > 0 && now >= 0 && (gint64)s->got->len == old - s->start + now;
}

/* A console watcher across the cap's rotation of a guest gone chatty: it
 * gets the rotated file from where it began and the new log after it, no
 * byte missed or twice, also those the guest wrote between the watchers'
 * drain and the cap's copy (read back from the .1). */
static void test_watcher_across_rotation(void)
{
  NfFakeFleet *f = chatty_fleet(1);
  NfVm *vm = vm_of(f, 1);
  g_autofree char *old = g_strconcat(nf_vm_console_log_path(vm), ".1", NULL);
  Stream s = {g_string_new(NULL), nf_vm_console_log_path(vm), old, 0};
  s.start = nf_vm_console_watch_start(vm);
  g_autofree char *tail = NULL;
  guint id = nf_vm_console_watch(vm, 0, &tail, collect_cb, s.got);
  g_assert_cmpstr(tail, ==, "");
  g_assert_true(nf_test_wait_for(caught_up_after_rotation, &s, WAIT_MS));
  /* Both files as they are now (the guest may have written more since). */
  g_autofree char *old_text = NULL, *now_text = NULL;
  gsize old_len, now_len;
  g_assert_true(g_file_get_contents(old, &old_text, &old_len, NULL));
  g_assert_true(g_file_get_contents(s.log, &now_text, &now_len, NULL));
  g_assert_cmpint((gint64)old_len, >, s.start + NF_DEFAULT_LOG_MAX / 2);
  g_assert_cmpmem(s.got->str, old_len - (gsize)s.start, old_text + s.start,
                  old_len - (gsize)s.start);
  gsize rest = s.got->len - (old_len - (gsize)s.start);
  g_assert_cmpuint(rest, <=, now_len);
  g_assert_cmpmem(s.got->str + s.got->len - rest, rest, now_text, rest);
  nf_vm_console_unwatch(vm, id);
  g_string_free(s.got, TRUE);
  nf_fake_fleet_finish(f, FALSE);
  g_unsetenv("FAKE_QEMU_FAULT_GUESTS");
  g_unsetenv("FAKE_QEMU_CHATTER_MS");
  g_unsetenv("FAKE_QEMU_CHATTER_KB");
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/fleet-exits/wrapper-killed", test_wrapper_killed);
  g_test_add_func("/fleet-exits/panic-after-console-let-go", test_panic_after_console_let_go);
  g_test_add_func("/fleet-exits/input-after-console-let-go", test_input_after_console_let_go);
  g_test_add_func("/fleet-exits/log-capped-after-quiet-spell", test_log_capped_after_quiet_spell);
  g_test_add_func("/fleet-exits/watcher-across-rotation", test_watcher_across_rotation);
  g_test_add_func("/fleet-exits/log-capped-without-probes", test_log_capped_without_probes);
  return g_test_run();
}
