/*
 * nf-test.c: helpers shared by the test programs. See nf-test.h for why the
 * leftover check keys on a temp dir found in process command lines.
 */
#include "tests/lib/nf-test.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <glib/gstdio.h>

static gboolean cmdline_contains(const char *pid, const char *needle);
static gboolean timeout_cb(gpointer data);
static char *guest_file(const char *name);

char *nf_test_tmpdir_new(void)
{
  g_autoptr(GError) error = NULL;
  char *dir = g_dir_make_tmp("nf-test-XXXXXX", &error);
  g_assert_no_error(error);
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
