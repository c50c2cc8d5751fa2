/*
 * command-streams.c: the commands after which a client keeps listening:
 * `logs` (where the console log is; with `follow`, the live console after
 * it), `console` (recent output, then the live console both ways; one
 * writer per guest) and `events` (lifecycle events), and the event
 * documents every transport sends. The bytes themselves flow through the
 * transport's stream callbacks: how a stream is carried (raw bytes on the
 * control socket, something else over HTTP) is the transport's business.
 */
#include "supervisor/command-private.h"

#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#include <glib/gstdio.h>

#include "supervisor/control.h"

#define CONSOLE_REPLAY_BYTES 4096

static gboolean can_stream(NfCommandReply *r, gboolean events);

/* Answers "unsupported" when the peer's transport cannot carry the stream. */
static gboolean can_stream(NfCommandReply *r, gboolean events)
{
  const NfCommandTransport *t = nf_command_reply_peer(r)->transport;
  if (events ? t->events != NULL : t->console != NULL)
    return TRUE;
  nf_command_reply_error(r, "unsupported", NULL, "the %s carries no %s stream", t->name,
                         events ? "event" : "console");
  return FALSE;
}

json_t *nf_commands_log_document(NfVm *vm, gint64 start, gint64 end, const char *rotated_path)
{
  json_t *doc = json_pack("{s:I, s:s, s:s, s:I, s:I}", "id", (json_int_t)nf_vm_id(vm), "name",
                          nf_vm_name(vm), "path", nf_vm_console_log_path(vm), "start",
                          (json_int_t)start, "end", (json_int_t)end);
  if (rotated_path)
    json_object_set_new(doc, "rotated_path", json_string(rotated_path));
  return doc;
}

/* Where `vm`'s log stands: with `follow`, the file up to where a watcher
 * added now starts (the log may already hold more, which the stream is
 * about to bring); `since_start`: only this run's part. */
static json_t *log_document(NfCommands *cmds, NfVm *vm, gboolean follow, gboolean since_start)
{
  const char *path = nf_vm_console_log_path(vm);
  GStatBuf st;
  gint64 end = follow                   ? nf_vm_console_watch_start(vm)
               : g_stat(path, &st) == 0 ? (gint64)st.st_size
                                        : 0;
  gint64 start = 0;
  g_autofree char *rotated = g_strconcat(path, ".1", NULL);
  gboolean has_rotated = g_file_test(rotated, G_FILE_TEST_EXISTS);
  if (since_start) {
    start = MIN(nf_vm_console_run_start(vm), end);
    has_rotated = FALSE;
  }
  return nf_commands_log_document(vm, start, end, has_rotated ? rotated : NULL);
}

/* `logs` with `targets`: every named guest's document, and with `follow`
 * one stream of all their output (and of guests that join later). */
static void logs_many(NfCommandReply *r, json_t *args, gboolean follow, gboolean since_start)
{
  NfCommandPeer *peer = nf_command_reply_peer(r);
  if (follow && peer->transport->logs_many == NULL) {
    nf_command_reply_error(r, "unsupported", NULL,
                           "the %s carries no stream of several guests' logs; follow one guest",
                           peer->transport->name);
    return;
  }
  g_autoptr(NfTargets) targets = NULL;
  g_autoptr(GPtrArray) vms = nf_command_arg_targets_kept(r, args, NULL, &targets);
  if (!vms)
    return;
  NfCommands *cmds = nf_command_reply_commands(r);
  json_t *guests = json_array();
  for (guint i = 0; i < vms->len; i++)
    json_array_append_new(guests, log_document(cmds, vms->pdata[i], follow, since_start));
  nf_command_reply_ok(r, json_pack("{s:o, s:b}", "guests", guests, "follow", follow));
  if (follow && !peer->gone)
    peer->transport->logs_many(peer, vms, g_steal_pointer(&targets));
  else if (follow)
    for (guint i = 0; i < vms->len; i++)
      nf_vm_console_unanchor(vms->pdata[i]);
}

void nf_command_logs(NfCommandReply *r, json_t *args)
{
  gboolean follow;
  const char *since;
  if (!nf_command_arg_bool(r, args, "follow", FALSE, &follow) ||
      !nf_command_arg_string(r, args, "since", "", &since))
    return;
  if (*since && strcmp(since, "start") != 0) {
    nf_command_reply_error(r, "bad_args", NULL, "args.since must be \"start\" or absent");
    return;
  }
  if (json_object_get(args, "targets")) {
    if (json_object_get(args, "id")) {
      nf_command_reply_error(r, "bad_args", NULL, "give args.id or args.targets, not both");
      return;
    }
    logs_many(r, args, follow, *since != '\0');
    return;
  }
  NfVm *vm = nf_command_arg_vm(r, args);
  if (!vm || (follow && !can_stream(r, FALSE)))
    return;
  json_t *result = log_document(nf_command_reply_commands(r), vm, follow, *since != '\0');
  json_object_set_new(result, "follow", json_boolean(follow));
  nf_command_reply_ok(r, result);
  NfCommandPeer *peer = nf_command_reply_peer(r);
  if (follow && !peer->gone)
    peer->transport->console(peer, vm, FALSE, 0);
  else if (follow)
    nf_vm_console_unanchor(vm);
}

void nf_command_console(NfCommandReply *r, json_t *args)
{
  NfVm *vm = nf_command_arg_vm(r, args);
  gboolean ro;
  if (!vm || !nf_command_arg_bool(r, args, "ro", FALSE, &ro) || !can_stream(r, FALSE))
    return;
  NfCommands *cmds = nf_command_reply_commands(r);
  NfCommandPeer *peer = nf_command_reply_peer(r);
  gpointer key = GUINT_TO_POINTER(nf_vm_id(vm));
  NfCommandPeer *holder = g_hash_table_lookup(cmds->writers, key);
  if (!ro && holder) {
    nf_command_reply_error(r, "busy", NULL,
                           "%s's console already has a writer (pid %d); watch with --ro",
                           nf_vm_name(vm), (int)holder->pid);
    return;
  }
  nf_command_reply_ok(r, json_pack("{s:I, s:s, s:b, s:s}", "id", (json_int_t)nf_vm_id(vm), "name",
                                   nf_vm_name(vm), "writer", !ro, "state",
                                   nf_vm_state_name(nf_vm_state(vm))));
  if (peer->gone)
    return;
  /* The seat is taken before the stream starts: the transport releases it
   * (nf_commands_console_release) when the client goes. */
  if (!ro)
    g_hash_table_insert(cmds->writers, key, peer);
  peer->transport->console(peer, vm, !ro, CONSOLE_REPLAY_BYTES);
}

void nf_command_events(NfCommandReply *r, json_t *args)
{
  if (!can_stream(r, TRUE))
    return;
  nf_command_reply_ok(r, json_pack("{s:s}", "fleet", nf_fleet_name(nf_command_reply_fleet(r))));
  NfCommandPeer *peer = nf_command_reply_peer(r);
  if (!peer->gone)
    peer->transport->events(peer);
}

json_t *nf_commands_state_event(NfFleet *fleet, NfVm *vm, NfVmState old_state, const char *reason)
{
  json_t *ev = json_pack(
      "{s:i, s:s, s:f, s:s, s:s, s:I, s:s, s:s, s:s, s:s?}", "v", NF_CONTROL_PROTOCOL, "event",
      "state", "time", (double)g_get_real_time() / 1e6, "fleet", nf_fleet_name(fleet), "host",
      g_get_host_name(), "id", (json_int_t)nf_vm_id(vm), "name", nf_vm_name(vm), "from",
      nf_vm_state_name(old_state), "to", nf_vm_state_name(nf_vm_state(vm)), "reason", reason);
  if (nf_vm_pid(vm) > 0)
    json_object_set_new(ev, "pid", json_integer(nf_vm_pid(vm)));
  if (nf_vm_exit_kind(vm) != NF_EXIT_NONE && !nf_vm_is_running(vm))
    json_object_set_new(ev, "exit", json_string(nf_exit_kind_name(nf_vm_exit_kind(vm))));
  return ev;
}

json_t *nf_commands_notice_event(NfFleet *fleet, const char *message)
{
  return json_pack("{s:i, s:s, s:f, s:s, s:s, s:s}", "v", NF_CONTROL_PROTOCOL, "event", "notice",
                   "time", (double)g_get_real_time() / 1e6, "fleet", nf_fleet_name(fleet), "host",
                   g_get_host_name(), "message", message);
}

char *nf_commands_console_tail(NfVm *vm, gsize max)
{
  g_autofree char *tail = nf_vm_console_tail(vm, max);
  if (!*tail) {
    int fd = open(nf_vm_console_log_path(vm), O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
      off_t size = lseek(fd, 0, SEEK_END);
      off_t from = size > (off_t)max ? size - (off_t)max : 0;
      g_free(tail);
      tail = g_malloc0(max + 1);
      ssize_t n = pread(fd, tail, max, from);
      tail[n > 0 ? n : 0] = '\0';
      close(fd);
    }
  }
  return g_utf8_make_valid(tail, -1);
}
