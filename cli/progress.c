/*
 * progress.c: progress output for `run` (see progress.h).
 */
#include "cli/progress.h"

struct NfProgress {
  FILE *out;
  gboolean tty;
  gboolean quiet;
  gint64 t0;
  gboolean status_shown;
  gboolean all_ready_said;
  char *ready_hint;
};

static double elapsed(NfProgress *p);
static void clear_status(NfProgress *p);
static void draw_status(NfProgress *p, NfFleet *fleet);

NfProgress *nf_progress_new(FILE *out, gboolean tty, gboolean quiet)
{
  NfProgress *p = g_new0(NfProgress, 1);
  p->out = out;
  p->tty = tty;
  p->quiet = quiet;
  p->t0 = g_get_monotonic_time();
  return p;
}

void nf_progress_free(NfProgress *p)
{
  g_free(p->ready_hint);
  g_free(p);
}

void nf_progress_set_ready_hint(NfProgress *p, const char *hint)
{
  g_free(p->ready_hint);
  p->ready_hint = p->tty && !p->quiet ? g_strdup(hint) : NULL;
}

static double elapsed(NfProgress *p)
{
  return (double)(g_get_monotonic_time() - p->t0) / 1e6;
}

static void clear_status(NfProgress *p)
{
  if (p->tty && p->status_shown) {
    fputs("\r\033[K", p->out);
    p->status_shown = FALSE;
  }
}

static void draw_status(NfProgress *p, NfFleet *fleet)
{
  NfFleetCounts c;
  nf_fleet_counts(fleet, &c);
  g_autoptr(GString) line = g_string_new(NULL);
  g_string_printf(line, "[%7.1fs] %u guests: %u started, %u booting, %u ready, %u failed",
                  elapsed(p), c.total, c.started, c.booting, c.ready, c.failed);
  if (c.backoff)
    g_string_append_printf(line, ", %u restarting", c.backoff);
  if (c.stopping)
    g_string_append_printf(line, ", %u stopping", c.stopping);
  if (p->tty) {
    fprintf(p->out, "\r\033[K%s", line->str);
    p->status_shown = TRUE;
  }
  fflush(p->out);
}

void nf_progress_say(NfProgress *p, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  g_autofree char *msg = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  clear_status(p);
  fprintf(p->out, "[%7.1fs] %s\n", elapsed(p), msg);
  fflush(p->out);
}

void nf_progress_vm(NfProgress *p, NfFleet *fleet, NfVm *vm, NfVmState old_state,
                    const char *reason)
{
  NfVmState s = nf_vm_state(vm);
  /* Trouble is always worth a line; routine progress only in logs, where
   * there is no status line to show it. */
  gboolean trouble = s == NF_VM_FAILED || s == NF_VM_BACKOFF || s == NF_VM_UNHEALTHY;
  gboolean routine = s == NF_VM_READY || s == NF_VM_STOPPED;
  if (trouble || (routine && !p->tty && !p->quiet)) {
    if (s == NF_VM_READY && g_str_has_prefix(reason, "adopted")) {
      nf_progress_say(p, "%s %s adopted from a previous supervisor (pid %d)", nf_vm_name(vm),
                      nf_vm_serial(vm), (int)nf_vm_pid(vm));
    } else if (s == NF_VM_READY) {
      g_autofree char *restarts =
          nf_vm_restarts(vm) ? g_strdup_printf(", restart %u", nf_vm_restarts(vm)) : g_strdup("");
      nf_progress_say(p, "%s ready %s (pid %d, %.1fs after start%s)", nf_vm_name(vm),
                      nf_vm_serial(vm), (int)nf_vm_pid(vm),
                      (double)(nf_vm_ready_at(vm) - nf_vm_started_at(vm)) / 1e6, restarts);
    } else {
      nf_progress_say(p, "%s %s: %s", nf_vm_name(vm), nf_vm_state_name(s), reason);
    }
  }
  NfFleetCounts c;
  nf_fleet_counts(fleet, &c);
  if (!p->all_ready_said && c.ready == c.total) {
    p->all_ready_said = TRUE;
    nf_progress_say(p, "all %u guests ready", c.total);
    if (p->ready_hint)
      nf_progress_say(p, "%s", p->ready_hint);
  }
  draw_status(p, fleet);
}

void nf_progress_finish(NfProgress *p)
{
  if (p->tty && p->status_shown) {
    fputc('\n', p->out);
    p->status_shown = FALSE;
  }
  fflush(p->out);
}
