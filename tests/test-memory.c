/*
 * test-memory.c: the memory levers end to end, with real qemu under TCG.
 * Guards: `mem --json` says what /proc says (PSS per guest within a small
 * tolerance of smaps_rollup read here, host total exact); --ksm on makes all
 * of qemu mergeable and the host's KSM settings come back when the fleet
 * stops, and after its supervisor was SIGKILLed, at `down`. KSM's files are
 * a stand-in dir (NERVESFLEET_KSM_SYSFS) so the host's real KSM, which other
 * people's fleets may be using, is never touched.
 */
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>
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
  nf_test_ksm_standin(sysfs);
  g_autofree char *saved = g_build_filename(books, "saved", NULL);
  g_assert_false(g_file_test(saved, G_FILE_TEST_EXISTS)); /* the last test restored */
  return sysfs;
}

static void assert_original(const char *sysfs)
{
  g_autofree char *run = nf_test_ksm_knob(sysfs, "run");
  g_autofree char *pages = nf_test_ksm_knob(sysfs, "pages_to_scan");
  g_autofree char *sleep = nf_test_ksm_knob(sysfs, "sleep_millisecs");
  g_autofree char *zero = nf_test_ksm_knob(sysfs, "use_zero_pages");
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
  g_autofree char *run = nf_test_ksm_knob(sysfs, "run");
  g_autofree char *zero = nf_test_ksm_knob(sysfs, "use_zero_pages");
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
  g_autofree char *run = nf_test_ksm_knob(sysfs, "run");
  g_assert_cmpstr(run, ==, "1");

  g_assert_cmpint(kill(sup, SIGKILL), ==, 0);
  g_autoptr(GArray) pids = g_array_new(FALSE, FALSE, sizeof(GPid));
  g_array_append_val(pids, sup);
  g_assert_true(nf_test_wait_pids_gone(pids, STOP_MS));
  g_autofree char *still = nf_test_ksm_knob(sysfs, "run");
  g_assert_cmpstr(still, ==, "1"); /* nobody restored it yet */

  const char *down[] = {"down", "--name", "kk", NULL};
  g_autofree char *dout = NULL;
  g_assert_cmpint(nf_test_run_cli(tmp, down, STOP_MS, &dout), ==, 0);
  g_test_message("%s", dout);
  g_assert_nonnull(strstr(dout, "host KSM settings restored"));
  assert_original(sysfs);
  nf_test_tmpdir_cleanup(tmp);
}

/* Counts the copies of an image in the private writable mappings (of 1 MiB
 * or more) of `pid`, found by `probe` (`len` bytes at offset `at` of the
 * image), and adds to `offsets` the page offset where each copy starts,
 * plus one (a set of GUINT_TO_POINTER). */
static guint count_copies(int pid, const char *probe, gsize len, gsize at_in_image,
                          GHashTable *offsets)
{
  g_autofree char *maps_path = g_strdup_printf("/proc/%d/maps", pid);
  g_autofree char *mem_path = g_strdup_printf("/proc/%d/mem", pid);
  g_autofree char *maps = NULL;
  g_assert_true(g_file_get_contents(maps_path, &maps, NULL, NULL));
  int fd = open(mem_path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return 0;
  g_auto(GStrv) lines = g_strsplit(maps, "\n", -1);
  gsize chunk = 4 << 20;
  g_autofree char *buf = g_malloc(chunk + len);
  guint found = 0;
  for (char **l = lines; *l && **l; l++) {
    guint64 a = 0, b = 0;
    char perms[8] = "";
    if (sscanf(*l, "%" G_GINT64_MODIFIER "x-%" G_GINT64_MODIFIER "x %7s", &a, &b, perms) != 3 ||
        strncmp(perms, "rw-p", 4) != 0 || b - a < (1u << 20))
      continue;
    for (guint64 at = a; at < b; at += chunk) {
      gsize want = MIN(chunk + len, b - at);
      ssize_t n = pread(fd, buf, want, (off_t)at);
      if (n < (ssize_t)len)
        break;
      for (const char *p = buf; (p = memmem(p, n - (p - buf), probe, len)) != NULL; p++) {
        guint64 where = at + (guint64)(p - buf);
        if (where < at + chunk) { /* the overlap is the next chunk's */
          guint64 start = where - at_in_image;
          g_hash_table_add(offsets, GUINT_TO_POINTER((guint)(start % 4096) + 1));
          found++;
        }
      }
    }
  }
  close(fd);
  return found;
}

/* With KSM, every guest's qemu keeps its heap copy of the kernel image at
 * the same offset within a page, at the start of a page plus malloc's
 * header, so KSM can merge it across guests. Before, glibc's dynamic mmap
 * threshold put it in the brk heap at an offset that varied from guest to
 * guest, and ~32 MiB per guest never merged with the others. The probe is
 * 256 bytes from the middle of the kernel, found in qemu's memory twice:
 * guest RAM (page-aligned) and the heap copy. */
static void test_ksm_kernel_copy_mergeable(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  g_autofree char *sysfs = fake_ksm();
  /* Our own copy: the cached guest may be rebuilt while the test runs. */
  g_autofree char *kernel_src = nf_test_guest_kernel();
  g_autofree char *kernel = g_build_filename(tmp, "vmlinuz", NULL);
  g_autofree char *initrd = nf_test_guest_initrd();
  g_autofree char *image = NULL;
  gsize size = 0;
  g_assert_true(g_file_get_contents(kernel_src, &image, &size, NULL));
  g_assert_true(g_file_set_contents(kernel, image, (gssize)size, NULL));
  const gsize len = 256;
  const char *probe = image + size / 2;
  g_assert_true(memmem(image, size, probe, len) == probe); /* unique in the image */
  g_assert_null(memmem(probe + 1, size - size / 2 - 1, probe, len));

  const char *run[] = {"run", "2",        "-d",   "--name",   "kc",   "--ksm",
                       "on",  "--kernel", kernel, "--initrd", initrd, NULL};
  g_assert_cmpint(nf_test_run_cli(tmp, run, BOOT_MS, NULL), ==, 0);
  const char *wait[] = {"wait", "--name", "kc", "--timeout", "120", NULL};
  g_assert_cmpint(nf_test_run_cli(tmp, wait, BOOT_MS, NULL), ==, 0);
  const char *mem[] = {"mem", "--json", "--name", "kc", NULL};
  json_auto_t *m = cli_json(tmp, mem);
  json_t *guests = json_object_get(m, "guests");
  g_assert_cmpuint(json_array_size(guests), ==, 2);
  g_autoptr(GHashTable) all = g_hash_table_new(NULL, NULL);
  for (gsize i = 0; i < 2; i++) {
    int pid = (int)json_integer_value(json_object_get(json_array_get(guests, i), "pid"));
    g_autoptr(GHashTable) offsets = g_hash_table_new(NULL, NULL);
    guint found = count_copies(pid, probe, len, size / 2, offsets);
    if (found == 0) {
      g_test_skip("cannot read qemu's memory (/proc/PID/mem)");
      break;
    }
    g_assert_cmpuint(found, ==, 2); /* guest RAM and the heap copy */
    GHashTableIter it;
    gpointer key;
    g_hash_table_iter_init(&it, offsets);
    while (g_hash_table_iter_next(&it, &key, NULL)) {
      guint off = GPOINTER_TO_UINT(key) - 1;
      g_test_message("guest %d (pid %d): a kernel copy starts at page offset %#x", (int)i + 1, pid,
                     off);
      /* Page-aligned, or a page plus a malloc header. */
      g_assert_cmpuint(off, <, 64);
      g_hash_table_add(all, key);
    }
  }
  /* The same offsets in both guests. */
  if (!g_test_failed())
    g_assert_cmpuint(g_hash_table_size(all), <=, 2);
  /* qemu.log shows the environment we added, as a command that pastes. */
  g_autofree char *log_path =
      g_build_filename(tmp, "state", "nervesfleet", "kc", "vm-0001", "qemu.log", NULL);
  g_autofree char *log = NULL;
  g_assert_true(g_file_get_contents(log_path, &log, NULL, NULL));
  g_assert_nonnull(strstr(log, "starting vm-0001: MALLOC_MMAP_THRESHOLD_=131072 "));

  const char *down[] = {"down", "--name", "kc", NULL};
  g_assert_cmpint(nf_test_run_cli(tmp, down, STOP_MS, NULL), ==, 0);
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
  g_test_add_func("/memory/ksm-kernel-copy-mergeable", test_ksm_kernel_copy_mergeable);
  int rc = g_test_run();
  nf_test_tmpdir_cleanup(ksm_dir);
  g_free(ksm_dir);
  return rc;
}
