/*
 * test-small-kernel.c: the guest with the small kernel (guest/build-kernel.sh,
 * `make guest GUEST_KERNEL=small`) does what the sim guest is for, with real
 * qemu under TCG. Guards what its config fragment (guest/kernel.config) must
 * keep, every driver being built in rather than loaded by /init: the fw_cfg
 * identity on the PL011 console, an ext4 data disk on virtio-blk, a virtio
 * NIC with DHCP and the ready report over HTTP, no module left to load, free
 * page reporting that actually returns memory to the host, and the exits the supervisor classifies
 * from kernel features (panic through sysrq, the i6300esb watchdog, PSCI poweroff).
 *
 * The small kernel takes ~15 min to build on 2 cores, so `make check` does not
 * build it: without $NF_SMALL_GUEST_DIR/vmlinuz every case is a TAP skip that
 * says how to build it. `make check GUEST_KERNEL=small` builds it and runs
 * every other test against it too (balloon stats and policy, snapshots...).
 */
#include <signal.h>
#include <string.h>

#include "tests/lib/nf-test.h"

#define BOOT_MS 120000
#define STOP_MS 60000

/* The small guest's kernel and initrd, or NULL after a TAP skip. */
static gboolean small_guest(char **kernel, char **initrd)
{
  const char *dir = g_getenv("NF_SMALL_GUEST_DIR");
  g_autofree char *k = dir ? g_build_filename(dir, "vmlinuz", NULL) : NULL;
  g_autofree char *i = dir ? g_build_filename(dir, "initrd.gz", NULL) : NULL;
  if (k == NULL || !g_file_test(k, G_FILE_TEST_IS_REGULAR) ||
      !g_file_test(i, G_FILE_TEST_IS_REGULAR)) {
    g_test_skip("small kernel not built (NF_SMALL_GUEST_DIR has no vmlinuz): "
                "`make guest GUEST_KERNEL=small` builds it");
    return FALSE;
  }
  *kernel = g_steal_pointer(&k);
  *initrd = g_steal_pointer(&i);
  return TRUE;
}

static char *read_file(const char *tmp, const char *fleet, const char *name)
{
  g_autofree char *path = g_strdup_printf("%s/state/nervesfleet/%s/vm-0001/%s", tmp, fleet, name);
  char *text = NULL;
  g_assert_true(g_file_get_contents(path, &text, NULL, NULL));
  return text;
}

/* One guest with a data disk and a NIC that reports ready over HTTP. */
static void test_boots_with_disk_and_net(void)
{
  g_autofree char *kernel = NULL, *initrd = NULL;
  if (!small_guest(&kernel, &initrd))
    return;
  g_autofree char *tmp = nf_test_tmpdir_new();
  g_autofree char *base = nf_test_make_ext4_base(tmp);
  const char *args[] = {"run",      "1",    "--name",         "small", "--kernel", kernel,
                        "--initrd", initrd, "--disk",         base,    "--net",    "user",
                        "--ready",  "http", "--stop-timeout", "20",    NULL};
  g_autoptr(NfTestProc) p = nf_test_proc_spawn(tmp, args);
  if (!nf_test_proc_wait_output(p, "all 1 guests ready", BOOT_MS))
    g_test_message("output so far:\n%s", nf_test_proc_output(p));
  g_assert_nonnull(strstr(nf_test_proc_output(p), "vm-0001 ready NF-000001"));

  g_autofree char *qlog = read_file(tmp, "small", "qemu.log");
  /* This guest's files (its boot.elf, or its kernel), not the default guest's. */
  g_autofree char *small_dir = g_path_get_dirname(kernel);
  g_autofree char *small_kernel_arg = g_strdup_printf("-kernel %s/", small_dir);
  g_assert_nonnull(strstr(qlog, small_kernel_arg));
  g_autofree char *events = read_file(tmp, "small", "events.log");
  g_assert_nonnull(strstr(events, "-> ready: ready (http)"));
  g_autofree char *console = read_file(tmp, "small", "console.log");
  g_assert_nonnull(strstr(console, "nervesfleet-ready serial=NF-000001 source=fw_cfg"));
  g_assert_nonnull(strstr(console, " net=10.0.2.")); /* DHCP lease from slirp */
  g_assert_nonnull(strstr(console, "nervesfleet-data boots=1"));
  g_assert_null(strstr(console, "nervesfleet: ")); /* no insmod, mount or net failure */

  nf_test_proc_signal(p, SIGTERM);
  g_assert_cmpint(nf_test_proc_wait_exit(p, STOP_MS), ==, 0);
  nf_test_tmpdir_cleanup(tmp);
}

typedef struct {
  GPid pid;
  guint64 rss_kib;
} Rss;

static gboolean rss_below_cb(gpointer data)
{
  Rss *r = data;
  g_autofree char *path = g_strdup_printf("/proc/%d/status", r->pid);
  g_autofree char *text = NULL;
  if (!g_file_get_contents(path, &text, NULL, NULL))
    return FALSE;
  const char *v = strstr(text, "VmRSS:");
  return v && g_ascii_strtoull(v + 6, NULL, 10) < r->rss_kib;
}

static gboolean tick_cb(gpointer data)
{
  return G_SOURCE_CONTINUE; /* only wakes the loop so the RSS is read again */
}

/* Free page reporting gives the host back what the guest freed. init_on_free=1
 * makes the guest write every free page at boot, so its whole RAM is touched
 * (~210 MB RSS at -m 128) until reporting returns it. With 4 MiB pageblocks (a
 * kernel without HUGETLB_PAGE) a zone is only scanned while 128 MiB are free,
 * which a 128 MiB guest never has: the RSS stayed at ~210 MB for good. */
static void test_free_page_reporting(void)
{
  g_autofree char *kernel = NULL, *initrd = NULL;
  if (!small_guest(&kernel, &initrd))
    return;
  g_autofree char *tmp = nf_test_tmpdir_new();
  const char *args[] = {
      "run",   "1",   "--name",   "sfpr",           "--kernel", kernel, "--initrd",         initrd,
      "--ksm", "off", "--append", "init_on_free=1", "--memory", "128M", "--balloon-policy", "off",
      NULL};
  g_autoptr(NfTestProc) p = nf_test_proc_spawn(tmp, args);
  g_assert_true(nf_test_proc_wait_output(p, "all 1 guests ready", BOOT_MS));
  g_autoptr(GArray) pids = nf_test_pids_matching(tmp);
  g_assert_cmpuint(pids->len, ==, 1);
  /* Guest RAM fully touched is 128 MiB on top of qemu's own ~70-100 MiB; what
   * the guest really uses (kernel, initramfs, busybox) is ~15 MiB. */
  Rss r = {.pid = g_array_index(pids, GPid, 0), .rss_kib = 160 * 1024};
  guint tick = g_timeout_add(250, tick_cb, NULL);
  gboolean returned = nf_test_wait_for(rss_below_cb, &r, 90000);
  g_source_remove(tick);
  if (!returned) {
    g_autofree char *status = g_strdup_printf("/proc/%d/status", r.pid);
    g_autofree char *text = NULL;
    g_file_get_contents(status, &text, NULL, NULL);
    g_test_message("qemu status:\n%s", text ? text : "(gone)");
  }
  g_assert_true(returned);
  nf_test_proc_signal(p, SIGTERM);
  g_assert_cmpint(nf_test_proc_wait_exit(p, STOP_MS), ==, 0);
  nf_test_tmpdir_cleanup(tmp);
}

/* `run 1 --append APPEND --restart never` until `needle` is printed. */
static void expect_exit(const char *name, const char *append, const char *needle)
{
  g_autofree char *kernel = NULL, *initrd = NULL;
  if (!small_guest(&kernel, &initrd))
    return;
  g_autofree char *tmp = nf_test_tmpdir_new();
  const char *args[] = {"run",       "1",        "--name",         name,       "--kernel",
                        kernel,      "--initrd", initrd,           "--append", append,
                        "--restart", "never",    "--stop-timeout", "5",        NULL};
  g_autoptr(NfTestProc) p = nf_test_proc_spawn(tmp, args);
  if (!nf_test_proc_wait_output(p, needle, BOOT_MS))
    g_test_message("output so far:\n%s", nf_test_proc_output(p));
  g_assert_nonnull(strstr(nf_test_proc_output(p), needle));
  nf_test_proc_signal(p, SIGTERM);
  g_assert_cmpint(nf_test_proc_wait_exit(p, STOP_MS), ==, 0);
  nf_test_tmpdir_cleanup(tmp);
}

static void test_panic(void)
{
  expect_exit("spanic", "nf.fault=panic", "vm-0001 failed: exited: panic");
}

static void test_watchdog(void)
{
  expect_exit("swdt", "nf.fault=nowdt nf.wdt_timeout=2", "vm-0001 failed: exited: watchdog");
}

static void test_poweroff(void)
{
  expect_exit("soff", "nf.fault=poweroff", "vm-0001 stopped: exited: poweroff");
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/small-kernel/boots-with-disk-and-net", test_boots_with_disk_and_net);
  g_test_add_func("/small-kernel/free-page-reporting", test_free_page_reporting);
  g_test_add_func("/small-kernel/panic", test_panic);
  g_test_add_func("/small-kernel/watchdog", test_watchdog);
  g_test_add_func("/small-kernel/poweroff", test_poweroff);
  return g_test_run();
}
