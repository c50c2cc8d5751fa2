/*
 * test-fleet-limits.c: the fleet's safety limits at the sizes where they
 * used to switch themselves off, on the fake qemu (hundreds to 1,000 guests
 * in seconds). Guards: the boot window never has more than `batch` guests
 * booting; the failure-storm guard pauses restarts when 1,000 guests fail at
 * once (its 256-entry ring could never reach half of more than 512 guests)
 * and resumes them a window later;
 * one guest in a crash loop does not pause the whole fleet; a guest is given
 * up on after --max-restarts 40 (a 32-entry tally never got there); no
 * restart is scheduled sooner than the floor, even with --backoff 0;
 * `run` refuses --restart-window 0 (which would switch both limits off);
 * a `ps` of 5,000 guests (past the control socket's output cap and the
 * CLI's first buffer) arrives whole, raw and through `ps --json`.
 */
#include <signal.h>
#include <string.h>

#include <gio/gio.h>
#include <jansson.h>

#include "supervisor/control.h"
#include "tests/lib/fake-fleet.h"
#include "tests/lib/nf-test.h"

#define WAIT_MS 120000

static void kill_guest(NfFakeFleet *f, guint id)
{
  NfVm *vm = nf_fleet_find_vm(f->fleet, id);
  g_assert_nonnull(vm);
  GPid pid = nf_vm_pid(vm);
  g_assert_cmpint(pid, >, 0);
  g_assert_cmpint(kill(pid, SIGKILL), ==, 0);
}

static gboolean any_notice_has(NfFakeFleet *f, const char *needle)
{
  for (guint i = 0; i < f->notices->len; i++)
    if (strstr(g_ptr_array_index(f->notices, i), needle))
      return TRUE;
  return FALSE;
}

static gboolean any_reason_has(NfFakeFleet *f, const char *needle)
{
  for (guint i = 0; i < f->reasons->len; i++)
    if (strstr(g_ptr_array_index(f->reasons, i), needle))
      return TRUE;
  return FALSE;
}

/* 400 guests through a window of 8: it is used to the full and never
 * exceeded, and every guest is started exactly once. */
static void test_boot_window(void)
{
  NfFakeFleet *f = nf_fake_fleet_new(400, 8);
  g_setenv("FAKE_QEMU_BOOT_MS", "30", TRUE); /* each guest holds its slot a while */
  nf_fake_fleet_start(f);
  g_assert_true(nf_fake_fleet_wait_all(f, NF_VM_READY, WAIT_MS));
  g_assert_cmpuint(f->max_booting, ==, 8);
  NfFleetCounts c;
  nf_fleet_counts(f->fleet, &c);
  g_assert_cmpuint(c.started, ==, 400);
  g_assert_cmpuint(nf_fake_fleet_seen(f, NF_VM_QUEUED, NF_VM_STARTING), ==, 400);
  nf_fake_fleet_finish(f, FALSE);
}

static gboolean all_waiting(NfFakeFleet *f)
{
  NfFleetCounts c;
  nf_fleet_counts(f->fleet, &c);
  return c.booting == 0 && c.ready == 0 && c.backoff == 0 && c.stopping == 0;
}

/* 1,000 guests killed at once (a host OOM, say): restarts pause, and while
 * paused no guest is started again. */
static void test_storm_guard_1000(void)
{
  NfFakeFleet *f = nf_fake_fleet_new(1000, 1000);
  nf_fake_fleet_start(f);
  g_assert_true(nf_fake_fleet_wait_all(f, NF_VM_READY, WAIT_MS));
  g_assert_cmpuint(f->max_booting, <=, 1000);

  g_setenv("FAKE_QEMU_EXIT_MS", "0", TRUE); /* restarted guests keep failing */
  for (guint id = 1; id <= 1000; id++)
    kill_guest(f, id);
  g_assert_true(nf_fake_fleet_wait_notice(f, "restarts paused", WAIT_MS));
  NfFleetCounts at_pause;
  nf_fleet_counts(f->fleet, &at_pause);

  /* Everything that failed waits in the queue; nothing more was started. */
  g_assert_true(nf_fake_fleet_wait(f, all_waiting, WAIT_MS));
  NfFleetCounts c;
  nf_fleet_counts(f->fleet, &c);
  g_assert_cmpuint(c.started, ==, at_pause.started);
  g_assert_cmpuint(c.queued, >, 0);
  g_assert_cmpuint(c.queued + c.failed, ==, 1000);
  nf_fake_fleet_finish(f, FALSE);
}

/* 20 guests, all killed at once: restarts paused for `window_s`. */
static NfFakeFleet *paused_fleet(guint window_s)
{
  NfFakeFleet *f = nf_fake_fleet_new(20, 20);
  f->config.restart.window_ms = window_s * 1000;
  nf_fake_fleet_start(f);
  g_assert_true(nf_fake_fleet_wait_all(f, NF_VM_READY, WAIT_MS));
  for (guint id = 1; id <= 20; id++)
    kill_guest(f, id);
  g_autofree char *notice = g_strdup_printf("restarts paused for %u s", window_s);
  g_assert_true(nf_fake_fleet_wait_notice(f, notice, WAIT_MS));
  return f;
}

/* After the pause (one restart window) restarts resume by themselves and the
 * fleet comes back whole. */
static void test_storm_pause_resumes(void)
{
  NfFakeFleet *f = paused_fleet(1);
  g_assert_true(nf_fake_fleet_wait_notice(f, "restarts resumed", WAIT_MS));
  g_assert_true(nf_fake_fleet_wait_all(f, NF_VM_READY, WAIT_MS));
  g_assert_cmpuint(nf_fake_fleet_seen(f, NF_VM_READY, NF_VM_BACKOFF), ==, 20);
  nf_fake_fleet_finish(f, FALSE);
}

static gboolean set_flag_cb(gpointer data)
{
  *(gboolean *)data = TRUE;
  return G_SOURCE_REMOVE;
}

/* A fleet stopped and freed during a pause leaves no timer behind: the
 * pause's resume timer was cleared as if it were a deadline, which removed
 * whichever deadline had its number and let the timer fire on the freed
 * fleet (ASan: heap-use-after-free) once the window was over. */
static void test_storm_pause_then_stop(void)
{
  NfFakeFleet *f = paused_fleet(3);
  nf_fake_fleet_finish(f, FALSE);
  /* The window passes with the loop running, as in a program that goes on. */
  gboolean over = FALSE;
  g_timeout_add(3500, set_flag_cb, &over);
  while (!over)
    g_main_context_iteration(NULL, TRUE);
}

/* One guest of 10 in a crash loop is left to its own intensity limit: the
 * others do not have their restarts paused on its account. */
static void test_one_crash_loop_is_no_storm(void)
{
  NfFakeFleet *f = nf_fake_fleet_new(10, 10);
  f->config.restart.max_restarts = 6; /* past the old storm threshold of 5 failures */
  f->config.restart.backoff_initial_ms = 0;
  nf_fake_fleet_start(f);
  g_assert_true(nf_fake_fleet_wait_all(f, NF_VM_READY, WAIT_MS));
  g_setenv("FAKE_QEMU_FAULT_GUESTS", "vm-0001", TRUE);
  g_setenv("FAKE_QEMU_EXIT_MS", "0", TRUE);
  g_setenv("FAKE_QEMU_EXIT_CODE", "3", TRUE);
  kill_guest(f, 1);
  g_assert_true(nf_fake_fleet_wait_vm(f, 1, NF_VM_FAILED, WAIT_MS));
  g_assert_nonnull(strstr(nf_vm_exit_reason(nf_fleet_find_vm(f->fleet, 1)), "status 3"));
  g_assert_cmpuint(nf_vm_restarts(nf_fleet_find_vm(f->fleet, 1)), ==, 6);
  for (guint i = 0; i < f->notices->len; i++)
    g_assert_null(strstr(g_ptr_array_index(f->notices, i), "restarts paused"));
  g_assert_cmpuint(nf_fake_fleet_count(f, NF_VM_READY), ==, 9);
  nf_fake_fleet_finish(f, FALSE);
}

/* After a host reboot a fleet's status files say its guests were up, and
 * none is there (no pid file, no qemu): they are restarted at once, not
 * held back by the storm guard as if they had crashed together. */
static void test_all_dead_at_adoption_is_no_storm(void)
{
  NfFakeFleet *f = nf_fake_fleet_new(6, 6);
  f->config.adopt = TRUE;
  for (guint id = 1; id <= 6; id++) {
    g_autofree char *dir = g_strdup_printf("%s/vm-%04u", f->config.state_dir, id);
    g_assert_cmpint(g_mkdir_with_parents(dir, 0755), ==, 0);
    g_autofree char *path = g_build_filename(dir, "status.json", NULL);
    g_assert_true(g_file_set_contents(path, "{\"state\":\"ready\",\"restarts\":0}", -1, NULL));
  }
  nf_fake_fleet_start(f);
  g_assert_true(nf_fake_fleet_wait_all(f, NF_VM_READY, WAIT_MS));
  g_assert_false(any_notice_has(f, "restarts paused"));
  g_assert_true(any_reason_has(f, "died while no supervisor was watching"));
  nf_fake_fleet_finish(f, FALSE);
}

/* Starts a one-guest fleet, kills its guest once ready, and lets every run
 * after crash `exit_ms` after its QMP handshake, until the guest is failed. */
static void crash_loop_until_failed(NfFakeFleet *f, const char *exit_ms)
{
  nf_fake_fleet_start(f);
  g_assert_true(nf_fake_fleet_wait_all(f, NF_VM_READY, WAIT_MS));
  g_setenv("FAKE_QEMU_EXIT_MS", exit_ms, TRUE);
  kill_guest(f, 1);
  g_assert_true(nf_fake_fleet_wait_vm(f, 1, NF_VM_FAILED, WAIT_MS));
}

/* A guest that crashes soon after each ready line has not proved healthy:
 * its backoff doubles (0.1, 0.2, 0.4, 0.8 s). It used to start over at
 * every ready line, so such a guest restarted at the first delay forever. */
static void test_backoff_grows_across_short_ready_spells(void)
{
  NfFakeFleet *f = nf_fake_fleet_new(1, 1);
  f->config.restart.max_restarts = 4;
  f->config.restart.window_ms = 600000;
  f->config.restart.backoff_initial_ms = 100;
  crash_loop_until_failed(f, "300"); /* each run crashes after its ready line */
  guint readies = 0;
  for (guint s = 0; s < NF_VM_N_STATES; s++)
    readies += nf_fake_fleet_seen(f, s, NF_VM_READY);
  g_assert_cmpuint(readies, ==, 5); /* each of its runs got as far as ready */
  double longest = 0;
  for (guint i = 0; i < f->reasons->len; i++) {
    const char *in = strstr(g_ptr_array_index(f->reasons, i), "restarting in ");
    if (in)
      longest = MAX(longest, g_ascii_strtod(in + strlen("restarting in "), NULL));
  }
  g_assert_cmpfloat(longest, >=, 0.6); /* the 4th: 0.8 s, jitter ±20 % */
  nf_fake_fleet_finish(f, FALSE);
}

/* --max-restarts 40 with --backoff 0: the guest is given up on after its
 * 40th restart, and each restart waited at least the floor. */
static void test_restarts_above_old_tally(void)
{
  NfFakeFleet *f = nf_fake_fleet_new(1, 1);
  f->config.restart.max_restarts = 40;
  f->config.restart.window_ms = 600000;
  f->config.restart.backoff_initial_ms = 0;
  f->config.restart.backoff_max_ms = 0;
  crash_loop_until_failed(f, "0");
  NfVm *vm = nf_fleet_find_vm(f->fleet, 1);
  g_assert_cmpuint(nf_vm_restarts(vm), ==, 40);
  g_assert_true(any_reason_has(f, "more than 40 restarts within 600 s"));
  g_assert_cmpuint(nf_fake_fleet_seen(f, NF_VM_BACKOFF, NF_VM_QUEUED), ==, 40);
  /* --backoff 0 is the floor, not a tight loop. */
  g_assert_true(any_reason_has(f, "restarting in 0.1 s"));
  g_assert_false(any_reason_has(f, "restarting in 0.0 s"));
  nf_fake_fleet_finish(f, FALSE);
}

/* The flags, through the real binary: a zero window is refused with the
 * documented status 2; --backoff 0 and a large --max-restarts are accepted
 * and run (on the fake qemu, --exec true). */
static void test_flags(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  g_autofree char *out = NULL;
  const char *zero[] = {"run", "1", "--restart-window", "0", NULL};
  g_assert_cmpint(nf_test_run_cli(tmp, zero, 30000, &out), ==, 2);
  g_assert_nonnull(strstr(out, "--restart-window '0'"));
  g_assert_nonnull(strstr(out, "longer than 0 s"));
  g_clear_pointer(&out, g_free);

  g_autofree char *qemu = g_build_filename(g_getenv("NF_HELPERS"), "fake-qemu", NULL);
  g_autofree char *kernel = g_build_filename(tmp, "Image", NULL);
  g_assert_true(g_file_set_contents(kernel, "not a kernel", -1, NULL));
  const char *ok[] = {"run",       "2", "--qemu",         qemu,      "--kernel", kernel,
                      "--backoff", "0", "--max-restarts", "1000000", "--exec",   "true",
                      NULL};
  int status = nf_test_run_cli(tmp, ok, 60000, &out);
  if (status != 0)
    g_test_message("output:\n%s", out);
  g_assert_cmpint(status, ==, 0);
  nf_test_tmpdir_cleanup(tmp);
}

typedef struct {
  gboolean done;
  char *out;
} Reply;

static void reply_cb(GObject *source, GAsyncResult *res, gpointer data)
{
  Reply *r = data;
  g_subprocess_communicate_utf8_finish(G_SUBPROCESS(source), res, &r->out, NULL, NULL);
  r->done = TRUE;
}

static gboolean reply_done(gpointer data)
{
  return ((Reply *)data)->done;
}

/* What `p` prints, read while this process's main loop runs (the fleet under
 * test answers from it); `p` must exit 0. Caller frees. */
static char *stdout_of(GSubprocess *p)
{
  Reply r = {0};
  g_subprocess_communicate_utf8_async(p, NULL, NULL, reply_cb, &r);
  g_assert_true(nf_test_wait_for(reply_done, &r, 120000));
  g_assert_true(g_subprocess_get_if_exited(p));
  g_assert_cmpint(g_subprocess_get_exit_status(p), ==, 0);
  return r.out;
}

/* A reply larger than the control socket's slow-reader cap (1 MiB) still
 * arrives whole: `ps` of 5,000 guests (~1.1 MB) used to get its client
 * dropped, because the line's closing newline was queued as a second write
 * behind the unread reply; `nervesfleet ps --json` prints it whole. The
 * guests are never started: ps answers from memory. */
static void test_ps_reply_over_output_cap(void)
{
  NfFakeFleet *f = nf_fake_fleet_new(5000, 8);
  static const NfFleetCallbacks cb = {0};
  g_autoptr(GError) error = NULL;
  NfFleet *fleet = nf_fleet_new(&f->config, &cb, NULL, &error);
  g_assert_no_error(error);
  static const NfControlHooks hooks = {0};
  NfControl *ctl = nf_control_new(fleet, &hooks, NULL, &error);
  g_assert_no_error(error);
  g_autofree char *sock = g_build_filename(nf_fleet_runtime_dir(fleet), "control.sock", NULL);
  g_autofree char *helper = g_build_filename(g_getenv("NF_HELPERS"), "nf-ctl-raw", NULL);
  g_autoptr(GSubprocess) p = g_subprocess_new(G_SUBPROCESS_FLAGS_STDOUT_PIPE, &error, helper, sock,
                                              "{\"v\":1,\"id\":1,\"cmd\":\"ps\"}", NULL);
  g_assert_no_error(error);
  g_autofree char *raw = stdout_of(p);
  g_assert_cmpuint(strlen(raw), >, NF_CONTROL_OUT_MAX);
  json_t *doc = json_loads(raw, 0, NULL);
  g_assert_nonnull(doc);
  g_assert_true(json_is_true(json_object_get(doc, "ok")));
  g_assert_cmpuint(json_array_size(json_object_get(json_object_get(doc, "result"), "guests")), ==,
                   5000);
  json_decref(doc);

  /* The CLI prints that result from its receive buffer: read in many
   * pieces, past the buffer's first 1 MiB, it comes out whole. */
  g_autoptr(GSubprocess) cli =
      g_subprocess_new(G_SUBPROCESS_FLAGS_STDOUT_PIPE, &error, nf_test_bin(), "ps", "--json",
                       "--name", f->config.name, "--runtime-dir", f->config.runtime_dir, NULL);
  g_assert_no_error(error);
  g_autofree char *printed = stdout_of(cli);
  gsize len = strlen(printed);
  g_assert_cmpuint(len, >, NF_CONTROL_OUT_MAX);
  g_assert_cmpint(printed[len - 1], ==, '\n');
  json_error_t jerr;
  doc = json_loads(printed, 0, &jerr);
  if (!doc)
    g_test_message("ps --json: %s at %d", jerr.text, jerr.position);
  g_assert_nonnull(doc);
  g_assert_cmpuint(json_array_size(json_object_get(doc, "guests")), ==, 5000);
  json_decref(doc);
  nf_control_free(ctl);
  nf_fleet_free(fleet);
  nf_fake_fleet_finish(f, FALSE);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/fleet-limits/boot-window", test_boot_window);
  g_test_add_func("/fleet-limits/storm-guard-1000", test_storm_guard_1000);
  g_test_add_func("/fleet-limits/storm-pause-resumes", test_storm_pause_resumes);
  g_test_add_func("/fleet-limits/storm-pause-then-stop", test_storm_pause_then_stop);
  g_test_add_func("/fleet-limits/one-crash-loop-is-no-storm", test_one_crash_loop_is_no_storm);
  g_test_add_func("/fleet-limits/restarts-above-old-tally", test_restarts_above_old_tally);
  g_test_add_func("/fleet-limits/all-dead-at-adoption-is-no-storm",
                  test_all_dead_at_adoption_is_no_storm);
  g_test_add_func("/fleet-limits/backoff-grows-across-short-ready-spells",
                  test_backoff_grows_across_short_ready_spells);
  g_test_add_func("/fleet-limits/flags", test_flags);
  g_test_add_func("/fleet-limits/ps-reply-over-output-cap", test_ps_reply_over_output_cap);
  return g_test_run();
}
