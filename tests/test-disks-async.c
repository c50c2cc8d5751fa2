/*
 * test-disks-async.c: the supervisor keeps serving while guests' overlays
 * are made. Guards: overlays of a scale-up and of a `reflash all` are made
 * by qemu-img children, not inside the main loop, so `ps` is answered while
 * they cannot have finished; a guest waits for its disk in `starting`
 * ("making its disk" / "reflashing its disk" in its events.log, no qemu
 * yet) and boots once it is ready; a guest stopped while it waits stops at
 * once, and started again it waits for the work still running on its
 * overlay, then boots on a fresh disk.
 *
 * Determinism without timing: `qemu-img create` runs through a wrapper that
 * holds it while a FIFO (the gate) exists, so every assertion below happens
 * while the overlays are provably not made yet. The wrapper only delays the
 * real qemu-img, which does the work. Before the fix the supervisor ran
 * qemu-img inside its loop: it hung at the gate and `ps` timed out.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <glib/gstdio.h>
#include <jansson.h>

#include "tests/lib/nf-test.h"

#define BOOT_MS 180000
#define CLI_MS 60000
#define STOP_MS 60000

static char *cli(const char *tmp, const char *const *args);
static json_t *ps_states(const char *tmp);
static const char *state_of(json_t *ps, guint id);
static void gate_close(const char *gate);
static void gate_open(const char *gate);
static char *events_path(const char *tmp, guint id);
static char *install_gate(const char *tmp, const char *gate);

/* Runs one CLI command to completion; it must succeed. Returns its output. */
static char *cli(const char *tmp, const char *const *args)
{
  char *out = NULL;
  int rc = nf_test_run_cli(tmp, args, CLI_MS, &out);
  g_test_message("nervesfleet %s -> %d: %s", args[0], rc, out);
  g_assert_cmpint(rc, ==, 0);
  return out;
}

/* `ps --json` of the fleet (owned by the caller). */
static json_t *ps_states(const char *tmp)
{
  const char *args[] = {"ps", "--json", "--name", "async", NULL};
  g_autofree char *out = cli(tmp, args);
  json_t *ps = json_loads(out, 0, NULL);
  g_assert_nonnull(ps);
  return ps;
}

static const char *state_of(json_t *ps, guint id)
{
  gsize i;
  json_t *g;
  json_array_foreach(json_object_get(ps, "guests"), i, g)
  {
    if (json_integer_value(json_object_get(g, "id")) == (json_int_t)id)
      return json_string_value(json_object_get(g, "state"));
  }
  g_error("guest %u not in ps --json", id);
}

/* From now on, `qemu-img create` waits at the gate. */
static void gate_close(const char *gate)
{
  g_assert_cmpint(mkfifo(gate, 0600), ==, 0);
}

/* Lets every waiting qemu-img go, and the later ones pass. O_RDWR never
 * blocks on a FIFO and counts as its writer: the readers' opens return;
 * closing it gives them EOF. Unlinked first, so no new reader waits. */
static void gate_open(const char *gate)
{
  int fd = open(gate, O_RDWR | O_CLOEXEC);
  g_assert_cmpint(fd, >=, 0);
  g_assert_cmpint(g_unlink(gate), ==, 0);
  g_assert_cmpint(write(fd, "go\n", 3), ==, 3);
  close(fd);
}

static char *events_path(const char *tmp, guint id)
{
  return g_strdup_printf("%s/state/nervesfleet/async/vm-%04u/events.log", tmp, id);
}

/* A qemu-img first in PATH that holds `create` while `gate` is a FIFO and
 * then runs the real one. Returns the old PATH (to restore). */
static char *install_gate(const char *tmp, const char *gate)
{
  g_autofree char *real = g_find_program_in_path("qemu-img");
  g_assert_nonnull(real);
  g_autofree char *bin = g_build_filename(tmp, "bin", NULL);
  g_assert_cmpint(g_mkdir(bin, 0700), ==, 0);
  g_autofree char *wrapper = g_build_filename(bin, "qemu-img", NULL);
  g_autofree char *script = g_strdup_printf("#!/bin/sh\n"
                                            "if [ \"$1\" = create ] && [ -p '%s' ]; then\n"
                                            "  : > '%s.waiting'\n"
                                            "  read _ < '%s'\n"
                                            "fi\n"
                                            "exec '%s' \"$@\"\n",
                                            gate, gate, gate, real);
  g_assert_true(g_file_set_contents(wrapper, script, -1, NULL));
  g_assert_cmpint(g_chmod(wrapper, 0755), ==, 0);
  char *old = g_strdup(g_getenv("PATH"));
  g_autofree char *path = g_strconcat(bin, ":", old, NULL);
  g_setenv("PATH", path, TRUE);
  return old;
}

static void test_loop_serves_while_overlays_are_made(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  g_autofree char *base = nf_test_make_ext4_base(tmp);
  g_autofree char *before = nf_test_sha256_file(base);
  g_autofree char *gate = g_build_filename(tmp, "gate", NULL);
  g_autofree char *old_path = install_gate(tmp, gate);
  const char *run[] = {"run",     "1", "--name",         "async", "--disk", base,
                       "--batch", "4", "--stop-timeout", "5",     NULL};
  g_autoptr(NfTestProc) p = nf_test_proc_spawn(tmp, run);
  g_assert_true(nf_test_proc_wait_output(p, "all 1 guests ready", BOOT_MS));
  g_autofree char *ev1 = events_path(tmp, 1);
  g_autofree char *ev2 = events_path(tmp, 2);
  g_autofree char *ev3 = events_path(tmp, 3);

  /* Scale-up: the new guests wait for their overlays, held at the gate. */
  gate_close(gate);
  const char *scale[] = {"scale", "3", "--name", "async", NULL};
  g_autofree char *s = cli(tmp, scale);
  g_assert_true(nf_test_wait_file_contains(ev2, "queued -> starting: making its disk", CLI_MS));
  g_assert_true(nf_test_wait_file_contains(ev3, "queued -> starting: making its disk", CLI_MS));
  {
    json_auto_t *ps = ps_states(tmp); /* answered while qemu-img is held */
    g_assert_cmpstr(state_of(ps, 1), ==, "ready");
    g_assert_cmpstr(state_of(ps, 2), ==, "starting");
    g_assert_cmpstr(state_of(ps, 3), ==, "starting");
    g_autofree char *overlay2 =
        g_build_filename(tmp, "state/nervesfleet/async/disks/async-2.qcow2", NULL);
    g_assert_false(g_file_test(overlay2, G_FILE_TEST_EXISTS));
  }
  gate_open(gate);
  const char *wait[] = {"wait", "--name", "async", NULL};
  g_autofree char *w1 = cli(tmp, wait);
  {
    g_autofree char *text = NULL;
    g_assert_true(g_file_get_contents(ev2, &text, NULL, NULL));
    const char *making = strstr(text, "making its disk");
    g_assert_nonnull(making);
    const char *spawned = strstr(making, "starting -> starting: disk ready, qemu spawned");
    g_assert_nonnull(spawned);
    g_assert_nonnull(strstr(spawned, "-> ready"));
  }

  /* Reflash: all three wait for fresh overlays at once. */
  gate_close(gate);
  const char *reflash[] = {"reflash", "all", "--name", "async", NULL};
  g_autofree char *r = cli(tmp, reflash);
  g_assert_true(nf_test_wait_file_contains(ev1, "reflashing its disk", BOOT_MS));
  g_assert_true(nf_test_wait_file_contains(ev2, "reflashing its disk", BOOT_MS));
  g_assert_true(nf_test_wait_file_contains(ev3, "reflashing its disk", BOOT_MS));
  {
    json_auto_t *ps = ps_states(tmp);
    for (guint id = 1; id <= 3; id++)
      g_assert_cmpstr(state_of(ps, id), ==, "starting");
  }
  /* Waiting for its disk, a guest has no qemu: it stops at once... */
  const char *stop[] = {"stop", "3", "--name", "async", NULL};
  g_autofree char *st = cli(tmp, stop);
  {
    json_auto_t *ps = ps_states(tmp);
    g_assert_cmpstr(state_of(ps, 3), ==, "stopped");
    g_assert_cmpstr(state_of(ps, 2), ==, "starting");
  }
  /* ...and started again, it waits behind the work on its overlay. */
  const char *start[] = {"start", "3", "--name", "async", NULL};
  g_autofree char *st2 = cli(tmp, start);
  {
    json_auto_t *ps = ps_states(tmp);
    g_assert_cmpstr(state_of(ps, 3), ==, "starting");
  }
  gate_open(gate);
  g_autofree char *w2 = cli(tmp, wait);
  for (guint id = 1; id <= 3; id++) {
    g_autofree char *console =
        g_strdup_printf("%s/state/nervesfleet/async/vm-%04u/console.log", tmp, id);
    g_autofree char *text = NULL;
    g_assert_true(g_file_get_contents(console, &text, NULL, NULL));
    /* The last boot counted on a factory-fresh disk. */
    const char *last = g_strrstr(text, "nervesfleet-data boots=");
    g_assert_nonnull(last);
    g_assert_true(g_str_has_prefix(last, "nervesfleet-data boots=1"));
    g_assert_nonnull(g_strstr_len(text, last - text, "nervesfleet-data boots=1"));
  }

  nf_test_proc_signal(p, SIGTERM);
  g_assert_cmpint(nf_test_proc_wait_exit(p, STOP_MS), ==, 0);
  g_autofree char *after = nf_test_sha256_file(base);
  g_assert_cmpstr(before, ==, after);
  g_setenv("PATH", old_path, TRUE);
  nf_test_tmpdir_cleanup(tmp);
}

/* Ctrl-C while the fleet's disks are being made (before its main loop
 * runs) is handled, not fatal: once the disks are done the fleet stops in
 * order and run exits 0. It killed the supervisor mid-way before (exit
 * 130), leaving Nerves overlays without their serial; and the terminal's
 * SIGINT to the whole group killed the qemu-img making them. */
static void test_interrupt_while_disks_are_made(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  g_autofree char *base = nf_test_make_ext4_base(tmp);
  g_autofree char *gate = g_build_filename(tmp, "gate", NULL);
  g_autofree char *old_path = install_gate(tmp, gate);
  gate_close(gate);
  const char *run[] = {"run", "2", "--name", "intr", "--disk", base, "--stop-timeout", "5", NULL};
  g_autoptr(NfTestProc) p = nf_test_proc_spawn(tmp, run);
  g_autofree char *wrapper = g_build_filename(tmp, "bin", "qemu-img", NULL);
  g_autofree char *waiting = g_strconcat(gate, ".waiting", NULL);
  /* (A qemu-img other than create, `info` say, passes the gate at once.) */
  g_assert_true(nf_test_wait_polled(nf_test_path_exists, waiting, 10, CLI_MS));
  /* A terminal's Ctrl-C goes to run's process group: the disk tools are
   * not in it (they died of it, and the start failed). */
  g_autoptr(GArray) held = nf_test_pids_matching(wrapper);
  g_assert_cmpuint(held->len, >, 0);
  g_assert_cmpint(getpgid(g_array_index(held, GPid, 0)), !=, getpgid(nf_test_proc_pid(p)));
  nf_test_proc_signal(p, SIGINT);
  gate_open(gate);
  g_assert_cmpint(nf_test_proc_wait_exit(p, BOOT_MS), ==, 0);
  g_test_message("%s", nf_test_proc_output(p));
  g_assert_nonnull(strstr(nf_test_proc_output(p), "stopping"));
  g_setenv("PATH", old_path, TRUE);
  nf_test_tmpdir_cleanup(tmp);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/disks-async/interrupt-while-disks-are-made",
                  test_interrupt_while_disks_are_made);
  g_test_add_func("/disks-async/loop-serves-while-overlays-are-made",
                  test_loop_serves_while_overlays_are_made);
  return g_test_run();
}
