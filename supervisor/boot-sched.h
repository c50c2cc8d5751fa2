/*
 * boot-sched.h: how a boot storm shares the host's cores between the guests
 * still booting and those already up (issue 17).
 *
 * Under TCG a boot is one busy vCPU thread, so the fleet is ready soonest
 * when every booting guest runs undisturbed on a core of its own. Two
 * levers, each one the fleet can switch off:
 *   - affinity: each booting guest is pinned to the core with the fewest
 *     booting guests pinned to it (its translation cache stays in that
 *     core's caches instead of following the scheduler's migrations), and
 *     unpinned once ready;
 *   - ready class: a guest that becomes ready while others still boot or
 *     wait is moved to a lower scheduling class (SCHED_IDLE, or SCHED_BATCH
 *     at nice 10), so its idle ticks never take a slice from a booting one;
 *     when the storm is over (nothing booting, nothing waiting) every guest
 *     so moved is put back to the supervisor's own class and nice; one that
 *     starves (waits to run, by the kernel's account) long enough to risk
 *     its health deadlines is put back earlier, until it has caught up.
 * Both apply to every thread of the qemu process (Linux schedules threads:
 * /proc/PID/task); threads qemu creates later inherit from their creator.
 * Putting a guest back needs CAP_SYS_NICE (root) for SCHED_IDLE and nice,
 * and telling a starving guest needs the kernel's schedstat: without
 * either, the ready class is left alone rather than lowered for good.
 */
#pragma once
#include <glib.h>
#include "supervisor/config.h"
#include "supervisor/vm.h"

typedef struct NfBootSched NfBootSched;

/* Pins to the CPUs the supervisor itself may run on. A lowered guest that
 * waited to run for most of the last `relief_ms` (0: never relieved) runs
 * normally until it no longer waits, so that starving it never costs it a
 * health deadline. Never NULL. */
NfBootSched *nf_boot_sched_new(NfReadySched ready_sched, NfBootAffinity affinity, guint relief_ms);
void nf_boot_sched_free(NfBootSched *sched);

/* Tells the scheduler that `vm` (qemu `pid`, 0 when none) entered
 * `new_state`; `storm` says whether any guest of the fleet is booting or
 * waiting to boot right now. Pins, unpins, lowers and raises accordingly.
 * Failures (a process that just exited) are ignored: these are speed-ups. */
void nf_boot_sched_update(NfBootSched *sched, NfVm *vm, GPid pid, NfVmState new_state,
                          gboolean storm);

/* Mechanism, for any process of ours (tests read the result back from
 * /proc/PID/task/TID/{status,sched}). */

/* Every thread of `pid` allowed only on `cpu` (-1: on every CPU the
 * supervisor itself may use). FALSE with `error` set when `pid` is gone or
 * the kernel refuses. */
gboolean nf_boot_sched_set_cpu(GPid pid, int cpu, GError **error);

/* Every thread of `pid` in `klass`: NF_READY_SCHED_NORMAL puts back
 * SCHED_OTHER at the supervisor's nice. FALSE with `error` as above. */
gboolean nf_boot_sched_set_class(GPid pid, NfReadySched klass, GError **error);

/* Whether this process may put a lowered guest back (root or CAP_SYS_NICE:
 * sched_setscheduler out of SCHED_IDLE and a lower nice need it). */
gboolean nf_boot_sched_can_raise(void);
