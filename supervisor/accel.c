/*
 * accel.c: host detection and accelerator choice (see accel.h).
 */
#include "supervisor/accel.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

/* Spelled out rather than G_DEFINE_QUARK(a-b-c, ...): clang-format
 * reads the dashes as operators and the quark string would change. */
GQuark nf_accel_error_quark(void)
{
  return g_quark_from_static_string("nf-accel-error-quark");
}

void nf_accel_detect_host(NfHostInfo *host)
{
  struct utsname u;
  memset(host, 0, sizeof(*host));
  if (uname(&u) == 0) {
    g_strlcpy(host->machine, u.machine, sizeof(host->machine));
    g_strlcpy(host->os, u.sysname, sizeof(host->os));
  }
  int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (fd >= 0) {
    host->kvm_usable = TRUE;
    close(fd);
  } else {
    g_snprintf(host->kvm_problem, sizeof(host->kvm_problem), "/dev/kvm: %s", g_strerror(errno));
  }
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  host->cores = n > 0 ? (guint)n : 1;
}

const char *nf_accel_name(NfAccel accel)
{
  switch (accel) {
  case NF_ACCEL_KVM:
    return "kvm";
  case NF_ACCEL_TCG:
    return "tcg";
  case NF_ACCEL_HVF:
    return "hvf";
  case NF_ACCEL_AUTO:
  default:
    return "auto";
  }
}

gboolean nf_accel_parse(const char *text, NfAccel *accel, GError **error)
{
  static const NfAccel all[] = {NF_ACCEL_AUTO, NF_ACCEL_KVM, NF_ACCEL_TCG, NF_ACCEL_HVF};
  for (guint i = 0; i < G_N_ELEMENTS(all); i++) {
    if (g_strcmp0(text, nf_accel_name(all[i])) == 0) {
      *accel = all[i];
      return TRUE;
    }
  }
  g_set_error(error, NF_ACCEL_ERROR, NF_ACCEL_ERROR_INVALID,
              "--accel: unknown accelerator '%s'; use auto, kvm, tcg or hvf", text);
  return FALSE;
}

gboolean nf_accel_resolve(NfAccel requested, const NfHostInfo *host, NfAccel *resolved,
                          GError **error)
{
  gboolean linux_host = g_strcmp0(host->os, "Linux") == 0;
  gboolean arm_host = g_strcmp0(host->machine, "aarch64") == 0;

  switch (requested) {
  case NF_ACCEL_AUTO:
    *resolved = (linux_host && arm_host && host->kvm_usable) ? NF_ACCEL_KVM : NF_ACCEL_TCG;
    return TRUE;
  case NF_ACCEL_TCG:
    *resolved = NF_ACCEL_TCG;
    return TRUE;
  case NF_ACCEL_KVM:
    if (!linux_host || !arm_host) {
      g_set_error(error, NF_ACCEL_ERROR, NF_ACCEL_ERROR_UNAVAILABLE,
                  "--accel kvm: aarch64 guests need an aarch64 Linux host for KVM, this "
                  "host is %s %s; use --accel tcg (or auto)",
                  host->os[0] ? host->os : "?", host->machine[0] ? host->machine : "?");
      return FALSE;
    }
    if (!host->kvm_usable) {
      g_set_error(error, NF_ACCEL_ERROR, NF_ACCEL_ERROR_UNAVAILABLE,
                  "--accel kvm: %s; load the kvm module or add yourself to the kvm "
                  "group, or use --accel tcg",
                  host->kvm_problem[0] ? host->kvm_problem : "/dev/kvm is not usable");
      return FALSE;
    }
    *resolved = NF_ACCEL_KVM;
    return TRUE;
  case NF_ACCEL_HVF:
    if (g_strcmp0(host->os, "Darwin") != 0 || !arm_host) {
      g_set_error(error, NF_ACCEL_ERROR, NF_ACCEL_ERROR_UNAVAILABLE,
                  "--accel hvf: needs an Apple Silicon macOS host, this host is %s %s; "
                  "use --accel tcg (or auto)",
                  host->os[0] ? host->os : "?", host->machine[0] ? host->machine : "?");
      return FALSE;
    }
    *resolved = NF_ACCEL_HVF;
    return TRUE;
  }
  g_set_error(error, NF_ACCEL_ERROR, NF_ACCEL_ERROR_INVALID, "unknown accelerator %d",
              (int)requested);
  return FALSE;
}

guint nf_accel_default_batch(NfAccel resolved, const NfHostInfo *host)
{
  guint cores = MAX(host->cores, 1);
  return resolved == NF_ACCEL_TCG ? cores : cores * 4;
}
