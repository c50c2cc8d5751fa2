/*
 * test-ksm-unit.c: the KSM books (supervisor/ksm.c) against a stand-in for
 * /sys/kernel/mm/ksm (plain files in the test's dir, via
 * NERVESFLEET_KSM_SYSFS), so the host's real KSM is never touched and other
 * users of it cannot make this flaky. Guards: the host's settings come back
 * when the last fleet leaves, not before; a second fleet never saves (and
 * later restores) the first one's tuning; a dead supervisor's entry is pruned
 * and its leftovers restored at the next start or `down`; the scan rate is
 * the sum of the live fleets' rates.
 */
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <glib/gstdio.h>

#include "supervisor/ksm.h"
#include "tests/lib/nf-test.h"

typedef struct {
  char *tmp;
  char *sysfs;
  char *state;
} Fixture;

static void knob_set(Fixture *f, const char *name, const char *value)
{
  g_autofree char *path = g_build_filename(f->sysfs, name, NULL);
  g_assert_true(g_file_set_contents(path, value, -1, NULL));
}

static char *knob(Fixture *f, const char *name)
{
  g_autofree char *path = g_build_filename(f->sysfs, name, NULL);
  char *v = NULL;
  g_assert_true(g_file_get_contents(path, &v, NULL, NULL));
  return g_strstrip(v);
}

#define assert_knob(f, name, want)                                                                 \
  do {                                                                                             \
    g_autofree char *v_ = knob(f, name);                                                           \
    g_assert_cmpstr(v_, ==, want);                                                                 \
  } while (0)

static void setup(Fixture *f, gconstpointer data)
{
  f->tmp = nf_test_tmpdir_new();
  f->sysfs = g_build_filename(f->tmp, "ksm", NULL);
  f->state = g_build_filename(f->tmp, "books", NULL);
  g_assert_cmpint(g_mkdir(f->sysfs, 0755), ==, 0);
  knob_set(f, "run", "0\n");
  knob_set(f, "pages_to_scan", "100\n");
  knob_set(f, "sleep_millisecs", "200\n");
  knob_set(f, "use_zero_pages", "0\n");
  knob_set(f, "pages_sharing", "1234\n");
  g_setenv("NERVESFLEET_KSM_SYSFS", f->sysfs, TRUE);
  g_setenv("NERVESFLEET_KSM_STATE", f->state, TRUE);
}

static void teardown(Fixture *f, gconstpointer data)
{
  g_unsetenv("NERVESFLEET_KSM_SYSFS");
  g_unsetenv("NERVESFLEET_KSM_STATE");
  nf_test_tmpdir_cleanup(f->tmp);
  g_free(f->tmp);
  g_free(f->sysfs);
  g_free(f->state);
}

static void assert_host_original(Fixture *f)
{
  assert_knob(f, "run", "0");
  assert_knob(f, "pages_to_scan", "100");
  assert_knob(f, "sleep_millisecs", "200");
  assert_knob(f, "use_zero_pages", "0");
  g_autofree char *saved = g_build_filename(f->state, "saved", NULL);
  g_assert_false(g_file_test(saved, G_FILE_TEST_EXISTS));
}

/* A pid that is certainly dead: a child we started and reaped. */
static int dead_pid(void)
{
  pid_t pid = fork();
  if (pid == 0)
    _exit(0);
  g_assert_cmpint(pid, >, 0);
  g_assert_cmpint(waitpid(pid, NULL, 0), ==, pid);
  return pid;
}

/* Rewrites every owner entry as `text`. */
static void rewrite_owners(Fixture *f, const char *text)
{
  g_autoptr(GDir) d = g_dir_open(f->state, 0, NULL);
  g_assert_nonnull(d);
  for (const char *n; (n = g_dir_read_name(d)) != NULL;)
    if (g_str_has_prefix(n, "owner-")) {
      g_autofree char *p = g_build_filename(f->state, n, NULL);
      g_assert_true(g_file_set_contents(p, text, -1, NULL));
    }
}

/* Every owner entry as if its supervisor had died. */
static void kill_owners(Fixture *f)
{
  g_autofree char *text = g_strdup_printf("pid=%d pages=300\n", dead_pid());
  rewrite_owners(f, text);
}

/* Every owner entry as if its supervisor had died and its pid been reused:
 * the pid is live (ours), the start time is not its process's. */
static void reuse_owner_pids(Fixture *f)
{
  g_autofree char *text = g_strdup_printf("pid=%d pages=300 start=1\n", (int)getpid());
  rewrite_owners(f, text);
}

static void test_two_fleets(Fixture *f, gconstpointer data)
{
  g_autoptr(GError) error = NULL;
  NfKsm *a = nf_ksm_acquire("/run/a", 300, &error);
  g_assert_no_error(error);
  assert_knob(f, "run", "1");
  assert_knob(f, "pages_to_scan", "300");
  assert_knob(f, "sleep_millisecs", "20");
  assert_knob(f, "use_zero_pages", "1");
  NfKsm *b = nf_ksm_acquire("/run/b", 200, &error);
  g_assert_no_error(error);
  assert_knob(f, "pages_to_scan", "500");
  nf_ksm_set_rate(b, 400); /* b grew */
  assert_knob(f, "pages_to_scan", "700");
  /* The first to leave must not undo the other's KSM. */
  nf_ksm_release(a);
  assert_knob(f, "run", "1");
  assert_knob(f, "pages_to_scan", "400");
  nf_ksm_release(b);
  assert_host_original(f);
}

static void test_crash_then_recover(Fixture *f, gconstpointer data)
{
  g_autoptr(GError) error = NULL;
  nf_ksm_forget(nf_ksm_acquire("/run/a", 300, &error)); /* its supervisor "crashes" */
  g_assert_no_error(error);
  /* Still alive (our own pid): recovery leaves a live fleet alone... */
  g_assert_false(nf_ksm_recover(NULL));
  assert_knob(f, "run", "1");
  /* ...but the same fleet starting again replaces its own entry. */
  g_assert_true(nf_ksm_recover("/run/a"));
  assert_host_original(f);

  /* A dead supervisor's entry is pruned by anyone's recovery (`down`). */
  nf_ksm_forget(nf_ksm_acquire("/run/a", 300, &error));
  kill_owners(f);
  g_assert_true(nf_ksm_recover("/run/other"));
  assert_host_original(f);
  g_assert_false(nf_ksm_recover(NULL)); /* nothing left to do */

  /* So is one whose pid another process has by now. It used to count as
   * live, and the host's settings stayed tuned until that process ended. */
  nf_ksm_forget(nf_ksm_acquire("/run/a", 300, &error));
  reuse_owner_pids(f);
  g_assert_true(nf_ksm_recover("/run/other"));
  assert_host_original(f);
}

static void test_leftover_is_not_saved_again(Fixture *f, gconstpointer data)
{
  g_autoptr(GError) error = NULL;
  nf_ksm_forget(nf_ksm_acquire("/run/a", 300, &error));
  kill_owners(f);
  /* A new fleet finds the host tuned by a dead one: what it must restore
   * later is still the host's own, not the tuning. */
  NfKsm *b = nf_ksm_acquire("/run/b", 150, &error);
  g_assert_no_error(error);
  assert_knob(f, "pages_to_scan", "150");
  nf_ksm_release(b);
  assert_host_original(f);
}

static void test_missing_ksm(Fixture *f, gconstpointer data)
{
  g_autofree char *run = g_build_filename(f->sysfs, "run", NULL);
  g_assert_cmpint(g_unlink(run), ==, 0);
  g_autoptr(GError) error = NULL;
  g_assert_null(nf_ksm_acquire("/run/a", 300, &error));
  g_assert_nonnull(error);
  g_assert_nonnull(strstr(error->message, run));
  g_assert_nonnull(strstr(error->message, "--ksm off"));
  g_assert_false(nf_ksm_wanted(NF_KSM_AUTO, 100)); /* auto quietly stays off */
  NfKsmState st;
  nf_ksm_read_state(&st);
  g_assert_false(st.present);
}

static void test_modes_and_rates(Fixture *f, gconstpointer data)
{
  NfKsmMode m;
  g_autoptr(GError) error = NULL;
  g_assert_true(nf_ksm_mode_parse("on", &m, NULL));
  g_assert_cmpint(m, ==, NF_KSM_ON);
  g_assert_true(nf_ksm_mode_parse("off", &m, NULL));
  g_assert_cmpint(m, ==, NF_KSM_OFF);
  g_assert_false(nf_ksm_mode_parse("yes", &m, &error));
  g_assert_nonnull(strstr(error->message, "auto, on or off"));
  g_assert_true(nf_ksm_wanted(NF_KSM_ON, 1));
  g_assert_false(nf_ksm_wanted(NF_KSM_OFF, 1000));
  g_assert_false(nf_ksm_wanted(NF_KSM_AUTO, NF_KSM_AUTO_MIN_GUESTS - 1));
  g_assert_true(nf_ksm_wanted(NF_KSM_AUTO, NF_KSM_AUTO_MIN_GUESTS));
  /* Sized to the fleet, within bounds. */
  g_assert_cmpuint(nf_ksm_scan_pages(1, 128), ==, 100);
  g_assert_cmpuint(nf_ksm_scan_pages(12, 192), >, nf_ksm_scan_pages(8, 192));
  g_assert_cmpuint(nf_ksm_scan_pages(100000, 192), ==, 20000);
  NfKsmState st;
  nf_ksm_read_state(&st);
  g_assert_true(st.present);
  g_assert_cmpuint(st.pages_sharing, ==, 1234);
  g_assert_cmpuint(st.sleep_ms, ==, 200);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add("/ksm/two-fleets", Fixture, NULL, setup, test_two_fleets, teardown);
  g_test_add("/ksm/crash-then-recover", Fixture, NULL, setup, test_crash_then_recover, teardown);
  g_test_add("/ksm/leftover-is-not-saved-again", Fixture, NULL, setup,
             test_leftover_is_not_saved_again, teardown);
  g_test_add("/ksm/missing-ksm", Fixture, NULL, setup, test_missing_ksm, teardown);
  g_test_add("/ksm/modes-and-rates", Fixture, NULL, setup, test_modes_and_rates, teardown);
  return g_test_run();
}
