/*
 * qemu-argv.h: the qemu command line of one guest, built as an array (never
 * through a shell) from plain data, so it can be unit-tested for every
 * accelerator without starting anything.
 */
#pragma once
#include <glib.h>
#include "supervisor/config.h"

/* The fd numbers the child sees (the spawner maps ours onto these). Each is
 * a unix socket the supervisor bound and listens on, in the runtime dir. */
#define NF_QEMU_FD_QMP 3        /* the supervisor's QMP monitor (vm-NNNN.ctl) */
#define NF_QEMU_FD_QMP_PUBLIC 4 /* a QMP monitor for other tools (vm-NNNN.qmp) */
#define NF_QEMU_FD_SERIAL 5     /* the serial console stream (vm-NNNN.serial) */

typedef struct {
  const char *qemu; /* binary */
  NfAccel accel;    /* resolved: KVM, TCG or HVF */
  guint64 memory_mib;
  const char *kernel;
  const char *initrd;
  const char *append;     /* extra kernel command line, may be NULL */
  const char *guest_name; /* e.g. "vm-0003" */
  const char *serial;     /* identity, e.g. "NF-000003" */
  const char *pidfile;    /* qemu writes its pid there */
  gboolean public_qmp;    /* pass NF_QEMU_FD_QMP_PUBLIC as a second monitor */
  NfProfile profile;      /* SIM: Linux + initramfs; NERVES: little_loader + firmware disk */
  const char *disk;       /* the guest's overlay (qcow2), or NULL */
  const char *mac;        /* NIC address (NERVES profile) */
  char *const *extra;     /* appended verbatim, may be NULL */
  /* Snapshot fleets (snapshot.h): "-incoming VALUE" (e.g. "defer"), or NULL;
   * and the fw_cfg serial padded with spaces to this many bytes (0: not), so
   * the template and every restored guest have fw_cfg files of one size. */
  const char *incoming;
  guint serial_pad;
  /* Leave out -kernel, -initrd and -append: a restored guest's RAM comes from
   * the snapshot, and qemu would keep a copy of the kernel (~33 MB) per guest. */
  gboolean no_boot_files;
} NfQemuSpec;

/* Returns a NULL-terminated argv (free with g_strfreev). Pure. */
char **nf_qemu_argv_build(const NfQemuSpec *spec);

/* The argv as one line a person can paste into a shell (quoted). */
char *nf_qemu_argv_to_string(char *const *argv);
