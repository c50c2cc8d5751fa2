/*
 * test-ubootenv-unit: guards the U-Boot env codec against the real tools a
 * Nerves device and its developers use: our blocks must be byte-identical to
 * mkenvimage's, readable by fw_printenv, and we must read what fw_setenv
 * writes; a corrupt block must be refused naming where it came from.
 */
#include <glib.h>
#include <glib/gstdio.h>
#include <string.h>

#include "overlay/ubootenv.h"

static char *t_tmpdir;

static char *t_sh(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
static char *t_read(const char *name, gsize *len);
static char *t_path(const char *name);

/* Runs a shell command, asserts it exits 0, returns its stdout. */
static char *t_sh(const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  g_autofree char *cmd = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  const char *argv[] = {"/bin/sh", "-c", cmd, NULL};
  char *out = NULL;
  g_autofree char *err = NULL;
  int status = 0;
  g_autoptr(GError) error = NULL;
  g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_DEFAULT, NULL, NULL, &out, &err, &status, &error);
  g_assert_no_error(error);
  if (!g_spawn_check_wait_status(status, NULL))
    g_error("command failed: %s\n%s", cmd, err);
  return out;
}

static char *t_path(const char *name)
{
  return g_build_filename(t_tmpdir, name, NULL);
}

static char *t_read(const char *name, gsize *len)
{
  g_autofree char *p = t_path(name);
  char *data = NULL;
  g_autoptr(GError) error = NULL;
  g_file_get_contents(p, &data, len, &error);
  g_assert_no_error(error);
  return data;
}

static const char *const sample_env = "nerves_fw_active=a\n"
                                      "a.nerves_fw_version=1.2.3\n"
                                      "b.nerves_fw_version=\n"
                                      "bootargs=console=ttyAMA0 root=/dev/vda2 rootwait\n"
                                      "upgrade_available=0\n"
                                      "bootcount=1\n"
                                      "nerves_serial_number=NF-000001\n";

static void test_crc32(void)
{
  g_assert_cmphex(nf_ubootenv_crc32((const guint8 *)"123456789", 9), ==, 0xcbf43926);
}

static void test_matches_mkenvimage(void)
{
  g_autofree char *txt = t_path("env.txt");
  g_file_set_contents(txt, sample_env, -1, NULL);
  g_free(t_sh("mkenvimage -s 0x20000 -o %s/mk.bin %s", t_tmpdir, txt));
  gsize mk_len = 0;
  g_autofree guint8 *mk = (guint8 *)t_read("mk.bin", &mk_len);
  g_assert_cmpuint(mk_len, ==, NF_UBOOTENV_DEFAULT_SIZE);

  /* Built from scratch, in the same order: the same bytes. */
  g_autoptr(NfUbootEnv) env = nf_ubootenv_new(NF_UBOOTENV_DEFAULT_SIZE);
  g_auto(GStrv) lines = g_strsplit(sample_env, "\n", -1);
  for (char **l = lines; *l && **l; l++) {
    char *eq = strchr(*l, '=');
    *eq = '\0';
    g_assert_true(nf_ubootenv_set(env, *l, eq + 1, NULL));
  }
  gsize len = 0;
  g_autofree guint8 *ours = nf_ubootenv_serialize(env, &len, NULL);
  g_assert_cmpmem(ours, len, mk, mk_len);

  /* Parsed and re-serialized: the same bytes, the same order. */
  g_autoptr(GError) error = NULL;
  g_autoptr(NfUbootEnv) parsed = nf_ubootenv_parse(mk, mk_len, "mk.bin", &error);
  g_assert_no_error(error);
  g_assert_cmpstr(nf_ubootenv_get(parsed, "bootargs"), ==,
                  "console=ttyAMA0 root=/dev/vda2 rootwait");
  g_assert_cmpstr(nf_ubootenv_get(parsed, "b.nerves_fw_version"), ==, "");
  g_assert_null(nf_ubootenv_get(parsed, "missing"));
  g_auto(GStrv) keys = nf_ubootenv_keys(parsed);
  g_assert_cmpuint(g_strv_length(keys), ==, 7);
  g_assert_cmpstr(keys[0], ==, "nerves_fw_active");
  g_autofree guint8 *again = nf_ubootenv_serialize(parsed, &len, NULL);
  g_assert_cmpmem(again, len, mk, mk_len);

  /* Empty env. */
  g_free(t_sh("printf '' | mkenvimage -s 0x1000 -o %s/empty.bin -", t_tmpdir));
  g_autofree guint8 *mk_empty = (guint8 *)t_read("empty.bin", &mk_len);
  g_autoptr(NfUbootEnv) empty = nf_ubootenv_new(0x1000);
  g_autofree guint8 *ours_empty = nf_ubootenv_serialize(empty, &len, NULL);
  g_assert_cmpmem(ours_empty, len, mk_empty, mk_len);
}

static void test_fw_printenv_reads_ours(void)
{
  g_autoptr(NfUbootEnv) env = nf_ubootenv_new(NF_UBOOTENV_DEFAULT_SIZE);
  g_assert_true(nf_ubootenv_set(env, "nerves_serial_number", "NF-000042", NULL));
  g_assert_true(nf_ubootenv_set(env, "nerves_fw_active", "b", NULL));
  g_assert_true(nf_ubootenv_set(env, "spaced", "a b  c", NULL));
  /* At offset 0x2000 of a disk image, as on a Nerves disk. */
  g_autofree char *disk = t_path("disk.img");
  g_free(t_sh("truncate -s 1M %s", disk));
  g_autoptr(GError) error = NULL;
  g_assert_true(nf_ubootenv_save_file(env, disk, NF_UBOOTENV_DEFAULT_OFFSET, &error));
  g_assert_no_error(error);
  g_autofree char *cfg = t_path("fw_env.config");
  g_autofree char *cfg_text = g_strdup_printf("%s 0x2000 0x20000\n", disk);
  g_file_set_contents(cfg, cfg_text, -1, NULL);
  g_autofree char *out = t_sh("fw_printenv -c %s", cfg);
  g_assert_cmpstr(out, ==, "nerves_fw_active=b\nnerves_serial_number=NF-000042\nspaced=a b  c\n");

  /* And we read what fw_setenv writes (sorted, zero padding), byte-exact. */
  g_free(t_sh("fw_setenv -c %s upgrade_available 1 && fw_setenv -c %s spaced", cfg, cfg));
  g_autoptr(NfUbootEnv) back =
      nf_ubootenv_load_file(disk, NF_UBOOTENV_DEFAULT_OFFSET, NF_UBOOTENV_DEFAULT_SIZE, &error);
  g_assert_no_error(error);
  g_assert_cmpstr(nf_ubootenv_get(back, "upgrade_available"), ==, "1");
  g_assert_cmpstr(nf_ubootenv_get(back, "nerves_serial_number"), ==, "NF-000042");
  g_assert_null(nf_ubootenv_get(back, "spaced"));
  gsize disk_len = 0, len = 0;
  g_autofree guint8 *disk_bytes = (guint8 *)t_read("disk.img", &disk_len);
  g_autofree guint8 *re = nf_ubootenv_serialize(back, &len, NULL);
  g_assert_cmpmem(re, len, disk_bytes + NF_UBOOTENV_DEFAULT_OFFSET, NF_UBOOTENV_DEFAULT_SIZE);
}

static void test_bad_crc(void)
{
  g_autoptr(NfUbootEnv) env = nf_ubootenv_new(0x1000);
  g_assert_true(nf_ubootenv_set(env, "k", "v", NULL));
  g_autofree char *file = t_path("bad.bin");
  g_free(t_sh("truncate -s 4096 %s", file));
  g_assert_true(nf_ubootenv_save_file(env, file, 0, NULL));
  g_free(t_sh("printf 'X' | dd of=%s bs=1 seek=5 conv=notrunc 2>/dev/null", file));
  g_autoptr(GError) error = NULL;
  g_autoptr(NfUbootEnv) bad = nf_ubootenv_load_file(file, 0, 0x1000, &error);
  g_assert_null(bad);
  g_assert_error(error, NF_UBOOTENV_ERROR, NF_UBOOTENV_ERROR_BAD_CRC);
  g_assert_nonnull(strstr(error->message, file));
  g_clear_error(&error);

  /* An unwritten (all-zero) region, and a file too short for the block. */
  g_autofree char *zero = t_path("zero.bin");
  g_free(t_sh("truncate -s 8192 %s", zero));
  g_assert_null(nf_ubootenv_load_file(zero, 0, 0x1000, &error));
  g_assert_error(error, NF_UBOOTENV_ERROR, NF_UBOOTENV_ERROR_BAD_CRC);
  g_clear_error(&error);
  g_assert_null(nf_ubootenv_load_file(zero, 0x1800, 0x1000, &error));
  g_assert_error(error, NF_UBOOTENV_ERROR, NF_UBOOTENV_ERROR_INVALID);
  g_clear_error(&error);
  g_autofree char *missing = t_path("missing.bin");
  g_assert_null(nf_ubootenv_load_file(missing, 0, 0x1000, &error));
  g_assert_error(error, G_FILE_ERROR, G_FILE_ERROR_NOENT);
}

static void test_edit_and_limits(void)
{
  g_autoptr(NfUbootEnv) env = nf_ubootenv_new(64);
  g_autoptr(GError) error = NULL;
  g_assert_false(nf_ubootenv_set(env, "a=b", "x", &error));
  g_assert_error(error, NF_UBOOTENV_ERROR, NF_UBOOTENV_ERROR_INVALID);
  g_clear_error(&error);
  g_assert_false(nf_ubootenv_set(env, "", "x", &error));
  g_assert_error(error, NF_UBOOTENV_ERROR, NF_UBOOTENV_ERROR_INVALID);
  g_clear_error(&error);

  g_assert_true(nf_ubootenv_set(env, "a", "1", NULL));
  g_assert_true(nf_ubootenv_set(env, "b", "2", NULL));
  g_assert_true(nf_ubootenv_set(env, "a", "3", NULL)); /* replaced in place */
  g_auto(GStrv) keys = nf_ubootenv_keys(env);
  g_assert_cmpstr(keys[0], ==, "a");
  g_assert_cmpstr(nf_ubootenv_get(env, "a"), ==, "3");
  g_assert_true(nf_ubootenv_unset(env, "a"));
  g_assert_false(nf_ubootenv_unset(env, "a"));

  /* 4 CRC + "b=2\0" + "x=" + 53 + "\0" + final "\0" = 65 > 64; with 52 it fills 64. */
  g_assert_true(
      nf_ubootenv_set(env, "x", "01234567890123456789012345678901234567890123456789012", NULL));
  g_assert_null(nf_ubootenv_serialize(env, NULL, &error));
  g_assert_error(error, NF_UBOOTENV_ERROR, NF_UBOOTENV_ERROR_TOO_LARGE);
  g_clear_error(&error);
  g_assert_true(
      nf_ubootenv_set(env, "x", "0123456789012345678901234567890123456789012345678901", NULL));
  gsize len = 0;
  g_autofree guint8 *block = nf_ubootenv_serialize(env, &len, &error);
  g_assert_no_error(error);
  g_autoptr(NfUbootEnv) back = nf_ubootenv_parse(block, len, "test", &error);
  g_assert_no_error(error);
  g_assert_cmpstr(nf_ubootenv_get(back, "b"), ==, "2");

  /* Entries without '=' and a list running off the end are refused. */
  guint8 raw[16] = {0, 0, 0, 0, 'a', 'b', 'c', 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
  guint32 crc = nf_ubootenv_crc32(raw + 4, sizeof raw - 4);
  memcpy(raw, &crc, 4); /* little endian host */
  g_assert_null(nf_ubootenv_parse(raw, sizeof raw, "noeq", &error));
  g_assert_error(error, NF_UBOOTENV_ERROR, NF_UBOOTENV_ERROR_INVALID);
  g_clear_error(&error);
  memset(raw + 4, 'z', sizeof raw - 4);
  raw[5] = '=';
  crc = nf_ubootenv_crc32(raw + 4, sizeof raw - 4);
  memcpy(raw, &crc, 4);
  g_assert_null(nf_ubootenv_parse(raw, sizeof raw, "unterminated", &error));
  g_assert_error(error, NF_UBOOTENV_ERROR, NF_UBOOTENV_ERROR_INVALID);
}

/* Found by tests/fuzz/fuzz-ubootenv.c: a block whose last variable ends on
 * its last byte (no empty string after it) was accepted, and the env could
 * then not be written back ("do not fit") even unchanged. It is refused. */
static void test_no_final_empty_string(void)
{
  guint8 raw[12] = {0, 0, 0, 0, 'a', '=', 'b', 0, 'c', '=', 'd', 0};
  guint32 crc = nf_ubootenv_crc32(raw + 4, sizeof raw - 4);
  memcpy(raw, &crc, 4); /* little endian host */
  g_autoptr(GError) error = NULL;
  g_autoptr(NfUbootEnv) env = nf_ubootenv_parse(raw, sizeof raw, "full", &error);
  g_assert_null(env);
  g_assert_error(error, NF_UBOOTENV_ERROR, NF_UBOOTENV_ERROR_INVALID);
  g_assert_nonnull(strstr(error->message, "unterminated"));
  /* One byte more for the empty string: read, and written back the same. */
  guint8 ok[13] = {0, 0, 0, 0, 'a', '=', 'b', 0, 'c', '=', 'd', 0, 0};
  crc = nf_ubootenv_crc32(ok + 4, sizeof ok - 4);
  memcpy(ok, &crc, 4);
  g_autoptr(NfUbootEnv) env2 = nf_ubootenv_parse(ok, sizeof ok, "exact", NULL);
  g_assert_nonnull(env2);
  gsize len = 0;
  g_autofree guint8 *out = nf_ubootenv_serialize(env2, &len, NULL);
  g_assert_nonnull(out);
  g_assert_cmpmem(out, len, ok, sizeof ok);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  t_tmpdir = g_dir_make_tmp("nf-test-XXXXXX", NULL);
  g_assert_nonnull(t_tmpdir);
  g_test_add_func("/ubootenv/crc32", test_crc32);
  g_test_add_func("/ubootenv/matches-mkenvimage", test_matches_mkenvimage);
  g_test_add_func("/ubootenv/fw-printenv-interop", test_fw_printenv_reads_ours);
  g_test_add_func("/ubootenv/bad-crc", test_bad_crc);
  g_test_add_func("/ubootenv/edit-and-limits", test_edit_and_limits);
  g_test_add_func("/ubootenv/no-final-empty-string", test_no_final_empty_string);
  int rc = g_test_run();
  g_free(t_sh("rm -rf %s", t_tmpdir));
  g_assert_false(g_file_test(t_tmpdir, G_FILE_TEST_EXISTS));
  g_free(t_tmpdir);
  return rc;
}
