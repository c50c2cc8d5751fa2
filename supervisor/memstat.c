/*
 * memstat.c: /proc readers for memory accounting (see memstat.h).
 */
#include "supervisor/memstat.h"

#include <stdio.h>
#include <string.h>

static guint64 field_kib(const char *text, const char *key);

/* The number after "\n<key>" (key includes the colon), in bytes. */
static guint64 field_kib(const char *text, const char *key)
{
  gsize klen = strlen(key);
  for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
    if (strncmp(p, key, klen) == 0)
      return g_ascii_strtoull(p + klen, NULL, 10) * 1024;
  return 0;
}

gboolean nf_memstat_read(GPid pid, NfMemStat *out)
{
  *out = (NfMemStat){0};
  g_autofree char *path = g_strdup_printf("/proc/%d/smaps_rollup", (int)pid);
  g_autofree char *text = NULL;
  if (pid <= 0 || !g_file_get_contents(path, &text, NULL, NULL))
    return FALSE;
  out->rss = field_kib(text, "Rss:");
  out->pss = field_kib(text, "Pss:");
  out->pss_anon = field_kib(text, "Pss_Anon:");
  out->pss_file = field_kib(text, "Pss_File:");
  return TRUE;
}

void nf_memstat_host(NfHostMem *out)
{
  *out = (NfHostMem){0};
  g_autofree char *mi = NULL;
  if (g_file_get_contents("/proc/meminfo", &mi, NULL, NULL)) {
    out->total = field_kib(mi, "MemTotal:");
    out->available = field_kib(mi, "MemAvailable:");
  }
  g_autofree char *psi = NULL;
  if (g_file_get_contents("/proc/pressure/memory", &psi, NULL, NULL)) {
    const char *some = strstr(psi, "some ");
    const char *full = strstr(psi, "full ");
    out->psi = some != NULL &&
               sscanf(some, "some avg10=%lf avg60=%lf", &out->some_avg10, &out->some_avg60) == 2;
    if (full)
      sscanf(full, "full avg10=%lf avg60=%lf", &out->full_avg10, &out->full_avg60);
  }
}
