/*
 * test-reflash.c: `nervesfleet reflash` and the disk/firmware extras of `ps`,
 * against real guests. Guards: reflash --wait gives a running guest a
 * factory-fresh disk (the guest's boot counter on /data starts again at 1,
 * where a plain restart kept counting) and leaves the base untouched; reflash
 * on a fleet without disks is exit 1 naming the problem, and changes nothing;
 * `ps --json` extras carry the overlay path and, on a Nerves firmware disk,
 * the active slot, version, upgrade and validation flags read from the
 * guest's own U-Boot env, and the table grows a FIRMWARE column only then.
 * One guest per fleet: each boot costs seconds of CPU under TCG.
 */
#include <signal.h>
#include <string.h>
#include <jansson.h>

#include "tests/lib/nf-test.h"

#define BOOT_MS 180000
#define CLI_MS 180000
#define STOP_MS 60000

static char *cli(const char *tmp, int want, const char *const *args);
static json_t *ps_guest(const char *tmp, const char *fleet, guint id);
static char *last_boots_line(const char *console);
static int run_to_end(NfTestProc *p);

/* Runs one CLI command to completion, asserts its exit status, returns its
 * merged output. */
static char *cli(const char *tmp, int want, const char *const *args)
{
  char *out = NULL;
  int rc = nf_test_run_cli(tmp, args, CLI_MS, &out);
  g_test_message("nervesfleet %s %s -> %d: %s", args[0], args[1] ? args[1] : "", rc, out);
  g_assert_cmpint(rc, ==, want);
  return out;
}

/* Guest `id` of `ps --json` (owned by the caller). */
static json_t *ps_guest(const char *tmp, const char *fleet, guint id)
{
  const char *args[] = {"ps", "--json", "--name", fleet, NULL};
  g_autofree char *out = cli(tmp, 0, args);
  json_error_t err;
  json_auto_t *ps = json_loads(out, 0, &err);
  g_assert_nonnull(ps);
  gsize i;
  json_t *g;
  json_array_foreach(json_object_get(ps, "guests"), i, g)
  {
    if (json_integer_value(json_object_get(g, "id")) == (json_int_t)id)
      return json_incref(g);
  }
  g_error("guest %u not in ps --json: %s", id, out);
}

/* The guest's latest "nervesfleet-data boots=N" line: "boots=1" appears
 * twice in a log that saw a reflash, so only the last one says where the
 * counter is now. */
static char *last_boots_line(const char *console)
{
  g_autofree char *text = NULL;
  g_assert_true(g_file_get_contents(console, &text, NULL, NULL));
  const char *last = NULL;
  for (const char *s = text; (s = strstr(s, "nervesfleet-data boots=")); s++)
    last = s;
  g_assert_nonnull(last);
  return g_strndup(last, strcspn(last, "\r\n"));
}

static int run_to_end(NfTestProc *p)
{
  nf_test_proc_signal(p, SIGTERM);
  return nf_test_proc_wait_exit(p, STOP_MS);
}

static void test_reflash_running_guest(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  g_autofree char *base = nf_test_make_ext4_base(tmp);
  g_autofree char *before = nf_test_sha256_file(base);
  g_autofree char *console =
      g_build_filename(tmp, "state/nervesfleet/rf/vm-0001/console.log", NULL);
  g_autofree char *overlay = g_build_filename(tmp, "state/nervesfleet/rf/disks/rf-1.qcow2", NULL);
  const char *run[] = {"run", "1", "--name", "rf", "--disk", base, "--stop-timeout", "5", NULL};
  g_autoptr(NfTestProc) p = nf_test_proc_spawn(tmp, run);
  g_assert_true(nf_test_proc_wait_output(p, "all 1 guests ready", BOOT_MS));
  g_assert_true(nf_test_wait_file_contains(console, "nervesfleet-data boots=1", BOOT_MS));

  /* ps: the overlay is named; an ext4 disk has no firmware env. */
  {
    json_auto_t *g = ps_guest(tmp, "rf", 1);
    json_t *extras = json_object_get(g, "extras");
    g_assert_cmpstr(json_string_value(json_object_get(extras, "disk")), ==, overlay);
    g_assert_null(json_object_get(extras, "fw_active"));
    g_assert_null(json_object_get(extras, "reboots"));
    const char *table[] = {"ps", "--name", "rf", NULL};
    g_autofree char *out = cli(tmp, 0, table);
    g_assert_null(strstr(out, "FIRMWARE"));
  }

  /* A restart keeps the disk: the counter goes on. */
  const char *restart[] = {"restart", "1", "--wait", "--name", "rf", NULL};
  g_autofree char *r = cli(tmp, 0, restart);
  g_assert_true(nf_test_wait_file_contains(console, "nervesfleet-data boots=2", BOOT_MS));

  /* A reflash does not: ready again on a factory-fresh overlay. */
  const char *reflash[] = {"reflash", "1", "--wait", "--name", "rf", NULL};
  g_autofree char *out = cli(tmp, 0, reflash);
  g_assert_nonnull(strstr(out, "1 guest reflashed, ready"));
  g_autofree char *last = last_boots_line(console);
  g_assert_cmpstr(last, ==, "nervesfleet-data boots=1");
  {
    json_auto_t *g = ps_guest(tmp, "rf", 1);
    g_assert_cmpstr(json_string_value(json_object_get(g, "state")), ==, "ready");
  }

  g_assert_cmpint(run_to_end(p), ==, 0);
  g_autofree char *after = nf_test_sha256_file(base);
  g_assert_cmpstr(before, ==, after);
  nf_test_tmpdir_cleanup(tmp);
}

static void test_reflash_without_disks(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  const char *run[] = {"run", "1", "--name", "nodisk", "--stop-timeout", "5", NULL};
  g_autoptr(NfTestProc) p = nf_test_proc_spawn(tmp, run);
  /* The control socket is up before this line is printed. */
  g_assert_true(nf_test_proc_wait_output(p, "fleet 'nodisk'", BOOT_MS));
  const char *wait[] = {"wait", "--name", "nodisk", NULL};
  g_autofree char *w = cli(tmp, 0, wait);
  json_auto_t *g = ps_guest(tmp, "nodisk", 1);
  const char *reflash[] = {"reflash", "all", "--wait", "--name", "nodisk", NULL};
  g_autofree char *out = cli(tmp, 1, reflash);
  g_assert_nonnull(strstr(out, "has no disks"));
  g_assert_nonnull(strstr(out, "--disk"));
  /* Refused, not half-done: the same qemu is still up, never stopped. */
  json_auto_t *g2 = ps_guest(tmp, "nodisk", 1);
  g_assert_cmpstr(json_string_value(json_object_get(g2, "state")), ==, "ready");
  g_assert_cmpint(json_integer_value(json_object_get(g2, "pid")), ==,
                  json_integer_value(json_object_get(g, "pid")));
  g_assert_cmpuint(json_object_size(json_object_get(g2, "extras")), ==, 0);
  g_assert_cmpint(run_to_end(p), ==, 0);
  nf_test_tmpdir_cleanup(tmp);
}

static void test_ps_nerves_firmware_extras(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  g_autofree char *disk = nf_test_make_firmware_disk(tmp);
  g_autofree char *kernel = nf_test_guest_kernel();
  g_autofree char *initrd = nf_test_guest_initrd();
  /* The sim kernel stands in for little_loader (not packaged), as in
   * test-disks' Nerves test. */
  const char *run[] = {"run",
                       "1",
                       "--name",
                       "nvx",
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
                       "--stop-timeout",
                       "5",
                       NULL};
  g_autoptr(NfTestProc) p = nf_test_proc_spawn(tmp, run);
  g_assert_true(nf_test_proc_wait_output(p, "all 1 guests ready", BOOT_MS));

  json_auto_t *g = ps_guest(tmp, "nvx", 1);
  json_t *extras = json_object_get(g, "extras");
  g_autofree char *overlay = g_build_filename(tmp, "state/nervesfleet/nvx/disks/nvx-1.qcow2", NULL);
  g_assert_cmpstr(json_string_value(json_object_get(extras, "disk")), ==, overlay);
  g_assert_cmpstr(json_string_value(json_object_get(extras, "fw_active")), ==, "a");
  g_assert_cmpstr(json_string_value(json_object_get(extras, "fw_version")), ==, "1.0.0");
  g_assert_cmpstr(json_string_value(json_object_get(extras, "upgrade_available")), ==, "0");
  g_assert_cmpstr(json_string_value(json_object_get(extras, "fw_validated")), ==, "1");
  g_assert_true(json_is_integer(json_object_get(extras, "reboots")));
  g_assert_cmpint(json_integer_value(json_object_get(extras, "reboots")), ==, 0);

  const char *table[] = {"ps", "--name", "nvx", NULL};
  g_autofree char *out = cli(tmp, 0, table);
  g_assert_nonnull(strstr(out, "FIRMWARE"));
  g_assert_nonnull(strstr(out, "a valid"));

  g_assert_cmpint(run_to_end(p), ==, 0);
  nf_test_tmpdir_cleanup(tmp);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/reflash/running-guest", test_reflash_running_guest);
  g_test_add_func("/reflash/without-disks", test_reflash_without_disks);
  g_test_add_func("/reflash/ps-nerves-firmware-extras", test_ps_nerves_firmware_extras);
  return g_test_run();
}
