/*
 * touch-memory.c: what a page of memory costs this host the first time a
 * process touches it, against the second time.
 *
 * A host that is itself a VM may hand its free memory back to its hypervisor
 * (free page reporting); the next touch of such a page then faults in the
 * hypervisor too. Seen on a 2-vCPU VM: 8-9 us of CPU a 4 KiB page against
 * ~1 us for one the kernel still held, so a storm of guests that together
 * fault in 11 GiB pay ~23 CPU-s that one guest booted after another never
 * sees (bench/README.md, twelfth pass). bootstorm.sh runs this to print that
 * price next to its limit, and with MEMORY=warm to fault in the fleet's
 * memory before the storm while the host keeps what it freed.
 *
 * Usage: touch-memory MIB
 * Maps MIB of anonymous memory and writes one byte a page (the first touch),
 * gives it back with MADV_DONTNEED and writes again (the kernel hands the
 * same pages out from its free lists: the second touch), then exits. Prints
 * one JSON line: mib, first_us_per_page, second_us_per_page (CPU time, user +
 * system, per 4 KiB page) and first_wall_us_per_page (stalls in the
 * hypervisor are wall time, not this process's CPU).
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static double now_us(clockid_t clock)
{
  struct timespec ts;
  clock_gettime(clock, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

/* Writes one byte in each page of [p, p + len): the CPU microseconds that
 * took, and the wall microseconds in *wall. */
static double touch(volatile char *p, size_t len, size_t page, double *wall)
{
  double c0 = now_us(CLOCK_PROCESS_CPUTIME_ID), w0 = now_us(CLOCK_MONOTONIC);
  for (size_t i = 0; i < len; i += page)
    p[i] = 1;
  *wall = now_us(CLOCK_MONOTONIC) - w0;
  return now_us(CLOCK_PROCESS_CPUTIME_ID) - c0;
}

int main(int argc, char **argv)
{
  char *end = NULL;
  unsigned long mib = argc == 2 ? strtoul(argv[1], &end, 10) : 0;
  if (argc != 2 || end == argv[1] || *end || mib == 0) {
    fprintf(stderr, "usage: touch-memory MIB (a positive whole number of MiB)\n");
    return 2;
  }
  size_t len = (size_t)mib << 20, page = (size_t)sysconf(_SC_PAGESIZE);
  char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    perror("touch-memory: mmap");
    return 1;
  }
  /* Huge pages would make one fault of 512 pages and hide the price a
   * guest's qemu pays (nervesfleet turns them off for qemu under TCG). */
  madvise(p, len, MADV_NOHUGEPAGE);
  double first_wall, second_wall;
  double first = touch(p, len, page, &first_wall);
  if (madvise(p, len, MADV_DONTNEED) != 0) {
    perror("touch-memory: madvise");
    return 1;
  }
  double second = touch(p, len, page, &second_wall);
  double pages = (double)(len / page);
  printf("{\"mib\": %lu, \"first_us_per_page\": %.3f, \"second_us_per_page\": %.3f, "
         "\"first_wall_us_per_page\": %.3f}\n",
         mib, first / pages, second / pages, first_wall / pages);
  munmap(p, len);
  return 0;
}
