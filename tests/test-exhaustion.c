/*
 * test-exhaustion.c: a daemon fleet in a bad environment keeps its promises
 * (issue 16). Runs the real binary on the fake qemu (these are about the
 * supervisor, not the guest). Guards:
 * - open-file limit lowered under a running supervisor: `scale` beyond it is
 *   refused with the limit and the fix named; control clients that exhaust
 *   the fds are not accepted for a while, once, with a notice, instead of the
 *   accept loop spinning (and filling supervisor.log); once they go, `ps`
 *   answers; the guests never notice;
 * - an open-file limit lowered below the number of fds the main loop polls
 *   (poll(2) then fails with EINVAL and GLib's loop spun, a million warnings
 *   in seconds): a soft limit is raised back to the hard one, with a notice;
 *   a hard one makes the loop wait through its reserve epoll set, saying so
 *   once with the limit and the fix, still serving what it polls (clients
 *   that hang up are seen), and polling as before once the set fits again;
 *   stopped at that limit, it still removes its cgroups;
 * - the qemu binary replaced by one that exits at once after the fleet
 *   started: the crashed guest's restarts fail, are classified and end in
 *   `failed` by policy; the other guests keep running, untouched;
 * - the runtime dir removed under a running fleet: the supervisor notices,
 *   puts back what clients need (lock, control socket), and `down` stops the
 *   fleet leaving nothing behind.
 * (A state dir on a full filesystem: tests/test-state-dir.c.)
 */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <glib/gstdio.h>
#include <jansson.h>

#include "tests/lib/nf-test.h"

#define CLI_MS 60000

static char *nf(const char *tmp, int want, const char *first, ...) G_GNUC_NULL_TERMINATED;
static json_t *guest_json(const char *tmp, const char *name, guint id);
static char *start_fleet(const char *tmp, const char *name, const char *qemu, guint n,
                         const char *extra);

/* Runs the binary; asserts its exit status; returns its output. */
static char *nf(const char *tmp, int want, const char *first, ...)
{
  g_autoptr(GPtrArray) args = g_ptr_array_new();
  va_list ap;
  va_start(ap, first);
  for (const char *a = first; a; a = va_arg(ap, const char *))
    g_ptr_array_add(args, (gpointer)a);
  va_end(ap);
  g_ptr_array_add(args, NULL);
  char *out = NULL;
  int rc = nf_test_run_cli(tmp, (const char *const *)args->pdata, CLI_MS, &out);
  g_test_message("nervesfleet %s -> %d: %s", first, rc, out);
  g_assert_cmpint(rc, ==, want);
  return out;
}

/* Guest `id` of `ps --json` (new reference). */
static json_t *guest_json(const char *tmp, const char *name, guint id)
{
  g_autofree char *out = nf(tmp, 0, "ps", "--json", "--name", name, NULL);
  json_auto_t *ps = json_loads(out, 0, NULL);
  g_assert_nonnull(ps);
  gsize i;
  json_t *g;
  json_array_foreach(json_object_get(ps, "guests"), i, g)
  {
    if (json_integer_value(json_object_get(g, "id")) == (json_int_t)id)
      return json_incref(g);
  }
  g_assert_not_reached();
}

/* `run N -d` of fake guests; returns the fake qemu's path used. */
static char *start_fleet(const char *tmp, const char *name, const char *qemu, guint n,
                         const char *extra)
{
  g_autofree char *kernel = g_build_filename(tmp, "Image", NULL);
  g_assert_true(g_file_set_contents(kernel, "not a kernel", -1, NULL));
  g_autofree char *count = g_strdup_printf("%u", n);
  g_autofree char *out = nf(tmp, 0, "run", count, "-d", "--name", name, "--qemu", qemu, "--kernel",
                            kernel, "--stop-timeout", "5", "--backoff", "0.1", "--max-restarts",
                            "2", "--restart-window", "60", extra, NULL);
  g_autofree char *w = nf(tmp, 0, "wait", "--name", name, "--timeout", "60", NULL);
  return g_strdup(qemu);
}

static char *fake_qemu(void)
{
  return g_build_filename(g_getenv("NF_HELPERS"), "fake-qemu", NULL);
}

static guint count_in_file(const char *path, const char *needle)
{
  g_autofree char *text = NULL;
  if (!g_file_get_contents(path, &text, NULL, NULL))
    return 0;
  guint n = 0;
  for (const char *p = text; (p = strstr(p, needle)); p += strlen(needle))
    n++;
  return n;
}

static void test_fd_limit(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  g_autofree char *qemu = fake_qemu();
  g_free(start_fleet(tmp, "fd", qemu, 3, NULL));
  json_auto_t *g1 = guest_json(tmp, "fd", 1);
  json_int_t pid1 = json_integer_value(json_object_get(g1, "pid"));
  pid_t sup = nf_test_supervisor_pid(tmp, "fd");

  /* Lower the limit (hard too: the supervisor raises its soft limit up to
   * the hard one by itself) to just above the highest fd it holds. */
  g_autofree char *fd_dir = g_strdup_printf("/proc/%d/fd", (int)sup);
  g_autoptr(GDir) d = g_dir_open(fd_dir, 0, NULL);
  g_assert_nonnull(d);
  int max_fd = 0;
  for (const char *e; (e = g_dir_read_name(d));)
    max_fd = MAX(max_fd, atoi(e));
  struct rlimit low;
  low = (struct rlimit){.rlim_cur = (rlim_t)max_fd + 3, .rlim_max = (rlim_t)max_fd + 3};
  g_assert_cmpint(prlimit(sup, RLIMIT_NOFILE, &low, NULL), ==, 0);

  /* Growing beyond it: refused, naming the limit and the fix. */
  g_autofree char *scale = nf(tmp, 1, "scale", "20", "--name", "fd", NULL);
  g_assert_nonnull(strstr(scale, "open files"));
  g_assert_nonnull(strstr(scale, "raise the limit"));

  /* Clients that take every fd left: the supervisor stops accepting for a
   * while (saying so once) instead of spinning on EMFILE. */
  g_autofree char *sock = g_build_filename(tmp, "run", "nervesfleet", "fd", "control.sock", NULL);
  g_autofree char *log =
      g_build_filename(tmp, "state", "nervesfleet", "fd", "supervisor.log", NULL);
  int clients[16];
  for (guint i = 0; i < G_N_ELEMENTS(clients); i++) {
    clients[i] = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    g_strlcpy(addr.sun_path, sock, sizeof addr.sun_path);
    g_assert_cmpint(connect(clients[i], (struct sockaddr *)&addr, sizeof addr), ==, 0);
  }
  g_assert_true(nf_test_wait_file_contains(log, g_strerror(EMFILE), CLI_MS));
  for (guint i = 0; i < G_N_ELEMENTS(clients); i++)
    close(clients[i]);
  /* Served again once fds are free (the paused listener comes back). */
  g_autofree char *ps = nf(tmp, 0, "ps", "--name", "fd", NULL);
  guint said = count_in_file(log, g_strerror(EMFILE));
  g_test_message("supervisor.log mentions EMFILE %u times", said);
  g_assert_cmpuint(said, <=, 4);

  /* The guests never noticed. */
  json_auto_t *again = guest_json(tmp, "fd", 1);
  g_assert_cmpstr(json_string_value(json_object_get(again, "state")), ==, "ready");
  g_assert_cmpint(json_integer_value(json_object_get(again, "pid")), ==, pid1);
  g_free(nf(tmp, 0, "down", "--name", "fd", NULL));
  nf_test_tmpdir_cleanup(tmp);
}

typedef struct {
  pid_t pid;
  guint want;
} FdWait;

static gboolean fds_at_least_cb(gpointer data)
{
  FdWait *w = data;
  return nf_test_count_open_fds_of(w->pid) >= w->want;
}

static gboolean tick_cb(gpointer data)
{
  return G_SOURCE_CONTINUE;
}

static void test_poll_limit(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  g_autofree char *qemu = fake_qemu();
  g_free(start_fleet(tmp, "pl", qemu, 3, NULL));
  json_auto_t *g1 = guest_json(tmp, "pl", 1);
  pid_t sup = nf_test_supervisor_pid(tmp, "pl");
  guint cgroups = nf_test_cgroups_of(tmp, "pl"); /* 1 as root with v1 memory cgroups */
  struct rlimit orig;
  g_assert_cmpint(prlimit(sup, RLIMIT_NOFILE, NULL, &orig), ==, 0);

  /* Idle control clients: one polled fd each in the supervisor's loop. */
  g_autofree char *sock = g_build_filename(tmp, "run", "nervesfleet", "pl", "control.sock", NULL);
  g_autofree char *log =
      g_build_filename(tmp, "state", "nervesfleet", "pl", "supervisor.log", NULL);
  FdWait w = {.pid = sup, .want = nf_test_count_open_fds_of(sup) + 8};
  int clients[8];
  for (guint i = 0; i < G_N_ELEMENTS(clients); i++) {
    clients[i] = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    g_strlcpy(addr.sun_path, sock, sizeof addr.sun_path);
    g_assert_cmpint(connect(clients[i], (struct sockaddr *)&addr, sizeof addr), ==, 0);
  }
  /* No event says a client was accepted: look at /proc on a tick. */
  guint tick = g_timeout_add(10, tick_cb, NULL);
  g_assert_true(nf_test_wait_for(fds_at_least_cb, &w, CLI_MS));
  g_source_remove(tick);

  /* A soft limit of 4, under the 11 or so fds the loop polls: raised back. */
  struct rlimit low = {.rlim_cur = 4, .rlim_max = orig.rlim_max};
  g_assert_cmpint(prlimit(sup, RLIMIT_NOFILE, &low, NULL), ==, 0);
  g_assert_true(nf_test_wait_file_contains(log, "raised the soft limit back", CLI_MS));
  struct rlimit now;
  g_assert_cmpint(prlimit(sup, RLIMIT_NOFILE, NULL, &now), ==, 0);
  g_assert_cmpuint(now.rlim_cur, ==, orig.rlim_max);

  /* A hard limit of 4 too: one notice naming it and the fix, and the loop
   * still runs on the reserve set: the clients' hang-ups are seen, and once
   * they are gone the set fits and polling is back to normal. */
  low.rlim_max = 4;
  g_assert_cmpint(prlimit(sup, RLIMIT_NOFILE, &low, NULL), ==, 0);
  g_assert_true(nf_test_wait_file_contains(log, "prlimit --pid", CLI_MS));
  for (guint i = 0; i < G_N_ELEMENTS(clients); i++)
    close(clients[i]);
  g_assert_true(nf_test_wait_file_contains(log, "polling as before", CLI_MS));
  g_assert_cmpuint(count_in_file(log, "below the"), ==, 2);
  /* GLib never saw poll fail: no spin, no flood of warnings. */
  g_assert_cmpuint(count_in_file(log, "poll(2) failed"), ==, 0);

  /* The guests never noticed. Without CAP_SYS_RESOURCE the hard limit
   * cannot be raised back (so no `ps` or `down`: no fd to accept with), but
   * SIGTERM still stops the fleet in order over the fds it holds. */
  g_assert_cmpint(kill((pid_t)json_integer_value(json_object_get(g1, "pid")), 0), ==, 0);
  g_assert_cmpint(kill(sup, SIGTERM), ==, 0);
  g_autoptr(GArray) pids = g_array_new(FALSE, FALSE, sizeof(GPid));
  GPid p = sup;
  g_array_append_val(pids, p);
  g_assert_true(nf_test_wait_pids_gone(pids, CLI_MS));
  /* Its cgroups too, though it ended with no fd to spare (each make check
   * left the fleet's parent cgroup behind before). */
  g_test_message("%u fleet cgroup(s) while it ran", cgroups);
  g_assert_cmpuint(nf_test_cgroups_of(tmp, "pl"), ==, 0);
  nf_test_tmpdir_cleanup(tmp);
}

static void test_qemu_replaced(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  g_autofree char *qemu = g_build_filename(tmp, "qemu", NULL);
  g_autofree char *fake = fake_qemu();
  g_autofree char *cp = g_strdup_printf("cp '%s' '%s'", fake, qemu);
  nf_test_sh(cp);
  g_free(start_fleet(tmp, "qr", qemu, 3, NULL));
  json_auto_t *g2 = guest_json(tmp, "qr", 2);
  json_auto_t *g3 = guest_json(tmp, "qr", 3);
  json_auto_t *g1 = guest_json(tmp, "qr", 1);

  /* An upgrade gone wrong: the binary now exits at once. */
  g_autofree char *broken = g_build_filename(tmp, "qemu.new", NULL);
  g_assert_true(g_file_set_contents(
      broken, "#!/bin/sh\necho 'qemu: broken on purpose' >&2\nexit 1\n", -1, NULL));
  g_assert_cmpint(g_chmod(broken, 0755), ==, 0);
  g_assert_cmpint(g_rename(broken, qemu), ==, 0);
  g_assert_cmpint(kill((pid_t)json_integer_value(json_object_get(g1, "pid")), SIGKILL), ==, 0);

  /* `wait` ends (1) when guest 1 fails: its restarts could not start. */
  g_autofree char *w = nf(tmp, 1, "wait", "1", "--name", "qr", "--timeout", "60", NULL);
  json_auto_t *after = guest_json(tmp, "qr", 1);
  g_assert_cmpstr(json_string_value(json_object_get(after, "state")), ==, "failed");
  json_t *last = json_object_get(after, "last_exit");
  const char *reason = json_string_value(json_object_get(last, "reason"));
  g_test_message("guest 1: last exit %s: %s", json_string_value(json_object_get(last, "kind")),
                 reason);
  g_assert_cmpstr(json_string_value(json_object_get(last, "kind")), ==, "crashed");
  g_assert_nonnull(reason);
  g_assert_nonnull(strstr(reason, "broken on purpose"));
  /* The others run on, untouched. */
  json_auto_t *n2 = guest_json(tmp, "qr", 2);
  json_auto_t *n3 = guest_json(tmp, "qr", 3);
  g_assert_cmpstr(json_string_value(json_object_get(n2, "state")), ==, "ready");
  g_assert_cmpstr(json_string_value(json_object_get(n3, "state")), ==, "ready");
  g_assert_cmpint(json_integer_value(json_object_get(n2, "pid")), ==,
                  json_integer_value(json_object_get(g2, "pid")));
  g_assert_cmpint(json_integer_value(json_object_get(n3, "pid")), ==,
                  json_integer_value(json_object_get(g3, "pid")));
  g_free(nf(tmp, 0, "down", "--name", "qr", NULL));
  nf_test_tmpdir_cleanup(tmp);
}

static void test_runtime_dir_removed(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  g_autofree char *qemu = fake_qemu();
  g_free(start_fleet(tmp, "rd", qemu, 2, NULL));
  json_auto_t *g1 = guest_json(tmp, "rd", 1);
  g_autofree char *rt = g_build_filename(tmp, "run", "nervesfleet", "rd", NULL);
  g_autofree char *rm = g_strdup_printf("rm -rf '%s'", rt);
  nf_test_sh(rm);
  /* The supervisor notices and puts back what clients need. */
  g_autofree char *log =
      g_build_filename(tmp, "state", "nervesfleet", "rd", "supervisor.log", NULL);
  g_assert_true(nf_test_wait_file_contains(log, "runtime dir", CLI_MS));
  g_autofree char *sock = g_build_filename(rt, "control.sock", NULL);
  g_autofree char *ps = nf(tmp, 0, "ps", "--name", "rd", NULL);
  json_auto_t *again = guest_json(tmp, "rd", 1);
  g_assert_cmpint(json_integer_value(json_object_get(again, "pid")), ==,
                  json_integer_value(json_object_get(g1, "pid")));
  g_free(nf(tmp, 0, "down", "--name", "rd", NULL));
  g_assert_false(g_file_test(rt, G_FILE_TEST_EXISTS));
  nf_test_tmpdir_cleanup(tmp);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/exhaustion/fd-limit", test_fd_limit);
  g_test_add_func("/exhaustion/poll-limit", test_poll_limit);
  g_test_add_func("/exhaustion/qemu-replaced", test_qemu_replaced);
  g_test_add_func("/exhaustion/runtime-dir-removed", test_runtime_dir_removed);
  return g_test_run();
}
