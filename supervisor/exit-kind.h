/*
 * exit-kind.h: why a guest ended, in the words users see. Classification is a
 * pure function of what the supervisor observed (QMP events, console, wait
 * status, its own actions, the cgroup's OOM counter), so every rule is unit
 * tested without a VM. QMP's word beats guesses from the exit status.
 */
#pragma once
#include <glib.h>

typedef enum {
  NF_EXIT_NONE = 0,   /* has not ended yet */
  NF_EXIT_STOPPED,    /* we asked it to stop */
  NF_EXIT_POWEROFF,   /* the guest shut itself down */
  NF_EXIT_REBOOT,     /* the guest asked for a reset (qemu runs with -no-reboot) */
  NF_EXIT_PANIC,      /* guest kernel panic */
  NF_EXIT_WATCHDOG,   /* the guest stopped petting its watchdog */
  NF_EXIT_HUNG,       /* missed a health deadline; we killed it */
  NF_EXIT_CRASHED,    /* qemu died by a signal or a non-zero status */
  NF_EXIT_OOM_KILLED, /* the host's OOM killer took it */
  NF_EXIT_N_KINDS
} NfExitKind;

typedef struct {
  gboolean stop_requested;     /* we sent quit/SIGTERM/SIGKILL to stop it */
  gboolean hung;               /* we killed it for a missed health deadline */
  gboolean watchdog_event;     /* QMP WATCHDOG seen */
  gboolean panic_seen;         /* GUEST_PANICKED or a kernel panic on the console */
  const char *shutdown_reason; /* QMP SHUTDOWN "reason", or NULL */
  gboolean status_known;       /* FALSE for an adopted guest (not our child) */
  int wait_status;             /* as from waitpid, when known */
  gboolean oom_kill_counted;   /* the guest's cgroup counted an oom_kill */
} NfExitFacts;

NfExitKind nf_exit_kind_classify(const NfExitFacts *facts);
const char *nf_exit_kind_name(NfExitKind kind);
/* Whether a kind counts as a failure (for --restart on-failure). */
gboolean nf_exit_kind_is_failure(NfExitKind kind);
