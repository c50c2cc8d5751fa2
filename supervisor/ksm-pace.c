/*
 * ksm-pace.c: fast while ksmd finds pages to merge, slower after each full
 * scan that finds none (contract in ksm-pace.h).
 */
#include "supervisor/ksm-pace.h"

void nf_ksm_pace_set_fast(NfKsmPace *p, guint fast)
{
  p->fast = fast;
}

void nf_ksm_pace_wake(NfKsmPace *p)
{
  p->shift = 0;
}

gboolean nf_ksm_pace_observe(NfKsmPace *p, guint64 full_scans, guint64 saved)
{
  if (!p->seen || full_scans < p->full_scans) {
    /* The first reading, or ksmd was restarted (by someone else): a base
     * to compare the next full scan with. */
    p->seen = TRUE;
    p->full_scans = full_scans;
    p->saved = saved;
    return FALSE;
  }
  if (full_scans == p->full_scans)
    return FALSE; /* no full scan ended since: nothing learnt */
  guint64 gain = saved > p->saved ? saved - p->saved : 0;
  guint64 enough = MAX(p->saved / 100, NF_KSM_PACE_MIN_GAIN_PAGES);
  p->full_scans = full_scans;
  p->saved = saved;
  guint before = p->shift;
  if (gain >= enough)
    p->shift = 0;
  else if (p->shift < NF_KSM_PACE_MAX_SHIFT)
    p->shift++;
  return p->shift != before;
}

guint nf_ksm_pace_pages(const NfKsmPace *p)
{
  return MAX(p->fast >> p->shift, 1u);
}
