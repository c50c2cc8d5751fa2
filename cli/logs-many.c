/*
 * logs-many.c: `logs TARGET` for several guests (see logs-many.h).
 */
#include "cli/logs-many.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>

#include "cli/fleet-verbs.h"
#include "cli/log-print.h"
#include "cli/verbs.h"
#include "supervisor/control.h" /* NF_CONTROL_OUT_MAX */

/* qemu writes the console log a byte at a time, so a stream hands out
 * pieces of lines: a guest's unfinished line waits for the rest this long
 * (a prompt never gets one) or until it is this big. */
#define PARTIAL_WAIT_US (200 * 1000)
#define PARTIAL_MAX 4096
/* A frame's header line ("out 12 4096"): longer is not one. */
#define HEAD_MAX 64

typedef struct {
  guint id;
  char *prefix;
  NfLogOut out;
  json_t *doc;          /* its `logs` document until its history is read */
  GString *pending;     /* read, not yet written: the end of an unfinished line */
  gint64 pending_since; /* monotonic µs that unfinished line began waiting */
  GString *early;       /* its output that came before its history was read */
  gboolean left;        /* it left the fleet: nothing more comes */
} Stream;

typedef struct {
  NfClient *c;            /* the stream (log-mux.h frames); NULL once it ended */
  GPtrArray *streams;     /* Stream*: the TARGET's guests in id order, then joiners */
  GHashTable *by_id;      /* id -> the Stream now receiving its output */
  GString *in;            /* read, not yet taken apart into frames */
  Stream *open;           /* the guest whose line went out unfinished */
  gboolean follow;        /* -f: an end of the stream needs explaining */
  gboolean histories_out; /* streams may go (not while run() walks them) */
} Follow;

static void stream_free(gpointer data)
{
  Stream *s = data;
  g_free(s->prefix);
  json_decref(s->doc);
  g_string_free(s->pending, TRUE);
  g_string_free(s->early, TRUE);
  g_free(s);
}

static Stream *stream_new(json_t *doc)
{
  Stream *s = g_new0(Stream, 1);
  s->id = (guint)json_integer_value(json_object_get(doc, "id"));
  s->prefix = g_strdup_printf("%s | ", json_string_value(json_object_get(doc, "name")));
  s->out = (NfLogOut){s->prefix, TRUE};
  s->doc = json_incref(doc);
  s->pending = g_string_new(NULL);
  s->early = g_string_new(NULL);
  return s;
}

/* Its history into its pending bytes, then what its stream brought since. */
static gboolean read_history(Stream *s, GError **error)
{
  if (!nf_log_read(s->doc, s->pending, error))
    return FALSE;
  g_clear_pointer(&s->doc, json_decref);
  g_string_append_len(s->pending, s->early->str, (gssize)s->early->len);
  g_string_truncate(s->early, 0);
  s->pending_since = g_get_monotonic_time();
  return TRUE;
}

/* Writes `len` bytes of `s`, ending another guest's unfinished line first. */
static gboolean emit(Follow *f, Stream *s, const char *buf, gsize len)
{
  if (len == 0)
    return TRUE;
  if (f->open && f->open != s && !nf_log_end_line(&f->open->out))
    return FALSE;
  if (!nf_log_write(&s->out, buf, len))
    return FALSE;
  f->open = s->out.at_line_start ? NULL : s;
  return TRUE;
}

/* Writes what `s` has pending up to its last newline; the rest waits
 * (until PARTIAL_WAIT_US have passed or it is PARTIAL_MAX big: all of it). */
static gboolean flush(Follow *f, Stream *s, gint64 now, gboolean all)
{
  GString *p = s->pending;
  const char *nl = p->len ? memrchr(p->str, '\n', p->len) : NULL;
  gsize whole = nl ? (gsize)(nl - p->str) + 1 : 0, tail = p->len - whole;
  if (all || tail >= PARTIAL_MAX || (tail && now - s->pending_since >= PARTIAL_WAIT_US))
    whole = p->len;
  if (!emit(f, s, p->str, whole))
    return FALSE;
  g_string_erase(p, 0, (gssize)whole);
  if (p->len == 0)
    s->pending_since = 0;
  else if (whole || s->pending_since == 0)
    s->pending_since = now;
  return TRUE;
}

/* One frame (log-mux.h) to its guest. */
static gboolean frame(Follow *f, const char *kind, guint id, const char *body, gsize len,
                      GError **error)
{
  Stream *s = g_hash_table_lookup(f->by_id, GUINT_TO_POINTER(id));
  if (strcmp(kind, "out") == 0) {
    GString *into = s == NULL ? NULL : s->doc ? s->early : s->pending;
    if (into && into->len == 0 && into == s->pending)
      s->pending_since = g_get_monotonic_time();
    if (into)
      g_string_append_len(into, body, (gssize)len);
    return TRUE;
  }
  if (strcmp(kind, "leave") == 0) {
    if (s)
      s->left = TRUE;
    g_hash_table_remove(f->by_id, GUINT_TO_POINTER(id));
    return TRUE;
  }
  if (strcmp(kind, "join") == 0) {
    json_auto_t *doc = json_loadb(body, len, 0, NULL);
    if (!json_is_object(doc) || !json_is_string(json_object_get(doc, "name"))) {
      g_set_error(error, NF_CLIENT_ERROR, NF_CLIENT_ERROR_PROTOCOL,
                  "the supervisor announced guest %u without a valid document", id);
      return FALSE;
    }
    Stream *joined = stream_new(doc);
    g_ptr_array_add(f->streams, joined);
    g_hash_table_insert(f->by_id, GUINT_TO_POINTER(id), joined);
    return read_history(joined, error);
  }
  return TRUE; /* a kind from a newer supervisor: its length lets us skip it */
}

/* Takes the whole frames read so far apart; the last may wait for more. */
static gboolean frames(Follow *f, GError **error)
{
  gsize at = 0;
  gboolean ok = TRUE;
  while (ok && at < f->in->len) {
    const char *head = f->in->str + at;
    gsize avail = f->in->len - at;
    const char *nl = memchr(head, '\n', MIN(avail, HEAD_MAX));
    char kind[HEAD_MAX];
    guint id;
    guint64 len;
    int used = -1;
    g_autofree char *line = nl ? g_strndup(head, (gsize)(nl - head)) : NULL;
    if (line && sscanf(line, "%63s %u %" G_GUINT64_FORMAT "%n", kind, &id, &len, &used) == 3 &&
        used == (int)strlen(line)) {
      gsize need = (gsize)(nl - head) + 1 + len;
      if (avail < need)
        break;
      ok = frame(f, kind, id, nl + 1, len, error);
      at += need;
    } else if (nl || avail >= HEAD_MAX) {
      g_set_error(error, NF_CLIENT_ERROR, NF_CLIENT_ERROR_PROTOCOL,
                  "the supervisor's log stream is garbled (a frame header was expected)");
      ok = FALSE;
    } else {
      break;
    }
  }
  g_string_erase(f->in, 0, (gssize)at);
  return ok;
}

/* Reads what the stream has for us without blocking, and takes its whole
 * frames apart (those read before it ended too; a frame cut short by a
 * drop is left). FALSE when it ended (error set if it failed or was
 * garbled). */
static gboolean take(Follow *f, GError **error)
{
  char buf[65536];
  gssize got = 1;
  while (got > 0 &&
         (nf_client_has_buffered(f->c) ||
          poll(&(struct pollfd){.fd = nf_client_fd(f->c), .events = POLLIN}, 1, 0) > 0)) {
    got = nf_client_read_raw(f->c, buf, sizeof(buf), error);
    if (got > 0)
      g_string_append_len(f->in, buf, got);
  }
  if (got < 0)
    return FALSE;
  return frames(f, error) && got > 0;
}

/* One pass: what the stream has read, every guest's whole lines out (all
 * it holds once it left or the stream ended). -1: go on; else the exit
 * status. */
static int pump(Follow *f)
{
  g_autoptr(GError) error = NULL;
  if (f->c && !take(f, &error)) {
    if (error)
      return nf_client_fail("logs", error, NULL);
    g_clear_pointer(&f->c, nf_client_free);
  }
  gint64 now = g_get_monotonic_time();
  for (guint i = 0; i < f->streams->len; i++) {
    Stream *s = f->streams->pdata[i];
    if (s->doc == NULL && !flush(f, s, now, s->left || f->c == NULL))
      return nf_log_write_failed("logs"); /* our reader went away, or a full disk */
    /* A guest that left is done with once all of it is out (fleets that
     * scale up and down for hours do not pile them up). */
    if (s->left && f->open != s && f->histories_out)
      g_ptr_array_remove_index(f->streams, i--);
  }
  return -1;
}

/* Waits until the stream has bytes or an unfinished line's wait is over. */
static gboolean wait_any(Follow *f)
{
  if (nf_client_has_buffered(f->c))
    return TRUE;
  gint64 due = -1, now = g_get_monotonic_time();
  for (guint i = 0; i < f->streams->len; i++) {
    Stream *s = f->streams->pdata[i];
    if (s->pending->len && (due < 0 || s->pending_since + PARTIAL_WAIT_US < due))
      due = s->pending_since + PARTIAL_WAIT_US;
  }
  int wait_ms = due < 0 ? -1 : (int)MAX((due - now + 999) / 1000, 0);
  struct pollfd p = {.fd = nf_client_fd(f->c), .events = POLLIN};
  int r;
  while ((r = poll(&p, 1, wait_ms)) < 0 && errno == EINTR)
    ;
  if (r < 0)
    nf_cli_error("logs: waiting for the guests' output: %s", g_strerror(errno));
  return r >= 0;
}

/* The stream ended: the fleet stopped (its socket is gone), or the
 * supervisor dropped us, reading too slowly, while it runs. */
static int ended(const NfClientOptions *o, const char *target)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(NfClient) c = nf_client_connect(o, &error);
  if (g_error_matches(error, NF_CLIENT_ERROR, NF_CLIENT_ERROR_NO_FLEET))
    return NF_EXIT_OK;
  nf_cli_error("logs: the supervisor ended the stream while the fleet runs (it drops a reader "
               "that falls too far behind: %d MiB for each guest followed, 16 at most); "
               "`logs %s` has all of it",
               NF_CONTROL_OUT_MAX >> 20, target);
  return NF_EXIT_FAILURE;
}

static int run(Follow *f, const NfClientOptions *o, const char *target)
{
  g_autoptr(GError) error = NULL;
  /* The histories in id order, each with what its guest printed since, and
   * between them what the guests already printed say meanwhile: the stream
   * is read all along, so the supervisor never has to drop us. */
  for (guint k = 0; k < f->streams->len; k++) {
    Stream *s = f->streams->pdata[k];
    if (s->doc && !read_history(s, &error))
      return nf_client_fail("logs", error, NULL);
    int status = pump(f);
    if (status >= 0)
      return status;
  }
  f->histories_out = TRUE;
  while (f->c) {
    if (!wait_any(f))
      return NF_EXIT_FAILURE;
    int status = pump(f);
    if (status >= 0)
      return status;
  }
  if (f->open && !nf_log_end_line(&f->open->out))
    return nf_log_write_failed("logs");
  return f->follow ? ended(o, target) : NF_EXIT_OK;
}

int nf_logs_many(const NfClientOptions *o, const char *target, const char *since, gboolean follow)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(NfClient) c = nf_client_connect(o, &error);
  if (!c)
    return nf_client_fail("logs", error, NULL);
  json_t *args = json_pack("{s:s, s:b}", "targets", target, "follow", follow);
  if (since)
    json_object_set_new(args, "since", json_string(since));
  json_auto_t *reply = nf_client_call(c, "logs", args, NF_CLIENT_TIMEOUT_MS, &error);
  if (!reply)
    return nf_client_fail("logs", error, c);
  g_autoptr(GPtrArray) streams = g_ptr_array_new_with_free_func(stream_free);
  g_autoptr(GHashTable) by_id = g_hash_table_new(NULL, NULL);
  g_autoptr(GString) in = g_string_new(NULL);
  Follow f = {follow ? g_steal_pointer(&c) : NULL, streams, by_id, in, NULL, follow, FALSE};
  gsize i;
  json_t *doc;
  json_array_foreach(json_object_get(reply, "guests"), i, doc)
  {
    Stream *s = stream_new(doc);
    g_ptr_array_add(streams, s);
    g_hash_table_insert(by_id, GUINT_TO_POINTER(s->id), s);
  }
  int status = run(&f, o, target);
  g_clear_pointer(&f.c, nf_client_free);
  return status;
}
