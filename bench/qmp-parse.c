/*
 * qmp-parse.c: throughput of the QMP parser (framing + JSON decoding).
 *
 * The supervisor's single main loop parses every byte every qemu says, so the
 * parser's cost per message bounds how many guests one core can watch. This
 * measures it on a realistic mix of qemu 7.2 traffic (small returns, events,
 * query replies, balloon stats, and 1 in 100 a 6 KB query-commands-sized
 * reply), fed in chunks of various sizes, against a baseline in the same run:
 * plain json_loadb() on lines split beforehand. The ratio is what framing
 * (newline search, carrying partial lines across chunks) costs on top of
 * jansson itself.
 *
 * Usage: qmp-parse [MESSAGES]   (default 200000)
 */
#include "qmp/qmp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Real lines captured from qemu 7.2 (ids and timestamps vary in use). */
static const char *const small_mix[] = {
    "{\"return\": {}, \"id\": 1042}",
    "{\"return\": {\"status\": \"running\", \"singlestep\": false, \"running\": true}, \"id\": "
    "1043}",
    "{\"return\": {\"actual\": 134217728}, \"id\": 1044}",
    "{\"timestamp\": {\"seconds\": 1795615912, \"microseconds\": 441020}, \"event\": "
    "\"BALLOON_CHANGE\", \"data\": {\"actual\": 133169152}}",
    "{\"return\": {\"stats\": {\"stat-htlb-pgalloc\": 0, \"stat-swap-out\": 0, "
    "\"stat-available-memory\": 20832256, \"stat-htlb-pgfail\": 0, \"stat-free-memory\": "
    "16072704, \"stat-minor-faults\": 1511, \"stat-major-faults\": 0, \"stat-total-memory\": "
    "36245504, \"stat-swap-in\": 0, \"stat-disk-caches\": 1855488}, \"last-update\": "
    "1795615916}, \"id\": 1045}",
    "{\"timestamp\": {\"seconds\": 1795615916, \"microseconds\": 944519}, \"event\": \"STOP\"}",
    "{\"timestamp\": {\"seconds\": 1795615916, \"microseconds\": 944991}, \"event\": \"RESUME\"}",
    "{\"timestamp\": {\"seconds\": 1795615916, \"microseconds\": 945631}, \"event\": "
    "\"SHUTDOWN\", \"data\": {\"guest\": false, \"reason\": \"host-qmp-quit\"}}",
    "{\"id\": 1046, \"error\": {\"class\": \"CommandNotFound\", \"desc\": \"The command nope "
    "has not been found\"}}",
};

typedef struct {
  gsize off; /* into the stream, which may move while it is built */
  gsize len;
} Line;

typedef struct {
  guint64 messages;
} Counter;

static char *make_big_reply(void);
static char *make_stream(guint n, gsize *len_out, GArray *lines);
static void count_cb(json_t *message, gpointer data);
static double run_baseline(const char *stream, const GArray *lines);
static double run_parser(const char *stream, gsize len, gsize chunk, guint expect);

/* A query-commands-shaped reply: 209 {"name": ...} entries, ~6 KB like the real one. */
static char *make_big_reply(void)
{
  GString *s = g_string_new("{\"return\": [");
  for (int i = 0; i < 209; i++)
    g_string_append_printf(s, "%s{\"name\": \"x-query-virtio-command-%03d\"}", i ? ", " : "", i);
  g_string_append(s, "], \"id\": 7}");
  return g_string_free(s, FALSE);
}

static char *make_stream(guint n, gsize *len_out, GArray *lines)
{
  g_autofree char *big = make_big_reply();
  GString *s = g_string_new(NULL);
  for (guint i = 0; i < n; i++) {
    const char *m = (i % 100 == 99) ? big : small_mix[i % G_N_ELEMENTS(small_mix)];
    Line l = {s->len, strlen(m)};
    g_array_append_val(lines, l);
    g_string_append(s, m);
    g_string_append(s, "\r\n");
  }
  *len_out = s->len;
  return g_string_free(s, FALSE);
}

static void count_cb(json_t *message, gpointer data)
{
  ((Counter *)data)->messages++;
}

/* Seconds for json_loadb over the pre-split lines. */
static double run_baseline(const char *stream, const GArray *lines)
{
  gint64 t0 = g_get_monotonic_time();
  for (guint i = 0; i < lines->len; i++) {
    const Line *l = &g_array_index(lines, Line, i);
    json_t *j = json_loadb(stream + l->off, l->len, 0, NULL);
    if (j == NULL)
      g_error("baseline: line %u did not parse", i);
    json_decref(j);
  }
  return (g_get_monotonic_time() - t0) / 1e6;
}

/* Seconds for the parser fed `chunk` bytes at a time. */
static double run_parser(const char *stream, gsize len, gsize chunk, guint expect)
{
  Counter c = {0};
  NfQmpParser *p = nf_qmp_parser_new(count_cb, &c);
  gint64 t0 = g_get_monotonic_time();
  for (gsize off = 0; off < len; off += chunk) {
    GError *error = NULL;
    if (!nf_qmp_parser_feed(p, stream + off, MIN(chunk, len - off), &error))
      g_error("parser: %s", error->message);
  }
  double secs = (g_get_monotonic_time() - t0) / 1e6;
  nf_qmp_parser_free(p);
  if (c.messages != expect)
    g_error("parser: %" G_GUINT64_FORMAT " messages, expected %u", c.messages, expect);
  return secs;
}

int main(int argc, char **argv)
{
  guint n = argc > 1 ? (guint)atoi(argv[1]) : 200000;
  g_autoptr(GArray) lines = g_array_new(FALSE, FALSE, sizeof(Line));
  gsize len = 0;
  g_autofree char *stream = make_stream(n, &len, lines);
  double mb = len / 1e6;
  const int reps = 5; /* best of: the box is shared */

  printf("qmp-parse: %u messages, %.1f MB (avg %.0f B/message; 1%% are 6 KB replies)\n", n, mb,
         (double)len / n);
  printf("%-28s %12s %9s %12s %7s\n", "mode", "messages/s", "MB/s", "baseline/s", "ratio");
  /* Baseline and parser alternate within each row (best of `reps` each), so
   * that load from other processes on a shared box hits both alike. */
  const gsize chunks[] = {1, 16, 256, 4096, 65536, 0};
  for (guint i = 0; i < G_N_ELEMENTS(chunks); i++) {
    gsize chunk = chunks[i] ? chunks[i] : len;
    double best = G_MAXDOUBLE, base = G_MAXDOUBLE;
    for (int r = 0; r < reps; r++) {
      base = MIN(base, run_baseline(stream, lines));
      best = MIN(best, run_parser(stream, len, chunk, n));
    }
    g_autofree char *label = chunks[i] ? g_strdup_printf("nf_qmp_parser, %zu B chunks", chunk)
                                       : g_strdup("nf_qmp_parser, one chunk");
    /* ratio: parser throughput over json_loadb's (1.00 = framing costs nothing). */
    printf("%-28s %12.0f %9.1f %12.0f %7.2f\n", label, n / best, mb / best, n / base, base / best);
  }
  return 0;
}
