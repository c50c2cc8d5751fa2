/*
 * command-balloon.c: the `balloon` command: sets the balloon target of a
 * set of guests over QMP, then waits (briefly, from memory) for each guest
 * to report the size it reached, and answers with that size per guest
 * (`reached` true or false) or the guest's error.
 *
 * The QMP answers may come after the client or the whole command layer is
 * gone: an operation left by nf_commands_free() is "orphaned" (no layer)
 * and frees itself when its last QMP answer arrives.
 */
#include "supervisor/command-private.h"

#define BALLOON_DEFAULT_TIMEOUT_MS 10000
#define BALLOON_CHECK_MS 100
#define BALLOON_MIN_BYTES (16 * 1024 * 1024)

typedef struct {
  NfCommands *cmds;      /* NULL once the layer is gone (orphaned) */
  NfCommandReply *reply; /* ref */
  guint64 bytes;
  json_t *guests;    /* one entry per target, filled in as answers come */
  guint outstanding; /* QMP replies still to come */
  gint64 deadline;   /* monotonic µs: stop waiting for the size to settle */
  guint timer;
} BalloonOp;

typedef struct {
  BalloonOp *op;
  guint index;
} BalloonSlot;

static void balloon_reply_cb(NfQmp *qmp, const NfQmpReply *reply, gpointer data);
static gboolean balloon_check_cb(gpointer data);
static void balloon_finish(BalloonOp *op);
static void balloon_free(BalloonOp *op);

void nf_command_balloon(NfCommandReply *r, json_t *args)
{
  g_autoptr(GPtrArray) vms = nf_command_arg_targets(r, args, NULL);
  guint64 bytes, timeout_ms;
  if (!vms || !nf_command_arg_uint(r, args, "bytes", TRUE, 0, G_MAXINT64, &bytes) ||
      !nf_command_arg_uint(r, args, "timeout_ms", FALSE, BALLOON_DEFAULT_TIMEOUT_MS, G_MAXUINT,
                           &timeout_ms))
    return;
  if (bytes < BALLOON_MIN_BYTES) {
    nf_command_reply_error(r, "bad_args", NULL, "args.bytes: at least 16M, or the guest starves");
    return;
  }
  NfCommands *cmds = nf_command_reply_commands(r);
  BalloonOp *op = g_new0(BalloonOp, 1);
  op->cmds = cmds;
  op->reply = nf_command_reply_ref(r);
  op->bytes = bytes;
  op->guests = json_array();
  op->deadline = g_get_monotonic_time() + (gint64)timeout_ms * 1000;
  op->outstanding = 1; /* held until every request is sent */
  cmds->balloons = g_list_prepend(cmds->balloons, op);
  for (guint i = 0; i < vms->len; i++) {
    NfVm *vm = vms->pdata[i];
    json_array_append_new(op->guests, json_pack("{s:I, s:s}", "id", (json_int_t)nf_vm_id(vm),
                                                "name", nf_vm_name(vm)));
    BalloonSlot *slot = g_new0(BalloonSlot, 1);
    slot->op = op;
    slot->index = i;
    op->outstanding++;
    if (!nf_vm_balloon(vm, bytes, balloon_reply_cb, slot)) {
      op->outstanding--;
      g_free(slot);
      json_object_set_new(json_array_get(op->guests, i), "error",
                          json_string("not running (no QMP connection)"));
    }
  }
  NfQmpReply none = {0};
  BalloonSlot *self = g_new0(BalloonSlot, 1);
  self->op = op;
  self->index = G_MAXUINT;
  balloon_reply_cb(NULL, &none, self);
}

/* Every guest asked answered: now wait (briefly, from memory) for the guests
 * to report the size they reached, then answer with it. */
static gboolean balloon_check_cb(gpointer data)
{
  BalloonOp *op = data;
  gboolean settled = TRUE;
  gsize i;
  json_t *g;
  json_array_foreach(op->guests, i, g)
  {
    if (json_object_get(g, "error"))
      continue;
    NfVm *vm =
        nf_fleet_find_vm(op->cmds->fleet, (guint)json_integer_value(json_object_get(g, "id")));
    guint64 actual = vm ? nf_vm_balloon_actual(vm) : 0;
    if (vm && actual != op->bytes)
      settled = FALSE;
  }
  if (!settled && g_get_monotonic_time() < op->deadline && !nf_command_reply_gone(op->reply))
    return G_SOURCE_CONTINUE;
  op->timer = 0;
  balloon_finish(op);
  return G_SOURCE_REMOVE;
}

static void balloon_free(BalloonOp *op)
{
  if (op->cmds)
    op->cmds->balloons = g_list_remove(op->cmds->balloons, op);
  if (op->timer)
    g_source_remove(op->timer);
  nf_command_reply_unref(op->reply);
  json_decref(op->guests);
  g_free(op);
}

void nf_command_balloons_orphan(NfCommands *cmds)
{
  while (cmds->balloons) {
    BalloonOp *op = cmds->balloons->data;
    cmds->balloons = g_list_delete_link(cmds->balloons, cmds->balloons);
    op->cmds = NULL;
    if (op->timer) {
      g_source_remove(op->timer);
      op->timer = 0;
    }
    if (op->outstanding == 0)
      balloon_free(op);
  }
}

static void balloon_finish(BalloonOp *op)
{
  gsize i;
  json_t *g;
  json_array_foreach(op->guests, i, g)
  {
    NfVm *vm =
        nf_fleet_find_vm(op->cmds->fleet, (guint)json_integer_value(json_object_get(g, "id")));
    guint64 actual = vm ? nf_vm_balloon_actual(vm) : 0;
    json_object_set_new(g, "actual_bytes", actual ? json_integer((json_int_t)actual) : json_null());
    json_object_set_new(g, "reached", json_boolean(actual == op->bytes));
  }
  nf_command_reply_ok(op->reply, json_pack("{s:I, s:O}", "target_bytes", (json_int_t)op->bytes,
                                           "guests", op->guests));
  balloon_free(op);
}

static void balloon_reply_cb(NfQmp *qmp, const NfQmpReply *reply, gpointer data)
{
  BalloonSlot *slot = data;
  BalloonOp *op = slot->op;
  if (!op->cmds) {
    g_free(slot);
    if (--op->outstanding == 0)
      balloon_free(op);
    return;
  }
  if (reply->error)
    json_object_set_new(json_array_get(op->guests, slot->index), "error",
                        json_string(reply->error->message));
  g_free(slot);
  if (--op->outstanding > 0)
    return;
  if (balloon_check_cb(op) == G_SOURCE_CONTINUE)
    op->timer = g_timeout_add(BALLOON_CHECK_MS, balloon_check_cb, op);
}
