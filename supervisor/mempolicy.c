/*
 * mempolicy.c: balloon targets from guest stats and admission back-pressure
 * from host memory pressure (see mempolicy.h for the contract).
 *
 * Why the numbers look the way they do: a guest's "available" memory is its
 * slack, and a balloon change moves it one for one (inflating takes free and
 * reclaimable pages first), so the policy steers each guest's available
 * memory toward `headroom` rather than guessing a working set. The band
 * [headroom/2, headroom*3/2] is where nothing happens: a guest shrunk to the
 * centre stays put while its use wobbles by less than half the headroom.
 * Why guard (no shrinking while the host has room) is the default, measured
 * on the TCG sim guest (4 guests, 120 s idle): auto shrank each balloon from
 * 128 to 76 MiB but qemu's RSS only from 159 to 153 MiB and PSS not at all
 * (112 MiB either way), because free page reporting already hands free pages
 * back; and a guest shrunk to 80 MiB panicked ("System is deadlocked on
 * memory") on a 60 MiB burst that the full-size guest survives, since the
 * policy reacts at the health probe's pace (10 s, the default then), not at the
 * burst's (3 runs of 3). With the balloon's deflate-on-oom=on, which lets the
 * guest take pages back itself, it survives (3 of 3; on by default since, and
 * test-mempolicy does it). What the policy adds that nothing else does is
 * the back-pressure: a fleet that would push the host into OOM stops booting guests instead.
 */
#include "supervisor/mempolicy.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "qmp/qmp.h"
#include "supervisor/vm.h"

#define SETTLED_SLACK NF_MIB /* actual this close to target: the change landed */
#define STUCK_SAMPLES 4      /* fresh samples after which an unlanded target is let go */

struct NfMemPolicy {
  NfMemPolicyParams params;
  char *proc_dir;
  GPtrArray *vms; /* borrowed: the fleet's NfVm* */
  NfLimiter *limiter;
  NfMemPolicyNotice notice;
  gpointer user_data;
  guint timer;
  gboolean admitting;
  gboolean host_error_told;
  char *pending_notice; /* to announce at the next tick */
  GHashTable *guests;   /* vm id -> Tracked */
  guint64 generation;   /* ticks, to drop guests no longer in the fleet */
  /* /proc's meminfo and pressure/memory, kept open (read_host); -1: not open */
  int meminfo_fd, psi_fd;
};

typedef struct {
  NfMemGuest g;
  gint64 started_at; /* the run this state belongs to */
  guint64 seen;      /* generation last seen */
} Tracked;

static gboolean tick_cb(gpointer data);
static void check_host(NfMemPolicy *p);
static void announce(NfMemPolicy *p);
static gboolean read_host(NfMemPolicy *p, NfMemHost *host, GError **error);
static void step_guest(NfMemPolicy *p, NfVm *vm, gboolean squeeze);
static gboolean parse_meminfo(const char *text, NfMemHost *host);
static void parse_psi(const char *text, NfMemHost *host);
static char *host_summary(const NfMemPolicyParams *params, const NfMemHost *host);

void nf_mempolicy_params_default(NfMemPolicyParams *params, guint64 memory_mib)
{
  guint64 ram = memory_mib * NF_MIB;
  *params = (NfMemPolicyParams){
      .memory = ram,
      .headroom = MAX(24 * NF_MIB, ram / 4),
      .shrink_step = 16 * NF_MIB,
      .grow_step = MAX(16 * NF_MIB, ram / 2),
      .floor = MAX(32 * NF_MIB, ram / 4),
      .hold_after_grow = 3,
      .host_low = 0.10,
      .host_ok = 0.15,
      .psi_high = 10.0,
      .psi_ok = 2.0,
      .psi_full_high = 5.0,
      .tick_ms = 2000,
      .proc_dir = "/proc",
      .shrink_idle = TRUE,
  };
}

void nf_mempolicy_params_from_config(NfMemPolicyParams *params, const NfFleetConfig *config)
{
  nf_mempolicy_params_default(params, config->memory_mib);
  if (config->mem_tick_ms)
    params->tick_ms = config->mem_tick_ms;
  if (config->mem_proc_dir)
    params->proc_dir = config->mem_proc_dir;
  params->shrink_idle = config->balloon_policy == NF_BALLOON_POLICY_AUTO;
}

guint64 nf_mempolicy_guest_step(const NfMemPolicyParams *pp, gboolean squeeze, NfMemGuest *g)
{
  if (g->seq == 0 || g->seq == g->last_seq || g->max == 0)
    return 0; /* no stats, or nothing new since the last step */
  g->last_seq = g->seq;
  if (g->hold > 0)
    g->hold--;
  guint64 current = g->target ? g->target : g->actual;
  guint64 headroom = squeeze ? pp->headroom / 2 : pp->headroom;
  guint64 low = headroom / 2, high = headroom + headroom / 2;
  guint64 floor = MIN(pp->floor, g->max);
  guint64 next = current;

  /* Shrinking starts above the band and goes on down to its centre, so a
   * guest ends in the middle of the band, not on its edge. In guard mode
   * only a host under pressure takes memory from guests. */
  if (!pp->shrink_idle && !squeeze)
    g->shrinking = FALSE;
  else if (g->available > high)
    g->shrinking = TRUE;
  else if (g->available <= headroom)
    g->shrinking = FALSE;

  if (g->available < low && current < g->max) {
    /* The guest needs memory: give it back now, whatever is in flight. */
    guint64 want = MIN(headroom - g->available, pp->grow_step);
    /* From what the guest has, should it have taken more back itself
     * (deflate-on-oom) than the target says. */
    next = MIN(g->max, MAX(current, g->actual) + want);
    /* A guest whose load comes and goes must not be chased: each grow soon
     * after a shrink doubles the wait before the next shrink. */
    guint base = MAX(pp->hold_after_grow, 1);
    if (g->hold_len == 0 || g->seq_at_shrink == 0 || g->seq - g->seq_at_shrink > 2 * g->hold_len)
      g->hold_len = base;
    else
      g->hold_len = MIN(g->hold_len * 2, base * 64);
    g->hold = g->hold_len;
    g->shrinking = FALSE;
  } else if (g->shrinking && current > floor && g->hold == 0) {
    /* Idle slack: take some, once the previous change has landed and a
     * sample taken after it shows where the guest now stands. */
    gboolean landed = g->actual + SETTLED_SLACK >= current && g->actual <= current + SETTLED_SLACK;
    if (g->target && g->seq < g->seq_at_change + 2)
      return 0;
    if (!landed) {
      /* A balloon that stays off its target (the guest deflated it on OOM,
       * or could not give that much): go on from where it is. */
      if (g->seq < g->seq_at_change + STUCK_SAMPLES)
        return 0;
      current = g->actual;
    }
    guint64 step = squeeze ? pp->shrink_step * 2 : pp->shrink_step;
    guint64 take = MIN(g->available - headroom, step);
    next = current > floor + take ? current - take : floor;
    g->seq_at_shrink = g->seq;
  }
  if (next == current)
    return 0;
  g->target = next;
  g->seq_at_change = g->seq;
  return next;
}

gboolean nf_mempolicy_host_admit(const NfMemPolicyParams *pp, gboolean admitting,
                                 const NfMemHost *h)
{
  if (h->mem_total == 0)
    return admitting; /* nothing known: no change */
  double avail = (double)h->mem_available / (double)h->mem_total;
  if (admitting)
    return !(avail < pp->host_low || h->psi_some10 >= pp->psi_high ||
             h->psi_full10 >= pp->psi_full_high);
  return avail >= pp->host_ok && h->psi_some10 < pp->psi_ok && h->psi_full10 < pp->psi_full_high;
}

static gboolean parse_meminfo(const char *text, NfMemHost *host)
{
  gboolean total = FALSE, avail = FALSE;
  for (const char *line = text; line && *line;
       line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
    unsigned long long kib;
    if (sscanf(line, "MemTotal: %llu kB", &kib) == 1) {
      host->mem_total = kib * 1024;
      total = TRUE;
    } else if (sscanf(line, "MemAvailable: %llu kB", &kib) == 1) {
      host->mem_available = kib * 1024;
      avail = TRUE;
    }
    if (total && avail)
      break; /* the first and third of ~55 lines */
  }
  return total && avail && host->mem_total > 0;
}

/* "some avg10=0.00 avg60=... total=...\nfull avg10=0.00 ..." */
static void parse_psi(const char *text, NfMemHost *host)
{
  const char *some = strstr(text, "some avg10=");
  const char *full = strstr(text, "full avg10=");
  if (some)
    host->psi_some10 = g_ascii_strtod(some + strlen("some avg10="), NULL);
  if (full)
    host->psi_full10 = g_ascii_strtod(full + strlen("full avg10="), NULL);
}

/* The host from the texts of meminfo and pressure/memory (NULL: no PSI);
 * FALSE when meminfo lacks MemTotal/MemAvailable. */
static gboolean parse_host(const char *meminfo, const char *psi, NfMemHost *host)
{
  NfMemHost h = {.psi_some10 = -1, .psi_full10 = -1};
  if (!parse_meminfo(meminfo, &h))
    return FALSE;
  if (psi)
    parse_psi(psi, &h);
  *host = h;
  return TRUE;
}

gboolean nf_mempolicy_read_host(const char *proc_dir, NfMemHost *host, GError **error)
{
  g_autofree char *meminfo = g_build_filename(proc_dir, "meminfo", NULL);
  g_autofree char *pressure = g_build_filename(proc_dir, "pressure", "memory", NULL);
  g_autofree char *text = NULL, *psi = NULL;
  if (!g_file_get_contents(meminfo, &text, NULL, error))
    return FALSE;
  g_file_get_contents(pressure, &psi, NULL, NULL);
  if (!parse_host(text, psi, host)) {
    g_set_error(error, G_FILE_ERROR, G_FILE_ERROR_INVAL, "%s has no MemTotal/MemAvailable lines",
                meminfo);
    return FALSE;
  }
  return TRUE;
}

static char *host_summary(const NfMemPolicyParams *pp, const NfMemHost *h)
{
  GString *s = g_string_new(NULL);
  g_string_printf(
      s, "host MemAvailable %" G_GUINT64_FORMAT " MiB (%.0f%% of %" G_GUINT64_FORMAT " MiB)",
      h->mem_available / NF_MIB, 100.0 * (double)h->mem_available / (double)h->mem_total,
      h->mem_total / NF_MIB);
  if (h->psi_some10 >= 0)
    g_string_append_printf(s, ", memory PSI some %.1f%% full %.1f%%", h->psi_some10, h->psi_full10);
  return g_string_free(s, FALSE);
}

NfMemPolicy *nf_mempolicy_new(const NfMemPolicyParams *params, GPtrArray *vms, NfLimiter *limiter,
                              NfMemPolicyNotice notice, gpointer user_data)
{
  NfMemPolicy *p = g_new0(NfMemPolicy, 1);
  p->params = *params;
  p->proc_dir = g_strdup(params->proc_dir ? params->proc_dir : "/proc");
  p->params.proc_dir = p->proc_dir;
  p->vms = vms;
  p->limiter = limiter;
  p->notice = notice;
  p->user_data = user_data;
  p->admitting = TRUE;
  p->guests = g_hash_table_new_full(NULL, NULL, NULL, g_free);
  p->meminfo_fd = p->psi_fd = -1;
  p->timer = g_timeout_add(MAX(params->tick_ms, 10), tick_cb, p);
  /* A host already short of memory must not see a first boot storm: judge
   * it now (the notice waits for the first tick, when the fleet exists). */
  check_host(p);
  return p;
}

void nf_mempolicy_free(NfMemPolicy *p)
{
  if (p == NULL)
    return;
  g_source_remove(p->timer);
  if (!p->admitting && p->limiter)
    nf_limiter_pause(p->limiter, FALSE);
  g_hash_table_unref(p->guests);
  if (p->meminfo_fd >= 0)
    close(p->meminfo_fd);
  if (p->psi_fd >= 0)
    close(p->psi_fd);
  g_free(p->pending_notice);
  g_free(p->proc_dir);
  g_free(p);
}

gboolean nf_mempolicy_admitting(const NfMemPolicy *p)
{
  return p->admitting;
}

static gboolean tick_cb(gpointer data)
{
  nf_mempolicy_tick(data);
  return G_SOURCE_CONTINUE;
}

void nf_mempolicy_tick(NfMemPolicy *p)
{
  announce(p); /* what nf_mempolicy_new found */
  check_host(p);
  announce(p);

  p->generation++;
  for (guint i = 0; i < p->vms->len; i++)
    step_guest(p, g_ptr_array_index(p->vms, i), !p->admitting);
  /* Forget guests no longer in the fleet (scaled away). */
  GHashTableIter it;
  gpointer value;
  g_hash_table_iter_init(&it, p->guests);
  while (g_hash_table_iter_next(&it, NULL, &value))
    if (((Tracked *)value)->seen != p->generation)
      g_hash_table_iter_remove(&it);
}

static void announce(NfMemPolicy *p)
{
  g_autofree char *msg = g_steal_pointer(&p->pending_notice);
  if (msg && p->notice)
    p->notice(msg, p->user_data);
}

/* Reads the host and pauses or resumes admission; a change (or a host that
 * cannot be read, once) leaves a message in pending_notice. */
static void check_host(NfMemPolicy *p)
{
  NfMemHost host;
  g_autoptr(GError) error = NULL;
  if (read_host(p, &host, &error)) {
    p->host_error_told = FALSE;
    gboolean admit = nf_mempolicy_host_admit(&p->params, p->admitting, &host);
    if (admit != p->admitting) {
      p->admitting = admit;
      nf_limiter_pause(p->limiter, !admit);
      g_autofree char *why = host_summary(&p->params, &host);
      g_free(p->pending_notice);
      p->pending_notice =
          admit ? g_strdup_printf("admission resumed: %s", why)
                : g_strdup_printf("admission paused: %s; new guests wait and idle guests are "
                                  "squeezed until the host recovers",
                                  why);
    }
  } else if (!p->host_error_told) {
    /* Once, not every tick: the policy keeps the last admission state. */
    p->host_error_told = TRUE;
    g_free(p->pending_notice);
    p->pending_notice =
        g_strdup_printf("memory policy cannot read host memory: %s", error->message);
  }
}

/* A procfs file read afresh from offset 0 into `buf` (NUL-terminated);
 * FALSE for fd -1 or nothing read. */
static gboolean read_whole(int fd, char *buf, gsize size)
{
  ssize_t n = fd >= 0 ? pread(fd, buf, size - 1, 0) : -1;
  if (n <= 0)
    return FALSE;
  buf[n] = '\0';
  return TRUE;
}

/* procfs makes these files afresh at every read from offset 0 and never
 * replaces them, so they are opened once and read with one pread a tick.
 * Read every 2 s, they were ~10 % of an idle 1,000-guest supervisor's CPU
 * (side by side 0.232 → 0.208 % of a core without the read; issue 17), and
 * the open and close most of it: cold, open+read+close of meminfo took
 * 120-270 us here, a pread 45-65. Any other proc_dir is a test's, whose
 * files are replaced between ticks: it is read by path. */
static gboolean read_host(NfMemPolicy *p, NfMemHost *host, GError **error)
{
  if (strcmp(p->proc_dir, "/proc") != 0)
    return nf_mempolicy_read_host(p->proc_dir, host, error);
  if (p->meminfo_fd < 0) {
    p->meminfo_fd = open("/proc/meminfo", O_RDONLY | O_CLOEXEC);
    if (p->meminfo_fd < 0)
      return nf_mempolicy_read_host(p->proc_dir, host, error);       /* says why */
    p->psi_fd = open("/proc/pressure/memory", O_RDONLY | O_CLOEXEC); /* -1: no PSI */
  }
  char mem[8192], psi[512];
  if (read_whole(p->meminfo_fd, mem, sizeof(mem)) &&
      parse_host(mem, read_whole(p->psi_fd, psi, sizeof(psi)) ? psi : NULL, host))
    return TRUE;
  return nf_mempolicy_read_host(p->proc_dir, host, error); /* says why */
}

static void step_guest(NfMemPolicy *p, NfVm *vm, gboolean squeeze)
{
  gpointer key = GUINT_TO_POINTER(nf_vm_id(vm));
  Tracked *t = g_hash_table_lookup(p->guests, key);
  /* In guard mode with the host admitting, a guest whose balloon gives it
   * all its memory has nothing to steer (nf_mempolicy_guest_step could only
   * grow it): it gets no entry until pressure or a lowered balloon. Most
   * fleets never see either, and an entry for every guest was ~130 bytes
   * each and a hash walk every tick (issue 17). */
  if (t == NULL && !squeeze && !p->params.shrink_idle &&
      nf_vm_balloon_actual(vm) >= p->params.memory)
    return;
  if (t == NULL) {
    t = g_new0(Tracked, 1);
    g_hash_table_insert(p->guests, key, t);
  }
  t->seen = p->generation;
  if (t->started_at != nf_vm_started_at(vm)) {
    /* A new run of this guest: its balloon starts over at --memory. */
    *t = (Tracked){.started_at = nf_vm_started_at(vm), .seen = p->generation};
  }
  NfQmp *qmp = nf_vm_qmp(vm);
  if (nf_vm_state(vm) != NF_VM_READY || qmp == NULL || nf_vm_balloon_manual(vm))
    return;
  NfVmGuestMem mem;
  nf_vm_guest_mem(vm, &mem);
  if (mem.available == 0)
    return;
  t->g.max = p->params.memory;
  t->g.actual = nf_vm_balloon_actual(vm);
  t->g.available = mem.available;
  t->g.seq = mem.seq;
  guint64 target = nf_mempolicy_guest_step(&p->params, squeeze, &t->g);
  if (target)
    nf_qmp_balloon(qmp, target, 0, NULL, NULL);
}
