/*
 * api.c: the JSON API (http-api.md): REST-shaped routes onto the command
 * layer's commands (ps, start, stop, restart, kill, reflash, scale,
 * balloon), and the two event streams (events, a guest's console). Each
 * request becomes an NfCommandPeer of this transport and goes through
 * nf_commands_dispatch exactly as a control-socket line does, so answers
 * are the same documents: a result is the body of a 200, an error is
 * {"error": {"code", "message", "guests"?}} with a status for its code.
 *
 * A command that answers later (`stop` with `wait`, `balloon`) pauses its
 * message; the answer unpauses it. A client gone meanwhile is noticed
 * through the message's `finished` signal, and the layer then drops the
 * answer.
 */
#include "http/http-private.h"

#include <string.h>

typedef struct {
  NfCommandPeer peer; /* first: the command layer's view of this request */
  int refs;
  NfHttp *http;
  SoupServerMessage *msg; /* ref */
  gboolean in_handler;    /* still inside the route handler */
  gboolean paused;
  gboolean one_guest; /* answer the first guest of a ps result */
  gboolean stream;    /* an event stream follows an ok answer */
  NfHttpStreamKind stream_kind;
  NfHttpStream *s;
} Req;

/* A peer for commands answered at once, for our own reads (metrics). */
typedef struct {
  NfCommandPeer peer;
  json_t *result;
  char *message;
} NowPeer;

static void req_ref(NfCommandPeer *peer);
static void req_unref(NfCommandPeer *peer);
static void req_ok(NfCommandPeer *peer, json_t *id, json_t *result);
static void req_ok_text(NfCommandPeer *peer, json_t *id, const char *result, gsize len);
static void req_error(NfCommandPeer *peer, json_t *id, const char *code, const char *message,
                      json_t *guests);
static void req_console(NfCommandPeer *peer, NfVm *vm, gboolean writer, gsize replay);
static void req_events(NfCommandPeer *peer);
static void req_finished_cb(SoupServerMessage *msg, gpointer data);
static void req_answered(Req *r);
static void run(NfHttp *http, SoupServerMessage *msg, const char *cmd, json_t *args,
                gboolean one_guest, gboolean stream, NfHttpStreamKind kind);
static json_t *read_body(SoupServerMessage *msg);
static gboolean one_guest_id(SoupServerMessage *msg, const char *target, guint64 *id);
static void now_nop(NfCommandPeer *peer);
static void now_ok(NfCommandPeer *peer, json_t *id, json_t *result);
static void now_error(NfCommandPeer *peer, json_t *id, const char *code, const char *message,
                      json_t *guests);

static const NfCommandTransport transport = {
    .name = "HTTP API",
    .ref = req_ref,
    .unref = req_unref,
    .ok = req_ok,
    .ok_text = req_ok_text,
    .error = req_error,
    .console = req_console,
    .events = req_events,
};

static const NfCommandTransport now_transport = {
    .name = "HTTP server",
    .ref = now_nop,
    .unref = now_nop,
    .ok = now_ok,
    .error = now_error,
};

/* --- the transport --------------------------------------------------------------- */

static void req_ref(NfCommandPeer *peer)
{
  ((Req *)peer)->refs++;
}

static void req_unref(NfCommandPeer *peer)
{
  Req *r = (Req *)peer;
  if (--r->refs > 0)
    return;
  g_signal_handlers_disconnect_by_data(r->msg, r);
  g_object_unref(r->msg);
  g_free(r);
}

static void req_finished_cb(SoupServerMessage *msg, gpointer data)
{
  ((Req *)data)->peer.gone = TRUE;
}

/* An answer is set: send it now if the handler already returned. */
static void req_answered(Req *r)
{
  if (r->paused) {
    r->paused = FALSE;
    nf_http_conn_answering(r->http, r->msg);
    soup_server_message_unpause(r->msg);
  }
}

static void req_ok(NfCommandPeer *peer, json_t *id, json_t *result)
{
  Req *r = (Req *)peer;
  if (r->stream) {
    r->s = nf_http_stream_open(r->http, r->msg, r->stream_kind);
    nf_http_stream_send(r->s, "hello", result);
    if (r->stream_kind == NF_HTTP_STREAM_EVENTS) {
      /* The whole fleet first, so a reader needs no second request. */
      json_t *ps = nf_http_command_now(r->http, "ps", NULL, NULL);
      if (ps)
        nf_http_stream_send_whole(r->s, "ps", ps);
      nf_http_stream_send(r->s, "stats", nf_http_metrics_stats(r->http));
    }
    req_answered(r);
    return;
  }
  json_t *doc = result;
  if (r->one_guest) {
    doc = json_incref(json_array_get(json_object_get(result, "guests"), 0));
    json_decref(result);
  }
  nf_http_reply_json(r->msg, 200, doc ? doc : json_object());
  req_answered(r);
}

/* A result as text (`ps`) is the body as it is; one guest of it, or a
 * stream's first event, needs the tree. */
static void req_ok_text(NfCommandPeer *peer, json_t *id, const char *result, gsize len)
{
  Req *r = (Req *)peer;
  if (r->stream || r->one_guest) {
    json_t *doc = json_loadb(result, len, 0, NULL);
    req_ok(peer, id, doc ? doc : json_object());
    return;
  }
  nf_http_reply_text(r->msg, 200, result, len);
  req_answered(r);
}

static void req_error(NfCommandPeer *peer, json_t *id, const char *code, const char *message,
                      json_t *guests)
{
  Req *r = (Req *)peer;
  json_t *err = json_pack("{s:s, s:s}", "code", code, "message", message);
  if (guests)
    json_object_set_new(err, "guests", guests);
  nf_http_reply_json(r->msg, nf_http_status_for_code(code), json_pack("{s:o}", "error", err));
  req_answered(r);
}

static void req_console(NfCommandPeer *peer, NfVm *vm, gboolean writer, gsize replay)
{
  Req *r = (Req *)peer;
  if (!r->s)
    return;
  nf_http_stream_watch_console(r->s, vm, replay);
}

static void req_events(NfCommandPeer *peer)
{
  /* Events reach every open events stream from the server's fleet listener. */
}

/* --- routes ------------------------------------------------------------------------ */

/* The request body as a JSON object ({} when empty); NULL after answering 400. */
static json_t *read_body(SoupServerMessage *msg)
{
  SoupMessageBody *body = soup_server_message_get_request_body(msg);
  g_autoptr(GBytes) bytes = soup_message_body_flatten(body);
  gsize len = 0;
  const char *data = g_bytes_get_data(bytes, &len);
  if (len == 0)
    return json_object();
  json_error_t jerr;
  json_t *doc = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr);
  if (!doc) {
    nf_http_reply_error(msg, 400, "bad_request", "body is not JSON: %s (line %d)", jerr.text,
                        jerr.line);
    return NULL;
  }
  if (!json_is_object(doc)) {
    json_decref(doc);
    nf_http_reply_error(msg, 400, "bad_request", "the body must be a JSON object of arguments");
    return NULL;
  }
  return doc;
}

/* Dispatches `cmd` for this request; `args` borrowed. */
static void run(NfHttp *http, SoupServerMessage *msg, const char *cmd, json_t *args,
                gboolean one_guest, gboolean stream, NfHttpStreamKind kind)
{
  Req *r = g_new0(Req, 1);
  r->peer.transport = &transport;
  r->refs = 1;
  r->http = http;
  r->msg = g_object_ref(msg);
  r->one_guest = one_guest;
  r->stream = stream;
  r->stream_kind = kind;
  g_signal_connect(msg, "finished", G_CALLBACK(req_finished_cb), r);
  r->in_handler = TRUE;
  nf_commands_dispatch(http->cmds, &r->peer, NULL, cmd, args);
  r->in_handler = FALSE;
  if (soup_server_message_get_status(msg) == 0) {
    /* An answer still to come: libsoup waits for it. (A stream needs no
     * pause: libsoup pauses by itself when its queued chunks run out, and
     * pausing here would cancel the resume the first chunks asked for.) */
    r->paused = TRUE;
    soup_server_message_pause(msg);
    /* A wait may take longer than the write timeout: the deadline starts
     * again with the answer (req_answered). */
    nf_http_conn_streaming(http, msg);
  }
  req_unref(&r->peer);
}

/* A GET of one guest (its document, its console) names it by its id, "3" or
 * "vm-0003": not a range, list or "all" in any case, which the targets
 * parser would take. A 400 otherwise. */
static gboolean one_guest_id(SoupServerMessage *msg, const char *target, guint64 *id)
{
  const char *bare = g_str_has_prefix(target, "vm-") ? target + 3 : target;
  if (g_ascii_string_to_unsigned(bare, 10, 1, G_MAXUINT, id, NULL))
    return TRUE;
  nf_http_reply_error(msg, 400, "bad_args", "'%s' is not a guest id (GET names one guest)", target);
  return FALSE;
}

void nf_http_api_handle(NfHttp *http, SoupServerMessage *msg, const char *path)
{
  const char *method = soup_server_message_get_method(msg);
  gboolean post = g_str_equal(method, "POST");
  g_auto(GStrv) parts = g_strsplit(path + 1, "/", 0); /* "api", ... */
  guint n = g_strv_length(parts);
  while (n > 1 && !*parts[n - 1])
    n--; /* a trailing slash */
  const char *what = n > 1 ? parts[1] : "";
  json_auto_t *args = post ? read_body(msg) : json_object();
  if (!args)
    return;
  g_autofree char *target = n > 2 ? g_uri_unescape_string(parts[2], NULL) : NULL;
  if (n > 2 && (!target || !g_utf8_validate(target, -1, NULL))) {
    /* (Not UTF-8: jansson would drop the TARGET, and `ps` then answer for
     * every guest, or the first.) */
    nf_http_reply_error(msg, 400, "bad_args", "bad escape in the guest part of %s", path);
    return;
  }
  if (g_str_equal(what, "guests") && n <= 4) {
    if (!post && n == 2) {
      run(http, msg, "ps", args, FALSE, FALSE, 0);
      return;
    }
    guint64 id;
    if (!post && n == 3) {
      if (!one_guest_id(msg, target, &id))
        return;
      json_object_set_new(args, "targets", json_string(target));
      run(http, msg, "ps", args, TRUE, FALSE, 0);
      return;
    }
    if (!post && n == 4 && g_str_equal(parts[3], "console")) {
      if (!one_guest_id(msg, target, &id))
        return;
      json_object_set_new(args, "id", json_integer((json_int_t)id));
      json_object_set_new(args, "ro", json_true());
      run(http, msg, "console", args, FALSE, TRUE, NF_HTTP_STREAM_CONSOLE);
      return;
    }
    static const char *const actions[] = {"start", "stop", "restart", "kill", "reflash", "balloon"};
    for (gsize i = 0; n == 4 && i < G_N_ELEMENTS(actions); i++) {
      if (!g_str_equal(parts[3], actions[i]))
        continue;
      if (!post) {
        nf_http_reply_error(msg, 405, "bad_request", "%s is a POST", actions[i]);
        return;
      }
      json_object_set_new(args, "targets", json_string(target));
      run(http, msg, actions[i], args, FALSE, FALSE, 0);
      return;
    }
  } else if (g_str_equal(what, "scale") && n == 2) {
    if (!post) {
      nf_http_reply_error(msg, 405, "bad_request", "scale is a POST with {\"count\": N}");
      return;
    }
    run(http, msg, "scale", args, FALSE, FALSE, 0);
    return;
  } else if (g_str_equal(what, "events") && n == 2 && !post) {
    run(http, msg, "events", args, FALSE, TRUE, NF_HTTP_STREAM_EVENTS);
    return;
  } else if (g_str_equal(what, "hello") && n == 2 && !post) {
    run(http, msg, "hello", args, FALSE, FALSE, 0);
    return;
  }
  nf_http_reply_error(msg, 404, "not_found", "no API route %s %s (see http/http-api.md)", method,
                      path);
}

/* --- our own reads ------------------------------------------------------------------ */

static void now_nop(NfCommandPeer *peer) {}

static void now_ok(NfCommandPeer *peer, json_t *id, json_t *result)
{
  ((NowPeer *)peer)->result = result;
}

static void now_error(NfCommandPeer *peer, json_t *id, const char *code, const char *message,
                      json_t *guests)
{
  ((NowPeer *)peer)->message = g_strdup_printf("%s: %s", code, message);
  if (guests)
    json_decref(guests);
}

json_t *nf_http_command_now(NfHttp *http, const char *cmd, json_t *args, GError **error)
{
  NowPeer p = {.peer = {.transport = &now_transport}};
  json_auto_t *empty = json_object();
  nf_commands_dispatch(http->cmds, &p.peer, NULL, cmd, args ? args : empty);
  /* Anything answering later would reach a peer that is gone by then. */
  p.peer.gone = TRUE;
  if (p.result)
    return p.result;
  g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED, "%s: %s", cmd,
              p.message ? p.message : "no answer at once");
  g_free(p.message);
  return NULL;
}
