/*
 * overlay.c: creating, reflashing and removing per-guest qcow2 overlays, and
 * guarding them against a changed base (see overlay.h).
 *
 * Each creation is: mkstemp next to the target (same filesystem, so the
 * rename is atomic), `qemu-img create` into it, fsync, rename. Any failure
 * unlinks the temp, so the only files that ever carry an overlay's name are
 * complete ones. Creation without REPLACE renames with RENAME_NOREPLACE: an
 * overlay that appeared meanwhile is kept, never clobbered.
 */
#include "overlay/overlay.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
  char *base_path;
  char *base_format;
  char **paths;
  guint n, next, running, max_parallel, n_created, n_failed;
  NfOverlayEnsureFlags flags;
  GError *first_error;
  NfOverlayItemFunc item_cb;
  gpointer item_data;
} EnsureJob;

typedef struct {
  GTask *task; /* strong */
  guint index;
  char *tmp;
} EnsureItem;

static void ensure_job_free(gpointer data);
static void ensure_pump(GTask *task);
static void ensure_report(GTask *task, guint index, gboolean created, GError *error);
static void ensure_start(GTask *task, guint index);
static void ensure_created_cb(GObject *source, GAsyncResult *res, gpointer data);
static gboolean ensure_commit(EnsureJob *job, const char *tmp, const char *path,
                              gboolean *created, GError **error);
static gboolean dir_has_overlays(const char *dir);
static void sync_done_cb(GObject *source, GAsyncResult *res, gpointer data);

char *nf_overlay_path(const char *dir, const char *name)
{
  g_autofree char *file = g_strconcat(name, ".qcow2", NULL);
  return g_build_filename(dir, file, NULL);
}

static void ensure_job_free(gpointer data)
{
  EnsureJob *job = data;
  g_free(job->base_path);
  g_free(job->base_format);
  g_strfreev(job->paths);
  g_clear_error(&job->first_error);
  g_free(job);
}

static void ensure_report(GTask *task, guint index, gboolean created, GError *error)
{
  EnsureJob *job = g_task_get_task_data(task);
  if (created)
    job->n_created++;
  if (error) {
    job->n_failed++;
    if (!job->first_error)
      job->first_error = g_error_copy(error);
  }
  if (job->item_cb)
    job->item_cb(index, job->paths[index], created, error, job->item_data);
  g_clear_error(&error);
}

static void ensure_start(GTask *task, guint index)
{
  EnsureJob *job = g_task_get_task_data(task);
  const char *path = job->paths[index];
  struct stat st;
  if (!(job->flags & NF_OVERLAY_ENSURE_REPLACE) && lstat(path, &st) == 0) {
    GError *error = NULL;
    if (!S_ISREG(st.st_mode))
      g_set_error(&error, NF_OVERLAY_ERROR, NF_OVERLAY_ERROR_IO,
                  "overlay %s exists but is not a regular file: remove it", path);
    ensure_report(task, index, FALSE, error);
    return;
  }
  g_autofree char *tmp = g_strconcat(path, ".tmp-XXXXXX", NULL);
  int fd = g_mkstemp_full(tmp, O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0) {
    int e = errno;
    GError *error = g_error_new(NF_OVERLAY_ERROR, NF_OVERLAY_ERROR_IO,
                                "cannot create overlay %s: %s", path, g_strerror(e));
    ensure_report(task, index, FALSE, error);
    return;
  }
  close(fd);
  const char *argv[] = {"qemu-img", "create", "-q", "-f", "qcow2", "-F", job->base_format,
                        "-b", job->base_path, tmp, NULL};
  GError *error = NULL;
  g_autoptr(GSubprocess) proc = g_subprocess_newv(
      argv, G_SUBPROCESS_FLAGS_STDOUT_SILENCE | G_SUBPROCESS_FLAGS_STDERR_PIPE, &error);
  if (!proc) {
    unlink(tmp);
    g_prefix_error(&error, "cannot create overlay %s: cannot run qemu-img (install qemu-utils): ",
                   path);
    error->domain = NF_OVERLAY_ERROR;
    error->code = NF_OVERLAY_ERROR_TOOL;
    ensure_report(task, index, FALSE, error);
    return;
  }
  EnsureItem *item = g_new0(EnsureItem, 1);
  item->task = g_object_ref(task);
  item->index = index;
  item->tmp = g_steal_pointer(&tmp);
  job->running++;
  /* No cancellable here: a started qemu-img is left to finish (~10 ms) so that
   * its temp can be renamed or removed knowing nobody writes it any more. */
  g_subprocess_communicate_utf8_async(proc, NULL, NULL, ensure_created_cb, item);
}

static gboolean ensure_commit(EnsureJob *job, const char *tmp, const char *path,
                              gboolean *created, GError **error)
{
  int fd = open(tmp, O_RDONLY | O_CLOEXEC);
  if (fd < 0 || fsync(fd) < 0) {
    int e = errno;
    if (fd >= 0)
      close(fd);
    g_set_error(error, NF_OVERLAY_ERROR, NF_OVERLAY_ERROR_IO, "cannot create overlay %s: %s",
                path, g_strerror(e));
    return FALSE;
  }
  close(fd);
  unsigned int how = (job->flags & NF_OVERLAY_ENSURE_REPLACE) ? 0 : RENAME_NOREPLACE;
  if (renameat2(AT_FDCWD, tmp, AT_FDCWD, path, how) < 0) {
    int e = errno;
    if (e == EEXIST) { /* someone else made it meanwhile: theirs stands */
      *created = FALSE;
      unlink(tmp);
      return TRUE;
    }
    g_set_error(error, NF_OVERLAY_ERROR, NF_OVERLAY_ERROR_IO, "cannot create overlay %s: %s",
                path, g_strerror(e));
    return FALSE;
  }
  *created = TRUE;
  return TRUE;
}

static void ensure_created_cb(GObject *source, GAsyncResult *res, gpointer data)
{
  EnsureItem *item = data;
  g_autoptr(GTask) task = item->task;
  EnsureJob *job = g_task_get_task_data(task);
  GSubprocess *proc = G_SUBPROCESS(source);
  const char *path = job->paths[item->index];
  g_autofree char *err = NULL;
  GError *error = NULL;
  gboolean created = FALSE;

  if (g_subprocess_communicate_utf8_finish(proc, res, NULL, &err, &error)) {
    if (!g_subprocess_get_if_exited(proc) || g_subprocess_get_exit_status(proc) != 0) {
      g_autofree char *line = nf_overlay_tool_first_line(err);
      g_set_error(&error, NF_OVERLAY_ERROR, NF_OVERLAY_ERROR_TOOL, "cannot create overlay %s: %s",
                  path, *line ? line : "qemu-img failed without a message");
    } else {
      ensure_commit(job, item->tmp, path, &created, &error);
    }
  } else {
    g_prefix_error(&error, "cannot create overlay %s: ", path);
  }
  if (error)
    unlink(item->tmp);
  guint index = item->index;
  g_free(item->tmp);
  g_free(item);
  job->running--;
  ensure_report(task, index, created, error);
  ensure_pump(task);
}

static void ensure_pump(GTask *task)
{
  EnsureJob *job = g_task_get_task_data(task);
  GCancellable *cancellable = g_task_get_cancellable(task);
  while (job->running < job->max_parallel && job->next < job->n &&
         !g_cancellable_is_cancelled(cancellable))
    ensure_start(task, job->next++);
  if (job->running > 0 || g_task_get_completed(task) || g_task_had_error(task))
    return;
  if (job->next < job->n || g_cancellable_is_cancelled(cancellable)) {
    GError *error = NULL;
    if (g_cancellable_set_error_if_cancelled(cancellable, &error)) {
      g_task_return_error(task, error);
      return;
    }
  }
  if (job->first_error) {
    GError *error = g_error_copy(job->first_error);
    if (job->n_failed > 1)
      g_prefix_error(&error, "%u of %u overlays failed; first: ", job->n_failed, job->n);
    g_task_return_error(task, error);
    return;
  }
  g_task_return_boolean(task, TRUE);
}

void nf_overlay_ensure_async(const NfOverlayBase *base, const char *const *paths,
                             NfOverlayEnsureFlags flags, guint max_parallel,
                             GCancellable *cancellable, NfOverlayItemFunc item_cb,
                             gpointer item_data, GAsyncReadyCallback done_cb, gpointer user_data)
{
  EnsureJob *job = g_new0(EnsureJob, 1);
  job->base_path = g_strdup(base->path);
  job->base_format = g_strdup(base->format);
  job->paths = g_strdupv((char **)paths);
  job->n = g_strv_length(job->paths);
  job->max_parallel = max_parallel ? max_parallel : 4;
  job->flags = flags;
  job->item_cb = item_cb;
  job->item_data = item_data;
  g_autoptr(GTask) task = g_task_new(NULL, cancellable, done_cb, user_data);
  g_task_set_source_tag(task, nf_overlay_ensure_async);
  g_task_set_task_data(task, job, ensure_job_free);
  ensure_pump(task);
}

gboolean nf_overlay_ensure_finish(GAsyncResult *result, guint *n_created, GError **error)
{
  g_return_val_if_fail(g_task_is_valid(result, NULL), FALSE);
  EnsureJob *job = g_task_get_task_data(G_TASK(result));
  if (n_created)
    *n_created = job->n_created;
  return g_task_propagate_boolean(G_TASK(result), error);
}

static void sync_done_cb(GObject *source, GAsyncResult *res, gpointer data)
{
  GAsyncResult **out = data;
  *out = g_object_ref(res);
}

gboolean nf_overlay_ensure_sync(const NfOverlayBase *base, const char *const *paths,
                                NfOverlayEnsureFlags flags, guint max_parallel,
                                NfOverlayItemFunc item_cb, gpointer item_data, guint *n_created,
                                GError **error)
{
  g_autoptr(GMainContext) ctx = g_main_context_new();
  g_main_context_push_thread_default(ctx);
  g_autoptr(GAsyncResult) res = NULL;
  nf_overlay_ensure_async(base, paths, flags, max_parallel, NULL, item_cb, item_data,
                          sync_done_cb, &res);
  while (!res)
    g_main_context_iteration(ctx, TRUE);
  g_main_context_pop_thread_default(ctx);
  return nf_overlay_ensure_finish(res, n_created, error);
}

gboolean nf_overlay_reflash(const NfOverlayBase *base, const char *path, GError **error)
{
  const char *paths[] = {path, NULL};
  return nf_overlay_ensure_sync(base, paths, NF_OVERLAY_ENSURE_REPLACE, 1, NULL, NULL, NULL,
                                error);
}

gboolean nf_overlay_remove(const char *path, GError **error)
{
  if (unlink(path) < 0 && errno != ENOENT) {
    int e = errno;
    g_set_error(error, NF_OVERLAY_ERROR, NF_OVERLAY_ERROR_IO, "cannot remove overlay %s: %s",
                path, g_strerror(e));
    return FALSE;
  }
  return TRUE;
}

static gboolean dir_has_overlays(const char *dir)
{
  g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
  const char *name;
  while (d && (name = g_dir_read_name(d)))
    if (g_str_has_suffix(name, ".qcow2"))
      return TRUE;
  return FALSE;
}

gboolean nf_overlay_record_base(const char *dir, const NfOverlayBase *base, GError **error)
{
  if (g_mkdir_with_parents(dir, 0700) < 0) {
    int e = errno;
    g_set_error(error, NF_OVERLAY_ERROR, NF_OVERLAY_ERROR_IO,
                "cannot create overlay directory %s: %s", dir, g_strerror(e));
    return FALSE;
  }
  g_autoptr(NfOverlayBaseId) id = nf_overlay_base_id_compute(base, error);
  g_autofree char *record = g_build_filename(dir, NF_OVERLAY_BASE_RECORD, NULL);
  return id && nf_overlay_base_id_save(id, record, error);
}

gboolean nf_overlay_check_base(const char *dir, const NfOverlayBase *base, GError **error)
{
  if (g_mkdir_with_parents(dir, 0700) < 0) {
    int e = errno;
    g_set_error(error, NF_OVERLAY_ERROR, NF_OVERLAY_ERROR_IO,
                "cannot create overlay directory %s: %s", dir, g_strerror(e));
    return FALSE;
  }
  g_autofree char *record = g_build_filename(dir, NF_OVERLAY_BASE_RECORD, NULL);
  g_autoptr(GError) local = NULL;
  g_autoptr(NfOverlayBaseId) old = nf_overlay_base_id_load(record, &local);
  if (!old && !g_error_matches(local, G_FILE_ERROR, G_FILE_ERROR_NOENT)) {
    if (local->domain == G_FILE_ERROR) {
      g_set_error(error, NF_OVERLAY_ERROR, NF_OVERLAY_ERROR_IO,
                  "cannot read the base identity record: %s", local->message);
      return FALSE;
    }
    g_propagate_error(error, g_steal_pointer(&local));
    return FALSE;
  }
  if (!old || !dir_has_overlays(dir))
    return nf_overlay_record_base(dir, base, error);
  g_autoptr(NfOverlayBaseId) now = nf_overlay_base_id_compute(base, error);
  if (!now)
    return FALSE;
  g_autofree char *diff = nf_overlay_base_id_diff(old, now);
  if (diff) {
    g_set_error(error, NF_OVERLAY_ERROR, NF_OVERLAY_ERROR_BASE_CHANGED,
                "base image %s is not the one the overlays in %s were made from (%s); starting "
                "guests on it would corrupt their disks. Restore the original base, or run "
                "`nervesfleet reflash all` to recreate every guest's disk from this base "
                "(what the guests wrote is lost)",
                now->path, dir, diff);
    return FALSE;
  }
  return TRUE;
}

guint nf_overlay_clean_temps(const char *dir)
{
  guint removed = 0;
  g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
  const char *name;
  while (d && (name = g_dir_read_name(d))) {
    if (!strstr(name, ".qcow2.tmp-"))
      continue;
    g_autofree char *p = g_build_filename(dir, name, NULL);
    if (unlink(p) == 0)
      removed++;
  }
  return removed;
}

gboolean nf_overlay_remove_all(const char *dir, GError **error)
{
  g_autoptr(GError) local = NULL;
  g_autoptr(GDir) d = g_dir_open(dir, 0, &local);
  if (!d) {
    if (g_error_matches(local, G_FILE_ERROR, G_FILE_ERROR_NOENT))
      return TRUE;
    g_propagate_prefixed_error(error, g_steal_pointer(&local), "cannot remove overlays: ");
    return FALSE;
  }
  const char *name;
  while ((name = g_dir_read_name(d))) {
    if (!g_str_has_suffix(name, ".qcow2") && !strstr(name, ".qcow2.tmp-") &&
        strcmp(name, NF_OVERLAY_BASE_RECORD) != 0)
      continue;
    g_autofree char *p = g_build_filename(dir, name, NULL);
    if (!nf_overlay_remove(p, error))
      return FALSE;
  }
  if (rmdir(dir) < 0 && errno != ENOTEMPTY && errno != EEXIST) {
    int e = errno;
    g_set_error(error, NF_OVERLAY_ERROR, NF_OVERLAY_ERROR_IO, "cannot remove %s: %s", dir,
                g_strerror(e));
    return FALSE;
  }
  return TRUE;
}
