/*
 * test-run-errors.c: bad input to `nervesfleet run`. Guards: every mistake
 * gets one clear line naming the thing and the fix, a non-zero status, and
 * nothing left running or lying around in the runtime dir; the same value
 * in range is taken (--tb-size, shown by --print-config); a library opened
 * on demand (libsoup for --http, libsystemd under systemd) that cannot be
 * loaded is named with its package.
 */
#include <string.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <glib/gstdio.h>

#include "tests/lib/nf-test.h"

typedef struct {
  const char *path;
  const char *args[12];
  int status;
  const char *says;
} Case;

static const Case cases[] = {
    {"/run-errors/no-count", {"run", NULL}, 2, "missing the guest count N"},
    {"/run-errors/zero", {"run", "0", NULL}, 2, "guest count '0': expected a whole number"},
    {"/run-errors/not-a-number", {"run", "abc", NULL}, 2, "guest count 'abc'"},
    {"/run-errors/negative", {"run", "--", "-3", NULL}, 2, "guest count '-3'"},
    {"/run-errors/two-counts", {"run", "2", "3", NULL}, 2, "too many arguments"},
    {"/run-errors/unknown-flag",
     {"run", "2", "--frobnicate", NULL},
     2,
     "Unknown option --frobnicate"},
    {"/run-errors/unknown-verb", {"runn", "2", NULL}, 2, "unknown verb 'runn'"},
    {"/run-errors/exec-not-found",
     {"run", "1", "--exec", "nf-no-such-program", "--flag", NULL},
     2,
     "--exec: no program 'nf-no-such-program' (not in PATH"},
    {"/run-errors/exec-one-quoted-line",
     {"run", "1", "--exec", "true --version", NULL},
     2,
     "not `--exec 'make test'`"},
    {"/run-errors/bad-memory",
     {"run", "2", "--memory", "lots", NULL},
     2,
     "--memory 'lots': expected a size"},
    {"/run-errors/bad-tb-size",
     {"run", "2", "--tb-size", "0", NULL},
     2,
     "--tb-size '0': expected a whole number from 1 to 2048"},
    {"/run-errors/bad-accel",
     {"run", "2", "--accel", "warp", NULL},
     2,
     "--accel: unknown accelerator 'warp'"},
    {"/run-errors/bad-timeout",
     {"run", "2", "--stop-timeout", "soon", NULL},
     2,
     "--stop-timeout 'soon'"},
    {"/run-errors/missing-qemu",
     {"run", "2", "--qemu", "/nonexistent/qemu-system-aarch64", NULL},
     1,
     "/nonexistent/qemu-system-aarch64 not found; install it with `make deps`"},
    {"/run-errors/missing-kernel",
     {"run", "2", "--kernel", "/nonexistent/vmlinuz", NULL},
     1,
     "guest kernel /nonexistent/vmlinuz does not exist; build the default guest with `make guest`"},
    {"/run-errors/bad-serial-format",
     {"run", "2", "--serial-format", "NF-%s", NULL},
     1,
     "--serial-format"},
    {"/run-errors/bad-name", {"run", "2", "--name", "../escape", NULL}, 2, "--name '../escape'"},
    {"/run-errors/small-memory", {"run", "2", "--memory", "4M", NULL}, 2, "too small"},
};

static void run_case(gconstpointer data)
{
  const Case *c = data;
  g_autofree char *tmp = nf_test_tmpdir_new();
  g_autofree char *out = NULL;
  g_assert_cmpint(nf_test_run_cli(tmp, c->args, 30000, &out), ==, c->status);
  if (strstr(out, c->says) == NULL)
    g_test_message("output was: %s", out);
  g_assert_nonnull(strstr(out, c->says));
  g_assert_nonnull(strstr(out, "nervesfleet: "));
  nf_test_tmpdir_cleanup(tmp);
}

/* A state dir that cannot be made (a path through a regular file). */
/* The same flag in range is taken: --tb-size wins over --dense's 16. */
static void test_tb_size_taken(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  g_autofree char *out = NULL;
  const char *args[] = {"run", "2", "--dense", "--tb-size", "48", "--print-config", NULL};
  g_assert_cmpint(nf_test_run_cli(tmp, args, 30000, &out), ==, 0);
  g_assert_nonnull(strstr(out, "\"tb_mib\":48"));
  g_clear_pointer(&out, g_free);
  const char *dense[] = {"run", "2", "--dense", "--print-config", NULL};
  g_assert_cmpint(nf_test_run_cli(tmp, dense, 30000, &out), ==, 0);
  g_assert_nonnull(strstr(out, "\"tb_mib\":16"));
  nf_test_tmpdir_cleanup(tmp);
}

static void test_unwritable_state_dir(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  g_autofree char *file = g_build_filename(tmp, "plainfile", NULL);
  g_assert_true(g_file_set_contents(file, "x", 1, NULL));
  g_autofree char *dir = g_build_filename(file, "state", NULL);
  const char *args[] = {"run", "1", "--state-dir", dir, NULL};
  g_autofree char *out = NULL;
  g_assert_cmpint(nf_test_run_cli(tmp, args, 30000, &out), ==, 1);
  g_assert_nonnull(strstr(out, "cannot create directory"));
  g_assert_nonnull(strstr(out, "--state-dir"));
  nf_test_tmpdir_cleanup(tmp);
}

/* A runtime dir so deep that a guest socket would not fit in sun_path. */
static void test_socket_path_too_long(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  g_autofree char *deep = g_strdup_printf("%s/%0120d", tmp, 0);
  const char *args[] = {"run", "1", "--runtime-dir", deep, NULL};
  g_autofree char *out = NULL;
  g_assert_cmpint(nf_test_run_cli(tmp, args, 30000, &out), ==, 1);
  g_assert_nonnull(strstr(out, "longer than the 107 a unix socket allows"));
  g_assert_false(g_file_test(deep, G_FILE_TEST_EXISTS)); /* refused before creating */
  nf_test_tmpdir_cleanup(tmp);
}

/* kvm cannot serve aarch64 guests on this x86_64 host. */
static void test_kvm_refused_here(void)
{
  /* uname, not $HOSTTYPE: bash does not export that to the test. */
  struct utsname u;
  g_assert_cmpint(uname(&u), ==, 0);
  if (g_strcmp0(u.machine, "aarch64") == 0) {
    g_test_skip("aarch64 host");
    return;
  }
  g_autofree char *tmp = nf_test_tmpdir_new();
  const char *args[] = {"run", "1", "--accel", "kvm", NULL};
  g_autofree char *out = NULL;
  g_assert_cmpint(nf_test_run_cli(tmp, args, 30000, &out), ==, 1);
  g_assert_nonnull(strstr(out, "--accel kvm:"));
  g_assert_nonnull(strstr(out, "use --accel tcg"));
  nf_test_tmpdir_cleanup(tmp);
}

/* Real qemu refusing its command line: its own words reach the user. */
static void test_qemu_fails_at_start(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  const char *args[] = {"run", "3", "--name", "bad", "--qemu-arg=-no-such-option", NULL};
  g_autofree char *out = NULL;
  g_assert_cmpint(nf_test_run_cli(tmp, args, 60000, &out), ==, 1);
  g_assert_nonnull(strstr(out, "before it was up"));
  g_assert_nonnull(strstr(out, "-no-such-option: invalid option"));
  g_autofree char *rt = g_build_filename(tmp, "run", "nervesfleet", NULL);
  g_assert_false(g_file_test(rt, G_FILE_TEST_EXISTS));

  /* Failing after its sockets are up, qemu has said it waits on the
   * console's: only the error is quoted. */
  const char *small[] = {"run", "1", "--name", "small", "--memory", "16M", NULL};
  g_clear_pointer(&out, g_free);
  g_assert_cmpint(nf_test_run_cli(tmp, small, 60000, &out), ==, 1);
  g_assert_nonnull(strstr(out, "too large to fit in RAM"));
  g_assert_null(strstr(out, "waiting for connection"));
  nf_test_tmpdir_cleanup(tmp);
}

/* More guests than the open-file limit allows: refused up front with the
 * numbers and the fix, instead of failing guest by guest with EMFILE. */
static void test_fd_limit_too_low(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  g_autofree char *run = g_build_filename(tmp, "run", NULL);
  g_autofree char *state = g_build_filename(tmp, "state", NULL);
  g_autofree char *env_run = g_strdup_printf("XDG_RUNTIME_DIR=%s", run);
  g_autofree char *env_state = g_strdup_printf("XDG_STATE_HOME=%s", state);
  const char *argv[] = {"env", env_run,       env_state, "prlimit", "--nofile=300:300",
                        "--",  nf_test_bin(), "run",     "100",     "--batch",
                        "10",  NULL};
  g_autofree char *out = NULL, *err = NULL;
  int status = 0;
  g_autoptr(GError) error = NULL;
  g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, &out, &err, &status,
               &error);
  g_assert_no_error(error);
  g_assert_true(WIFEXITED(status));
  g_assert_cmpint(WEXITSTATUS(status), ==, 1);
  /* One fd per guest, one more for each of the 10 booting, 256 spare. */
  g_assert_nonnull(strstr(err, "100 guests need about 366 open files"));
  g_assert_nonnull(strstr(err, "or run at most 34 guests per supervisor"));
  g_autofree char *rt = g_build_filename(run, "nervesfleet", NULL);
  g_assert_false(g_file_test(rt, G_FILE_TEST_EXISTS));
  nf_test_tmpdir_cleanup(tmp);
}

/* `run` with LD_LIBRARY_PATH naming a dir whose `soname` is an empty file,
 * so the library run opens on demand cannot load; `extra` one more
 * VAR=value (or NULL). Returns the status; stderr in *err. */
static int run_with_broken_lib(const char *tmp, const char *soname, const char *extra,
                               const char *const *args, char **err)
{
  g_autofree char *lib = g_build_filename(tmp, "lib", NULL);
  g_assert_cmpint(g_mkdir(lib, 0755), ==, 0);
  g_autofree char *bogus = g_build_filename(lib, soname, NULL);
  g_assert_true(g_file_set_contents(bogus, "", 0, NULL));
  g_autofree char *env_lib = g_strdup_printf("LD_LIBRARY_PATH=%s", lib);
  g_autofree char *env_run = g_strdup_printf("XDG_RUNTIME_DIR=%s/run", tmp);
  g_autofree char *env_state = g_strdup_printf("XDG_STATE_HOME=%s/state", tmp);
  g_autoptr(GPtrArray) argv = g_ptr_array_new();
  const char *head[] = {"env", env_lib, env_run, env_state};
  for (gsize i = 0; i < G_N_ELEMENTS(head); i++)
    g_ptr_array_add(argv, (char *)head[i]);
  if (extra)
    g_ptr_array_add(argv, (char *)extra);
  g_ptr_array_add(argv, (char *)nf_test_bin());
  for (gsize i = 0; args[i]; i++)
    g_ptr_array_add(argv, (char *)args[i]);
  g_ptr_array_add(argv, NULL);
  int status = 0;
  g_autoptr(GError) error = NULL;
  g_spawn_sync(NULL, (char **)argv->pdata, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, NULL, err,
               &status, &error);
  g_assert_no_error(error);
  g_assert_true(WIFEXITED(status));
  return WEXITSTATUS(status);
}

/* Each phrase is in `err` (printed once if one is not). */
static void assert_says(const char *err, const char *const *phrases)
{
  for (gsize i = 0; phrases[i]; i++) {
    if (!strstr(err, phrases[i]))
      g_test_message("stderr was: %s", err);
    g_assert_nonnull(strstr(err, phrases[i]));
  }
}

/* libsoup is opened only for --http: when it cannot be, the error names it
 * and the package, and no fleet is left behind. */
static void test_http_without_libsoup(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  const char *args[] = {"run", "1", "--http", "0", NULL};
  g_autofree char *err = NULL;
  g_assert_cmpint(run_with_broken_lib(tmp, "libsoup-3.0.so.0", NULL, args, &err), ==, 1);
  const char *says[] = {"run: --http: cannot load libsoup 3 (", "apt-get install libsoup-3.0-0",
                        NULL};
  assert_says(err, says);
  g_autofree char *rt = g_build_filename(tmp, "run", "nervesfleet", NULL);
  g_assert_false(g_file_test(rt, G_FILE_TEST_EXISTS));
  nf_test_tmpdir_cleanup(tmp);
}

/* libsystemd is opened only under systemd (NOTIFY_SOCKET set): when it
 * cannot be, run refuses before starting anything rather than leave systemd
 * waiting for a READY=1 that never comes. */
static void test_notify_without_libsystemd(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  g_autofree char *env_notify = g_strdup_printf("NOTIFY_SOCKET=%s/notify", tmp);
  /* A missing qemu, refused later: a run that skipped the load stops there. */
  const char *args[] = {"run", "1", "--qemu", "/nonexistent/qemu-system-aarch64", NULL};
  g_autofree char *err = NULL;
  g_assert_cmpint(run_with_broken_lib(tmp, "libsystemd.so.0", env_notify, args, &err), ==, 1);
  const char *says[] = {"run: NOTIFY_SOCKET is set", "libsystemd.so.0",
                        "apt-get install libsystemd0", NULL};
  assert_says(err, says);
  g_autofree char *rt = g_build_filename(tmp, "run", "nervesfleet", NULL);
  g_assert_false(g_file_test(rt, G_FILE_TEST_EXISTS));
  nf_test_tmpdir_cleanup(tmp);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  for (gsize i = 0; i < G_N_ELEMENTS(cases); i++)
    g_test_add_data_func(cases[i].path, &cases[i], run_case);
  g_test_add_func("/run-errors/tb-size-taken", test_tb_size_taken);
  g_test_add_func("/run-errors/unwritable-state-dir", test_unwritable_state_dir);
  g_test_add_func("/run-errors/socket-path-too-long", test_socket_path_too_long);
  g_test_add_func("/run-errors/kvm-refused-on-x86", test_kvm_refused_here);
  g_test_add_func("/run-errors/qemu-fails-at-start", test_qemu_fails_at_start);
  g_test_add_func("/run-errors/fd-limit-too-low", test_fd_limit_too_low);
  g_test_add_func("/run-errors/http-without-libsoup", test_http_without_libsoup);
  g_test_add_func("/run-errors/notify-without-libsystemd", test_notify_without_libsystemd);
  return g_test_run();
}
