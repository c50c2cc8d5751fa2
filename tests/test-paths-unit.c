/*
 * test-paths-unit.c: a guest's file names (supervisor/paths.c), without a
 * VM. nf_paths_guest_files packs the eight into one block: each must name
 * what the separate helpers name, whatever the id's width, and lie inside
 * the one allocation that frees them all.
 */
#include <string.h>

#include "supervisor/paths.h"
#include "tests/lib/nf-test.h"

static void check_files(const NfFleetPaths *paths, guint id)
{
  NfGuestFiles f;
  nf_paths_guest_files(paths, id, &f);
  g_autofree char *dir = nf_paths_guest_state_dir(paths, id);
  g_autofree char *name = nf_paths_guest_name(id);
  g_autofree char *qemu_log = g_build_filename(dir, "qemu.log", NULL);
  g_autofree char *console_log = g_build_filename(dir, "console.log", NULL);
  g_autofree char *status = g_build_filename(dir, "status.json", NULL);
  g_autofree char *pid = g_strdup_printf("%s/%s.pid", paths->runtime_dir, name);
  g_autofree char *ctl = g_strdup_printf("%s/%s.ctl", paths->runtime_dir, name);
  g_autofree char *qmp = g_strdup_printf("%s/%s.qmp", paths->runtime_dir, name);
  g_autofree char *serial = g_strdup_printf("%s/%s.serial", paths->runtime_dir, name);
  g_assert_cmpstr(f.state_dir, ==, dir);
  g_assert_cmpstr(f.qemu_log, ==, qemu_log);
  g_assert_cmpstr(f.console_log, ==, console_log);
  g_assert_cmpstr(f.status_path, ==, status);
  g_assert_cmpstr(f.pidfile, ==, pid);
  g_assert_cmpstr(f.ctl_path, ==, ctl);
  g_assert_cmpstr(f.qmp_path, ==, qmp);
  g_assert_cmpstr(f.serial_path, ==, serial);
  /* All in the block, back to back: the last ends where the block does. */
  g_assert_true(f.state_dir == f.block);
  const char *all[] = {f.state_dir, f.qemu_log, f.console_log, f.status_path,
                       f.pidfile,   f.ctl_path, f.qmp_path,    f.serial_path};
  for (guint i = 1; i < G_N_ELEMENTS(all); i++)
    g_assert_true(all[i] == all[i - 1] + strlen(all[i - 1]) + 1);
  g_free(f.block);
}

static void test_files(void)
{
  NfFleetPaths paths = {.runtime_dir = g_strdup("/run/user/0/nervesfleet/f"),
                        .state_dir = g_strdup("/var/lib/nervesfleet/f")};
  check_files(&paths, 1);
  check_files(&paths, 9999);
  check_files(&paths, 123456); /* wider than the usual four digits */
  nf_paths_clear(&paths);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/paths/guest-files", test_files);
  return g_test_run();
}
