/*
 * identity.c: name, serial and MAC of a guest from (fleet, index); see
 * identity.h. The serial format is user input that reaches printf, so it is
 * validated by a small scanner instead of being trusted: one integer
 * conversion, nothing that reads other arguments (%s, %n, '*').
 */
#include "supervisor/identity.h"

#include <string.h>

/* Spelled out rather than G_DEFINE_QUARK(a-b-c, ...): clang-format
 * reads the dashes as operators and the quark string would change. */
GQuark nf_identity_error_quark(void)
{
  return g_quark_from_static_string("nf-identity-error-quark");
}

static gboolean bad_format(GError **error, const char *format, const char *why);

static gboolean bad_format(GError **error, const char *format, const char *why)
{
  g_set_error(error, NF_IDENTITY_ERROR, NF_IDENTITY_ERROR_BAD_FORMAT,
              "invalid serial format \"%s\": %s (example: \"%s\")", format, why,
              NF_IDENTITY_DEFAULT_SERIAL_FORMAT);
  return FALSE;
}

gboolean nf_identity_validate_serial_format(const char *format, GError **error)
{
  guint conversions = 0;
  for (const char *p = format; *p; p++) {
    if (*p != '%') {
      if (!g_ascii_isalnum(*p) && !strchr("-_.:", *p))
        return bad_format(error, format,
                          "only letters, digits and \"-_.:\" may surround the number");
      continue;
    }
    p++;
    if (*p == '%')
      continue;
    while (*p && strchr("0-#", *p))
      p++;
    for (int n = 0; g_ascii_isdigit(*p); n++, p++)
      if (n == 2)
        return bad_format(error, format, "width has more than 2 digits");
    if (*p == '.') {
      p++;
      for (int n = 0; g_ascii_isdigit(*p); n++, p++)
        if (n == 2)
          return bad_format(error, format, "precision has more than 2 digits");
    }
    if (!*p || !strchr("udixXo", *p))
      return bad_format(error, format,
                        "the only conversion allowed is one integer (%u %d %i %x %X %o), "
                        "without length modifier or '*'");
    conversions++;
  }
  if (conversions != 1)
    return bad_format(error, format, "it needs exactly one integer conversion such as %06u");
  return TRUE;
}

char *nf_identity_serial(const char *format, guint index, GError **error)
{
  if (!format)
    format = NF_IDENTITY_DEFAULT_SERIAL_FORMAT;
  if (!nf_identity_validate_serial_format(format, error))
    return NULL;
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
  /* Safe: the format was just checked to hold exactly one integer conversion. */
  g_autofree char *serial = g_strdup_printf(format, index);
#pragma GCC diagnostic pop
  if (strlen(serial) > NF_IDENTITY_SERIAL_MAX) {
    g_set_error(error, NF_IDENTITY_ERROR, NF_IDENTITY_ERROR_RANGE,
                "serial \"%s\" from format \"%s\" is longer than %d characters", serial, format,
                NF_IDENTITY_SERIAL_MAX);
    return NULL;
  }
  return g_steal_pointer(&serial);
}

char *nf_identity_mac(const char *fleet, guint index, GError **error)
{
  if (index > 0xffffff) {
    g_set_error(error, NF_IDENTITY_ERROR, NF_IDENTITY_ERROR_RANGE,
                "guest index %u is beyond the 16,777,215 that MAC addresses can encode", index);
    return NULL;
  }
  guint8 digest[32];
  gsize len = sizeof digest;
  g_autoptr(GChecksum) sum = g_checksum_new(G_CHECKSUM_SHA256);
  g_checksum_update(sum, (const guchar *)"nervesfleet-mac:", -1);
  g_checksum_update(sum, (const guchar *)fleet, -1);
  g_checksum_get_digest(sum, digest, &len);
  guint8 first = (guint8)((digest[0] | 0x02) & ~0x01);
  return g_strdup_printf("%02x:%02x:%02x:%02x:%02x:%02x", first, digest[1], digest[2],
                         (index >> 16) & 0xff, (index >> 8) & 0xff, index & 0xff);
}

char *nf_identity_name(const char *fleet, guint index)
{
  return g_strdup_printf("%s-%u", fleet, index);
}
