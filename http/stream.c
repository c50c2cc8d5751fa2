/*
 * stream.c: server-sent event streams (text/event-stream over a chunked
 * response): /api/events (lifecycle events, fleet notices and `stats`
 * every NF_HTTP_STATS_INTERVAL_MS) and /api/guests/ID/console (a guest's
 * console output). Each event is `event: NAME` and one `data:` line of
 * compact JSON, so a reader needs no framing of its own.
 *
 * A stream never blocks the loop on its reader: bytes queued but not yet
 * written are counted (libsoup reports what it wrote), and a reader that
 * lets NF_HTTP_STREAM_BACKLOG pile up is disconnected. Console streams
 * get a `: keep-alive` comment with each stats tick, so a reader that went
 * away shows even while its guest is quiet.
 */
#include "http/http-private.h"

#include <string.h>

struct NfHttpStream {
  NfHttp *http;
  SoupServerMessage *msg; /* ref */
  NfHttpStreamKind kind;
  NfVm *vm;       /* CONSOLE: whose output, while watched (vm.h: until it goes) */
  guint watch_id; /* CONSOLE: the watch */
  guint64 queued, written;
  guint64 whole_end; /* bytes up to here were asked for whole (nf_http_stream_send_whole) */
  gboolean dropped;
};

static void wrote_cb(SoupServerMessage *msg, guint chunk_size, gpointer data);
static void stream_close(NfHttpStream *s);
static void stream_write(NfHttpStream *s, const char *text, gsize len, gboolean whole);
static void send_event(NfHttpStream *s, const char *name, json_t *doc, gboolean whole);
static void console_cb(NfVm *vm, const char *buf, gsize len, gpointer data);
static gboolean stats_cb(gpointer data);

NfHttpStream *nf_http_stream_open(NfHttp *http, SoupServerMessage *msg, NfHttpStreamKind kind)
{
  NfHttpStream *s = g_new0(NfHttpStream, 1);
  s->http = http;
  s->msg = g_object_ref(msg);
  s->kind = kind;
  soup_server_message_set_status(msg, 200, NULL);
  SoupMessageHeaders *h = soup_server_message_get_response_headers(msg);
  soup_message_headers_set_encoding(h, SOUP_ENCODING_CHUNKED);
  soup_message_headers_set_content_type(h, "text/event-stream", NULL);
  soup_message_headers_replace(h, "Cache-Control", "no-store");
  /* Written chunks are freed as they go out; `written` counts them. */
  soup_message_body_set_accumulate(soup_server_message_get_response_body(msg), FALSE);
  g_signal_connect(msg, "wrote-body-data", G_CALLBACK(wrote_cb), s);
  http->streams = g_list_prepend(http->streams, s);
  nf_http_conn_streaming(http, msg);
  if (!http->stats_src)
    http->stats_src = g_timeout_add(NF_HTTP_STATS_INTERVAL_MS, stats_cb, http);
  return s;
}

static void wrote_cb(SoupServerMessage *msg, guint chunk_size, gpointer data)
{
  NfHttpStream *s = data;
  s->written += chunk_size;
}

static void stream_write(NfHttpStream *s, const char *text, gsize len, gboolean whole)
{
  if (s->dropped)
    return;
  /* What is left of a document asked for whole is not the reader falling
   * behind: a 10,000-guest fleet's first `ps` alone is ~4 MB. */
  guint64 asked = s->whole_end > s->written ? s->whole_end - s->written : 0;
  if (!whole && s->queued - s->written - asked > NF_HTTP_STREAM_BACKLOG) {
    /* The reader stopped reading: let it go rather than buffer for it. */
    s->dropped = TRUE;
    nf_http_drop_connection(s->http, s->msg);
    return;
  }
  soup_message_body_append(soup_server_message_get_response_body(s->msg), SOUP_MEMORY_COPY, text,
                           len);
  s->queued += len;
  if (whole)
    s->whole_end = s->queued;
  soup_server_message_unpause(s->msg);
}

static void send_event(NfHttpStream *s, const char *name, json_t *doc, gboolean whole)
{
  char *data = json_dumps(doc, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(10));
  json_decref(doc);
  if (!data)
    return;
  g_autofree char *text = g_strdup_printf("event: %s\ndata: %s\n\n", name, data);
  free(data);
  stream_write(s, text, strlen(text), whole);
}

void nf_http_stream_send(NfHttpStream *s, const char *name, json_t *doc)
{
  send_event(s, name, doc, FALSE);
}

void nf_http_stream_send_whole(NfHttpStream *s, const char *name, json_t *doc)
{
  send_event(s, name, doc, TRUE);
}

static void console_cb(NfVm *vm, const char *buf, gsize len, gpointer data)
{
  NfHttpStream *s = data;
  if (buf == NULL) {
    /* The guest left the fleet: the response ends (the watch is gone). */
    s->watch_id = 0;
    s->vm = NULL;
    s->dropped = TRUE; /* nothing more is written */
    soup_message_body_complete(soup_server_message_get_response_body(s->msg));
    soup_server_message_unpause(s->msg);
    return;
  }
  g_autofree char *text = g_utf8_make_valid(buf, (gssize)len);
  nf_http_stream_send(data, "console", json_string(text));
}

void nf_http_stream_watch_console(NfHttpStream *s, NfVm *vm, gsize replay)
{
  s->vm = vm;
  g_autofree char *tail = NULL;
  s->watch_id = nf_vm_console_watch(vm, replay, &tail, console_cb, s);
  if (replay) {
    g_autofree char *valid = g_utf8_make_valid(tail, -1);
    nf_http_stream_send(s, "console", json_string(valid));
  }
}

void nf_http_streams_broadcast(NfHttp *http, NfHttpStreamKind kind, const char *name, json_t *doc)
{
  char *data = json_dumps(doc, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(10));
  json_decref(doc);
  if (!data)
    return;
  g_autofree char *text = g_strdup_printf("event: %s\ndata: %s\n\n", name, data);
  free(data);
  gsize len = strlen(text);
  for (GList *l = http->streams; l; l = l->next) {
    NfHttpStream *s = l->data;
    if (s->kind == kind)
      stream_write(s, text, len, FALSE);
  }
}

gboolean nf_http_streams_any(NfHttp *http, NfHttpStreamKind kind)
{
  for (GList *l = http->streams; l; l = l->next)
    if (((NfHttpStream *)l->data)->kind == kind)
      return TRUE;
  return FALSE;
}

/* Memory and counts for the page's live chart, and a comment on console
 * streams, while any stream is open: a reader that went away shows when
 * writing to it fails, even on a quiet console. */
static gboolean stats_cb(gpointer data)
{
  NfHttp *http = data;
  if (!http->streams) {
    http->stats_src = 0;
    return G_SOURCE_REMOVE;
  }
  if (nf_http_streams_any(http, NF_HTTP_STREAM_EVENTS))
    nf_http_streams_broadcast(http, NF_HTTP_STREAM_EVENTS, "stats", nf_http_metrics_stats(http));
  static const char keepalive[] = ": keep-alive\n\n";
  for (GList *l = http->streams; l; l = l->next) {
    NfHttpStream *s = l->data;
    if (s->kind == NF_HTTP_STREAM_CONSOLE)
      stream_write(s, keepalive, sizeof(keepalive) - 1, FALSE);
  }
  return G_SOURCE_CONTINUE;
}

static void stream_close(NfHttpStream *s)
{
  NfHttp *http = s->http;
  http->streams = g_list_remove(http->streams, s);
  if (s->watch_id)
    nf_vm_console_unwatch(s->vm, s->watch_id);
  g_signal_handlers_disconnect_by_data(s->msg, s);
  g_object_unref(s->msg);
  g_free(s);
}

void nf_http_stream_message_gone(NfHttp *http, SoupServerMessage *msg)
{
  for (GList *l = http->streams; l; l = l->next) {
    NfHttpStream *s = l->data;
    if (s->msg == msg) {
      stream_close(s);
      return;
    }
  }
}

void nf_http_streams_close_all(NfHttp *http)
{
  while (http->streams) {
    NfHttpStream *s = http->streams->data;
    soup_message_body_complete(soup_server_message_get_response_body(s->msg));
    stream_close(s);
  }
}
