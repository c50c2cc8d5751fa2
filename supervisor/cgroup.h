/*
 * cgroup.h: a memory cgroup per guest, so the supervisor can tell an OOM kill
 * by the host from any other SIGKILL (the cgroup counts oom_kill), and so a
 * guest can be given a hard memory cap (--memory-limit). Works with cgroup v2
 * (memory.events) and with the v1 memory controller (memory.oom_control);
 * where neither is usable (no permission, no controller) guests simply run
 * without one and the caller is told once.
 */
#pragma once
#include <glib.h>

typedef struct NfCgroup NfCgroup;

/* `fleet` below is the fleet's cgroup name (nf_paths_cgroup_name).
 * Creates <our cgroup>/nervesfleet-<fleet>/<guest> with memory limit
 * `limit_mib` (0: none). NULL with `error` when cgroups are not usable. */
NfCgroup *nf_cgroup_new(const char *fleet, const char *guest, guint64 limit_mib, GError **error);
/* Moves `pid` into the cgroup. */
gboolean nf_cgroup_add_pid(NfCgroup *cg, GPid pid, GError **error);
/* How many times the kernel's OOM killer killed a process in this cgroup. */
guint64 nf_cgroup_oom_kills(NfCgroup *cg);
/* Removes the cgroup (its processes must be gone). The fleet's parent stays
 * until nf_cgroup_sweep. */
void nf_cgroup_free(NfCgroup *cg);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(NfCgroup, nf_cgroup_free)

/* Removes the fleet's guest cgroups that hold no process any more (left by a
 * supervisor that died), and the fleet's parent cgroup when it is empty.
 * Cgroups with live guests are kept (the kernel refuses to remove them). */
void nf_cgroup_sweep(const char *fleet);

/* Frees the handle but leaves the cgroup (a detached guest still lives in it). */
void nf_cgroup_forget(NfCgroup *cg);
