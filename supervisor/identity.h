/*
 * identity.h: what makes each guest of a fleet a distinct device: its name,
 * its serial number and its MAC address, all derived from (fleet, index) by
 * pure functions, so that a guest keeps its identity across restarts, across
 * supervisor restarts, and on whichever host runs that index (--id-offset).
 * Identities are the fleet's business, so they live in supervisor/; overlay/
 * only ever sees the resulting file names and serial strings.
 */
#pragma once
#include <glib.h>

#define NF_IDENTITY_DEFAULT_SERIAL_FORMAT "NF-%06u"
/* Longest serial we produce: fits fw_cfg names, env values and file names. */
#define NF_IDENTITY_SERIAL_MAX 64

#define NF_IDENTITY_ERROR (nf_identity_error_quark())
GQuark nf_identity_error_quark(void);

typedef enum {
  NF_IDENTITY_ERROR_BAD_FORMAT, /* serial format string rejected */
  NF_IDENTITY_ERROR_RANGE,      /* index out of what the scheme can encode */
} NfIdentityError;

/* Checks a --serial-format: exactly one integer conversion (%u %d %i %x %X
 * %o, optional flags '0' '-' '#', width and precision up to 2 digits each,
 * no length modifier, no '*'), "%%" for a literal percent, and otherwise only
 * letters, digits and "-_.:" (the serial ends up on qemu's command line,
 * where ',' would need escaping, and in file names). Returns TRUE, or FALSE
 * with NF_IDENTITY_ERROR_BAD_FORMAT saying what is wrong. */
gboolean nf_identity_validate_serial_format(const char *format, GError **error);

/* The serial of guest `index`, e.g. "NF-000042". `format` NULL means the
 * default. Returns a new string, or NULL with _BAD_FORMAT (invalid format) or
 * _RANGE (result longer than NF_IDENTITY_SERIAL_MAX). */
char *nf_identity_serial(const char *format, guint index, GError **error);

/* A locally administered, unicast MAC "xx:xx:xx:xx:xx:xx" (new string): the
 * first three octets come from a hash of the fleet name (bit 1 of the first
 * octet set, bit 0 cleared), the last three are the index, so MACs are unique
 * within a fleet by construction. Fails with _RANGE if index > 0xffffff. */
char *nf_identity_mac(const char *fleet, guint index, GError **error);

/* The guest's name, "<fleet>-<index>" (new string). Used for overlay and log
 * file names, so `fleet` must already be a valid fleet name. */
char *nf_identity_name(const char *fleet, guint index);
