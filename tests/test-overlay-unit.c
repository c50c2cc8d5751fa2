/*
 * test-overlay-unit: guards the disks under every guest, with the real
 * qemu-img / qemu-io / mkenvimage / fw_printenv (no VMs):
 * - a bad base (missing, a directory, empty, truncated qcow2, garbage, wrong
 *   format named, unsupported format, missing backing file) is refused with
 *   a message naming the file;
 * - 20 overlays are created on the caller's main context (the first by
 *   qemu-img, the others copied from it: qemu-img check must accept them),
 *   a second run creates nothing, cancellation leaves no temp;
 * - a base changed under existing overlays is refused until a reflash;
 * - reflash gives a fresh overlay; remove/remove_all leave nothing;
 * - the U-Boot env is written into the overlay, never the base, and read back
 *   identically by all three read paths and by fw_printenv;
 * - ENOTDIR, a read-only mount and a full disk (in qemu-img or while copying)
 *   give clear errors and leave
 *   no temp file, and do not disturb the overlays already there.
 * Each test works in its own temp dir; the process's TMPDIR is private too,
 * and both must be empty at the end (no temp left by the library).
 */
#include <errno.h>
#include <sched.h>
#include <glib/gstdio.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <unistd.h>

#include "overlay/base.h"
#include "overlay/env.h"
#include "overlay/overlay.h"
#include "overlay/qcow2.h"
#include "tests/lib/abort-cleanup.h"
#include "tests/lib/nf-test.h"

static char *t_sh(int *status, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static char *t_ok(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
static char *t_raw_base(const char *dir, const char *name, const char *size);
static guint t_count_temps(const char *dir);
static char *t_sha256_file(const char *path);
static void t_async_done_cb(GObject *source, GAsyncResult *res, gpointer data);
static gboolean t_have_result(gpointer data);
static char **t_guest_paths(const char *dir, guint n);
static void t_assert_overlay_of(const char *overlay, const char *base);

/* Runs a shell command; returns stdout, stores the exit status. */
static char *t_sh(int *status, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  g_autofree char *cmd = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  const char *argv[] = {"/bin/sh", "-c", cmd, NULL};
  char *out = NULL;
  int st = 0;
  g_autoptr(GError) error = NULL;
  g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_STDERR_TO_DEV_NULL, NULL, NULL, &out, NULL, &st,
               &error);
  g_assert_no_error(error);
  *status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return out;
}

static char *t_ok(const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  g_autofree char *cmd = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  int status = 0;
  char *out = t_sh(&status, "%s", cmd);
  if (status != 0)
    g_error("command failed (%d): %s", status, cmd);
  return out;
}

static char *t_raw_base(const char *dir, const char *name, const char *size)
{
  char *path = g_build_filename(dir, name, NULL);
  g_free(t_ok("truncate -s %s %s && printf 'BASEDATA' | dd of=%s conv=notrunc 2>/dev/null", size,
              path, path));
  return path;
}

static guint t_count_temps(const char *dir)
{
  guint n = 0;
  g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
  const char *name;
  while (d && (name = g_dir_read_name(d)))
    if (strstr(name, ".tmp-") || g_str_has_prefix(name, "nf-env-"))
      n++;
  return n;
}

static char *t_sha256_file(const char *path)
{
  g_autofree char *data = NULL;
  gsize len = 0;
  g_assert_true(g_file_get_contents(path, &data, &len, NULL));
  return g_compute_checksum_for_data(G_CHECKSUM_SHA256, (const guchar *)data, len);
}

static char **t_guest_paths(const char *dir, guint n)
{
  char **paths = g_new0(char *, n + 1);
  for (guint i = 0; i < n; i++) {
    g_autofree char *name = g_strdup_printf("g%u", i);
    paths[i] = nf_overlay_path(dir, name);
  }
  return paths;
}

/* The overlay is a qcow2 whose backing file is `base` (absolute), format raw. */
static void t_assert_overlay_of(const char *overlay, const char *base)
{
  g_autofree char *out = t_ok("qemu-img info -U --output=json %s", overlay);
  json_auto_t *j = json_loads(out, 0, NULL);
  g_assert_cmpstr(json_string_value(json_object_get(j, "format")), ==, "qcow2");
  g_assert_cmpstr(json_string_value(json_object_get(j, "backing-filename")), ==, base);
  g_assert_cmpstr(json_string_value(json_object_get(j, "backing-filename-format")), ==, "raw");
}

static void test_base_valid(void)
{
  g_autofree char *dir = nf_test_tmpdir_new();
  g_autofree char *raw = t_raw_base(dir, "base.raw", "4M");
  g_autoptr(GError) error = NULL;
  g_autoptr(NfOverlayBase) b = nf_overlay_base_inspect(raw, "raw", &error);
  g_assert_no_error(error);
  g_assert_cmpstr(b->format, ==, "raw");
  g_assert_cmpuint(b->virtual_size, ==, 4 << 20);
  g_assert_cmpuint(b->chain_length, ==, 1);
  g_assert_null(b->backing_file);

  /* A qcow2 base with its own backing file: accepted, chain recorded. A
   * relative path comes back absolute. */
  g_free(t_ok("cd %s && qemu-img create -q -f qcow2 -F raw -b %s mid.qcow2", dir, raw));
  g_autofree char *cwd = g_get_current_dir();
  g_assert_cmpint(chdir(dir), ==, 0);
  g_autoptr(NfOverlayBase) q = nf_overlay_base_inspect("mid.qcow2", NULL, &error);
  g_assert_cmpint(chdir(cwd), ==, 0);
  g_assert_no_error(error);
  g_autofree char *mid = g_build_filename(dir, "mid.qcow2", NULL);
  g_assert_cmpstr(q->path, ==, mid);
  g_assert_cmpstr(q->format, ==, "qcow2");
  g_assert_cmpuint(q->chain_length, ==, 2);
  g_assert_cmpstr(q->backing_file, ==, raw);

  /* Identity round trip through JSON. */
  g_autoptr(NfOverlayBaseId) id = nf_overlay_base_id_compute(b, &error);
  g_assert_no_error(error);
  g_assert_cmpuint(id->size, ==, 4 << 20);
  g_assert_cmpuint(strlen(id->sha256_head), ==, 64);
  g_autofree char *json = g_build_filename(dir, "id.json", NULL);
  g_assert_true(nf_overlay_base_id_save(id, json, &error));
  g_autoptr(NfOverlayBaseId) back = nf_overlay_base_id_load(json, &error);
  g_assert_no_error(error);
  g_assert_null(nf_overlay_base_id_diff(id, back));
  g_file_set_contents(json, "{\"version\": 1}", -1, NULL);
  g_assert_null(nf_overlay_base_id_load(json, &error));
  g_assert_error(error, NF_OVERLAY_ERROR, NF_OVERLAY_ERROR_RECORD);
  nf_test_tmpdir_cleanup(dir);
}

static void expect_base_error(const char *path, const char *format, int code, const char *needle)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(NfOverlayBase) b = nf_overlay_base_inspect(path, format, &error);
  g_assert_null(b);
  g_assert_error(error, NF_OVERLAY_ERROR, code);
  g_test_message("%s -> %s", path, error->message);
  g_assert_nonnull(strstr(error->message, path));
  if (needle && !strstr(error->message, needle))
    g_error("message for %s lacks \"%s\": %s", path, needle, error->message);
}

static void test_base_errors(void)
{
  g_autofree char *dir = nf_test_tmpdir_new();
  g_autofree char *missing = g_build_filename(dir, "missing.img", NULL);
  expect_base_error(missing, NULL, NF_OVERLAY_ERROR_BASE_MISSING, "No such file");
  expect_base_error(dir, NULL, NF_OVERLAY_ERROR_BASE_INVALID, "directory");

  g_autofree char *empty = g_build_filename(dir, "empty.img", NULL);
  g_file_set_contents(empty, "", 0, NULL);
  expect_base_error(empty, NULL, NF_OVERLAY_ERROR_BASE_INVALID, "empty");

  /* qemu-img info accepts a qcow2 cut short; check must catch it. */
  g_autofree char *full = g_build_filename(dir, "full.qcow2", NULL);
  g_autofree char *cut = g_build_filename(dir, "cut.qcow2", NULL);
  g_free(t_ok("qemu-img create -q -f qcow2 %s 64M && qemu-io -f qcow2 -c 'write -P 0xab 0 8M' %s "
              ">/dev/null && head -c 4000000 %s > %s",
              full, full, full, cut));
  expect_base_error(cut, NULL, NF_OVERLAY_ERROR_BASE_INVALID, "truncated");
  g_autoptr(NfOverlayBase) ok = nf_overlay_base_inspect(full, "qcow2", NULL);
  g_assert_nonnull(ok);

  /* Garbage named as qcow2 (qemu-img probes it as raw), and the reverse. */
  g_autofree char *text = g_build_filename(dir, "notes.txt", NULL);
  g_file_set_contents(text, "not a disk image\n", -1, NULL);
  expect_base_error(text, "qcow2", NF_OVERLAY_ERROR_FORMAT_MISMATCH, "it is raw");
  expect_base_error(full, "raw", NF_OVERLAY_ERROR_FORMAT_MISMATCH, "it is qcow2");

  g_autofree char *vmdk = g_build_filename(dir, "disk.vmdk", NULL);
  g_free(t_ok("qemu-img create -q -f vmdk %s 1M", vmdk));
  expect_base_error(vmdk, NULL, NF_OVERLAY_ERROR_BASE_INVALID, "qemu-img convert");

  g_autofree char *orphan = g_build_filename(dir, "orphan.qcow2", NULL);
  g_autofree char *gone = g_build_filename(dir, "gone.raw", NULL);
  g_free(t_ok("truncate -s 1M %s && qemu-img create -q -f qcow2 -F raw -b %s %s && rm %s", gone,
              gone, orphan, gone));
  expect_base_error(orphan, NULL, NF_OVERLAY_ERROR_BASE_MISSING, "backing chain");
  nf_test_tmpdir_cleanup(dir);
}

typedef struct {
  guint items, created, failed;
  GMainLoop *loop;
  GAsyncResult *result;
  GCancellable *cancel_after_first;
} Progress;

static void item_cb(guint index, const char *path, gboolean created, const GError *error,
                    gpointer data)
{
  Progress *p = data;
  p->items++;
  p->created += created;
  if (p->cancel_after_first)
    g_cancellable_cancel(p->cancel_after_first);
  if (error) {
    p->failed++;
    g_test_message("guest %u: %s", index, error->message);
  }
}

static void done_cb(GObject *source, GAsyncResult *res, gpointer data)
{
  Progress *p = data;
  p->result = g_object_ref(res);
  g_main_loop_quit(p->loop);
}

static void test_create_parallel(void)
{
  g_autofree char *dir = nf_test_tmpdir_new();
  g_autofree char *raw = t_raw_base(dir, "base.raw", "64M");
  g_autoptr(NfOverlayBase) base = nf_overlay_base_inspect(raw, NULL, NULL);
  g_autofree char *odir = g_build_filename(dir, "disks", NULL);
  g_autoptr(GError) error = NULL;
  g_assert_true(nf_overlay_check_base(odir, base, &error));
  g_auto(GStrv) paths = t_guest_paths(odir, 20);

  /* The async form, on the caller's own context. */
  g_autoptr(GMainContext) ctx = g_main_context_new();
  g_main_context_push_thread_default(ctx);
  Progress p = {.loop = g_main_loop_new(ctx, FALSE)};
  nf_overlay_ensure_async(base, (const char *const *)paths, 0, 4, NULL, item_cb, &p, done_cb, &p);
  g_main_loop_run(p.loop);
  guint created = 0;
  g_assert_true(nf_overlay_ensure_finish(p.result, &created, &error));
  g_assert_no_error(error);
  g_main_context_pop_thread_default(ctx);
  g_main_loop_unref(p.loop);
  g_object_unref(p.result);
  g_assert_cmpuint(p.items, ==, 20);
  g_assert_cmpuint(p.created, ==, 20);
  g_assert_cmpuint(created, ==, 20);
  for (guint i = 0; i < 20; i++)
    t_assert_overlay_of(paths[i], raw);
  g_assert_cmpuint(t_count_temps(odir), ==, 0);
  /* Most are copies of the first qemu-img output: qemu must find them sound. */
  g_free(t_ok("qemu-img check -q %s && qemu-io -f qcow2 -c 'write -P 7 0 1M' %s >/dev/null && "
              "qemu-img check -q %s",
              paths[19], paths[19], paths[19]));

  /* Second run: nothing to do, nothing touched. */
  g_autofree char *before = t_sha256_file(paths[7]);
  Progress q = {0};
  g_assert_true(nf_overlay_ensure_sync(base, (const char *const *)paths, 0, 8, item_cb, &q,
                                       &created, &error));
  g_assert_no_error(error);
  g_assert_cmpuint(created, ==, 0);
  g_assert_cmpuint(q.items, ==, 20);
  g_autofree char *after = t_sha256_file(paths[7]);
  g_assert_cmpstr(before, ==, after);

  /* Empty list: completes at once. */
  const char *none[] = {NULL};
  g_assert_true(nf_overlay_ensure_sync(base, none, 0, 2, NULL, NULL, &created, &error));
  g_assert_cmpuint(created, ==, 0);

  g_assert_true(nf_overlay_remove_all(odir, &error));
  g_assert_no_error(error);
  g_assert_false(g_file_test(odir, G_FILE_TEST_EXISTS));
  nf_test_tmpdir_cleanup(dir);
}

static void test_cancel(void)
{
  g_autofree char *dir = nf_test_tmpdir_new();
  g_autofree char *raw = t_raw_base(dir, "base.raw", "8M");
  g_autoptr(NfOverlayBase) base = nf_overlay_base_inspect(raw, NULL, NULL);
  g_auto(GStrv) paths = t_guest_paths(dir, 50);
  g_autoptr(GCancellable) cancel = g_cancellable_new();
  g_autoptr(GMainContext) ctx = g_main_context_new();
  g_main_context_push_thread_default(ctx);
  Progress p = {.loop = g_main_loop_new(ctx, FALSE), .cancel_after_first = cancel};
  nf_overlay_ensure_async(base, (const char *const *)paths, 0, 2, cancel, item_cb, &p, done_cb, &p);
  g_main_loop_run(p.loop);
  g_autoptr(GError) error = NULL;
  guint created = 0;
  g_assert_false(nf_overlay_ensure_finish(p.result, &created, &error));
  g_assert_error(error, G_IO_ERROR, G_IO_ERROR_CANCELLED);
  g_main_context_pop_thread_default(ctx);
  g_main_loop_unref(p.loop);
  g_object_unref(p.result);
  g_assert_cmpuint(created, >=, 1);
  g_assert_cmpuint(created, <, 50);
  g_assert_cmpuint(created, ==, p.created);
  g_assert_cmpuint(t_count_temps(dir), ==, 0);
  nf_test_tmpdir_cleanup(dir);
}

static void test_base_change(void)
{
  g_autofree char *dir = nf_test_tmpdir_new();
  g_autofree char *raw = t_raw_base(dir, "base.raw", "8M");
  g_autofree char *odir = g_build_filename(dir, "disks", NULL);
  g_autoptr(NfOverlayBase) base = nf_overlay_base_inspect(raw, NULL, NULL);
  g_autoptr(GError) error = NULL;
  g_assert_true(nf_overlay_check_base(odir, base, &error));
  g_auto(GStrv) paths = t_guest_paths(odir, 3);
  g_assert_true(
      nf_overlay_ensure_sync(base, (const char *const *)paths, 0, 0, NULL, NULL, NULL, &error));
  g_assert_true(nf_overlay_check_base(odir, base, &error));
  g_assert_no_error(error);

  /* Same size, one byte different in the first MiB. */
  g_free(t_ok("printf 'X' | dd of=%s bs=1 seek=4096 conv=notrunc 2>/dev/null", raw));
  g_assert_false(nf_overlay_check_base(odir, base, &error));
  g_assert_error(error, NF_OVERLAY_ERROR, NF_OVERLAY_ERROR_BASE_CHANGED);
  g_test_message("%s", error->message);
  g_assert_nonnull(strstr(error->message, raw));
  /* The way out is the caller's to name (disks.c: --reflash-all); this
   * once said `reflash all`, a verb for a fleet that could not start. */
  g_assert_nonnull(strstr(error->message, "recreate every guest's disk"));
  g_assert_null(strstr(error->message, "reflash all"));
  g_assert_nonnull(strstr(error->message, "first MiB"));
  g_clear_error(&error);

  /* Grown base: the size is named. */
  g_free(t_ok("truncate -s 16M %s", raw));
  g_assert_false(nf_overlay_check_base(odir, base, &error));
  g_assert_nonnull(strstr(error->message, "size 8388608 -> 16777216"));
  g_clear_error(&error);

  /* The way out: reflash all, then record. */
  g_autoptr(NfOverlayBase) base2 = nf_overlay_base_inspect(raw, NULL, NULL);
  guint created = 0;
  g_assert_true(nf_overlay_ensure_sync(base2, (const char *const *)paths, NF_OVERLAY_ENSURE_REPLACE,
                                       0, NULL, NULL, &created, &error));
  g_assert_cmpuint(created, ==, 3);
  g_assert_true(nf_overlay_record_base(odir, base2, &error));
  g_assert_true(nf_overlay_check_base(odir, base2, &error));
  g_assert_no_error(error);

  /* No overlays left: a changed base is simply recorded. */
  for (guint i = 0; i < 3; i++)
    g_assert_true(nf_overlay_remove(paths[i], NULL));
  g_free(t_ok("truncate -s 32M %s", raw));
  g_assert_true(nf_overlay_check_base(odir, base2, &error));
  g_assert_no_error(error);
  nf_test_tmpdir_cleanup(dir);
}

static void test_reflash_remove(void)
{
  g_autofree char *dir = nf_test_tmpdir_new();
  g_autofree char *raw = t_raw_base(dir, "base.raw", "8M");
  g_autoptr(NfOverlayBase) base = nf_overlay_base_inspect(raw, NULL, NULL);
  g_autofree char *ov = nf_overlay_path(dir, "g0");
  const char *paths[] = {ov, NULL};
  g_autoptr(GError) error = NULL;
  g_assert_true(nf_overlay_ensure_sync(base, paths, 0, 1, NULL, NULL, NULL, &error));
  g_free(t_ok("qemu-io -f qcow2 -c 'write -P 0x55 0 64k' %s >/dev/null", ov));
  guint8 buf[8];
  g_assert_true(nf_overlay_qcow2_pread(ov, buf, 8, 0, &error));
  g_assert_cmpuint(buf[0], ==, 0x55);

  g_assert_true(nf_overlay_reflash(base, ov, &error));
  g_assert_no_error(error);
  g_assert_true(nf_overlay_qcow2_pread(ov, buf, 8, 0, &error));
  g_assert_cmpmem(buf, 8, "BASEDATA", 8);
  t_assert_overlay_of(ov, raw);
  g_assert_cmpuint(t_count_temps(dir), ==, 0);

  /* A crash mid-creation leaves a temp: clean_temps removes it. */
  g_autofree char *stale = g_strconcat(ov, ".tmp-ABC123", NULL);
  g_file_set_contents(stale, "half", -1, NULL);
  g_assert_cmpuint(nf_overlay_clean_temps(dir), ==, 1);
  g_assert_true(nf_overlay_remove(ov, &error));
  g_assert_false(g_file_test(ov, G_FILE_TEST_EXISTS));
  g_assert_true(nf_overlay_remove(ov, &error)); /* absent is fine */
  g_assert_no_error(error);
  nf_test_tmpdir_cleanup(dir);
}

static void t_async_done_cb(GObject *source, GAsyncResult *res, gpointer data)
{
  *(GAsyncResult **)data = g_object_ref(res);
}

static gboolean t_have_result(gpointer data)
{
  return *(GAsyncResult **)data != NULL;
}

static void test_env_in_overlay(void)
{
  g_autofree char *dir = nf_test_tmpdir_new();
  g_autofree char *raw = t_raw_base(dir, "firmware.img", "1M");
  g_free(t_ok("cd %s && printf 'nerves_fw_active=a\\nupgrade_available=0\\n"
              "nerves_serial_number=NF-000000\\n' > env.txt && mkenvimage -s 0x20000 -o env.bin "
              "env.txt && dd if=env.bin of=firmware.img bs=512 seek=16 conv=notrunc 2>/dev/null",
              dir));
  g_autofree char *base_sum = t_sha256_file(raw);
  g_autoptr(NfOverlayBase) base = nf_overlay_base_inspect(raw, "raw", NULL);
  g_autofree char *ov = nf_overlay_path(dir, "g42");
  const char *paths[] = {ov, NULL};
  g_autoptr(GError) error = NULL;
  g_assert_true(nf_overlay_ensure_sync(base, paths, 0, 1, NULL, NULL, NULL, &error));

  NfOverlayEnvReader readers[] = {NF_OVERLAY_ENV_READ_NATIVE, NF_OVERLAY_ENV_READ_QEMU_IMG,
                                  NF_OVERLAY_ENV_READ_QEMU_IO, NF_OVERLAY_ENV_READ_AUTO};
  for (guint i = 0; i < G_N_ELEMENTS(readers); i++) {
    g_autoptr(NfUbootEnv) env = NULL;
    g_assert_true(nf_overlay_env_read_with(readers[i], ov, 0x2000, 0x20000, &env, &error));
    g_assert_no_error(error);
    g_assert_cmpstr(nf_ubootenv_get(env, "nerves_serial_number"), ==, "NF-000000");
  }

  g_assert_true(nf_overlay_env_set_serial(ov, "NF-000042", &error));
  g_assert_no_error(error);
  g_assert_true(nf_overlay_env_set(ov, 0x2000, 0x20000, "upgrade_available", NULL, FALSE, &error));
  for (guint i = 0; i < G_N_ELEMENTS(readers); i++) {
    g_autoptr(NfUbootEnv) env = NULL;
    g_assert_true(nf_overlay_env_read_with(readers[i], ov, 0x2000, 0x20000, &env, &error));
    g_assert_cmpstr(nf_ubootenv_get(env, "nerves_serial_number"), ==, "NF-000042");
    g_assert_cmpstr(nf_ubootenv_get(env, "nerves_fw_active"), ==, "a");
    g_assert_null(nf_ubootenv_get(env, "upgrade_available"));
  }
  /* The supervisor's form: qemu-io as a child fed from a memfd, completion
   * on the loop; a failure (no such overlay) arrives the same way. */
  {
    GAsyncResult *res = NULL;
    nf_overlay_env_set_serial_async(ov, "NF-000044", t_async_done_cb, &res);
    g_assert_true(nf_test_wait_for(t_have_result, &res, 60000));
    g_assert_true(nf_overlay_env_set_finish(res, &error));
    g_assert_no_error(error);
    g_clear_object(&res);
    g_autoptr(NfUbootEnv) env = NULL;
    g_assert_true(nf_overlay_env_read(ov, 0x2000, 0x20000, &env, &error));
    g_assert_cmpstr(nf_ubootenv_get(env, "nerves_serial_number"), ==, "NF-000044");
    g_assert_cmpstr(nf_ubootenv_get(env, "nerves_fw_active"), ==, "a");
    g_autofree char *missing = g_build_filename(dir, "missing.qcow2", NULL);
    nf_overlay_env_set_serial_async(missing, "NF-1", t_async_done_cb, &res);
    g_assert_true(nf_test_wait_for(t_have_result, &res, 60000));
    g_assert_false(nf_overlay_env_set_finish(res, &error));
    g_assert_nonnull(strstr(error->message, missing));
    g_clear_error(&error);
    g_clear_object(&res);
    g_assert_true(nf_overlay_env_set_serial(ov, "NF-000042", &error));
  }
  /* The cache: same object while the overlay is unchanged, fresh after a write. */
  g_autoptr(NfOverlayEnvCache) cache = nf_overlay_env_cache_new(0x2000, 0x20000);
  const NfUbootEnv *c1 = nf_overlay_env_cache_get(cache, ov, &error);
  g_assert_no_error(error);
  g_assert_true(nf_overlay_env_cache_get(cache, ov, NULL) == c1);
  g_assert_true(nf_overlay_env_set_serial(ov, "NF-000043", &error));
  const NfUbootEnv *c2 = nf_overlay_env_cache_get(cache, ov, &error);
  g_assert_cmpstr(nf_ubootenv_get(c2, "nerves_serial_number"), ==, "NF-000043");
  g_assert_true(nf_overlay_env_set_serial(ov, "NF-000042", &error));
  g_assert_cmpstr(
      nf_ubootenv_get(nf_overlay_env_cache_get(cache, ov, NULL), "nerves_serial_number"), ==,
      "NF-000042");
  g_autofree char *nowhere = g_build_filename(dir, "nowhere.qcow2", NULL);
  g_assert_null(nf_overlay_env_cache_get(cache, nowhere, &error));
  g_assert_error(error, G_FILE_ERROR, G_FILE_ERROR_NOENT);
  g_clear_error(&error);
  nf_overlay_env_cache_forget(cache, ov);

  g_autofree char *base_sum_after = t_sha256_file(raw);
  g_assert_cmpstr(base_sum, ==, base_sum_after);

  /* What the guest would see, checked by fw_printenv on a flattened copy. */
  g_autofree char *out = t_ok("cd %s && qemu-img convert -f qcow2 -O raw %s flat.raw && "
                              "echo \"$PWD/flat.raw 0x2000 0x20000\" > fw.cfg && "
                              "fw_printenv -c fw.cfg nerves_serial_number && rm flat.raw fw.cfg",
                              dir, ov);
  g_assert_cmpstr(out, ==, "nerves_serial_number=NF-000042\n");

  /* A disk without an env: bad CRC, naming the overlay; create_if_invalid
   * starts a fresh block. */
  g_autofree char *blank_raw = t_raw_base(dir, "blank.img", "1M");
  g_autoptr(NfOverlayBase) blank = nf_overlay_base_inspect(blank_raw, NULL, NULL);
  g_autofree char *ov2 = nf_overlay_path(dir, "blank");
  const char *paths2[] = {ov2, NULL};
  g_assert_true(nf_overlay_ensure_sync(blank, paths2, 0, 1, NULL, NULL, NULL, &error));
  g_autoptr(NfUbootEnv) none = NULL;
  g_assert_false(nf_overlay_env_read(ov2, 0x2000, 0x20000, &none, &error));
  g_assert_error(error, NF_UBOOTENV_ERROR, NF_UBOOTENV_ERROR_BAD_CRC);
  g_assert_nonnull(strstr(error->message, ov2));
  g_assert_null(none);
  g_clear_error(&error);
  g_assert_false(nf_overlay_env_set_serial(ov2, "NF-1", &error));
  g_clear_error(&error);
  g_assert_true(
      nf_overlay_env_set(ov2, 0x2000, 0x20000, "nerves_serial_number", "NF-1", TRUE, &error));
  g_assert_true(nf_overlay_env_read(ov2, 0x2000, 0x20000, &none, &error));
  g_assert_cmpstr(nf_ubootenv_get(none, "nerves_serial_number"), ==, "NF-1");
  g_assert_cmpuint(t_count_temps(dir), ==, 0);
  nf_test_tmpdir_cleanup(dir);
}

/* The in-process reader must see exactly what qemu sees: overlay over a
 * qcow2 over a raw base, partial-cluster writes, zero clusters, a range past
 * the raw base's end; compressed clusters are refused (and AUTO falls back). */
static void test_qcow2_reader(void)
{
  g_autofree char *dir = nf_test_tmpdir_new();
  g_free(t_ok("cd %s && truncate -s 3M base.raw && qemu-io -f raw -c 'write -P 0x11 0 3M' "
              "base.raw >/dev/null && truncate -s 4M base.raw && "
              "qemu-img create -q -f qcow2 -F raw -b %s/base.raw mid.qcow2 6M && "
              "qemu-io -f qcow2 -c 'write -P 0x22 100k 10k' -c 'write -z 1M 64k' mid.qcow2 "
              ">/dev/null && qemu-img create -q -f qcow2 -F qcow2 -b %s/mid.qcow2 top.qcow2 && "
              "qemu-io -f qcow2 -c 'write -P 0x33 105k 1k' -c 'write -P 0x44 2M 200k' top.qcow2 "
              ">/dev/null && qemu-img convert -f qcow2 -O raw top.qcow2 flat.raw",
              dir, dir, dir));
  g_autofree char *top = g_build_filename(dir, "top.qcow2", NULL);
  g_autofree char *flat = g_build_filename(dir, "flat.raw", NULL);
  g_autofree char *expect = NULL;
  gsize len = 0;
  g_assert_true(g_file_get_contents(flat, &expect, &len, NULL));
  g_assert_cmpuint(len, ==, 6 << 20); /* the last 2 MiB are past the raw base's end */
  g_autofree guint8 *got = g_malloc(len);
  g_autoptr(GError) error = NULL;
  g_assert_true(nf_overlay_qcow2_pread(top, got, len, 0, &error));
  g_assert_no_error(error);
  g_assert_cmpmem(got, len, expect, len);
  g_assert_true(nf_overlay_qcow2_pread(top, got, 5000, 104 * 1024 + 7, &error));
  g_assert_cmpmem(got, 5000, expect + 104 * 1024 + 7, 5000);
  g_assert_false(nf_overlay_qcow2_pread(top, got, 2, len - 1, &error));
  g_assert_error(error, NF_OVERLAY_ERROR, NF_OVERLAY_ERROR_BASE_INVALID);
  g_clear_error(&error);

  /* A compressed cluster where the env block lives. */
  g_autofree char *env_raw = t_raw_base(dir, "fw.img", "1M");
  g_free(t_ok("cd %s && printf 'nerves_serial_number=NF-9\n' | mkenvimage -s 0x20000 -o e.bin - "
              "&& qemu-img create -q -f qcow2 -F raw -b %s c.qcow2 && qemu-io -f qcow2 -c "
              "'write -c -s e.bin 0 0x20000' c.qcow2 >/dev/null && rm e.bin",
              dir, env_raw));
  g_autofree char *c = g_build_filename(dir, "c.qcow2", NULL);
  g_autoptr(NfUbootEnv) env = NULL;
  g_assert_false(nf_overlay_env_read_with(NF_OVERLAY_ENV_READ_NATIVE, c, 0, 0x20000, &env, &error));
  g_assert_error(error, NF_OVERLAY_ERROR, NF_OVERLAY_ERROR_UNSUPPORTED);
  g_clear_error(&error);
  g_assert_true(nf_overlay_env_read(c, 0, 0x20000, &env, &error));
  g_assert_no_error(error);
  g_assert_cmpstr(nf_ubootenv_get(env, "nerves_serial_number"), ==, "NF-9");
  nf_test_tmpdir_cleanup(dir);
}

static void test_enotdir(void)
{
  g_autofree char *dir = nf_test_tmpdir_new();
  g_autofree char *raw = t_raw_base(dir, "base.raw", "8M");
  g_autoptr(NfOverlayBase) base = nf_overlay_base_inspect(raw, NULL, NULL);
  g_autofree char *file = g_build_filename(dir, "afile", NULL);
  g_file_set_contents(file, "x", -1, NULL);
  g_autofree char *good = nf_overlay_path(dir, "good");
  g_autofree char *bad = nf_overlay_path(file, "g0");
  const char *paths[] = {good, bad, NULL};
  Progress p = {0};
  g_autoptr(GError) error = NULL;
  guint created = 0;
  g_assert_false(nf_overlay_ensure_sync(base, paths, 0, 2, item_cb, &p, &created, &error));
  g_assert_error(error, NF_OVERLAY_ERROR, NF_OVERLAY_ERROR_IO);
  g_assert_nonnull(strstr(error->message, bad));
  g_assert_nonnull(strstr(error->message, "Not a directory"));
  g_assert_cmpuint(created, ==, 1); /* the other guest is unaffected */
  g_assert_cmpuint(p.failed, ==, 1);
  t_assert_overlay_of(good, raw);
  g_assert_cmpuint(t_count_temps(dir), ==, 0);
  g_clear_error(&error);
  g_assert_false(nf_overlay_check_base(bad, base, &error));
  g_assert_error(error, NF_OVERLAY_ERROR, NF_OVERLAY_ERROR_IO);
  nf_test_tmpdir_cleanup(dir);
}

/* A tiny tmpfs: one overlay (196 KiB) fits in 256 KiB, the next ones do not. */
static void test_disk_full_and_readonly(void)
{
  g_autofree char *dir = nf_test_tmpdir_new();
  g_autofree char *raw = t_raw_base(dir, "base.raw", "64M");
  g_autoptr(NfOverlayBase) base = nf_overlay_base_inspect(raw, NULL, NULL);
  g_autofree char *mnt = g_build_filename(dir, "small", NULL);
  g_mkdir(mnt, 0700);
  if (mount("tmpfs", mnt, "tmpfs", 0, "size=256k") < 0) {
    g_test_skip("cannot mount a tmpfs (needs root)");
    nf_test_tmpdir_cleanup(dir);
    return;
  }
  g_autoptr(GError) error = NULL;
  g_auto(GStrv) paths = t_guest_paths(mnt, 4);
  const char *first[] = {paths[0], NULL};
  g_assert_true(nf_overlay_ensure_sync(base, first, 0, 1, NULL, NULL, NULL, &error));
  g_autofree char *sum = t_sha256_file(paths[0]);
  guint created = 0;
  Progress p = {0};
  g_assert_false(nf_overlay_ensure_sync(base, (const char *const *)paths + 1, 0, 3, item_cb, &p,
                                        &created, &error));
  g_test_message("%s", error->message);
  g_assert_error(error, NF_OVERLAY_ERROR, NF_OVERLAY_ERROR_TOOL);
  g_assert_nonnull(strstr(error->message, "No space left on device"));
  g_assert_nonnull(strstr(error->message, "3 of 3 overlays failed"));
  g_assert_cmpuint(created, ==, 0);
  g_assert_cmpuint(t_count_temps(mnt), ==, 0);
  for (guint i = 1; i < 4; i++)
    g_assert_false(g_file_test(paths[i], G_FILE_TEST_EXISTS));
  g_autofree char *sum_after = t_sha256_file(paths[0]);
  g_assert_cmpstr(sum, ==, sum_after);
  g_clear_error(&error);

  /* Read-only: root is not stopped by modes, but is by a read-only mount. */
  g_assert_cmpint(mount("tmpfs", mnt, "tmpfs", MS_REMOUNT | MS_RDONLY, "size=256k"), ==, 0);
  g_assert_false(nf_overlay_ensure_sync(base, (const char *const *)paths + 1, 0, 3, NULL, NULL,
                                        &created, &error));
  g_assert_error(error, NF_OVERLAY_ERROR, NF_OVERLAY_ERROR_IO);
  g_assert_nonnull(strstr(error->message, "Read-only file system"));
  g_clear_error(&error);
  g_assert_false(nf_overlay_reflash(base, paths[0], NULL));
  g_autofree char *sum_ro = t_sha256_file(paths[0]);
  g_assert_cmpstr(sum, ==, sum_ro);
  g_assert_cmpuint(t_count_temps(mnt), ==, 0);
  g_assert_cmpint(umount(mnt), ==, 0);

  /* Full while copying the first overlay (49 pages each, 128 in all): two
   * fit, the other two fail cleanly. Which two depends on the order in
   * which the worker threads' copies hit the limit. */
  g_assert_cmpint(mount("tmpfs", mnt, "tmpfs", 0, "size=512k"), ==, 0);
  Progress q = {0};
  g_assert_false(nf_overlay_ensure_sync(base, (const char *const *)paths, 0, 2, item_cb, &q,
                                        &created, &error));
  g_test_message("%s", error->message);
  g_assert_error(error, NF_OVERLAY_ERROR, NF_OVERLAY_ERROR_IO);
  g_assert_nonnull(strstr(error->message, "No space left on device"));
  g_assert_cmpuint(created, ==, 2);
  g_assert_cmpuint(q.failed, ==, 2);
  g_assert_cmpuint(t_count_temps(mnt), ==, 0);
  guint present = 0;
  for (guint i = 0; i < 4; i++)
    if (g_file_test(paths[i], G_FILE_TEST_EXISTS)) {
      present++;
      g_free(t_ok("qemu-img check -q %s", paths[i]));
    }
  g_assert_cmpuint(present, ==, 2);
  g_assert_cmpint(umount(mnt), ==, 0);
  nf_test_tmpdir_cleanup(dir);
}

/* Found by tests/fuzz/fuzz-qcow2.c: a header refused for its cluster size
 * (cluster_bits 320) still had 1 << cluster_bits computed, undefined
 * behaviour that UBSan (make check's build) aborts on. A clean error now. */
static void test_qcow2_bad_cluster_bits(void)
{
  g_autofree char *dir = nf_test_tmpdir_new();
  g_autofree char *path = g_build_filename(dir, "bad.qcow2", NULL);
  guint8 h[512] = {0x51, 0x46, 0x49, 0xfb, 0, 0, 0, 2};
  h[22] = 0x01;
  h[23] = 0x40;
  h[31] = 0x10; /* size 4 KiB */
  g_assert_true(g_file_set_contents(path, (const char *)h, sizeof h, NULL));
  guint8 buf[16];
  g_autoptr(GError) error = NULL;
  g_assert_false(nf_overlay_qcow2_pread(path, buf, sizeof buf, 0, &error));
  g_assert_error(error, NF_OVERLAY_ERROR, NF_OVERLAY_ERROR_UNSUPPORTED);
  nf_test_tmpdir_cleanup(dir);
}

/* A backing file name longer than qemu allows (1023 bytes) is refused, not
 * read as "no backing file": that read the overlay's unallocated clusters
 * as zeros instead of the base's data. */
static void test_qcow2_long_backing_name(void)
{
  g_autofree char *dir = nf_test_tmpdir_new();
  g_autofree char *raw = t_raw_base(dir, "base.img", "1M");
  g_autofree char *path = g_build_filename(dir, "long.qcow2", NULL);
  g_free(t_ok("qemu-img create -q -f qcow2 -F raw -b %s %s", raw, path));
  /* backing_file_size (header bytes 16-19) = 5000 */
  g_free(
      t_ok("printf '\\000\\000\\023\\210' | dd of=%s bs=1 seek=16 conv=notrunc 2>/dev/null", path));
  guint8 buf[16];
  g_autoptr(GError) error = NULL;
  g_assert_false(nf_overlay_qcow2_pread(path, buf, sizeof buf, 0, &error));
  g_assert_error(error, NF_OVERLAY_ERROR, NF_OVERLAY_ERROR_UNSUPPORTED);
  g_assert_nonnull(strstr(error->message, "5000 bytes"));
  nf_test_tmpdir_cleanup(dir);
}

int main(int argc, char **argv)
{
  /* Our own mount namespace (before any thread exists): the tmpfs mounts of
   * the disk-full test vanish with this process even if an assertion aborts
   * it. Without the privilege, that test skips. */
  if (unshare(CLONE_NEWNS) == 0)
    mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL);
  /* A private TMPDIR, set before GLib caches it, so that temps the library
   * makes (env blocks) can be proven gone. */
  char root[] = "/tmp/nf-test-root-XXXXXX";
  g_assert_nonnull(mkdtemp(root));
  g_setenv("TMPDIR", root, TRUE);
  nf_test_abort_cleanup_add(root); /* a failed assertion removes it too */
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/overlay/base/valid", test_base_valid);
  g_test_add_func("/overlay/base/errors", test_base_errors);
  g_test_add_func("/overlay/create/parallel-idempotent", test_create_parallel);
  g_test_add_func("/overlay/create/cancel", test_cancel);
  g_test_add_func("/overlay/base-change", test_base_change);
  g_test_add_func("/overlay/reflash-remove", test_reflash_remove);
  g_test_add_func("/overlay/env", test_env_in_overlay);
  g_test_add_func("/overlay/qcow2-reader", test_qcow2_reader);
  g_test_add_func("/overlay/qcow2-bad-cluster-bits", test_qcow2_bad_cluster_bits);
  g_test_add_func("/overlay/qcow2-long-backing-name", test_qcow2_long_backing_name);
  g_test_add_func("/overlay/failure/enotdir", test_enotdir);
  g_test_add_func("/overlay/failure/disk-full-readonly", test_disk_full_and_readonly);
  int rc = g_test_run();
  nf_test_abort_cleanup_remove(root);
  g_assert_cmpint(rmdir(root), ==, 0); /* fails if anything was left behind */
  return rc;
}
