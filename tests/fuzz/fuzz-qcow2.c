/*
 * fuzz-qcow2.c: libFuzzer target for the qcow2 header/L1/L2 reader
 * (overlay/qcow2.c): images come from users and from guests that wrote
 * them. The input is written to a file in a private directory next to a
 * small raw "base" (a backing file name the seeds use), then read at a few
 * offsets and lengths derived from the input. Only memory safety and a
 * clean error are checked: any answer is fine for a broken image.
 */
#include "overlay/qcow2.h"

#include <stdint.h>
#include <stdlib.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#include <glib/gstdio.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char *dir, *image;

static void teardown(void)
{
  g_autofree char *rm = g_strdup_printf("rm -rf '%s'", dir);
  if (system(rm) != 0)
    g_printerr("fuzz-qcow2: could not remove %s\n", dir);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  if (!dir) {
    dir = g_dir_make_tmp("nf-fuzz-qcow2-XXXXXX", NULL);
    g_assert_nonnull(dir);
    image = g_build_filename(dir, "image.qcow2", NULL);
    g_autofree char *base = g_build_filename(dir, "base", NULL);
    g_autofree char *zeros = g_malloc0(1 << 16);
    g_assert_true(g_file_set_contents(base, zeros, 1 << 16, NULL));
    atexit(teardown);
  }
  if (size > 1 << 20)
    return 0;
  /* Rewritten in place: g_file_set_contents() syncs, 100x slower. */
  int fd = open(image, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  g_assert_cmpint(fd, >=, 0);
  g_assert_cmpint(size == 0 ? 0 : write(fd, data, size), ==, (ssize_t)size);
  close(fd);
  guint64 seed = size;
  for (gsize i = 0; i < MIN(size, 8); i++)
    seed = seed * 131 + data[size - 1 - i];
  static const guint64 offsets[] = {0, 512, 65536, 1 << 20};
  guint8 buf[8192];
  for (gsize i = 0; i < G_N_ELEMENTS(offsets); i++) {
    guint64 off = offsets[i] + (seed % 4096) * (i + 1);
    gsize len = 1 + (gsize)((seed >> (8 * i)) % sizeof(buf));
    g_autoptr(GError) error = NULL;
    if (!nf_overlay_qcow2_pread(image, buf, len, off, &error))
      g_assert_nonnull(error);
  }
  return 0;
}
