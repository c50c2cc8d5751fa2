/*
 * parse.h: the CLI's value parsers (sizes, counts, durations). Each error
 * names the flag and shows an accepted example.
 */
#pragma once
#include <glib.h>

/* "128M", "1G", "512" (MiB), "65536K" -> MiB. */
gboolean nf_parse_size_mib(const char *flag, const char *text, guint64 *mib, GError **error);
/* A positive decimal integer that fits `max`. */
gboolean nf_parse_count(const char *what, const char *text, guint max, guint *out, GError **error);
/* Seconds, decimals allowed ("10", "2.5") -> milliseconds. */
gboolean nf_parse_seconds_ms(const char *flag, const char *text, guint *ms, GError **error);
