/*
 * limiter.c: the boot window (see limiter.h).
 */
#include "supervisor/limiter.h"

#include <stdio.h>

#define ADMIT_SLICE_US 20000 /* spawning per main loop iteration */
#define ADAPT_MS 250         /* how often idle CPU is sampled while guests wait */

struct NfLimiter {
  NfLimiterOps ops;
  gpointer user_data;
  GQueue waiting;
  guint batch;
  gboolean adaptive;
  guint bonus; /* admitted beyond the batch while CPU idles */
  guint cores;
  guint64 cpu_total, cpu_idle;
  guint admit_idle;
  guint adapt_timer;
  gint64 held_until;
  gboolean paused;
  gboolean closed;
};

static gboolean admit_cb(gpointer data);
static gboolean adapt_cb(gpointer data);
static double idle_cores_since_last(NfLimiter *l);

NfLimiter *nf_limiter_new(guint batch, gboolean adaptive, guint cores, const NfLimiterOps *ops,
                          gpointer user_data)
{
  NfLimiter *l = g_new0(NfLimiter, 1);
  l->ops = *ops;
  l->user_data = user_data;
  l->batch = MAX(batch, 1);
  l->adaptive = adaptive;
  l->cores = MAX(cores, 1);
  g_queue_init(&l->waiting);
  return l;
}

void nf_limiter_free(NfLimiter *l)
{
  if (l == NULL)
    return;
  if (l->admit_idle)
    g_source_remove(l->admit_idle);
  if (l->adapt_timer)
    g_source_remove(l->adapt_timer);
  g_queue_clear(&l->waiting);
  g_free(l);
}

void nf_limiter_push(NfLimiter *l, NfVm *vm)
{
  g_queue_push_tail(&l->waiting, vm);
  nf_limiter_kick(l);
}

void nf_limiter_remove(NfLimiter *l, NfVm *vm)
{
  g_queue_remove(&l->waiting, vm);
}

NfVm *nf_limiter_pop(NfLimiter *l)
{
  return g_queue_pop_head(&l->waiting);
}

void nf_limiter_close(NfLimiter *l)
{
  l->closed = TRUE;
}

void nf_limiter_hold_restarts(NfLimiter *l, gint64 until_us)
{
  l->held_until = until_us;
}

gboolean nf_limiter_restarts_held(NfLimiter *l)
{
  return l->held_until > g_get_monotonic_time();
}

void nf_limiter_pause(NfLimiter *l, gboolean paused)
{
  l->paused = paused;
  if (!paused)
    nf_limiter_kick(l);
}

gboolean nf_limiter_paused(NfLimiter *l)
{
  return l->paused;
}

guint nf_limiter_batch(NfLimiter *l)
{
  return l->batch;
}

guint nf_limiter_waiting(NfLimiter *l)
{
  return g_queue_get_length(&l->waiting);
}

void nf_limiter_kick(NfLimiter *l)
{
  if (l->closed || l->paused || g_queue_is_empty(&l->waiting))
    return;
  if (l->adaptive && l->adapt_timer == 0)
    l->adapt_timer = g_timeout_add(ADAPT_MS, adapt_cb, l);
  if (l->admit_idle == 0)
    l->admit_idle = g_idle_add_full(G_PRIORITY_DEFAULT, admit_cb, l, NULL);
}

static gboolean admit_cb(gpointer data)
{
  NfLimiter *l = data;
  gboolean held = nf_limiter_restarts_held(l);
  gint64 until = g_get_monotonic_time() + ADMIT_SLICE_US;
  GList *link = l->waiting.head;
  while (link && !l->closed && !l->paused && g_get_monotonic_time() < until &&
         l->ops.booting(l->user_data) < l->batch + l->bonus) {
    GList *next = link->next;
    NfVm *vm = link->data;
    if (!(held && nf_vm_is_restart(vm))) {
      g_queue_delete_link(&l->waiting, link);
      l->ops.start(vm, l->user_data);
      next = l->waiting.head; /* callbacks may have changed the queue */
    }
    link = next;
  }
  /* Out of time with more to do: go on next iteration. Otherwise a guest
   * leaving the booting stretch (or a new one queued) kicks again. */
  if (link && !l->closed && !l->paused && g_get_monotonic_time() >= until)
    return G_SOURCE_CONTINUE;
  l->admit_idle = 0;
  return G_SOURCE_REMOVE;
}

/* Host CPU idle, in cores, since the previous call (from /proc/stat). */
static double idle_cores_since_last(NfLimiter *l)
{
  g_autofree char *text = NULL;
  if (!g_file_get_contents("/proc/stat", &text, NULL, NULL))
    return 0;
  guint64 v[8] = {0};
  if (sscanf(text, "cpu %lu %lu %lu %lu %lu %lu %lu %lu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
             &v[6], &v[7]) < 5)
    return 0;
  guint64 total = 0;
  for (int i = 0; i < 8; i++)
    total += v[i];
  guint64 idle = v[3] + v[4];
  double r = 0;
  /* iowait may go backwards (proc(5)): no idle then, not 1.8e19 of it. */
  if (l->cpu_total && total > l->cpu_total && idle >= l->cpu_idle)
    r = (double)(idle - l->cpu_idle) / (double)(total - l->cpu_total) * l->cores;
  l->cpu_total = total;
  l->cpu_idle = idle;
  return r;
}

static gboolean adapt_cb(gpointer data)
{
  NfLimiter *l = data;
  if (g_queue_is_empty(&l->waiting) || l->closed || l->paused) {
    l->bonus = 0;
    l->adapt_timer = 0;
    l->cpu_total = 0;
    return G_SOURCE_REMOVE;
  }
  double idle = idle_cores_since_last(l);
  guint booting = l->ops.booting(l->user_data);
  /* A core left idle (qemu starting up, a guest between boot stages, a
   * hand-over gap) is worth one more guest; --batch is the floor. */
  if (idle >= 0.6 && booting >= l->batch + l->bonus && l->bonus < l->batch) {
    l->bonus++;
    nf_limiter_kick(l);
  } else if (idle < 0.1 && l->bonus > 0) {
    l->bonus--;
  }
  return G_SOURCE_CONTINUE;
}
