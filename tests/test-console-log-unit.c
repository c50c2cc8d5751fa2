/*
 * test-console-log-unit.c: the console log's cap (supervisor/console-log.c)
 * on real files while another process appends to them, as qemu does.
 *
 * Where the filesystem can collapse a file's head (ext4, xfs), a rotation
 * loses nothing that the writer appends during it: the .1 of each rotation
 * followed by the log at the end is every line the writer wrote, in order,
 * once. Where it cannot (tmpfs), the cap falls back to copy and truncate.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <glib/gstdio.h>

#include "supervisor/console-log.h"
#include "tests/lib/nf-test.h"

#define CAP (64 * 1024)
#define LINES 400000

static gint64 size_of(const char *path)
{
  struct stat st;
  return stat(path, &st) == 0 ? (gint64)st.st_size : -1;
}

/* TRUE where `dir`'s filesystem collapses a file's head. */
static gboolean can_collapse(const char *dir)
{
  g_autofree char *probe = g_build_filename(dir, "probe", NULL);
  int fd = open(probe, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  g_assert_cmpint(fd, >=, 0);
  char block[3 * 4096] = {0};
  g_assert_cmpint(write(fd, block, sizeof block), ==, (ssize_t)sizeof block);
  gboolean ok = fallocate(fd, FALLOC_FL_COLLAPSE_RANGE, 0, 4096) == 0;
  close(fd);
  unlink(probe);
  return ok;
}

/* A child that appends "0\n" .. "LINES-1\n" to `path`, a line per write. */
static pid_t start_writer(const char *path)
{
  pid_t pid = fork();
  g_assert_cmpint(pid, >=, 0);
  if (pid == 0) {
    int fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
    if (fd < 0)
      _exit(2);
    for (int i = 0; i < LINES; i++) {
      char line[16];
      int n = snprintf(line, sizeof line, "%d\n", i);
      if (write(fd, line, (size_t)n) != n)
        _exit(3);
    }
    _exit(0);
  }
  return pid;
}

static void append_file(GString *to, const char *path)
{
  g_autofree char *text = NULL;
  gsize len = 0;
  g_assert_true(g_file_get_contents(path, &text, &len, NULL));
  g_string_append_len(to, text, (gssize)len);
}

/* Caps the log as often as it can while the writer runs; returns how many
 * rotations there were, with what each moved to the .1 added to `all`. */
static guint cap_while_written(const char *log, pid_t writer, GString *all)
{
  g_autofree char *old = g_strconcat(log, ".1", NULL);
  guint rotations = 0;
  int status = 0;
  for (;;) {
    gboolean done = waitpid(writer, &status, WNOHANG) == writer;
    gint64 moved = -1;
    g_autoptr(GError) error = NULL;
    if (nf_console_log_cap(log, CAP, &moved, &error)) {
      rotations++;
      g_assert_cmpint(moved, ==, size_of(old));
      g_assert_cmpint(moved, >, 0);
      append_file(all, old);
    } else {
      g_assert_no_error(error);
    }
    if (done)
      break;
  }
  g_assert_true(WIFEXITED(status));
  g_assert_cmpint(WEXITSTATUS(status), ==, 0);
  return rotations;
}

/* `text` is "0\n1\n..LINES-1\n" exactly; the first line out of place is
 * named. */
static void assert_every_line(const GString *text)
{
  const char *p = text->str, *end = text->str + text->len;
  guint i = 0;
  for (; p < end; i++) {
    const char *nl = memchr(p, '\n', (gsize)(end - p));
    g_assert_nonnull(nl); /* the last line ends too */
    char want[16];
    int n = snprintf(want, sizeof want, "%u", i);
    if (nl - p != n || memcmp(p, want, (gsize)n) != 0)
      g_error("line %u is '%.*s', not '%s': the cap lost or split lines", i, (int)MIN(nl - p, 40),
              p, want);
    p = nl + 1;
  }
  g_assert_cmpuint(i, ==, LINES);
}

static void test_under_cap(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  g_autofree char *log = g_build_filename(tmp, "console.log", NULL);
  g_autofree char *old = g_strconcat(log, ".1", NULL);
  gint64 moved = -1;
  g_assert_false(nf_console_log_cap(log, CAP, &moved, NULL)); /* missing */
  g_assert_true(g_file_set_contents(log, "boot\n", -1, NULL));
  g_assert_false(nf_console_log_cap(log, CAP, &moved, NULL));
  g_assert_cmpint(moved, ==, -1);
  g_assert_false(g_file_test(old, G_FILE_TEST_EXISTS));
  g_assert_cmpint(size_of(log), ==, 5);
  nf_test_tmpdir_cleanup(tmp);
}

static void test_no_line_lost(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  if (!can_collapse(tmp)) {
    g_test_skip("the temp dir's filesystem cannot collapse a file's head (tmpfs?)");
    nf_test_tmpdir_cleanup(tmp);
    return;
  }
  g_autofree char *log = g_build_filename(tmp, "console.log", NULL);
  g_assert_true(g_file_set_contents(log, "", 0, NULL));
  g_autoptr(GString) all = g_string_new(NULL);
  guint rotations = cap_while_written(log, start_writer(log), all);
  g_test_message("%u rotations while %d lines were written", rotations, LINES);
  g_assert_cmpuint(rotations, >=, 5);
  /* Each rotation left the log under a block of the old, so under the cap. */
  g_assert_cmpint(size_of(log), <=, CAP);
  append_file(all, log);
  assert_every_line(all);
  nf_test_tmpdir_cleanup(tmp);
}

/* On tmpfs: the whole log to the .1, the log truncated, `moved` its size. */
static void test_fallback(void)
{
  if (!g_file_test("/dev/shm", G_FILE_TEST_IS_DIR)) {
    g_test_skip("no /dev/shm");
    return;
  }
  /* (g_get_tmp_dir() is read once: not through TMPDIR; no process runs in it) */
  g_autofree char *tmp = g_mkdtemp(g_strdup("/dev/shm/nf-test-XXXXXX"));
  g_assert_nonnull(tmp);
  if (can_collapse(tmp)) {
    g_rmdir(tmp);
    g_test_skip("/dev/shm collapses files here: no fallback to see");
    return;
  }
  g_autofree char *log = g_build_filename(tmp, "console.log", NULL);
  g_autofree char *old = g_strconcat(log, ".1", NULL);
  g_autoptr(GString) text = g_string_new(NULL);
  for (int i = 0; text->len <= CAP; i++)
    g_string_append_printf(text, "line %d\n", i);
  g_assert_true(g_file_set_contents(log, text->str, (gssize)text->len, NULL));
  gint64 moved = -1;
  g_assert_true(nf_console_log_cap(log, CAP, &moved, NULL));
  g_assert_cmpint(moved, ==, (gint64)text->len);
  g_assert_cmpint(size_of(log), ==, 0);
  g_autofree char *got = NULL;
  g_assert_true(g_file_get_contents(old, &got, NULL, NULL));
  g_assert_cmpstr(got, ==, text->str);
  /* The next rotation on the same filesystem goes straight to the copy. */
  g_assert_true(g_file_set_contents(log, text->str, (gssize)text->len, NULL));
  g_assert_true(nf_console_log_cap(log, CAP, &moved, NULL));
  g_assert_cmpint(moved, ==, (gint64)text->len);
  g_assert_cmpint(g_unlink(old), ==, 0);
  g_assert_cmpint(g_unlink(log), ==, 0);
  g_assert_cmpint(g_rmdir(tmp), ==, 0);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/console-log/under-cap", test_under_cap);
  g_test_add_func("/console-log/no-line-lost", test_no_line_lost);
  g_test_add_func("/console-log/fallback", test_fallback);
  return g_test_run();
}
