/*
 * test-snapshot.c: `run --snapshot` end to end with real qemu under TCG.
 * Guards: restored guests each report their own serial (not the template's);
 * a restored guest killed with SIGKILL is restored again; a snapshot whose
 * inputs changed (kernel arguments, kernel file) is rebuilt, never used; a
 * corrupt or truncated state file is rebuilt before use, and one that fails
 * while guests restore from it is dropped and the guest boots instead (a
 * qemu that fails for another reason while restoring keeps it); a
 * template that cannot be built falls back to booting; a stop during the
 * build leaves no template behind; flags a snapshot
 * cannot serve are refused; nothing is left behind (template qemu, runtime
 * files, temporary state files).
 *
 * Every fleet here passes --ksm off: tests run in parallel and must not
 * change host-wide settings under each other.
 */
#include <signal.h>
#include <string.h>
#include <unistd.h>
#include <glib/gstdio.h>

#include "tests/lib/nf-test.h"

#define BOOT_MS 120000
#define STOP_MS 60000

static guint count_of(const char *text, const char *needle)
{
  guint n = 0;
  for (const char *s = text; (s = strstr(s, needle)) != NULL; s += strlen(needle))
    n++;
  return n;
}

static char *console_of(const char *tmp, const char *fleet, guint id)
{
  g_autofree char *log =
      g_strdup_printf("%s/state/nervesfleet/%s/vm-%04u/console.log", tmp, fleet, id);
  char *text = NULL;
  g_assert_true(g_file_get_contents(log, &text, NULL, NULL));
  return text;
}

static GPid guest_pid(const char *tmp, const char *fleet, guint id)
{
  g_autofree char *path = g_strdup_printf("%s/run/nervesfleet/%s/vm-%04u.pid", tmp, fleet, id);
  g_autofree char *text = NULL;
  g_assert_true(g_file_get_contents(path, &text, NULL, NULL));
  return (GPid)g_ascii_strtoll(text, NULL, 10);
}

/* The one snapshot dir's state file (exactly one key is expected). */
static char *only_state_file(const char *tmp)
{
  g_autofree char *dir = g_build_filename(tmp, "cache", "nervesfleet", "snapshots", NULL);
  g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
  g_assert_nonnull(d);
  const char *key = g_dir_read_name(d);
  g_assert_nonnull(key);
  g_assert_null(g_dir_read_name(d));
  return g_build_filename(dir, key, "state", NULL);
}

static guint snapshot_dirs(const char *tmp)
{
  g_autofree char *dir = g_build_filename(tmp, "cache", "nervesfleet", "snapshots", NULL);
  g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
  guint n = 0;
  while (d && g_dir_read_name(d))
    n++;
  return n;
}

static void assert_runtime_gone(const char *tmp)
{
  g_autofree char *rt = g_build_filename(tmp, "run", "nervesfleet", NULL);
  g_assert_false(g_file_test(rt, G_FILE_TEST_EXISTS));
}

static void test_restore_own_identity_and_again(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  /* qemu, but it fails once, before it is up, whenever `flag` exists. */
  g_autofree char *flag = g_build_filename(tmp, "fail-once", NULL);
  g_autofree char *qemu = g_build_filename(tmp, "qemu-fails-once", NULL);
  g_autofree char *script = g_strdup_printf(
      "#!/bin/sh\n"
      "if rm '%s' 2>/dev/null; then\n"
      "  echo \"qemu-system-aarch64: cannot set up guest memory: Cannot allocate memory\" >&2\n"
      "  exit 1\n"
      "fi\n"
      "exec qemu-system-aarch64 \"$@\"\n",
      flag);
  g_assert_true(g_file_set_contents(qemu, script, -1, NULL));
  g_assert_cmpint(g_chmod(qemu, 0755), ==, 0);
  const char *args[] = {"run",   "3",   "--name", "snap", "--snapshot",
                        "--ksm", "off", "--qemu", qemu,   NULL};
  g_autoptr(NfTestProc) p = nf_test_proc_spawn(tmp, args);

  g_assert_true(nf_test_proc_wait_output(p, "all 3 guests ready", BOOT_MS));
  g_assert_nonnull(strstr(nf_test_proc_output(p), "snapshot: template saved"));
  for (guint id = 1; id <= 3; id++) {
    g_autofree char *text = console_of(tmp, "snap", id);
    g_autofree char *want =
        g_strdup_printf("nervesfleet-ready serial=NF-%06u source=fw_cfg restored=snapshot", id);
    g_assert_nonnull(strstr(text, want));
    g_assert_null(strstr(text, "serial=nervesfleet-template"));
  }
  /* The template is gone: only the three guests run, and it left no files. */
  g_autoptr(GArray) qemus = nf_test_pids_matching(tmp);
  g_assert_cmpuint(qemus->len, ==, 3 + 1); /* and the supervisor: its --qemu is in tmp */
  g_autofree char *tpl = g_build_filename(tmp, "run/nervesfleet/snap/template.pid", NULL);
  g_assert_false(g_file_test(tpl, G_FILE_TEST_EXISTS));

  /* Killed, it comes back restored again, with its own serial. */
  kill(guest_pid(tmp, "snap", 2), SIGKILL);
  g_assert_true(nf_test_proc_wait_count(p, "vm-0002 ready NF-000002", 2, BOOT_MS));
  g_autofree char *text2 = console_of(tmp, "snap", 2);
  g_assert_cmpuint(count_of(text2, "serial=NF-000002 source=fw_cfg restored=snapshot"), ==, 2);

  /* A qemu that fails while restoring for another reason (no RAM for it)
   * says nothing about the file: the snapshot stays, and the restart
   * restores. Before, any non-zero exit dropped it. */
  g_assert_true(g_file_set_contents(flag, "", 0, NULL));
  kill(guest_pid(tmp, "snap", 1), SIGKILL);
  g_assert_true(nf_test_proc_wait_count(p, "vm-0001 ready NF-000001", 2, BOOT_MS));
  g_assert_false(g_file_test(flag, G_FILE_TEST_EXISTS)); /* it did fail once */
  g_autofree char *text1 = console_of(tmp, "snap", 1);
  g_assert_cmpuint(count_of(text1, "serial=NF-000001 source=fw_cfg restored=snapshot"), ==, 2);
  g_assert_null(strstr(nf_test_proc_output(p), "restore failed"));

  /* A state file that breaks under the running fleet: the next restore fails,
   * the snapshot is dropped and that guest boots instead. */
  g_autofree char *state = only_state_file(tmp);
  g_assert_cmpint(truncate(state, 4096), ==, 0);
  kill(guest_pid(tmp, "snap", 3), SIGKILL);
  g_assert_true(nf_test_proc_wait_output(p, "snapshot: restore failed (vm-0003", BOOT_MS));
  g_assert_true(nf_test_proc_wait_count(p, "vm-0003 ready NF-000003", 2, BOOT_MS));
  g_autofree char *text3 = console_of(tmp, "snap", 3);
  /* Its last ready line is a boot's, without restored=snapshot. */
  const char *last = g_strrstr(text3, "nervesfleet-ready serial=NF-000003");
  g_assert_nonnull(last);
  g_assert_true(g_str_has_prefix(last, "nervesfleet-ready serial=NF-000003 source=fw_cfg\r\n") ||
                g_str_has_prefix(last, "nervesfleet-ready serial=NF-000003 source=fw_cfg\n"));
  g_assert_false(g_file_test(state, G_FILE_TEST_EXISTS));

  nf_test_proc_signal(p, SIGTERM);
  g_assert_cmpint(nf_test_proc_wait_exit(p, STOP_MS), ==, 0);
  g_assert_nonnull(strstr(nf_test_proc_output(p), "fleet stopped (3 stopped, 0 failed)"));
  assert_runtime_gone(tmp);
  nf_test_tmpdir_cleanup(tmp);
}

static char *run_once(const char *tmp, const char *const *extra)
{
  GPtrArray *a = g_ptr_array_new();
  const char *base[] = {"run", "1", "--name", "st", "--snapshot", "--ksm", "off", "--ephemeral"};
  for (guint i = 0; i < G_N_ELEMENTS(base); i++)
    g_ptr_array_add(a, (gpointer)base[i]);
  for (const char *const *e = extra; e && *e; e++)
    g_ptr_array_add(a, (gpointer)*e);
  g_ptr_array_add(a, (gpointer) "--exec");
  g_ptr_array_add(a, (gpointer) "true");
  g_ptr_array_add(a, NULL);
  char *out = NULL;
  int status = nf_test_run_cli(tmp, (const char *const *)a->pdata, BOOT_MS, &out);
  g_ptr_array_unref(a);
  if (status != 0)
    g_test_message("%s", out);
  g_assert_cmpint(status, ==, 0);
  g_assert_nonnull(strstr(out, "all 1 guests ready"));
  return out;
}

static void corrupt_middle(const char *path)
{
  g_autofree char *cmd = g_strdup_printf(
      "printf 'garbage-garbage-garbage' | dd of='%s' bs=1 seek=1000000 conv=notrunc 2>/dev/null",
      path);
  nf_test_sh(cmd);
}

static void test_reuse_stale_and_corrupt(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  g_autofree char *out = run_once(tmp, NULL);
  g_assert_nonnull(strstr(out, "snapshot: template saved"));
  g_autofree char *state = only_state_file(tmp);
  g_autofree char *tmpfile = g_strdup_printf("%s.tmp-", state);

  /* Same inputs: reused, no template. */
  g_autofree char *out2 = run_once(tmp, NULL);
  g_assert_nonnull(strstr(out2, "snapshot: restoring every guest from"));
  g_assert_null(strstr(out2, "template saved"));

  /* Changed kernel arguments: another key, built anew, the old one unused. */
  const char *append[] = {"--append", "nf.snaptest=1", NULL};
  g_autofree char *out3 = run_once(tmp, append);
  g_assert_nonnull(strstr(out3, "snapshot: template saved"));
  g_assert_cmpuint(snapshot_dirs(tmp), ==, 2);

  /* A kernel file changed in place (same path): rebuilt. */
  g_autofree char *kernel = nf_test_guest_kernel();
  g_autofree char *initrd = nf_test_guest_initrd();
  g_autofree char *copy = g_build_filename(tmp, "vmlinuz", NULL);
  g_autofree char *cp = g_strdup_printf("cp '%s' '%s'", kernel, copy);
  nf_test_sh(cp);
  const char *own[] = {"--kernel", copy, "--initrd", initrd, NULL};
  g_autofree char *out4 = run_once(tmp, own);
  g_assert_nonnull(strstr(out4, "snapshot: template saved"));
  g_autofree char *touch = g_strdup_printf("touch -d '2001-01-01' '%s'", copy);
  nf_test_sh(touch);
  g_autofree char *out5 = run_once(tmp, own);
  g_assert_nonnull(strstr(out5, "snapshot: template saved"));

  /* Corrupt (same size) and truncated files are caught before use. */
  corrupt_middle(state);
  g_autofree char *out6 = run_once(tmp, NULL);
  g_assert_nonnull(strstr(out6, "is corrupt"));
  g_assert_nonnull(strstr(out6, "snapshot: template saved"));
  g_assert_cmpint(truncate(state, 1 << 20), ==, 0);
  g_autofree char *out7 = run_once(tmp, NULL);
  g_assert_nonnull(strstr(out7, "is truncated"));
  g_assert_nonnull(strstr(out7, "snapshot: template saved"));
  g_autofree char *out8 = run_once(tmp, NULL);
  g_assert_nonnull(strstr(out8, "snapshot: restoring every guest from"));

  /* No temporary state file left anywhere in the cache. */
  g_autofree char *dir = g_path_get_dirname(state);
  g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
  for (const char *n; d && (n = g_dir_read_name(d));)
    g_assert_true(g_str_equal(n, "state") || g_str_equal(n, "meta.json"));
  assert_runtime_gone(tmp);
  nf_test_tmpdir_cleanup(tmp);
}

static void test_template_failure_boots_instead(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  /* A qemu argument qemu refuses: the template cannot start, the fleet says
   * why and falls back to booting, where the same argument fails the start. */
  const char *args[] = {"run",   "1",   "--name",     "tf",        "--snapshot",
                        "--ksm", "off", "--qemu-arg", "-nf-bogus", NULL};
  g_autofree char *out = NULL;
  g_assert_cmpint(nf_test_run_cli(tmp, args, BOOT_MS, &out), ==, 1);
  g_assert_nonnull(strstr(out, "snapshot: cannot build the template: the template qemu exited"));
  g_assert_nonnull(strstr(out, "-nf-bogus"));
  g_assert_nonnull(strstr(out, "booting every guest instead"));
  g_assert_nonnull(strstr(out, "qemu failed before it was up"));
  /* Nothing half-written stays in the cache. */
  g_autofree char *dir = g_build_filename(tmp, "cache", "nervesfleet", "snapshots", NULL);
  g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
  for (const char *key; d && (key = g_dir_read_name(d));) {
    g_autofree char *sub = g_build_filename(dir, key, NULL);
    g_autoptr(GDir) d2 = g_dir_open(sub, 0, NULL);
    g_assert_null(d2 ? g_dir_read_name(d2) : NULL);
  }
  assert_runtime_gone(tmp);
  nf_test_tmpdir_cleanup(tmp);
}

/* Ctrl-C while the template boots: it is killed with the fleet, and neither
 * its pid file nor a temporary state file stays. */
static void test_stop_during_build(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  const char *args[] = {"run", "2", "--name", "sb", "--snapshot", "--ksm", "off", NULL};
  g_autoptr(NfTestProc) p = nf_test_proc_spawn(tmp, args);
  g_assert_true(nf_test_proc_wait_output(p, "snapshot: booting a template guest", BOOT_MS));
  nf_test_proc_signal(p, SIGINT);
  g_assert_cmpint(nf_test_proc_wait_exit(p, STOP_MS), ==, 0);
  g_assert_nonnull(strstr(nf_test_proc_output(p), "fleet stopped (2 stopped, 0 failed)"));
  g_autofree char *dir = g_build_filename(tmp, "cache", "nervesfleet", "snapshots", NULL);
  g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
  for (const char *key; d && (key = g_dir_read_name(d));) {
    g_autofree char *sub = g_build_filename(dir, key, NULL);
    g_autoptr(GDir) d2 = g_dir_open(sub, 0, NULL);
    for (const char *n; d2 && (n = g_dir_read_name(d2));)
      g_assert_false(g_str_has_prefix(n, "state.tmp-"));
  }
  assert_runtime_gone(tmp);
  nf_test_tmpdir_cleanup(tmp);
}

/* `start` while the template is being made: the guest boots (there is no
 * snapshot yet) and is left alone once the snapshot is ready. It used to be
 * "adopted" then: killed, as a guest of this supervisor's, and started
 * again. */
static void test_start_during_build(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  const char *args[] = {"run", "1", "--name", "sd", "--snapshot", "--ksm", "off", NULL};
  g_autoptr(NfTestProc) p = nf_test_proc_spawn(tmp, args);
  g_assert_true(nf_test_proc_wait_output(p, "snapshot: booting a template guest", BOOT_MS));
  const char *start[] = {"start", "1", "--name", "sd", NULL};
  g_assert_cmpint(nf_test_run_cli(tmp, start, STOP_MS, NULL), ==, 0);
  g_assert_true(nf_test_proc_wait_output(p, "snapshot: template saved", BOOT_MS));
  g_assert_true(nf_test_proc_wait_output(p, "all 1 guests ready", BOOT_MS));
  GPid pid = guest_pid(tmp, "sd", 1);
  const char *wait[] = {"wait", "--name", "sd", NULL};
  g_assert_cmpint(nf_test_run_cli(tmp, wait, STOP_MS, NULL), ==, 0);
  g_assert_cmpint(guest_pid(tmp, "sd", 1), ==, pid);
  g_autofree char *text = console_of(tmp, "sd", 1);
  g_assert_cmpuint(count_of(text, "nervesfleet-ready serial=NF-000001"), ==, 1);
  nf_test_proc_signal(p, SIGTERM);
  g_assert_cmpint(nf_test_proc_wait_exit(p, STOP_MS), ==, 0);
  assert_runtime_gone(tmp);
  nf_test_tmpdir_cleanup(tmp);
}

static void test_refused_flags(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  g_autofree char *base = nf_test_make_ext4_base(tmp);
  const char *disk[] = {"run", "1", "--snapshot", "--disk", base, NULL};
  g_autofree char *out = NULL;
  g_assert_cmpint(nf_test_run_cli(tmp, disk, 30000, &out), ==, 2);
  g_assert_nonnull(strstr(out, "--snapshot does not support --disk"));

  const char *nerves[] = {"run",        "1",  "--snapshot", "--profile", "nerves",
                          "--firmware", base, "--loader",   base,        NULL};
  g_autofree char *out2 = NULL;
  g_assert_cmpint(nf_test_run_cli(tmp, nerves, 30000, &out2), ==, 2);
  g_assert_nonnull(strstr(out2, "--snapshot cannot serve --profile nerves"));
  g_assert_cmpuint(snapshot_dirs(tmp), ==, 0);
  nf_test_tmpdir_cleanup(tmp);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/snapshot/restore-own-identity-and-again", test_restore_own_identity_and_again);
  g_test_add_func("/snapshot/reuse-stale-and-corrupt", test_reuse_stale_and_corrupt);
  g_test_add_func("/snapshot/template-failure-boots-instead", test_template_failure_boots_instead);
  g_test_add_func("/snapshot/stop-during-build", test_stop_during_build);
  g_test_add_func("/snapshot/start-during-build", test_start_during_build);
  g_test_add_func("/snapshot/refused-flags", test_refused_flags);
  return g_test_run();
}
