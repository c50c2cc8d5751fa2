/*
 * accel.h: which accelerator a guest gets. KVM only helps an aarch64 guest on
 * an aarch64 host; everywhere else we emulate with TCG. Detection is split
 * from resolution so that tests can feed any host facts.
 */
#pragma once
#include <glib.h>
#include "supervisor/config.h"

#define NF_ACCEL_ERROR (nf_accel_error_quark())
GQuark nf_accel_error_quark(void);
typedef enum { NF_ACCEL_ERROR_UNAVAILABLE, NF_ACCEL_ERROR_INVALID } NfAccelError;

typedef struct {
  char machine[32];      /* uname -m: "aarch64", "x86_64", ... */
  char os[32];           /* uname -s: "Linux", "Darwin" */
  gboolean kvm_usable;   /* /dev/kvm exists and opens read-write */
  char kvm_problem[128]; /* why not, when it is not */
  guint cores;           /* online processors */
} NfHostInfo;

/* Reads the facts of this host. Never fails (unknown facts stay empty). */
void nf_accel_detect_host(NfHostInfo *host);

/* Turns `requested` into a concrete accelerator for `host`: AUTO becomes KVM
 * on an aarch64 Linux host with usable /dev/kvm, TCG otherwise. Asking for an
 * accelerator the host cannot give is NF_ACCEL_ERROR_UNAVAILABLE with a
 * message that names the reason and the fix. */
gboolean nf_accel_resolve(NfAccel requested, const NfHostInfo *host, NfAccel *resolved,
                          GError **error);

/* "kvm", "tcg", "hvf", "auto". */
const char *nf_accel_name(NfAccel accel);
/* Parses a --accel value; NF_ACCEL_ERROR_INVALID names the choices. */
gboolean nf_accel_parse(const char *text, NfAccel *accel, GError **error);

/* Guests booting at once when the user gave no --batch: a TCG boot keeps one
 * core busy for seconds, so one per core; a KVM boot is cheap, so more. */
guint nf_accel_default_batch(NfAccel resolved, const NfHostInfo *host);
