/*
 * boot-sched.c: booting guests pinned one per core, ready guests in a lower
 * scheduling class while a storm lasts (see boot-sched.h for why).
 *
 * Book-keeping is two tables keyed by the guest: the CPU each pinned guest
 * holds (with a count per CPU, so the next guest takes the least-used one)
 * and the guests lowered during the current storm (put back when it ends,
 * or forgotten when the guest's qemu goes away).
 *
 * A lowered guest can starve while the host is saturated, and a guest
 * kernel that cannot run misses its heartbeat and its QMP probes (seen at
 * 100 guests before relief: four killed as hung). So once a second relief
 * asks the kernel how long each lowered guest waited to run since the last
 * look: the run-queue wait (/proc/PID/task/TID/schedstat, second field) of
 * the thread that answers QMP (qemu's main one) and of the one that runs the
 * guest (the busiest other thread when it was lowered: the vCPU under TCG).
 * The kernel adds a wait to that count only once the thread gets to run,
 * so a starving guest reads as no wait for a look, then as seconds of it at
 * once: the looks are summed over windows of `relief_ms`. A guest that
 * waited for most of a window runs normally until a window in which it no
 * longer waits (it caught up), then is lowered again while the storm lasts.
 * An idle guest waits for nothing, so relief costs a lowered guest no
 * wakeups; it used to watch the guest's balloon stats, which had to come
 * every 5 s instead of 15 for that (~0.6 % of a 100-guest storm's CPU;
 * bench/README.md, ninth pass).
 */
#include "supervisor/boot-sched.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>

#define READY_NICE 10       /* NF_READY_SCHED_BATCH's nice */
#define RELIEF_TICK_MS 1000 /* how often lowered guests are looked at */
/* A window finds a guest starving when its two threads together waited to
 * run for at least this share of it. A guest put back to normal next to one
 * busy guest per core waits about half the time, so that reads as caught up. */
#define STARVING_NUM 3
#define STARVING_DEN 4

typedef struct {
  GPid pid;
  pid_t vcpu;               /* the busiest other thread when lowered; 0: none */
  guint64 waited_ns;        /* run-queue wait of both threads at the last look */
  gint64 window_start;      /* monotonic µs the current window began */
  guint64 window_waited_us; /* their wait the looks found since */
  gboolean raised;          /* put back for now, until a window finds it not starving */
} Lowered;

struct NfBootSched {
  NfReadySched ready_sched;
  NfBootAffinity affinity;
  int *cpus;     /* the CPUs we may use, in order */
  guint *pinned; /* booting guests pinned to cpus[i] */
  guint n_cpus;
  GHashTable *pin_of;  /* NfVm * -> index in cpus + 1 */
  GHashTable *lowered; /* NfVm * -> Lowered */
  gint64 relief_us;    /* 0: no relief (no deadline a starved guest could miss) */
  guint relief_timer;
};

typedef gboolean (*ThreadFunc)(pid_t tid, gpointer arg);

static gboolean for_each_thread(GPid pid, ThreadFunc fn, gpointer arg, GError **error);
static gboolean thread_set_cpu(pid_t tid, gpointer arg);
static gboolean thread_set_class(pid_t tid, gpointer arg);
static void allowed_cpus(cpu_set_t *set);
static void pin(NfBootSched *s, NfVm *vm, GPid pid);
static void unpin(NfBootSched *s, NfVm *vm, GPid pid);
static void raise_all(NfBootSched *s);
static void lower(NfBootSched *s, NfVm *vm, GPid pid);
static gboolean relief_cb(gpointer data);
static gboolean thread_schedstat(GPid pid, pid_t tid, guint64 *ran_ns, guint64 *waited_ns);
static pid_t busiest_other_thread(GPid pid);
static gboolean lowered_waited(const Lowered *l, guint64 *waited_ns);

NfBootSched *nf_boot_sched_new(NfReadySched ready_sched, NfBootAffinity affinity, guint relief_ms)
{
  NfBootSched *s = g_new0(NfBootSched, 1);
  /* Lowering a guest we could not put back would leave it starved on a
   * busy host long after the storm, and one whose wait we cannot read could
   * starve past its deadlines: then ready guests keep their class. */
  guint64 ran, waited;
  gboolean can_relieve = relief_ms == 0 || thread_schedstat(getpid(), getpid(), &ran, &waited);
  s->ready_sched = nf_boot_sched_can_raise() && can_relieve ? ready_sched : NF_READY_SCHED_NORMAL;
  s->affinity = affinity;
  cpu_set_t set;
  allowed_cpus(&set);
  s->cpus = g_new0(int, CPU_SETSIZE);
  s->pinned = g_new0(guint, CPU_SETSIZE);
  for (int c = 0; c < CPU_SETSIZE; c++)
    if (CPU_ISSET(c, &set))
      s->cpus[s->n_cpus++] = c;
  /* One CPU: nothing to choose, and pinning would only add system calls. */
  if (s->n_cpus < 2)
    s->affinity = NF_BOOT_AFFINITY_NONE;
  s->pin_of = g_hash_table_new(NULL, NULL);
  s->lowered = g_hash_table_new_full(NULL, NULL, NULL, g_free);
  s->relief_us = (gint64)relief_ms * 1000;
  return s;
}

void nf_boot_sched_free(NfBootSched *s)
{
  if (s == NULL)
    return;
  if (s->relief_timer)
    g_source_remove(s->relief_timer);
  g_hash_table_destroy(s->pin_of);
  g_hash_table_destroy(s->lowered);
  g_free(s->cpus);
  g_free(s->pinned);
  g_free(s);
}

void nf_boot_sched_update(NfBootSched *s, NfVm *vm, GPid pid, NfVmState new_state, gboolean storm)
{
  gboolean booting = new_state == NF_VM_STARTING || new_state == NF_VM_BOOTING;
  gboolean up = new_state == NF_VM_READY || new_state == NF_VM_UNHEALTHY;
  if (pid <= 0 || !(booting || up)) {
    /* No qemu (any more): forget it, and give its core back. */
    unpin(s, vm, 0);
    g_hash_table_remove(s->lowered, vm);
  } else if (booting) {
    /* A guest booting again in the same qemu (adopted, or reset) boots at
     * full speed like any other; an adopted one may have been lowered by
     * a supervisor that died in a storm, which this one's table does not
     * know: put back whatever the table says. */
    gboolean was_lowered = g_hash_table_remove(s->lowered, vm);
    if (was_lowered || s->ready_sched != NF_READY_SCHED_NORMAL)
      nf_boot_sched_set_class(pid, NF_READY_SCHED_NORMAL, NULL);
    if (s->affinity == NF_BOOT_AFFINITY_CORE && !g_hash_table_contains(s->pin_of, vm))
      pin(s, vm, pid);
  } else {
    unpin(s, vm, pid);
    if (new_state == NF_VM_READY && storm && s->ready_sched != NF_READY_SCHED_NORMAL &&
        !g_hash_table_contains(s->lowered, vm))
      lower(s, vm, pid);
  }
  if (!storm)
    raise_all(s);
}

/* The least-used CPU (the first on a tie): when the window hands a slot
 * over, that is the core the guest now ready has just left. */
static void pin(NfBootSched *s, NfVm *vm, GPid pid)
{
  guint best = 0;
  for (guint i = 1; i < s->n_cpus; i++)
    if (s->pinned[i] < s->pinned[best])
      best = i;
  if (!nf_boot_sched_set_cpu(pid, s->cpus[best], NULL))
    return;
  s->pinned[best]++;
  g_hash_table_insert(s->pin_of, vm, GUINT_TO_POINTER(best + 1));
}

/* Gives `vm`'s core back; with a `pid`, the process may run anywhere again. */
static void unpin(NfBootSched *s, NfVm *vm, GPid pid)
{
  guint slot = GPOINTER_TO_UINT(g_hash_table_lookup(s->pin_of, vm));
  if (slot == 0)
    return;
  g_hash_table_remove(s->pin_of, vm);
  s->pinned[slot - 1]--;
  if (pid > 0)
    nf_boot_sched_set_cpu(pid, -1, NULL);
}

static void lower(NfBootSched *s, NfVm *vm, GPid pid)
{
  if (!nf_boot_sched_set_class(pid, s->ready_sched, NULL))
    return;
  Lowered *l = g_new0(Lowered, 1);
  l->pid = pid;
  if (s->relief_us) {
    l->vcpu = busiest_other_thread(pid);
    l->window_start = g_get_monotonic_time();
    lowered_waited(l, &l->waited_ns);
  }
  g_hash_table_insert(s->lowered, vm, l);
  if (s->relief_us && s->relief_timer == 0)
    s->relief_timer = g_timeout_add(RELIEF_TICK_MS, relief_cb, s);
}

static void raise_all(NfBootSched *s)
{
  if (g_hash_table_size(s->lowered) == 0)
    return;
  GHashTableIter it;
  gpointer vm, value;
  g_hash_table_iter_init(&it, s->lowered);
  while (g_hash_table_iter_next(&it, &vm, &value)) {
    Lowered *l = value;
    /* Still the same qemu: a guest that exited left the table first. */
    if (!l->raised && nf_vm_pid(vm) == l->pid)
      nf_boot_sched_set_class(l->pid, NF_READY_SCHED_NORMAL, NULL);
    g_hash_table_iter_remove(&it);
  }
}

/* A lowered guest found starving over a window of relief_us runs normally
 * until a window finds it not starving; then it is lowered again (the storm
 * still lasts, or it would have left the table). */
static gboolean relief_cb(gpointer data)
{
  NfBootSched *s = data;
  if (g_hash_table_size(s->lowered) == 0) {
    s->relief_timer = 0;
    return G_SOURCE_REMOVE;
  }
  gint64 now = g_get_monotonic_time();
  GHashTableIter it;
  gpointer value;
  g_hash_table_iter_init(&it, s->lowered);
  while (g_hash_table_iter_next(&it, NULL, &value)) {
    Lowered *l = value;
    guint64 waited;
    if (!lowered_waited(l, &waited))
      continue; /* gone: its state change takes it off the table */
    l->window_waited_us += waited > l->waited_ns ? (waited - l->waited_ns) / 1000 : 0;
    l->waited_ns = waited;
    gint64 span = now - l->window_start;
    if (span < s->relief_us)
      continue;
    gboolean starving = l->window_waited_us * STARVING_DEN >= (guint64)span * STARVING_NUM;
    l->window_start = now;
    l->window_waited_us = 0;
    if (starving && !l->raised && nf_boot_sched_set_class(l->pid, NF_READY_SCHED_NORMAL, NULL))
      l->raised = TRUE;
    else if (!starving && l->raised && nf_boot_sched_set_class(l->pid, s->ready_sched, NULL))
      l->raised = FALSE;
  }
  return G_SOURCE_CONTINUE;
}

/* The run-queue wait of the lowered guest's two threads, summed. */
static gboolean lowered_waited(const Lowered *l, guint64 *waited_ns)
{
  guint64 ran, main_waited, vcpu_waited = 0;
  if (!thread_schedstat(l->pid, l->pid, &ran, &main_waited))
    return FALSE;
  if (l->vcpu > 0 && !thread_schedstat(l->pid, l->vcpu, &ran, &vcpu_waited))
    vcpu_waited = 0; /* the thread ended: its wait no longer counts */
  *waited_ns = main_waited + vcpu_waited;
  return TRUE;
}

/* A thread's CPU time and run-queue wait so far (ns), from the kernel's
 * schedstat: "<ran> <waited> <timeslices>". */
static gboolean thread_schedstat(GPid pid, pid_t tid, guint64 *ran_ns, guint64 *waited_ns)
{
  char path[64], buf[96];
  snprintf(path, sizeof path, "/proc/%d/task/%d/schedstat", (int)pid, (int)tid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return FALSE;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0)
    return FALSE;
  buf[n] = '\0';
  return sscanf(buf, "%" SCNu64 " %" SCNu64, ran_ns, waited_ns) == 2;
}

typedef struct {
  GPid pid;
  pid_t best;
  guint64 best_ran;
} Busiest;

static gboolean thread_busier(pid_t tid, gpointer arg)
{
  Busiest *b = arg;
  guint64 ran, waited;
  if (tid != b->pid && thread_schedstat(b->pid, tid, &ran, &waited) &&
      (b->best == 0 || ran > b->best_ran)) {
    b->best = tid;
    b->best_ran = ran;
  }
  return TRUE;
}

/* The thread of `pid`, other than its main one, that ran the most: under
 * TCG the vCPU, which has just run the whole boot. 0 when there is none. */
static pid_t busiest_other_thread(GPid pid)
{
  Busiest b = {pid, 0, 0};
  for_each_thread(pid, thread_busier, &b, NULL);
  return b.best;
}

gboolean nf_boot_sched_set_cpu(GPid pid, int cpu, GError **error)
{
  cpu_set_t all;
  allowed_cpus(&all); /* read before anything of ours is pinned */
  return for_each_thread(pid, thread_set_cpu, &cpu, error);
}

gboolean nf_boot_sched_set_class(GPid pid, NfReadySched klass, GError **error)
{
  return for_each_thread(pid, thread_set_class, &klass, error);
}

gboolean nf_boot_sched_can_raise(void)
{
  if (geteuid() == 0)
    return TRUE;
  /* Without CAP_SYS_NICE, RLIMIT_NICE says how low a nice we may go back
   * to (20 - rlim); leaving SCHED_IDLE is checked the same way. */
  struct rlimit rl;
  int nice_now = getpriority(PRIO_PROCESS, 0);
  return getrlimit(RLIMIT_NICE, &rl) == 0 &&
         (rl.rlim_cur == RLIM_INFINITY || (rlim_t)(20 - nice_now) <= rl.rlim_cur);
}

/* `fn` on every thread of `pid`. A thread that ended meanwhile is skipped;
 * the process itself gone, or the kernel refusing, fails. */
static gboolean for_each_thread(GPid pid, ThreadFunc fn, gpointer arg, GError **error)
{
  g_autofree char *dir_path = g_strdup_printf("/proc/%d/task", (int)pid);
  DIR *dir = opendir(dir_path);
  if (dir == NULL) {
    int e = errno;
    g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(e), "process %d: %s", (int)pid,
                g_strerror(e));
    return FALSE;
  }
  guint done = 0;
  int failed = 0;
  struct dirent *d;
  while ((d = readdir(dir)) != NULL) {
    char *end;
    long tid = strtol(d->d_name, &end, 10);
    if (*end != '\0' || tid <= 0)
      continue;
    if (fn((pid_t)tid, arg))
      done++;
    else if (errno != ESRCH)
      failed = errno;
  }
  closedir(dir);
  if (failed || done == 0) {
    int e = failed ? failed : ESRCH;
    g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(e), "process %d: %s", (int)pid,
                g_strerror(e));
    return FALSE;
  }
  return TRUE;
}

static gboolean thread_set_cpu(pid_t tid, gpointer arg)
{
  int cpu = *(const int *)arg;
  cpu_set_t set;
  if (cpu < 0) {
    allowed_cpus(&set);
  } else {
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
  }
  return sched_setaffinity(tid, sizeof set, &set) == 0;
}

static gboolean thread_set_class(pid_t tid, gpointer arg)
{
  NfReadySched klass = *(const NfReadySched *)arg;
  struct sched_param param = {0};
  int policy = klass == NF_READY_SCHED_IDLE    ? SCHED_IDLE
               : klass == NF_READY_SCHED_BATCH ? SCHED_BATCH
                                               : SCHED_OTHER;
  /* Back to normal: the class first, then the nice (both ours). */
  errno = 0;
  int nice = klass == NF_READY_SCHED_BATCH ? READY_NICE : getpriority(PRIO_PROCESS, 0);
  if (sched_setscheduler(tid, policy, &param) != 0)
    return FALSE;
  if (klass != NF_READY_SCHED_IDLE && setpriority(PRIO_PROCESS, (id_t)tid, nice) != 0)
    return FALSE;
  return TRUE;
}

/* The CPUs the supervisor could run on when first asked (all online ones
 * if that cannot be read). Kept, not read again: "every CPU" must not shrink
 * to wherever the asking thread happens to be pinned. */
static void allowed_cpus(cpu_set_t *set)
{
  static cpu_set_t allowed;
  static gsize once = 0;
  if (g_once_init_enter(&once)) {
    CPU_ZERO(&allowed);
    if (sched_getaffinity(0, sizeof allowed, &allowed) != 0 || CPU_COUNT(&allowed) == 0) {
      long n = sysconf(_SC_NPROCESSORS_ONLN);
      CPU_ZERO(&allowed);
      for (long c = 0; c < MAX(n, 1) && c < CPU_SETSIZE; c++)
        CPU_SET(c, &allowed);
    }
    g_once_init_leave(&once, 1);
  }
  *set = allowed;
}
