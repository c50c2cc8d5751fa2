/*
 * snapshot.c: the snapshot's key and cache, and restores (see snapshot.h);
 * the template build is in snapshot-build.c.
 */
#include "supervisor/snapshot-private.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <glib/gstdio.h>

#include "supervisor/identity.h"
#include "supervisor/qemu-argv.h"

#define KEY_VERSION "nervesfleet-snapshot-v1"
#define HEAD_BYTES (1024 * 1024)      /* hashed of a large guest file */
#define SMALL_FILE (16 * 1024 * 1024) /* hashed whole below this size */

static void clear_source(guint *id);
static char *qemu_version(const char *qemu, GError **error);
static gboolean add_file_identity(GChecksum *key, const char *path, GError **error);
static gboolean cached_is_intact(NfSnapshot *snap);
static gboolean done_idle_cb(gpointer data);

static void clear_source(guint *id)
{
  if (*id) {
    g_source_remove(*id);
    *id = 0;
  }
}

gboolean nf_snapshot_check_config(const NfFleetConfig *config, GError **error)
{
  if (config->profile == NF_PROFILE_NERVES) {
    g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                "--snapshot cannot serve --profile nerves: a restored Nerves device would keep "
                "the template's identity (its firmware reads it once, at boot); drop --snapshot "
                "to boot each device");
    return FALSE;
  }
  if (config->net != NF_NET_NONE) {
    g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                "--snapshot does not support --net yet: restored guests would all carry the "
                "template's DHCP lease and hostname; drop one of the two");
    return FALSE;
  }
  if (config->disk) {
    g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                "--snapshot does not support --disk yet: restored guests would carry the "
                "template's view of its disk into their own overlays; drop one of the two");
    return FALSE;
  }
  return TRUE;
}

static char *qemu_version(const char *qemu, GError **error)
{
  const char *argv[] = {qemu, "--version", NULL};
  g_autofree char *out = NULL;
  int status = 0;
  if (!g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_STDERR_TO_DEV_NULL, NULL, NULL, &out, NULL,
                    &status, error) ||
      !g_spawn_check_wait_status(status, error)) {
    g_prefix_error(error, "--snapshot: cannot read the version of %s: ", qemu);
    return NULL;
  }
  char *nl = strchr(out, '\n');
  if (nl)
    *nl = '\0';
  return g_strdup(out);
}

static gboolean add_file_identity(GChecksum *key, const char *path, GError **error)
{
  struct stat st;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0 || fstat(fd, &st) != 0) {
    int e = errno;
    if (fd >= 0)
      close(fd);
    g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(e), "--snapshot: cannot read %s: %s",
                path, g_strerror(e));
    return FALSE;
  }
  /* Size and mtime catch a rebuilt file at once; the content hash (whole for
   * an initramfs, the head of a large kernel) catches a copy with an old mtime. */
  g_autofree char *stamp = g_strdup_printf("%s\n%lld %lld.%09ld\n", path, (long long)st.st_size,
                                           (long long)st.st_mtim.tv_sec, (long)st.st_mtim.tv_nsec);
  g_checksum_update(key, (const guchar *)stamp, -1);
  gsize want = st.st_size <= SMALL_FILE ? (gsize)st.st_size : HEAD_BYTES;
  g_autofree guchar *buf = g_malloc(MAX(want, 1));
  gsize got = 0;
  while (got < want) {
    ssize_t n = read(fd, buf + got, want - got);
    if (n <= 0)
      break;
    got += (gsize)n;
  }
  close(fd);
  g_checksum_update(key, buf, (gssize)got);
  return TRUE;
}

char *nf_snapshot_sha256_file(const char *path, GError **error)
{
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(e), "cannot read %s: %s", path,
                g_strerror(e));
    return NULL;
  }
  g_autoptr(GChecksum) sum = g_checksum_new(G_CHECKSUM_SHA256);
  g_autofree guchar *buf = g_malloc(HEAD_BYTES);
  ssize_t n;
  while ((n = read(fd, buf, HEAD_BYTES)) > 0)
    g_checksum_update(sum, buf, n);
  int e = errno;
  close(fd);
  if (n < 0) {
    g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(e), "cannot read %s: %s", path,
                g_strerror(e));
    return NULL;
  }
  return g_strdup(g_checksum_get_string(sum));
}

/* The fleet's command line with the identity replaced by the placeholder:
 * also the "argv minus per-guest parts" the key hashes (with no pid file). */
char **nf_snapshot_template_argv(const NfVmEnv *env, const char *pidfile)
{
  const NfFleetConfig *cfg = env->config;
  NfQemuSpec spec = {
      .qemu = env->qemu_path,
      .accel = env->accel,
      .memory_mib = cfg->memory_mib,
      .kernel = cfg->kernel,
      .initrd = cfg->initrd,
      .append = cfg->append,
      .guest_name = "snapshot-template",
      .serial = NF_SNAPSHOT_PLACEHOLDER,
      .pidfile = pidfile,
      .public_qmp = FALSE,
      .extra = cfg->qemu_args,
      .profile = cfg->profile,
      .serial_pad = NF_IDENTITY_SERIAL_MAX,
      .tb_mib = cfg->tb_mib,
  };
  return nf_qemu_argv_build(&spec);
}

NfSnapshot *nf_snapshot_new(const NfVmEnv *env, NfSnapshotNoticeFunc notice_func,
                            NfSnapshotDoneFunc done, gpointer user_data, GError **error)
{
  g_autofree char *version = qemu_version(env->qemu_path, error);
  if (version == NULL)
    return NULL;
  g_autoptr(GChecksum) key = g_checksum_new(G_CHECKSUM_SHA256);
  g_checksum_update(key, (const guchar *)KEY_VERSION "\n", -1);
  g_checksum_update(key, (const guchar *)version, -1);
  if (!add_file_identity(key, env->qemu_path, error) ||
      !add_file_identity(key, env->config->kernel, error) ||
      (env->config->initrd && !add_file_identity(key, env->config->initrd, error)))
    return NULL;
  g_auto(GStrv) argv = nf_snapshot_template_argv(env, NULL);
  for (char **a = argv; *a; a++)
    g_checksum_update(key, (const guchar *)*a, (gssize)strlen(*a) + 1);

  NfSnapshot *snap = g_new0(NfSnapshot, 1);
  snap->env = env;
  snap->notice = notice_func;
  snap->done = done;
  snap->user_data = user_data;
  snap->qemu_version = g_steal_pointer(&version);
  snap->key = g_strndup(g_checksum_get_string(key), 16);
  snap->dir = g_build_filename(g_get_user_cache_dir(), "nervesfleet", "snapshots", snap->key, NULL);
  snap->state_path = g_build_filename(snap->dir, "state", NULL);
  snap->meta_path = g_build_filename(snap->dir, "meta.json", NULL);
  snap->pidfile = g_build_filename(env->paths->runtime_dir, "template.pid", NULL);
  snap->log_dir = g_build_filename(env->paths->state_dir, "template", NULL);
  const guint boot_ms = env->config->boot_timeout_ms;
  snap->build_timeout_ms = boot_ms ? boot_ms : NF_SNAPSHOT_BUILD_TIMEOUT_MS;
  /* The fleet lock is held: a pid file here is a dead supervisor's. */
  g_unlink(snap->pidfile);
  return snap;
}

void nf_snapshot_notice(NfSnapshot *snap, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  g_autofree char *msg = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  if (snap->notice)
    snap->notice(msg, snap->user_data);
}

/* The cached file is used only when its size and hash match what was
 * recorded when it was made; anything else is rebuilt. */
static gboolean cached_is_intact(NfSnapshot *snap)
{
  json_auto_t *meta = json_load_file(snap->meta_path, 0, NULL);
  struct stat st;
  if (meta == NULL || stat(snap->state_path, &st) != 0)
    return FALSE;
  json_int_t size = json_integer_value(json_object_get(meta, "size"));
  const char *want = json_string_value(json_object_get(meta, "sha256"));
  if ((json_int_t)st.st_size != size || want == NULL) {
    nf_snapshot_notice(snap, "snapshot %s is truncated (%lld of %lld bytes); rebuilding it",
                       snap->state_path, (long long)st.st_size, (long long)size);
    return FALSE;
  }
  g_autoptr(GError) error = NULL;
  g_autofree char *have = nf_snapshot_sha256_file(snap->state_path, &error);
  if (have == NULL || !g_str_equal(have, want)) {
    nf_snapshot_notice(snap, "snapshot %s is corrupt (%s); rebuilding it", snap->state_path,
                       have ? "its SHA-256 does not match meta.json" : error->message);
    return FALSE;
  }
  return TRUE;
}

void nf_snapshot_prepare(NfSnapshot *snap)
{
  g_autoptr(GError) error = NULL;
  if (cached_is_intact(snap)) {
    snap->usable = snap->state_path;
    nf_snapshot_notice(snap, "snapshot: restoring every guest from %s", snap->state_path);
    nf_snapshot_finish(snap);
    return;
  }
  nf_snapshot_notice(snap, "snapshot: booting a template guest (logs in %s)", snap->log_dir);
  if (!nf_snapshot_build_start(snap, &error))
    nf_snapshot_build_fail(snap, error->message);
}

const char *nf_snapshot_file(const NfSnapshot *snap)
{
  return snap ? snap->usable : NULL;
}

void nf_snapshot_finish(NfSnapshot *snap)
{
  if (snap->done_idle == 0)
    snap->done_idle = g_idle_add(done_idle_cb, snap);
}

static gboolean done_idle_cb(gpointer data)
{
  NfSnapshot *snap = data;
  snap->done_idle = 0;
  if (snap->done)
    snap->done(snap, snap->user_data);
  return G_SOURCE_REMOVE;
}

void nf_snapshot_restore_failed(NfSnapshot *snap, const char *why)
{
  if (snap->usable == NULL)
    return;
  snap->usable = NULL;
  g_unlink(snap->meta_path);
  g_unlink(snap->state_path);
  nf_snapshot_notice(snap,
                     "snapshot: restore failed (%s); %s removed, guests boot normally from now on",
                     why, snap->state_path);
}

gboolean nf_snapshot_restore_rejected(const char *qemu_stderr)
{
  /* qemu's incoming migration ends with this line, whatever the cause
   * (truncated, foreign or corrupt stream), just before it exits. */
  return qemu_stderr && strstr(qemu_stderr, "load of migration failed") != NULL;
}

void nf_snapshot_cancel(NfSnapshot *snap)
{
  if (snap == NULL)
    return;
  gboolean building = snap->phase != NF_SNAPSHOT_IDLE;
  nf_snapshot_build_stop(snap);
  if (building && snap->tmp_path) {
    g_unlink(snap->tmp_path);
    g_unlink(snap->ok_path);
  }
  clear_source(&snap->done_idle);
}

void nf_snapshot_free(NfSnapshot *snap)
{
  if (snap == NULL)
    return;
  nf_snapshot_cancel(snap);
  g_free(snap->key);
  g_free(snap->dir);
  g_free(snap->state_path);
  g_free(snap->meta_path);
  g_free(snap->qemu_version);
  g_free(snap->tmp_path);
  g_free(snap->ok_path);
  g_free(snap->pidfile);
  g_free(snap->log_dir);
  g_free(snap);
}

void nf_snapshot_restore_begin(NfQmp *qmp, const char *file)
{
  json_t *caps = json_pack("{s:[{s:s, s:b}]}", "capabilities", "capability", "events", "state", 1);
  nf_qmp_execute(qmp, "migrate-set-capabilities", caps, 0, NULL, NULL);
  g_autofree char *quoted = g_shell_quote(file);
  g_autofree char *uri = g_strdup_printf("exec:cat %s", quoted);
  nf_qmp_execute(qmp, "migrate-incoming", json_pack("{s:s}", "uri", uri), 0, NULL, NULL);
}

gboolean nf_snapshot_restore_event(NfQmp *qmp, json_t *data)
{
  const char *status = json_string_value(json_object_get(data, "status"));
  if (g_strcmp0(status, "completed") == 0) {
    /* The template was stopped before it was saved, so the restored guest
     * waits paused: run it. */
    nf_qmp_cont(qmp, 0, NULL, NULL);
    return TRUE;
  }
  return FALSE;
}
