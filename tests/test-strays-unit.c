/*
 * test-strays-unit.c: how a fleet's leftovers are found (supervisor/strays.c),
 * without a VM: pid files and status files of a fake fleet, and a stand-in
 * process whose command line carries a guest's pid file path (what qemu and
 * a wrapper script have). Guards that every trace is found whatever the ids,
 * and that nothing of another fleet (another runtime dir) matches.
 */
#include <signal.h>
#include <string.h>
#include <unistd.h>
#include <gio/gio.h>
#include <glib/gstdio.h>

#include "supervisor/strays.h"
#include "tests/lib/nf-test.h"

static void put(const char *dir, const char *name, const char *text)
{
  g_autofree char *path = g_build_filename(dir, name, NULL);
  g_autofree char *parent = g_path_get_dirname(path);
  g_assert_cmpint(g_mkdir_with_parents(parent, 0755), ==, 0);
  g_assert_true(g_file_set_contents(path, text, -1, NULL));
}

static void test_ids(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  NfFleetPaths paths = {.runtime_dir = g_build_filename(tmp, "run", NULL),
                        .state_dir = g_build_filename(tmp, "state", NULL)};
  put(paths.runtime_dir, "vm-0007.pid", "123\n");
  put(paths.runtime_dir, "vm-0002.pid", "124\n");
  put(paths.runtime_dir, "vm-0002.qmp", "");
  put(paths.runtime_dir, "fleet.lock", "1\n");
  put(paths.state_dir, "vm-0002/status.json", "{\"state\":\"ready\"}");
  put(paths.state_dir, "vm-0012/status.json", "{\"state\":\"booting\"}");
  put(paths.state_dir, "vm-0013/status.json", "{\"state\":\"stopped\"}");
  put(paths.state_dir, "vm-0014/status.json", "not json");
  put(paths.state_dir, "disks/vm-0015.qcow2", "");
  g_autoptr(GArray) ids = nf_strays_ids(&paths);
  guint want[] = {2, 7, 12};
  g_assert_cmpuint(ids->len, ==, G_N_ELEMENTS(want));
  for (guint i = 0; i < G_N_ELEMENTS(want); i++)
    g_assert_cmpuint(g_array_index(ids, guint, i), ==, want[i]);
  nf_paths_clear(&paths);
  nf_test_tmpdir_cleanup(tmp);
}

static void test_processes(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  g_autofree char *run = g_build_filename(tmp, "run", NULL);
  g_autofree char *other = g_build_filename(tmp, "run2", NULL);
  g_autofree char *ours = g_build_filename(run, "vm-0042.pid", NULL);
  g_autofree char *theirs = g_build_filename(other, "vm-0001.pid", NULL);
  /* sh -c CMD NAME ARGS...: the ARGS show in sh's command line. */
  const char *a[] = {"/bin/sh",       "-c",       "read x", "qemu", "-name",
                     "guest=vm-0042", "-pidfile", ours,     NULL};
  const char *b[] = {"/bin/sh", "-c", "read x", "qemu", "-pidfile", theirs, NULL};
  g_autoptr(GSubprocess) pa = g_subprocess_newv(a, G_SUBPROCESS_FLAGS_STDIN_PIPE, NULL);
  g_autoptr(GSubprocess) pb = g_subprocess_newv(b, G_SUBPROCESS_FLAGS_STDIN_PIPE, NULL);
  g_assert_nonnull(pa);
  g_assert_nonnull(pb);
  GPid pid = (GPid)g_ascii_strtoll(g_subprocess_get_identifier(pa), NULL, 10);

  g_autoptr(GArray) found = nf_strays_processes(run);
  g_assert_cmpuint(found->len, ==, 1);
  NfStrayProcess *sp = &g_array_index(found, NfStrayProcess, 0);
  g_assert_cmpuint(sp->id, ==, 42);
  g_assert_cmpint(sp->pid, ==, pid);
  g_assert_cmpint(sp->ppid, ==, getpid());

  g_subprocess_force_exit(pa);
  g_subprocess_force_exit(pb);
  g_assert_true(g_subprocess_wait(pa, NULL, NULL));
  g_assert_true(g_subprocess_wait(pb, NULL, NULL));
  nf_test_tmpdir_cleanup(tmp);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/strays/ids", test_ids);
  g_test_add_func("/strays/processes", test_processes);
  return g_test_run();
}
