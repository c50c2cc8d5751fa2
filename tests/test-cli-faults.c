/*
 * test-cli-faults.c: the fleet verbs when something is wrong, against one
 * real guest with a disk. Guards: bad arguments exit 2 (a bad --name,
 * --memory 1, scale 0, each saying so once, with no doubled "scale:
 * scale:"); a balloon target that is not reached exits 1 naming it;
 * reflash with the base image gone exits 1 with a clear message and leaves
 * the running guest untouched (same pid, still ready); the ps summary
 * speaks of "1 guest"; a stopped (SIGSTOP) supervisor makes ps, down, wait
 * and console fail (exit 1) with "supervisor pid N not answering within
 * S s" instead of hanging, and `down` leaves it running (no SIGTERM
 * pending), so after SIGCONT the fleet answers and stops in order;
 * `logs all -f` follows 513 guests on one connection, and guests that join
 * or leave, keeps every line whole while two guests print at once, and
 * says so (exit 1) when the supervisor drops it for reading too slowly.
 */
#include <signal.h>
#include <string.h>
#include <jansson.h>
#include <glib/gstdio.h>

#include "tests/lib/nf-test.h"

#define BOOT_MS 180000
#define CLI_MS 120000

static char *tmp;

/* Runs `nervesfleet ARGS` (NULL-terminated), asserts its exit status,
 * returns its merged output. */
static char *cli(int want, const char *const *args)
{
  char *out = NULL;
  int rc = nf_test_run_cli(tmp, args, CLI_MS, &out);
  g_test_message("nervesfleet %s %s -> %d: %s", args[0], args[1] ? args[1] : "", rc, out);
  g_assert_cmpint(rc, ==, want);
  return out;
}

static guint count_of(const char *hay, const char *needle)
{
  guint n = 0;
  for (const char *s = hay; (s = strstr(s, needle)); s++)
    n++;
  return n;
}

static json_t *guest1(void)
{
  const char *args[] = {"ps", "--json", "--name", "flt", NULL};
  g_autofree char *out = cli(0, args);
  json_auto_t *ps = json_loads(out, 0, NULL);
  g_assert_nonnull(ps);
  return json_incref(json_array_get(json_object_get(ps, "guests"), 0));
}

static void test_bad_arguments(void)
{
  const char *name[] = {"run", "1", "--name", "a/b", NULL};
  g_autofree char *o1 = cli(2, name);
  g_assert_nonnull(strstr(o1, "--name 'a/b'"));
  const char *mem[] = {"run", "1", "--name", "flt-mem", "--memory", "1", NULL};
  g_autofree char *o2 = cli(2, mem);
  g_assert_nonnull(strstr(o2, "--memory 1 is too small"));
  const char *scale0[] = {"scale", "0", "--name", "flt", NULL};
  g_autofree char *o3 = cli(2, scale0);
  g_assert_cmpuint(count_of(o3, "scale:"), ==, 1);
  const char *big[] = {"scale", "100001", "--name", "flt", NULL};
  g_autofree char *o4 = cli(2, big);
  g_assert_cmpuint(count_of(o4, "scale:"), ==, 1);
  const char *small_log[] = {"run", "1", "--name", "flt-log", "--log-max", "10K", NULL};
  g_autofree char *o5 = cli(2, small_log);
  g_assert_nonnull(strstr(o5, "--log-max 10K is too small"));
  const char *bad_log[] = {"run", "1", "--name", "flt-log", "--log-max", "lots", NULL};
  g_autofree char *o6 = cli(2, bad_log);
  g_assert_nonnull(strstr(o6, "--log-max 'lots': expected a size"));
  /* Disk flags are checked as flags (exit 2), before any dir is made; a
   * wrong format used to be exit 1 after the fleet's dirs were claimed. */
  const char *fmt[] = {"run",           "1",    "--name", "flt-fmt", "--disk", "/nonexistent.img",
                       "--disk-format", "vmdk", NULL};
  g_autofree char *o7 = cli(2, fmt);
  g_assert_nonnull(strstr(o7, "--disk-format 'vmdk': raw or qcow2"));
  const char *nodisk[] = {"run", "1", "--name", "flt-nodisk", "--reflash-all", NULL};
  g_autofree char *o8 = cli(2, nodisk);
  g_assert_nonnull(strstr(o8, "--reflash-all is about the guests' disks"));
  g_autofree char *state = g_build_filename(tmp, "state", "nervesfleet", "flt-fmt", NULL);
  g_assert_false(g_file_test(state, G_FILE_TEST_EXISTS));
}

static void test_fleet_faults(void)
{
  g_autofree char *base = nf_test_make_ext4_base(tmp);
  const char *run[] = {"run", "1", "--name", "flt", "--stop-timeout", "5", "--disk", base, NULL};
  g_autoptr(NfTestProc) fleet = nf_test_proc_spawn(tmp, run);
  g_assert_true(nf_test_proc_wait_output(fleet, "all 1 guests ready", BOOT_MS));

  /* The summary of a one-guest fleet. */
  const char *ps[] = {"ps", "--name", "flt", NULL};
  g_autofree char *table = cli(0, ps);
  g_assert_nonnull(strstr(table, "\n1 guest: 1 ready, 0 booting, 0 stopped, 0 failed\n"));

  /* scale 0 against a running fleet: a bad argument, said once. */
  const char *scale0[] = {"scale", "0", "--name", "flt", NULL};
  g_autofree char *s0 = cli(2, scale0);
  g_assert_cmpuint(count_of(s0, "scale:"), ==, 1);

  /* A balloon target beyond the guest's RAM is never reached: exit 1. */
  const char *balloon[] = {"balloon", "1", "99999G", "--timeout", "2", "--name", "flt", NULL};
  g_autofree char *b = cli(1, balloon);
  g_assert_nonnull(strstr(b, "vm-0001 is at 128M, target 102398976M not reached"));

  /* reflash with the base gone: refused before the guest is touched. */
  json_auto_t *before = guest1();
  g_autofree char *moved = g_strconcat(base, ".moved", NULL);
  g_assert_cmpint(g_rename(base, moved), ==, 0);
  const char *reflash[] = {"reflash", "1", "--wait", "--name", "flt", NULL};
  g_autofree char *r = cli(1, reflash);
  g_assert_nonnull(strstr(r, "cannot reflash: the fleet's base image"));
  g_assert_nonnull(strstr(r, "no guest was touched"));
  json_auto_t *after = guest1();
  g_assert_cmpstr(json_string_value(json_object_get(after, "state")), ==, "ready");
  g_assert_cmpint(json_integer_value(json_object_get(after, "pid")), ==,
                  json_integer_value(json_object_get(before, "pid")));
  g_assert_cmpint(g_rename(moved, base), ==, 0);

  /* A stopped supervisor: every verb says so instead of hanging, at once
   * (they run side by side: each waits for its own handshake deadline). */
  GPid pid = nf_test_proc_pid(fleet);
  g_autofree char *want =
      g_strdup_printf("fleet 'flt': supervisor pid %d not answering within 10 s", (int)pid);
  nf_test_proc_signal(fleet, SIGSTOP);
  g_assert_true(nf_test_wait_polled(nf_test_pid_stopped, GINT_TO_POINTER(pid), 10, CLI_MS));
  const char *const verbs[][8] = {
      {"ps", "--name", "flt", NULL},
      {"down", "--name", "flt", NULL},
      {"wait", "--name", "flt", NULL},
      {"console", "1", "--ro", "--name", "flt", NULL},
  };
  NfTestProc *procs[G_N_ELEMENTS(verbs)];
  for (gsize i = 0; i < G_N_ELEMENTS(verbs); i++)
    procs[i] = nf_test_proc_spawn(tmp, verbs[i]);
  for (gsize i = 0; i < G_N_ELEMENTS(verbs); i++) {
    int rc = nf_test_proc_wait_exit(procs[i], CLI_MS);
    g_test_message("%s against a stopped supervisor -> %d: %s", verbs[i][0], rc,
                   nf_test_proc_output(procs[i]));
    if (rc != 1 || strstr(nf_test_proc_output(procs[i]), want) == NULL)
      g_error("%s against a stopped supervisor: exit %d (want 1 and \"%s\"): %s", verbs[i][0], rc,
              want, nf_test_proc_output(procs[i]));
    nf_test_proc_free(procs[i]);
  }
  nf_test_proc_signal(fleet, SIGCONT);

  /* Resumed: `down` above signalled nothing, so the fleet still runs and
   * answers; then it stops in order. */
  g_autofree char *again = cli(0, ps);
  g_assert_nonnull(strstr(again, "1 ready"));
  const char *down[] = {"down", "--name", "flt", NULL};
  g_autofree char *d = cli(0, down);
  g_assert_cmpint(nf_test_proc_wait_exit(fleet, CLI_MS), ==, 0);
}

/* Starts fleet `name` of `count` fake guests in the background and waits
 * until they are ready. */
/* A detached fleet of `count` fake guests, all ready; `extra`: one more
 * `run` option and its value, or NULL. */
static void start_fakes_with(const char *name, const char *count, const char *extra,
                             const char *value)
{
  g_autofree char *qemu = g_build_filename(g_getenv("NF_HELPERS"), "fake-qemu", NULL);
  g_autofree char *kernel = g_build_filename(tmp, "Image", NULL);
  g_assert_true(g_file_set_contents(kernel, "not a kernel", -1, NULL));
  const char *run[] = {"run",      count,  "-d",      "--name", name,  "--qemu", qemu,
                       "--kernel", kernel, "--accel", "tcg",    extra, value,    NULL};
  g_autofree char *started = cli(0, run);
  const char *wait[] = {"wait", "--name", name, "--timeout", "100", NULL};
  g_autofree char *ready = cli(0, wait);
}

static void start_fakes(const char *name, const char *count)
{
  start_fakes_with(name, count, NULL, NULL);
}

/* `run --reflash-all` while guests a killed supervisor left still run on
 * the overlays: refused (exit 1), the overlays kept. It used to remove
 * them and adopt the qemus, which ran on deleted files and the old base. */
static void test_reflash_all_with_orphans(void)
{
  g_autofree char *base = nf_test_make_ext4_base(tmp);
  start_fakes_with("orph", "2", "--disk", base);
  g_autofree char *overlay =
      g_build_filename(tmp, "state/nervesfleet/orph/disks/orph-1.qcow2", NULL);
  struct stat before, after;
  g_assert_cmpint(stat(overlay, &before), ==, 0);
  nf_test_kill_supervisor(tmp, "orph", CLI_MS);

  g_autofree char *qemu = g_build_filename(g_getenv("NF_HELPERS"), "fake-qemu", NULL);
  g_autofree char *kernel = g_build_filename(tmp, "Image", NULL);
  const char *again[] = {"run",    "2",      "-d",       "--name",        "orph",
                         "--qemu", qemu,     "--kernel", kernel,          "--accel",
                         "tcg",    "--disk", base,       "--reflash-all", NULL};
  g_autofree char *out = cli(1, again);
  g_assert_nonnull(strstr(out, "--reflash-all: 2 qemu processes of fleet 'orph' still run"));
  g_assert_cmpint(stat(overlay, &after), ==, 0);
  g_assert_cmpuint(after.st_ino, ==, before.st_ino);
  const char *down[] = {"down", "--name", "orph", NULL};
  g_autofree char *d = cli(0, down);
  g_assert_nonnull(strstr(d, "killed 2 orphaned guests"));
}

/* `logs all -f` on 513 fake guests (more than the 512 that a connection
 * per guest allowed before): all of them followed
 * through one connection; a guest that joins (`scale` up) is followed too,
 * and one scaled away ends its own `logs ID -f` while the rest go on. */
static void test_logs_follow_many(void)
{
  start_fakes("many", "513");
  const char *follow[] = {"logs", "all", "-f", "--name", "many", NULL};
  g_autoptr(NfTestProc) logs = nf_test_proc_spawn(tmp, follow);
  g_assert_true(nf_test_proc_wait_count(logs, "| nervesfleet-ready serial=", 513, CLI_MS));
  /* stdio, the connection and a few of GLib's: not one per guest. */
  guint fds = nf_test_count_open_fds_of(nf_test_proc_pid(logs));
  g_test_message("logs all -f of 513 guests holds %u fds", fds);
  g_assert_cmpuint(fds, <, 16);

  const char *grow[] = {"scale", "514", "--name", "many", NULL};
  g_autofree char *grown = cli(0, grow);
  g_assert_true(
      nf_test_proc_wait_output(logs, "vm-0514 | nervesfleet-ready serial=NF-000514", CLI_MS));
  const char *one[] = {"logs", "514", "-f", "--name", "many", NULL};
  g_autoptr(NfTestProc) logs_one = nf_test_proc_spawn(tmp, one);
  g_assert_true(nf_test_proc_wait_output(logs_one, "nervesfleet-ready serial=NF-000514", CLI_MS));
  const char *shrink[] = {"scale", "513", "--name", "many", NULL};
  g_autofree char *shrunk = cli(0, shrink);
  /* The guest's own stream ends with it; the fleet's goes on. */
  g_assert_cmpint(nf_test_proc_wait_exit(logs_one, CLI_MS), ==, 0);
  const char *poke[] = {"restart", "1", "--name", "many", NULL};
  g_autofree char *poked = cli(0, poke);
  g_assert_true(
      nf_test_proc_wait_count(logs, "vm-0001 | nervesfleet-ready serial=NF-000001", 2, CLI_MS));
  g_assert_null(strstr(nf_test_proc_output(logs), "nervesfleet: logs"));

  const char *without[] = {"logs", "all", "--name", "many", NULL};
  char *out = NULL;
  g_assert_cmpint(nf_test_run_cli(tmp, without, CLI_MS, &out), ==, 0);
  g_assert_cmpuint(count_of(out, "| nervesfleet-ready serial="), >=, 513);
  g_free(out);
  const char *down[] = {"down", "--name", "many", NULL};
  g_autofree char *d = cli(0, down);
  g_assert_cmpint(nf_test_proc_wait_exit(logs, CLI_MS), ==, 0);
}

/* A `logs all -f` that stops reading while its guest prints 8 MiB (its
 * console echoing what a writer sends) is dropped by the supervisor
 * (1 MiB unread for its one guest); once it runs again it says so on
 * stderr and exits 1 rather than ending as if the fleet had stopped. */
static void test_logs_follow_dropped(void)
{
  start_fakes("drop", "1");
  const char *follow[] = {"logs", "all", "-f", "--name", "drop", NULL};
  g_autoptr(NfTestProc) logs = nf_test_proc_spawn(tmp, follow);
  g_assert_true(
      nf_test_proc_wait_output(logs, "vm-0001 | nervesfleet-ready serial=NF-000001", CLI_MS));
  GPid pid = nf_test_proc_pid(logs);
  nf_test_proc_signal(logs, SIGSTOP);
  g_assert_true(nf_test_wait_polled(nf_test_pid_stopped, GINT_TO_POINTER(pid), 10, CLI_MS));
  g_autofree char *type = g_strdup_printf(
      "head -c 8388608 /dev/zero | tr '\\0' x | fold -w 63 | XDG_RUNTIME_DIR='%s/run' '%s' "
      "console 1 --name drop >/dev/null",
      tmp, nf_test_bin());
  nf_test_sh(type);
  g_autofree char *log = g_build_filename(tmp, "state/nervesfleet/drop/supervisor.log", NULL);
  g_assert_true(nf_test_wait_file_contains(log, "dropped control client", CLI_MS));
  nf_test_proc_signal(logs, SIGCONT);
  g_assert_cmpint(nf_test_proc_wait_exit(logs, CLI_MS), ==, 1);
  g_assert_nonnull(strstr(nf_test_proc_output(logs), "ended the stream while the fleet runs"));
  const char *down[] = {"down", "--name", "drop", NULL};
  g_autofree char *d = cli(0, down);
}

/* `--log-max 64K`: a guest's log past it is rotated when its next run
 * starts (and by the probes), keeping under the cap; `logs` still has every
 * line the guest printed, across the .1 and the log, once and in order;
 * `--since start` has only the new run, though the log kept the end of the
 * old one (a rotation moves whole blocks). */
static void test_log_max(void)
{
  start_fakes_with("logmax", "1", "--log-max", "64K");
  /* ~96 KB: past the cap, but under twice it, so that a probe's rotation
   * while it is typed (every 30 s) leaves too little for the restart to
   * rotate again over the .1. */
  g_autofree char *type = g_strdup_printf(
      "seq -f 'typed-%%05g' 1 8000 | XDG_RUNTIME_DIR='%s/run' '%s' console 1 --name logmax "
      ">/dev/null",
      tmp, nf_test_bin());
  nf_test_sh(type);
  /* The console is done once the guest has read the input; its echo of the
   * last line reaches the log a moment later (on a loaded host, after
   * `logs` had already read it). The newest lines stay in the log itself,
   * whatever a rotation moves to the .1. */
  g_autofree char *log =
      g_build_filename(tmp, "state/nervesfleet/logmax/vm-0001/console.log", NULL);
  g_assert_true(nf_test_wait_file_contains(log, "typed-08000", CLI_MS));
  const char *one[] = {"logs", "1", "--name", "logmax", NULL};
  g_autofree char *before = cli(0, one);
  g_assert_nonnull(strstr(before, "typed-08000"));
  const char *restart[] = {"restart", "1", "--wait", "--name", "logmax", NULL};
  g_autofree char *restarted = cli(0, restart);

  g_autofree char *old = g_strconcat(log, ".1", NULL);
  GStatBuf st;
  g_assert_cmpint(g_stat(log, &st), ==, 0);
  g_assert_cmpint(st.st_size, <=, 64 * 1024);
  g_assert_true(g_file_test(old, G_FILE_TEST_EXISTS));
  g_autofree char *all = cli(0, one);
  const char *at = all;
  for (int i = 1; i <= 8000; i++) {
    char want[32];
    g_snprintf(want, sizeof want, "typed-%05d\n", i);
    const char *next = strstr(at, want);
    if (next == NULL)
      g_error("logs after the rotation: %s missing or out of order", want);
    at = next + strlen(want);
  }
  g_assert_cmpuint(count_of(all, "typed-04000\n"), ==, 1);
  /* A log written to a full disk is not a complete log: exit 1, said. It
   * exited 0, as when the reader goes away (`| head`, still 0). */
  g_autofree char *full = g_strdup_printf(
      "XDG_RUNTIME_DIR='%s/run' '%s' logs 1 --name logmax >/dev/full 2>'%s/full.err'; "
      "echo $? >'%s/full.rc'; XDG_RUNTIME_DIR='%s/run' '%s' logs 1 --name logmax | head -c 10 "
      ">/dev/null; echo ${PIPESTATUS[0]} >'%s/head.rc'",
      tmp, nf_test_bin(), tmp, tmp, tmp, nf_test_bin(), tmp);
  const char *argv_full[] = {"bash", "-c", full, NULL};
  g_assert_true(g_spawn_sync(NULL, (char **)argv_full, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, NULL,
                             NULL, NULL, NULL));
  g_autofree char *rc_path = g_build_filename(tmp, "full.rc", NULL);
  g_autofree char *err_path = g_build_filename(tmp, "full.err", NULL);
  g_autofree char *head_path = g_build_filename(tmp, "head.rc", NULL);
  g_autofree char *rc = NULL, *err = NULL, *head_rc = NULL;
  g_assert_true(g_file_get_contents(rc_path, &rc, NULL, NULL));
  g_assert_true(g_file_get_contents(err_path, &err, NULL, NULL));
  g_assert_true(g_file_get_contents(head_path, &head_rc, NULL, NULL));
  g_assert_cmpstr(rc, ==, "1\n");
  g_assert_nonnull(strstr(err, "cannot write to stdout: No space left on device"));
  g_assert_cmpstr(head_rc, ==, "0\n");
  const char *since[] = {"logs", "1", "--since", "start", "--name", "logmax", NULL};
  g_autofree char *run2 = cli(0, since);
  g_assert_null(strstr(run2, "typed-"));
  g_assert_cmpuint(count_of(run2, "nervesfleet-ready serial=NF-000001"), ==, 1);
  const char *down[] = {"down", "--name", "logmax", NULL};
  g_autofree char *d = cli(0, down);
}

/* `events` whose reader stops while the fleet churns: the supervisor drops
 * it past 1 MiB unread, and it says so and exits 1 (it exited 0, as if
 * the fleet had stopped). Restarts of 200 fake guests make the events. */
static void test_events_dropped(void)
{
  start_fakes("evdrop", "200");
  const char *follow[] = {"events", "--name", "evdrop", NULL};
  g_autoptr(NfTestProc) ev = nf_test_proc_spawn(tmp, follow);
  /* Subscribed once it shows a restart: one that completes before the
   * client is connected (a loaded host starts it slowly) shows nothing. */
  const char *one[] = {"restart", "1", "--wait", "--name", "evdrop", NULL};
  gboolean subscribed = FALSE;
  for (guint i = 0; i < 30 && !subscribed; i++) {
    g_autofree char *r1 = cli(0, one);
    subscribed = nf_test_proc_wait_output(ev, "vm-0001", 2000);
  }
  g_assert_true(subscribed);
  GPid pid = nf_test_proc_pid(ev);
  nf_test_proc_signal(ev, SIGSTOP);
  g_assert_true(nf_test_wait_polled(nf_test_pid_stopped, GINT_TO_POINTER(pid), 10, CLI_MS));
  g_autofree char *log = g_build_filename(tmp, "state/nervesfleet/evdrop/supervisor.log", NULL);
  const char *restart[] = {"restart", "all", "--wait", "--name", "evdrop", NULL};
  for (guint i = 0; i < 40 && !nf_test_file_contains(log, "dropped control client"); i++) {
    g_autofree char *r = cli(0, restart);
  }
  g_assert_true(nf_test_file_contains(log, "dropped control client"));
  nf_test_proc_signal(ev, SIGCONT);
  g_assert_cmpint(nf_test_proc_wait_exit(ev, CLI_MS), ==, 1);
  g_assert_nonnull(strstr(nf_test_proc_output(ev), "ended the stream while the fleet runs"));
  const char *down[] = {"down", "--name", "evdrop", NULL};
  g_autofree char *d = cli(0, down);
}

/* One name from two runtime dirs (a login shell's XDG_RUNTIME_DIR and
 * cron's none) is one state dir: the second supervisor is refused (exit 1)
 * instead of running guests on the first one's overlays and logs. */
static void test_state_dir_locked(void)
{
  start_fakes("same", "1");
  g_autofree char *qemu = g_build_filename(g_getenv("NF_HELPERS"), "fake-qemu", NULL);
  g_autofree char *kernel = g_build_filename(tmp, "Image", NULL);
  g_autofree char *other = g_build_filename(tmp, "other-run", NULL);
  const char *again[] = {"run",      "1",    "-d",      "--name", "same",          "--qemu", qemu,
                         "--kernel", kernel, "--accel", "tcg",    "--runtime-dir", other,    NULL};
  g_autofree char *out = cli(1, again);
  g_assert_nonnull(strstr(out, "fleet 'same' is already running from another runtime dir"));
  g_assert_false(g_file_test(other, G_FILE_TEST_EXISTS)); /* nothing of it left */
  const char *ps[] = {"ps", "--name", "same", NULL};
  g_autofree char *table = cli(0, ps);
  g_assert_nonnull(strstr(table, "1 guest: 1 ready"));
  const char *down[] = {"down", "--name", "same", NULL};
  g_autofree char *d = cli(0, down);
}

/* `run 1 --exec CMD` on a fake guest, as a background process. */
static NfTestProc *run_exec(const char *name, const char *script)
{
  g_autofree char *qemu = g_build_filename(g_getenv("NF_HELPERS"), "fake-qemu", NULL);
  g_autofree char *kernel = g_build_filename(tmp, "Image", NULL);
  g_assert_true(g_file_set_contents(kernel, "not a kernel", -1, NULL));
  const char *run[] = {"run",     "1",   "--name",         name, "--qemu", qemu, "--kernel", kernel,
                       "--accel", "tcg", "--stop-timeout", "1",  "--exec", "sh", "-c",       script,
                       NULL};
  return nf_test_proc_spawn(tmp, run);
}

/* A CI job stopped from outside (a timeout's SIGTERM, `down`) has not
 * passed: run's status is CMD's as it ends (143 on SIGTERM, 137 when CMD
 * ignores it past the stop timeout), or 1 when CMD never ran. */
static void test_exec_stopped(void)
{
  g_autoptr(NfTestProc) a = run_exec("ex-term", "echo cmd-started; exec sleep 1000");
  g_assert_true(nf_test_proc_wait_output(a, "cmd-started", CLI_MS));
  nf_test_proc_signal(a, SIGTERM);
  g_assert_cmpint(nf_test_proc_wait_exit(a, CLI_MS), ==, 143);

  g_autoptr(NfTestProc) b =
      run_exec("ex-stubborn", "trap '' TERM; echo cmd-started; while :; do sleep 0.1; done");
  g_assert_true(nf_test_proc_wait_output(b, "cmd-started", CLI_MS));
  const char *down[] = {"down", "--name", "ex-stubborn", NULL};
  g_autofree char *d = cli(0, down);
  g_assert_cmpint(nf_test_proc_wait_exit(b, CLI_MS), ==, 137);
  g_assert_nonnull(strstr(nf_test_proc_output(b), "did not end on SIGTERM; killing it"));

  g_setenv("FAKE_QEMU_NO_READY", "1", TRUE);
  g_autoptr(NfTestProc) c = run_exec("ex-early", "echo cmd-should-not-run");
  g_unsetenv("FAKE_QEMU_NO_READY");
  g_assert_true(nf_test_proc_wait_output(c, "booting", CLI_MS));
  nf_test_proc_signal(c, SIGTERM);
  g_assert_cmpint(nf_test_proc_wait_exit(c, CLI_MS), ==, 1);
  g_test_message("%s", nf_test_proc_output(c));
  g_assert_nonnull(strstr(nf_test_proc_output(c), "stopped before the fleet was ready"));
  g_assert_null(strstr(nf_test_proc_output(c), "cmd-should-not-run\n"));
}

/* --ephemeral with `down --leave-running`: the state dir stays while its
 * guests run on (their console logs are in it); the supervisor that takes
 * them over and stops them with --ephemeral removes it. */
static void test_ephemeral_left_running(void)
{
  start_fakes_with("eph", "1", "--ephemeral", NULL);
  const char *leave[] = {"down", "--leave-running", "--name", "eph", NULL};
  g_autofree char *left = cli(0, leave);
  g_autofree char *state = g_build_filename(tmp, "state/nervesfleet/eph", NULL);
  g_autofree char *log = g_build_filename(state, "vm-0001/console.log", NULL);
  g_assert_true(g_file_test(log, G_FILE_TEST_EXISTS));
  g_autofree char *said = g_build_filename(state, "supervisor.log", NULL);
  g_assert_true(nf_test_wait_file_contains(said, "--ephemeral: ", CLI_MS));

  start_fakes_with("eph", "1", "--ephemeral", NULL); /* takes the guest over */
  const char *ps[] = {"ps", "--name", "eph", NULL};
  g_autofree char *table = cli(0, ps);
  g_assert_nonnull(strstr(table, "1 guest: 1 ready"));
  const char *down[] = {"down", "--name", "eph", NULL};
  g_autofree char *d = cli(0, down);
  g_assert_false(g_file_test(state, G_FILE_TEST_EXISTS));
}

typedef struct {
  NfTestProc *p;
  const char *needle;
} Seen;

static gboolean seen_both(gpointer data)
{
  Seen *w = data;
  const char *out = nf_test_proc_output(w->p);
  g_autofree char *one = g_strdup_printf("vm-0001 | %s", w->needle);
  g_autofree char *two = g_strdup_printf("vm-0002 | %s", w->needle);
  return strstr(out, one) && strstr(out, two);
}

/* `logs all -f` while two guests print 256 KiB at the same moment: the log
 * grows by pieces that end anywhere in a line, yet every line comes out
 * whole behind its guest's name (the pieces of one guest wait for the rest
 * of their line instead of being cut by the other's). Fake guests. */
static void test_logs_follow_whole_lines(void)
{
  g_autofree char *qemu = g_build_filename(g_getenv("NF_HELPERS"), "fake-qemu", NULL);
  g_autofree char *kernel = g_build_filename(tmp, "Image", NULL);
  g_assert_true(g_file_set_contents(kernel, "not a kernel", -1, NULL));
  g_setenv("FAKE_QEMU_CHATTER_MS", "2000", TRUE);
  g_setenv("FAKE_QEMU_CHATTER_KB", "256", TRUE);
  const char *run[] = {"run", "2",        "-d",   "--name",  "chat", "--qemu",
                       qemu,  "--kernel", kernel, "--accel", "tcg",  NULL};
  g_autofree char *started = cli(0, run);
  g_unsetenv("FAKE_QEMU_CHATTER_MS");
  g_unsetenv("FAKE_QEMU_CHATTER_KB");
  const char *follow[] = {"logs", "all", "-f", "--name", "chat", NULL};
  g_autoptr(NfTestProc) logs = nf_test_proc_spawn(tmp, follow);
  /* 256 KiB of 43-byte lines: the last is number 6096. */
  Seen last = {logs, "chatter 00006096 "};
  g_assert_true(nf_test_wait_for(seen_both, &last, CLI_MS));
  g_auto(GStrv) lines = g_strsplit(nf_test_proc_output(logs), "\n", -1);
  guint chatter = 0;
  for (char **l = lines; *l && **l; l++) {
    g_assert_true(g_str_has_prefix(*l, "vm-0001 | ") || g_str_has_prefix(*l, "vm-0002 | "));
    if (strstr(*l, "chatter ")) {
      chatter++;
      if (strlen(*l) != strlen("vm-0001 | chatter 00000000 ........................\r"))
        g_error("a line cut or joined: '%s'", *l);
    }
  }
  g_assert_cmpuint(chatter, ==, 2 * 6097);
  const char *down[] = {"down", "--name", "chat", NULL};
  g_autofree char *d = cli(0, down);
  g_assert_cmpint(nf_test_proc_wait_exit(logs, CLI_MS), ==, 0);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  tmp = nf_test_tmpdir_new();
  g_test_add_func("/cli-faults/bad-arguments", test_bad_arguments);
  g_test_add_func("/cli-faults/fleet-faults", test_fleet_faults);
  g_test_add_func("/cli-faults/reflash-all-with-orphans", test_reflash_all_with_orphans);
  g_test_add_func("/cli-faults/logs-follow-many", test_logs_follow_many);
  g_test_add_func("/cli-faults/log-max", test_log_max);
  g_test_add_func("/cli-faults/ephemeral-left-running", test_ephemeral_left_running);
  g_test_add_func("/cli-faults/exec-stopped", test_exec_stopped);
  g_test_add_func("/cli-faults/events-dropped", test_events_dropped);
  g_test_add_func("/cli-faults/state-dir-locked", test_state_dir_locked);
  g_test_add_func("/cli-faults/logs-follow-dropped", test_logs_follow_dropped);
  g_test_add_func("/cli-faults/logs-follow-whole-lines", test_logs_follow_whole_lines);
  int rc = g_test_run();
  nf_test_tmpdir_cleanup(tmp);
  g_free(tmp);
  return rc;
}
