/*
 * exit-kind.c: exit classification (see exit-kind.h). The order of the rules
 * is the point: our own actions first (we know what we did), then what qemu
 * told us over QMP, then the console, and only then the bare wait status.
 */
#include "supervisor/exit-kind.h"

#include <signal.h>
#include <sys/wait.h>

static const char *const names[NF_EXIT_N_KINDS] = {
    [NF_EXIT_NONE] = "none",     [NF_EXIT_STOPPED] = "stopped", [NF_EXIT_POWEROFF] = "poweroff",
    [NF_EXIT_REBOOT] = "reboot", [NF_EXIT_PANIC] = "panic",     [NF_EXIT_WATCHDOG] = "watchdog",
    [NF_EXIT_HUNG] = "hung",     [NF_EXIT_CRASHED] = "crashed", [NF_EXIT_OOM_KILLED] = "oom-killed",
};

const char *nf_exit_kind_name(NfExitKind kind)
{
  return kind < NF_EXIT_N_KINDS ? names[kind] : "?";
}

gboolean nf_exit_kind_is_failure(NfExitKind kind)
{
  return kind != NF_EXIT_NONE && kind != NF_EXIT_STOPPED && kind != NF_EXIT_POWEROFF &&
         kind != NF_EXIT_REBOOT;
}

NfExitKind nf_exit_kind_classify(const NfExitFacts *f)
{
  if (f->stop_requested)
    return NF_EXIT_STOPPED;
  if (f->hung)
    return NF_EXIT_HUNG;
  if (f->watchdog_event)
    return NF_EXIT_WATCHDOG;
  if (f->panic_seen || g_strcmp0(f->shutdown_reason, "guest-panic") == 0)
    return NF_EXIT_PANIC;
  if (f->oom_kill_counted)
    return NF_EXIT_OOM_KILLED;
  if (g_strcmp0(f->shutdown_reason, "guest-shutdown") == 0)
    return NF_EXIT_POWEROFF;
  if (g_strcmp0(f->shutdown_reason, "guest-reset") == 0)
    return NF_EXIT_REBOOT;
  if (!f->status_known)
    return NF_EXIT_CRASHED;
  if (WIFEXITED(f->wait_status) && WEXITSTATUS(f->wait_status) == 0)
    /* qemu exits 0 on a guest shutdown even when its SHUTDOWN event was lost. */
    return f->shutdown_reason == NULL || g_strcmp0(f->shutdown_reason, "guest-shutdown") == 0
               ? NF_EXIT_POWEROFF
               : NF_EXIT_CRASHED;
  return NF_EXIT_CRASHED;
}
