/*
 * test-boot-image-unit.c: supervisor/boot-image.c on the boot.elf that
 * guest/build-guest.sh wrote into the built guest (NF_GUEST_DIR). It is
 * used for that guest's own vmlinuz and initrd.gz, names its initrd's
 * place and size; and it is not used, so the guest boots from the files
 * as given, when any of them is not what the ELF carries: another file
 * name, an initrd of another size or written after the ELF, a file that
 * is not such an ELF, RAM too small to hold the initrd.
 */
#include <string.h>
#include <utime.h>
#include <glib/gstdio.h>

#include "supervisor/boot-image.h"
#include "tests/lib/nf-test.h"

static char *tmp;

/* In dir: vmlinuz and boot.elf as symlinks to the built guest's, and
 * initrd.gz a copy (with `extra` bytes appended). */
static char *guest_copy(const char *name, const char *extra)
{
  g_autofree char *kernel = nf_test_guest_kernel();
  g_autofree char *initrd = nf_test_guest_initrd();
  g_autofree char *gdir = g_path_get_dirname(kernel);
  char *dir = g_build_filename(tmp, name, NULL);
  g_assert_cmpint(g_mkdir_with_parents(dir, 0755), ==, 0);
  g_autofree char *k = g_build_filename(dir, "vmlinuz", NULL);
  g_autofree char *e = g_build_filename(dir, NF_BOOT_IMAGE_NAME, NULL);
  g_autofree char *ge = g_build_filename(gdir, NF_BOOT_IMAGE_NAME, NULL);
  g_assert_cmpint(symlink(kernel, k), ==, 0);
  g_assert_cmpint(symlink(ge, e), ==, 0);
  g_autofree char *data = NULL;
  gsize len = 0;
  g_assert_true(g_file_get_contents(initrd, &data, &len, NULL));
  g_autoptr(GString) copy = g_string_new_len(data, (gssize)len);
  g_string_append(copy, extra);
  g_autofree char *i = g_build_filename(dir, "initrd.gz", NULL);
  g_assert_true(g_file_set_contents(i, copy->str, (gssize)copy->len, NULL));
  /* As old as the ELF (the ELF must not be older than what it carries). */
  GStatBuf st;
  g_assert_cmpint(g_stat(ge, &st), ==, 0);
  struct utimbuf t = {.actime = st.st_mtime, .modtime = st.st_mtime};
  g_assert_cmpint(utime(i, &t), ==, 0);
  return dir;
}

static gboolean find_in(const char *dir, guint64 memory_mib, char **elf, char **arg)
{
  g_autofree char *k = g_build_filename(dir, "vmlinuz", NULL);
  g_autofree char *i = g_build_filename(dir, "initrd.gz", NULL);
  return nf_boot_image_find(k, i, memory_mib, elf, arg);
}

static void test_built_guest(void)
{
  g_autofree char *kernel = nf_test_guest_kernel();
  g_autofree char *initrd = nf_test_guest_initrd();
  g_autofree char *elf = NULL, *arg = NULL;
  g_assert_true(nf_boot_image_find(kernel, initrd, 128, &elf, &arg));
  g_autofree char *dir = g_path_get_dirname(kernel);
  g_autofree char *want = g_build_filename(dir, NF_BOOT_IMAGE_NAME, NULL);
  g_assert_cmpstr(elf, ==, want);
  GStatBuf st;
  g_assert_cmpint(g_stat(initrd, &st), ==, 0);
  /* Past the kernel, 2 MiB aligned, the initrd's own size. */
  guint64 addr = 0, size = 0;
  g_assert_cmpint(sscanf(arg, "initrd=0x%" G_GINT64_MODIFIER "x,%" G_GUINT64_FORMAT, &addr, &size),
                  ==, 2);
  g_assert_cmpuint(size, ==, (guint64)st.st_size);
  g_assert_cmpuint(addr % (2 << 20), ==, 0);
  g_assert_cmpuint(addr, >, NF_BOOT_IMAGE_KERNEL);
  /* The same files under other names: not the built guest's. */
  g_autofree char *other = g_build_filename(tmp, "Image", NULL);
  g_assert_cmpint(symlink(kernel, other), ==, 0);
  g_autofree char *e2 = NULL, *a2 = NULL;
  g_assert_false(nf_boot_image_find(other, initrd, 128, &e2, &a2));
  g_assert_false(nf_boot_image_find(kernel, NULL, 128, &e2, &a2));
  g_assert_null(e2);
}

static void test_copies(void)
{
  g_autofree char *elf = NULL, *arg = NULL;
  g_autofree char *same = guest_copy("same", "");
  g_assert_true(find_in(same, 128, &elf, &arg));
  g_clear_pointer(&elf, g_free);
  g_clear_pointer(&arg, g_free);
  /* Too little RAM to hold the initrd where the ELF puts it. */
  g_assert_false(find_in(same, 32, &elf, &arg));
  /* Another initrd (one byte more). */
  g_autofree char *bigger = guest_copy("bigger", "x");
  g_assert_false(find_in(bigger, 128, &elf, &arg));
  /* The same bytes, written after the ELF. */
  g_autofree char *newer = guest_copy("newer", "");
  g_autofree char *ni = g_build_filename(newer, "initrd.gz", NULL);
  GStatBuf st;
  g_assert_cmpint(g_stat(ni, &st), ==, 0);
  struct utimbuf t = {.actime = st.st_mtime + 10, .modtime = st.st_mtime + 10};
  g_assert_cmpint(utime(ni, &t), ==, 0);
  g_assert_false(find_in(newer, 128, &elf, &arg));
  /* A boot.elf that is not ours: not an ELF, or a cut one. */
  g_autofree char *junk = guest_copy("junk", "");
  g_autofree char *je = g_build_filename(junk, NF_BOOT_IMAGE_NAME, NULL);
  g_assert_cmpint(g_unlink(je), ==, 0);
  g_assert_true(g_file_set_contents(je, "not an ELF", -1, NULL));
  g_assert_cmpint(g_stat(ni, &st), ==, 0);
  t = (struct utimbuf){.actime = st.st_mtime + 20, .modtime = st.st_mtime + 20};
  g_assert_cmpint(utime(je, &t), ==, 0);
  g_assert_false(find_in(junk, 128, &elf, &arg));
  g_autofree char *cut = guest_copy("cut", "");
  g_autofree char *ce = g_build_filename(cut, NF_BOOT_IMAGE_NAME, NULL);
  g_autofree char *head = NULL;
  gsize len = 0;
  g_assert_true(g_file_get_contents(ce, &head, &len, NULL));
  g_assert_cmpint(g_unlink(ce), ==, 0);
  g_assert_true(g_file_set_contents(ce, head, 4096, NULL));
  g_assert_cmpint(utime(ce, &t), ==, 0);
  g_assert_false(find_in(cut, 128, &elf, &arg));
  g_assert_null(elf);
  g_assert_null(arg);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  tmp = nf_test_tmpdir_new();
  g_test_add_func("/boot-image/built-guest", test_built_guest);
  g_test_add_func("/boot-image/copies", test_copies);
  int rc = g_test_run();
  nf_test_tmpdir_cleanup(tmp);
  g_free(tmp);
  return rc;
}
