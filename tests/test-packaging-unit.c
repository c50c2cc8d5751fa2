/*
 * test-packaging-unit.c: the files `make install` and examples/ ship, checked
 * with the tools that consume them (each test skips when its tool is not
 * installed). Guards: the systemd template unit passes `systemd-analyze
 * verify` with no warning; the man page renders with `man -l` and names
 * every verb; the bash completion parses and completes verbs and run's long
 * options; the Prometheus scrape config and rules pass promtool; the YAML
 * examples parse; the binary links neither libsoup nor libsystemd (both are
 * opened when first needed).
 */
#include <stdlib.h>
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

/* `man -l` renders the page; it names every verb of `nervesfleet --help`,
 * the service options, and the version `--version` prints. */
static void test_man_page(void)
{
  if (!have("man"))
    return;
  g_autofree char *page = src("man/nervesfleet.1");
  g_autofree char *out = NULL, *err = NULL, *help = NULL, *version = NULL;
  g_setenv("MANWIDTH", "100", TRUE);
  const char *man[] = {"man", "-l", page, NULL};
  g_assert_cmpint(run(NULL, man, &out, &err), ==, 0);
  g_assert_nonnull(strstr(out, "NERVESFLEET(1)"));
  const char *usage[] = {nf_test_bin(), "--help", NULL};
  g_assert_cmpint(run(NULL, usage, &help, NULL), ==, 0);
  g_auto(GStrv) lines = g_strsplit(strstr(help, "Verbs:"), "\n", -1);
  guint verbs = 0;
  for (char **l = lines + 1; *l && g_str_has_prefix(*l, "  "); l++) {
    g_auto(GStrv) words = g_strsplit(g_strstrip(*l), " ", 2);
    g_test_message("verb %s", words[0]);
    g_assert_nonnull(strstr(out, words[0]));
    verbs++;
  }
  g_assert_cmpuint(verbs, >=, 10);
  static const char *const options[] = {"--config",       "--shard",        "--shard-size",
                                        "--notify-ready", "--print-config", "nervesfleet@.service"};
  for (gsize i = 0; i < G_N_ELEMENTS(options); i++)
    g_assert_nonnull(strstr(out, options[i]));
  const char *ver[] = {nf_test_bin(), "--version", NULL};
  g_assert_cmpint(run(NULL, ver, &version, NULL), ==, 0);
  g_assert_true(g_str_has_prefix(version, "nervesfleet "));
  g_assert_nonnull(strstr(out, g_strchomp(version))); /* the .TH footer: "nervesfleet 0.1.0" */
}

/* The completion script completes verbs and run's long options (taken from
 * the binary's --help), and values of a few enumerated options. */
static void test_bash_completion(void)
{
  if (!have("bash"))
    return;
  g_autofree char *script = src("scripts/nervesfleet.bash-completion");
  g_autofree char *cmd = g_strdup_printf(
      "source '%s'; c() { COMP_WORDS=(\"$@\"); COMP_CWORD=$(($# - 1)); _nervesfleet; "
      "echo \"${COMPREPLY[*]}\"; }; c '%s' ''; c '%s' run --co; c '%s' run --sh; "
      "c '%s' run --restart a",
      script, nf_test_bin(), nf_test_bin(), nf_test_bin(), nf_test_bin());
  const char *argv[] = {"bash", "--norc", "-c", cmd, NULL};
  g_autofree char *out = NULL, *err = NULL;
  g_assert_cmpint(run(NULL, argv, &out, &err), ==, 0);
  g_test_message("%s%s", out, err);
  g_auto(GStrv) lines = g_strsplit(out, "\n", -1);
  g_assert_cmpuint(g_strv_length(lines), >=, 4);
  g_assert_nonnull(strstr(lines[0], "run"));
  g_assert_nonnull(strstr(lines[0], "ps"));
  g_assert_nonnull(strstr(lines[0], "console"));
  g_assert_cmpstr(lines[1], ==, "--config --count");
  g_assert_cmpstr(lines[2], ==, "--shard --shard-size");
  g_assert_cmpstr(lines[3], ==, "always");
}

/* The shipped scrape config (with its rules and a token file beside it, as
 * credentials_file wants) and the rules pass promtool. */
static void test_prometheus_examples(void)
{
  if (!have("promtool"))
    return;
  g_autofree char *tmp = nf_test_tmpdir_new();
  static const char *const files[] = {"prometheus.yml", "rules.yml"};
  for (gsize i = 0; i < G_N_ELEMENTS(files); i++) {
    g_autofree char *rel = g_build_filename("examples", "prometheus", files[i], NULL);
    g_autofree char *from = src(rel);
    g_autofree char *text = NULL;
    g_assert_true(g_file_get_contents(from, &text, NULL, NULL));
    g_autofree char *to = g_build_filename(tmp, files[i], NULL);
    g_assert_true(g_file_set_contents(to, text, -1, NULL));
  }
  g_autofree char *token = g_build_filename(tmp, "nervesfleet.token", NULL);
  g_assert_true(g_file_set_contents(token, "a-token-of-32-characters-or-more\n", -1, NULL));
  g_autofree char *out = NULL, *err = NULL;
  const char *config[] = {"promtool", "check", "config", "prometheus.yml", NULL};
  int status = run(tmp, config, &out, &err);
  g_test_message("%s%s", out, err);
  g_assert_cmpint(status, ==, 0);
  g_clear_pointer(&out, g_free);
  g_clear_pointer(&err, g_free);
  const char *rules[] = {"promtool", "check", "rules", "rules.yml", NULL};
  status = run(tmp, rules, &out, &err);
  g_test_message("%s%s", out, err);
  g_assert_cmpint(status, ==, 0);
  g_assert_nonnull(strstr(out, "SUCCESS: 4 rules found"));
  nf_test_tmpdir_cleanup(tmp);
}

/* examples/systemd/lab.conf is a fleet file run accepts (its token path
 * pointed at a file that exists here). */
static void test_fleet_file_example(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  g_autofree char *from = src("examples/systemd/lab.conf");
  g_autofree char *text = NULL;
  g_assert_true(g_file_get_contents(from, &text, NULL, NULL));
  g_autofree char *token = g_build_filename(tmp, "lab.token", NULL);
  g_assert_true(g_file_set_contents(token, "a-token-of-32-characters-or-more\n", -1, NULL));
  g_auto(GStrv) parts = g_strsplit(text, "/etc/nervesfleet/lab.token", -1);
  g_assert_cmpuint(g_strv_length(parts), ==, 2);
  g_autofree char *local = g_strjoinv(token, parts);
  g_autofree char *conf = g_build_filename(tmp, "lab.conf", NULL);
  g_assert_true(g_file_set_contents(conf, local, -1, NULL));
  g_autofree char *out = NULL;
  const char *args[] = {"run", "--config", conf, "--name", "lab", "--print-config", NULL};
  int status = nf_test_run_cli(tmp, args, 30000, &out);
  g_test_message("%s", out);
  g_assert_cmpint(status, ==, 0);
  g_assert_nonnull(strstr(out, "\"count\":200,"));
  g_assert_nonnull(strstr(out, "\"notify_ready\":\"started\""));
  g_assert_nonnull(strstr(out, "\"http\":\"0.0.0.0:9100\""));
  nf_test_tmpdir_cleanup(tmp);
}

/* Every YAML file under examples/ parses (python3 yaml); Kubernetes
 * documents name their kind; the Ansible example passes ansible's own
 * checks when ansible-core is installed. */
static void test_yaml_examples(void)
{
  if (!have("python3"))
    return;
  g_autofree char *examples = src("examples");
  const char *py[] = {"python3", "-c",
                      "import sys, pathlib\n"
                      "try:\n"
                      "    import yaml\n"
                      "except ImportError:\n"
                      "    print('no yaml module'); sys.exit(77)\n"
                      "n = 0\n"
                      "for f in sorted(pathlib.Path(sys.argv[1]).rglob('*.y*ml')):\n"
                      "    docs = [d for d in yaml.safe_load_all(f.read_text()) if d is not None]\n"
                      "    assert docs, f\n"
                      "    if 'kubernetes' in f.parts:\n"
                      "        assert all('kind' in d and 'apiVersion' in d for d in docs), f\n"
                      "    n += 1\n"
                      "print(n, 'yaml files')\n",
                      examples, NULL};
  g_autofree char *out = NULL, *err = NULL;
  int status = run(NULL, py, &out, &err);
  g_test_message("%s%s", out, err);
  if (status == 77) {
    g_test_skip("python3 yaml is not installed");
    return;
  }
  g_assert_cmpint(status, ==, 0);
  g_assert_cmpint(atoi(out), >=, 6);
  g_autofree char *ansible = g_find_program_in_path("ansible-playbook");
  if (ansible == NULL)
    return;
  g_autofree char *tmp = nf_test_tmpdir_new();
  g_setenv("ANSIBLE_HOME", tmp, TRUE);
  g_setenv("ANSIBLE_LOCAL_TEMP", tmp, TRUE);
  const char *check[] = {"ansible-playbook",     "-i", "ansible/inventory.ini", "--syntax-check",
                         "ansible/playbook.yml", NULL};
  g_clear_pointer(&out, g_free);
  g_clear_pointer(&err, g_free);
  status = run(examples, check, &out, &err);
  g_test_message("%s%s", out, err);
  g_assert_cmpint(status, ==, 0);
  const char *inventory[] = {"ansible-inventory", "-i", "ansible/inventory.ini", "--list", NULL};
  g_clear_pointer(&out, g_free);
  g_clear_pointer(&err, g_free);
  g_assert_cmpint(run(examples, inventory, &out, &err), ==, 0);
  g_assert_nonnull(strstr(out, "\"shard\": 3"));
  g_unsetenv("ANSIBLE_HOME");
  g_unsetenv("ANSIBLE_LOCAL_TEMP");
  nf_test_tmpdir_cleanup(tmp);
}

/* The binary names only what every verb needs (readelf's NEEDED list):
 * libsoup and libsystemd, opened on demand, would cost each `ps` their
 * loading at start-up. */
static void test_binary_needs(void)
{
  if (!have("readelf"))
    return;
  g_autofree char *out = NULL, *err = NULL;
  const char *argv[] = {"readelf", "-d", nf_test_bin(), NULL};
  g_assert_cmpint(run(NULL, argv, &out, &err), ==, 0);
  g_assert_nonnull(strstr(out, "[libglib-2.0.so.0]"));
  g_assert_nonnull(strstr(out, "[libjansson.so.4]"));
  g_assert_null(strstr(out, "libsoup"));
  g_assert_null(strstr(out, "libsystemd"));
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/packaging/unit-verify", test_unit_verify);
  g_test_add_func("/packaging/man-page", test_man_page);
  g_test_add_func("/packaging/bash-completion", test_bash_completion);
  g_test_add_func("/packaging/prometheus-examples", test_prometheus_examples);
  g_test_add_func("/packaging/fleet-file-example", test_fleet_file_example);
  g_test_add_func("/packaging/yaml-examples", test_yaml_examples);
  g_test_add_func("/packaging/binary-needs", test_binary_needs);
  return g_test_run();
}
