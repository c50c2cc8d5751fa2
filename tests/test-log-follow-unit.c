/*
 * test-log-follow-unit.c: files followed as they grow (supervisor/log-follow.c)
 * on plain files: every byte past the start offset exactly once, in order,
 * also what was appended before the follower was made and after a
 * truncation; two followers of one file; a follower freed from its own
 * callback; a missing file refused with its name.
 */
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#include <glib/gstdio.h>

#include "supervisor/log-follow.h"
#include "tests/lib/nf-test.h"

#define WAIT_MS 10000

typedef struct {
  GString *got;
  NfLogFollow *self; /* freed from the callback once `stop_at` bytes came */
  gsize stop_at;
} Sink;

static void sink_cb(const char *buf, gsize len, gpointer data)
{
  Sink *s = data;
  g_string_append_len(s->got, buf, (gssize)len);
  if (s->self && s->stop_at && s->got->len >= s->stop_at)
    g_clear_pointer(&s->self, nf_log_follow_free);
}

typedef struct {
  Sink *sink;
  const char *want;
} Wait;

static gboolean got_all(gpointer data)
{
  Wait *w = data;
  return g_str_equal(w->sink->got->str, w->want);
}

static gboolean not_watching(gpointer data)
{
  return !nf_log_follow_watching(data);
}

static gboolean freed(gpointer data)
{
  return ((Sink *)data)->self == NULL;
}

static void append(const char *path, const char *text)
{
  int fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
  g_assert_cmpint(fd, >=, 0);
  g_assert_cmpint(write(fd, text, strlen(text)), ==, (ssize_t)strlen(text));
  close(fd);
}

static void settle(void)
{
  for (int i = 0; i < 20; i++)
    g_main_context_iteration(NULL, FALSE);
}

static void test_follow(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  g_autofree char *log = g_build_filename(tmp, "console.log", NULL);
  g_assert_true(g_file_set_contents(log, "boot\nprompt# ", -1, NULL));

  /* From byte 5: "prompt# " (already there, no event for it) comes first. */
  Sink a = {.got = g_string_new(NULL)};
  g_autoptr(GError) error = NULL;
  NfLogFollow *fa = nf_log_follow_new(log, 5, sink_cb, &a, &error);
  g_assert_no_error(error);
  g_assert_cmpstr(a.got->str, ==, ""); /* nothing from inside the call */
  Wait w = {&a, "prompt# "};
  g_assert_true(nf_test_wait_for(got_all, &w, WAIT_MS));

  /* Appends arrive in order, each once; a second follower of the same file
   * from its current end sees only what comes after. */
  Sink b = {.got = g_string_new(NULL)};
  NfLogFollow *fb = nf_log_follow_new(log, 13, sink_cb, &b, &error);
  g_assert_no_error(error);
  for (int i = 0; i < 50; i++) {
    g_autofree char *line = g_strdup_printf("line %d\n", i);
    append(log, line);
    if (i % 10 == 0)
      settle();
  }
  GString *want_b = g_string_new(NULL);
  for (int i = 0; i < 50; i++)
    g_string_append_printf(want_b, "line %d\n", i);
  g_autofree char *want_a = g_strconcat("prompt# ", want_b->str, NULL);
  w = (Wait){&a, want_a};
  g_assert_true(nf_test_wait_for(got_all, &w, WAIT_MS));
  Wait wb = {&b, want_b->str};
  g_assert_true(nf_test_wait_for(got_all, &wb, WAIT_MS));
  g_assert_cmpint(nf_log_follow_offset(fa), ==, 13 + (gint64)want_b->len);

  /* Drain delivers at once, without the loop. */
  append(log, "now\n");
  nf_log_follow_drain(fa);
  g_assert_true(g_str_has_suffix(a.got->str, "line 49\nnow\n"));
  g_autofree char *want_b_now = g_strconcat(want_b->str, "now\n", NULL);
  wb = (Wait){&b, want_b_now};
  g_assert_true(nf_test_wait_for(got_all, &wb, WAIT_MS));

  /* Truncated under the followers and written again (shorter than their
   * offsets): read from the start. The owner's restart does the same. */
  g_string_truncate(b.got, 0);
  g_assert_cmpint(truncate(log, 0), ==, 0);
  append(log, "after\n");
  wb = (Wait){&b, "after\n"};
  g_assert_true(nf_test_wait_for(got_all, &wb, WAIT_MS));
  g_string_truncate(a.got, 0);
  g_assert_true(nf_log_follow_restart(fa, 0, NULL));
  w = (Wait){&a, "after\n"};
  g_assert_true(nf_test_wait_for(got_all, &w, WAIT_MS));

  /* Freed from its own callback, mid-read: no further call. b, still
   * following, witnesses that the later append was read. */
  g_string_truncate(a.got, 0);
  a.self = fa;
  a.stop_at = 3;
  g_autofree char *big = g_strnfill(200 * 1024, 'x'); /* several read chunks */
  append(log, big);
  g_assert_true(nf_test_wait_for(freed, &a, WAIT_MS));
  gsize after_free = a.got->len;
  g_assert_cmpuint(after_free, >=, 3);
  g_assert_cmpuint(after_free, <, strlen(big)); /* not one call more after the free */
  append(log, "more\n");
  g_autofree char *want_more = g_strconcat("after\n", big, "more\n", NULL);
  wb = (Wait){&b, want_more};
  g_assert_true(nf_test_wait_for(got_all, &wb, WAIT_MS));
  g_assert_cmpuint(a.got->len, ==, after_free);
  nf_log_follow_free(fb);

  /* A deleted file is no longer watched; a restart on a missing one says
   * which file. */
  Sink c = {.got = g_string_new(NULL)};
  NfLogFollow *fc = nf_log_follow_new(log, 0, sink_cb, &c, &error);
  g_assert_no_error(error);
  g_assert_true(nf_log_follow_watching(fc));
  g_assert_cmpint(g_unlink(log), ==, 0);
  g_assert_true(nf_test_wait_for(not_watching, fc, WAIT_MS));
  g_assert_false(nf_log_follow_restart(fc, 0, &error));
  g_assert_nonnull(error);
  g_assert_nonnull(strstr(error->message, log));
  g_clear_error(&error);
  nf_log_follow_free(fc);
  g_string_free(c.got, TRUE);

  /* A missing file is refused with its name. */
  g_autofree char *missing = g_build_filename(tmp, "missing.log", NULL);
  g_assert_null(nf_log_follow_new(missing, 0, sink_cb, &a, &error));
  g_assert_nonnull(error);
  g_assert_nonnull(strstr(error->message, missing));

  g_string_free(a.got, TRUE);
  g_string_free(b.got, TRUE);
  g_string_free(want_b, TRUE);
  nf_test_tmpdir_cleanup(tmp);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/log-follow/exact", test_follow);
  return g_test_run();
}
