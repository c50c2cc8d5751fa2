/*
 * test-cli.c: the fleet verbs end to end, against real guests under TCG.
 * Guards: `ps --json` carries the documented fields; stop/start/restart of a
 * range act on exactly that range; scale grows and shrinks; balloon reports
 * the size reached; `logs -f` streams new console output, `logs all [-f]`
 * every guest's behind its name; wait, events;
 * `down` leaves nothing; `run --exec` runs CMD with the fleet's coordinates
 * and exits with CMD's status, fails fast (naming the guest, quoting its
 * console) when a guest cannot boot, and --ephemeral leaves no file; a
 * missing fleet gets the "start one with" hint.
 */
#include <string.h>
#include <glib/gstdio.h>
#include <jansson.h>

#include "tests/lib/nf-test.h"

#define BOOT_MS 180000
#define CLI_MS 120000

static char *tmp;

/* Runs a verb against fleet 'cli'; asserts its exit status; returns output. */
static char *cli(int want, const char *verb, ...)
{
  g_autoptr(GPtrArray) args = g_ptr_array_new();
  g_ptr_array_add(args, (gpointer)verb);
  va_list ap;
  va_start(ap, verb);
  for (const char *a; (a = va_arg(ap, const char *)) != NULL;)
    g_ptr_array_add(args, (gpointer)a);
  va_end(ap);
  g_ptr_array_add(args, "--name");
  g_ptr_array_add(args, "cli");
  g_ptr_array_add(args, NULL);
  char *out = NULL;
  int rc = nf_test_run_cli(tmp, (const char *const *)args->pdata, CLI_MS, &out);
  g_test_message("nervesfleet %s -> %d: %s", verb, rc, out);
  g_assert_cmpint(rc, ==, want);
  return out;
}

static json_t *ps_json(void)
{
  g_autofree char *out = cli(0, "ps", "--json", NULL);
  json_error_t err;
  json_t *j = json_loads(out, 0, &err);
  g_assert_nonnull(j);
  return j;
}

static json_t *guest(json_t *ps, guint id)
{
  gsize i;
  json_t *g;
  json_array_foreach(json_object_get(ps, "guests"), i,
                     g) if (json_integer_value(json_object_get(g, "id")) == id) return g;
  return NULL;
}

static const char *state_of(json_t *ps, guint id)
{
  json_t *g = guest(ps, id);
  return g ? json_string_value(json_object_get(g, "state")) : NULL;
}

static void test_fleet_verbs(void)
{
  const char *run[] = {"run", "2", "--name", "cli", "--stop-timeout", "5", NULL};
  g_autoptr(NfTestProc) fleet = nf_test_proc_spawn(tmp, run);
  /* The control socket is up before this line is printed. */
  g_assert_true(nf_test_proc_wait_output(fleet, "fleet 'cli'", CLI_MS));
  g_autofree char *w = cli(0, "wait", "--timeout", "170", NULL);
  g_assert_nonnull(strstr(w, "2 guests ready"));

  /* ps --json: the documented fields, with their types. */
  {
    json_auto_t *ps = ps_json();
    g_assert_cmpstr(json_string_value(json_object_get(ps, "fleet")), ==, "cli");
    g_assert_cmpint(json_integer_value(json_object_get(ps, "count")), ==, 2);
    g_assert_cmpint(json_integer_value(json_object_get(json_object_get(ps, "counts"), "ready")), ==,
                    2);
    for (guint id = 1; id <= 2; id++) {
      json_t *g = guest(ps, id);
      g_assert_nonnull(g);
      g_autofree char *name = g_strdup_printf("vm-%04u", id);
      g_autofree char *serial = g_strdup_printf("NF-%06u", id);
      g_assert_cmpstr(json_string_value(json_object_get(g, "name")), ==, name);
      g_assert_cmpstr(json_string_value(json_object_get(g, "serial")), ==, serial);
      g_assert_cmpstr(json_string_value(json_object_get(g, "state")), ==, "ready");
      g_assert_true(json_is_true(json_object_get(g, "running")));
      g_assert_cmpint(json_integer_value(json_object_get(g, "pid")), >, 1);
      g_assert_true(json_is_number(json_object_get(g, "uptime_s")));
      g_assert_true(json_is_number(json_object_get(g, "boot_s")));
      g_assert_cmpint(json_integer_value(json_object_get(g, "restarts")), ==, 0);
      g_assert_true(json_is_null(json_object_get(g, "last_exit")));
      g_assert_cmpint(json_integer_value(json_object_get(g, "balloon_bytes")), ==, 128 << 20);
      g_assert_cmpint(json_integer_value(json_object_get(g, "rss_bytes")), >, 1 << 20);
      g_assert_true(json_is_object(json_object_get(g, "extras")));
      g_assert_true(json_is_string(json_object_get(g, "mac")));
    }
    g_autofree char *table = cli(0, "ps", NULL);
    g_assert_nonnull(strstr(table, "vm-0002  NF-000002  ready"));
    g_autofree char *bad = cli(2, "ps", "1-", NULL);
    g_assert_nonnull(strstr(bad, "bad TARGET"));
    g_autofree char *missing = cli(1, "stop", "7", NULL);
    g_assert_nonnull(strstr(missing, "no guest 7"));
  }

  /* events and logs -f follow what happens next. */
  const char *ev_args[] = {"events", "--json", "--name", "cli", NULL};
  g_autoptr(NfTestProc) events = nf_test_proc_spawn(tmp, ev_args);
  const char *logs_args[] = {"logs", "2", "-f", "--name", "cli", NULL};
  g_autoptr(NfTestProc) logs = nf_test_proc_spawn(tmp, logs_args);
  g_assert_true(nf_test_proc_wait_output(logs, "nervesfleet-ready serial=NF-000002", CLI_MS));
  const char *all_args[] = {"logs", "all", "-f", "--name", "cli", NULL};
  g_autoptr(NfTestProc) logs_all = nf_test_proc_spawn(tmp, all_args);
  g_assert_true(
      nf_test_proc_wait_output(logs_all, "vm-0002 | nervesfleet-ready serial=NF-000002", CLI_MS));

  /* stop a range: exactly that range goes down, and stays down. */
  g_autofree char *s = cli(0, "stop", "2-2", NULL);
  g_assert_nonnull(strstr(s, "1 guest stopped"));
  {
    json_auto_t *ps = ps_json();
    g_assert_cmpstr(state_of(ps, 1), ==, "ready");
    g_assert_cmpstr(state_of(ps, 2), ==, "stopped");
    g_assert_true(json_is_null(json_object_get(guest(ps, 2), "pid")));
    g_assert_cmpstr(
        json_string_value(json_object_get(json_object_get(guest(ps, 2), "last_exit"), "kind")), ==,
        "stopped");
  }
  g_assert_true(nf_test_proc_wait_output(events, "\"to\":\"stopped\"", CLI_MS));
  g_autofree char *wf = cli(1, "wait", "2", "--timeout", "30", NULL);
  g_assert_nonnull(strstr(wf, "vm-0002 stopped"));

  /* start it again, waiting until ready; logs -f sees its second boot. */
  g_autofree char *st = cli(0, "start", "1-2", "--wait", NULL);
  g_assert_nonnull(strstr(st, "2 guests ready"));
  g_assert_true(nf_test_proc_wait_count(logs, "nervesfleet-ready serial=NF-000002", 2, CLI_MS));

  /* restart a list: new pids, ready again. */
  json_auto_t *before = ps_json();
  g_autofree char *r = cli(0, "restart", "1,2", "--wait", NULL);
  g_assert_nonnull(strstr(r, "2 guests restarted, ready"));
  /* logs all -f saw both guests boot again, each line behind its name:
   * guest 1 twice, guest 2 three times (stopped and started, then this). */
  g_assert_true(
      nf_test_proc_wait_count(logs_all, "vm-0001 | nervesfleet-ready serial=NF-000001", 2, CLI_MS));
  g_assert_true(
      nf_test_proc_wait_count(logs_all, "vm-0002 | nervesfleet-ready serial=NF-000002", 3, CLI_MS));
  {
    g_auto(GStrv) lines = g_strsplit(nf_test_proc_output(logs_all), "\n", -1);
    for (char **l = lines; *l && **l; l++)
      g_assert_true(g_str_has_prefix(*l, "vm-0001 | ") || g_str_has_prefix(*l, "vm-0002 | "));
  }
  {
    json_auto_t *ps = ps_json();
    for (guint id = 1; id <= 2; id++) {
      g_assert_cmpstr(state_of(ps, id), ==, "ready");
      g_assert_cmpint(json_integer_value(json_object_get(guest(ps, id), "pid")), !=,
                      json_integer_value(json_object_get(guest(before, id), "pid")));
    }
  }

  /* logs of several guests: every line behind its guest's name; --since
   * start has each guest's last boot only. */
  {
    g_autofree char *all = cli(0, "logs", "all", NULL);
    g_auto(GStrv) lines = g_strsplit(all, "\n", -1);
    guint n = 0;
    for (char **l = lines; *l && **l; l++, n++)
      g_assert_true(g_str_has_prefix(*l, "vm-0001 | ") || g_str_has_prefix(*l, "vm-0002 | "));
    g_assert_cmpuint(n, >, 4);
    g_assert_nonnull(strstr(all, "vm-0002 | nervesfleet-ready serial=NF-000002"));
    g_autofree char *last = cli(0, "logs", "1-2", "--since", "start", NULL);
    for (guint id = 1; id <= 2; id++) {
      g_autofree char *ready =
          g_strdup_printf("vm-%04u | nervesfleet-ready serial=NF-%06u", id, id);
      const char *at = strstr(last, ready);
      g_assert_nonnull(at);
      g_assert_null(strstr(at + 1, ready));
    }
    g_autofree char *unknown = cli(1, "logs", "1,7", NULL);
    g_assert_nonnull(strstr(unknown, "no guest 7"));
  }

  /* balloon: the guest gives memory back and the size reached is reported. */
  g_autofree char *b = cli(0, "balloon", "1", "96M", "--timeout", "60", NULL);
  g_assert_nonnull(strstr(b, "vm-0001 balloon 96M"));
  {
    json_auto_t *ps = ps_json();
    g_assert_cmpint(json_integer_value(json_object_get(guest(ps, 1), "balloon_bytes")), ==,
                    96 << 20);
  }

  /* scale up to 3 (ready), then down to 1 (the highest ids go). */
  g_autofree char *up = cli(0, "scale", "3", "--wait", NULL);
  g_assert_nonnull(strstr(up, "from 2 to 3"));
  {
    json_auto_t *ps = ps_json();
    g_assert_cmpint(json_integer_value(json_object_get(ps, "count")), ==, 3);
    g_assert_cmpstr(state_of(ps, 3), ==, "ready");
  }
  g_autofree char *down = cli(0, "scale", "1", NULL);
  g_assert_nonnull(strstr(down, "from 3 to 1"));
  {
    json_auto_t *ps = ps_json();
    g_assert_cmpstr(state_of(ps, 1), ==, "ready");
    g_assert_true(state_of(ps, 2) == NULL || g_str_equal(state_of(ps, 2), "stopped"));
    g_assert_true(state_of(ps, 3) == NULL || g_str_equal(state_of(ps, 3), "stopped"));
  }

  /* down: the supervisor stops everything; streams end; nothing is left. */
  g_autofree char *d = cli(0, "down", NULL);
  g_assert_cmpint(nf_test_proc_wait_exit(fleet, CLI_MS), ==, 0);
  g_assert_cmpint(nf_test_proc_wait_exit(events, CLI_MS), ==, 0);
  g_assert_cmpint(nf_test_proc_wait_exit(logs, CLI_MS), ==, 0);
  g_assert_cmpint(nf_test_proc_wait_exit(logs_all, CLI_MS), ==, 0);
  g_autofree char *rt = g_build_filename(tmp, "run", "nervesfleet", "cli", NULL);
  g_assert_false(g_file_test(rt, G_FILE_TEST_EXISTS));
  g_autofree char *gone = cli(1, "ps", NULL);
  g_assert_nonnull(strstr(gone, "no fleet 'cli' running; start one with `nervesfleet run N "
                                "--name cli`"));
}

static void test_exec_status_and_ephemeral(void)
{
  /* CMD sees the fleet (env + a working `ps` without --name) and its exit
   * status becomes run's. */
  g_autofree char *script =
      g_strdup_printf("test \"$NERVESFLEET_NAME\" = ex && test \"$NERVESFLEET_COUNT\" = 1 && "
                      "test -S \"$NERVESFLEET_SOCKET\" && test -d \"$NERVESFLEET_RUNTIME_DIR\" && "
                      "%s ps --json | grep -q '\"state\":\"ready\"' && echo cmd-ran && exit 7",
                      nf_test_bin());
  const char *args[] = {"run",         "1",      "--name", "ex", "--stop-timeout", "5",
                        "--ephemeral", "--exec", "sh",     "-c", script,           NULL};
  g_autofree char *out = NULL;
  g_assert_cmpint(nf_test_run_cli(tmp, args, BOOT_MS, &out), ==, 7);
  g_test_message("%s", out);
  g_assert_nonnull(strstr(out, "cmd-ran"));
  g_autofree char *state = g_build_filename(tmp, "state", "nervesfleet", "ex", NULL);
  g_assert_false(g_file_test(state, G_FILE_TEST_EXISTS));
  g_autofree char *rt = g_build_filename(tmp, "run", "nervesfleet", "ex", NULL);
  g_assert_false(g_file_test(rt, G_FILE_TEST_EXISTS));

  const char *ok[] = {"run", "1",           "--name", "ex",   "--stop-timeout",
                      "5",   "--ephemeral", "--exec", "true", NULL};
  g_autofree char *out2 = NULL;
  g_assert_cmpint(nf_test_run_cli(tmp, ok, BOOT_MS, &out2), ==, 0);
  g_assert_false(g_file_test(state, G_FILE_TEST_EXISTS));
  g_assert_false(g_file_test(rt, G_FILE_TEST_EXISTS));

  /* --state-dir naming a dir of the user's own: only the fleet's files go. */
  g_autofree char *mine = g_build_filename(tmp, "workspace", NULL);
  g_autofree char *keep = g_build_filename(mine, "keep.txt", NULL);
  g_assert_cmpint(g_mkdir(mine, 0755), ==, 0);
  g_assert_true(g_file_set_contents(keep, "the user's\n", -1, NULL));
  const char *in_mine[] = {"run",         "1",  "--name",      "ex",     "--stop-timeout", "5",
                           "--state-dir", mine, "--ephemeral", "--exec", "true",           NULL};
  g_autofree char *out3 = NULL;
  g_assert_cmpint(nf_test_run_cli(tmp, in_mine, BOOT_MS, &out3), ==, 0);
  g_assert_true(g_file_test(keep, G_FILE_TEST_EXISTS));
  g_autofree char *guest_dir = g_build_filename(mine, "vm-0001", NULL);
  g_assert_false(g_file_test(guest_dir, G_FILE_TEST_EXISTS));
}

static void test_exec_fails_fast(void)
{
  const char *args[] = {"run",
                        "1",
                        "--name",
                        "bad",
                        "--stop-timeout",
                        "5",
                        "--restart",
                        "never",
                        "--append",
                        "nf.fault=boot-panic",
                        "--ephemeral",
                        "--exec",
                        "echo",
                        "cmd-should-not-run",
                        NULL};
  g_autofree char *out = NULL;
  g_assert_cmpint(nf_test_run_cli(tmp, args, BOOT_MS, &out), ==, 1);
  g_test_message("%s", out);
  g_assert_null(strstr(out, "cmd-should-not-run\n"));
  g_assert_nonnull(strstr(out, "vm-0001 (NF-000001) failed"));
  g_assert_nonnull(strstr(out, "panic"));
  g_assert_nonnull(strstr(out, "last console lines of vm-0001"));
  g_assert_nonnull(strstr(out, "1 of 1 guests did not come up"));
}

/* `down` finds the fleet from NERVESFLEET_NAME as every other verb does
 * (inside `run --exec CMD`); it used to look for 'default'. Found by the soak. */
static void test_down_env_name(void)
{
  const char *run[] = {"run", "1", "-d", "--name", "envdown", "--stop-timeout", "5", NULL};
  g_autofree char *out = NULL;
  g_assert_cmpint(nf_test_run_cli(tmp, run, BOOT_MS, &out), ==, 0);
  g_setenv("NERVESFLEET_NAME", "envdown", TRUE);
  const char *down[] = {"down", NULL};
  g_autofree char *out2 = NULL;
  int rc = nf_test_run_cli(tmp, down, CLI_MS, &out2);
  g_unsetenv("NERVESFLEET_NAME");
  g_test_message("down -> %d: %s", rc, out2);
  g_assert_cmpint(rc, ==, 0);
  g_assert_nonnull(strstr(out2, "'envdown' stopped"));
  g_autofree char *rt = g_build_filename(tmp, "run", "nervesfleet", "envdown", NULL);
  g_assert_false(g_file_test(rt, G_FILE_TEST_EXISTS));
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  tmp = nf_test_tmpdir_new();
  g_test_add_func("/cli/fleet-verbs", test_fleet_verbs);
  g_test_add_func("/cli/exec-status-and-ephemeral", test_exec_status_and_ephemeral);
  g_test_add_func("/cli/exec-fails-fast", test_exec_fails_fast);
  g_test_add_func("/cli/down-env-name", test_down_env_name);
  int rc = g_test_run();
  nf_test_tmpdir_cleanup(tmp);
  g_free(tmp);
  return rc;
}
