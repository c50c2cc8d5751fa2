/*
 * test-disks.c: per-guest disks with real qemu-img and real guests. Guards:
 * a file the guest writes survives a guest crash/restart and a supervisor
 * restart (persistent overlays) while the shared base never changes;
 * --reflash-all gives factory-fresh disks; a base replaced under existing
 * overlays is refused with the way out; a bad base is a clear error; the
 * Nerves profile's wiring (virtio-mmio disk, env block at 0x2000) gives each
 * guest its own serial from its own overlay's U-Boot env.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <glib/gstdio.h>

#include "tests/lib/nf-test.h"

#define BOOT_MS 120000
#define STOP_MS 60000

static int run_to_end(NfTestProc *p)
{
  nf_test_proc_signal(p, SIGTERM);
  return nf_test_proc_wait_exit(p, STOP_MS);
}

static void test_persistence_and_reflash(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  g_autofree char *base = nf_test_make_ext4_base(tmp);
  g_autofree char *before = nf_test_sha256_file(base);
  g_autofree char *console =
      g_build_filename(tmp, "state/nervesfleet/disk/vm-0001/console.log", NULL);
  const char *args[] = {"run", "1", "--name", "disk", "--disk", base, "--backoff", "0.2", NULL};

  g_autoptr(NfTestProc) p = nf_test_proc_spawn(tmp, args);
  g_assert_true(nf_test_proc_wait_output(p, "all 1 guests ready", BOOT_MS));
  g_assert_true(nf_test_wait_file_contains(console, "nervesfleet-data boots=1", BOOT_MS));
  /* The guest crashes; its disk comes back with it. */
  g_autofree char *pidfile = g_build_filename(tmp, "run/nervesfleet/disk/vm-0001.pid", NULL);
  g_autoptr(GArray) qemu = nf_test_pids_matching(pidfile);
  g_assert_cmpuint(qemu->len, ==, 1);
  kill(g_array_index(qemu, GPid, 0), SIGKILL);
  g_assert_true(nf_test_proc_wait_output(p, "restart 1)", BOOT_MS));
  g_assert_true(nf_test_wait_file_contains(console, "nervesfleet-data boots=2", BOOT_MS));
  g_assert_cmpint(run_to_end(p), ==, 0);

  /* A new supervisor: the overlay is still this guest's disk. */
  g_autoptr(NfTestProc) p2 = nf_test_proc_spawn(tmp, args);
  g_assert_true(nf_test_wait_file_contains(console, "nervesfleet-data boots=3", BOOT_MS));
  g_assert_cmpint(run_to_end(p2), ==, 0);

  /* Factory reset. */
  const char *fresh[] = {"run", "1", "--name", "disk", "--disk", base, "--reflash-all", NULL};
  g_autoptr(NfTestProc) p3 = nf_test_proc_spawn(tmp, fresh);
  g_assert_true(nf_test_proc_wait_output(p3, "all 1 guests ready", BOOT_MS));
  g_autofree char *text = NULL;
  g_assert_true(g_file_get_contents(console, &text, NULL, NULL));
  g_assert_nonnull(strstr(strstr(text, "boots=3"), "nervesfleet-data boots=1"));
  g_assert_cmpint(run_to_end(p3), ==, 0);

  g_autofree char *after = nf_test_sha256_file(base);
  g_assert_cmpstr(before, ==, after);
  nf_test_tmpdir_cleanup(tmp);
}

static void test_base_changed_is_refused(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  g_autofree char *base = nf_test_make_ext4_base(tmp);
  const char *two[] = {"run", "2", "--name", "chg", "--disk", base, NULL};
  const char *args[] = {"run", "1", "--name", "chg", "--disk", base, NULL};
  g_autoptr(NfTestProc) p = nf_test_proc_spawn(tmp, two);
  g_assert_true(nf_test_proc_wait_output(p, "all 2 guests ready", BOOT_MS));
  g_assert_cmpint(run_to_end(p), ==, 0);

  g_autofree char *cmd =
      g_strdup_printf("printf x | dd of='%s' bs=1 seek=100 conv=notrunc 2>/dev/null", base);
  nf_test_sh(cmd);
  g_autofree char *out = NULL;
  g_assert_cmpint(nf_test_run_cli(tmp, args, 60000, &out), ==, 1);
  g_assert_nonnull(strstr(out, "--reflash-all"));
  g_assert_null(strstr(out, "ready"));

  /* The way out for one guest takes the other's disk too: left on the old
   * base under a record of the new one, it would boot corrupted later. */
  const char *reflash[] = {"run",           "1",      "--name", "chg", "--disk", base,
                           "--reflash-all", "--exec", "true",   NULL};
  g_autofree char *out2 = NULL;
  g_assert_cmpint(nf_test_run_cli(tmp, reflash, BOOT_MS, &out2), ==, 0);
  g_autofree char *disk1 = g_build_filename(tmp, "state/nervesfleet/chg/disks/chg-1.qcow2", NULL);
  g_autofree char *disk2 = g_build_filename(tmp, "state/nervesfleet/chg/disks/chg-2.qcow2", NULL);
  g_assert_true(g_file_test(disk1, G_FILE_TEST_EXISTS));
  g_assert_false(g_file_test(disk2, G_FILE_TEST_EXISTS));
  nf_test_tmpdir_cleanup(tmp);
}

static void test_bad_base(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  g_autofree char *junk = g_build_filename(tmp, "junk.qcow2", NULL);
  g_assert_true(g_file_set_contents(junk, "QFI\xfb not really", -1, NULL));
  g_autofree char *missing = g_build_filename(tmp, "missing.img", NULL);
  const char *a1[] = {"run", "1", "--disk", junk, "--disk-format", "qcow2", NULL};
  const char *a2[] = {"run", "1", "--disk", missing, NULL};
  g_autofree char *o1 = NULL, *o2 = NULL;
  g_assert_cmpint(nf_test_run_cli(tmp, a1, 60000, &o1), ==, 1);
  g_assert_nonnull(strstr(o1, "--disk: "));
  g_assert_nonnull(strstr(o1, junk));
  g_assert_cmpint(nf_test_run_cli(tmp, a2, 60000, &o2), ==, 1);
  g_assert_nonnull(strstr(o2, missing));
  nf_test_tmpdir_cleanup(tmp);
}

static void test_nerves_profile_env_serials(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  g_autofree char *disk = nf_test_make_firmware_disk(tmp);
  g_autofree char *before = nf_test_sha256_file(disk);
  g_autofree char *kernel = nf_test_guest_kernel();
  g_autofree char *initrd = nf_test_guest_initrd();
  /* little_loader is not packaged: the sim kernel stands in for it, behind
   * the same virtio-mmio disk wiring. */
  const char *args[] = {"run",
                        "2",
                        "--name",
                        "nerves",
                        "--profile",
                        "nerves",
                        "--firmware",
                        disk,
                        "--loader",
                        kernel,
                        "--initrd",
                        initrd,
                        "--memory",
                        "128M",
                        "--append",
                        "console=ttyAMA0 panic=-1",
                        "--ready-marker",
                        "nervesfleet-ready",
                        NULL};
  g_autoptr(NfTestProc) p = nf_test_proc_spawn(tmp, args);
  g_assert_true(nf_test_proc_wait_output(p, "all 2 guests ready", BOOT_MS));
  for (guint id = 1; id <= 2; id++) {
    g_autofree char *log =
        g_strdup_printf("%s/state/nervesfleet/nerves/vm-%04u/console.log", tmp, id);
    g_autofree char *want = g_strdup_printf("nervesfleet-ready serial=NF-%06u source=env", id);
    g_assert_true(nf_test_wait_file_contains(log, want, 1000));
    g_autofree char *qlog =
        g_strdup_printf("%s/state/nervesfleet/nerves/vm-%04u/qemu.log", tmp, id);
    g_autofree char *qtext = NULL;
    g_assert_true(g_file_get_contents(qlog, &qtext, NULL, NULL));
    g_assert_nonnull(strstr(qtext, "virtio-blk-device,drive=vdisk,bus=virtio-mmio-bus.0"));
    g_assert_nonnull(strstr(qtext, "virtio-net-device,netdev=eth0,mac="));
    g_assert_null(strstr(qtext, "-no-reboot"));
  }
  g_assert_cmpint(run_to_end(p), ==, 0);

  /* Guest 2's overlay as a supervisor killed between making it and writing
   * its serial leaves it (the base's serial, BASE-0): the next supervisor
   * writes the serial before the guest boots. It booted as BASE-0 before. */
  g_autofree char *overlay2 =
      g_build_filename(tmp, "state/nervesfleet/nerves/disks/nerves-2.qcow2", NULL);
  g_assert_cmpint(g_unlink(overlay2), ==, 0);
  g_autofree char *make =
      g_strdup_printf("qemu-img create -q -f qcow2 -b '%s' -F raw '%s' >/dev/null", disk, overlay2);
  nf_test_sh(make);
  g_autoptr(NfTestProc) p2 = nf_test_proc_spawn(tmp, args);
  g_assert_true(nf_test_proc_wait_output(p2, "all 2 guests ready", BOOT_MS));
  g_assert_cmpint(run_to_end(p2), ==, 0);
  g_autofree char *log2 =
      g_build_filename(tmp, "state/nervesfleet/nerves/vm-0002/console.log", NULL);
  g_autofree char *text2 = NULL;
  g_assert_true(g_file_get_contents(log2, &text2, NULL, NULL));
  g_assert_null(strstr(text2, "serial=BASE-0"));
  g_assert_nonnull(
      strstr(strstr(text2, "serial=NF-000002 source=env") + 1, "serial=NF-000002 source=env"));

  g_autofree char *after = nf_test_sha256_file(disk);
  g_assert_cmpstr(before, ==, after);
  nf_test_tmpdir_cleanup(tmp);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/disks/persistence-and-reflash", test_persistence_and_reflash);
  g_test_add_func("/disks/base-changed-is-refused", test_base_changed_is_refused);
  g_test_add_func("/disks/bad-base", test_bad_base);
  g_test_add_func("/disks/nerves-profile-env-serials", test_nerves_profile_env_serials);
  return g_test_run();
}
