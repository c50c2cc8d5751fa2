/*
 * env.c: reading and writing the U-Boot env block inside qcow2 overlays (see
 * env.h).
 *
 * Read paths, measured on this project's 2-core test host (bench/overlay):
 * the in-process reader needs no child process at all, which is what keeps
 * `ps` over 1,000 guests fast; `qemu-img dd` and `qemu-io` each cost a
 * process start (tens of ms). The qemu paths stay as the fallback for qcow2
 * features the in-process reader refuses, and as a cross-check in tests.
 * `qemu-img dd` is asked for the range from byte 0 (bs = gcd of offset and
 * size, no skip=) because qemu-img 7.2 counts skipped blocks in count=.
 *
 * Writes go through qemu-io (the only writer that knows qcow2 allocation):
 * blocking, from a temp file, or as a child whose completion the caller's
 * loop dispatches (nf_overlay_env_set_async, for the supervisor), from a
 * memfd it inherits, so that no temp file can outlive a supervisor.
 */
#include "overlay/env.h"

#include <errno.h>
#include <glib/gstdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "overlay/qcow2.h"
#include "overlay/tool.h"

static gboolean read_qemu_img(const char *overlay, guint64 offset, gsize size, guint8 *buf,
                              GError **error);
static gboolean read_qemu_io(const char *overlay, guint64 offset, gsize size, guint8 *buf,
                             GError **error);
static guint64 gcd64(guint64 a, guint64 b);
static void cache_entry_free(gpointer data);
static char *write_begin(const char *overlay, guint64 offset, const NfUbootEnv *env, char **cmd,
                         GError **error);
static gboolean write_end(const char *overlay, char *tmp, gboolean ok, const char *out,
                          GError *local, GError **error);
static NfUbootEnv *set_prepare(const char *overlay, guint64 offset, gsize size, const char *key,
                               const char *value, gboolean create_if_invalid, GError **error);
static void set_written_cb(GObject *source, GAsyncResult *res, gpointer data);
static int block_memfd(const char *overlay, const NfUbootEnv *env, gsize *len, GError **error);

struct NfOverlayEnvCache {
  guint64 offset;
  gsize size;
  GHashTable *entries; /* overlay path -> CacheEntry */
};

typedef struct {
  gint64 mtime_ns;
  goffset file_size;
  NfUbootEnv *env; /* or NULL and error */
  GError *error;
} CacheEntry;

static guint64 gcd64(guint64 a, guint64 b)
{
  while (b) {
    guint64 t = a % b;
    a = b;
    b = t;
  }
  return a;
}

static gboolean read_qemu_img(const char *overlay, guint64 offset, gsize size, guint8 *buf,
                              GError **error)
{
  g_autofree char *dir = g_dir_make_tmp("nf-env-XXXXXX", error);
  if (!dir)
    return FALSE;
  g_autofree char *out = g_build_filename(dir, "block.raw", NULL);
  guint64 bs = gcd64(offset, size);
  g_autofree char *bs_arg = g_strdup_printf("bs=%" G_GUINT64_FORMAT, bs);
  g_autofree char *count_arg = g_strdup_printf("count=%" G_GUINT64_FORMAT, (offset + size) / bs);
  g_autofree char *if_arg = g_strconcat("if=", overlay, NULL);
  g_autofree char *of_arg = g_strconcat("of=", out, NULL);
  const char *argv[] = {"qemu-img", "dd",   "-U",      "-f",   "qcow2", "-O",
                        "raw",      bs_arg, count_arg, if_arg, of_arg,  NULL};
  g_autofree char *contents = NULL;
  gsize len = 0;
  gboolean ok = nf_overlay_tool_run(argv, NULL, NULL, NULL, error) &&
                g_file_get_contents(out, &contents, &len, error);
  g_unlink(out);
  g_rmdir(dir);
  if (ok && len < offset + size) {
    g_set_error(error, NF_OVERLAY_ERROR, NF_OVERLAY_ERROR_TOOL,
                "qemu-img dd returned %zu bytes of %s, expected %" G_GUINT64_FORMAT, len, overlay,
                offset + size);
    ok = FALSE;
  }
  if (ok)
    memcpy(buf, contents + offset, size);
  return ok;
}

static gboolean read_qemu_io(const char *overlay, guint64 offset, gsize size, guint8 *buf,
                             GError **error)
{
  g_autofree char *cmd = g_strdup_printf("read -v %" G_GUINT64_FORMAT " %zu", offset, size);
  const char *argv[] = {"qemu-io", "-r", "-U", "-f", "qcow2", "-c", cmd, overlay, NULL};
  g_autofree char *out = NULL;
  if (!nf_overlay_tool_run(argv, &out, NULL, NULL, error))
    return FALSE;
  /* Lines: "00002000:  30 e5 e5 35 ... (16 bytes)  ascii". */
  gsize filled = 0;
  for (char *line = out; line && *line;) {
    char *nl = strchr(line, '\n');
    if (nl)
      *nl = '\0';
    char *colon = strchr(line, ':');
    if (colon && colon - line == 8 && g_ascii_isxdigit(line[0])) {
      guint64 addr = g_ascii_strtoull(line, NULL, 16);
      const char *p = colon + 1;
      for (int i = 0; i < 16 && addr + i >= offset && addr + i < offset + size; i++) {
        while (*p == ' ')
          p++;
        if (!g_ascii_isxdigit(p[0]) || !g_ascii_isxdigit(p[1]))
          break;
        buf[addr + i - offset] =
            (guint8)(g_ascii_xdigit_value(p[0]) << 4 | g_ascii_xdigit_value(p[1]));
        filled++;
        p += 2;
      }
    }
    line = nl ? nl + 1 : NULL;
  }
  if (filled != size) {
    g_set_error(error, NF_OVERLAY_ERROR, NF_OVERLAY_ERROR_TOOL,
                "qemu-io dumped %zu of %zu bytes of %s", filled, size, overlay);
    return FALSE;
  }
  return TRUE;
}

gboolean nf_overlay_env_read_with(NfOverlayEnvReader how, const char *overlay, guint64 offset,
                                  gsize size, NfUbootEnv **env, GError **error)
{
  g_autofree guint8 *buf = g_malloc(size);
  g_autoptr(GError) local = NULL;
  gboolean ok;
  switch (how) {
  case NF_OVERLAY_ENV_READ_QEMU_IMG:
    ok = read_qemu_img(overlay, offset, size, buf, &local);
    break;
  case NF_OVERLAY_ENV_READ_QEMU_IO:
    ok = read_qemu_io(overlay, offset, size, buf, &local);
    break;
  case NF_OVERLAY_ENV_READ_AUTO:
  case NF_OVERLAY_ENV_READ_NATIVE:
  default:
    ok = nf_overlay_qcow2_pread(overlay, buf, size, offset, &local);
    if (!ok && how == NF_OVERLAY_ENV_READ_AUTO &&
        g_error_matches(local, NF_OVERLAY_ERROR, NF_OVERLAY_ERROR_UNSUPPORTED)) {
      g_clear_error(&local);
      ok = read_qemu_img(overlay, offset, size, buf, &local);
    }
    break;
  }
  if (!ok) {
    g_propagate_prefixed_error(error, g_steal_pointer(&local),
                               "cannot read the U-Boot environment of %s: ", overlay);
    return FALSE;
  }
  g_autofree char *origin =
      g_strdup_printf("%s at offset 0x%" G_GINT64_MODIFIER "x", overlay, offset);
  NfUbootEnv *parsed = nf_ubootenv_parse(buf, size, origin, error);
  if (!parsed)
    return FALSE;
  *env = parsed;
  return TRUE;
}

gboolean nf_overlay_env_read(const char *overlay, guint64 offset, gsize size, NfUbootEnv **env,
                             GError **error)
{
  return nf_overlay_env_read_with(NF_OVERLAY_ENV_READ_AUTO, overlay, offset, size, env, error);
}

/* First half of a write: the encoded block goes to a temp file and *cmd is
 * the qemu-io command that copies it into the overlay. Returns the temp path
 * (the caller unlinks it), or NULL with an error. */
static char *write_begin(const char *overlay, guint64 offset, const NfUbootEnv *env, char **cmd,
                         GError **error)
{
  gsize len = 0;
  g_autofree guint8 *block = nf_ubootenv_serialize(env, &len, error);
  if (!block)
    return NULL;
  g_autofree char *tmp = NULL;
  g_autoptr(GError) local = NULL;
  int fd = g_file_open_tmp("nf-env-XXXXXX.bin", &tmp, &local);
  if (fd < 0) {
    g_set_error(error, NF_OVERLAY_ERROR, NF_OVERLAY_ERROR_IO,
                "cannot write the U-Boot environment of %s: %s", overlay, local->message);
    return NULL;
  }
  close(fd);
  if (strpbrk(tmp, " \t\n\"'")) { /* qemu-io splits its -c command on blanks */
    g_unlink(tmp);
    g_set_error(error, NF_OVERLAY_ERROR, NF_OVERLAY_ERROR_IO,
                "cannot write the U-Boot environment of %s: temp path %s contains blanks or "
                "quotes, which qemu-io cannot take; set TMPDIR to a plain path",
                overlay, tmp);
    return NULL;
  }
  if (!g_file_set_contents(tmp, (const char *)block, (gssize)len, &local)) {
    g_unlink(tmp);
    g_set_error(error, NF_OVERLAY_ERROR, NF_OVERLAY_ERROR_IO,
                "cannot write the U-Boot environment of %s: %s", overlay, local->message);
    return NULL;
  }
  *cmd = g_strdup_printf("write -s %s %" G_GUINT64_FORMAT " %zu", tmp, offset, len);
  return g_steal_pointer(&tmp);
}

/* Second half: removes the temp and judges qemu-io's run (`ok`, `out`,
 * `local`: its results, consumed). */
static gboolean write_end(const char *overlay, char *tmp, gboolean ok, const char *out,
                          GError *local, GError **error)
{
  g_unlink(tmp);
  if (ok && !strstr(out ? out : "", "wrote ")) {
    local = g_error_new(NF_OVERLAY_ERROR, NF_OVERLAY_ERROR_TOOL, "qemu-io did not confirm: %s",
                        out ? out : "");
    ok = FALSE;
  }
  if (!ok) {
    g_propagate_prefixed_error(error, local,
                               "cannot write the U-Boot environment of %s: ", overlay);
    return FALSE;
  }
  return TRUE;
}

gboolean nf_overlay_env_write(const char *overlay, guint64 offset, const NfUbootEnv *env,
                              GError **error)
{
  g_autofree char *cmd = NULL;
  g_autofree char *tmp = write_begin(overlay, offset, env, &cmd, error);
  if (!tmp)
    return FALSE;
  const char *argv[] = {"qemu-io", "-f", "qcow2", "-c", cmd, overlay, NULL};
  g_autofree char *out = NULL;
  GError *local = NULL;
  gboolean ok = nf_overlay_tool_run(argv, &out, NULL, NULL, &local);
  return write_end(overlay, tmp, ok, out, local, error);
}

/* The read-modify part of a set: the env to write, or NULL with an error. */
static NfUbootEnv *set_prepare(const char *overlay, guint64 offset, gsize size, const char *key,
                               const char *value, gboolean create_if_invalid, GError **error)
{
  g_autoptr(NfUbootEnv) env = NULL;
  g_autoptr(GError) local = NULL;
  if (!nf_overlay_env_read(overlay, offset, size, &env, &local)) {
    if (!create_if_invalid ||
        !g_error_matches(local, NF_UBOOTENV_ERROR, NF_UBOOTENV_ERROR_BAD_CRC)) {
      g_propagate_error(error, g_steal_pointer(&local));
      return NULL;
    }
    env = nf_ubootenv_new(size);
  }
  if (!value)
    nf_ubootenv_unset(env, key);
  else if (!nf_ubootenv_set(env, key, value, error))
    return NULL;
  return g_steal_pointer(&env);
}

gboolean nf_overlay_env_set(const char *overlay, guint64 offset, gsize size, const char *key,
                            const char *value, gboolean create_if_invalid, GError **error)
{
  g_autoptr(NfUbootEnv) env =
      set_prepare(overlay, offset, size, key, value, create_if_invalid, error);
  return env && nf_overlay_env_write(overlay, offset, env, error);
}

static void set_written_cb(GObject *source, GAsyncResult *res, gpointer data)
{
  g_autoptr(GTask) task = data;
  const char *overlay = g_task_get_task_data(task);
  g_autofree char *out = NULL;
  GError *local = NULL;
  gboolean ok = nf_overlay_tool_run_finish(res, &out, NULL, NULL, &local);
  if (ok && !strstr(out ? out : "", "wrote ")) {
    local = g_error_new(NF_OVERLAY_ERROR, NF_OVERLAY_ERROR_TOOL, "qemu-io did not confirm: %s",
                        out ? out : "");
    ok = FALSE;
  }
  if (ok) {
    g_task_return_boolean(task, TRUE);
    return;
  }
  g_prefix_error(&local, "cannot write the U-Boot environment of %s: ", overlay);
  g_task_return_error(task, local);
}

/* The block reaches qemu-io as an anonymous memory file on its fd 3, not a
 * temp file: nothing to clean up, whenever the supervisor goes away. */
static int block_memfd(const char *overlay, const NfUbootEnv *env, gsize *len, GError **error)
{
  g_autofree guint8 *block = nf_ubootenv_serialize(env, len, error);
  if (!block)
    return -1;
  int fd = memfd_create("nf-env-block", MFD_CLOEXEC);
  gsize done = 0;
  while (fd >= 0 && done < *len) {
    ssize_t n = write(fd, block + done, *len - done);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    done += (gsize)n;
  }
  if (fd < 0 || done < *len) {
    int e = errno;
    if (fd >= 0)
      close(fd);
    g_set_error(error, NF_OVERLAY_ERROR, NF_OVERLAY_ERROR_IO,
                "cannot write the U-Boot environment of %s: %s", overlay, g_strerror(e));
    return -1;
  }
  return fd;
}

void nf_overlay_env_set_async(const char *overlay, guint64 offset, gsize size, const char *key,
                              const char *value, gboolean create_if_invalid,
                              GAsyncReadyCallback done, gpointer user_data)
{
  g_autoptr(GTask) task = g_task_new(NULL, NULL, done, user_data);
  g_task_set_source_tag(task, nf_overlay_env_set_async);
  g_task_set_task_data(task, g_strdup(overlay), g_free);
  GError *error = NULL;
  g_autoptr(NfUbootEnv) env =
      set_prepare(overlay, offset, size, key, value, create_if_invalid, &error);
  gsize len = 0;
  int fd = env ? block_memfd(overlay, env, &len, &error) : -1;
  if (fd < 0) {
    g_task_return_error(task, error);
    return;
  }
  g_autofree char *cmd =
      g_strdup_printf("write -s /dev/fd/3 %" G_GUINT64_FORMAT " %zu", offset, len);
  const char *argv[] = {"qemu-io", "-f", "qcow2", "-c", cmd, overlay, NULL};
  nf_overlay_tool_run_async(argv, fd, set_written_cb, g_steal_pointer(&task));
}

gboolean nf_overlay_env_set_finish(GAsyncResult *result, GError **error)
{
  g_return_val_if_fail(g_task_is_valid(result, NULL), FALSE);
  return g_task_propagate_boolean(G_TASK(result), error);
}

static void cache_entry_free(gpointer data)
{
  CacheEntry *e = data;
  nf_ubootenv_free(e->env);
  g_clear_error(&e->error);
  g_free(e);
}

NfOverlayEnvCache *nf_overlay_env_cache_new(guint64 offset, gsize size)
{
  NfOverlayEnvCache *cache = g_new0(NfOverlayEnvCache, 1);
  cache->offset = offset;
  cache->size = size;
  cache->entries = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, cache_entry_free);
  return cache;
}

void nf_overlay_env_cache_free(NfOverlayEnvCache *cache)
{
  if (!cache)
    return;
  g_hash_table_unref(cache->entries);
  g_free(cache);
}

void nf_overlay_env_cache_forget(NfOverlayEnvCache *cache, const char *overlay)
{
  g_hash_table_remove(cache->entries, overlay);
}

const NfUbootEnv *nf_overlay_env_cache_get(NfOverlayEnvCache *cache, const char *overlay,
                                           GError **error)
{
  GStatBuf st;
  if (g_stat(overlay, &st) < 0) {
    int e = errno;
    g_hash_table_remove(cache->entries, overlay);
    g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(e),
                "cannot read the U-Boot environment of %s: %s", overlay, g_strerror(e));
    return NULL;
  }
  gint64 mtime_ns = (gint64)st.st_mtim.tv_sec * G_GINT64_CONSTANT(1000000000) + st.st_mtim.tv_nsec;
  CacheEntry *e = g_hash_table_lookup(cache->entries, overlay);
  if (!e || e->mtime_ns != mtime_ns || e->file_size != st.st_size) {
    e = g_new0(CacheEntry, 1);
    e->mtime_ns = mtime_ns;
    e->file_size = st.st_size;
    nf_overlay_env_read(overlay, cache->offset, cache->size, &e->env, &e->error);
    g_hash_table_replace(cache->entries, g_strdup(overlay), e);
  }
  if (e->error) {
    g_propagate_error(error, g_error_copy(e->error));
    return NULL;
  }
  return e->env;
}

gboolean nf_overlay_env_set_serial(const char *overlay, const char *serial, GError **error)
{
  return nf_overlay_env_set(overlay, NF_UBOOTENV_DEFAULT_OFFSET, NF_UBOOTENV_DEFAULT_SIZE,
                            NF_OVERLAY_ENV_SERIAL_KEY, serial, FALSE, error);
}

void nf_overlay_env_set_serial_async(const char *overlay, const char *serial,
                                     GAsyncReadyCallback done, gpointer user_data)
{
  nf_overlay_env_set_async(overlay, NF_UBOOTENV_DEFAULT_OFFSET, NF_UBOOTENV_DEFAULT_SIZE,
                           NF_OVERLAY_ENV_SERIAL_KEY, serial, FALSE, done, user_data);
}
