/*
 * test-abort-cleanup.c: a test that fails an assertion leaves nothing behind
 * (tests/lib/abort-cleanup.c). A subprocess starts an in-process fake fleet,
 * a daemon supervisor (`run 1 -d`, fake qemu) and a shell that ignores
 * SIGTERM, checks that their processes and memory cgroups are there, and
 * fails: an assertion, a fatal g_critical, or a use after free that ASan
 * reports. Then no process names or runs in its temp dirs, the dirs are
 * gone, and so are the cgroups. Without the abort handler the daemon, its qemu, both dirs and the
 * cgroups stay (what a failed CI run left on the host).
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include <gio/gio.h>

#include "tests/lib/fake-fleet.h"
#include "tests/lib/nf-test.h"

#define WAIT_MS 60000

static char *self_path;

/* Processes whose environment runs them in `dir` (XDG_RUNTIME_DIR inside
 * it: a supervisor started by nf_test_proc_spawn names nothing else). */
static guint pids_running_in(const char *dir)
{
  g_autofree char *needle = g_strdup_printf("XDG_RUNTIME_DIR=%s/", dir);
  g_autoptr(GDir) proc = g_dir_open("/proc", 0, NULL);
  g_assert_nonnull(proc);
  guint n = 0;
  for (const char *name; (name = g_dir_read_name(proc)) != NULL;) {
    g_autofree char *path = g_strdup_printf("/proc/%s/environ", name);
    g_autofree char *env = NULL;
    gsize len = 0;
    if (!g_file_get_contents(path, &env, &len, NULL))
      continue;
    for (gsize i = 0; i < len; i++)
      n += g_str_has_prefix(env + i, needle) && (i == 0 || env[i - 1] == '\0');
  }
  return n;
}

/* The subprocess: a fleet in-process and one as a daemon, then a failed
 * assertion. Where it ran is written to $TMPDIR/dirs for the parent. */
static void fail_with_fleets(void)
{
  NfFakeFleet *f = nf_fake_fleet_new(2, 2);
  nf_fake_fleet_start(f);
  g_assert_true(nf_fake_fleet_wait_all(f, NF_VM_READY, WAIT_MS));

  g_autofree char *tmp = nf_test_tmpdir_new();
  g_autofree char *qemu = g_build_filename(g_getenv("NF_HELPERS"), "fake-qemu", NULL);
  g_autofree char *kernel = g_build_filename(tmp, "Image", NULL);
  g_assert_true(g_file_set_contents(kernel, "not a kernel", -1, NULL));
  const char *args[] = {"run", "1",        "-d",   "--name",  "left", "--qemu",
                        qemu,  "--kernel", kernel, "--accel", "tcg",  NULL};
  g_autofree char *out = NULL;
  g_assert_cmpint(nf_test_run_cli(tmp, args, WAIT_MS, &out), ==, 0);
  g_assert_cmpuint(pids_running_in(tmp), >=, 1);

  /* As root on a host with v1 memory cgroups, both fleets made theirs. */
  if (geteuid() == 0 && g_file_test("/sys/fs/cgroup/memory", G_FILE_TEST_IS_DIR)) {
    g_assert_cmpuint(nf_test_cgroups_naming(f->tmp), >, 0);
    g_assert_cmpuint(nf_test_cgroups_of(tmp, "left"), >, 0);
  }
  /* A supervisor that crashed: its runtime dir, guest and cgroups stay. */
  const char *crash[] = {"run", "1",        "-d",   "--name",  "crashed", "--qemu",
                         qemu,  "--kernel", kernel, "--accel", "tcg",     NULL};
  g_autofree char *out2 = NULL;
  g_assert_cmpint(nf_test_run_cli(tmp, crash, WAIT_MS, &out2), ==, 0);
  /* Its guest spawned (and its cgroup made) before the crash. */
  const char *wait[] = {"wait", "--name", "crashed", "--timeout", "60", NULL};
  g_assert_cmpint(nf_test_run_cli(tmp, wait, WAIT_MS, NULL), ==, 0);
  const char *said = strstr(out2, "supervisor pid ");
  g_assert_nonnull(said);
  g_assert_cmpint(kill((pid_t)atoi(said + strlen("supervisor pid ")), SIGKILL), ==, 0);
  if (geteuid() == 0 && g_file_test("/sys/fs/cgroup/memory", G_FILE_TEST_IS_DIR))
    g_assert_cmpuint(nf_test_cgroups_of(tmp, "crashed"), >, 0);

  /* One that will not stop on SIGTERM, so SIGKILL has to come. */
  g_autofree char *marker = g_build_filename(tmp, "stubborn", NULL);
  const char *sh[] = {"sh",       "-c",   "trap '' TERM; while :; do sleep 1; done",
                      "stubborn", marker, NULL};
  g_autoptr(GError) error = NULL;
  g_assert_true(g_spawn_async(NULL, (char **)sh, NULL,
                              G_SPAWN_SEARCH_PATH | G_SPAWN_DO_NOT_REAP_CHILD, NULL, NULL, NULL,
                              &error));

  g_autofree char *dirs = g_build_filename(g_get_tmp_dir(), "dirs", NULL);
  g_autofree char *text = g_strdup_printf("%s\n%s\n", f->tmp, tmp);
  g_assert_true(g_file_set_contents(dirs, text, -1, NULL));
  const char *how = g_getenv("NF_TEST_ABORT_CHILD");
  if (g_strcmp0(how, "critical") == 0)
    g_critical("the failure"); /* fatal in a test: a breakpoint */
  if (g_strcmp0(how, "asan") == 0) {
    char *volatile p = g_malloc(8);
    g_free(p);
    p[0] = 1; /* the failure: a use after free, reported by ASan */
  }
  g_assert_cmpint(1, ==, 2); /* the failure */
}

/* The test program again, as the child alone (GLib's own test subprocess
 * exits instead of aborting on a failed assertion: not the case here),
 * failing as `how` says (an assertion, a g_critical, a use after free); it must die of
 * `sig` (0: exit as a sanitizer does) with nothing of it left. */
static void abort_and_check(const char *how, int sig, const char *said)
{
  g_autofree char *outer = nf_test_tmpdir_new();
  g_autoptr(GSubprocessLauncher) l =
      g_subprocess_launcher_new(G_SUBPROCESS_FLAGS_STDOUT_PIPE | G_SUBPROCESS_FLAGS_STDERR_MERGE);
  g_subprocess_launcher_setenv(l, "TMPDIR", outer, TRUE); /* its dirs inside ours */
  g_subprocess_launcher_setenv(l, "NF_TEST_ABORT_CHILD", how, TRUE);
  g_autoptr(GError) error = NULL;
  g_autoptr(GSubprocess) child = g_subprocess_launcher_spawn(l, &error, self_path, NULL);
  g_assert_no_error(error);
  g_autofree char *out = NULL;
  g_assert_true(g_subprocess_communicate_utf8(child, NULL, NULL, &out, NULL, &error));
  g_assert_no_error(error);
  g_test_message("the child said:\n%s", out);
  if (sig) {
    g_assert_true(g_subprocess_get_if_signaled(child));
    g_assert_cmpint(g_subprocess_get_term_sig(child), ==, sig);
  } else {
    g_assert_true(g_subprocess_get_if_exited(child)); /* the sanitizer's exit */
    g_assert_cmpint(g_subprocess_get_exit_status(child), !=, 0);
  }
  g_assert_nonnull(strstr(out, said));
  g_assert_nonnull(strstr(out, "aborted: stopping what the test left running in"));
  g_assert_nonnull(strstr(out, "aborted: killing what did not stop:"));

  g_autofree char *dirs_path = g_build_filename(outer, "dirs", NULL);
  g_autofree char *dirs = NULL;
  g_assert_true(g_file_get_contents(dirs_path, &dirs, NULL, NULL));
  g_auto(GStrv) lines = g_strsplit(g_strstrip(dirs), "\n", -1);
  g_assert_cmpuint(g_strv_length(lines), ==, 2);
  for (guint i = 0; i < 2; i++) {
    g_assert_false(g_file_test(lines[i], G_FILE_TEST_EXISTS));
    g_assert_cmpuint(pids_running_in(lines[i]), ==, 0);
    g_assert_cmpuint(nf_test_cgroups_naming(lines[i]), ==, 0);
  }
  g_assert_cmpuint(nf_test_cgroups_of(lines[1], "left"), ==, 0);
  g_assert_cmpuint(nf_test_cgroups_of(lines[1], "crashed"), ==, 0);
  nf_test_tmpdir_cleanup(outer); /* and no process names either dir */
}

static void test_assertion(void)
{
  abort_and_check("assert", SIGABRT, "assertion failed (1 == 2)");
}

static void test_critical(void)
{
  abort_and_check("critical", SIGTRAP, "CRITICAL **");
}

static void test_sanitizer(void)
{
#if defined(__SANITIZE_ADDRESS__)
  abort_and_check("asan", 0, "AddressSanitizer: heap-use-after-free");
#else
  g_test_skip("not built with ASan");
#endif
}

int main(int argc, char **argv)
{
  self_path = g_canonicalize_filename(argv[0], NULL);
  g_test_init(&argc, &argv, NULL);
  if (g_getenv("NF_TEST_ABORT_CHILD"))
    g_test_add_func("/abort-cleanup/child", fail_with_fleets);
  else {
    g_test_add_func("/abort-cleanup/assertion", test_assertion);
    g_test_add_func("/abort-cleanup/critical", test_critical);
    g_test_add_func("/abort-cleanup/sanitizer", test_sanitizer);
  }
  int rc = g_test_run();
  g_free(self_path);
  return rc;
}
