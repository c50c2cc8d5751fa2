/*
 * fuzz-qmp-client.c: libFuzzer target for the QMP client's message handling.
 *
 * The input is what "qemu" says on the socket: it is written to the peer end
 * of a socketpair, followed by EOF, while the client (with two commands queued
 * before the greeting) runs on a private main context until it reports
 * closed. An event named NF_FUZZ_CLOSE makes the event handler close the
 * connection, and NF_FUZZ_UNREF drops the last reference, so reentrant
 * teardown is fuzzed too. Checked: each command callback runs exactly once,
 * before closed, which runs exactly once; no crash, no leak.
 */
#include "qmp/qmp.h"

#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
static void event_cb(NfQmp *qmp, const char *name, json_t *data, gint64 ts, gpointer ud);
static void closed_cb(NfQmp *qmp, const GError *error, gpointer ud);
static void reply_cb(NfQmp *qmp, const NfQmpReply *reply, gpointer ud);

typedef struct {
  NfQmp *qmp; /* our reference, or NULL once dropped */
  int closed;
  int replies[2];
} State;

static State *current;

static void event_cb(NfQmp *qmp, const char *name, json_t *data, gint64 ts, gpointer ud)
{
  State *st = ud;
  if (g_str_equal(name, "NF_FUZZ_CLOSE"))
    nf_qmp_close(qmp);
  else if (g_str_equal(name, "NF_FUZZ_UNREF"))
    g_clear_pointer(&st->qmp, nf_qmp_unref);
}

static void closed_cb(NfQmp *qmp, const GError *error, gpointer ud)
{
  State *st = ud;
  g_assert_cmpint(st->closed, ==, 0);
  g_assert_cmpint(st->replies[0], ==, 1);
  g_assert_cmpint(st->replies[1], ==, 1);
  st->closed++;
}

static void reply_cb(NfQmp *qmp, const NfQmpReply *reply, gpointer ud)
{
  int *count = ud;
  g_assert_cmpint(current->closed, ==, 0);
  g_assert_true((reply->ret == NULL) != (reply->error == NULL));
  (*count)++;
  g_assert_cmpint(*count, ==, 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  int sv[2];
  g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), ==, 0);
  GMainContext *ctx = g_main_context_new();
  g_main_context_push_thread_default(ctx);

  State st = {0};
  current = &st;
  NfQmpCallbacks cbs = {NULL, event_cb, closed_cb};
  st.qmp = nf_qmp_new_from_fd(sv[0], ctx, &cbs, &st);
  nf_qmp_execute(st.qmp, "query-status", NULL, 60000, reply_cb, &st.replies[0]);
  nf_qmp_execute(st.qmp, "query-balloon", NULL, 60000, reply_cb, &st.replies[1]);

  size_t off = 0;
  while (off < size) {
    ssize_t n = write(sv[1], data + off, size - off);
    g_assert_cmpint(n, >, 0);
    off += n;
  }
  shutdown(sv[1], SHUT_WR);
  while (st.closed == 0)
    g_main_context_iteration(ctx, TRUE);
  g_clear_pointer(&st.qmp, nf_qmp_unref);
  while (g_main_context_iteration(ctx, FALSE))
    ;
  close(sv[1]);
  g_main_context_pop_thread_default(ctx);
  g_main_context_unref(ctx);
  current = NULL;
  return 0;
}
