/*
 * ubootenv.c: encode and decode U-Boot environment blocks (see ubootenv.h).
 *
 * Layout checked against the tools we must interoperate with: mkenvimage
 * writes the variables in input order and pads with 0xff; fw_setenv sorts
 * them and pads with 0x00. The CRC always covers the whole data area,
 * padding included, so the padding byte matters for byte-exact round trips:
 * we keep the one we found. Variables are kept in an ordered list, not a
 * hash table: blocks hold tens of variables and order is what makes our
 * output identical to mkenvimage's.
 */
#include "overlay/ubootenv.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#define CRC_LEN 4

struct NfUbootEnv {
  gsize size;
  guint8 pad;
  GPtrArray *keys;   /* char*, owned */
  GPtrArray *values; /* char*, owned, parallel to keys */
};

static gint env_find(const NfUbootEnv *env, const char *key);
static gboolean pread_all(int fd, guint8 *buf, gsize len, goffset off, gsize *got);

/* Spelled out rather than G_DEFINE_QUARK(a-b-c, ...): clang-format
 * reads the dashes as operators and the quark string would change. */
GQuark nf_ubootenv_error_quark(void)
{
  return g_quark_from_static_string("nf-ubootenv-error-quark");
}

guint32 nf_ubootenv_crc32(const guint8 *data, gsize len)
{
  static guint32 table[256];
  static gsize table_ready;

  if (g_once_init_enter(&table_ready)) {
    for (guint32 i = 0; i < 256; i++) {
      guint32 c = i;
      for (int k = 0; k < 8; k++)
        c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
      table[i] = c;
    }
    g_once_init_leave(&table_ready, 1);
  }
  guint32 crc = 0xffffffffu;
  for (gsize i = 0; i < len; i++)
    crc = table[(crc ^ data[i]) & 0xff] ^ (crc >> 8);
  return crc ^ 0xffffffffu;
}

NfUbootEnv *nf_ubootenv_new(gsize size)
{
  g_return_val_if_fail(size > CRC_LEN + 2, NULL);
  NfUbootEnv *env = g_new0(NfUbootEnv, 1);
  env->size = size;
  env->pad = 0xff;
  env->keys = g_ptr_array_new_with_free_func(g_free);
  env->values = g_ptr_array_new_with_free_func(g_free);
  return env;
}

void nf_ubootenv_free(NfUbootEnv *env)
{
  if (!env)
    return;
  g_ptr_array_unref(env->keys);
  g_ptr_array_unref(env->values);
  g_free(env);
}

gsize nf_ubootenv_get_size(const NfUbootEnv *env)
{
  return env->size;
}

static gint env_find(const NfUbootEnv *env, const char *key)
{
  for (guint i = 0; i < env->keys->len; i++)
    if (strcmp(g_ptr_array_index(env->keys, i), key) == 0)
      return (gint)i;
  return -1;
}

NfUbootEnv *nf_ubootenv_parse(const guint8 *data, gsize len, const char *origin, GError **error)
{
  if (len <= CRC_LEN + 2) {
    g_set_error(error, NF_UBOOTENV_ERROR, NF_UBOOTENV_ERROR_INVALID,
                "U-Boot environment in %s: block of %zu bytes is too small", origin, len);
    return NULL;
  }
  guint32 stored =
      (guint32)data[0] | (guint32)data[1] << 8 | (guint32)data[2] << 16 | (guint32)data[3] << 24;
  guint32 computed = nf_ubootenv_crc32(data + CRC_LEN, len - CRC_LEN);
  if (stored != computed) {
    g_set_error(error, NF_UBOOTENV_ERROR, NF_UBOOTENV_ERROR_BAD_CRC,
                "U-Boot environment in %s has a bad CRC (stored 0x%08x, computed 0x%08x over "
                "0x%zx bytes): the block is unwritten, corrupt, or not at this offset/size",
                origin, stored, computed, len);
    return NULL;
  }

  g_autoptr(NfUbootEnv) env = nf_ubootenv_new(len);
  const char *p = (const char *)data + CRC_LEN;
  const char *end = (const char *)data + len;
  while (p < end && *p != '\0') {
    const char *nul = memchr(p, '\0', (gsize)(end - p));
    const char *eq = nul ? memchr(p, '=', (gsize)(nul - p)) : NULL;
    if (!nul || !eq || eq == p) {
      g_set_error(error, NF_UBOOTENV_ERROR, NF_UBOOTENV_ERROR_INVALID,
                  "U-Boot environment in %s: %s at byte %zd", origin,
                  nul ? "entry without key=value" : "unterminated variable list",
                  (gssize)(p - (const char *)data));
      return NULL;
    }
    g_autofree char *key = g_strndup(p, (gsize)(eq - p));
    gint i = env_find(env, key);
    if (i >= 0) { /* last one wins, at the place of the last */
      g_ptr_array_remove_index(env->keys, (guint)i);
      g_ptr_array_remove_index(env->values, (guint)i);
    }
    g_ptr_array_add(env->keys, g_steal_pointer(&key));
    g_ptr_array_add(env->values, g_strndup(eq + 1, (gsize)(nul - eq - 1)));
    p = nul + 1;
  }
  if (p >= end) {
    /* No final empty string: U-Boot's own tools always write one, and an
     * env without it could not be written back as it was read. */
    g_set_error(error, NF_UBOOTENV_ERROR, NF_UBOOTENV_ERROR_INVALID,
                "U-Boot environment in %s: unterminated variable list (no empty string after "
                "the last variable)",
                origin);
    return NULL;
  }
  if (p + 1 < end)
    env->pad = (guint8)p[1];
  return g_steal_pointer(&env);
}

guint8 *nf_ubootenv_serialize(const NfUbootEnv *env, gsize *len, GError **error)
{
  g_autofree guint8 *buf = g_malloc(env->size);
  memset(buf, env->pad, env->size);
  gsize pos = CRC_LEN;
  for (guint i = 0; i < env->keys->len; i++) {
    const char *k = g_ptr_array_index(env->keys, i);
    const char *v = g_ptr_array_index(env->values, i);
    gsize kl = strlen(k), vl = strlen(v);
    /* Room for this entry plus the final empty string. */
    if (pos + kl + 1 + vl + 1 + 1 > env->size) {
      g_set_error(error, NF_UBOOTENV_ERROR, NF_UBOOTENV_ERROR_TOO_LARGE,
                  "U-Boot environment variables do not fit in 0x%zx bytes (at \"%s\")", env->size,
                  k);
      return NULL;
    }
    memcpy(buf + pos, k, kl);
    buf[pos + kl] = '=';
    memcpy(buf + pos + kl + 1, v, vl);
    buf[pos + kl + 1 + vl] = '\0';
    pos += kl + 1 + vl + 1;
  }
  buf[pos] = '\0';
  guint32 crc = nf_ubootenv_crc32(buf + CRC_LEN, env->size - CRC_LEN);
  buf[0] = crc & 0xff;
  buf[1] = (crc >> 8) & 0xff;
  buf[2] = (crc >> 16) & 0xff;
  buf[3] = (crc >> 24) & 0xff;
  if (len)
    *len = env->size;
  return g_steal_pointer(&buf);
}

const char *nf_ubootenv_get(const NfUbootEnv *env, const char *key)
{
  gint i = env_find(env, key);
  return i < 0 ? NULL : g_ptr_array_index(env->values, (guint)i);
}

gboolean nf_ubootenv_set(NfUbootEnv *env, const char *key, const char *value, GError **error)
{
  if (!key || !*key || strchr(key, '=') || !value) {
    g_set_error(error, NF_UBOOTENV_ERROR, NF_UBOOTENV_ERROR_INVALID,
                "invalid U-Boot environment variable name \"%s\" (empty or contains '=')",
                key ? key : "(null)");
    return FALSE;
  }
  gint i = env_find(env, key);
  if (i >= 0) {
    g_free(env->values->pdata[i]);
    env->values->pdata[i] = g_strdup(value);
  } else {
    g_ptr_array_add(env->keys, g_strdup(key));
    g_ptr_array_add(env->values, g_strdup(value));
  }
  return TRUE;
}

gboolean nf_ubootenv_unset(NfUbootEnv *env, const char *key)
{
  gint i = env_find(env, key);
  if (i < 0)
    return FALSE;
  g_ptr_array_remove_index(env->keys, (guint)i);
  g_ptr_array_remove_index(env->values, (guint)i);
  return TRUE;
}

char **nf_ubootenv_keys(const NfUbootEnv *env)
{
  char **keys = g_new0(char *, env->keys->len + 1);
  for (guint i = 0; i < env->keys->len; i++)
    keys[i] = g_strdup(g_ptr_array_index(env->keys, i));
  return keys;
}

static gboolean pread_all(int fd, guint8 *buf, gsize len, goffset off, gsize *got)
{
  gsize done = 0;
  while (done < len) {
    ssize_t n = pread(fd, buf + done, len - done, off + (goffset)done);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return FALSE;
    if (n == 0)
      break;
    done += (gsize)n;
  }
  *got = done;
  return TRUE;
}

NfUbootEnv *nf_ubootenv_load_file(const char *path, goffset offset, gsize size, GError **error)
{
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(e), "cannot open %s: %s", path,
                g_strerror(e));
    return NULL;
  }
  g_autofree guint8 *buf = g_malloc(size);
  gsize got = 0;
  gboolean ok = pread_all(fd, buf, size, offset, &got);
  int e = errno;
  close(fd);
  if (!ok) {
    g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(e), "cannot read %s: %s", path,
                g_strerror(e));
    return NULL;
  }
  g_autofree char *origin =
      g_strdup_printf("%s at offset 0x%" G_GINT64_MODIFIER "x", path, (gint64)offset);
  if (got < size) {
    g_set_error(error, NF_UBOOTENV_ERROR, NF_UBOOTENV_ERROR_INVALID,
                "U-Boot environment in %s: file ends %zu bytes into the 0x%zx-byte block", origin,
                got, size);
    return NULL;
  }
  return nf_ubootenv_parse(buf, size, origin, error);
}

gboolean nf_ubootenv_save_file(const NfUbootEnv *env, const char *path, goffset offset,
                               GError **error)
{
  gsize len = 0;
  g_autofree guint8 *buf = nf_ubootenv_serialize(env, &len, error);
  if (!buf)
    return FALSE;
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(e), "cannot open %s for writing: %s",
                path, g_strerror(e));
    return FALSE;
  }
  gsize done = 0;
  while (done < len) {
    ssize_t n = pwrite(fd, buf + done, len - done, offset + (goffset)done);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      int e = n < 0 ? errno : EIO;
      close(fd);
      g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(e), "cannot write %s: %s", path,
                  g_strerror(e));
      return FALSE;
    }
    done += (gsize)n;
  }
  if (close(fd) < 0) {
    int e = errno;
    g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(e), "cannot write %s: %s", path,
                g_strerror(e));
    return FALSE;
  }
  return TRUE;
}
