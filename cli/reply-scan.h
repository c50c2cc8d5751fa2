/*
 * reply-scan.h: finds one top-level member of a JSON object in its text
 * without parsing the rest.
 *
 * `ps --json` at thousands of guests prints a result of hundreds of KB as
 * the supervisor wrote it; parsing it into a jansson tree and encoding it
 * again cost the CLI more CPU than everything else it does (issue 17: 10 of
 * its 14 ms at 1,000 guests). The scan checks the envelope's structure
 * (strings with escapes, nesting) and hands out the member's bytes; anything
 * it does not understand makes it return FALSE, and the caller parses.
 */
#pragma once
#include <glib.h>

/* In the JSON object `text` (`len` bytes), the value of the top-level
 * member `key` (a plain key, no escapes): *value points into `text`,
 * *value_len bytes. FALSE when `text` is not an object whose members up to
 * `key` are well formed, or has no such member. */
gboolean nf_reply_scan_member(const char *text, gsize len, const char *key, const char **value,
                              gsize *value_len);
