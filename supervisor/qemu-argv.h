/*
 * qemu-argv.h: the qemu command line of one guest, built as an array (never
 * through a shell) from plain data, so it can be unit-tested for every
 * accelerator without starting anything.
 */
#pragma once
#include <glib.h>
#include "supervisor/config.h"
#include "supervisor/net.h"

/* The fd numbers the child sees (the spawner maps ours onto these). Each is
 * a unix socket the supervisor bound and listens on, in the runtime dir. */
#define NF_QEMU_FD_QMP 3        /* the supervisor's QMP monitor (vm-NNNN.ctl) */
#define NF_QEMU_FD_QMP_PUBLIC 4 /* a QMP monitor for other tools (vm-NNNN.qmp) */
#define NF_QEMU_FD_SERIAL 5     /* the serial console stream (vm-NNNN.serial) */
#define NF_QEMU_FD_TAP 6        /* --net tap: the guest's tap (see tap.h) */

typedef struct {
  const char *qemu; /* binary */
  NfAccel accel;    /* resolved: KVM, TCG or HVF */
  guint64 memory_mib;
  const char *kernel;
  const char *initrd;
  const char *boot_arg;   /* kernel argument the kernel file needs (boot-image.h), or NULL */
  const char *append;     /* extra kernel command line, may be NULL */
  const char *guest_name; /* e.g. "vm-0003" */
  const char *serial;     /* identity, e.g. "NF-000003" */
  const char *pidfile;    /* qemu writes its pid there */
  /* qemu appends all console output there itself (chardev logfile=), so the
   * supervisor need not hold the console (console-log.h); NULL: no log */
  const char *console_log;
  gboolean public_qmp; /* pass NF_QEMU_FD_QMP_PUBLIC as a second monitor */
  NfProfile profile;   /* SIM: Linux + initramfs; NERVES: little_loader + firmware disk */
  const char *disk;    /* the guest's overlay (qcow2), or NULL */
  /* Networking (see net.h): NF_NET_USER gives one user-mode NIC, on
   * virtio-mmio for NERVES (what its kernel probes), on PCI for SIM. */
  NfNetMode net;
  const char *mac;              /* the NIC's stable address */
  const NfNetForward *forwards; /* host port -> guest port, on 127.0.0.1 */
  guint n_forwards;
  const char *server;    /* fw_cfg opt/nervesfleet/server, or NULL */
  const char *ready_url; /* fw_cfg opt/nervesfleet/ready_url, or NULL */
  const char *ip;        /* NF_NET_TAP: fw_cfg opt/nervesfleet/ip "ADDR,GATEWAY" */
  char *const *extra;    /* appended verbatim, may be NULL */
  gboolean dense;        /* every memory lever, boot-time costs included */
  guint tb_mib;          /* TCG translation buffer, MiB; 0: NF_QEMU_TB_MIB(_DENSE) */
  gboolean ksm;          /* host KSM runs for this fleet */
  /* Snapshot fleets (snapshot.h): "-incoming VALUE" (e.g. "defer"), or NULL;
   * and the fw_cfg serial padded with spaces to this many bytes (0: not), so
   * the template and every restored guest have fw_cfg files of one size. */
  const char *incoming;
  guint serial_pad;
  /* Leave out -kernel, -initrd and -append: a restored guest's RAM comes from
   * the snapshot, and qemu would keep a copy of the kernel (~33 MB) per guest. */
  gboolean no_boot_files;
} NfQemuSpec;

/* The memory levers, each measured by bench/density.sh (numbers in the
 * README's memory section). Default: the ones that cost no boot time. */
#define NF_QEMU_TB_MIB 32 /* TCG translation buffer (qemu's default: 1 GiB) */
/* --dense: 16 saves ~18 MiB per guest for ~+15 % boot CPU (retranslation);
 * 8 costs 2.6x the boot CPU and is not offered. The Debian-kernel guest's
 * boot translates ~41 MB of code, so 32 is flushed once per boot: 48
 * (`--tb-size 48`) boots on ~8 % less CPU for ~9 MiB more per guest, which
 * a fleet short of memory would rather keep (bench/README.md, ninth pass). */
#define NF_QEMU_TB_MIB_DENSE 16
/* The buffer a TCG guest gets: `tb_mib` (--tb-size) when set, else by --dense. */
guint nf_qemu_tb_mib(guint tb_mib, gboolean dense);
/* Sim guest kernel, always (no boot cost measured): no KASLR, so every
 * guest's kernel text is the same bytes and KSM merges it (a guest of a
 * test fleet gains nothing from a random kernel base). And a quiet idle
 * guest: under TCG each guest timer interrupt is ~4 context switches between
 * qemu's threads, so an idle guest's wakeups are its host CPU. Proactive
 * compaction off (kcompactd woke every 500 ms to weigh fragmentation for huge
 * pages a 128 MiB guest never uses) and the per-CPU memory statistics folded
 * every 10 s instead of every second: an idle guest went from 53 to 21 ms of
 * host CPU in 20 s (1,198 to 419 timeslices). Then no pressure stall
 * averaging (PSI, every 2 s) and no memory cgroup (its stat flush, every
 * 2 s), which nothing in the sim guest reads: 406 to 329 timeslices. And no
 * lockup detector: its timer wakes the guest every 4 s to check that the
 * guest's own threads ran, which a TCG guest's host scheduler decides, not
 * its kernel (hangs are the supervisor's heartbeat's and the i6300esb's
 * job): 348 to 266 timeslices. And a shorter boot: no crypto self-tests
 * (testmgr checks every built-in algorithm against its test vectors as it
 * registers: 166 ms of the Debian kernel's ~1.2 s to ready under TCG, by
 * initcall_debug; one lone boot 1.26-1.27 -> 1.05-1.11 CPU-s). They test
 * the kernel's crypto code on the emulated CPU, which tells a fleet test
 * nothing; `--append cryptomgr.notests=0` runs them. */
#define NF_QEMU_GUEST_ARGS                                                                         \
  "nokaslr sysctl.vm.compaction_proactiveness=0 sysctl.vm.stat_interval=10 psi=0 "                 \
  "cgroup_disable=memory nowatchdog cryptomgr.notests"
/* Not here: init_on_free=1 (freed guest pages zeroed for KSM's zero page).
 * Free page reporting already gives freed pages back (72.5 vs 72.3 MiB PSS
 * per guest without and with it, 8 guests), and zeroing cost ~5 % more CPU
 * per boot in a storm (bench/README, issue 17).
 * (`page_reporting.page_reporting_order` on this command line would report
 * free blocks smaller than 2 MiB, but Debian's 6.1 kernel overwrites it when
 * virtio_balloon registers: the sim guest's init writes it after that.) */

/* With KSM: glibc's mmap threshold, fixed. qemu keeps a copy of the kernel
 * image (and of the initrd) on its heap to reload at reset (not for the built
 * guest's boot.elf, which it maps: boot-image.h). glibc raises its
 * mmap threshold as qemu frees big blocks, so that ~32 MiB copy lands in the
 * brk heap at an offset within a page that differs from guest to guest, and
 * KSM, which merges whole identical pages, then merges it only between guests
 * that happen to share the offset (~32 MiB more PSS for each of the others: in
 * an 8-guest fleet 1 to 3 of them). A fixed threshold turns the dynamic one
 * off: every block of 128 KiB or more is its own mmap, at the same offset in
 * every guest. No boot cost measured. */
#define NF_QEMU_ENV_MALLOC "MALLOC_MMAP_THRESHOLD_"
#define NF_QEMU_ENV_MALLOC_VALUE "131072"

/* How qemu's process is set up beyond its argv (prctls, environment).
 * Other glibc malloc tuning (arenas, trim threshold, top pad) was measured
 * and did not pay. */
typedef struct {
  gboolean no_thp;     /* transparent huge pages off for qemu */
  gboolean merge_any;  /* all of qemu's memory KSM-mergeable, not only guest RAM */
  gboolean fixed_mmap; /* NF_QEMU_ENV_MALLOC in qemu's environment */
  gboolean no_aslr;    /* qemu's address space not randomised */
} NfQemuProcessSetup;

/* Fills `setup` for `spec`: with KSM, every anonymous page of qemu may
 * merge (the reset copy of the kernel image that each qemu keeps on its
 * heap is the same bytes in every guest). Under TCG (and with --dense),
 * no transparent huge pages: qemu asks for them on guest RAM and its TCG
 * buffer, so a guest touching a few KiB costs 2 MiB and free page reporting
 * gives back only whole 2 MiB blocks (~20 MiB per idle guest; boot CPU +4 %
 * on the VM first measured, -7 % on the thirteenth pass's, where a huge page
 * fault costs more than the 512 small ones it saves: bench/README; under KVM
 * huge pages speed the guest up, so they stay). */
void nf_qemu_process_setup(const NfQemuSpec *spec, NfQemuProcessSetup *setup);
/* (continued) With --dense and KSM, qemu runs without address space
 * randomisation: its relocated data, its libraries' and every pointer it
 * keeps on its heap are then the same bytes in every guest and merge (8
 * idle guests: 43 instead of 51 MiB PSS each). The cost is a hardening of
 * qemu against the code it runs, which a fleet of one's own test guests can
 * spare; so it is a --dense lever, not a default. */

/* qemu's environment for `setup`: `env` (taken; e.g. g_get_environ()) with
 * NF_QEMU_ENV_MALLOC set when setup->fixed_mmap, unless `env` already sets it
 * (the user's value wins). Returns the new environment (free with
 * g_strfreev). */
char **nf_qemu_process_env(const NfQemuProcessSetup *setup, char **env);

/* Returns a NULL-terminated argv (free with g_strfreev). Pure. */
char **nf_qemu_argv_build(const NfQemuSpec *spec);

/* The argv as one line a person can paste into a shell (quoted). */
char *nf_qemu_argv_to_string(char *const *argv);
