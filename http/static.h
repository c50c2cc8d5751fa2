/*
 * static.h: the dashboard's files (http/static/), embedded in the binary by
 * scripts/embed-files.sh at build time (build/gen/http/static-files.c), so
 * the page needs nothing installed beside the binary and fetches nothing
 * at run time.
 */
#pragma once
#include <stddef.h>

typedef struct {
  const char *name; /* file name in http/static/, e.g. "index.html"; NULL ends the table */
  const unsigned char *data;
  size_t len;
} NfHttpStaticFile;

/* Every embedded file, ended by an entry with a NULL name. */
extern const NfHttpStaticFile nf_http_static_files[];
