/*
 * ksm.c: switch KSM on for a fleet and restore it afterwards (see ksm.h).
 */
#include "supervisor/ksm.h"

#include <errno.h>
#include <stdio.h>

#define KSM_DIR "/sys/kernel/mm/ksm/"

struct NfKsm {
  char *saved[3];
};

static const char *const knobs[3] = {"run", "pages_to_scan", "sleep_millisecs"};

static gboolean knob_write(const char *name, const char *value, GError **error);
static char *knob_read(const char *name);

static char *knob_read(const char *name)
{
  g_autofree char *path = g_strconcat(KSM_DIR, name, NULL);
  char *text = NULL;
  if (!g_file_get_contents(path, &text, NULL, NULL))
    return NULL;
  return g_strchomp(text);
}

static gboolean knob_write(const char *name, const char *value, GError **error)
{
  g_autofree char *path = g_strconcat(KSM_DIR, name, NULL);
  FILE *f = fopen(path, "we");
  if (f == NULL || fputs(value, f) < 0 || fclose(f) != 0) {
    int e = errno;
    g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(e),
                "--ksm: cannot write %s: %s (KSM needs root and a kernel with CONFIG_KSM)", path,
                g_strerror(e));
    return FALSE;
  }
  return TRUE;
}

NfKsm *nf_ksm_enable(guint pages_to_scan, guint sleep_ms, GError **error)
{
  NfKsm *k = g_new0(NfKsm, 1);
  for (guint i = 0; i < G_N_ELEMENTS(knobs); i++) {
    k->saved[i] = knob_read(knobs[i]);
    if (k->saved[i] == NULL) {
      g_set_error(error, G_FILE_ERROR, G_FILE_ERROR_NOENT,
                  "--ksm: %s%s is missing (KSM needs a kernel with CONFIG_KSM)", KSM_DIR, knobs[i]);
      nf_ksm_restore(k);
      return NULL;
    }
  }
  g_autofree char *pages = g_strdup_printf("%u", pages_to_scan);
  g_autofree char *sleep = g_strdup_printf("%u", sleep_ms);
  /* Scan settings first: run=1 starts ksmd at the rate we want. */
  if (!knob_write("pages_to_scan", pages, error) || !knob_write("sleep_millisecs", sleep, error) ||
      !knob_write("run", "1", error)) {
    nf_ksm_restore(k);
    return NULL;
  }
  return k;
}

void nf_ksm_restore(NfKsm *k)
{
  if (k == NULL)
    return;
  for (guint i = G_N_ELEMENTS(knobs); i-- > 0;) {
    if (k->saved[i])
      knob_write(knobs[i], k->saved[i], NULL);
    g_free(k->saved[i]);
  }
  g_free(k);
}

guint64 nf_ksm_pages_sharing(void)
{
  g_autofree char *v = knob_read("pages_sharing");
  return v ? g_ascii_strtoull(v, NULL, 10) : 0;
}
