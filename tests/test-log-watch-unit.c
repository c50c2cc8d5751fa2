/*
 * test-log-watch-unit.c: one-shot log watches (supervisor/log-watch.c) on
 * plain files: quiet until the file is written to, truncated or deleted;
 * re-armed by a look; one watch per file; a missing file cannot be armed.
 */
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#include <glib/gstdio.h>

#include "supervisor/log-watch.h"
#include "tests/lib/nf-test.h"

#define WAIT_MS 10000

static gboolean not_quiet(gpointer data)
{
  return !nf_log_watch_quiet(data);
}

static void append(const char *path, const char *text)
{
  int fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
  g_assert_cmpint(fd, >=, 0);
  g_assert_cmpint(write(fd, text, strlen(text)), ==, (ssize_t)strlen(text));
  close(fd);
}

static void test_log_watch(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  g_autofree char *log = g_build_filename(tmp, "console.log", NULL);
  g_autofree char *missing = g_build_filename(tmp, "missing.log", NULL);
  g_assert_true(g_file_set_contents(log, "boot\n", -1, NULL));
  NfLogWatch w = NF_LOG_WATCH_INIT, other = NF_LOG_WATCH_INIT, none = NF_LOG_WATCH_INIT;
  g_assert_false(nf_log_watch_quiet(&w));

  /* Armed, quiet until written to. */
  g_assert_true(nf_log_watch_arm(&w, log));
  for (int i = 0; i < 10; i++)
    g_main_context_iteration(NULL, FALSE);
  g_assert_true(nf_log_watch_quiet(&w));
  append(log, "a line\n");
  g_assert_true(nf_test_wait_for(not_quiet, &w, WAIT_MS));

  /* One-shot: re-armed by a look; a truncation (the cap's rotation) counts. */
  g_assert_true(nf_log_watch_arm(&w, log));
  g_assert_true(nf_log_watch_quiet(&w));
  g_assert_cmpint(truncate(log, 0), ==, 0);
  g_assert_true(nf_test_wait_for(not_quiet, &w, WAIT_MS));

  /* One watch per file: a second one cannot be armed while the first is. */
  g_assert_true(nf_log_watch_arm(&w, log));
  g_assert_false(nf_log_watch_arm(&other, log));
  g_assert_false(nf_log_watch_quiet(&other));

  /* A deleted file is not quiet; a missing one cannot be armed. */
  g_assert_cmpint(g_unlink(log), ==, 0);
  g_assert_true(nf_test_wait_for(not_quiet, &w, WAIT_MS));
  g_assert_false(nf_log_watch_arm(&none, missing));

  /* Disarmed, a watch is not quiet and disarming again is a no-op. */
  g_assert_true(g_file_set_contents(log, "again\n", -1, NULL));
  g_assert_true(nf_log_watch_arm(&w, log));
  nf_log_watch_disarm(&w);
  g_assert_false(nf_log_watch_quiet(&w));
  nf_log_watch_disarm(&w);
  nf_test_tmpdir_cleanup(tmp);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/log-watch/one-shot", test_log_watch);
  return g_test_run();
}
