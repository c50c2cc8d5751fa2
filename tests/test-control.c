/*
 * test-control.c: the control socket's protocol against a running fleet of
 * one real guest. Guards: good requests answer with the documented shapes;
 * malformed, oversize, unknown, wrong-version and wrong-type requests get
 * error replies and the connection keeps working; pipelined requests are
 * answered by id; a silent client, a half-sent line and a client that never
 * reads do not stop anyone else being served (the last one is dropped); 50
 * clients at once work; a client of another uid is refused and logged;
 * `scale` down with `wait` answers only once the removed guests are down
 * (their "stopped" event was sent before the answer); `logs` of several
 * guests with follow carries framed output, a joining guest's document and
 * its leaving, which also closes its console writer and frees the seat.
 */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <jansson.h>

#include "tests/lib/nf-test.h"

#define BOOT_MS 120000
#define REPLY_MS 20000

static char *tmp;
static NfTestProc *fleet;
static char *sock_path;

static int ctl_connect(void)
{
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  g_strlcpy(addr.sun_path, sock_path, sizeof(addr.sun_path));
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  g_assert_cmpint(fd, >=, 0);
  g_assert_cmpint(connect(fd, (struct sockaddr *)&addr, sizeof(addr)), ==, 0);
  return fd;
}

static void send_all(int fd, const char *buf, gsize len)
{
  while (len > 0) {
    ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR)
      continue;
    g_assert_cmpint(n, >, 0);
    buf += n;
    len -= (gsize)n;
  }
}

/* What fd has next, appended to `acc`, waiting until `deadline` (asserted);
 * FALSE at EOF. */
static gboolean read_more(int fd, GString *acc, gint64 deadline)
{
  for (;;) {
    int left = (int)((deadline - g_get_monotonic_time()) / 1000);
    g_assert_cmpint(left, >, 0);
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, left) <= 0)
      continue;
    char buf[65536];
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n > 0)
      g_string_append_len(acc, buf, n);
    return n > 0;
  }
}

/* One line from fd within the deadline; buffered per fd in `acc`. */
static char *read_line(int fd, GString *acc)
{
  gint64 deadline = g_get_monotonic_time() + REPLY_MS * 1000;
  for (;;) {
    char *nl = memchr(acc->str, '\n', acc->len);
    if (nl) {
      char *line = g_strndup(acc->str, (gsize)(nl - acc->str));
      g_string_erase(acc, 0, (gssize)(nl - acc->str) + 1);
      return line;
    }
    if (!read_more(fd, acc, deadline))
      return NULL;
  }
}

/* Sends `line`, returns the parsed reply (asserts v:1). */
static json_t *request(int fd, const char *line)
{
  g_autoptr(GString) acc = g_string_new(NULL);
  send_all(fd, line, strlen(line));
  send_all(fd, "\n", 1);
  g_autofree char *reply = read_line(fd, acc);
  g_assert_nonnull(reply);
  json_t *r = json_loads(reply, 0, NULL);
  g_assert_true(json_is_object(r));
  g_assert_cmpint(json_integer_value(json_object_get(r, "v")), ==, 1);
  return r;
}

static const char *error_code(json_t *r)
{
  g_assert_false(json_is_true(json_object_get(r, "ok")));
  const char *code = json_string_value(json_object_get(json_object_get(r, "error"), "code"));
  g_assert_nonnull(code);
  g_assert_nonnull(json_string_value(json_object_get(json_object_get(r, "error"), "message")));
  return code;
}

static void test_good_requests(void)
{
  int fd = ctl_connect();
  json_auto_t *hello = request(fd, "{\"v\":1,\"id\":1,\"cmd\":\"hello\"}");
  g_assert_true(json_is_true(json_object_get(hello, "ok")));
  g_assert_cmpint(json_integer_value(json_object_get(hello, "id")), ==, 1);
  json_t *res = json_object_get(hello, "result");
  g_assert_cmpint(json_integer_value(json_object_get(res, "protocol")), ==, 1);
  g_assert_cmpstr(json_string_value(json_object_get(res, "fleet")), ==, "ctl");
  g_assert_cmpint(json_integer_value(json_object_get(res, "count")), ==, 1);

  json_auto_t *ps = request(fd, "{\"v\":1,\"id\":\"ps-1\",\"cmd\":\"ps\",\"args\":{}}");
  g_assert_true(json_is_true(json_object_get(ps, "ok")));
  g_assert_cmpstr(json_string_value(json_object_get(ps, "id")), ==, "ps-1");
  json_t *g = json_array_get(json_object_get(json_object_get(ps, "result"), "guests"), 0);
  g_assert_cmpint(json_integer_value(json_object_get(g, "id")), ==, 1);
  g_assert_cmpstr(json_string_value(json_object_get(g, "name")), ==, "vm-0001");
  g_assert_cmpstr(json_string_value(json_object_get(g, "serial")), ==, "NF-000001");
  g_assert_cmpstr(json_string_value(json_object_get(g, "state")), ==, "ready");
  g_assert_true(json_is_integer(json_object_get(g, "pid")));

  json_auto_t *wait =
      request(fd, "{\"v\":1,\"id\":3,\"cmd\":\"wait\",\"args\":{\"targets\":\"1\"}}");
  g_assert_true(json_is_true(json_object_get(wait, "ok")));

  /* Pipelined: two requests in one write, answered in order by id. */
  g_autoptr(GString) acc = g_string_new(NULL);
  const char *two = "{\"v\":1,\"id\":10,\"cmd\":\"hello\"}\n{\"v\":1,\"id\":11,\"cmd\":\"ps\"}\n";
  send_all(fd, two, strlen(two));
  g_autofree char *a = read_line(fd, acc);
  g_autofree char *b = read_line(fd, acc);
  g_assert_nonnull(strstr(a, "\"id\":10"));
  g_assert_nonnull(strstr(b, "\"id\":11"));
  close(fd);
}

static void test_bad_requests(void)
{
  static const struct {
    const char *line, *code;
  } cases[] = {
      {"not json", "bad_request"},
      {"[1,2]", "bad_request"},
      {"{\"v\":1,\"id\":{},\"cmd\":\"ps\"}", "bad_request"},
      {"{\"id\":1,\"cmd\":\"ps\"}", "bad_request"},
      {"{\"v\":2,\"id\":1,\"cmd\":\"ps\"}", "unsupported_version"},
      {"{\"v\":1,\"id\":1}", "bad_request"},
      {"{\"v\":1,\"id\":1,\"cmd\":7}", "bad_request"},
      {"{\"v\":1,\"id\":5,\"cmd\":\"frobnicate\"}", "unknown_command"},
      {"{\"v\":1,\"id\":1,\"cmd\":\"ps\",\"args\":[]}", "bad_args"},
      {"{\"v\":1,\"id\":1,\"cmd\":\"stop\",\"args\":{\"targets\":5}}", "bad_args"},
      {"{\"v\":1,\"id\":1,\"cmd\":\"stop\"}", "bad_args"},
      {"{\"v\":1,\"id\":1,\"cmd\":\"stop\",\"args\":{\"targets\":\"3-1\"}}", "bad_args"},
      {"{\"v\":1,\"id\":1,\"cmd\":\"stop\",\"args\":{\"targets\":\"99\"}}", "no_such_guest"},
      {"{\"v\":1,\"id\":1,\"cmd\":\"logs\",\"args\":{\"id\":\"1\"}}", "bad_args"},
      {"{\"v\":1,\"id\":1,\"cmd\":\"logs\",\"args\":{\"id\":-1}}", "bad_args"},
      {"{\"v\":1,\"id\":1,\"cmd\":\"logs\",\"args\":{\"id\":1,\"targets\":\"1\"}}", "bad_args"},
      {"{\"v\":1,\"id\":1,\"cmd\":\"logs\",\"args\":{\"targets\":\"1-x\"}}", "bad_args"},
      {"{\"v\":1,\"id\":1,\"cmd\":\"logs\",\"args\":{\"targets\":\"1,7\",\"follow\":true}}",
       "no_such_guest"},
      {"{\"v\":1,\"id\":1,\"cmd\":\"scale\",\"args\":{\"count\":true}}", "bad_args"},
      {"{\"v\":1,\"id\":1,\"cmd\":\"balloon\",\"args\":{\"targets\":\"1\",\"bytes\":1.5}}",
       "bad_args"},
      {"{\"v\":1,\"id\":1,\"cmd\":\"wait\",\"args\":{\"until\":\"never\"}}", "bad_args"},
      {"{\"v\":1,\"id\":1,\"cmd\":\"stop\",\"args\":{\"targets\":\"1\",\"wait\":\"yes\"}}",
       "bad_args"},
      {"{\"v\":1,\"id\":1,\"cmd\":\"ps\",\"v\":1}", "bad_request"}, /* duplicate key */
  };
  int fd = ctl_connect();
  for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
    json_auto_t *r = request(fd, cases[i].line);
    g_autofree char *text = json_dumps(r, 0);
    g_test_message("%s -> %s", cases[i].line, text);
    g_assert_cmpstr(error_code(r), ==, cases[i].code);
  }
  json_auto_t *unknown = request(fd, "{\"v\":1,\"id\":5,\"cmd\":\"frobnicate\"}");
  g_assert_cmpint(json_integer_value(json_object_get(unknown, "id")), ==, 5);
  /* The same connection still works after all that. */
  json_auto_t *ok = request(fd, "{\"v\":1,\"id\":9,\"cmd\":\"hello\"}");
  g_assert_true(json_is_true(json_object_get(ok, "ok")));
  close(fd);
}

static void test_oversize(void)
{
  int fd = ctl_connect();
  g_autoptr(GString) acc = g_string_new(NULL);
  /* 200 KiB with no newline in sight, then the rest of that line, then a
   * good request: one too_large error, then the good reply. */
  g_autofree char *big = g_malloc(200 * 1024);
  memset(big, 'a', 200 * 1024);
  send_all(fd, big, 200 * 1024);
  send_all(fd, "tail\n{\"v\":1,\"id\":2,\"cmd\":\"hello\"}\n", 35);
  g_autofree char *first = read_line(fd, acc);
  json_auto_t *r1 = json_loads(first, 0, NULL);
  g_assert_cmpstr(error_code(r1), ==, "too_large");
  g_autofree char *second = read_line(fd, acc);
  g_assert_nonnull(strstr(second, "\"id\":2"));
  g_assert_nonnull(strstr(second, "\"ok\":true"));
  close(fd);
}

static void test_silent_and_partial_clients(void)
{
  int silent = ctl_connect();
  int partial = ctl_connect();
  send_all(partial, "{\"v\":1,\"id\":1,", 14);
  /* Others are served meanwhile. */
  int fd = ctl_connect();
  json_auto_t *r = request(fd, "{\"v\":1,\"id\":1,\"cmd\":\"ps\"}");
  g_assert_true(json_is_true(json_object_get(r, "ok")));
  /* The partial line completes later and is answered. */
  send_all(partial, "\"cmd\":\"hello\"}\n", 15);
  g_autoptr(GString) acc = g_string_new(NULL);
  g_autofree char *line = read_line(partial, acc);
  g_assert_nonnull(strstr(line, "\"ok\":true"));
  close(fd);
  close(partial);
  close(silent);
}

static void test_many_clients(void)
{
  int fds[50];
  for (guint i = 0; i < G_N_ELEMENTS(fds); i++) {
    fds[i] = ctl_connect();
    g_autofree char *req = g_strdup_printf("{\"v\":1,\"id\":%u,\"cmd\":\"ps\"}\n", i);
    send_all(fds[i], req, strlen(req));
  }
  for (guint i = 0; i < G_N_ELEMENTS(fds); i++) {
    g_autoptr(GString) acc = g_string_new(NULL);
    g_autofree char *line = read_line(fds[i], acc);
    g_autofree char *id = g_strdup_printf("\"id\":%u,", i);
    g_assert_nonnull(strstr(line, id));
    close(fds[i]);
  }
}

static void test_client_that_never_reads(void)
{
  int hog = ctl_connect();
  /* ~6 MB of ps replies asked for, none read: the server must drop us
   * rather than buffer without bound or block. */
  g_autoptr(GString) many = g_string_new(NULL);
  for (guint i = 0; i < 12000; i++)
    g_string_append(many, "{\"v\":1,\"cmd\":\"ps\"}\n");
  /* The server may close on us mid-write; that is the point. */
  gsize off = 0;
  while (off < many->len) {
    ssize_t n = send(hog, many->str + off, many->len - off, MSG_NOSIGNAL);
    if (n <= 0)
      break;
    off += (gsize)n;
  }
  /* Meanwhile, others are served. */
  int fd = ctl_connect();
  json_auto_t *r = request(fd, "{\"v\":1,\"id\":1,\"cmd\":\"hello\"}");
  g_assert_true(json_is_true(json_object_get(r, "ok")));
  close(fd);
  g_assert_true(nf_test_proc_wait_output(fleet, "dropped control client", REPLY_MS));
  /* Draining shows the connection ends well before 12000 replies. */
  gsize replies = 0;
  char buf[65536];
  for (;;) {
    struct pollfd p = {.fd = hog, .events = POLLIN};
    g_assert_cmpint(poll(&p, 1, REPLY_MS), ==, 1);
    ssize_t n = read(hog, buf, sizeof(buf));
    if (n <= 0)
      break;
    for (ssize_t i = 0; i < n; i++)
      replies += buf[i] == '\n';
  }
  g_assert_cmpuint(replies, <, 12000);
  close(hog);
}

static void test_scale_down_waits(void)
{
  int ev = ctl_connect();
  json_auto_t *sub = request(ev, "{\"v\":1,\"id\":1,\"cmd\":\"events\"}");
  g_assert_true(json_is_true(json_object_get(sub, "ok")));
  int fd = ctl_connect();
  json_auto_t *up =
      request(fd, "{\"v\":1,\"id\":1,\"cmd\":\"scale\",\"args\":{\"count\":2,\"wait\":true}}");
  g_assert_true(json_is_true(json_object_get(up, "ok")));
  json_auto_t *down =
      request(fd, "{\"v\":1,\"id\":2,\"cmd\":\"scale\",\"args\":{\"count\":1,\"wait\":true}}");
  g_assert_true(json_is_true(json_object_get(down, "ok")));
  /* The supervisor sends an event before it evaluates waits, so guest 2's
   * "stopped" is already in the events socket when the answer came. */
  g_autoptr(GString) seen = g_string_new(NULL);
  for (;;) {
    struct pollfd p = {.fd = ev, .events = POLLIN};
    if (poll(&p, 1, 0) <= 0)
      break;
    char buf[65536];
    ssize_t n = read(ev, buf, sizeof(buf));
    if (n <= 0)
      break;
    g_string_append_len(seen, buf, n);
  }
  g_test_message("events before the scale answer: %s", seen->str);
  g_assert_nonnull(
      strstr(seen->str, "\"id\":2,\"name\":\"vm-0002\",\"from\":\"stopping\",\"to\":\"stopped\""));
  close(fd);
  close(ev);
}

/* Requests, then the peer shuts its side (`echo ... | socat`): every
 * request is still answered, a wait when it is over (guest 2 booting),
 * and then the supervisor closes. It closed at the peer's EOF before, so
 * the wait's answer never came. */
static void test_half_closed_client(void)
{
  int fd = ctl_connect();
  const char *reqs = "{\"v\":1,\"id\":1,\"cmd\":\"hello\"}\n"
                     "{\"v\":1,\"id\":2,\"cmd\":\"scale\",\"args\":{\"count\":2,\"wait\":true}}\n";
  send_all(fd, reqs, strlen(reqs));
  g_assert_cmpint(shutdown(fd, SHUT_WR), ==, 0);
  g_autoptr(GString) acc = g_string_new(NULL);
  gint64 deadline = g_get_monotonic_time() + (gint64)BOOT_MS * 1000;
  while (read_more(fd, acc, deadline))
    ; /* to the supervisor's close */
  g_test_message("answers: %s", acc->str);
  g_auto(GStrv) lines = g_strsplit(g_strchomp(acc->str), "\n", -1);
  g_assert_cmpuint(g_strv_length(lines), ==, 2);
  json_auto_t *scaled = json_loads(lines[1], 0, NULL);
  g_assert_cmpint(json_integer_value(json_object_get(scaled, "id")), ==, 2);
  g_assert_true(json_is_true(json_object_get(scaled, "ok")));
  close(fd);
  /* And back (the fleet is one guest for the other tests). */
  int fd2 = ctl_connect();
  json_auto_t *down =
      request(fd2, "{\"v\":1,\"id\":3,\"cmd\":\"scale\",\"args\":{\"count\":1,\"wait\":true}}");
  g_assert_true(json_is_true(json_object_get(down, "ok")));
  close(fd2);
}

/* One log-mux.h frame from fd: *kind and *id set, the body returned. */
static char *read_frame(int fd, GString *acc, char **kind, guint *id)
{
  g_autofree char *head = read_line(fd, acc);
  g_assert_nonnull(head);
  g_auto(GStrv) f = g_strsplit(head, " ", -1);
  g_assert_cmpuint(g_strv_length(f), ==, 3);
  *kind = g_strdup(f[0]);
  *id = (guint)g_ascii_strtoull(f[1], NULL, 10);
  gsize len = (gsize)g_ascii_strtoull(f[2], NULL, 10);
  gint64 deadline = g_get_monotonic_time() + REPLY_MS * 1000;
  while (acc->len < len)
    g_assert_true(read_more(fd, acc, deadline));
  char *body = g_strndup(acc->str, len);
  g_string_erase(acc, 0, (gssize)len);
  return body;
}

/* Frames from fd until one of `want_kind` for guest `want_id` whose body
 * holds `needle` (any body when NULL); what came for other guests or
 * before is skipped. Returns what those frames carried. */
static char *wait_frame(int fd, GString *acc, const char *want_kind, guint want_id,
                        const char *needle)
{
  GString *out = g_string_new(NULL); /* one guest's bytes may come in pieces */
  for (;;) {
    g_autofree char *kind = NULL;
    guint id;
    g_autofree char *body = read_frame(fd, acc, &kind, &id);
    if (id != want_id || strcmp(kind, want_kind) != 0)
      continue;
    g_string_append(out, body);
    if (needle == NULL || strstr(out->str, needle))
      return g_string_free(out, FALSE);
  }
}

/* Reads fd until the peer closes it (within the deadline). */
static void wait_closed(int fd)
{
  gint64 deadline = g_get_monotonic_time() + REPLY_MS * 1000;
  g_autoptr(GString) rest = g_string_new(NULL);
  while (read_more(fd, rest, deadline))
    g_string_truncate(rest, 0);
}

/* `logs` with targets and follow: the documents of every guest named, then
 * one stream of frames for them all, and for a guest that joins (scale up,
 * announced with its document) and leaves (scale down). */
static void test_logs_many_frames(void)
{
  int fd = ctl_connect();
  g_autoptr(GString) acc = g_string_new(NULL);
  const char *req =
      "{\"v\":1,\"id\":1,\"cmd\":\"logs\",\"args\":{\"targets\":\"all\",\"follow\":true}}\n";
  send_all(fd, req, strlen(req));
  g_autofree char *line = read_line(fd, acc);
  json_auto_t *r = json_loads(line, 0, NULL);
  g_assert_true(json_is_true(json_object_get(r, "ok")));
  json_t *guests = json_object_get(json_object_get(r, "result"), "guests");
  g_assert_cmpuint(json_array_size(guests), ==, 1);
  json_t *g = json_array_get(guests, 0);
  g_assert_cmpint(json_integer_value(json_object_get(g, "id")), ==, 1);
  g_assert_cmpstr(json_string_value(json_object_get(g, "name")), ==, "vm-0001");
  g_assert_true(g_file_test(json_string_value(json_object_get(g, "path")), G_FILE_TEST_EXISTS));
  g_assert_cmpint(json_integer_value(json_object_get(g, "end")), >,
                  json_integer_value(json_object_get(g, "start")));

  int c2 = ctl_connect();
  json_auto_t *grown = request(c2, "{\"v\":1,\"id\":1,\"cmd\":\"scale\",\"args\":{\"count\":2}}");
  g_assert_true(json_is_true(json_object_get(grown, "ok")));
  g_autofree char *doc = wait_frame(fd, acc, "join", 2, NULL);
  json_auto_t *joined = json_loads(doc, 0, NULL);
  g_assert_cmpstr(json_string_value(json_object_get(joined, "name")), ==, "vm-0002");
  g_assert_cmpint(json_integer_value(json_object_get(joined, "start")), ==,
                  json_integer_value(json_object_get(joined, "end")));
  g_free(wait_frame(fd, acc, "out", 2, "nervesfleet-ready serial=NF-000002"));
  /* A console writer of the guest that leaves is closed, and its seat
   * freed for the next guest with that id. */
  int con = ctl_connect();
  json_auto_t *seat = request(con, "{\"v\":1,\"id\":1,\"cmd\":\"console\",\"args\":{\"id\":2}}");
  g_assert_true(json_is_true(json_object_get(seat, "ok")));
  json_auto_t *shrunk =
      request(c2, "{\"v\":1,\"id\":2,\"cmd\":\"scale\",\"args\":{\"count\":1,\"wait\":true}}");
  g_assert_true(json_is_true(json_object_get(shrunk, "ok")));
  g_free(wait_frame(fd, acc, "leave", 2, NULL));
  wait_closed(con);
  close(con);
  json_auto_t *again =
      request(c2, "{\"v\":1,\"id\":3,\"cmd\":\"scale\",\"args\":{\"count\":2,\"wait\":true}}");
  g_assert_true(json_is_true(json_object_get(again, "ok")));
  g_free(wait_frame(fd, acc, "join", 2, NULL));
  int con2 = ctl_connect();
  json_auto_t *seat2 = request(con2, "{\"v\":1,\"id\":1,\"cmd\":\"console\",\"args\":{\"id\":2}}");
  g_assert_true(json_is_true(json_object_get(seat2, "ok")));
  close(con2);
  json_auto_t *last =
      request(c2, "{\"v\":1,\"id\":4,\"cmd\":\"scale\",\"args\":{\"count\":1,\"wait\":true}}");
  g_assert_true(json_is_true(json_object_get(last, "ok")));
  close(c2);
  close(fd);
}

static void test_other_uid_refused(void)
{
  /* Open the path (not the socket's owner check) to uid 65534, so that
   * only SO_PEERCRED stands in the way. */
  g_autofree char *run = g_build_filename(tmp, "run", NULL);
  g_autofree char *nf = g_build_filename(run, "nervesfleet", NULL);
  g_autofree char *dir = g_path_get_dirname(sock_path);
  const char *dirs[] = {tmp, run, nf, dir};
  for (gsize i = 0; i < G_N_ELEMENTS(dirs); i++)
    g_assert_cmpint(chmod(dirs[i], 0711), ==, 0);
  g_assert_cmpint(chmod(sock_path, 0666), ==, 0);

  g_autofree char *helper = g_build_filename(g_getenv("NF_HELPERS"), "nf-ctl-raw", NULL);
  const char *argv[] = {"setpriv",
                        "--reuid=65534",
                        "--regid=65534",
                        "--clear-groups",
                        helper,
                        sock_path,
                        "{\"v\":1,\"id\":1,\"cmd\":\"ps\"}",
                        NULL};
  g_autofree char *out = NULL, *err = NULL;
  int status = 0;
  g_autoptr(GError) error = NULL;
  g_assert_true(g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, &out, &err,
                             &status, &error));
  g_assert_no_error(error);
  g_test_message("nobody got: %s / %s", out, err);
  g_assert_true(g_spawn_check_wait_status(status, NULL));
  json_auto_t *r = json_loads(out, 0, NULL);
  g_assert_cmpstr(error_code(r), ==, "permission_denied");
  g_assert_true(nf_test_proc_wait_output(fleet, "refused control client", REPLY_MS));
  g_assert_cmpint(chmod(sock_path, 0600), ==, 0);
  for (gsize i = 0; i < G_N_ELEMENTS(dirs); i++)
    g_assert_cmpint(chmod(dirs[i], 0700), ==, 0);
  /* And the socket is born private. */
  int fd = ctl_connect();
  json_auto_t *ok = request(fd, "{\"v\":1,\"id\":1,\"cmd\":\"hello\"}");
  g_assert_true(json_is_true(json_object_get(ok, "ok")));
  close(fd);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  tmp = nf_test_tmpdir_new();
  const char *args[] = {"run", "1", "--name", "ctl", "--stop-timeout", "5", NULL};
  fleet = nf_test_proc_spawn(tmp, args);
  g_assert_true(nf_test_proc_wait_output(fleet, "all 1 guests ready", BOOT_MS));
  sock_path = g_build_filename(tmp, "run", "nervesfleet", "ctl", "control.sock", NULL);
  struct stat st;
  g_assert_cmpint(stat(sock_path, &st), ==, 0);
  g_assert_cmpint(st.st_mode & 0777, ==, 0600);

  g_test_add_func("/control/good-requests", test_good_requests);
  g_test_add_func("/control/bad-requests", test_bad_requests);
  g_test_add_func("/control/oversize-line", test_oversize);
  g_test_add_func("/control/silent-and-partial-clients", test_silent_and_partial_clients);
  g_test_add_func("/control/many-clients", test_many_clients);
  g_test_add_func("/control/client-that-never-reads", test_client_that_never_reads);
  g_test_add_func("/control/other-uid-refused", test_other_uid_refused);
  g_test_add_func("/control/scale-down-waits-until-down", test_scale_down_waits);
  g_test_add_func("/control/half-closed-client", test_half_closed_client);
  g_test_add_func("/control/logs-many-frames", test_logs_many_frames);
  int rc = g_test_run();

  nf_test_proc_signal(fleet, SIGTERM);
  int status = nf_test_proc_wait_exit(fleet, 60000);
  if (status != 0)
    g_printerr("the supervisor exited %d:\n%s\n", status, nf_test_proc_output(fleet));
  g_assert_cmpint(status, ==, 0);
  g_assert_false(g_file_test(sock_path, G_FILE_TEST_EXISTS));
  nf_test_proc_free(fleet);
  nf_test_tmpdir_cleanup(tmp);
  g_free(sock_path);
  g_free(tmp);
  return rc;
}
