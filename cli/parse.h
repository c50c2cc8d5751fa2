/*
 * parse.h: the CLI's value parsers (sizes, counts, durations). Each error
 * names the flag and shows an accepted example.
 */
#pragma once
#include <glib.h>

/* "128M", "1G", "512" (MiB), "64K" -> KiB. */
gboolean nf_parse_size_kib(const char *flag, const char *text, guint64 *kib, GError **error);
/* The same in MiB (at least 1M). */
gboolean nf_parse_size_mib(const char *flag, const char *text, guint64 *mib, GError **error);
/* A positive decimal integer that fits `max`. */
gboolean nf_parse_count(const char *what, const char *text, guint max, guint *out, GError **error);
/* Seconds, decimals allowed ("10", "2.5") -> milliseconds. */
gboolean nf_parse_seconds_ms(const char *flag, const char *text, guint *ms, GError **error);
