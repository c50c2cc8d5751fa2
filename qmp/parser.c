/*
 * parser.c: QMP framing and JSON decoding, with no I/O.
 *
 * qemu writes exactly one JSON object per line ("\r\n" terminated), so framing
 * is "split on '\n', decode each line". Keeping this apart from the socket code
 * lets the unit tests, the fuzzer and the benchmark drive it with arbitrary
 * chunkings, and keeps the client free of buffer arithmetic.
 *
 * Buffer strategy: complete lines are decoded straight out of the caller's
 * chunk (no copy). Only an incomplete tail is copied into a private buffer,
 * and that buffer is released once it empties out, so an idle connection holds
 * no buffer at all; with thousands of mostly idle guests that is the common
 * case. When a tail is pending, only the newly fed bytes are searched for the
 * newline, so a line split into many small reads costs O(length), not
 * O(length^2). A line longer than NF_QMP_MAX_LINE is rejected as soon as it is
 * known to be too long, before it is fully buffered.
 *
 * Unsigned 64-bit integers: qemu prints uint64 values as such, and jansson's
 * integers are int64, so jansson refuses anything above INT64_MAX. qemu 7.2
 * does send those: balloon guest-stats report every stat the guest has not
 * filled in yet as 18446744073709551615 (uint64 -1). Such a reply must not
 * kill the connection, so on that one error the line is re-read with those
 * integers wrapped to int64 (two's complement, losslessly: cast
 * json_integer_value() to guint64 to get the value back; "no value" reads
 * as -1). Only the failing line pays for this.
 */
#include "qmp/qmp.h"

#include <string.h>

struct NfQmpParser {
  NfQmpMessageFunc on_message;
  gpointer user_data;
  char *tail; /* incomplete line carried over from earlier feeds, or NULL */
  gsize tail_len;
  gsize tail_cap;
  gboolean broken; /* a protocol error happened; refuse further input */
};

static gboolean nf_qmp_parser_line(NfQmpParser *parser, const char *line, gsize len,
                                   GError **error);
static json_t *nf_qmp_parser_decode(const char *line, gsize len, json_error_t *jerr);
static char *nf_qmp_wrap_uint64(const char *line, gsize len, gsize *out_len);
static void nf_qmp_parser_tail_append(NfQmpParser *parser, const char *data, gsize len);
static void nf_qmp_parser_tail_reset(NfQmpParser *parser);
static gboolean nf_qmp_parser_fail(NfQmpParser *parser, GError **error, const char *fmt, ...)
    G_GNUC_PRINTF(3, 4);

/* Returns a parser that calls `on_message` for every decoded object. Never
 * NULL. Free it with nf_qmp_parser_free(). */
NfQmpParser *nf_qmp_parser_new(NfQmpMessageFunc on_message, gpointer user_data)
{
  NfQmpParser *parser = g_new0(NfQmpParser, 1);
  parser->on_message = on_message;
  parser->user_data = user_data;
  return parser;
}

void nf_qmp_parser_free(NfQmpParser *parser)
{
  if (parser == NULL)
    return;
  g_free(parser->tail);
  g_free(parser);
}

/* Feeds `len` bytes. Every complete line is decoded and handed to
 * on_message, in order, before this returns (on_message must not free the
 * parser). Blank lines are skipped. Returns FALSE with NF_QMP_ERROR_PROTOCOL on
 * the first bad line; messages before it have been delivered, nothing after it
 * is, and every later feed fails the same way. */
gboolean nf_qmp_parser_feed(NfQmpParser *parser, const char *data, gsize len, GError **error)
{
  if (parser->broken)
    return nf_qmp_parser_fail(parser, error, "QMP stream already failed");

  const char *p = data;
  const char *end = data + len;

  if (parser->tail_len > 0) {
    const char *nl = memchr(p, '\n', len);
    if (nl == NULL) {
      if (parser->tail_len + len > NF_QMP_MAX_LINE)
        return nf_qmp_parser_fail(parser, error, "QMP line longer than %d bytes", NF_QMP_MAX_LINE);
      nf_qmp_parser_tail_append(parser, p, len);
      return TRUE;
    }
    if (parser->tail_len + (gsize)(nl - p) > NF_QMP_MAX_LINE)
      return nf_qmp_parser_fail(parser, error, "QMP line longer than %d bytes", NF_QMP_MAX_LINE);
    nf_qmp_parser_tail_append(parser, p, nl - p);
    /* Detach the tail first: on_message may feed nothing, but a failure below
     * must not leave a half-consumed buffer behind. */
    g_autofree char *line = g_steal_pointer(&parser->tail);
    gsize line_len = parser->tail_len;
    parser->tail_len = 0;
    parser->tail_cap = 0;
    if (!nf_qmp_parser_line(parser, line, line_len, error))
      return FALSE;
    p = nl + 1;
  }

  while (p < end) {
    const char *nl = memchr(p, '\n', end - p);
    if (nl == NULL)
      break;
    if ((gsize)(nl - p) > NF_QMP_MAX_LINE)
      return nf_qmp_parser_fail(parser, error, "QMP line longer than %d bytes", NF_QMP_MAX_LINE);
    if (!nf_qmp_parser_line(parser, p, nl - p, error))
      return FALSE;
    p = nl + 1;
  }

  if (p < end) {
    if ((gsize)(end - p) > NF_QMP_MAX_LINE)
      return nf_qmp_parser_fail(parser, error, "QMP line longer than %d bytes", NF_QMP_MAX_LINE);
    nf_qmp_parser_tail_append(parser, p, end - p);
  }
  return TRUE;
}

/* Decodes one line (without its '\n') and delivers it. */
static gboolean nf_qmp_parser_line(NfQmpParser *parser, const char *line, gsize len, GError **error)
{
  gsize i;
  for (i = 0; i < len; i++) {
    char c = line[i];
    if (c != ' ' && c != '\t' && c != '\r')
      break;
  }
  if (i == len)
    return TRUE; /* blank line: harmless, qemu never sends one but a human might */

  json_error_t jerr;
  json_auto_t *msg = nf_qmp_parser_decode(line, len, &jerr);
  if (msg == NULL)
    return nf_qmp_parser_fail(parser, error, "invalid JSON from QMP peer: %s (column %d)",
                              jerr.text, jerr.column);
  if (!json_is_object(msg))
    return nf_qmp_parser_fail(parser, error, "QMP message is not a JSON object");
  parser->on_message(msg, parser->user_data);
  return TRUE;
}

static json_t *nf_qmp_parser_decode(const char *line, gsize len, json_error_t *jerr)
{
  json_t *msg = json_loadb(line, len, 0, jerr);
  if (msg != NULL || json_error_code(jerr) != json_error_numeric_overflow)
    return msg;
  gsize wrapped_len = 0;
  g_autofree char *wrapped = nf_qmp_wrap_uint64(line, len, &wrapped_len);
  if (wrapped == NULL)
    return NULL; /* a real overflow (beyond uint64, or a huge real): keep jansson's error */
  return json_loadb(wrapped, wrapped_len, 0, jerr);
}

/* Copies `line` with every integer literal in (INT64_MAX, UINT64_MAX]
 * outside strings replaced by its int64 wrap-around. Returns NULL when there
 * was nothing to replace. */
static char *nf_qmp_wrap_uint64(const char *line, gsize len, gsize *out_len)
{
  g_autoptr(GString) out = g_string_sized_new(len + 16);
  gboolean changed = FALSE;
  gsize i = 0;
  while (i < len) {
    char c = line[i];
    if (c == '"') {
      gsize j = i + 1;
      while (j < len && line[j] != '"')
        j += line[j] == '\\' ? 2 : 1;
      j = MIN(j + 1, len);
      g_string_append_len(out, line + i, j - i);
      i = j;
      continue;
    }
    if (!g_ascii_isdigit(c) && c != '-') {
      g_string_append_c(out, c);
      i++;
      continue;
    }
    /* A whole number token, so that fractions and exponents are never split. */
    gsize j = i;
    gboolean digits_only = TRUE;
    while (j < len && (g_ascii_isdigit(line[j]) || memchr("+-.eE", line[j], 5) != NULL)) {
      digits_only = digits_only && g_ascii_isdigit(line[j]);
      j++;
    }
    guint64 v = 0;
    gboolean fits = digits_only;
    for (gsize k = i; k < j && fits; k++) {
      guint d = line[k] - '0';
      if (v > (G_MAXUINT64 - d) / 10)
        fits = FALSE;
      else
        v = v * 10 + d;
    }
    if (fits && v > (guint64)G_MAXINT64) {
      g_string_append_printf(out, "%" G_GINT64_FORMAT, (gint64)v);
      changed = TRUE;
    } else {
      g_string_append_len(out, line + i, j - i);
    }
    i = j;
  }
  if (!changed)
    return NULL;
  *out_len = out->len;
  return g_string_free(g_steal_pointer(&out), FALSE);
}

static void nf_qmp_parser_tail_append(NfQmpParser *parser, const char *data, gsize len)
{
  if (len == 0)
    return;
  if (parser->tail_len + len > parser->tail_cap) {
    gsize cap = MAX(parser->tail_cap * 2, 4096);
    while (cap < parser->tail_len + len)
      cap *= 2;
    parser->tail = g_realloc(parser->tail, cap);
    parser->tail_cap = cap;
  }
  memcpy(parser->tail + parser->tail_len, data, len);
  parser->tail_len += len;
}

static void nf_qmp_parser_tail_reset(NfQmpParser *parser)
{
  g_clear_pointer(&parser->tail, g_free);
  parser->tail_len = 0;
  parser->tail_cap = 0;
}

static gboolean nf_qmp_parser_fail(NfQmpParser *parser, GError **error, const char *fmt, ...)
{
  parser->broken = TRUE;
  nf_qmp_parser_tail_reset(parser);
  va_list ap;
  va_start(ap, fmt);
  g_autofree char *msg = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  g_set_error_literal(error, NF_QMP_ERROR, NF_QMP_ERROR_PROTOCOL, msg);
  return FALSE;
}
