/*
 * config.h: what a fleet is asked to be. Filled by the CLI from flags (and
 * later a config file), read by the supervisor. Plain data, no behaviour, so
 * that every module can take a `const NfFleetConfig *` without depending on
 * the CLI.
 */
#pragma once
#include <glib.h>
#include "supervisor/restart-policy.h"

typedef enum {
  NF_ACCEL_AUTO = 0,
  NF_ACCEL_KVM,
  NF_ACCEL_TCG,
  NF_ACCEL_HVF,
} NfAccel;

typedef enum {
  NF_PROFILE_SIM = 0, /* the default guest: Linux kernel + initramfs */
  NF_PROFILE_NERVES,  /* a Nerves firmware disk booted by little_loader */
} NfProfile;

typedef enum {
  NF_BALLOON_POLICY_GUARD = 0, /* mempolicy.c: back-pressure; balloons squeezed only then */
  NF_BALLOON_POLICY_AUTO,      /* ... and idle guests always shrunk to working set + headroom */
  NF_BALLOON_POLICY_OFF,
} NfBalloonPolicy;

typedef enum {
  NF_NET_NONE = 0, /* no NIC (the sim default) */
  NF_NET_USER,     /* one user-mode (slirp) NIC per guest; the Nerves default */
  NF_NET_TAP,      /* one tap per guest on a per-fleet bridge (root; see tap.h) */
} NfNetMode;

#define NF_NET_MAX_FORWARDS 16 /* --forward flags per fleet */

typedef enum {
  NF_KSM_AUTO = 0, /* on when the fleet is big enough and the host lets us (ksm.h) */
  NF_KSM_ON,       /* on, or the fleet does not start */
  NF_KSM_OFF,      /* leave the host alone */
} NfKsmMode;

typedef enum {
  NF_READY_SCHED_NORMAL = 0, /* ready guests keep their class during a storm */
  NF_READY_SCHED_BATCH,      /* SCHED_BATCH at nice 10 while others boot (boot-sched.h) */
  NF_READY_SCHED_IDLE,       /* SCHED_IDLE while others boot */
} NfReadySched;

typedef enum {
  NF_BOOT_AFFINITY_AUTO = 0, /* CORE under TCG (one busy vCPU thread per boot), else NONE */
  NF_BOOT_AFFINITY_NONE,     /* booting guests go where the scheduler puts them */
  NF_BOOT_AFFINITY_CORE,     /* each booting guest pinned to the least-used core */
} NfBootAffinity;

typedef struct {
  char *name; /* fleet name: selects the state and runtime dirs */
  NfProfile profile;
  char *disk;                   /* base image each guest gets a qcow2 overlay of (NULL: none) */
  char *disk_format;            /* "raw"/"qcow2" as named by the user, or NULL to detect */
  gboolean reflash_all;         /* recreate every overlay from the base at start */
  guint count;                  /* guests to run */
  guint batch;                  /* guests booting at once; 0 = derived from cores */
  guint64 memory_mib;           /* guest RAM */
  NfAccel accel;                /* as asked; resolved by nf_accel_resolve() */
  char *qemu;                   /* qemu-system-aarch64 binary (name or path) */
  char *kernel;                 /* guest kernel */
  char *initrd;                 /* guest initramfs */
  char *append;                 /* extra kernel command line, appended to ours */
  char **qemu_args;             /* extra qemu arguments, appended verbatim */
  char *state_dir;              /* override of the fleet's state dir (NULL = default) */
  char *runtime_dir;            /* override of the fleet's runtime dir (NULL = default) */
  char *serial_format;          /* printf format of serial numbers, one %u */
  guint id_offset;              /* first guest id - 1 */
  guint stop_timeout_ms;        /* grace between QMP quit and SIGKILL */
  guint boot_timeout_ms;        /* spawn to ready line, else the guest failed */
  char *ready_marker;           /* text on the console that means "booted" */
  NfRestartPolicy restart;      /* what happens when a guest ends */
  guint health_interval_ms;     /* QMP ping period; 0 = off */
  guint health_timeout_ms;      /* QMP ping deadline: missed = hung */
  guint heartbeat_timeout_ms;   /* guest-stats must advance within this; 0 = off */
  guint64 memory_limit_mib;     /* per-guest cgroup memory.max; 0 = no limit */
  guint64 log_max;              /* --log-max: a console log's cap, bytes (plus one .1) */
  gboolean detached;            /* guests outlive the supervisor (daemon mode) */
  NfKsmMode ksm;                /* host KSM page merging while the fleet runs */
  NfReadySched ready_sched;     /* --ready-sched: ready guests' class during a storm */
  NfBootAffinity boot_affinity; /* --boot-affinity: where booting guests run */
  gboolean dense;               /* every memory lever, boot-time costs included (qemu-argv.h) */
  guint tb_mib;                 /* --tb-size: TCG translation buffer, MiB; 0: by dense */
  gboolean snapshot;            /* restore guests from one template's snapshot (snapshot.h) */
  gboolean adopt;               /* take over running guests of a dead supervisor */

  /* --shard I/N and --shard-size K (supervisor/shard.h); shard_count 0: not sharded */
  guint shard_index, shard_count, shard_size;

  /* the memory policy (mempolicy.c) */
  NfBalloonPolicy balloon_policy; /* --balloon-policy */
  guint mem_tick_ms;              /* its period; 0: its default (tests shorten it) */
  char *mem_proc_dir;             /* where it reads meminfo and PSI; NULL: /proc (tests) */
  guint slow_check_ms; /* the probes' console-cap and PSS check; 0: NF_VM_SLOW_CHECK_US (tests) */

  NfNetMode net;                         /* guest networking (see supervisor/net.h) */
  guint16 forwards[NF_NET_MAX_FORWARDS]; /* guest ports each guest gets a host port for */
  guint n_forwards;
  guint forward_base;  /* first guest's first host port; 0 = chosen at start */
  char *server;        /* --server HOST:PORT as given, or NULL */
  gboolean ready_http; /* guests report ready over HTTP, not the console */
} NfFleetConfig;

#define NF_DEFAULT_MEMORY_MIB 128
#define NF_DEFAULT_SERIAL_FORMAT "NF-%06u"
#define NF_DEFAULT_READY_MARKER "nervesfleet-ready"
#define NF_DEFAULT_STOP_TIMEOUT_MS 10000
#define NF_DEFAULT_BOOT_TIMEOUT_MS 180000
/* A probe costs a guest's qemu more than its own idle ticks do (health.h). */
#define NF_DEFAULT_HEALTH_INTERVAL_MS 30000
#define NF_DEFAULT_HEALTH_TIMEOUT_MS 15000
#define NF_DEFAULT_HEARTBEAT_TIMEOUT_MS 60000
/* A guest's console log, and as much again in its .1: 8 MiB of disk a
 * guest at most, 80 GB for 10,000 chatty guests (--log-max lowers it). */
#define NF_DEFAULT_LOG_MAX (4 * 1024 * 1024)
#define NF_LOG_MAX_MIN (64 * 1024)

void nf_fleet_config_init(NfFleetConfig *config);
void nf_fleet_config_clear(NfFleetConfig *config);
