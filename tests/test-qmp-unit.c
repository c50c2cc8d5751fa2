/*
 * test-qmp-unit.c: the QMP client against a scripted peer over a socketpair.
 *
 * Guards the protocol edge cases a real qemu rarely shows but a fleet of
 * thousands eventually will: split and merged frames, out-of-order replies,
 * events between replies, broken peers (oversize lines, garbage, non-objects,
 * unknown ids, replies before the greeting), EOF with commands in flight,
 * deadlines, and callbacks that close or drop the connection from inside. The
 * invariants checked everywhere: each command callback runs exactly once, the
 * closed callback runs exactly once and last, nothing leaks (ASan/LSan).
 * Also drives the parser directly. No sleeps: every wait is on an event with
 * a deadline.
 */
#include "qmp/qmp.h"
#include "tests/lib/nf-test.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <glib-unix.h>

#define WAIT_MS 5000

#define GREETING                                                                                   \
  "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, \"major\": 7}, "                \
  "\"package\": \"Debian 1:7.2+dfsg-7+deb12u18\"}, \"capabilities\": [\"oob\"]}}\r\n"

/* --- the scripted peer ---------------------------------------------------- */

typedef struct {
  int fd;
  guint watch;
  GString *in; /* what the client sent, not yet consumed */
  gboolean eof;
} Peer;

/* --- what the client reported ---------------------------------------------- */

typedef struct {
  int calls;
  json_t *ret;
  GError *error;
  char *err_class;
} Result;

typedef struct {
  int ready;
  int closed;
  GError *closed_error;
  int pending_at_closed; /* commands still unanswered when closed ran: must be 0 */
  GPtrArray *events;     /* "NAME" strings, in order */
  gint64 last_ts;
  NfQmp *qmp;
  Result *results; /* all results of the test, to check "failed before closed" */
  int n_results;
} Rec;

typedef struct {
  Rec *rec;
  Result *res;
  int action;           /* ACT_* below */
  gboolean after_close; /* issued on an already closed connection */
} Cmd;

enum { ACT_NONE, ACT_CLOSE, ACT_UNREF, ACT_EXECUTE };

typedef struct {
  Peer peer;
  Rec rec;
  NfQmp *qmp;
} Fixture;

static gboolean peer_read_cb(gint fd, GIOCondition cond, gpointer data);
static void peer_send(Peer *peer, const char *text);
static gboolean peer_send_big(Peer *peer, gsize len);
static gboolean peer_has_line(gpointer data);
static gboolean peer_eof(gpointer data);
static gboolean qmp_responsive(gpointer data);
static json_t *peer_expect(Peer *peer, const char *command);
static gint64 peer_expect_id(Peer *peer, const char *command);
static void peer_negotiate(Fixture *f);
static void peer_reply(Peer *peer, gint64 id, const char *ret);
static void peer_close(Peer *peer);
static void reply_cb(NfQmp *qmp, const NfQmpReply *reply, gpointer data);
static void ready_cb(NfQmp *qmp, gpointer data);
static void event_cb(NfQmp *qmp, const char *name, json_t *data, gint64 ts, gpointer ud);
static void closed_cb(NfQmp *qmp, const GError *error, gpointer data);
static gboolean rec_closed(gpointer data);
static gboolean rec_ready(gpointer data);
static gboolean result_done(gpointer data);
static void result_clear(Result *r);
static void fixture_setup(Fixture *f, gconstpointer data);
static void fixture_teardown(Fixture *f, gconstpointer data);
static void exec(Fixture *f, const char *cmd, guint timeout_ms, Result *res, int action);
static void assert_broken_peer(Fixture *f, const char *bytes, const char *why);
static void count_message_cb(json_t *message, gpointer data);

static const NfQmpCallbacks callbacks = {ready_cb, event_cb, closed_cb};

static gboolean peer_read_cb(gint fd, GIOCondition cond, gpointer data)
{
  Peer *peer = data;
  char buf[4096];
  ssize_t n = read(fd, buf, sizeof(buf));
  if (n > 0) {
    g_string_append_len(peer->in, buf, n);
    return G_SOURCE_CONTINUE;
  }
  if (n < 0 && errno == EAGAIN)
    return G_SOURCE_CONTINUE;
  peer->eof = TRUE;
  peer->watch = 0;
  return G_SOURCE_REMOVE;
}

static void peer_send(Peer *peer, const char *text)
{
  gsize len = strlen(text), off = 0;
  while (off < len) {
    ssize_t n = send(peer->fd, text + off, len - off, MSG_NOSIGNAL);
    g_assert_cmpint(n, >, 0);
    off += n;
  }
}

/* Sends `len` bytes of a JSON string that never ends, letting the client read
 * as we go. Returns FALSE once the client hung up (what we expect). */
static gboolean peer_send_big(Peer *peer, gsize len)
{
  g_autofree char *chunk = g_malloc(65536);
  memset(chunk, 'x', 65536);
  chunk[0] = '"';
  gsize sent = 0;
  while (sent < len) {
    ssize_t n = send(peer->fd, chunk, MIN(65536, len - sent), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && errno == EAGAIN) {
      g_main_context_iteration(NULL, TRUE);
      continue;
    }
    if (n < 0)
      return FALSE;
    sent += n;
  }
  return TRUE;
}

static gboolean peer_eof(gpointer data)
{
  return ((Peer *)data)->eof;
}

static gboolean qmp_responsive(gpointer data)
{
  return nf_qmp_is_responsive(data);
}

static gboolean peer_has_line(gpointer data)
{
  Peer *peer = data;
  return memchr(peer->in->str, '\n', peer->in->len) != NULL;
}

/* Waits for the next line the client sent and checks it executes `command`. */
static json_t *peer_expect(Peer *peer, const char *command)
{
  g_assert_true(nf_test_wait_for(peer_has_line, peer, WAIT_MS));
  char *nl = memchr(peer->in->str, '\n', peer->in->len);
  gsize len = nl - peer->in->str;
  json_error_t jerr;
  json_t *msg = json_loadb(peer->in->str, len, 0, &jerr);
  g_string_erase(peer->in, 0, len + 1);
  g_assert_nonnull(msg);
  g_assert_cmpstr(json_string_value(json_object_get(msg, "execute")), ==, command);
  g_assert_true(json_is_integer(json_object_get(msg, "id")));
  return msg;
}

static gint64 peer_expect_id(Peer *peer, const char *command)
{
  json_auto_t *msg = peer_expect(peer, command);
  return json_integer_value(json_object_get(msg, "id"));
}

static void peer_reply(Peer *peer, gint64 id, const char *ret)
{
  g_autofree char *line =
      g_strdup_printf("{\"return\": %s, \"id\": %" G_GINT64_FORMAT "}\r\n", ret, id);
  peer_send(peer, line);
}

static void peer_negotiate(Fixture *f)
{
  peer_send(&f->peer, GREETING);
  gint64 id = peer_expect_id(&f->peer, "qmp_capabilities");
  peer_reply(&f->peer, id, "{}");
  g_assert_true(nf_test_wait_for(rec_ready, &f->rec, WAIT_MS));
  g_assert_true(nf_qmp_is_ready(f->qmp));
}

static void peer_close(Peer *peer)
{
  if (peer->watch)
    g_source_remove(peer->watch);
  peer->watch = 0;
  if (peer->fd >= 0)
    close(peer->fd);
  peer->fd = -1;
}

static void reply_cb(NfQmp *qmp, const NfQmpReply *reply, gpointer data)
{
  Cmd *cmd = data;
  Result *r = cmd->res;
  r->calls++;
  g_assert_true((reply->ret != NULL) != (reply->error != NULL));
  /* A command in flight must be answered before the connection reports closed. */
  if (!cmd->after_close)
    g_assert_cmpint(cmd->rec->closed, ==, 0);
  if (reply->ret) {
    json_decref(r->ret);
    r->ret = json_incref(reply->ret);
  } else {
    g_clear_error(&r->error);
    r->error = g_error_copy(reply->error);
    g_free(r->err_class);
    r->err_class = g_strdup(reply->err_class);
  }
  switch (cmd->action) {
  case ACT_CLOSE:
    nf_qmp_close(qmp);
    break;
  case ACT_UNREF:
    g_clear_pointer(&cmd->rec->qmp, nf_qmp_unref);
    break;
  case ACT_EXECUTE:
    /* Issue another command from inside a callback (on a closed connection
     * this must still answer exactly once, later). */
    nf_qmp_execute(qmp, "query-status", NULL, 0, NULL, NULL);
    break;
  }
  g_free(cmd);
}

static void ready_cb(NfQmp *qmp, gpointer data)
{
  Rec *rec = data;
  rec->ready++;
}

static void event_cb(NfQmp *qmp, const char *name, json_t *data, gint64 ts, gpointer ud)
{
  Rec *rec = ud;
  g_ptr_array_add(rec->events, g_strdup(name));
  rec->last_ts = ts;
}

static void closed_cb(NfQmp *qmp, const GError *error, gpointer data)
{
  Rec *rec = data;
  rec->closed++;
  rec->pending_at_closed = nf_qmp_pending_count(qmp);
  if (error)
    rec->closed_error = g_error_copy(error);
}

static gboolean rec_closed(gpointer data)
{
  return ((Rec *)data)->closed > 0;
}

static gboolean rec_ready(gpointer data)
{
  return ((Rec *)data)->ready > 0;
}

static gboolean result_done(gpointer data)
{
  return ((Result *)data)->calls > 0;
}

static void result_clear(Result *r)
{
  g_clear_pointer(&r->ret, json_decref);
  g_clear_error(&r->error);
  g_clear_pointer(&r->err_class, g_free);
}

static void exec(Fixture *f, const char *cmd, guint timeout_ms, Result *res, int action)
{
  Cmd *c = g_new0(Cmd, 1);
  c->rec = &f->rec;
  c->res = res;
  c->action = action;
  c->after_close = f->rec.closed > 0;
  nf_qmp_execute(f->qmp, cmd, NULL, timeout_ms, reply_cb, c);
}

static void fixture_setup(Fixture *f, gconstpointer data)
{
  int sv[2];
  g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv), ==, 0);
  f->peer.fd = sv[1];
  f->peer.in = g_string_new(NULL);
  f->peer.watch = g_unix_fd_add(sv[1], G_IO_IN | G_IO_HUP, peer_read_cb, &f->peer);
  f->rec.events = g_ptr_array_new_with_free_func(g_free);
  f->qmp = nf_qmp_new_from_fd(sv[0], NULL, &callbacks, &f->rec);
  f->rec.qmp = f->qmp;
}

static void fixture_teardown(Fixture *f, gconstpointer data)
{
  if (f->rec.qmp) {
    nf_qmp_close(f->rec.qmp);
    g_clear_pointer(&f->rec.qmp, nf_qmp_unref);
  }
  /* Let deferred failures (execute after close) run and drop their refs. */
  while (g_main_context_iteration(NULL, FALSE))
    ;
  g_assert_cmpint(f->rec.closed, ==, 1);
  g_assert_cmpint(f->rec.pending_at_closed, ==, 0);
  peer_close(&f->peer);
  g_string_free(f->peer.in, TRUE);
  g_ptr_array_unref(f->rec.events);
  g_clear_error(&f->rec.closed_error);
}

/* --- parser ------------------------------------------------------------- */

static void count_message_cb(json_t *message, gpointer data)
{
  GPtrArray *seen = data;
  g_ptr_array_add(seen, json_dumps(message, JSON_COMPACT | JSON_SORT_KEYS));
}

static void test_parser_framing(void)
{
  const char *stream = "{\"a\": 1}\r\n\r\n{\"b\": [1, 2, {\"c\": \"x\\ny\"}]}\n  \n{\"d\": {}}\r\n";
  const char *expect[] = {"{\"a\":1}", "{\"b\":[1,2,{\"c\":\"x\\ny\"}]}", "{\"d\":{}}"};
  gsize len = strlen(stream);
  /* Every chunk size, from byte-by-byte to all-at-once. */
  for (gsize chunk = 1; chunk <= len; chunk++) {
    g_autoptr(GPtrArray) seen = g_ptr_array_new_with_free_func(free);
    g_autoptr(NfQmpParser) p = nf_qmp_parser_new(count_message_cb, seen);
    for (gsize off = 0; off < len; off += chunk) {
      g_autoptr(GError) error = NULL;
      g_assert_true(nf_qmp_parser_feed(p, stream + off, MIN(chunk, len - off), &error));
      g_assert_no_error(error);
    }
    g_assert_cmpuint(seen->len, ==, G_N_ELEMENTS(expect));
    for (guint i = 0; i < seen->len; i++)
      g_assert_cmpstr(seen->pdata[i], ==, expect[i]);
  }
}

static void test_parser_partial_kept(void)
{
  g_autoptr(GPtrArray) seen = g_ptr_array_new_with_free_func(free);
  g_autoptr(NfQmpParser) p = nf_qmp_parser_new(count_message_cb, seen);
  g_assert_true(nf_qmp_parser_feed(p, "{\"a\":", 5, NULL));
  g_assert_true(nf_qmp_parser_feed(p, "", 0, NULL));
  g_assert_cmpuint(seen->len, ==, 0);
  g_assert_true(nf_qmp_parser_feed(p, "1}\n{\"b\":2", 9, NULL));
  g_assert_cmpuint(seen->len, ==, 1);
  g_assert_true(nf_qmp_parser_feed(p, "}\n", 2, NULL));
  g_assert_cmpuint(seen->len, ==, 2);
}

static void assert_parser_rejects(const char *const *chunks, const char *why)
{
  g_autoptr(GPtrArray) seen = g_ptr_array_new_with_free_func(free);
  g_autoptr(NfQmpParser) p = nf_qmp_parser_new(count_message_cb, seen);
  g_autoptr(GError) error = NULL;
  gboolean ok = TRUE;
  for (; *chunks && ok; chunks++)
    ok = nf_qmp_parser_feed(p, *chunks, strlen(*chunks), &error);
  g_assert_false(ok);
  g_assert_error(error, NF_QMP_ERROR, NF_QMP_ERROR_PROTOCOL);
  g_test_message("%s: %s", why, error->message);
  /* Broken for good, even on valid input. */
  g_clear_error(&error);
  g_assert_false(nf_qmp_parser_feed(p, "{}\n", 3, &error));
  g_assert_error(error, NF_QMP_ERROR, NF_QMP_ERROR_PROTOCOL);
}

static void test_parser_errors(void)
{
  const char *garbage[] = {"{\"ok\":1}\n", "this is not json\n", NULL};
  assert_parser_rejects(garbage, "garbage");
  const char *array[] = {"[1, 2]\n", NULL};
  assert_parser_rejects(array, "array");
  const char *scalar[] = {"\"x\"\n", NULL};
  assert_parser_rejects(scalar, "scalar");
  const char *two[] = {"{} {}\n", NULL};
  assert_parser_rejects(two, "two objects on a line");
  const char *truncated[] = {"{\"a\": \n", NULL};
  assert_parser_rejects(truncated, "truncated");
  const char *nul[] = {"{\"a\": \"\\u0000\"}\n", NULL};
  assert_parser_rejects(nul, "NUL in string");
}

/* qemu prints uint64 values above INT64_MAX (guest-stats says "no value yet"
 * with 18446744073709551615): they must arrive, wrapped to int64. */
static void test_parser_uint64(void)
{
  g_autoptr(GPtrArray) seen = g_ptr_array_new_with_free_func(free);
  g_autoptr(NfQmpParser) p = nf_qmp_parser_new(count_message_cb, seen);
  const char *line =
      "{\"return\": {\"stats\": {\"stat-swap-in\": 18446744073709551615, \"b\": "
      "9223372036854775808, \"c\": 9223372036854775807, \"s\": \"18446744073709551615 "
      "\\\" 18446744073709551615\", \"r\": 1.5e300, \"f\": 0.18446744073709551615, "
      "\"n\": -5}, \"last-update\": 0}, \"id\": 3}\r\n";
  g_autoptr(GError) error = NULL;
  g_assert_true(nf_qmp_parser_feed(p, line, strlen(line), &error));
  g_assert_no_error(error);
  g_assert_cmpuint(seen->len, ==, 1);
  json_auto_t *msg = json_loads(seen->pdata[0], 0, NULL);
  json_t *st = json_object_get(json_object_get(msg, "return"), "stats");
  g_assert_cmpint(json_integer_value(json_object_get(st, "stat-swap-in")), ==, -1);
  g_assert_cmpuint((guint64)json_integer_value(json_object_get(st, "b")), ==,
                   9223372036854775808ULL);
  g_assert_cmpint(json_integer_value(json_object_get(st, "c")), ==, G_MAXINT64);
  g_assert_cmpstr(json_string_value(json_object_get(st, "s")), ==,
                  "18446744073709551615 \" 18446744073709551615");
  g_assert_cmpfloat(json_real_value(json_object_get(st, "f")), >, 0.18);
  g_assert_cmpint(json_integer_value(json_object_get(st, "n")), ==, -5);

  /* Beyond uint64, or below int64: still a protocol error. */
  const char *too_big[] = {"{\"a\": 18446744073709551616}\n", NULL};
  assert_parser_rejects(too_big, "beyond uint64");
  const char *too_small[] = {"{\"a\": -9223372036854775809}\n", NULL};
  assert_parser_rejects(too_small, "below int64");
}

static void test_parser_oversize(void)
{
  g_autoptr(GPtrArray) seen = g_ptr_array_new_with_free_func(free);
  /* Exactly the limit is fine; one byte more is not, whether it comes in one
   * chunk or accumulates across many, and with or without its newline yet. */
  for (int variant = 0; variant < 4; variant++) {
    gsize content = NF_QMP_MAX_LINE + (variant & 1);
    g_autofree char *line = g_malloc(content + 1);
    memset(line, ' ', content);
    line[0] = '{';
    line[content - 1] = '}';
    line[content] = '\n';
    g_autoptr(NfQmpParser) p = nf_qmp_parser_new(count_message_cb, seen);
    g_autoptr(GError) error = NULL;
    gboolean ok = TRUE;
    gsize chunk = (variant & 2) ? 4096 : content + 1;
    for (gsize off = 0; off <= content && ok; off += chunk)
      ok = nf_qmp_parser_feed(p, line + off, MIN(chunk, content + 1 - off), &error);
    if (variant & 1) {
      g_assert_false(ok);
      g_assert_error(error, NF_QMP_ERROR, NF_QMP_ERROR_PROTOCOL);
    } else {
      g_assert_true(ok);
    }
  }
  g_assert_cmpuint(seen->len, ==, 2);

  /* Rejected before the newline shows up: never buffers more than the limit. */
  g_autoptr(NfQmpParser) p = nf_qmp_parser_new(count_message_cb, seen);
  g_autofree char *blob = g_malloc0(NF_QMP_MAX_LINE + 1);
  memset(blob, 'x', NF_QMP_MAX_LINE + 1);
  g_assert_true(nf_qmp_parser_feed(p, blob, NF_QMP_MAX_LINE, NULL));
  g_assert_false(nf_qmp_parser_feed(p, blob, 1, NULL));
}

/* --- client: normal operation ---------------------------------------------- */

static void test_negotiate(Fixture *f, gconstpointer data)
{
  g_assert_false(nf_qmp_is_ready(f->qmp));
  g_assert_null(nf_qmp_greeting(f->qmp));
  peer_negotiate(f);
  g_assert_cmpint(f->rec.ready, ==, 1);
  g_assert_cmpstr(nf_qmp_version_string(f->qmp), ==, "7.2.0");
  g_assert_nonnull(json_object_get(nf_qmp_greeting(f->qmp), "QMP"));
  g_assert_true(nf_qmp_is_responsive(f->qmp));
  g_assert_false(nf_qmp_is_closed(f->qmp));
}

static void test_out_of_order(Fixture *f, gconstpointer data)
{
  peer_negotiate(f);
  Result r[3] = {0};
  exec(f, "a", 0, &r[0], ACT_NONE);
  exec(f, "b", 0, &r[1], ACT_NONE);
  exec(f, "c", 0, &r[2], ACT_NONE);
  gint64 ia = peer_expect_id(&f->peer, "a");
  gint64 ib = peer_expect_id(&f->peer, "b");
  gint64 ic = peer_expect_id(&f->peer, "c");
  g_assert_true(ia != ib && ib != ic && ia != ic);
  g_assert_cmpuint(nf_qmp_pending_count(f->qmp), ==, 3);

  /* Replies in reverse, events in between, all in one write. */
  g_autofree char *burst = g_strdup_printf(
      "{\"return\": {\"n\": \"c\"}, \"id\": %" G_GINT64_FORMAT "}\r\n"
      "{\"timestamp\": {\"seconds\": 1700000000, \"microseconds\": 123456}, \"event\": "
      "\"STOP\"}\r\n"
      "{\"return\": {\"n\": \"b\"}, \"id\": %" G_GINT64_FORMAT "}\r\n"
      "{\"timestamp\": {\"seconds\": 1700000001, \"microseconds\": 5}, \"event\": "
      "\"BALLOON_CHANGE\", \"data\": {\"actual\": 67108864}}\r\n"
      "{\"return\": {\"n\": \"a\"}, \"id\": %" G_GINT64_FORMAT "}\r\n",
      ic, ib, ia);
  peer_send(&f->peer, burst);
  g_assert_true(nf_test_wait_for(result_done, &r[0], WAIT_MS));
  const char *names[] = {"a", "b", "c"};
  for (int i = 0; i < 3; i++) {
    g_assert_cmpint(r[i].calls, ==, 1);
    g_assert_no_error(r[i].error);
    g_assert_cmpstr(json_string_value(json_object_get(r[i].ret, "n")), ==, names[i]);
    result_clear(&r[i]);
  }
  g_assert_cmpuint(f->rec.events->len, ==, 2);
  g_assert_cmpstr(f->rec.events->pdata[0], ==, "STOP");
  g_assert_cmpstr(f->rec.events->pdata[1], ==, "BALLOON_CHANGE");
  g_assert_cmpint(f->rec.last_ts, ==, 1700000001LL * 1000000 + 5);
  g_assert_cmpuint(nf_qmp_pending_count(f->qmp), ==, 0);
}

static void test_split_frames(Fixture *f, gconstpointer data)
{
  peer_negotiate(f);
  Result r = {0};
  exec(f, "query-status", 0, &r, ACT_NONE);
  gint64 id = peer_expect_id(&f->peer, "query-status");
  g_autofree char *text = g_strdup_printf(
      "{\"event\": \"RESUME\", \"timestamp\": {\"seconds\": 1, \"microseconds\": 2}}\r\n"
      "{\"return\": {\"status\": \"running\", \"running\": true}, \"id\": %" G_GINT64_FORMAT
      "}\r\n",
      id);
  /* One byte per write, and let the client read each before the next. */
  for (const char *c = text; *c; c++) {
    char one[2] = {*c, 0};
    peer_send(&f->peer, one);
    while (g_main_context_iteration(NULL, FALSE))
      ;
  }
  g_assert_true(nf_test_wait_for(result_done, &r, WAIT_MS));
  g_assert_cmpint(r.calls, ==, 1);
  g_assert_cmpstr(json_string_value(json_object_get(r.ret, "status")), ==, "running");
  g_assert_cmpuint(f->rec.events->len, ==, 1);
  g_assert_cmpint(f->rec.last_ts, ==, 1000002);
  result_clear(&r);
}

static void test_command_error(Fixture *f, gconstpointer data)
{
  peer_negotiate(f);
  Result r = {0};
  exec(f, "nope", 0, &r, ACT_NONE);
  gint64 id = peer_expect_id(&f->peer, "nope");
  g_autofree char *line =
      g_strdup_printf("{\"id\": %" G_GINT64_FORMAT ", \"error\": {\"class\": \"CommandNotFound\", "
                      "\"desc\": \"The command nope has not been found\"}}\r\n",
                      id);
  peer_send(&f->peer, line);
  g_assert_true(nf_test_wait_for(result_done, &r, WAIT_MS));
  g_assert_error(r.error, NF_QMP_ERROR, NF_QMP_ERROR_COMMAND);
  g_assert_cmpstr(r.error->message, ==, "The command nope has not been found");
  g_assert_cmpstr(r.err_class, ==, "CommandNotFound");
  g_assert_false(nf_qmp_is_closed(f->qmp)); /* a failed command is not a broken peer */
  result_clear(&r);
}

static void test_queued_before_negotiation(Fixture *f, gconstpointer data)
{
  Result r = {0};
  exec(f, "early", 0, &r, ACT_NONE);
  peer_send(&f->peer, GREETING);
  /* The capabilities handshake must go first, and nothing else until it's answered. */
  gint64 caps = peer_expect_id(&f->peer, "qmp_capabilities");
  while (g_main_context_iteration(NULL, FALSE))
    ;
  g_assert_cmpuint(f->peer.in->len, ==, 0);
  peer_reply(&f->peer, caps, "{}");
  gint64 id = peer_expect_id(&f->peer, "early");
  g_assert_cmpint(f->rec.ready, ==, 1);
  peer_reply(&f->peer, id, "{\"x\": 1}");
  g_assert_true(nf_test_wait_for(result_done, &r, WAIT_MS));
  g_assert_no_error(r.error);
  result_clear(&r);
}

static void test_typed_helpers(Fixture *f, gconstpointer data)
{
  peer_negotiate(f);
  nf_qmp_balloon(f->qmp, 64ULL << 20, 0, NULL, NULL);
  nf_qmp_qom_set(f->qmp, NF_QMP_BALLOON_PATH, "guest-stats-polling-interval", json_integer(2), 0,
                 NULL, NULL);
  nf_qmp_qom_get(f->qmp, NF_QMP_BALLOON_PATH, "guest-stats", 0, NULL, NULL);
  nf_qmp_stop(f->qmp, 0, NULL, NULL);
  json_auto_t *b = peer_expect(&f->peer, "balloon");
  g_assert_cmpint(json_integer_value(json_object_get(json_object_get(b, "arguments"), "value")), ==,
                  64 << 20);
  json_auto_t *s = peer_expect(&f->peer, "qom-set");
  json_t *sa = json_object_get(s, "arguments");
  g_assert_cmpstr(json_string_value(json_object_get(sa, "path")), ==, NF_QMP_BALLOON_PATH);
  g_assert_cmpint(json_integer_value(json_object_get(sa, "value")), ==, 2);
  json_auto_t *g = peer_expect(&f->peer, "qom-get");
  g_assert_cmpstr(json_string_value(json_object_get(json_object_get(g, "arguments"), "property")),
                  ==, "guest-stats");
  json_auto_t *st = peer_expect(&f->peer, "stop");
  g_assert_null(json_object_get(st, "arguments"));
}

/* --- client: broken peers ---------------------------------------------------- */

/* Negotiates, leaves two commands in flight, sends `bytes`, and checks the
 * connection died of a protocol error with both commands failed once. */
static void assert_broken_peer(Fixture *f, const char *bytes, const char *why)
{
  peer_negotiate(f);
  Result r[2] = {0};
  exec(f, "one", 0, &r[0], ACT_NONE);
  exec(f, "two", 0, &r[1], ACT_NONE);
  peer_send(&f->peer, bytes);
  g_assert_true(nf_test_wait_for(rec_closed, &f->rec, WAIT_MS));
  g_assert_error(f->rec.closed_error, NF_QMP_ERROR, NF_QMP_ERROR_PROTOCOL);
  g_test_message("%s: %s", why, f->rec.closed_error->message);
  for (int i = 0; i < 2; i++) {
    g_assert_cmpint(r[i].calls, ==, 1);
    g_assert_error(r[i].error, NF_QMP_ERROR, NF_QMP_ERROR_DISCONNECTED);
    result_clear(&r[i]);
  }
  g_assert_true(nf_qmp_is_closed(f->qmp));
  g_assert_true(nf_test_wait_for(peer_eof, &f->peer, WAIT_MS)); /* the client hung up */
}

static void test_garbage(Fixture *f, gconstpointer data)
{
  assert_broken_peer(f, "{\"event\": \"STOP\"}\r\n<html>oops</html>\r\n", "garbage");
  g_assert_cmpuint(f->rec.events->len, ==, 1); /* what came before still counted */
}

static void test_non_object(Fixture *f, gconstpointer data)
{
  assert_broken_peer(f, "[\"return\", {}]\r\n", "non-object");
}

static void test_unknown_id(Fixture *f, gconstpointer data)
{
  assert_broken_peer(f, "{\"return\": {}, \"id\": 987654}\r\n", "unknown id");
}

static void test_missing_id(Fixture *f, gconstpointer data)
{
  assert_broken_peer(f, "{\"return\": {}}\r\n", "missing id");
}

static void test_neither(Fixture *f, gconstpointer data)
{
  assert_broken_peer(f, "{\"hello\": 1}\r\n", "neither reply nor event");
}

static void test_oversize(Fixture *f, gconstpointer data)
{
  peer_negotiate(f);
  Result r = {0};
  exec(f, "one", 0, &r, ACT_NONE);
  g_assert_false(peer_send_big(&f->peer, 4 * NF_QMP_MAX_LINE));
  g_assert_true(nf_test_wait_for(rec_closed, &f->rec, WAIT_MS));
  g_assert_error(f->rec.closed_error, NF_QMP_ERROR, NF_QMP_ERROR_PROTOCOL);
  g_assert_cmpint(r.calls, ==, 1);
  g_assert_error(r.error, NF_QMP_ERROR, NF_QMP_ERROR_DISCONNECTED);
  result_clear(&r);
}

static void test_reply_before_greeting(Fixture *f, gconstpointer data)
{
  Result r = {0};
  exec(f, "early", 0, &r, ACT_NONE);
  peer_send(&f->peer, "{\"return\": {}, \"id\": 1}\r\n");
  g_assert_true(nf_test_wait_for(rec_closed, &f->rec, WAIT_MS));
  g_assert_error(f->rec.closed_error, NF_QMP_ERROR, NF_QMP_ERROR_PROTOCOL);
  g_assert_cmpint(r.calls, ==, 1);
  g_assert_error(r.error, NF_QMP_ERROR, NF_QMP_ERROR_DISCONNECTED);
  g_assert_cmpint(f->rec.ready, ==, 0);
  result_clear(&r);
}

static void test_caps_refused(Fixture *f, gconstpointer data)
{
  peer_send(&f->peer, GREETING);
  gint64 id = peer_expect_id(&f->peer, "qmp_capabilities");
  g_autofree char *line = g_strdup_printf("{\"id\": %" G_GINT64_FORMAT
                                          ", \"error\": {\"class\": \"GenericError\", \"desc\": "
                                          "\"no\"}}\r\n",
                                          id);
  peer_send(&f->peer, line);
  g_assert_true(nf_test_wait_for(rec_closed, &f->rec, WAIT_MS));
  g_assert_error(f->rec.closed_error, NF_QMP_ERROR, NF_QMP_ERROR_PROTOCOL);
  g_assert_cmpint(f->rec.ready, ==, 0);
}

static void test_eof_pending(Fixture *f, gconstpointer data)
{
  peer_negotiate(f);
  Result r[3] = {0};
  for (int i = 0; i < 3; i++)
    exec(f, "pending", 0, &r[i], ACT_NONE);
  /* Half a reply, then EOF. */
  peer_send(&f->peer, "{\"return\": {}, \"i");
  peer_close(&f->peer);
  g_assert_true(nf_test_wait_for(rec_closed, &f->rec, WAIT_MS));
  g_assert_error(f->rec.closed_error, NF_QMP_ERROR, NF_QMP_ERROR_DISCONNECTED);
  for (int i = 0; i < 3; i++) {
    g_assert_cmpint(r[i].calls, ==, 1);
    g_assert_error(r[i].error, NF_QMP_ERROR, NF_QMP_ERROR_DISCONNECTED);
    result_clear(&r[i]);
  }
}

/* --- client: deadlines -------------------------------------------------------- */

static void test_timeout(Fixture *f, gconstpointer data)
{
  peer_negotiate(f);
  Result slow = {0}, later = {0}, fast = {0};
  gint64 t0 = g_get_monotonic_time();
  exec(f, "slow", 30, &slow, ACT_NONE);
  exec(f, "later", 5000, &later, ACT_NONE);
  gint64 id_slow = peer_expect_id(&f->peer, "slow");
  gint64 id_later = peer_expect_id(&f->peer, "later");
  g_assert_true(nf_test_wait_for(result_done, &slow, WAIT_MS));
  g_assert_cmpint(g_get_monotonic_time() - t0, >=, 30000);
  g_assert_error(slow.error, NF_QMP_ERROR, NF_QMP_ERROR_TIMEOUT);
  g_assert_false(nf_qmp_is_responsive(f->qmp));
  g_assert_cmpint(later.calls, ==, 0); /* only the expired one */
  g_assert_false(nf_qmp_is_closed(f->qmp));

  /* The late reply to the expired command is not a protocol error, and it
   * shows qemu is alive again. */
  peer_reply(&f->peer, id_slow, "{}");
  g_assert_true(nf_test_wait_for(qmp_responsive, f->qmp, WAIT_MS));
  g_assert_cmpint(slow.calls, ==, 1);
  exec(f, "fast", 0, &fast, ACT_NONE);
  gint64 id_fast = peer_expect_id(&f->peer, "fast");
  peer_reply(&f->peer, id_fast, "{}");
  peer_reply(&f->peer, id_later, "{}");
  g_assert_true(nf_test_wait_for(result_done, &later, WAIT_MS));
  g_assert_cmpint(slow.calls, ==, 1);
  g_assert_cmpint(fast.calls, ==, 1);
  g_assert_no_error(fast.error);
  g_assert_no_error(later.error);
  g_assert_true(nf_qmp_is_responsive(f->qmp));
  g_assert_false(nf_qmp_is_closed(f->qmp));

  /* A second late reply to the same id is a protocol error. */
  peer_reply(&f->peer, id_slow, "{}");
  g_assert_true(nf_test_wait_for(rec_closed, &f->rec, WAIT_MS));
  g_assert_error(f->rec.closed_error, NF_QMP_ERROR, NF_QMP_ERROR_PROTOCOL);
  result_clear(&slow);
  result_clear(&later);
  result_clear(&fast);
}

typedef struct {
  int seq;         /* 1-based firing order, 0 = not yet */
  gint64 fired_at; /* monotonic */
  gint64 earliest; /* issue time (before execute) + timeout */
  gint64 latest;   /* issue time (after execute) + timeout */
} Fire;

static int fire_seq;

static void order_cb(NfQmp *qmp, const NfQmpReply *reply, gpointer data)
{
  Fire *fire = data;
  g_assert_error(reply->error, NF_QMP_ERROR, NF_QMP_ERROR_TIMEOUT);
  g_assert_cmpint(fire->seq, ==, 0);
  fire->seq = ++fire_seq;
  fire->fired_at = g_get_monotonic_time();
}

static gboolean all_fired(gpointer data)
{
  return fire_seq == 3;
}

static void test_timeout_order(Fixture *f, gconstpointer data)
{
  /* Deadlines issued out of order must still fire in deadline order: the
   * single per-connection timer is re-armed for the earliest, and a loop
   * stalled past several deadlines fails them earliest first. The test
   * measures each deadline's bounds itself, since a loaded box can stall
   * between two nf_qmp_execute() calls long enough to reorder them. */
  peer_negotiate(f);
  Fire fire[3] = {0};
  const guint timeouts[3] = {90, 20, 50};
  fire_seq = 0;
  for (int i = 0; i < 3; i++) {
    gint64 before = g_get_monotonic_time();
    nf_qmp_execute(f->qmp, "t", NULL, timeouts[i], order_cb, &fire[i]);
    fire[i].earliest = before + timeouts[i] * 1000;
    fire[i].latest = g_get_monotonic_time() + timeouts[i] * 1000;
  }
  g_assert_true(nf_test_wait_for(all_fired, NULL, WAIT_MS));
  for (int i = 0; i < 3; i++) {
    g_assert_cmpint(fire[i].fired_at, >=, fire[i].earliest); /* never early */
    for (int j = 0; j < 3; j++)
      if (fire[i].seq < fire[j].seq) /* i fired first: its deadline can't be later */
        g_assert_cmpint(fire[i].earliest, <=, fire[j].latest);
  }
  g_assert_false(nf_qmp_is_responsive(f->qmp));
}

static void test_timeout_before_greeting(Fixture *f, gconstpointer data)
{
  /* A command held back for negotiation still has its deadline, and once
   * expired it is never sent. */
  Result r = {0};
  exec(f, "held", 20, &r, ACT_NONE);
  g_assert_true(nf_test_wait_for(result_done, &r, WAIT_MS));
  g_assert_error(r.error, NF_QMP_ERROR, NF_QMP_ERROR_TIMEOUT);
  peer_negotiate(f);
  while (g_main_context_iteration(NULL, FALSE))
    ;
  g_assert_cmpuint(f->peer.in->len, ==, 0);
  result_clear(&r);
}

static void test_default_timeout(Fixture *f, gconstpointer data)
{
  peer_negotiate(f);
  nf_qmp_set_default_timeout(f->qmp, 25);
  Result r = {0};
  exec(f, "x", 0, &r, ACT_NONE);
  g_assert_true(nf_test_wait_for(result_done, &r, WAIT_MS));
  g_assert_error(r.error, NF_QMP_ERROR, NF_QMP_ERROR_TIMEOUT);
  result_clear(&r);
}

/* --- client: reentrancy -------------------------------------------------------- */

static void test_close_in_timeout_callback(Fixture *f, gconstpointer data)
{
  /* Two commands expire in one pass (the loop stalls past both deadlines)
   * and the first one's callback closes the connection: the second must
   * still fail, once, before `closed` runs (reply_cb asserts the order). It
   * used to fail with TIMEOUT after `closed`. */
  peer_negotiate(f);
  Result r[2] = {0};
  exec(f, "first", 10, &r[0], ACT_CLOSE);
  exec(f, "second", 10, &r[1], ACT_NONE);
  g_usleep(30 * 1000); /* the stall under test, not a wait for an event */
  g_assert_true(nf_test_wait_for(rec_closed, &f->rec, WAIT_MS));
  g_assert_error(r[0].error, NF_QMP_ERROR, NF_QMP_ERROR_TIMEOUT);
  g_assert_error(r[1].error, NF_QMP_ERROR, NF_QMP_ERROR_DISCONNECTED);
  for (int i = 0; i < 2; i++) {
    g_assert_cmpint(r[i].calls, ==, 1);
    result_clear(&r[i]);
  }
}

static void test_close_in_callback(Fixture *f, gconstpointer data)
{
  peer_negotiate(f);
  Result r[3] = {0};
  exec(f, "first", 0, &r[0], ACT_CLOSE);
  exec(f, "second", 0, &r[1], ACT_EXECUTE);
  exec(f, "third", 0, &r[2], ACT_NONE);
  gint64 i1 = peer_expect_id(&f->peer, "first");
  gint64 i2 = peer_expect_id(&f->peer, "second");
  gint64 i3 = peer_expect_id(&f->peer, "third");
  /* All three replies in one chunk: the first callback closes, the others
   * must then fail (once) instead of being delivered. */
  g_autofree char *burst = g_strdup_printf("{\"return\": {}, \"id\": %" G_GINT64_FORMAT "}\n"
                                           "{\"return\": {}, \"id\": %" G_GINT64_FORMAT "}\n"
                                           "{\"return\": {}, \"id\": %" G_GINT64_FORMAT "}\n",
                                           i1, i2, i3);
  peer_send(&f->peer, burst);
  g_assert_true(nf_test_wait_for(rec_closed, &f->rec, WAIT_MS));
  g_assert_null(f->rec.closed_error);
  g_assert_no_error(r[0].error);
  for (int i = 1; i < 3; i++)
    g_assert_error(r[i].error, NF_QMP_ERROR, NF_QMP_ERROR_DISCONNECTED);
  for (int i = 0; i < 3; i++) {
    g_assert_cmpint(r[i].calls, ==, 1);
    result_clear(&r[i]);
  }
}

static void test_unref_in_callback(Fixture *f, gconstpointer data)
{
  peer_negotiate(f);
  Result r[2] = {0};
  exec(f, "first", 0, &r[0], ACT_UNREF);
  exec(f, "second", 0, &r[1], ACT_NONE);
  gint64 i1 = peer_expect_id(&f->peer, "first");
  peer_reply(&f->peer, i1, "{}");
  /* Dropping the last reference closes: the other command fails once. */
  g_assert_true(nf_test_wait_for(rec_closed, &f->rec, WAIT_MS));
  g_assert_null(f->rec.qmp);
  g_assert_null(f->rec.closed_error);
  g_assert_cmpint(r[0].calls, ==, 1);
  g_assert_cmpint(r[1].calls, ==, 1);
  g_assert_error(r[1].error, NF_QMP_ERROR, NF_QMP_ERROR_DISCONNECTED);
  result_clear(&r[0]);
  result_clear(&r[1]);
}

static void unref_on_close_cb(NfQmp *qmp, const GError *error, gpointer data)
{
  Fixture *f = data;
  closed_cb(qmp, error, &f->rec);
  g_clear_pointer(&f->rec.qmp, nf_qmp_unref);
}

static void test_unref_in_closed(Fixture *f, gconstpointer data)
{
  /* A connection of its own, whose closed callback drops the last ref. */
  nf_qmp_close(f->qmp);
  g_clear_pointer(&f->rec.qmp, nf_qmp_unref);
  f->rec.closed = 0;
  peer_close(&f->peer);
  int sv[2];
  g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), ==, 0);
  f->peer.fd = sv[1];
  f->peer.watch = g_unix_fd_add(sv[1], G_IO_IN | G_IO_HUP, peer_read_cb, &f->peer);
  NfQmpCallbacks cbs = {ready_cb, event_cb, unref_on_close_cb};
  f->qmp = f->rec.qmp = nf_qmp_new_from_fd(sv[0], NULL, &cbs, f);
  Result r = {0};
  exec(f, "doomed", 0, &r, ACT_NONE);
  peer_send(&f->peer, "not json\n");
  g_assert_true(nf_test_wait_for(rec_closed, &f->rec, WAIT_MS));
  g_assert_null(f->rec.qmp);
  g_assert_cmpint(r.calls, ==, 1);
  result_clear(&r);
}

static void test_execute_after_close(Fixture *f, gconstpointer data)
{
  peer_negotiate(f);
  nf_qmp_close(f->qmp);
  nf_qmp_close(f->qmp); /* idempotent */
  g_assert_cmpint(f->rec.closed, ==, 1);
  g_assert_null(f->rec.closed_error);
  g_assert_true(nf_qmp_is_closed(f->qmp));
  Result r = {0};
  exec(f, "late", 0, &r, ACT_NONE);
  g_assert_cmpint(r.calls, ==, 0); /* never from inside nf_qmp_execute() */
  /* The callback may be the only thing keeping it alive. */
  g_clear_pointer(&f->rec.qmp, nf_qmp_unref);
  g_assert_true(nf_test_wait_for(result_done, &r, WAIT_MS));
  g_assert_error(r.error, NF_QMP_ERROR, NF_QMP_ERROR_DISCONNECTED);
  result_clear(&r);
}

/* --- connecting ----------------------------------------------------------------- */

static void test_connect_unix(void)
{
  g_autofree char *dir = nf_test_tmpdir_new();
  g_autofree char *path = g_build_filename(dir, "qmp.sock", NULL);
  g_autoptr(GError) error = NULL;

  g_assert_null(nf_qmp_connect_unix(path, NULL, &callbacks, NULL, &error));
  g_assert_error(error, NF_QMP_ERROR, NF_QMP_ERROR_CONNECT);
  g_clear_error(&error);

  g_autofree char *longpath = g_strnfill(200, 'a');
  g_assert_null(nf_qmp_connect_unix(longpath, NULL, &callbacks, NULL, &error));
  g_assert_error(error, NF_QMP_ERROR, NF_QMP_ERROR_CONNECT);
  g_clear_error(&error);

  int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  g_strlcpy(addr.sun_path, path, sizeof(addr.sun_path));
  g_assert_cmpint(bind(lfd, (struct sockaddr *)&addr, sizeof(addr)), ==, 0);
  g_assert_cmpint(listen(lfd, 4), ==, 0);

  Fixture f = {0};
  f.rec.events = g_ptr_array_new_with_free_func(g_free);
  f.qmp = nf_qmp_connect_unix(path, NULL, &callbacks, &f.rec, &error);
  g_assert_no_error(error);
  g_assert_nonnull(f.qmp);
  f.rec.qmp = f.qmp;
  f.peer.fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
  g_assert_cmpint(f.peer.fd, >=, 0);
  close(lfd);
  f.peer.in = g_string_new(NULL);
  f.peer.watch = g_unix_fd_add(f.peer.fd, G_IO_IN | G_IO_HUP, peer_read_cb, &f.peer);
  peer_negotiate(&f);
  fixture_teardown(&f, NULL);
  nf_test_tmpdir_cleanup(dir);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/qmp/parser/framing", test_parser_framing);
  g_test_add_func("/qmp/parser/partial", test_parser_partial_kept);
  g_test_add_func("/qmp/parser/errors", test_parser_errors);
  g_test_add_func("/qmp/parser/oversize", test_parser_oversize);
  g_test_add_func("/qmp/parser/uint64", test_parser_uint64);
#define T(name, fn)                                                                                \
  g_test_add("/qmp/client/" name, Fixture, NULL, fixture_setup, fn, fixture_teardown)
  T("negotiate", test_negotiate);
  T("out-of-order", test_out_of_order);
  T("split-frames", test_split_frames);
  T("command-error", test_command_error);
  T("queued-before-negotiation", test_queued_before_negotiation);
  T("typed-helpers", test_typed_helpers);
  T("garbage", test_garbage);
  T("non-object", test_non_object);
  T("unknown-id", test_unknown_id);
  T("missing-id", test_missing_id);
  T("neither", test_neither);
  T("oversize", test_oversize);
  T("reply-before-greeting", test_reply_before_greeting);
  T("caps-refused", test_caps_refused);
  T("eof-pending", test_eof_pending);
  T("timeout", test_timeout);
  T("timeout-order", test_timeout_order);
  T("timeout-before-greeting", test_timeout_before_greeting);
  T("default-timeout", test_default_timeout);
  T("close-in-timeout-callback", test_close_in_timeout_callback);
  T("close-in-callback", test_close_in_callback);
  T("unref-in-callback", test_unref_in_callback);
  T("unref-in-closed", test_unref_in_closed);
  T("execute-after-close", test_execute_after_close);
#undef T
  g_test_add_func("/qmp/client/connect-unix", test_connect_unix);
  return g_test_run();
}
