/*
 * restart-policy.c: backoff and intensity arithmetic, and the window counter
 * both the per-guest intensity limit and the fleet's storm guard count with
 * (see restart-policy.h).
 */
#include "supervisor/restart-policy.h"

gboolean nf_restart_mode_parse(const char *text, NfRestartMode *mode, GError **error)
{
  static const NfRestartMode all[] = {NF_RESTART_ON_FAILURE, NF_RESTART_ALWAYS, NF_RESTART_NEVER};
  for (guint i = 0; i < G_N_ELEMENTS(all); i++) {
    if (g_strcmp0(text, nf_restart_mode_name(all[i])) == 0) {
      *mode = all[i];
      return TRUE;
    }
  }
  g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
              "--restart '%s': use always, on-failure or never", text);
  return FALSE;
}

const char *nf_restart_mode_name(NfRestartMode mode)
{
  switch (mode) {
  case NF_RESTART_ALWAYS:
    return "always";
  case NF_RESTART_NEVER:
    return "never";
  case NF_RESTART_ON_FAILURE:
  default:
    return "on-failure";
  }
}

/* Slice length in µs: the window in NF_WINDOW_SLICES parts, rounded up so
 * that the slices kept always cover the whole window; never 0. */
static gint64 slice_us(guint window_ms)
{
  gint64 us = ((gint64)window_ms * 1000 + NF_WINDOW_SLICES - 1) / NF_WINDOW_SLICES;
  return MAX(us, 1);
}

void nf_window_count_add(NfWindowCount *w, guint window_ms, gint64 now_us)
{
  gint64 s = now_us / slice_us(window_ms);
  guint i = (guint)(s % G_N_ELEMENTS(w->slice));
  if (w->slice[i] != s) {
    w->slice[i] = s; /* a slice that left the window: reused */
    w->count[i] = 0;
  }
  if (w->count[i] < G_MAXUINT)
    w->count[i]++;
}

guint nf_window_count_recent(const NfWindowCount *w, guint window_ms, gint64 now_us)
{
  gint64 s = now_us / slice_us(window_ms);
  guint64 n = 0;
  for (guint i = 0; i < G_N_ELEMENTS(w->slice); i++)
    if (w->count[i] && w->slice[i] <= s && w->slice[i] >= s - NF_WINDOW_SLICES)
      n += w->count[i];
  return (guint)MIN(n, G_MAXUINT);
}

guint nf_restart_recent(const NfRestartTally *t, guint window_ms, gint64 now_us)
{
  return nf_window_count_recent(&t->restarts, window_ms, now_us);
}

void nf_restart_tally_healthy(NfRestartTally *t)
{
  t->consecutive = 0;
}

NfRestartDecision nf_restart_decide(const NfRestartPolicy *p, NfRestartTally *t, NfExitKind kind,
                                    gint64 now_us, double random01, guint *delay_ms)
{
  gboolean failure = nf_exit_kind_is_failure(kind);
  *delay_ms = 0;
  if (kind == NF_EXIT_STOPPED || p->mode == NF_RESTART_NEVER)
    return NF_RESTART_NO;
  if (p->mode == NF_RESTART_ON_FAILURE && !failure && kind != NF_EXIT_REBOOT)
    return NF_RESTART_NO;
  /* Every restart counts toward intensity, so a reboot loop is caught too. */
  if (nf_restart_recent(t, p->window_ms, now_us) >= p->max_restarts)
    return NF_RESTART_GIVE_UP;

  if (failure) {
    t->consecutive++;
    double d = (double)p->backoff_initial_ms;
    for (guint i = 1; i < t->consecutive && d < p->backoff_max_ms; i++)
      d *= 2;
    d = MIN(d, (double)p->backoff_max_ms);
    d *= 0.8 + 0.4 * random01;
    *delay_ms = (guint)d;
  }
  *delay_ms = MAX(*delay_ms, NF_RESTART_FLOOR_MS);
  nf_window_count_add(&t->restarts, p->window_ms, now_us);
  return NF_RESTART_AFTER;
}
