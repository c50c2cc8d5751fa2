/*
 * overlay.c: creating, reflashing and removing per-guest qcow2 overlays, and
 * guarding them against a changed base (see overlay.h).
 *
 * Each creation is: mkstemp next to the target (same filesystem, so the
 * rename is atomic), content, fsync, rename. Any failure unlinks the temp, so
 * the only files that ever carry an overlay's name are complete ones.
 * Creation without REPLACE renames with RENAME_NOREPLACE: an overlay that
 * appeared meanwhile is kept, never clobbered.
 *
 * Only the first overlay of a batch is made by `qemu-img create`; the rest
 * are copies of its bytes. qemu-img costs ~40 ms of CPU per run (process and
 * block-layer start-up), which caps a 2-core host at a few tens of overlays
 * per second however many run in parallel, while a 192 KiB copy + fsync takes
 * ~1 ms. This is sound because a qcow2 file has no per-image identity: two
 * `qemu-img create` runs with the same base and options give identical bytes
 * (checked with cmp on qemu-img 7.2; the tests run qemu-img check on copies).
 *
 * Copies, and the fsync + rename of qemu-img's output, are done by worker
 * threads (file_work_*): on a busy host one fsync takes tens of ms, which
 * the caller's loop must not wait for. Everything else (the job's state,
 * the reports) stays on the caller's context.
 */
#include "overlay/overlay.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The first overlay of a job is made by qemu-img; the others are copies of
 * its bytes (qcow2 has no per-image id, so overlays over the same base with
 * the same options are byte-identical). */
typedef enum { TEMPLATE_NONE, TEMPLATE_PENDING, TEMPLATE_READY, TEMPLATE_OFF } TemplateState;

/* An overlay bigger than this (a huge virtual disk's L1 table) is not kept in
 * memory; every guest then runs qemu-img. */
#define TEMPLATE_MAX (16 * 1024 * 1024)

typedef struct {
  char *base_path;
  char *base_format;
  char **paths;
  guint n, next, running, max_parallel, n_created, n_failed;
  NfOverlayEnsureFlags flags;
  GError *first_error;
  NfOverlayItemFunc item_cb;
  gpointer item_data;
  TemplateState tstate;
  GBytes *template;
} EnsureJob;

typedef struct {
  GTask *task; /* strong */
  guint index;
  gboolean as_template;
  char *tmp;
} EnsureItem;

/* The file side of one overlay, done by a worker thread so that the
 * caller's loop never waits on the disk (an fsync takes tens of ms on a
 * busy host): write `bytes` to a new temp (or take qemu-img's `tmp`), fsync,
 * rename. It touches nothing of the job. */
typedef struct {
  GTask *task; /* the ensure task, strong */
  guint index;
  char *path;
  char *tmp;
  GBytes *bytes;
  gboolean replace;
  gboolean created;
} FileWork;

/* File works in flight, for nf_overlay_wait_all(). */
static guint file_works;
static GMutex file_works_lock;
static GCond file_works_cond;

static void ensure_job_free(gpointer data);
static void ensure_pump(GTask *task);
static void ensure_report(GTask *task, guint index, gboolean created, GError *error);
static gboolean ensure_needed(GTask *task, guint index);
static char *ensure_mktemp(const char *path, int *fd, GError **error);
static gboolean ensure_spawn(GTask *task, guint index, gboolean as_template);
static void ensure_created_cb(GObject *source, GAsyncResult *res, gpointer data);
static void file_work_start(GTask *task, guint index, char *tmp, GBytes *bytes);
static void file_work_free(gpointer data);
static void file_work_thread(GTask *t, gpointer source, gpointer data, GCancellable *cancellable);
static void file_work_done_cb(GObject *source, GAsyncResult *res, gpointer data);
static gboolean ensure_commit(const char *tmp, const char *path, gboolean replace,
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
  g_clear_pointer(&job->template, g_bytes_unref);
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

/* TRUE if paths[index] must be made; otherwise it is reported (present, or
 * in the way) and the caller moves on. */
static gboolean ensure_needed(GTask *task, guint index)
{
  EnsureJob *job = g_task_get_task_data(task);
  const char *path = job->paths[index];
  struct stat st;
  if ((job->flags & NF_OVERLAY_ENSURE_REPLACE) || lstat(path, &st) < 0)
    return TRUE;
  GError *error = NULL;
  if (!S_ISREG(st.st_mode))
    g_set_error(&error, NF_OVERLAY_ERROR, NF_OVERLAY_ERROR_IO,
                "overlay %s exists but is not a regular file: remove it", path);
  ensure_report(task, index, FALSE, error);
  return FALSE;
}

static char *ensure_mktemp(const char *path, int *fd, GError **error)
{
  g_autofree char *tmp = g_strconcat(path, ".tmp-XXXXXX", NULL);
  *fd = g_mkstemp_full(tmp, O_RDWR | O_CLOEXEC, 0600);
  if (*fd < 0) {
    int e = errno;
    g_set_error(error, NF_OVERLAY_ERROR, NF_OVERLAY_ERROR_IO, "cannot create overlay %s: %s", path,
                g_strerror(e));
    return NULL;
  }
  return g_steal_pointer(&tmp);
}

static gboolean ensure_spawn(GTask *task, guint index, gboolean as_template)
{
  EnsureJob *job = g_task_get_task_data(task);
  const char *path = job->paths[index];
  GError *error = NULL;
  int fd = -1;
  g_autofree char *tmp = ensure_mktemp(path, &fd, &error);
  if (!tmp) {
    ensure_report(task, index, FALSE, error);
    return FALSE;
  }
  close(fd);
  const char *argv[] = {"qemu-img",       "create", "-q",           "-f", "qcow2", "-F",
                        job->base_format, "-b",     job->base_path, tmp,  NULL};
  g_autoptr(GSubprocess) proc = nf_overlay_tool_spawn(
      argv, G_SUBPROCESS_FLAGS_STDOUT_SILENCE | G_SUBPROCESS_FLAGS_STDERR_PIPE, -1, &error);
  if (!proc) {
    unlink(tmp);
    GError *e =
        g_error_new(NF_OVERLAY_ERROR, NF_OVERLAY_ERROR_TOOL,
                    "cannot create overlay %s: cannot run qemu-img (install qemu-utils): %s", path,
                    error->message);
    g_error_free(error);
    ensure_report(task, index, FALSE, e);
    return FALSE;
  }
  EnsureItem *item = g_new0(EnsureItem, 1);
  item->task = g_object_ref(task);
  item->index = index;
  item->as_template = as_template;
  item->tmp = g_steal_pointer(&tmp);
  job->running++;
  /* No cancellable here: a started qemu-img is left to finish (~40 ms) so that
   * its temp can be renamed or removed knowing nobody writes it any more. */
  g_subprocess_communicate_utf8_async(proc, NULL, NULL, ensure_created_cb, item);
  return TRUE;
}

/* fsync + rename; runs in a worker thread. */
static gboolean ensure_commit(const char *tmp, const char *path, gboolean replace,
                              gboolean *created, GError **error)
{
  int fd = open(tmp, O_RDONLY | O_CLOEXEC);
  if (fd < 0 || fsync(fd) < 0) {
    int e = errno;
    if (fd >= 0)
      close(fd);
    g_set_error(error, NF_OVERLAY_ERROR, NF_OVERLAY_ERROR_IO, "cannot create overlay %s: %s", path,
                g_strerror(e));
    return FALSE;
  }
  close(fd);
  if (renameat2(AT_FDCWD, tmp, AT_FDCWD, path, replace ? 0 : RENAME_NOREPLACE) < 0) {
    int e = errno;
    if (e == EEXIST) { /* someone else made it meanwhile: theirs stands */
      *created = FALSE;
      unlink(tmp);
      return TRUE;
    }
    g_set_error(error, NF_OVERLAY_ERROR, NF_OVERLAY_ERROR_IO, "cannot create overlay %s: %s", path,
                g_strerror(e));
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
  g_autofree char *tmp = item->tmp;
  guint index = item->index;
  gboolean as_template = item->as_template;
  GError *error = NULL;
  g_free(item);

  if (g_subprocess_communicate_utf8_finish(proc, res, NULL, &err, &error)) {
    if (!g_subprocess_get_if_exited(proc) || g_subprocess_get_exit_status(proc) != 0) {
      g_autofree char *line = nf_overlay_tool_first_line(err);
      g_set_error(&error, NF_OVERLAY_ERROR, NF_OVERLAY_ERROR_TOOL, "cannot create overlay %s: %s",
                  path, *line ? line : "qemu-img failed without a message");
    } else {
      if (as_template) {
        g_autofree char *bytes = NULL;
        gsize len = 0;
        if (g_file_get_contents(tmp, &bytes, &len, NULL) && len <= TEMPLATE_MAX) {
          job->template = g_bytes_new_take(g_steal_pointer(&bytes), len);
          job->tstate = TEMPLATE_READY;
        } else {
          job->tstate = TEMPLATE_OFF;
        }
      }
      /* Its slot (job->running) passes to the file work. */
      file_work_start(task, index, g_steal_pointer(&tmp), NULL);
      ensure_pump(task);
      return;
    }
  } else {
    g_prefix_error(&error, "cannot create overlay %s: ", path);
  }
  unlink(tmp);
  if (as_template && job->tstate == TEMPLATE_PENDING)
    job->tstate = TEMPLATE_NONE; /* the next guest tries again */
  job->running--;
  ensure_report(task, index, FALSE, error);
  ensure_pump(task);
}

/* Takes `tmp` (qemu-img's output to commit) or copies `bytes` (a template). */
static void file_work_start(GTask *task, guint index, char *tmp, GBytes *bytes)
{
  EnsureJob *job = g_task_get_task_data(task);
  FileWork *w = g_new0(FileWork, 1);
  w->task = g_object_ref(task);
  w->index = index;
  w->path = g_strdup(job->paths[index]);
  w->tmp = tmp;
  w->bytes = bytes ? g_bytes_ref(bytes) : NULL;
  w->replace = (job->flags & NF_OVERLAY_ENSURE_REPLACE) != 0;
  g_mutex_lock(&file_works_lock);
  file_works++;
  g_mutex_unlock(&file_works_lock);
  g_autoptr(GTask) t = g_task_new(NULL, NULL, file_work_done_cb, NULL);
  g_task_set_task_data(t, w, file_work_free);
  g_task_run_in_thread(t, file_work_thread);
}

static void file_work_free(gpointer data)
{
  FileWork *w = data;
  g_clear_object(&w->task);
  g_free(w->path);
  g_free(w->tmp);
  g_clear_pointer(&w->bytes, g_bytes_unref);
  g_free(w);
}

static void file_work_thread(GTask *t, gpointer source, gpointer data, GCancellable *cancellable)
{
  FileWork *w = data;
  GError *error = NULL;
  if (w->bytes) {
    int fd = -1;
    w->tmp = ensure_mktemp(w->path, &fd, &error);
    gsize len = 0, done = 0;
    const guint8 *bytes = g_bytes_get_data(w->bytes, &len);
    while (w->tmp && done < len) {
      ssize_t n = write(fd, bytes + done, len - done);
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0) {
        int e = n < 0 ? errno : EIO;
        g_set_error(&error, NF_OVERLAY_ERROR, NF_OVERLAY_ERROR_IO, "cannot create overlay %s: %s",
                    w->path, g_strerror(e));
        break;
      }
      done += (gsize)n;
    }
    if (fd >= 0)
      close(fd);
  }
  if (!error)
    ensure_commit(w->tmp, w->path, w->replace, &w->created, &error);
  if (error && w->tmp)
    unlink(w->tmp);
  g_mutex_lock(&file_works_lock);
  if (--file_works == 0)
    g_cond_broadcast(&file_works_cond);
  g_mutex_unlock(&file_works_lock);
  if (error)
    g_task_return_error(t, error);
  else
    g_task_return_boolean(t, TRUE);
}

static void file_work_done_cb(GObject *source, GAsyncResult *res, gpointer data)
{
  FileWork *w = g_task_get_task_data(G_TASK(res));
  g_autoptr(GTask) task = g_object_ref(w->task);
  EnsureJob *job = g_task_get_task_data(task);
  GError *error = NULL;
  g_task_propagate_boolean(G_TASK(res), &error);
  job->running--;
  ensure_report(task, w->index, w->created, error);
  ensure_pump(task);
}

static void ensure_pump(GTask *task)
{
  EnsureJob *job = g_task_get_task_data(task);
  GCancellable *cancellable = g_task_get_cancellable(task);
  while (job->next < job->n && !g_cancellable_is_cancelled(cancellable)) {
    if (!ensure_needed(task, job->next)) {
      job->next++;
      continue;
    }
    if (job->tstate == TEMPLATE_PENDING || job->running >= job->max_parallel)
      break;
    if (job->tstate == TEMPLATE_READY) {
      job->running++;
      file_work_start(task, job->next++, NULL, job->template);
      continue;
    }
    gboolean as_template = job->tstate == TEMPLATE_NONE;
    if (ensure_spawn(task, job->next++, as_template) && as_template)
      job->tstate = TEMPLATE_PENDING;
  }
  if (job->running > 0 || g_task_get_completed(task))
    return;
  GError *error = NULL;
  if (g_cancellable_set_error_if_cancelled(cancellable, &error)) {
    g_task_return_error(task, error);
    return;
  }
  if (job->first_error) {
    error = g_error_copy(job->first_error);
    if (job->n_failed > 1)
      g_prefix_error(&error, "%u of %u overlays failed; first: ", job->n_failed, job->n);
    g_task_return_error(task, error);
    return;
  }
  g_task_return_boolean(task, TRUE);
}

void nf_overlay_wait_all(void)
{
  nf_overlay_tool_wait_all();
  g_mutex_lock(&file_works_lock);
  while (file_works > 0)
    g_cond_wait(&file_works_cond, &file_works_lock);
  g_mutex_unlock(&file_works_lock);
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
  job->max_parallel = max_parallel ? max_parallel : MAX(2, g_get_num_processors());
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
  nf_overlay_ensure_async(base, paths, flags, max_parallel, NULL, item_cb, item_data, sync_done_cb,
                          &res);
  while (!res)
    g_main_context_iteration(ctx, TRUE);
  g_main_context_pop_thread_default(ctx);
  return nf_overlay_ensure_finish(res, n_created, error);
}

gboolean nf_overlay_reflash(const NfOverlayBase *base, const char *path, GError **error)
{
  const char *paths[] = {path, NULL};
  return nf_overlay_ensure_sync(base, paths, NF_OVERLAY_ENSURE_REPLACE, 1, NULL, NULL, NULL, error);
}

gboolean nf_overlay_remove(const char *path, GError **error)
{
  if (unlink(path) < 0 && errno != ENOENT) {
    int e = errno;
    g_set_error(error, NF_OVERLAY_ERROR, NF_OVERLAY_ERROR_IO, "cannot remove overlay %s: %s", path,
                g_strerror(e));
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
                "guests on it would corrupt their disks. Restore the original base, or recreate "
                "every guest's disk from this base (what the guests wrote is lost)",
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
    if (!g_str_has_suffix(name, ".qcow2") && !strstr(name, ".qcow2.tmp-"))
      continue;
    g_autofree char *p = g_build_filename(dir, name, NULL);
    if (!nf_overlay_remove(p, error))
      return FALSE;
  }
  /* The base's record last: cut short before it (a kill, a power cut),
   * the overlays left are still checked against the old base, where with
   * no record they would be taken as made from whatever base comes next. */
  g_autofree char *record = g_build_filename(dir, NF_OVERLAY_BASE_RECORD, NULL);
  if (g_file_test(record, G_FILE_TEST_EXISTS) && !nf_overlay_remove(record, error))
    return FALSE;
  if (rmdir(dir) < 0 && errno != ENOTEMPTY && errno != EEXIST) {
    int e = errno;
    g_set_error(error, NF_OVERLAY_ERROR, NF_OVERLAY_ERROR_IO, "cannot remove %s: %s", dir,
                g_strerror(e));
    return FALSE;
  }
  return TRUE;
}
