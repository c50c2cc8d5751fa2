/*
 * memstat.h: where a fleet's memory goes, read from /proc: one process's
 * RSS and PSS (smaps_rollup: a page shared by N processes, a KSM-merged one
 * included, counts 1/N in each, so PSS sums to what the host really spends),
 * and the host's total, available and pressure (PSI). Plain readers, no
 * state: `nervesfleet mem`, `ps` and the density bench share them.
 */
#pragma once
#include <glib.h>

typedef struct {
  guint64 rss; /* bytes */
  guint64 pss;
  guint64 pss_anon;
  guint64 pss_file;
} NfMemStat;

/* Reads /proc/PID/smaps_rollup. FALSE (and `out` zeroed) when the process
 * is gone or the file unreadable. */
gboolean nf_memstat_read(GPid pid, NfMemStat *out);

typedef struct {
  guint64 total;                                         /* MemTotal, bytes */
  guint64 available;                                     /* MemAvailable, bytes */
  gboolean psi;                                          /* /proc/pressure/memory was readable */
  double some_avg10, some_avg60, full_avg10, full_avg60; /* % of time stalled */
} NfHostMem;

/* Reads /proc/meminfo and /proc/pressure/memory (never fails: fields of a
 * file that cannot be read stay 0). */
void nf_memstat_host(NfHostMem *out);
