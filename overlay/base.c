/*
 * base.c: inspecting the fleet's base image and recording its identity (see
 * base.h).
 *
 * What we learned from qemu-img 7.2 and rely on: `info` without -f probes the
 * format (a text file is "raw", so a named format must be compared with the
 * probe, never passed with -f, or `-f raw` would happily accept a qcow2);
 * `info --backing-chain` fails when a backing file is missing; `info` accepts
 * a qcow2 cut short, and only `check` reports it (exit 2, "corruptions" in its
 * JSON). Raw images carry no header, so a truncated raw base cannot be told
 * from a small one.
 */
#include "overlay/base.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define HEAD_BYTES (1024 * 1024)

static gboolean check_qcow2(const char *path, const char *display, GError **error);
static gboolean base_parse_chain(NfOverlayBase *base, const char *json_text, GError **error);

void nf_overlay_base_free(NfOverlayBase *base)
{
  if (!base)
    return;
  g_free(base->path);
  g_free(base->format);
  g_free(base->backing_file);
  g_free(base);
}

void nf_overlay_base_id_free(NfOverlayBaseId *id)
{
  if (!id)
    return;
  g_free(id->path);
  g_free(id->format);
  g_free(id->sha256_head);
  g_free(id);
}

static gboolean check_qcow2(const char *path, const char *display, GError **error)
{
  const char *argv[] = {"qemu-img", "check", "-U", "--output=json", "-f", "qcow2", path, NULL};
  g_autofree char *out = NULL, *err = NULL;
  int status = -1;
  g_autoptr(GError) local = NULL;
  nf_overlay_tool_run(argv, &out, &err, &status, &local);
  /* 0 clean, 3 leaked clusters only (harmless); 2 corrupt; 1 check impossible. */
  if (status == 0 || status == 3)
    return TRUE;
  json_auto_t *j = out ? json_loads(out, 0, NULL) : NULL;
  json_int_t corruptions = json_integer_value(json_object_get(j, "corruptions"));
  json_int_t end = json_integer_value(json_object_get(j, "image-end-offset"));
  struct stat st;
  if (status == 2 && end > 0 && stat(path, &st) == 0 && st.st_size < end) {
    g_set_error(error, NF_OVERLAY_ERROR, NF_OVERLAY_ERROR_BASE_INVALID,
                "image %s is truncated: its qcow2 metadata needs %" JSON_INTEGER_FORMAT
                " bytes but the file holds %" G_GINT64_FORMAT " (%" JSON_INTEGER_FORMAT
                " corruptions); copy or download it again",
                display, end, (gint64)st.st_size, corruptions);
  } else {
    g_autofree char *line = nf_overlay_tool_first_line(err);
    g_set_error(error, NF_OVERLAY_ERROR, NF_OVERLAY_ERROR_BASE_INVALID,
                "image %s is corrupt (qemu-img check: %" JSON_INTEGER_FORMAT
                " corruptions; %s); copy or download it again",
                display, corruptions, *line ? line : local->message);
  }
  return FALSE;
}

static gboolean base_parse_chain(NfOverlayBase *base, const char *json_text, GError **error)
{
  json_error_t jerr;
  json_auto_t *chain = json_loads(json_text, 0, &jerr);
  if (!json_is_array(chain) || json_array_size(chain) == 0) {
    g_set_error(error, NF_OVERLAY_ERROR, NF_OVERLAY_ERROR_TOOL,
                "cannot parse `qemu-img info --output=json` for %s: %s", base->path,
                chain ? "not a non-empty array" : jerr.text);
    return FALSE;
  }
  json_t *top = json_array_get(chain, 0);
  const char *fmt = json_string_value(json_object_get(top, "format"));
  base->format = g_strdup(fmt ? fmt : "");
  base->virtual_size = (guint64)json_integer_value(json_object_get(top, "virtual-size"));
  const char *backing = json_string_value(json_object_get(top, "full-backing-filename"));
  base->backing_file = g_strdup(backing);
  base->chain_length = (guint)json_array_size(chain);

  for (size_t i = 0; i < json_array_size(chain); i++) {
    json_t *img = json_array_get(chain, i);
    const char *name = json_string_value(json_object_get(img, "filename"));
    const char *f = json_string_value(json_object_get(img, "format"));
    g_autofree char *display = i == 0
                                   ? g_strdup(base->path)
                                   : g_strdup_printf("%s (backing file of %s)", name, base->path);
    if (g_strcmp0(f, "raw") != 0 && g_strcmp0(f, "qcow2") != 0) {
      g_set_error(error, NF_OVERLAY_ERROR, NF_OVERLAY_ERROR_BASE_INVALID,
                  "image %s is in format \"%s\"; only raw and qcow2 are supported: convert it "
                  "with `qemu-img convert -O qcow2 %s NEW.qcow2`",
                  display, f ? f : "?", name ? name : base->path);
      return FALSE;
    }
    json_t *data = json_object_get(json_object_get(img, "format-specific"), "data");
    if (json_is_true(json_object_get(data, "corrupt"))) {
      g_set_error(error, NF_OVERLAY_ERROR, NF_OVERLAY_ERROR_BASE_INVALID,
                  "image %s is marked corrupt by qemu; repair it with `qemu-img check -r all` "
                  "or replace it",
                  display);
      return FALSE;
    }
    if (g_strcmp0(f, "qcow2") == 0 && !check_qcow2(i == 0 ? base->path : name, display, error))
      return FALSE;
  }
  if (base->virtual_size == 0) {
    g_set_error(error, NF_OVERLAY_ERROR, NF_OVERLAY_ERROR_BASE_INVALID,
                "image %s is empty (0 bytes); point --base at a disk image", base->path);
    return FALSE;
  }
  return TRUE;
}

NfOverlayBase *nf_overlay_base_inspect(const char *path, const char *format, GError **error)
{
  if (format && strcmp(format, "raw") != 0 && strcmp(format, "qcow2") != 0) {
    g_set_error(error, NF_OVERLAY_ERROR, NF_OVERLAY_ERROR_FORMAT_MISMATCH,
                "base image format \"%s\" is not supported: use raw or qcow2", format);
    return NULL;
  }
  g_autoptr(NfOverlayBase) base = g_new0(NfOverlayBase, 1);
  base->path = g_canonicalize_filename(path, NULL);

  /* Our own checks first: they give better messages than qemu-img's. */
  struct stat st;
  if (stat(base->path, &st) < 0) {
    int e = errno;
    g_set_error(error, NF_OVERLAY_ERROR,
                e == ENOENT ? NF_OVERLAY_ERROR_BASE_MISSING : NF_OVERLAY_ERROR_BASE_INVALID,
                "base image %s: %s%s", base->path, g_strerror(e),
                e == ENOENT ? " (check the path, or build/download the image first)" : "");
    return NULL;
  }
  if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
    g_set_error(error, NF_OVERLAY_ERROR, NF_OVERLAY_ERROR_BASE_INVALID,
                "base image %s is %s, not a disk image file", base->path,
                S_ISDIR(st.st_mode) ? "a directory" : "not a regular file");
    return NULL;
  }
  int fd = open(base->path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    g_set_error(error, NF_OVERLAY_ERROR, NF_OVERLAY_ERROR_BASE_INVALID,
                "base image %s cannot be read: %s (fix its permissions)", base->path,
                g_strerror(e));
    return NULL;
  }
  close(fd);

  /* -U: the base is normally in use by running guests (shared read lock). */
  const char *argv[] = {"qemu-img",        "info",     "-U", "--output=json",
                        "--backing-chain", base->path, NULL};
  g_autofree char *out = NULL, *err = NULL;
  g_autoptr(GError) local = NULL;
  if (!nf_overlay_tool_run(argv, &out, &err, NULL, &local)) {
    g_autofree char *line = nf_overlay_tool_first_line(err);
    gboolean missing = strstr(line, "No such file") != NULL;
    g_set_error(error, NF_OVERLAY_ERROR,
                missing ? NF_OVERLAY_ERROR_BASE_MISSING : NF_OVERLAY_ERROR_BASE_INVALID,
                "base image %s cannot be opened%s: %s", base->path,
                missing ? " (a file in its backing chain is missing; restore it, or "
                          "flatten the base with `qemu-img convert`)"
                        : "",
                *line ? line : local->message);
    return NULL;
  }
  if (!base_parse_chain(base, out, error))
    return NULL;
  if (format && strcmp(format, base->format) != 0) {
    g_set_error(error, NF_OVERLAY_ERROR, NF_OVERLAY_ERROR_FORMAT_MISMATCH,
                "base image %s was named as %s but it is %s: fix the format option (or omit it "
                "to use what the file is)",
                base->path, format, base->format);
    return NULL;
  }
  return g_steal_pointer(&base);
}

NfOverlayBaseId *nf_overlay_base_id_compute(const NfOverlayBase *base, GError **error)
{
  int fd = open(base->path, O_RDONLY | O_CLOEXEC);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) < 0) {
    int e = errno;
    if (fd >= 0)
      close(fd);
    g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(e), "cannot read base image %s: %s",
                base->path, g_strerror(e));
    return NULL;
  }
  g_autofree guint8 *buf = g_malloc(HEAD_BYTES);
  gsize got = 0;
  while (got < HEAD_BYTES) {
    ssize_t n = read(fd, buf + got, HEAD_BYTES - got);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      int e = errno;
      close(fd);
      g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(e), "cannot read base image %s: %s",
                  base->path, g_strerror(e));
      return NULL;
    }
    if (n == 0)
      break;
    got += (gsize)n;
  }
  close(fd);
  NfOverlayBaseId *id = g_new0(NfOverlayBaseId, 1);
  id->path = g_strdup(base->path);
  id->format = g_strdup(base->format);
  id->size = (guint64)st.st_size;
  id->mtime_ns = (gint64)st.st_mtim.tv_sec * G_GINT64_CONSTANT(1000000000) + st.st_mtim.tv_nsec;
  id->sha256_head = g_compute_checksum_for_data(G_CHECKSUM_SHA256, buf, got);
  return id;
}

char *nf_overlay_base_id_diff(const NfOverlayBaseId *a, const NfOverlayBaseId *b)
{
  g_autoptr(GPtrArray) parts = g_ptr_array_new_with_free_func(g_free);
  if (g_strcmp0(a->path, b->path) != 0)
    g_ptr_array_add(parts, g_strdup_printf("path %s -> %s", a->path, b->path));
  if (g_strcmp0(a->format, b->format) != 0)
    g_ptr_array_add(parts, g_strdup_printf("format %s -> %s", a->format, b->format));
  if (a->size != b->size)
    g_ptr_array_add(parts, g_strdup_printf("size %" G_GUINT64_FORMAT " -> %" G_GUINT64_FORMAT,
                                           a->size, b->size));
  if (a->mtime_ns != b->mtime_ns)
    g_ptr_array_add(parts, g_strdup("modification time"));
  if (g_strcmp0(a->sha256_head, b->sha256_head) != 0)
    g_ptr_array_add(parts, g_strdup("content of the first MiB"));
  if (parts->len == 0)
    return NULL;
  g_ptr_array_add(parts, NULL);
  return g_strjoinv(", ", (char **)parts->pdata);
}

gboolean nf_overlay_base_id_save(const NfOverlayBaseId *id, const char *json_path, GError **error)
{
  json_auto_t *j = json_pack("{s:i, s:s, s:s, s:I, s:I, s:s}", "version", 1, "path", id->path,
                             "format", id->format, "size", (json_int_t)id->size, "mtime_ns",
                             (json_int_t)id->mtime_ns, "sha256_first_mib", id->sha256_head);
  g_autofree char *text = j ? json_dumps(j, JSON_INDENT(2)) : NULL;
  g_autoptr(GError) local = NULL;
  g_autofree char *with_nl = g_strconcat(text ? text : "", "\n", NULL);
  if (!text || !g_file_set_contents_full(json_path, with_nl, -1, G_FILE_SET_CONTENTS_CONSISTENT,
                                         0644, &local)) {
    g_set_error(error, NF_OVERLAY_ERROR, NF_OVERLAY_ERROR_IO, "cannot record the base identity: %s",
                local ? local->message : "JSON encoding failed");
    return FALSE;
  }
  return TRUE;
}

NfOverlayBaseId *nf_overlay_base_id_load(const char *json_path, GError **error)
{
  g_autofree char *text = NULL;
  if (!g_file_get_contents(json_path, &text, NULL, error))
    return NULL;
  json_error_t jerr;
  json_auto_t *j = json_loads(text, 0, &jerr);
  const char *path = NULL, *format = NULL, *sha = NULL;
  json_int_t version = 0, size = 0, mtime = 0;
  if (!j ||
      json_unpack_ex(j, &jerr, 0, "{s:I, s:s, s:s, s:I, s:I, s:s}", "version", &version, "path",
                     &path, "format", &format, "size", &size, "mtime_ns", &mtime,
                     "sha256_first_mib", &sha) < 0 ||
      version != 1) {
    g_set_error(error, NF_OVERLAY_ERROR, NF_OVERLAY_ERROR_RECORD,
                "base identity record %s is malformed (%s): remove it if the base is known "
                "to be the one the overlays were made from",
                json_path, version > 1 ? "written by a newer version" : jerr.text);
    return NULL;
  }
  NfOverlayBaseId *id = g_new0(NfOverlayBaseId, 1);
  id->path = g_strdup(path);
  id->format = g_strdup(format);
  id->size = (guint64)size;
  id->mtime_ns = mtime;
  id->sha256_head = g_strdup(sha);
  return id;
}
