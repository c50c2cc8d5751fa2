/*
 * nf-test.c: helpers shared by the test programs. See nf-test.h for why the
 * leftover check keys on a temp dir found in process command lines.
 */
#include "tests/lib/nf-test.h"

#include "tests/lib/abort-cleanup.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <glib/gstdio.h>
#include <gio/gio.h>
#include <glib-unix.h>
#include <sys/syscall.h>

static gboolean cmdline_contains(const char *pid, const char *needle);
static gboolean timeout_cb(gpointer data);
static gboolean tick_cb(gpointer data)
{
  return G_SOURCE_CONTINUE; /* only wakes the loop, so `done` is looked at */
}

gboolean nf_test_wait_polled(gboolean (*done)(gpointer data), gpointer data, guint every_ms,
                             guint timeout_ms)
{
  GSource *tick = g_timeout_source_new(every_ms);
  g_source_set_callback(tick, tick_cb, NULL, NULL);
  g_source_attach(tick, g_main_context_get_thread_default());
  gboolean ok = nf_test_wait_for(done, data, timeout_ms);
  g_source_destroy(tick);
  g_source_unref(tick);
  return ok;
}

static char *guest_file(const char *name);
static gboolean output_seen(gpointer data);
static gboolean proc_done(gpointer data);
static gboolean pidfd_gone_cb(int fd, GIOCondition cond, gpointer data);
static gboolean pids_gone(gpointer data);
typedef struct FileWait FileWait;
static gboolean file_has(FileWait *w);
static void file_changed_cb(GFileMonitor *m, GFile *f, GFile *o, GFileMonitorEvent e,
                            gpointer data);
static gboolean file_found(gpointer data);

char *nf_test_tmpdir_new(void)
{
  g_autoptr(GError) error = NULL;
  char *dir = g_dir_make_tmp("nf-test-XXXXXX", &error);
  g_assert_no_error(error);
  nf_test_abort_cleanup_add(dir);
  return dir;
}

static gboolean cmdline_contains(const char *pid, const char *needle)
{
  g_autofree char *path = g_strdup_printf("/proc/%s/cmdline", pid);
  g_autofree char *buf = NULL;
  gsize len = 0;
  if (!g_file_get_contents(path, &buf, &len, NULL) || len == 0)
    return FALSE;
  /* argv is NUL-separated; a needle never spans two arguments we care about. */
  for (gsize i = 0; i < len; i++)
    if (buf[i] == '\0')
      buf[i] = ' ';
  return strstr(buf, needle) != NULL;
}

GArray *nf_test_pids_matching(const char *needle)
{
  GArray *pids = g_array_new(FALSE, FALSE, sizeof(GPid));
  g_autoptr(GDir) proc = g_dir_open("/proc", 0, NULL);
  const char *name;
  GPid self = getpid();
  g_assert_nonnull(proc);
  while ((name = g_dir_read_name(proc)) != NULL) {
    char *end = NULL;
    long pid = strtol(name, &end, 10);
    if (*end != '\0' || pid <= 0 || pid == self)
      continue;
    if (cmdline_contains(name, needle)) {
      GPid p = (GPid)pid;
      g_array_append_val(pids, p);
    }
  }
  return pids;
}

void nf_test_tmpdir_cleanup(const char *dir)
{
  g_autoptr(GArray) pids = nf_test_pids_matching(dir);
  for (guint i = 0; i < pids->len; i++)
    kill(g_array_index(pids, GPid, i), SIGKILL);
  if (pids->len > 0)
    g_test_message("leftover process(es) mentioning %s: %u (killed)", dir, pids->len);
  g_assert_cmpuint(pids->len, ==, 0);

  g_autofree char *quoted = g_shell_quote(dir);
  g_autofree char *cmd = g_strdup_printf("rm -rf %s", quoted);
  int status = system(cmd);
  g_assert_cmpint(status, ==, 0);
  g_assert_false(g_file_test(dir, G_FILE_TEST_EXISTS));
  nf_test_abort_cleanup_remove(dir);
}

static gboolean timeout_cb(gpointer data)
{
  *(gboolean *)data = TRUE;
  return G_SOURCE_REMOVE;
}

gboolean nf_test_wait_for(gboolean (*done)(gpointer data), gpointer data, guint timeout_ms)
{
  gboolean expired = FALSE;
  GMainContext *ctx = g_main_context_get_thread_default();
  GSource *timer = g_timeout_source_new(timeout_ms);
  g_source_set_callback(timer, timeout_cb, &expired, NULL);
  g_source_attach(timer, ctx);
  gboolean ok;
  while (!(ok = done(data)) && !expired)
    g_main_context_iteration(ctx, TRUE);
  g_source_destroy(timer);
  g_source_unref(timer);
  return ok;
}

static char *guest_file(const char *name)
{
  const char *dir = g_getenv("NF_GUEST_DIR");
  if (dir == NULL)
    g_error("NF_GUEST_DIR is not set: run the tests with `make check`");
  char *path = g_build_filename(dir, name, NULL);
  if (!g_file_test(path, G_FILE_TEST_IS_REGULAR))
    g_error("guest file %s is missing: build the guest with `make guest`", path);
  return path;
}

char *nf_test_guest_kernel(void)
{
  return guest_file("vmlinuz");
}

char *nf_test_guest_initrd(void)
{
  return guest_file("initrd.gz");
}

const char *nf_test_bin(void)
{
  const char *bin = g_getenv("NF_BIN");
  if (bin == NULL || !g_file_test(bin, G_FILE_TEST_IS_EXECUTABLE))
    g_error("NF_BIN (%s) is not an executable: run the tests with `make check`",
            bin ? bin : "unset");
  return bin;
}

struct NfTestProc {
  GSubprocess *proc;
  GString *out;
  gboolean eof;
  gboolean exited;
  GCancellable *cancel;
};

static void read_cb(GObject *src, GAsyncResult *res, gpointer data);
static void wait_cb(GObject *src, GAsyncResult *res, gpointer data);
static void start_read(NfTestProc *p);

static void start_read(NfTestProc *p)
{
  GInputStream *in = g_subprocess_get_stdout_pipe(p->proc);
  g_input_stream_read_bytes_async(in, 65536, G_PRIORITY_DEFAULT, p->cancel, read_cb, p);
}

static void read_cb(GObject *src, GAsyncResult *res, gpointer data)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(GBytes) bytes = g_input_stream_read_bytes_finish(G_INPUT_STREAM(src), res, &error);
  if (g_error_matches(error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
    return;
  NfTestProc *p = data;
  if (bytes == NULL || g_bytes_get_size(bytes) == 0) {
    p->eof = TRUE;
    return;
  }
  gsize n;
  const char *d = g_bytes_get_data(bytes, &n);
  g_string_append_len(p->out, d, (gssize)n);
  start_read(p);
}

static void wait_cb(GObject *src, GAsyncResult *res, gpointer data)
{
  g_autoptr(GError) error = NULL;
  g_subprocess_wait_finish(G_SUBPROCESS(src), res, &error);
  if (g_error_matches(error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
    return;
  ((NfTestProc *)data)->exited = TRUE;
}

NfTestProc *nf_test_proc_spawn(const char *tmpdir, const char *const *args)
{
  g_autoptr(GSubprocessLauncher) l =
      g_subprocess_launcher_new(G_SUBPROCESS_FLAGS_STDOUT_PIPE | G_SUBPROCESS_FLAGS_STDERR_MERGE);
  g_autofree char *run = g_build_filename(tmpdir, "run", NULL);
  g_autofree char *state = g_build_filename(tmpdir, "state", NULL);
  g_autofree char *cache = g_build_filename(tmpdir, "cache", NULL);
  const char *guest = g_getenv("NF_GUEST_DIR");
  g_mkdir_with_parents(run, 0700);
  g_subprocess_launcher_setenv(l, "XDG_RUNTIME_DIR", run, TRUE);
  g_subprocess_launcher_setenv(l, "XDG_STATE_HOME", state, TRUE);
  g_subprocess_launcher_setenv(l, "XDG_CACHE_HOME", cache, TRUE);
  if (guest)
    g_subprocess_launcher_setenv(l, "NERVESFLEET_GUEST_DIR", guest, TRUE);

  g_autoptr(GPtrArray) argv = g_ptr_array_new();
  g_ptr_array_add(argv, (gpointer)nf_test_bin());
  for (const char *const *a = args; *a; a++)
    g_ptr_array_add(argv, (gpointer)*a);
  g_ptr_array_add(argv, NULL);

  g_autoptr(GError) error = NULL;
  NfTestProc *p = g_new0(NfTestProc, 1);
  p->out = g_string_new(NULL);
  p->cancel = g_cancellable_new();
  p->proc = g_subprocess_launcher_spawnv(l, (const char *const *)argv->pdata, &error);
  g_assert_no_error(error);
  start_read(p);
  g_subprocess_wait_async(p->proc, p->cancel, wait_cb, p);
  return p;
}

typedef struct {
  NfTestProc *p;
  const char *needle;
} OutputWait;

static gboolean output_seen(gpointer data)
{
  OutputWait *w = data;
  return strstr(w->p->out->str, w->needle) != NULL || (w->p->exited && w->p->eof);
}

gboolean nf_test_proc_wait_output(NfTestProc *p, const char *needle, guint timeout_ms)
{
  OutputWait w = {p, needle};
  nf_test_wait_for(output_seen, &w, timeout_ms);
  return strstr(p->out->str, needle) != NULL;
}

typedef struct {
  NfTestProc *p;
  const char *needle;
  guint times;
} CountWait;

static guint times_in(const char *hay, const char *needle)
{
  guint n = 0;
  for (const char *s = hay; (s = strstr(s, needle)); s++)
    n++;
  return n;
}

static gboolean count_seen(gpointer data)
{
  CountWait *w = data;
  return times_in(w->p->out->str, w->needle) >= w->times || (w->p->exited && w->p->eof);
}

gboolean nf_test_proc_wait_count(NfTestProc *p, const char *needle, guint times, guint timeout_ms)
{
  CountWait w = {p, needle, times};
  nf_test_wait_for(count_seen, &w, timeout_ms);
  return times_in(p->out->str, needle) >= times;
}

static gboolean proc_done(gpointer data)
{
  NfTestProc *p = data;
  return p->exited && p->eof;
}

int nf_test_proc_wait_exit(NfTestProc *p, guint timeout_ms)
{
  if (!nf_test_wait_for(proc_done, p, timeout_ms))
    return -1;
  if (g_subprocess_get_if_signaled(p->proc))
    return 128 + g_subprocess_get_term_sig(p->proc);
  return g_subprocess_get_exit_status(p->proc);
}

const char *nf_test_proc_output(NfTestProc *p)
{
  return p->out->str;
}

/* kill() here and now: g_subprocess_send_signal hands the signal to GLib's
 * worker thread, so a SIGSTOP could land after the next step of the test (a
 * CLI verb then answered by the supervisor it meant to find stopped).
 * GLib forgets the pid (identifier NULL) when it reaps the process, so a
 * reused pid is signalled only if that happens between the two lines. */
void nf_test_proc_signal(NfTestProc *p, int sig)
{
  GPid pid = nf_test_proc_pid(p);
  if (!p->exited && pid > 0)
    kill(pid, sig);
}

gboolean nf_test_pid_stopped(gpointer pid)
{
  g_autofree char *path = g_strdup_printf("/proc/%d/stat", GPOINTER_TO_INT(pid));
  g_autofree char *stat = NULL;
  if (!g_file_get_contents(path, &stat, NULL, NULL))
    return FALSE;
  const char *paren = strrchr(stat, ')');
  return paren && paren[1] == ' ' && paren[2] == 'T';
}

GPid nf_test_proc_pid(NfTestProc *p)
{
  const char *id = g_subprocess_get_identifier(p->proc);
  return id ? (GPid)atoi(id) : 0;
}

void nf_test_proc_free(NfTestProc *p)
{
  if (p == NULL)
    return;
  if (!p->exited) {
    g_subprocess_force_exit(p->proc);
    nf_test_wait_for(proc_done, p, 10000);
  }
  g_cancellable_cancel(p->cancel);
  /* Let the cancelled callbacks run before their data goes away. */
  while (g_main_context_iteration(NULL, FALSE))
    ;
  g_object_unref(p->proc);
  g_object_unref(p->cancel);
  g_string_free(p->out, TRUE);
  g_free(p);
}

int nf_test_run_cli(const char *tmpdir, const char *const *args, guint timeout_ms, char **output)
{
  g_autoptr(NfTestProc) p = nf_test_proc_spawn(tmpdir, args);
  int status = nf_test_proc_wait_exit(p, timeout_ms);
  if (output)
    *output = g_strdup(p->out->str);
  return status;
}

typedef struct {
  guint left;
} PidsWait;

static gboolean pidfd_gone_cb(int fd, GIOCondition cond, gpointer data)
{
  ((PidsWait *)data)->left--;
  return G_SOURCE_REMOVE;
}

static gboolean pids_gone(gpointer data)
{
  return ((PidsWait *)data)->left == 0;
}

gboolean nf_test_wait_pids_gone(GArray *pids, guint timeout_ms)
{
  PidsWait w = {0};
  g_autoptr(GArray) fds = g_array_new(FALSE, FALSE, sizeof(int));
  g_autoptr(GArray) ids = g_array_new(FALSE, FALSE, sizeof(guint));
  for (guint i = 0; i < pids->len; i++) {
    int fd = (int)syscall(SYS_pidfd_open, g_array_index(pids, GPid, i), 0);
    if (fd < 0)
      continue; /* already gone */
    guint id = g_unix_fd_add(fd, G_IO_IN, pidfd_gone_cb, &w);
    w.left++;
    g_array_append_val(fds, fd);
    g_array_append_val(ids, id);
  }
  gboolean ok = nf_test_wait_for(pids_gone, &w, timeout_ms);
  for (guint i = 0; i < fds->len; i++) {
    GSource *s = g_main_context_find_source_by_id(NULL, g_array_index(ids, guint, i));
    if (s)
      g_source_destroy(s);
    close(g_array_index(fds, int, i));
  }
  return ok;
}

struct FileWait {
  const char *path;
  const char *needle;
  gboolean found;
};

static gboolean file_has(FileWait *w)
{
  g_autofree char *text = NULL;
  if (!w->found && g_file_get_contents(w->path, &text, NULL, NULL) && strstr(text, w->needle))
    w->found = TRUE;
  return w->found;
}

gboolean nf_test_path_exists(gpointer path)
{
  return g_file_test(path, G_FILE_TEST_EXISTS);
}

gboolean nf_test_file_contains(const char *path, const char *needle)
{
  FileWait w = {path, needle, FALSE};
  return file_has(&w);
}

static void file_changed_cb(GFileMonitor *m, GFile *f, GFile *o, GFileMonitorEvent e, gpointer data)
{
  file_has(data);
}

static gboolean file_found(gpointer data)
{
  return ((FileWait *)data)->found;
}

gboolean nf_test_wait_file_contains(const char *path, const char *needle, guint timeout_ms)
{
  FileWait w = {path, needle, FALSE};
  g_autoptr(GFile) file = g_file_new_for_path(path);
  g_autoptr(GFileMonitor) mon = g_file_monitor_file(file, G_FILE_MONITOR_NONE, NULL, NULL);
  g_assert_nonnull(mon);
  g_signal_connect(mon, "changed", G_CALLBACK(file_changed_cb), &w);
  if (!file_has(&w))
    nf_test_wait_for(file_found, &w, timeout_ms);
  g_signal_handlers_disconnect_by_data(mon, &w);
  g_file_monitor_cancel(mon);
  return w.found;
}

void nf_test_sh(const char *cmd)
{
  g_autofree char *out = NULL, *err = NULL;
  int status = 0;
  g_autoptr(GError) error = NULL;
  const char *argv[] = {"/bin/sh", "-c", cmd, NULL};
  g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_DEFAULT, NULL, NULL, &out, &err, &status, &error);
  g_assert_no_error(error);
  if (!g_spawn_check_wait_status(status, NULL))
    g_error("`%s` failed: %s", cmd, err);
}

char *nf_test_sha256_file(const char *path)
{
  g_autofree char *data = NULL;
  gsize len = 0;
  g_assert_true(g_file_get_contents(path, &data, &len, NULL));
  return g_compute_checksum_for_data(G_CHECKSUM_SHA256, (const guchar *)data, len);
}

char *nf_test_make_ext4_base(const char *dir)
{
  char *img = g_build_filename(dir, "data.img", NULL);
  g_autofree char *cmd = g_strdup_printf("mke2fs -q -t ext4 -F '%s' 16M", img);
  nf_test_sh(cmd);
  return img;
}

char *nf_test_make_firmware_disk(const char *dir)
{
  g_autofree char *env_txt = g_build_filename(dir, "env.txt", NULL);
  g_autofree char *env_bin = g_build_filename(dir, "env.bin", NULL);
  char *disk = g_build_filename(dir, "firmware.img", NULL);
  g_assert_true(g_file_set_contents(env_txt,
                                    "nerves_fw_active=a\na.nerves_fw_version=1.0.0\n"
                                    "b.nerves_fw_version=0.9.0\nupgrade_available=0\n"
                                    "nerves_fw_validated=1\nnerves_serial_number=BASE-0\n",
                                    -1, NULL));
  g_autofree char *cmd =
      g_strdup_printf("mkenvimage -s 0x20000 -o '%s' '%s' && truncate -s 4M '%s' && "
                      "dd if='%s' of='%s' bs=512 seek=16 conv=notrunc 2>/dev/null",
                      env_bin, env_txt, disk, env_bin, disk);
  nf_test_sh(cmd);
  return disk;
}

void nf_test_ksm_standin(const char *sysfs)
{
  g_assert_cmpint(g_mkdir_with_parents(sysfs, 0755), ==, 0);
  const char *knobs[][2] = {{"run", "0\n"},
                            {"pages_to_scan", "100\n"},
                            {"sleep_millisecs", "200\n"},
                            {"use_zero_pages", "0\n"},
                            {"pages_sharing", "0\n"}};
  for (guint i = 0; i < G_N_ELEMENTS(knobs); i++) {
    g_autofree char *p = g_build_filename(sysfs, knobs[i][0], NULL);
    g_assert_true(g_file_set_contents(p, knobs[i][1], -1, NULL));
  }
}

char *nf_test_ksm_knob(const char *sysfs, const char *name)
{
  g_autofree char *p = g_build_filename(sysfs, name, NULL);
  char *v = NULL;
  g_assert_true(g_file_get_contents(p, &v, NULL, NULL));
  return g_strstrip(v);
}

/* Our own v1 memory cgroup's directory (fleets make theirs below it); NULL
 * when there is none. */
static char *memory_cgroup_dir(void)
{
  g_autofree char *self = NULL;
  g_assert_true(g_file_get_contents("/proc/self/cgroup", &self, NULL, NULL));
  const char *m = strstr(self, ":memory:");
  if (m == NULL)
    return NULL;
  g_autofree char *rel = g_strndup(m + 8, strcspn(m + 8, "\n"));
  return g_build_filename("/sys/fs/cgroup/memory", rel, NULL);
}

/* Cgroups below ours whose names start with `prefix` (or only contain it). */
static guint cgroups_matching(const char *prefix, gboolean anywhere)
{
  g_autofree char *base = memory_cgroup_dir();
  g_autoptr(GDir) dir = base ? g_dir_open(base, 0, NULL) : NULL;
  guint n = 0;
  const char *e;
  while (dir && (e = g_dir_read_name(dir)) != NULL)
    n += anywhere ? strstr(e, prefix) != NULL : g_str_has_prefix(e, prefix);
  return n;
}

/* Memory cgroups of fleet `name` run from `tmp` (nf_test_proc_spawn's
 * XDG_RUNTIME_DIR), below our own: their names carry a hash of the runtime
 * dir, so tests elsewhere on the host using the same fleet name are not
 * counted. 0 when there is no (v1) memory cgroup to look in. */
guint nf_test_cgroups_of(const char *tmp, const char *name)
{
  g_autofree char *rt = g_build_filename(tmp, "run", "nervesfleet", name, NULL);
  g_autofree char *prefix = g_strdup_printf("nervesfleet-%s-%08x", name, g_str_hash(rt));
  return cgroups_matching(prefix, FALSE);
}

guint nf_test_cgroups_naming(const char *dir)
{
  g_autofree char *name = g_path_get_basename(dir);
  return cgroups_matching(name, TRUE);
}

guint nf_test_count_open_fds_of(GPid pid)
{
  g_autofree char *dir = g_strdup_printf("/proc/%d/fd", (int)pid);
  g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
  g_assert_nonnull(d);
  guint n = 0;
  while (g_dir_read_name(d))
    n++;
  return n;
}

guint nf_test_count_open_fds(void)
{
  DIR *d = opendir("/proc/self/fd");
  g_assert_nonnull(d);
  guint n = 0;
  for (struct dirent *e; (e = readdir(d)) != NULL;)
    if (e->d_name[0] != '.')
      n++;
  closedir(d);
  return n;
}

GPid nf_test_supervisor_pid(const char *tmp, const char *name)
{
  g_autofree char *lock = g_build_filename(tmp, "run/nervesfleet", name, "fleet.lock", NULL);
  g_autofree char *text = NULL;
  g_assert_true(g_file_get_contents(lock, &text, NULL, NULL));
  GPid pid = (GPid)g_ascii_strtoll(text, NULL, 10);
  g_assert_cmpint(pid, >, 0);
  return pid;
}

void nf_test_kill_supervisor(const char *tmp, const char *name, guint timeout_ms)
{
  g_autoptr(GArray) sup = g_array_new(FALSE, FALSE, sizeof(GPid));
  GPid pid = nf_test_supervisor_pid(tmp, name);
  g_array_append_val(sup, pid);
  g_assert_cmpint(kill(pid, SIGKILL), ==, 0);
  g_assert_true(nf_test_wait_pids_gone(sup, timeout_ms));
}
