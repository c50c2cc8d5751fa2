/*
 * test-memory.c: the memory levers end to end, with real qemu under TCG.
 * Guards: `mem --json` says what /proc says (PSS per guest within a small
 * tolerance of smaps_rollup read here, host total exact); --ksm on makes all
 * of qemu mergeable and the host's KSM settings come back when the fleet
 * stops, and after its supervisor was SIGKILLed, at `down`. KSM's files are
 * a stand-in dir (NERVESFLEET_KSM_SYSFS) so the host's real KSM, which other
 * people's fleets may be using, is never touched.
 */
#include <signal.h>
#include <string.h>
#include <jansson.h>
#include <glib/gstdio.h>

#include "tests/lib/nf-test.h"

#define BOOT_MS 120000
#define STOP_MS 60000
#define CLI_MS 30000

/* The KSM stand-in, one per test program, set in main() before any thread
 * exists (setenv is not thread-safe); each test resets its files. */
static char *ksm_dir;

static char *fake_ksm(void)
{
  char *sysfs = g_build_filename(ksm_dir, "ksm", NULL);
  g_autofree char *books = g_build_filename(ksm_dir, "books", NULL);
  g_mkdir_with_parents(sysfs, 0755);
  const char *knobs[][2] = {{"run", "0\n"},
                            {"pages_to_scan", "100\n"},
                            {"sleep_millisecs", "200\n"},
                            {"use_zero_pages", "0\n"},
                            {"pages_sharing", "0\n"}};
  for (guint i = 0; i < G_N_ELEMENTS(knobs); i++) {
    g_autofree char *p = g_build_filename(sysfs, knobs[i][0], NULL);
    g_assert_true(g_file_set_contents(p, knobs[i][1], -1, NULL));
  }
  g_autofree char *saved = g_build_filename(books, "saved", NULL);
  g_assert_false(g_file_test(saved, G_FILE_TEST_EXISTS)); /* the last test restored */
  return sysfs;
}

static char *knob(const char *sysfs, const char *name)
{
  g_autofree char *p = g_build_filename(sysfs, name, NULL);
  char *v = NULL;
  g_assert_true(g_file_get_contents(p, &v, NULL, NULL));
  return g_strstrip(v);
}

static void assert_original(const char *sysfs)
{
  g_autofree char *run = knob(sysfs, "run");
  g_autofree char *pages = knob(sysfs, "pages_to_scan");
  g_autofree char *sleep = knob(sysfs, "sleep_millisecs");
  g_autofree char *zero = knob(sysfs, "use_zero_pages");
  g_assert_cmpstr(run, ==, "0");
  g_assert_cmpstr(pages, ==, "100");
  g_assert_cmpstr(sleep, ==, "200");
  g_assert_cmpstr(zero, ==, "0");
}

static json_t *cli_json(const char *tmp, const char *const *args)
{
  g_autofree char *out = NULL;
  int rc = nf_test_run_cli(tmp, args, CLI_MS, &out);
  g_test_message("%s -> %d: %.300s", args[0], rc, out);
  g_assert_cmpint(rc, ==, 0);
  json_error_t err;
  json_t *j = json_loads(out, 0, &err);
  g_assert_nonnull(j);
  return j;
}

static guint64 file_kib(const char *path, const char *key)
{
  g_autofree char *text = NULL;
  g_assert_true(g_file_get_contents(path, &text, NULL, NULL));
  const char *p = strstr(text, key);
  g_assert_nonnull(p);
  return g_ascii_strtoull(p + strlen(key), NULL, 10);
}

/* `mem --json` against /proc, on a fleet of two idle guests. */
static void test_mem_json_agrees_with_proc(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  g_autofree char *sysfs = fake_ksm();
  const char *run[] = {"run", "2", "-d", "--name", "mem", "--ksm", "off", NULL};
  g_autofree char *out = NULL;
  g_assert_cmpint(nf_test_run_cli(tmp, run, BOOT_MS, &out), ==, 0);
  const char *wait[] = {"wait", "--name", "mem", "--timeout", "120", NULL};
  g_assert_cmpint(nf_test_run_cli(tmp, wait, BOOT_MS, NULL), ==, 0);

  const char *mem[] = {"mem", "--json", "--name", "mem", NULL};
  json_auto_t *m = cli_json(tmp, mem);
  g_assert_cmpint(json_integer_value(json_object_get(m, "running")), ==, 2);
  json_t *host = json_object_get(m, "host");
  g_assert_cmpuint((guint64)json_integer_value(json_object_get(host, "total_bytes")), ==,
                   file_kib("/proc/meminfo", "MemTotal:") * 1024);
  g_assert_cmpint(json_integer_value(json_object_get(host, "available_bytes")), >, 0);
  json_t *ksm = json_object_get(m, "ksm");
  g_assert_cmpstr(json_string_value(json_object_get(ksm, "mode")), ==, "off");
  g_assert_false(json_is_true(json_object_get(ksm, "fleet_uses")));
  json_t *guests = json_object_get(m, "guests");
  g_assert_cmpuint(json_array_size(guests), ==, 2);
  guint64 sum = 0;
  for (gsize i = 0; i < 2; i++) {
    json_t *g = json_array_get(guests, i);
    int pid = (int)json_integer_value(json_object_get(g, "pid"));
    g_assert_cmpint(pid, >, 0);
    guint64 pss = (guint64)json_integer_value(json_object_get(g, "pss_bytes"));
    guint64 rss = (guint64)json_integer_value(json_object_get(g, "rss_bytes"));
    g_autofree char *rollup = g_strdup_printf("/proc/%d/smaps_rollup", pid);
    guint64 pss_proc = file_kib(rollup, "\nPss:") * 1024;
    guint64 rss_proc = file_kib(rollup, "\nRss:") * 1024;
    g_test_message("vm %d: pss %" G_GUINT64_FORMAT " vs %" G_GUINT64_FORMAT, pid, pss, pss_proc);
    /* Idle guests; shared library pages move with other qemu on the host. */
    guint64 tol = MAX(pss_proc / 10, 8u << 20);
    g_assert_cmpuint(pss, <=, pss_proc + tol);
    g_assert_cmpuint(pss + tol, >=, pss_proc);
    g_assert_cmpuint(rss + tol, >=, rss_proc);
    g_assert_cmpuint(rss, <=, rss_proc + tol);
    g_assert_cmpuint(pss, <=, rss);
    sum += pss;
    g_assert_cmpint(json_integer_value(json_object_get(g, "balloon_actual_bytes")), ==, 128 << 20);
  }
  g_assert_cmpuint((guint64)json_integer_value(json_object_get(m, "pss_bytes")), ==, sum);
  g_assert_cmpuint((guint64)json_integer_value(json_object_get(m, "pss_per_guest_bytes")), ==,
                   sum / 2);

  /* `ps` carries the PSS too. */
  const char *ps[] = {"ps", "--json", "--name", "mem", NULL};
  json_auto_t *p = cli_json(tmp, ps);
  json_t *g0 = json_array_get(json_object_get(p, "guests"), 0);
  g_assert_true(json_is_integer(json_object_get(g0, "pss_bytes")));

  const char *down[] = {"down", "--name", "mem", NULL};
  g_assert_cmpint(nf_test_run_cli(tmp, down, STOP_MS, NULL), ==, 0);
  nf_test_tmpdir_cleanup(tmp);
}

/* --ksm on: KSM runs (all of qemu mergeable) while the fleet does, and the
 * settings it found come back at an orderly stop. */
static void test_ksm_restored_after_stop(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  g_autofree char *sysfs = fake_ksm();
  const char *args[] = {"run", "1", "--name", "ksm", "--ksm", "on", NULL};
  g_autoptr(NfTestProc) p = nf_test_proc_spawn(tmp, args);
  g_assert_true(nf_test_proc_wait_output(p, "all 1 guests ready", BOOT_MS));
  g_autofree char *run = knob(sysfs, "run");
  g_autofree char *zero = knob(sysfs, "use_zero_pages");
  g_assert_cmpstr(run, ==, "1");
  g_assert_cmpstr(zero, ==, "1");
  const char *mem[] = {"mem", "--json", "--name", "ksm", NULL};
  json_auto_t *m = cli_json(tmp, mem);
  g_assert_true(json_is_true(json_object_get(json_object_get(m, "ksm"), "fleet_uses")));
  int pid = (int)json_integer_value(
      json_object_get(json_array_get(json_object_get(m, "guests"), 0), "pid"));
  g_autofree char *stat_path = g_strdup_printf("/proc/%d/ksm_stat", pid);
  g_autofree char *stat = NULL;
  if (g_file_get_contents(stat_path, &stat, NULL, NULL) && strstr(stat, "ksm_merge_any"))
    g_assert_nonnull(strstr(stat, "ksm_merge_any: yes"));
  nf_test_proc_signal(p, SIGTERM);
  g_assert_cmpint(nf_test_proc_wait_exit(p, STOP_MS), ==, 0);
  g_assert_nonnull(strstr(nf_test_proc_output(p), "KSM saved"));
  assert_original(sysfs);
  nf_test_tmpdir_cleanup(tmp);
}

/* A supervisor killed with SIGKILL cannot restore anything: `down` does. */
static void test_ksm_restored_after_kill_and_down(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  g_autofree char *sysfs = fake_ksm();
  const char *args[] = {"run", "1", "-d", "--name", "kk", "--ksm", "on", NULL};
  g_autofree char *out = NULL;
  g_assert_cmpint(nf_test_run_cli(tmp, args, BOOT_MS, &out), ==, 0);
  const char *pidstr = strstr(out, "supervisor pid ");
  g_assert_nonnull(pidstr);
  GPid sup = (GPid)g_ascii_strtoll(pidstr + strlen("supervisor pid "), NULL, 10);
  g_assert_cmpint(sup, >, 0);
  const char *wait[] = {"wait", "--name", "kk", "--timeout", "120", NULL};
  g_assert_cmpint(nf_test_run_cli(tmp, wait, BOOT_MS, NULL), ==, 0);
  g_autofree char *run = knob(sysfs, "run");
  g_assert_cmpstr(run, ==, "1");

  g_assert_cmpint(kill(sup, SIGKILL), ==, 0);
  g_autoptr(GArray) pids = g_array_new(FALSE, FALSE, sizeof(GPid));
  g_array_append_val(pids, sup);
  g_assert_true(nf_test_wait_pids_gone(pids, STOP_MS));
  g_autofree char *still = knob(sysfs, "run");
  g_assert_cmpstr(still, ==, "1"); /* nobody restored it yet */

  const char *down[] = {"down", "--name", "kk", NULL};
  g_autofree char *dout = NULL;
  g_assert_cmpint(nf_test_run_cli(tmp, down, STOP_MS, &dout), ==, 0);
  g_test_message("%s", dout);
  g_assert_nonnull(strstr(dout, "host KSM settings restored"));
  assert_original(sysfs);
  nf_test_tmpdir_cleanup(tmp);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  ksm_dir = nf_test_tmpdir_new();
  g_autofree char *sysfs = g_build_filename(ksm_dir, "ksm", NULL);
  g_autofree char *books = g_build_filename(ksm_dir, "books", NULL);
  g_setenv("NERVESFLEET_KSM_SYSFS", sysfs, TRUE);
  g_setenv("NERVESFLEET_KSM_STATE", books, TRUE);
  g_test_add_func("/memory/mem-json-agrees-with-proc", test_mem_json_agrees_with_proc);
  g_test_add_func("/memory/ksm-restored-after-stop", test_ksm_restored_after_stop);
  g_test_add_func("/memory/ksm-restored-after-kill-and-down",
                  test_ksm_restored_after_kill_and_down);
  int rc = g_test_run();
  nf_test_tmpdir_cleanup(ksm_dir);
  g_free(ksm_dir);
  return rc;
}
