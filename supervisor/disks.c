/*
 * disks.c: per-guest overlays for a fleet (see disks.h), on top of the
 * overlay/ library, which knows nothing of fleets or guests.
 *
 * Requests become jobs. A job is WAITING behind an earlier job of the same
 * guest (two qemu-img runs must never race on one file, and qemu-io holds
 * the overlay's write lock), PENDING until the next idle turn of the loop,
 * where all pending jobs start as one nf_overlay_ensure_async() batch per
 * kind (make-if-missing, reflash), then RUNNING: overlay being made, then,
 * for Nerves, waiting for or running its qemu-io serial write. An overlay
 * whose serial could not be written is removed, so a later run makes it
 * again rather than booting a device without its serial.
 *
 * The NfDisks is refcounted internally: batches and serial writes in flight
 * keep it alive past nf_disks_free(), whose caller may iterate the loop
 * again (tests) and deliver their completions; after free they only tidy up.
 */
#include "supervisor/disks.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/statvfs.h>

#include "overlay/overlay.h"
#include "supervisor/identity.h"

typedef enum { JOB_WAITING, JOB_PENDING, JOB_RUNNING } JobStage;

struct NfDisksJob {
  NfDisks *disks;
  guint id;
  gboolean reflash;
  char *path;
  JobStage stage;
  NfDisksDoneFunc done; /* NULL once cancelled */
  gpointer user_data;
  NfDisksJob *next;  /* the same guest's next request, waiting for this one */
  gboolean existing; /* only the serial, into an overlay that was there */
};

struct NfDisks {
  gint refs; /* the owner's, one per batch and one per serial write in flight */
  gboolean closed;
  /* copied from the config: completions may run after the fleet is gone */
  NfProfile profile;
  char *fleet_name;
  char *serial_format;
  gboolean reflash_all;
  NfOverlayBase *base;
  char *dir;
  NfOverlayEnvCache *env_cache;
  GPtrArray *pending[2]; /* jobs for the next batch: [0] make if missing, [1] reflash */
  GSource *flush;        /* idle that starts the batches */
  GHashTable *busy;      /* id -> the guest's current job (head of its chain) */
  GQueue injections;     /* RUNNING jobs waiting for a qemu-io slot */
  guint injecting, max_injecting;
  guint batches; /* in flight */
};

typedef struct {
  NfDisks *disks;
  GPtrArray *jobs; /* by index in the batch; a job is gone once reported */
} Batch;

typedef struct {
  guint remaining;
  GError *error;
} Prepare;

static NfDisks *disks_ref(NfDisks *d);
static void disks_unref(NfDisks *d);
static void job_free(NfDisksJob *job);
static void job_finish(NfDisksJob *job, const GError *error);
static void enqueue(NfDisks *d, NfDisksJob *job);
static void advance(NfDisks *d, NfDisksJob *job);
static gboolean flush_cb(gpointer data);
static void start_batch(NfDisks *d, guint kind);
static void item_cb(guint index, const char *path, gboolean created, const GError *error,
                    gpointer data);
static void batch_done_cb(GObject *source, GAsyncResult *res, gpointer data);
static void pump_injections(NfDisks *d);
static void injected_cb(GObject *source, GAsyncResult *res, gpointer data);
static void drop_unwritten(NfDisksJob *job, GError **error);
static void prepared_cb(const GError *error, gpointer data);
static void explain_full(const char *dir, GError **error);

NfDisks *nf_disks_new(const NfFleetConfig *cfg, const NfFleetPaths *paths, GError **error)
{
  g_autoptr(NfOverlayBase) base = nf_overlay_base_inspect(cfg->disk, cfg->disk_format, error);
  if (base == NULL) {
    g_prefix_error(error, cfg->profile == NF_PROFILE_NERVES ? "--firmware: " : "--disk: ");
    return NULL;
  }
  g_autofree char *dir = g_build_filename(paths->state_dir, "disks", NULL);
  nf_overlay_clean_temps(dir);
  /* --reflash-all: every overlay goes before the new base is recorded, also
   * those of guests outside this run (a later `scale` up or a larger run
   * would otherwise find them on the old base, which the record no longer
   * names), and those this run fails to remake. */
  if (cfg->reflash_all
          ? !nf_overlay_remove_all(dir, error) || !nf_overlay_record_base(dir, base, error)
          : !nf_overlay_check_base(dir, base, error)) {
    /* --reflash-all is the way out of a changed base only: a disk that
     * cannot be written is not cured by writing more. */
    if (g_error_matches(*error, NF_OVERLAY_ERROR, NF_OVERLAY_ERROR_BASE_CHANGED))
      g_prefix_error(error, "the fleet's disks cannot be used (start with --reflash-all to "
                            "recreate every guest's disk from the new base): ");
    else
      explain_full(dir, error);
    return NULL;
  }
  NfDisks *d = g_new0(NfDisks, 1);
  d->refs = 1;
  d->profile = cfg->profile;
  d->fleet_name = g_strdup(cfg->name);
  d->serial_format = g_strdup(cfg->serial_format);
  d->reflash_all = cfg->reflash_all;
  d->base = g_steal_pointer(&base);
  d->dir = g_steal_pointer(&dir);
  d->env_cache = nf_overlay_env_cache_new(0x2000, 0x20000);
  d->pending[0] = g_ptr_array_new();
  d->pending[1] = g_ptr_array_new();
  d->busy = g_hash_table_new(NULL, NULL);
  g_queue_init(&d->injections);
  d->max_injecting = MAX(2, g_get_num_processors());
  return d;
}

static NfDisks *disks_ref(NfDisks *d)
{
  d->refs++;
  return d;
}

static void disks_unref(NfDisks *d)
{
  if (--d->refs > 0)
    return;
  nf_overlay_base_free(d->base);
  nf_overlay_env_cache_free(d->env_cache);
  g_ptr_array_unref(d->pending[0]);
  g_ptr_array_unref(d->pending[1]);
  g_hash_table_unref(d->busy);
  g_free(d->fleet_name);
  g_free(d->serial_format);
  g_free(d->dir);
  g_free(d);
}

void nf_disks_free(NfDisks *d)
{
  if (d == NULL)
    return;
  d->closed = TRUE;
  if (d->flush) {
    g_source_destroy(d->flush);
    g_clear_pointer(&d->flush, g_source_unref);
  }
  /* Nothing new starts; queued work is dropped, started work is let finish. */
  GHashTableIter it;
  gpointer value;
  g_hash_table_iter_init(&it, d->busy);
  while (g_hash_table_iter_next(&it, NULL, &value)) {
    NfDisksJob *head = value;
    for (NfDisksJob *w = g_steal_pointer(&head->next), *n; w; w = n) {
      n = w->next;
      job_free(w);
    }
    head->done = NULL;
    if (head->stage == JOB_PENDING) {
      g_hash_table_iter_remove(&it);
      job_free(head);
    }
  }
  g_ptr_array_set_size(d->pending[0], 0);
  g_ptr_array_set_size(d->pending[1], 0);
  for (NfDisksJob *job; (job = g_queue_pop_head(&d->injections));) {
    drop_unwritten(job, NULL);
    job_finish(job, NULL);
  }
  nf_overlay_wait_all();
  disks_unref(d);
}

char *nf_disks_overlay_path(NfDisks *d, guint id)
{
  g_autofree char *name = nf_identity_name(d->fleet_name, id);
  return nf_overlay_path(d->dir, name);
}

static void job_free(NfDisksJob *job)
{
  g_free(job->path);
  g_free(job);
}

NfDisksJob *nf_disks_ensure_async(NfDisks *d, guint id, gboolean reflash, NfDisksDoneFunc done,
                                  gpointer user_data)
{
  NfDisksJob *head = g_hash_table_lookup(d->busy, GUINT_TO_POINTER(id));
  g_autofree char *path = nf_disks_overlay_path(d, id);
  if (!reflash && !head && g_file_test(path, G_FILE_TEST_EXISTS))
    return NULL;
  NfDisksJob *job = g_new0(NfDisksJob, 1);
  job->disks = d;
  job->id = id;
  job->reflash = reflash;
  job->path = g_steal_pointer(&path);
  job->done = done;
  job->user_data = user_data;
  if (head) {
    while (head->next)
      head = head->next;
    head->next = job;
    job->stage = JOB_WAITING;
  } else {
    g_hash_table_insert(d->busy, GUINT_TO_POINTER(id), job);
    enqueue(d, job);
  }
  return job;
}

gboolean nf_disks_cancel(NfDisksJob *job)
{
  NfDisks *d = job->disks;
  switch (job->stage) {
  case JOB_WAITING: {
    NfDisksJob *prev = g_hash_table_lookup(d->busy, GUINT_TO_POINTER(job->id));
    while (prev->next != job)
      prev = prev->next;
    prev->next = job->next;
    job_free(job);
    return TRUE;
  }
  case JOB_PENDING:
    g_ptr_array_remove(d->pending[job->reflash ? 1 : 0], job);
    advance(d, job);
    job_free(job);
    return TRUE;
  case JOB_RUNNING:
  default:
    job->done = NULL;
    return FALSE;
  }
}

static void enqueue(NfDisks *d, NfDisksJob *job)
{
  job->stage = JOB_PENDING;
  g_ptr_array_add(d->pending[job->reflash ? 1 : 0], job);
  if (d->flush == NULL) {
    /* One idle turn gathers the requests of this loop iteration (a limiter
     * admitting several guests, a `reflash all`) into one batch. */
    d->flush = g_idle_source_new();
    g_source_set_callback(d->flush, flush_cb, d, NULL);
    g_source_attach(d->flush, g_main_context_get_thread_default());
  }
}

/* `job` is done with its guest's overlay: the next request of that guest
 * (if any) may start. */
static void advance(NfDisks *d, NfDisksJob *job)
{
  gpointer key = GUINT_TO_POINTER(job->id);
  if (g_hash_table_lookup(d->busy, key) != job)
    return;
  NfDisksJob *next = g_steal_pointer(&job->next);
  if (next == NULL || d->closed) {
    g_hash_table_remove(d->busy, key);
    return;
  }
  g_hash_table_insert(d->busy, key, next);
  enqueue(d, next);
}

static void job_finish(NfDisksJob *job, const GError *error)
{
  NfDisks *d = job->disks;
  advance(d, job);
  if (job->done && !d->closed)
    job->done(error, job->user_data);
  job_free(job);
}

static gboolean flush_cb(gpointer data)
{
  NfDisks *d = data;
  g_clear_pointer(&d->flush, g_source_unref);
  for (guint kind = 0; kind < 2; kind++)
    if (d->pending[kind]->len > 0)
      start_batch(d, kind);
  return G_SOURCE_REMOVE;
}

static void start_batch(NfDisks *d, guint kind)
{
  Batch *b = g_new0(Batch, 1);
  b->disks = disks_ref(d);
  d->batches++;
  b->jobs = g_steal_pointer(&d->pending[kind]);
  d->pending[kind] = g_ptr_array_new();
  g_autoptr(GPtrArray) paths = g_ptr_array_new();
  for (guint i = 0; i < b->jobs->len; i++) {
    NfDisksJob *job = g_ptr_array_index(b->jobs, i);
    job->stage = JOB_RUNNING;
    g_ptr_array_add(paths, job->path);
  }
  g_ptr_array_add(paths, NULL);
  nf_overlay_ensure_async(d->base, (const char *const *)paths->pdata,
                          kind ? NF_OVERLAY_ENSURE_REPLACE : NF_OVERLAY_ENSURE_DEFAULT, 0, NULL,
                          item_cb, b, batch_done_cb, b);
}

static void item_cb(guint index, const char *path, gboolean created, const GError *error,
                    gpointer data)
{
  Batch *b = data;
  NfDisksJob *job = g_ptr_array_index(b->jobs, index);
  NfDisks *d = job->disks;
  if (created)
    nf_overlay_env_cache_forget(d->env_cache, path);
  if (error) {
    g_autoptr(GError) explained = g_error_copy(error);
    explain_full(d->dir, &explained);
    job_finish(job, explained);
    return;
  }
  if (created && d->profile == NF_PROFILE_NERVES) {
    if (d->closed) {
      drop_unwritten(job, NULL);
    } else {
      g_queue_push_tail(&d->injections, job);
      pump_injections(d);
      return;
    }
  }
  job_finish(job, error);
}

static void batch_done_cb(GObject *source, GAsyncResult *res, gpointer data)
{
  Batch *b = data;
  /* Each guest's outcome went to item_cb already. */
  nf_overlay_ensure_finish(res, NULL, NULL);
  b->disks->batches--;
  g_ptr_array_unref(b->jobs);
  disks_unref(b->disks);
  g_free(b);
}

/* Starts serial writes while fewer than max_injecting run: each is a qemu-io
 * child, and a scale-up of hundreds must not fork hundreds at once. */
static void pump_injections(NfDisks *d)
{
  while (!d->closed && d->injecting < d->max_injecting && d->injections.length > 0) {
    NfDisksJob *job = g_queue_pop_head(&d->injections);
    GError *error = NULL;
    g_autofree char *serial = nf_identity_serial(d->serial_format, job->id, &error);
    if (serial == NULL) {
      drop_unwritten(job, &error);
      job_finish(job, error);
      g_error_free(error);
      continue;
    }
    d->injecting++;
    nf_overlay_env_set_serial_async(job->path, serial, injected_cb, job);
    disks_ref(d);
  }
}

static void injected_cb(GObject *source, GAsyncResult *res, gpointer data)
{
  NfDisksJob *job = data;
  NfDisks *d = job->disks;
  GError *error = NULL;
  if (!nf_overlay_env_set_finish(res, &error)) {
    if (job->existing) /* a disk the guest may have used: kept, the start fails */
      g_prefix_error(&error, "writing the serial into %s: ", job->path);
    else
      drop_unwritten(job, &error);
    explain_full(d->dir, &error);
  }
  nf_overlay_env_cache_forget(d->env_cache, job->path);
  d->injecting--;
  job_finish(job, error);
  g_clear_error(&error);
  pump_injections(d);
  disks_unref(d);
}

/* A new overlay that did not get its serial is removed: the next request
 * makes it again, instead of finding it present and booting a device
 * without its identity. Prefixes `error` (optional) with what failed. */
static void drop_unwritten(NfDisksJob *job, GError **error)
{
  if (error && *error)
    g_prefix_error(error, "writing the serial into %s: ", job->path);
  nf_overlay_remove(job->path, NULL);
}

static void prepared_cb(const GError *error, gpointer data)
{
  Prepare *p = data;
  p->remaining--;
  if (error && !p->error)
    p->error = g_error_copy(error);
}

/* A write that failed for want of space says so, how much is free and what
 * to do, instead of a bare errno from deep inside qemu-img. */
static void explain_full(const char *dir, GError **error)
{
  struct statvfs st;
  if (error == NULL || *error == NULL)
    return;
  guint64 free_kib =
      statvfs(dir, &st) == 0 ? (guint64)st.f_bavail * st.f_frsize / 1024 : G_MAXUINT64;
  if (strstr((*error)->message, g_strerror(ENOSPC)) == NULL && free_kib >= 1024)
    return;
  g_prefix_error(error,
                 "the filesystem holding %s is full (%" G_GUINT64_FORMAT " KiB free; each guest's "
                 "disk overlay needs about 200 KiB to start and grows as the guest writes): free "
                 "space there (other fleets' state dirs, rotated console.log.1 files), or "
                 "choose another --state-dir: ",
                 dir, free_kib);
}

/* A Nerves guest's existing overlay without its serial: made, but its
 * supervisor was killed (SIGKILL, the OOM killer) before qemu-io wrote the
 * serial, and the file's existence alone says "done". */
/* qemu holds an open file description lock on an image it runs from: a
 * guest left running by the previous supervisor (to be adopted) is not
 * written to, whatever its env says. */
static gboolean overlay_in_use(const char *path)
{
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return FALSE;
  struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
  gboolean used = fcntl(fd, F_OFD_GETLK, &fl) == 0 && fl.l_type != F_UNLCK;
  close(fd);
  return used;
}

static gboolean serial_missing(NfDisks *d, guint id)
{
  g_autofree char *path = nf_disks_overlay_path(d, id);
  if (overlay_in_use(path))
    return FALSE;
  const NfUbootEnv *env = nf_overlay_env_cache_get(d->env_cache, path, NULL);
  g_autofree char *serial = nf_identity_serial(d->serial_format, id, NULL);
  return env && serial && g_strcmp0(nf_ubootenv_get(env, NF_OVERLAY_ENV_SERIAL_KEY), serial) != 0;
}

/* Writes the serial into guest `id`'s existing overlay, as a job of its
 * own (no overlay to make first). */
static NfDisksJob *queue_serial(NfDisks *d, guint id, NfDisksDoneFunc done, gpointer user_data)
{
  NfDisksJob *job = g_new0(NfDisksJob, 1);
  job->disks = d;
  job->id = id;
  job->path = nf_disks_overlay_path(d, id);
  job->done = done;
  job->user_data = user_data;
  job->stage = JOB_RUNNING;
  job->existing = TRUE;
  nf_overlay_env_cache_forget(d->env_cache, job->path);
  g_hash_table_insert(d->busy, GUINT_TO_POINTER(id), job);
  g_queue_push_tail(&d->injections, job);
  pump_injections(d);
  return job;
}

gboolean nf_disks_prepare(NfDisks *d, guint first_id, guint count, GError **error)
{
  /* The batch's children and idles attach to the thread-default context at
   * creation: a private one keeps the caller's sources out of this wait. */
  g_autoptr(GMainContext) ctx = g_main_context_new();
  g_main_context_push_thread_default(ctx);
  Prepare p = {0};
  for (guint i = 0; i < count; i++) {
    guint id = first_id + i;
    if (nf_disks_ensure_async(d, id, d->reflash_all, prepared_cb, &p) ||
        (d->profile == NF_PROFILE_NERVES && serial_missing(d, id) &&
         queue_serial(d, id, prepared_cb, &p)))
      p.remaining++;
  }
  /* Until the batches' own completions ran too: sources left on `ctx` would
   * be dropped with it, and what they hold with them. */
  while (p.remaining > 0 || d->batches > 0 || d->injecting > 0)
    g_main_context_iteration(ctx, TRUE);
  g_main_context_pop_thread_default(ctx);
  if (p.error) {
    g_propagate_error(error, p.error);
    return FALSE;
  }
  return TRUE;
}

const NfUbootEnv *nf_disks_env(NfDisks *d, guint id)
{
  g_autofree char *path = nf_disks_overlay_path(d, id);
  return nf_overlay_env_cache_get(d->env_cache, path, NULL);
}

void nf_disks_remove_all(NfDisks *d)
{
  nf_overlay_remove_all(d->dir, NULL);
}
