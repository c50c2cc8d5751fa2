/*
 * vm-memory.c: a guest's qemu memory as `ps`, the page and the metrics show
 * it (RSS from /proc/PID/statm, PSS from smaps_rollup), sampled rather than
 * read at every look: at thousands of guests a `ps` must not open thousands
 * of /proc files, and smaps_rollup walks qemu's page tables. The health
 * probes refresh the samples (health.c); a reader takes a fresh one only
 * when the sample is missing or older than its age limit (vm-private.h).
 * A booting guest grows from a few MiB to its full size within a second or
 * two, so its samples age in a second, and a sample someone took during the
 * boot is taken again at the ready line: it would otherwise stand for the
 * ready guest until the probe's next turn, up to 10 minutes for PSS (`ps`
 * after a storm showed 5M for guests of 124M). Few guests boot at once (the
 * window), so neither costs a large fleet anything.
 */
#include "supervisor/vm-private.h"

#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "supervisor/memstat.h"

void nf_vm_sample_rss(NfVm *vm)
{
  vm->rss_at = g_get_monotonic_time();
  vm->rss_bytes = 0;
  if (vm->proc == NULL)
    return;
  char path[64], buf[128];
  g_snprintf(path, sizeof(path), "/proc/%d/statm", (int)nf_process_pid(vm->proc));
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return;
  ssize_t n = read(fd, buf, sizeof(buf) - 1);
  close(fd);
  if (n <= 0)
    return;
  buf[n] = '\0';
  char *p = strchr(buf, ' ');
  vm->rss_bytes = p ? g_ascii_strtoull(p + 1, NULL, 10) * (guint64)sysconf(_SC_PAGESIZE) : 0;
}

void nf_vm_sample_pss(NfVm *vm)
{
  vm->pss_at = g_get_monotonic_time();
  vm->pss_bytes = 0;
  if (vm->proc == NULL)
    return;
  NfMemStat m;
  nf_memstat_read(nf_process_pid(vm->proc), &m);
  vm->pss_bytes = m.pss;
}

/* How old a sample may be when read: a booting guest's, a second. */
static gint64 max_age_us(const NfVm *vm, gint64 ready_age_us)
{
  return vm->state == NF_VM_STARTING || vm->state == NF_VM_BOOTING ? G_USEC_PER_SEC : ready_age_us;
}

void nf_vm_memory_ready(NfVm *vm)
{
  if (vm->rss_at)
    nf_vm_sample_rss(vm);
  if (vm->pss_at)
    nf_vm_sample_pss(vm);
}

guint64 nf_vm_rss(const NfVm *vm)
{
  /* Sampled with the health probe while someone reads it, so `ps` on
   * thousands of guests reads no /proc files but the first time in a while;
   * read here when the sample is missing or stale. */
  if (vm->proc == NULL)
    return 0;
  if (vm->env->health)
    nf_health_wheel_rss_wanted(vm->env->health);
  if (vm->rss_at == 0 || g_get_monotonic_time() - vm->rss_at > max_age_us(vm, NF_VM_RSS_MAX_AGE_US))
    nf_vm_sample_rss((NfVm *)vm);
  return vm->rss_bytes;
}

guint64 nf_vm_pss(const NfVm *vm)
{
  /* smaps_rollup walks qemu's page tables: read every 5 minutes by the
   * health probe so that `ps` on thousands of guests rarely has to. */
  if (vm->proc == NULL)
    return 0;
  if (vm->pss_at == 0 || g_get_monotonic_time() - vm->pss_at > max_age_us(vm, NF_VM_PSS_MAX_AGE_US))
    nf_vm_sample_pss((NfVm *)vm);
  return vm->pss_bytes;
}
