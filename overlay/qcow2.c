/*
 * qcow2.c: reading a range of a qcow2 image without qemu (see qcow2.h).
 *
 * Format facts used (docs/interop/qcow2.txt in QEMU): big-endian header;
 * guest offset -> L1 index -> L2 table -> host cluster; L1/L2 entries keep
 * the offset in bits 9-55; an L2 entry with bit 62 is compressed, with bit 0
 * reads as zeros (v3), with offset 0 is unallocated (read the backing file).
 * Header extension 0xe2792aca names the backing format.
 */
#include "overlay/qcow2.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#define QCOW2_MAGIC 0x514649fbu
#define OFFSET_MASK G_GUINT64_CONSTANT(0x00fffffffffffe00)
#define L2_COMPRESSED (G_GUINT64_CONSTANT(1) << 62)
#define L2_ZERO G_GUINT64_CONSTANT(1)
#define EXT_BACKING_FORMAT 0xe2792acau
#define MAX_CHAIN 16
/* Incompatible features we can ignore: dirty (refcounts only) and the
 * compression type (we refuse compressed clusters anyway). */
#define INCOMPAT_HARMLESS ((G_GUINT64_CONSTANT(1) << 0) | (G_GUINT64_CONSTANT(1) << 3))

typedef struct {
  int fd;
  const char *path;
  guint32 cluster_bits;
  guint64 size, l1_offset;
  guint32 l1_size;
  char *backing;        /* resolved path or NULL */
  char *backing_format; /* or NULL */
} Image;

static gboolean image_pread(Image *img, void *buf, gsize len, guint64 off, GError **error);
static guint32 be32(const guint8 *p);
static guint64 be64(const guint8 *p);
static gboolean image_open(Image *img, const char *path, GError **error);
static gboolean chain_read(const char *path, const char *format, guint8 *buf, gsize len,
                           guint64 offset, guint depth, GError **error);
static gboolean qcow2_read(const char *path, guint8 *buf, gsize len, guint64 offset, guint depth,
                           GError **error);

static guint32 be32(const guint8 *p)
{
  guint32 v;
  memcpy(&v, p, sizeof v);
  return GUINT32_FROM_BE(v);
}

static guint64 be64(const guint8 *p)
{
  guint64 v;
  memcpy(&v, p, sizeof v);
  return GUINT64_FROM_BE(v);
}

static gboolean image_pread(Image *img, void *buf, gsize len, guint64 off, GError **error)
{
  gsize done = 0;
  while (done < len) {
    ssize_t n = pread(img->fd, (guint8 *)buf + done, len - done, (off_t)(off + done));
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      int e = errno;
      g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(e), "cannot read %s: %s", img->path,
                  g_strerror(e));
      return FALSE;
    }
    if (n == 0) {
      g_set_error(error, NF_OVERLAY_ERROR, NF_OVERLAY_ERROR_BASE_INVALID,
                  "%s is truncated (metadata or data at 0x%" G_GINT64_MODIFIER "x beyond its end)",
                  img->path, off + done);
      return FALSE;
    }
    done += (gsize)n;
  }
  return TRUE;
}

static gboolean image_open(Image *img, const char *path, GError **error)
{
  guint8 h[112] = {0};
  img->path = path;
  img->fd = open(path, O_RDONLY | O_CLOEXEC);
  if (img->fd < 0) {
    int e = errno;
    g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(e), "cannot open %s: %s", path,
                g_strerror(e));
    return FALSE;
  }
  if (!image_pread(img, h, 72, 0, error))
    return FALSE;
#define BE32(o) be32(h + (o))
#define BE64(o) be64(h + (o))
  guint32 version = BE32(4);
  if (BE32(0) != QCOW2_MAGIC || version < 2 || version > 3) {
    g_set_error(error, NF_OVERLAY_ERROR, NF_OVERLAY_ERROR_BASE_INVALID,
                "%s is not a qcow2 v2/v3 image", path);
    return FALSE;
  }
  guint32 header_len = 72;
  if (version == 3) {
    if (!image_pread(img, h + 72, 32, 72, error))
      return FALSE;
    header_len = BE32(100);
    if (BE64(72) & ~INCOMPAT_HARMLESS) {
      g_set_error(error, NF_OVERLAY_ERROR, NF_OVERLAY_ERROR_UNSUPPORTED,
                  "%s uses qcow2 features 0x%" G_GINT64_MODIFIER "x", path, BE64(72));
      return FALSE;
    }
  }
  img->cluster_bits = BE32(20);
  img->size = BE64(24);
  img->l1_size = BE32(36);
  img->l1_offset = BE64(40);
  if (img->cluster_bits < 9 || img->cluster_bits > 21 || BE32(32) != 0) {
    g_set_error(error, NF_OVERLAY_ERROR, NF_OVERLAY_ERROR_UNSUPPORTED,
                "%s: encrypted or unusual cluster size", path);
    return FALSE;
  }
  guint64 bf_off = BE64(8);
  guint32 bf_len = BE32(16);
  if (bf_off && bf_len > 1023) {
    /* qemu refuses such a name too (callers fall back to its tools, which
     * say so); read as "no backing", the image's
     * unallocated clusters would be taken for zeros. */
    g_set_error(error, NF_OVERLAY_ERROR, NF_OVERLAY_ERROR_UNSUPPORTED,
                "%s: backing file name of %u bytes (at most 1023)", path, bf_len);
    return FALSE;
  }
  if (bf_off && bf_len) {
    g_autofree char *name = g_malloc0(bf_len + 1);
    if (!image_pread(img, name, bf_len, bf_off, error))
      return FALSE;
    if (g_path_is_absolute(name)) {
      img->backing = g_steal_pointer(&name);
    } else {
      g_autofree char *dir = g_path_get_dirname(path);
      img->backing = g_build_filename(dir, name, NULL);
    }
  }
  /* Header extensions: only the backing format matters here. */
  guint64 pos = header_len;
  for (int i = 0; i < 64 && img->backing; i++) {
    guint32 ext[2];
    if (!image_pread(img, ext, 8, pos, error))
      return FALSE;
    guint32 type = GUINT32_FROM_BE(ext[0]), len = GUINT32_FROM_BE(ext[1]);
    if (type == 0)
      break;
    if (type == EXT_BACKING_FORMAT && len < 64) {
      g_free(img->backing_format); /* a repeated extension: the last one counts */
      img->backing_format = g_malloc0(len + 1);
      if (!image_pread(img, img->backing_format, len, pos + 8, error))
        return FALSE;
    }
    pos += 8 + ((len + 7) & ~7u);
  }
#undef BE32
#undef BE64
  return TRUE;
}

static gboolean chain_read(const char *path, const char *format, guint8 *buf, gsize len,
                           guint64 offset, guint depth, GError **error)
{
  if (!path) {
    memset(buf, 0, len);
    return TRUE;
  }
  if (depth >= MAX_CHAIN || !format) {
    g_set_error(error, NF_OVERLAY_ERROR, NF_OVERLAY_ERROR_UNSUPPORTED,
                "%s: backing chain too deep or backing format unrecorded", path);
    return FALSE;
  }
  if (strcmp(format, "qcow2") == 0)
    return qcow2_read(path, buf, len, offset, depth + 1, error);
  if (strcmp(format, "raw") != 0) {
    g_set_error(error, NF_OVERLAY_ERROR, NF_OVERLAY_ERROR_UNSUPPORTED, "%s: backing format %s",
                path, format);
    return FALSE;
  }
  Image raw = {.fd = open(path, O_RDONLY | O_CLOEXEC), .path = path};
  if (raw.fd < 0) {
    int e = errno;
    g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(e), "cannot open %s: %s", path,
                g_strerror(e));
    return FALSE;
  }
  /* A raw file shorter than the guest disk reads as zeros past its end. */
  gsize done = 0;
  gboolean ok = TRUE;
  while (done < len) {
    ssize_t n = pread(raw.fd, buf + done, len - done, (off_t)(offset + done));
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      int e = errno;
      g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(e), "cannot read %s: %s", path,
                  g_strerror(e));
      ok = FALSE;
      break;
    }
    if (n == 0) {
      memset(buf + done, 0, len - done);
      break;
    }
    done += (gsize)n;
  }
  close(raw.fd);
  return ok;
}

static gboolean qcow2_read(const char *path, guint8 *buf, gsize len, guint64 offset, guint depth,
                           GError **error)
{
  Image img = {.fd = -1};
  gboolean ok = image_open(&img, path, error);
  if (ok && (offset > img.size || len > img.size - offset)) {
    g_set_error(error, NF_OVERLAY_ERROR, NF_OVERLAY_ERROR_BASE_INVALID,
                "%s: range 0x%" G_GINT64_MODIFIER "x+0x%zx is beyond its 0x%" G_GINT64_MODIFIER
                "x-byte disk",
                path, offset, len, img.size);
    ok = FALSE;
  }
  /* Only a header that opened has a sane cluster_bits (a refused one may
   * hold any value: shifting by it is undefined). */
  guint64 cs = G_GUINT64_CONSTANT(1) << (ok ? img.cluster_bits : 9), l2_entries = cs / 8;
  for (gsize done = 0; ok && done < len;) {
    guint64 pos = offset + done;
    guint64 in_cluster = pos & (cs - 1);
    gsize chunk = (gsize)MIN(cs - in_cluster, (guint64)(len - done));
    guint64 cluster = pos >> img.cluster_bits;
    guint64 l1_idx = cluster / l2_entries, entry = 0;
    if (l1_idx < img.l1_size) {
      ok = image_pread(&img, &entry, 8, img.l1_offset + 8 * l1_idx, error);
      guint64 l2_off = GUINT64_FROM_BE(entry) & OFFSET_MASK;
      entry = 0;
      if (ok && l2_off) {
        ok = image_pread(&img, &entry, 8, l2_off + 8 * (cluster % l2_entries), error);
        entry = GUINT64_FROM_BE(entry);
      }
    }
    if (!ok)
      break;
    if (entry & L2_COMPRESSED) {
      g_set_error(error, NF_OVERLAY_ERROR, NF_OVERLAY_ERROR_UNSUPPORTED, "%s: compressed cluster",
                  path);
      ok = FALSE;
    } else if (entry & L2_ZERO) {
      memset(buf + done, 0, chunk);
    } else if (entry & OFFSET_MASK) {
      ok = image_pread(&img, buf + done, chunk, (entry & OFFSET_MASK) + in_cluster, error);
    } else {
      ok = chain_read(img.backing, img.backing_format, buf + done, chunk, pos, depth, error);
    }
    done += chunk;
  }
  if (img.fd >= 0)
    close(img.fd);
  g_free(img.backing);
  g_free(img.backing_format);
  return ok;
}

gboolean nf_overlay_qcow2_pread(const char *path, guint8 *buf, gsize len, guint64 offset,
                                GError **error)
{
  return qcow2_read(path, buf, len, offset, 0, error);
}
