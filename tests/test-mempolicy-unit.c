/*
 * test-mempolicy-unit.c: the memory policy's arithmetic on synthetic guests
 * and a synthetic host, without a VM. Guards: an idle guest shrinks in
 * bounded steps toward its working set plus headroom and stops there; a
 * guest that allocates gets memory back at once; a wobbling guest does not
 * make the balloon oscillate over many ticks; guard mode shrinks only under
 * host pressure; the host back-pressure turns
 * on and off at its thresholds with hysteresis; meminfo/PSI parsing; and
 * the boot window (limiter.c) really stops admitting while the (fake) host
 * is under pressure and resumes after, with a notice each way.
 */
#include <string.h>
#include <glib/gstdio.h>

#include "supervisor/limiter.h"
#include "supervisor/mempolicy.h"
#include "tests/lib/nf-test.h"

#define MIB NF_MIB

/* A guest as the policy sees it: RAM `max`, `reserved` that the kernel never
 * counts as available, `used` by its programs. The balloon lands on the
 * target by the next sample; each tick is one fresh stats report. */
typedef struct {
  NfMemGuest g;
  guint64 reserved, used;
  guint changes, grows, shrinks;
  guint64 biggest_shrink;
} SimGuest;

static void sim_init(SimGuest *s, const NfMemPolicyParams *p, guint64 used)
{
  *s = (SimGuest){.reserved = 14 * MIB, .used = used};
  s->g.max = p->memory;
  s->g.actual = p->memory;
}

/* One tick: the guest reports, the policy steps, the balloon moves. */
static void sim_tick(SimGuest *s, const NfMemPolicyParams *p, gboolean squeeze)
{
  guint64 taken = s->reserved + s->used;
  s->g.available = s->g.actual > taken ? s->g.actual - taken : 0;
  s->g.seq++;
  guint64 before = s->g.target ? s->g.target : s->g.actual;
  guint64 t = nf_mempolicy_guest_step(p, squeeze, &s->g);
  if (t) {
    s->changes++;
    if (t > before)
      s->grows++;
    else {
      s->shrinks++;
      s->biggest_shrink = MAX(s->biggest_shrink, before - t);
    }
    g_assert_cmpuint(t, <=, p->memory);
    g_assert_cmpuint(t, >=, p->floor);
    s->g.actual = t;
  }
}

static guint64 sim_available(const SimGuest *s)
{
  guint64 taken = s->reserved + s->used;
  return s->g.actual > taken ? s->g.actual - taken : 0;
}

static void test_shrinks_idle_in_bounded_steps(void)
{
  NfMemPolicyParams p;
  nf_mempolicy_params_default(&p, 128);
  SimGuest s;
  sim_init(&s, &p, 11 * MIB);
  for (int i = 0; i < 200; i++)
    sim_tick(&s, &p, FALSE);
  /* Shrunk, in steps no bigger than the bound, and left inside the band. */
  g_assert_cmpuint(s.g.actual, <, 128 * MIB - 32 * MIB);
  g_assert_cmpuint(s.shrinks, >=, 2);
  g_assert_cmpuint(s.grows, ==, 0);
  g_assert_cmpuint(s.biggest_shrink, <=, p.shrink_step);
  g_assert_cmpuint(sim_available(&s), >=, p.headroom / 2);
  g_assert_cmpuint(sim_available(&s), <=, p.headroom + p.headroom / 2);
  /* Converged: further idle ticks change nothing. */
  guint changes = s.changes;
  for (int i = 0; i < 200; i++)
    sim_tick(&s, &p, FALSE);
  g_assert_cmpuint(s.changes, ==, changes);

  /* Under host pressure it is squeezed further, still within its floor. */
  guint64 relaxed = s.g.actual;
  for (int i = 0; i < 200; i++)
    sim_tick(&s, &p, TRUE);
  g_assert_cmpuint(s.g.actual, <, relaxed);
  g_assert_cmpuint(s.biggest_shrink, <=, 2 * p.shrink_step);
  g_assert_cmpuint(sim_available(&s), >=, p.headroom / 4);
}

static void test_grows_on_need(void)
{
  NfMemPolicyParams p;
  nf_mempolicy_params_default(&p, 128);
  SimGuest s;
  sim_init(&s, &p, 11 * MIB);
  for (int i = 0; i < 200; i++)
    sim_tick(&s, &p, FALSE);
  guint64 shrunk = s.g.actual;
  /* The guest allocates 40 MiB: the next sample shows the need and the very
   * next step gives memory back. */
  s.used += 40 * MIB;
  guint grows = s.grows;
  sim_tick(&s, &p, FALSE);
  g_assert_cmpuint(s.grows, ==, grows + 1);
  g_assert_cmpuint(s.g.actual, >, shrunk);
  for (int i = 0; i < 20; i++)
    sim_tick(&s, &p, FALSE);
  g_assert_cmpuint(sim_available(&s), >=, p.headroom / 2);
  /* A guest that needs more than it has is given all of it, no more. */
  s.used = 200 * MIB;
  for (int i = 0; i < 20; i++)
    sim_tick(&s, &p, FALSE);
  g_assert_cmpuint(s.g.actual, ==, p.memory);
}

static void test_no_oscillation(void)
{
  NfMemPolicyParams p;
  nf_mempolicy_params_default(&p, 128);
  SimGuest s;
  sim_init(&s, &p, 20 * MIB);
  for (int i = 0; i < 200; i++)
    sim_tick(&s, &p, FALSE);
  /* Use wobbling by up to a quarter of the headroom either way: no balloon
   * command at all over a thousand ticks. */
  guint changes = s.changes;
  GRand *r = g_rand_new_with_seed(12);
  for (int i = 0; i < 1000; i++) {
    s.used = 20 * MIB - p.headroom / 4 + (guint64)g_rand_int_range(r, 0, (gint32)(p.headroom / 2));
    sim_tick(&s, &p, FALSE);
  }
  g_assert_cmpuint(s.changes, ==, changes);

  /* A guest that allocates and frees 30 MiB every few ticks: each grow is
   * followed by at least hold_after_grow samples without a shrink, a wait
   * that doubles while shrinks keep being undone, so the balloon moves far
   * less often than the load flips. */
  guint flips = 0, last_change_tick = 0, min_gap = G_MAXUINT;
  changes = s.changes;
  guint grows = s.grows;
  for (guint i = 1; i <= 1000; i++) {
    if (i % 3 == 0) {
      s.used = (s.used == 20 * MIB) ? 50 * MIB : 20 * MIB;
      flips++;
    }
    guint before_grows = s.grows, before_shrinks = s.shrinks;
    sim_tick(&s, &p, FALSE);
    if (s.shrinks != before_shrinks && last_change_tick)
      min_gap = MIN(min_gap, i - last_change_tick);
    if (s.grows != before_grows)
      last_change_tick = i;
  }
  g_rand_free(r);
  g_assert_cmpuint(s.grows, >, grows); /* it did respond to need */
  g_assert_cmpuint(s.changes - changes, <, flips / 8);
  g_assert_cmpuint(min_gap, >=, p.hold_after_grow);
}

/* guard: nothing is taken from an idle guest while the host has room; a
 * squeeze takes it; need still gets it back. */
static void test_guard_shrinks_only_under_pressure(void)
{
  NfMemPolicyParams p;
  nf_mempolicy_params_default(&p, 128);
  p.shrink_idle = FALSE;
  SimGuest s;
  sim_init(&s, &p, 11 * MIB);
  for (int i = 0; i < 200; i++)
    sim_tick(&s, &p, FALSE);
  g_assert_cmpuint(s.changes, ==, 0);
  g_assert_cmpuint(s.g.actual, ==, p.memory);
  for (int i = 0; i < 200; i++)
    sim_tick(&s, &p, TRUE);
  g_assert_cmpuint(s.g.actual, <, p.memory - 32 * MIB);
  g_assert_cmpuint(sim_available(&s), <=, (p.headroom / 2) * 3 / 2);
  /* Pressure over: the guest keeps its size until it needs more. */
  guint64 squeezed = s.g.actual;
  for (int i = 0; i < 50; i++)
    sim_tick(&s, &p, FALSE);
  g_assert_cmpuint(s.g.actual, ==, squeezed);
  s.used += 30 * MIB;
  sim_tick(&s, &p, FALSE);
  g_assert_cmpuint(s.g.actual, >, squeezed);
}

/* A guest that deflated its balloon itself (deflate-on-oom) grows from what
 * it has, never back down to the policy's older, smaller target, and later
 * shrinks from there too. */
static void test_grow_from_actual(void)
{
  NfMemPolicyParams p;
  nf_mempolicy_params_default(&p, 128);
  NfMemGuest g = {.max = p.memory, .actual = 100 * MIB, .available = 2 * MIB, .seq = 9};
  g.target = 70 * MIB;
  g.seq_at_change = 5;
  guint64 t = nf_mempolicy_guest_step(&p, FALSE, &g);
  g_assert_cmpuint(t, >, 100 * MIB);

  /* Idle again but the balloon sits off its target: after a few samples
   * the policy shrinks from where the balloon is, not from the target. */
  NfMemGuest h = {.max = p.memory, .actual = 110 * MIB, .available = 90 * MIB, .seq = 10};
  h.target = 70 * MIB;
  h.seq_at_change = 9;
  g_assert_cmpuint(nf_mempolicy_guest_step(&p, FALSE, &h), ==, 0);
  guint64 shrunk = 0;
  for (int i = 0; i < 10 && shrunk == 0; i++) {
    h.seq++;
    shrunk = nf_mempolicy_guest_step(&p, FALSE, &h);
  }
  g_assert_cmpuint(shrunk, ==, 110 * MIB - p.shrink_step);
}

static void test_no_stats_no_action(void)
{
  NfMemPolicyParams p;
  nf_mempolicy_params_default(&p, 128);
  NfMemGuest g = {.max = p.memory, .actual = p.memory, .available = 100 * MIB};
  g_assert_cmpuint(nf_mempolicy_guest_step(&p, FALSE, &g), ==, 0); /* seq 0: never reported */
  g.seq = 1;
  g.seq_at_change = 0;
  guint64 t = nf_mempolicy_guest_step(&p, FALSE, &g);
  g_assert_cmpuint(t, ==, p.memory - p.shrink_step);
  /* The same sample again: nothing new, no step. */
  g.actual = t;
  g_assert_cmpuint(nf_mempolicy_guest_step(&p, FALSE, &g), ==, 0);
  /* A fresh sample taken before the change landed: wait. */
  g.actual = p.memory;
  g.seq = 3;
  g_assert_cmpuint(nf_mempolicy_guest_step(&p, FALSE, &g), ==, 0);
}

static void test_host_thresholds(void)
{
  NfMemPolicyParams p;
  nf_mempolicy_params_default(&p, 128);
  NfMemHost h = {.mem_total = 1000 * MIB, .psi_some10 = 0, .psi_full10 = 0};
  h.mem_available = 120 * MIB;
  g_assert_true(nf_mempolicy_host_admit(&p, TRUE, &h));
  h.mem_available = 90 * MIB; /* under 10 %: stop */
  g_assert_false(nf_mempolicy_host_admit(&p, TRUE, &h));
  h.mem_available = 120 * MIB; /* back over 10 % but under 15 %: still stopped */
  g_assert_false(nf_mempolicy_host_admit(&p, FALSE, &h));
  h.mem_available = 160 * MIB;
  g_assert_true(nf_mempolicy_host_admit(&p, FALSE, &h));
  /* PSI alone stops it, and must calm down before it resumes. */
  h.psi_some10 = 12.5;
  g_assert_false(nf_mempolicy_host_admit(&p, TRUE, &h));
  h.psi_some10 = 5;
  g_assert_true(nf_mempolicy_host_admit(&p, TRUE, &h));
  g_assert_false(nf_mempolicy_host_admit(&p, FALSE, &h));
  h.psi_some10 = 1;
  g_assert_true(nf_mempolicy_host_admit(&p, FALSE, &h));
  h.psi_full10 = 6;
  g_assert_false(nf_mempolicy_host_admit(&p, TRUE, &h));
  /* No PSI on this kernel (negative): MemAvailable alone decides. */
  h = (NfMemHost){.mem_total = 1000 * MIB, .mem_available = 500 * MIB, -1, -1};
  g_assert_true(nf_mempolicy_host_admit(&p, FALSE, &h));
}

static char *tmp;

static void write_host(guint64 total_mib, guint64 avail_mib, double psi_some)
{
  g_autofree char *meminfo = g_build_filename(tmp, "meminfo", NULL);
  g_autofree char *psi = g_build_filename(tmp, "pressure", "memory", NULL);
  g_autofree char *m = g_strdup_printf("MemTotal:       %" G_GUINT64_FORMAT " kB\n"
                                       "MemFree:          123 kB\n"
                                       "MemAvailable:   %" G_GUINT64_FORMAT " kB\n",
                                       total_mib * 1024, avail_mib * 1024);
  g_autofree char *s = g_strdup_printf("some avg10=%.2f avg60=0.00 avg300=0.00 total=1\n"
                                       "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
                                       psi_some);
  g_assert_true(g_file_set_contents(meminfo, m, -1, NULL));
  g_assert_true(g_file_set_contents(psi, s, -1, NULL));
}

static void test_read_host(void)
{
  tmp = nf_test_tmpdir_new();
  g_autofree char *pdir = g_build_filename(tmp, "pressure", NULL);
  g_assert_cmpint(g_mkdir(pdir, 0700), ==, 0);
  write_host(2000, 500, 3.25);
  NfMemHost h;
  g_autoptr(GError) error = NULL;
  g_assert_true(nf_mempolicy_read_host(tmp, &h, &error));
  g_assert_cmpuint(h.mem_total, ==, 2000 * MIB);
  g_assert_cmpuint(h.mem_available, ==, 500 * MIB);
  g_assert_cmpfloat(h.psi_some10, ==, 3.25);
  g_assert_cmpfloat(h.psi_full10, ==, 0);
  /* No PSI file: negative PSI, not an error. */
  g_autofree char *psi = g_build_filename(tmp, "pressure", "memory", NULL);
  g_assert_cmpint(g_unlink(psi), ==, 0);
  g_assert_true(nf_mempolicy_read_host(tmp, &h, &error));
  g_assert_cmpfloat(h.psi_some10, <, 0);
  /* A meminfo without MemAvailable: an error naming the file. */
  g_autofree char *meminfo = g_build_filename(tmp, "meminfo", NULL);
  g_assert_true(g_file_set_contents(meminfo, "MemTotal: 10 kB\n", -1, NULL));
  g_assert_false(nf_mempolicy_read_host(tmp, &h, &error));
  g_assert_nonnull(strstr(error->message, meminfo));
  /* The real one parses on this host. */
  g_clear_error(&error);
  g_assert_true(nf_mempolicy_read_host("/proc", &h, &error));
  g_assert_cmpuint(h.mem_total, >, 0);
  nf_test_tmpdir_cleanup(tmp);
  g_clear_pointer(&tmp, g_free);
}

/* --- the back-pressure on a real boot window ---------------------------------- */

typedef struct {
  guint started;
  GPtrArray *notices;
} Window;

static guint win_booting_cb(gpointer data)
{
  return 0; /* every admitted guest is instantly up: only the pause holds them */
}

static void win_start_cb(NfVm *vm, gpointer data)
{
  ((Window *)data)->started++;
}

static void win_notice_cb(const char *message, gpointer data)
{
  g_ptr_array_add(((Window *)data)->notices, g_strdup(message));
}

static gboolean win_started_all(gpointer data)
{
  return ((Window *)data)->started == 3;
}

/* Runs what is pending on the main context, without blocking. */
static void drain(void)
{
  for (int i = 0; i < 100 && g_main_context_iteration(NULL, FALSE); i++)
    ;
}

static void test_backpressure_pauses_limiter(void)
{
  tmp = nf_test_tmpdir_new();
  g_autofree char *pdir = g_build_filename(tmp, "pressure", NULL);
  g_assert_cmpint(g_mkdir(pdir, 0700), ==, 0);
  Window w = {.notices = g_ptr_array_new_with_free_func(g_free)};
  static const NfLimiterOps ops = {.booting = win_booting_cb, .start = win_start_cb};
  NfLimiter *lim = nf_limiter_new(8, FALSE, 2, &ops, &w);
  NfMemPolicyParams p;
  nf_mempolicy_params_default(&p, 128);
  p.tick_ms = 3600 * 1000; /* ticked by hand below */
  p.proc_dir = tmp;
  g_autoptr(GPtrArray) vms = g_ptr_array_new();
  /* The host nears OOM (5 % available) before the fleet even starts: the
   * policy holds the boot window from the moment it exists, and says so at
   * its first tick. */
  write_host(10000, 500, 0);
  NfMemPolicy *mp = nf_mempolicy_new(&p, vms, lim, win_notice_cb, &w);
  g_assert_false(nf_mempolicy_admitting(mp));
  g_assert_true(nf_limiter_paused(lim));
  g_assert_cmpuint(w.notices->len, ==, 0);
  nf_mempolicy_tick(mp);
  g_assert_cmpuint(w.notices->len, ==, 1);
  g_assert_nonnull(strstr(g_ptr_array_index(w.notices, 0), "admission paused: host MemAvailable"));
  /* Guests queued now (the limiter treats them as opaque) are not admitted. */
  for (guintptr i = 1; i <= 3; i++)
    nf_limiter_push(lim, (NfVm *)i);
  drain();
  g_assert_cmpuint(w.started, ==, 0);

  /* Recovering to 12 %: above the stop mark, below the resume mark. */
  write_host(10000, 1200, 0);
  nf_mempolicy_tick(mp);
  drain();
  g_assert_cmpuint(w.started, ==, 0);
  g_assert_cmpuint(w.notices->len, ==, 1);
  /* Calm memory but a memory-stalled host (PSI) still waits. */
  write_host(10000, 5000, 8);
  nf_mempolicy_tick(mp);
  drain();
  g_assert_cmpuint(w.started, ==, 0);

  /* Clearly out of trouble: admission resumes and the queue drains. */
  write_host(10000, 5000, 0.5);
  nf_mempolicy_tick(mp);
  g_assert_true(nf_mempolicy_admitting(mp));
  g_assert_true(nf_test_wait_for(win_started_all, &w, 10000));
  g_assert_cmpuint(w.notices->len, ==, 2);
  g_assert_nonnull(strstr(g_ptr_array_index(w.notices, 1), "admission resumed"));

  /* Host memory that cannot be read: one notice, admission unchanged. */
  g_autofree char *meminfo = g_build_filename(tmp, "meminfo", NULL);
  g_assert_cmpint(g_unlink(meminfo), ==, 0);
  nf_mempolicy_tick(mp);
  nf_mempolicy_tick(mp);
  g_assert_cmpuint(w.notices->len, ==, 3);
  g_assert_nonnull(strstr(g_ptr_array_index(w.notices, 2), "cannot read host memory"));
  g_assert_true(nf_mempolicy_admitting(mp));

  nf_mempolicy_free(mp);
  nf_limiter_free(lim);
  g_ptr_array_unref(w.notices);
  nf_test_tmpdir_cleanup(tmp);
  g_clear_pointer(&tmp, g_free);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/mempolicy/shrinks-idle-in-bounded-steps", test_shrinks_idle_in_bounded_steps);
  g_test_add_func("/mempolicy/grows-on-need", test_grows_on_need);
  g_test_add_func("/mempolicy/no-oscillation", test_no_oscillation);
  g_test_add_func("/mempolicy/guard-shrinks-only-under-pressure",
                  test_guard_shrinks_only_under_pressure);
  g_test_add_func("/mempolicy/grow-from-actual", test_grow_from_actual);
  g_test_add_func("/mempolicy/no-stats-no-action", test_no_stats_no_action);
  g_test_add_func("/mempolicy/host-thresholds", test_host_thresholds);
  g_test_add_func("/mempolicy/read-host", test_read_host);
  g_test_add_func("/mempolicy/backpressure-pauses-limiter", test_backpressure_pauses_limiter);
  return g_test_run();
}
