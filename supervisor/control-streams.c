/*
 * control-streams.c: what a control client switched to a stream gets (see
 * control-private.h): raw console bytes of one guest (`console`, `logs ID
 * -f`; a console writer's keys go to the guest), framed output of several
 * (`logs TARGET -f`, log-mux.h) or event lines (`events`), until the
 * client goes or, for one guest's console, that guest leaves the fleet.
 */
#include <string.h>

#include "supervisor/control-private.h"

/* How often input held for a guest that has not caught up is offered again. */
#define NF_CONTROL_INPUT_RETRY_MS 20

typedef NfControlClient Client;

static void console_data_cb(NfVm *vm, const char *buf, gsize len, gpointer data)
{
  Client *c = data;
  if (buf == NULL) {
    /* The guest left the fleet: the stream ends once what it said is out,
     * and a writer's seat is free at once (a new guest may take its id). */
    c->watch_id = 0;
    c->watched = NULL;
    if (c->writer)
      nf_commands_console_release(c->ctl->cmds, c->vm_id, &c->peer);
    c->writer = FALSE;
    c->close_when_flushed = TRUE;
    nf_control_client_flush(c);
    return;
  }
  nf_control_send_bytes(c, buf, len);
}

/* Switches the client to raw console bytes of `vm` (after a replay). */
void nf_control_peer_console(NfCommandPeer *peer, NfVm *vm, gboolean writer, gsize replay)
{
  Client *c = (Client *)peer;
  c->mode = NF_CONTROL_MODE_RAW;
  c->vm_id = nf_vm_id(vm);
  c->watched = vm;
  c->writer = writer;
  g_autofree char *tail = NULL;
  c->watch_id = nf_vm_console_watch(vm, replay, &tail, console_data_cb, c);
  /* A client dropped while sending is unwatched by nf_control_stream_end. */
  if (*tail)
    nf_control_send_bytes(c, tail, strlen(tail));
}

void nf_control_peer_events(NfCommandPeer *peer)
{
  ((Client *)peer)->mode = NF_CONTROL_MODE_EVENTS;
}

/* The guests of a mux share one buffer, where each would have had its own
 * connection's: it may hold the cap for each guest it has followed at
 * once (16 at most; not lowered when guests leave: what they said may
 * still be unread), on top of what was unread when the stream began (the
 * reply listing them: ~250 bytes a guest). */
static void mux_sink_cb(const struct iovec *parts, int n, gpointer data)
{
  Client *c = data;
  guint guests = c->mux ? nf_log_mux_size(c->mux) : 1;
  c->out_max = MAX(c->out_max, c->out_base + NF_CONTROL_OUT_MAX * CLAMP(guests, 1, 16));
  nf_control_send_parts(c, parts, n);
}

/* Switches the client to several guests' output (log-mux.h). */
void nf_control_peer_logs_many(NfCommandPeer *peer, GPtrArray *vms, NfTargets *targets)
{
  Client *c = (Client *)peer;
  c->mode = NF_CONTROL_MODE_LOGS;
  c->out_base = c->out->len - c->out_pos;
  c->mux = nf_log_mux_new(c->ctl->fleet, vms, targets, mux_sink_cb, c);
}

/* --- event streams --------------------------------------------------------------- */

static void broadcast_event(NfControl *ctl, json_t *event)
{
  g_autofree char *text = json_dumps(event, JSON_COMPACT | JSON_REAL_PRECISION(10));
  json_decref(event);
  if (!text)
    return;
  gsize n = strlen(text);
  text = g_realloc(text, n + 2);
  text[n] = '\n';
  text[n + 1] = '\0';
  /* Sending may drop a slow client, which edits the list: walk a copy. */
  GList *copy = g_list_copy(ctl->clients);
  for (GList *l = copy; l; l = l->next) {
    Client *c = l->data;
    if (c->mode == NF_CONTROL_MODE_EVENTS)
      nf_control_send_bytes(c, text, n + 1);
  }
  g_list_free(copy);
}

static gboolean any_events_client(NfControl *ctl)
{
  for (GList *l = ctl->clients; l; l = l->next)
    if (((Client *)l->data)->mode == NF_CONTROL_MODE_EVENTS)
      return TRUE;
  return FALSE;
}

void nf_control_vm_changed_cb(NfFleet *fleet, NfVm *vm, NfVmState old_state, const char *reason,
                              gpointer data)
{
  NfControl *ctl = data;
  if (any_events_client(ctl))
    broadcast_event(ctl, nf_commands_state_event(fleet, vm, old_state, reason));
}

void nf_control_notice_cb(NfFleet *fleet, const char *message, gpointer data)
{
  NfControl *ctl = data;
  broadcast_event(ctl, nf_commands_notice_event(fleet, message));
}

/* Offers the held input to the guest; TRUE once none is held. Input for a
 * guest gone or without a console now goes nowhere, as typing into a
 * device that is off does. */
static gboolean feed_held(Client *c)
{
  NfVm *vm = c->writer ? nf_fleet_find_vm(c->ctl->fleet, c->vm_id) : NULL;
  gssize n = vm ? nf_vm_console_write(vm, (const char *)c->in_hold->data, c->in_hold->len) : -1;
  g_byte_array_remove_range(c->in_hold, 0, n < 0 ? c->in_hold->len : (guint)n);
  return c->in_hold->len == 0;
}

static gboolean retry_cb(gpointer data)
{
  Client *c = data;
  if (!feed_held(c))
    return G_SOURCE_CONTINUE;
  c->in_retry = 0;
  nf_control_client_resume_input(c);
  return G_SOURCE_REMOVE;
}

gboolean nf_control_stream_input(Client *c, const char *buf, gsize len)
{
  if (c->mode == NF_CONTROL_MODE_REQUESTS)
    return FALSE;
  if (c->mode == NF_CONTROL_MODE_RAW && c->writer) {
    /* The guest takes input as fast as its UART drains, qemu holds none of
     * it, and the supervisor up to NF_SERIAL_INPUT_MAX (serial.h): past
     * that the writer is not read from until the guest has caught up, so
     * a file of any size arrives whole at the guest's pace. */
    if (c->in_hold == NULL)
      c->in_hold = g_byte_array_new();
    g_byte_array_append(c->in_hold, (const guint8 *)buf, (guint)len);
    if (!feed_held(c) && c->in_retry == 0) {
      c->input_paused = TRUE;
      c->in_retry = g_timeout_add(NF_CONTROL_INPUT_RETRY_MS, retry_cb, c);
    }
  }
  return TRUE; /* read-only watchers' and followers' typing goes nowhere */
}

void nf_control_stream_end(Client *c)
{
  g_clear_handle_id(&c->in_retry, g_source_remove);
  g_clear_pointer(&c->in_hold, g_byte_array_unref);
  if (c->watch_id)
    nf_vm_console_unwatch(c->watched, c->watch_id);
  c->watch_id = 0;
  c->watched = NULL;
  if (c->writer)
    nf_commands_console_release(c->ctl->cmds, c->vm_id, &c->peer);
  g_clear_pointer(&c->mux, nf_log_mux_free);
}
