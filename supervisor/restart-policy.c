/*
 * restart-policy.c: backoff and intensity arithmetic (see restart-policy.h).
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

guint nf_restart_recent(const NfRestartTally *t, guint window_ms, gint64 now_us)
{
  guint n = 0;
  for (guint i = 0; i < t->count; i++)
    if (now_us - t->times[i] <= (gint64)window_ms * 1000)
      n++;
  return n;
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
  t->times[t->next] = now_us;
  t->next = (t->next + 1) % NF_RESTART_TALLY;
  t->count = MIN(t->count + 1, NF_RESTART_TALLY);
  return NF_RESTART_AFTER;
}
