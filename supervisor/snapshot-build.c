/*
 * snapshot-build.c: the template build (see snapshot.h): boot the template,
 * stop it at the snapshot point, migrate it to a temporary file, quit it,
 * then hash the file and publish it with meta.json.
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
#include "supervisor/snapshot-private.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <glib/gstdio.h>

#include "supervisor/paths.h"
#include "supervisor/qemu-argv.h"

#define QUIT_TIMEOUT_MS 10000 /* quit sent to template gone */

static const char *const point_markers[] = {NF_SNAPSHOT_POINT, "Kernel panic - not syncing", NULL};

static void clear_source(guint *id);
static int channel(const char *path, int *client, GError **error);
static void remove_dead_temporaries(const char *dir);
static void point_cb(NfSerial *serial, guint which, const char *line, gpointer data);
static void template_event_cb(NfQmp *qmp, const char *name, json_t *data, gint64 ts, gpointer ud);
static void template_reply_cb(NfQmp *qmp, const NfQmpReply *reply, gpointer data);
static void template_exit_cb(NfProcess *proc, int status, gpointer data);
static gboolean build_timeout_cb(gpointer data);
static gboolean save_state(NfSnapshot *snap, GError **error);
static char *stderr_tail(NfSnapshot *snap);

static void clear_source(guint *id)
{
  if (*id) {
    g_source_remove(*id);
    *id = 0;
  }
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

gboolean nf_snapshot_build_start(NfSnapshot *snap, GError **error)
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
  argv = nf_snapshot_template_argv(snap->env, snap->pidfile);
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
  snap->phase = NF_SNAPSHOT_BOOTING;
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
  if (snap->phase != NF_SNAPSHOT_BOOTING)
    return;
  if (which != 0)
    return; /* a panic: qemu exits (panic=-1, -no-reboot) and the exit says so */
  /* The guest sits in its wait loop: stop it where it is and save it. */
  snap->phase = NF_SNAPSHOT_SAVING;
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
  if (reply->error && snap->phase == NF_SNAPSHOT_SAVING) {
    g_autofree char *why = g_strdup_printf("qemu refused to save it: %s", reply->error->message);
    nf_snapshot_build_fail(snap, why);
  }
}

static void template_event_cb(NfQmp *qmp, const char *name, json_t *data, gint64 ts, gpointer ud)
{
  NfSnapshot *snap = ud;
  if (snap->phase != NF_SNAPSHOT_SAVING || !g_str_equal(name, "MIGRATION"))
    return;
  const char *status = json_string_value(json_object_get(data, "status"));
  if (g_strcmp0(status, "completed") == 0) {
    snap->phase = NF_SNAPSHOT_QUITTING;
    clear_source(&snap->timer);
    snap->timer = g_timeout_add(QUIT_TIMEOUT_MS, build_timeout_cb, snap);
    nf_qmp_quit(snap->qmp, 0, NULL, NULL);
  } else if (g_strcmp0(status, "failed") == 0 || g_strcmp0(status, "cancelled") == 0) {
    g_autofree char *why = g_strdup_printf("the migration to %s %s", snap->tmp_path, status);
    nf_snapshot_build_fail(snap, why);
  }
}

static gboolean build_timeout_cb(gpointer data)
{
  NfSnapshot *snap = data;
  snap->timer = 0;
  g_autofree char *why =
      snap->phase == NF_SNAPSHOT_BOOTING
          ? g_strdup_printf("the template guest did not print '%s' within %u s (a guest whose "
                            "init does not support snapshots? the default guest does)",
                            NF_SNAPSHOT_POINT, snap->build_timeout_ms / 1000)
          : g_strdup("the template qemu did not quit after saving");
  nf_snapshot_build_fail(snap, why);
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
  if (snap->phase == NF_SNAPSHOT_QUITTING) {
    nf_snapshot_build_stop(snap);
    if (!save_state(snap, &error)) {
      nf_snapshot_build_fail(snap, error->message);
      return;
    }
    struct stat st;
    guint64 mib = stat(snap->state_path, &st) == 0 ? (guint64)st.st_size >> 20 : 0;
    nf_snapshot_notice(snap, "snapshot: template saved in %.1f s (%" G_GUINT64_FORMAT " MiB): %s",
                       (g_get_monotonic_time() - snap->build_started) / 1e6, mib, snap->state_path);
    snap->usable = snap->state_path;
    nf_snapshot_finish(snap);
    return;
  }
  g_autofree char *how = nf_process_describe_status(status);
  g_autofree char *tail = stderr_tail(snap);
  g_autofree char *why = g_strdup_printf("the template qemu %s%s%s", how, *tail ? ": " : "", tail);
  nf_snapshot_build_fail(snap, why);
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
  g_autofree char *sha = nf_snapshot_sha256_file(snap->tmp_path, error);
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
void nf_snapshot_build_stop(NfSnapshot *snap)
{
  snap->phase = NF_SNAPSHOT_IDLE;
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

void nf_snapshot_build_fail(NfSnapshot *snap, const char *why)
{
  nf_snapshot_build_stop(snap);
  if (snap->tmp_path) {
    g_unlink(snap->tmp_path);
    g_unlink(snap->ok_path);
  }
  snap->usable = NULL;
  nf_snapshot_notice(snap, "snapshot: cannot build the template: %s; booting every guest instead",
                     why);
  nf_snapshot_finish(snap);
}
