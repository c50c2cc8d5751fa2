/*
 * test-state-dir.c: a state dir that cannot take what the fleet writes.
 * Guards: `run` refuses up front (exit 1, the dir and the fix named) when
 * nothing can be written there (a full filesystem), and leaves no dir of its
 * own behind when a dir is unusable; a state dir that fills up while the
 * fleet runs is reported once (a fleet notice) and per guest in `ps`, not
 * silently dropped; a --disk fleet on a full filesystem is told the disk is
 * full, not to --reflash-all. Full filesystems are small tmpfs mounts inside
 * the test's temp dir (needs root; skipped otherwise).
 */
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/mount.h>
#include <unistd.h>
#include <glib/gstdio.h>

#include "tests/lib/nf-test.h"

#define BOOT_MS 120000
#define STOP_MS 60000

/* A tmpfs of `size` mounted at <tmp>/<name>; NULL (test skipped) when this
 * process may not mount. */
static char *mount_small(const char *tmp, const char *name, const char *size)
{
  g_autofree char *dir = g_build_filename(tmp, name, NULL);
  g_assert_cmpint(g_mkdir(dir, 0755), ==, 0);
  g_autofree char *opts = g_strdup_printf("size=%s", size);
  /* In a mount namespace of our own (shared by the nervesfleet we start), so
   * a test that fails half way leaves no mount on the host. */
  static gboolean private_ns;
  if (!private_ns && getuid() == 0 && unshare(CLONE_NEWNS) == 0 &&
      mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == 0)
    private_ns = TRUE;
  if (!private_ns || mount("tmpfs", dir, "tmpfs", 0, opts) != 0) {
    g_test_skip("cannot mount a small tmpfs (needs root)");
    return NULL;
  }
  return g_steal_pointer(&dir);
}

/* Writes zeros into <dir>/fill until the filesystem is full. */
static void fill(const char *dir)
{
  g_autofree char *cmd =
      g_strdup_printf("dd if=/dev/zero of=%s/fill bs=4k 2>/dev/null; sync; true", dir);
  nf_test_sh(cmd);
}

static void unmount_and_clean(char *mnt, char *tmp)
{
  if (mnt)
    g_assert_cmpint(umount(mnt), ==, 0);
  nf_test_tmpdir_cleanup(tmp);
}

static guint count(const char *hay, const char *needle)
{
  guint n = 0;
  for (const char *s = strstr(hay, needle); s; s = strstr(s + 1, needle))
    n++;
  return n;
}

/* Before: the fleet ran, exit 0, every log 0 bytes, no status.json, no word. */
static void test_full_at_start(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  g_autofree char *mnt = mount_small(tmp, "full", "64k");
  if (!mnt) {
    nf_test_tmpdir_cleanup(tmp);
    return;
  }
  fill(mnt);
  g_autofree char *state = g_build_filename(mnt, "st", NULL);
  const char *args[] = {"run", "1", "--name", "full", "--state-dir", state, NULL};
  g_autofree char *out = NULL;
  g_assert_cmpint(nf_test_run_cli(tmp, args, 30000, &out), ==, 1);
  g_test_message("%s", out);
  g_assert_nonnull(strstr(out, "cannot write in"));
  g_assert_nonnull(strstr(out, state));
  g_assert_nonnull(strstr(out, "No space left on device; free space"));
  g_assert_nonnull(strstr(out, "--state-dir"));
  /* Nothing of its own left: neither the state dir nor a runtime dir. */
  g_assert_false(g_file_test(state, G_FILE_TEST_EXISTS));
  g_autofree char *run = g_build_filename(tmp, "run", "nervesfleet", NULL);
  g_assert_false(g_file_test(run, G_FILE_TEST_EXISTS));
  unmount_and_clean(mnt, tmp);
}

/* Before: exit 1, but an empty runtime dir was left behind. */
static void test_unusable_leaves_nothing(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  g_autofree char *file = g_build_filename(tmp, "plainfile", NULL);
  g_assert_true(g_file_set_contents(file, "x", 1, NULL));
  const char *args[] = {"run", "1", "--name", "bad", "--state-dir", file, NULL};
  g_autofree char *out = NULL;
  g_assert_cmpint(nf_test_run_cli(tmp, args, 30000, &out), ==, 1);
  g_assert_nonnull(strstr(out, "--state-dir"));
  g_autofree char *run = g_build_filename(tmp, "run", "nervesfleet", NULL);
  g_assert_false(g_file_test(run, G_FILE_TEST_EXISTS));
  nf_test_tmpdir_cleanup(tmp);
}

/* A Nerves firmware without a U-Boot env: the disks' preparation fails
 * after it recorded the base and made the first overlay. The state dir this
 * start made goes with them; it stayed before (disks/base.json in it). */
static void test_failed_disks_leave_nothing(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  g_autofree char *fw = g_build_filename(tmp, "fw.img", NULL);
  g_autofree char *make = g_strdup_printf("truncate -s 4M '%s'", fw);
  nf_test_sh(make);
  g_autofree char *kernel = nf_test_guest_kernel();
  const char *args[] = {"run",        "1", "--name",   "noenv", "--profile", "nerves",
                        "--firmware", fw,  "--loader", kernel,  NULL};
  g_autofree char *out = NULL;
  g_assert_cmpint(nf_test_run_cli(tmp, args, 30000, &out), ==, 1);
  g_assert_nonnull(strstr(out, "writing the serial into"));
  g_autofree char *state = g_build_filename(tmp, "state", "nervesfleet", NULL);
  g_assert_false(g_file_test(state, G_FILE_TEST_EXISTS));
  g_autofree char *run = g_build_filename(tmp, "run", "nervesfleet", NULL);
  g_assert_false(g_file_test(run, G_FILE_TEST_EXISTS));
  nf_test_tmpdir_cleanup(tmp);
}

/* Before: the guest kept running and every write failed in silence. */
static void test_fills_while_running(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  g_autofree char *mnt = mount_small(tmp, "small", "2m");
  if (!mnt) {
    nf_test_tmpdir_cleanup(tmp);
    return;
  }
  g_autofree char *state = g_build_filename(mnt, "st", NULL);
  const char *args[] = {"run", "1", "--name", "fills", "--state-dir", state, NULL};
  g_autoptr(NfTestProc) p = nf_test_proc_spawn(tmp, args);
  g_assert_true(nf_test_proc_wait_output(p, "all 1 guests ready", BOOT_MS));
  /* status.json trades places with its spare, status.json.prev, which the
   * next write truncates and fills: on a full disk it reuses the spare's
   * own page and succeeds. Without the spare it needs a new page. */
  g_autofree char *spare = g_build_filename(state, "vm-0001", "status.json.prev", NULL);
  g_assert_cmpint(g_unlink(spare), ==, 0);
  fill(mnt);
  /* Each transition writes status.json and events.log: they must fail now. */
  const char *stop[] = {"stop", "1", "--name", "fills", NULL};
  g_assert_cmpint(nf_test_run_cli(tmp, stop, STOP_MS, NULL), ==, 0);
  g_assert_true(nf_test_proc_wait_output(p, "logs and status files are incomplete", 10000));
  const char *out = nf_test_proc_output(p);
  g_assert_nonnull(strstr(out, "vm-0001: cannot write"));
  g_assert_nonnull(strstr(out, "No space left on device"));
  const char *ps[] = {"ps", "--name", "fills", NULL};
  g_autofree char *ps_out = NULL;
  g_assert_cmpint(nf_test_run_cli(tmp, ps, 30000, &ps_out), ==, 0);
  g_assert_nonnull(strstr(ps_out, "warning: vm-0001: cannot write"));
  /* Told once, not once per failed write. */
  const char *start[] = {"start", "1", "--name", "fills", "--wait", NULL};
  g_assert_cmpint(nf_test_run_cli(tmp, start, BOOT_MS, NULL), ==, 0);
  nf_test_proc_signal(p, SIGTERM);
  g_assert_cmpint(nf_test_proc_wait_exit(p, STOP_MS), ==, 0);
  g_assert_cmpuint(count(nf_test_proc_output(p), "logs and status files are incomplete"), ==, 1);
  unmount_and_clean(mnt, tmp);
}

/* Before: the overlay's ENOSPC came out as a bare qemu-img error (and a
 * failed base record advised --reflash-all). */
static void test_disk_on_full_fs(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  g_autofree char *base = nf_test_make_ext4_base(tmp);
  g_autofree char *mnt = mount_small(tmp, "tiny", "64k");
  if (!mnt) {
    nf_test_tmpdir_cleanup(tmp);
    return;
  }
  g_autofree char *state = g_build_filename(mnt, "st", NULL);
  const char *args[] = {"run", "1", "--name", "disk", "--state-dir", state, "--disk", base, NULL};
  g_autofree char *out = NULL;
  g_assert_cmpint(nf_test_run_cli(tmp, args, 60000, &out), ==, 1);
  g_test_message("%s", out);
  g_assert_nonnull(strstr(out, "is full"));
  g_assert_nonnull(strstr(out, "free space there"));
  g_assert_null(strstr(out, "--reflash-all"));
  unmount_and_clean(mnt, tmp);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/state-dir/full-at-start", test_full_at_start);
  g_test_add_func("/state-dir/unusable-leaves-nothing", test_unusable_leaves_nothing);
  g_test_add_func("/state-dir/failed-disks-leave-nothing", test_failed_disks_leave_nothing);
  g_test_add_func("/state-dir/fills-while-running", test_fills_while_running);
  g_test_add_func("/state-dir/disk-on-full-fs", test_disk_on_full_fs);
  return g_test_run();
}
