/*
 * snapshot.c: one template guest snapshotted once, restored into every guest
 * (see snapshot.h).
 *
 * The template's channels are a QMP monitor and the console, handed to qemu
 * as already listening unix sockets like a guest's; the supervisor connects
 * before qemu even runs (a listening socket accepts into its backlog) and
 * removes the socket files at once, so the template leaves nothing in the
 * runtime dir but its pid file while it lives. Its qemu and console logs go
 * to <state>/template/.
 *
 * Why `exec:cat > TMP && : > TMP.ok`: qemu 7.2 has no file: migration URI,
 * and qemu may report the migration completed before the writer has flushed
 * and exited; the marker file appears only when cat finished without error,
 * and it is checked after the template qemu is gone. The content hash recorded
 * in meta.json then guards the file for as long as it is reused.
 */
#include "supervisor/snapshot.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <glib/gstdio.h>

#include "overlay/identity.h"
#include "supervisor/paths.h"
#include "supervisor/process.h"
#include "supervisor/qemu-argv.h"
#include "supervisor/serial.h"

#define KEY_VERSION "nervesfleet-snapshot-v1"
#define HEAD_BYTES (1024 * 1024)      /* hashed of a large guest file */
#define SMALL_FILE (16 * 1024 * 1024) /* hashed whole below this size */
#define BUILD_TIMEOUT_MS (180 * 1000) /* spawn to snapshot point, without --boot-timeout */
#define QUIT_TIMEOUT_MS 10000         /* quit sent to template gone */

typedef enum { PHASE_IDLE, PHASE_BOOTING, PHASE_SAVING, PHASE_QUITTING } Phase;

struct NfSnapshot {
  const NfVmEnv *env;
  NfSnapshotNoticeFunc notice;
  NfSnapshotDoneFunc done;
  gpointer user_data;
  char *key;
  char *dir;        /* <cache>/nervesfleet/snapshots/<key> */
  char *state_path; /* dir/state */
  char *meta_path;  /* dir/meta.json */
  char *usable;     /* == state_path once it may be restored from, else NULL */
  char *qemu_version;

  /* a build in progress */
  Phase phase;
  NfProcess *proc;
  NfQmp *qmp;
  NfSerial *console;
  char *tmp_path;
  char *ok_path;
  char *pidfile;
  char *log_dir;
  guint timer;
  guint done_idle;
  guint build_timeout_ms;
  gint64 build_started;
};

static const char *const point_markers[] = {NF_SNAPSHOT_POINT, "Kernel panic - not syncing", NULL};

static void clear_source(guint *id);
static char *qemu_version(const char *qemu, GError **error);
static gboolean add_file_identity(GChecksum *key, const char *path, GError **error);
static char *file_sha256(const char *path, GError **error);
static char **template_argv(const NfVmEnv *env, const char *pidfile);
static void notice(NfSnapshot *snap, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static gboolean cached_is_intact(NfSnapshot *snap);
static void finish(NfSnapshot *snap);
static gboolean done_idle_cb(gpointer data);
static void stop_build(NfSnapshot *snap);
static void fail_build(NfSnapshot *snap, const char *why);
static gboolean start_build(NfSnapshot *snap, GError **error);
static int channel(const char *path, int *client, GError **error);
/* state.tmp-PID[.ok] of a supervisor that died while saving (its pid is
 * gone); a live one's build is left alone. */
static void remove_dead_temporaries(const char *dir)
{
  g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
  for (const char *name; d && (name = g_dir_read_name(d)) != NULL;) {
    if (!g_str_has_prefix(name, "state.tmp-"))
      continue;
    int pid = (int)g_ascii_strtoll(name + strlen("state.tmp-"), NULL, 10);
    if (pid > 0 && kill(pid, 0) != 0 && errno == ESRCH) {
      g_autofree char *path = g_build_filename(dir, name, NULL);
      g_unlink(path);
    }
  }
}

static void point_cb(NfSerial *serial, guint which, const char *line, gpointer data);
static void template_event_cb(NfQmp *qmp, const char *name, json_t *data, gint64 ts, gpointer ud);
static void template_reply_cb(NfQmp *qmp, const NfQmpReply *reply, gpointer data);
static void template_exit_cb(NfProcess *proc, int status, gpointer data);
static gboolean build_timeout_cb(gpointer data);
static gboolean save_state(NfSnapshot *snap, GError **error);
static char *stderr_tail(NfSnapshot *snap);
static void remove_dead_temporaries(const char *dir);

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

static char *file_sha256(const char *path, GError **error)
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
static char **template_argv(const NfVmEnv *env, const char *pidfile)
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
  g_auto(GStrv) argv = template_argv(env, NULL);
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
  snap->build_timeout_ms = boot_ms ? boot_ms : BUILD_TIMEOUT_MS;
  /* The fleet lock is held: a pid file here is a dead supervisor's. */
  g_unlink(snap->pidfile);
  return snap;
}

static void notice(NfSnapshot *snap, const char *fmt, ...)
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
    notice(snap, "snapshot %s is truncated (%lld of %lld bytes); rebuilding it", snap->state_path,
           (long long)st.st_size, (long long)size);
    return FALSE;
  }
  g_autoptr(GError) error = NULL;
  g_autofree char *have = file_sha256(snap->state_path, &error);
  if (have == NULL || !g_str_equal(have, want)) {
    notice(snap, "snapshot %s is corrupt (%s); rebuilding it", snap->state_path,
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
    notice(snap, "snapshot: restoring every guest from %s", snap->state_path);
    finish(snap);
    return;
  }
  notice(snap, "snapshot: booting a template guest (logs in %s)", snap->log_dir);
  if (!start_build(snap, &error))
    fail_build(snap, error->message);
}

const char *nf_snapshot_file(const NfSnapshot *snap)
{
  return snap ? snap->usable : NULL;
}

static void finish(NfSnapshot *snap)
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

static int channel(const char *path, int *client, GError **error)
{
  struct sockaddr_un sun = {.sun_family = AF_UNIX};
  if (!nf_paths_check_socket(path, error))
    return -1;
  g_strlcpy(sun.sun_path, path, sizeof(sun.sun_path));
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int cfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  unlink(path);
  if (fd >= 0 && cfd >= 0 && bind(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0 &&
      listen(fd, 1) == 0 && connect(cfd, (struct sockaddr *)&sun, sizeof(sun)) == 0) {
    unlink(path); /* connected: the file is no longer needed */
    *client = cfd;
    return fd;
  }
  int e = errno;
  unlink(path);
  if (fd >= 0)
    close(fd);
  if (cfd >= 0)
    close(cfd);
  g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(e), "cannot listen on %s: %s", path,
              g_strerror(e));
  return -1;
}

static gboolean start_build(NfSnapshot *snap, GError **error)
{
  static const NfQmpCallbacks qmp_cb = {.event = template_event_cb};
  static const NfSerialCallbacks ser_cb = {.marker = point_cb};
  const NfFleetPaths *paths = snap->env->paths;
  g_autofree char *ctl = g_build_filename(paths->runtime_dir, "template.ctl", NULL);
  g_autofree char *ser = g_build_filename(paths->runtime_dir, "template.serial", NULL);
  g_autofree char *qemu_log = g_build_filename(snap->log_dir, "qemu.log", NULL);
  g_autofree char *console_log = g_build_filename(snap->log_dir, "console.log", NULL);
  int fds[2] = {-1, -1}, clients[2] = {-1, -1}, log_fd = -1;
  gboolean ok = FALSE;
  g_auto(GStrv) argv = NULL;

  snap->build_started = g_get_monotonic_time();
  if (!nf_paths_ensure_dir(snap->dir, 0700, "XDG_CACHE_HOME", error) ||
      !nf_paths_ensure_dir(snap->log_dir, 0755, "--state-dir", error))
    return FALSE;
  remove_dead_temporaries(snap->dir);
  snap->tmp_path = g_strdup_printf("%s.tmp-%d", snap->state_path, (int)getpid());
  snap->ok_path = g_strconcat(snap->tmp_path, ".ok", NULL);
  g_unlink(snap->tmp_path);
  g_unlink(snap->ok_path);
  if ((fds[0] = channel(ctl, &clients[0], error)) < 0 ||
      (fds[1] = channel(ser, &clients[1], error)) < 0)
    goto out;
  log_fd = open(qemu_log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (log_fd < 0) {
    int e = errno;
    g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(e), "cannot open %s: %s", qemu_log,
                g_strerror(e));
    goto out;
  }
  argv = template_argv(snap->env, snap->pidfile);
  {
    g_autofree char *line = nf_qemu_argv_to_string(argv);
    g_autofree char *header = g_strdup_printf("=== template: %s\n", line);
    if (write(log_fd, header, strlen(header)) < 0) {
      /* best effort, as for guests */
    }
  }
  g_unlink(console_log); /* each build's console from its start */
  int targets[] = {NF_QEMU_FD_QMP, NF_QEMU_FD_SERIAL};
  /* Always dies with the supervisor: a half-built template is worth nothing. */
  snap->proc = nf_process_spawn(argv, fds, targets, 2, log_fd, TRUE, template_exit_cb, snap, error);
  if (snap->proc == NULL)
    goto out;
  snap->qmp = nf_qmp_new_from_fd(clients[0], NULL, &qmp_cb, snap);
  clients[0] = -1;
  snap->console = nf_serial_new(clients[1], console_log, 0, point_markers, &ser_cb, snap, error);
  clients[1] = -1;
  if (snap->console == NULL)
    goto out;
  snap->phase = PHASE_BOOTING;
  snap->timer = g_timeout_add(snap->build_timeout_ms, build_timeout_cb, snap);
  ok = TRUE;
out:
  for (int i = 0; i < 2; i++) {
    if (fds[i] >= 0)
      close(fds[i]);
    if (clients[i] >= 0)
      close(clients[i]);
  }
  if (log_fd >= 0)
    close(log_fd);
  return ok;
}

static void point_cb(NfSerial *serial, guint which, const char *line, gpointer data)
{
  NfSnapshot *snap = data;
  if (snap->phase != PHASE_BOOTING)
    return;
  if (which != 0)
    return; /* a panic: qemu exits (panic=-1, -no-reboot) and the exit says so */
  /* The guest sits in its wait loop: stop it where it is and save it. */
  snap->phase = PHASE_SAVING;
  g_autofree char *q_tmp = g_shell_quote(snap->tmp_path);
  g_autofree char *q_ok = g_shell_quote(snap->ok_path);
  json_t *caps = json_pack("{s:[{s:s, s:b}]}", "capabilities", "capability", "events", "state", 1);
  nf_qmp_execute(snap->qmp, "migrate-set-capabilities", caps, 0, template_reply_cb, snap);
  nf_qmp_stop(snap->qmp, 0, template_reply_cb, snap);
  g_autofree char *uri = g_strdup_printf("exec:cat > %s && : > %s", q_tmp, q_ok);
  nf_qmp_execute(snap->qmp, "migrate", json_pack("{s:s}", "uri", uri), 0, template_reply_cb, snap);
}

static void template_reply_cb(NfQmp *qmp, const NfQmpReply *reply, gpointer data)
{
  NfSnapshot *snap = data;
  if (reply->error && snap->phase == PHASE_SAVING) {
    g_autofree char *why = g_strdup_printf("qemu refused to save it: %s", reply->error->message);
    fail_build(snap, why);
  }
}

static void template_event_cb(NfQmp *qmp, const char *name, json_t *data, gint64 ts, gpointer ud)
{
  NfSnapshot *snap = ud;
  if (snap->phase != PHASE_SAVING || !g_str_equal(name, "MIGRATION"))
    return;
  const char *status = json_string_value(json_object_get(data, "status"));
  if (g_strcmp0(status, "completed") == 0) {
    snap->phase = PHASE_QUITTING;
    clear_source(&snap->timer);
    snap->timer = g_timeout_add(QUIT_TIMEOUT_MS, build_timeout_cb, snap);
    nf_qmp_quit(snap->qmp, 0, NULL, NULL);
  } else if (g_strcmp0(status, "failed") == 0 || g_strcmp0(status, "cancelled") == 0) {
    g_autofree char *why = g_strdup_printf("the migration to %s %s", snap->tmp_path, status);
    fail_build(snap, why);
  }
}

static gboolean build_timeout_cb(gpointer data)
{
  NfSnapshot *snap = data;
  snap->timer = 0;
  g_autofree char *why =
      snap->phase == PHASE_BOOTING
          ? g_strdup_printf("the template guest did not print '%s' within %u s (a guest whose "
                            "init does not support snapshots? the default guest does)",
                            NF_SNAPSHOT_POINT, snap->build_timeout_ms / 1000)
          : g_strdup("the template qemu did not quit after saving");
  fail_build(snap, why);
  return G_SOURCE_REMOVE;
}

static char *stderr_tail(NfSnapshot *snap)
{
  g_autofree char *path = g_build_filename(snap->log_dir, "qemu.log", NULL);
  g_autofree char *text = NULL;
  if (!g_file_get_contents(path, &text, NULL, NULL))
    return g_strdup("");
  char *body = strchr(text, '\n'); /* after the command line */
  return g_strdup(body ? g_strstrip(body + 1) : "");
}

static void template_exit_cb(NfProcess *proc, int status, gpointer data)
{
  NfSnapshot *snap = data;
  g_autoptr(GError) error = NULL;
  if (snap->phase == PHASE_QUITTING) {
    stop_build(snap);
    if (!save_state(snap, &error)) {
      fail_build(snap, error->message);
      return;
    }
    struct stat st;
    guint64 mib = stat(snap->state_path, &st) == 0 ? (guint64)st.st_size >> 20 : 0;
    notice(snap, "snapshot: template saved in %.1f s (%" G_GUINT64_FORMAT " MiB): %s",
           (g_get_monotonic_time() - snap->build_started) / 1e6, mib, snap->state_path);
    snap->usable = snap->state_path;
    finish(snap);
    return;
  }
  g_autofree char *how = nf_process_describe_status(status);
  g_autofree char *tail = stderr_tail(snap);
  g_autofree char *why = g_strdup_printf("the template qemu %s%s%s", how, *tail ? ": " : "", tail);
  fail_build(snap, why);
}

/* The writer finished (marker file), so the temporary file is whole: hash
 * it, then publish state and meta.json by rename. */
static gboolean save_state(NfSnapshot *snap, GError **error)
{
  struct stat st;
  if (!g_file_test(snap->ok_path, G_FILE_TEST_EXISTS) || stat(snap->tmp_path, &st) != 0 ||
      st.st_size == 0) {
    g_set_error(error, G_FILE_ERROR, G_FILE_ERROR_IO,
                "the state writer (cat > %s) did not finish; is the cache dir full?",
                snap->tmp_path);
    return FALSE;
  }
  g_autofree char *sha = file_sha256(snap->tmp_path, error);
  if (sha == NULL)
    return FALSE;
  g_autoptr(GDateTime) now = g_date_time_new_now_utc();
  g_autofree char *stamp = g_date_time_format_iso8601(now);
  json_auto_t *meta = json_pack("{s:s, s:I, s:s, s:s, s:s, s:s}", "key", snap->key, "size",
                                (json_int_t)st.st_size, "sha256", sha, "qemu", snap->qemu_version,
                                "kernel", snap->env->config->kernel, "built_at", stamp);
  g_autofree char *meta_tmp = g_strconcat(snap->meta_path, ".tmp", NULL);
  if (meta == NULL || json_dump_file(meta, meta_tmp, JSON_INDENT(2)) != 0 ||
      rename(snap->tmp_path, snap->state_path) != 0 || rename(meta_tmp, snap->meta_path) != 0) {
    int e = errno;
    g_unlink(meta_tmp);
    g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(e), "cannot write %s: %s",
                snap->meta_path, g_strerror(e));
    return FALSE;
  }
  g_unlink(snap->ok_path);
  return TRUE;
}

/* Ends the template (if still running) and removes its temporary files. */
static void stop_build(NfSnapshot *snap)
{
  snap->phase = PHASE_IDLE;
  clear_source(&snap->timer);
  if (snap->qmp) {
    NfQmp *qmp = g_steal_pointer(&snap->qmp);
    nf_qmp_close(qmp);
    nf_qmp_unref(qmp);
  }
  g_clear_pointer(&snap->console, nf_serial_free);
  if (snap->proc) {
    /* From its own exit callback the process is reaped; otherwise this kills
     * and reaps it (bounded by the kernel's kill latency). */
    nf_process_free(g_steal_pointer(&snap->proc));
  }
  if (snap->pidfile)
    g_unlink(snap->pidfile);
}

static void fail_build(NfSnapshot *snap, const char *why)
{
  stop_build(snap);
  if (snap->tmp_path) {
    g_unlink(snap->tmp_path);
    g_unlink(snap->ok_path);
  }
  snap->usable = NULL;
  notice(snap, "snapshot: cannot build the template: %s; booting every guest instead", why);
  finish(snap);
}

void nf_snapshot_restore_failed(NfSnapshot *snap, const char *why)
{
  if (snap->usable == NULL)
    return;
  snap->usable = NULL;
  g_unlink(snap->meta_path);
  g_unlink(snap->state_path);
  notice(snap, "snapshot: restore failed (%s); %s removed, guests boot normally from now on", why,
         snap->state_path);
}

void nf_snapshot_cancel(NfSnapshot *snap)
{
  if (snap == NULL)
    return;
  gboolean building = snap->phase != PHASE_IDLE;
  stop_build(snap);
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
