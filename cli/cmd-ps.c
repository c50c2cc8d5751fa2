/*
 * cmd-ps.c: `nervesfleet ps [--json] [TARGET]`: what every guest is doing.
 * The supervisor answers from memory (control `ps`), so this is one round
 * trip however many guests run. --json prints the reply's result as is (its
 * bytes, not parsed and encoded again: cli/reply-scan.h): a
 * stable schema documented in supervisor/control-protocol.md; otherwise a
 * table for people, with a firmware column (active slot, validated) only
 * when some guest runs Nerves firmware, so sim fleets keep a narrow table.
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli/client.h"
#include "cli/fleet-verbs.h"
#include "cli/ps-summary.h"
#include "cli/verbs.h"
#include "supervisor/targets.h"

static void print_table(json_t *result);
static char *fmt_bytes(json_t *v);
static char *fmt_secs(json_t *v);
static char *fmt_firmware(json_t *guest);

static char *fmt_bytes(json_t *v)
{
  if (!json_is_integer(v))
    return g_strdup("-");
  double b = (double)json_integer_value(v);
  if (b >= 1024.0 * 1024 * 1024)
    return g_strdup_printf("%.1fG", b / (1024.0 * 1024 * 1024));
  return g_strdup_printf("%.0fM", b / (1024.0 * 1024));
}

static char *fmt_secs(json_t *v)
{
  if (!json_is_number(v))
    return g_strdup("-");
  guint64 s = (guint64)json_number_value(v);
  if (s < 60)
    return g_strdup_printf("%" G_GUINT64_FORMAT "s", s);
  if (s < 3600)
    return g_strdup_printf("%" G_GUINT64_FORMAT "m%02" G_GUINT64_FORMAT "s", s / 60, s % 60);
  if (s < 86400)
    return g_strdup_printf("%" G_GUINT64_FORMAT "h%02" G_GUINT64_FORMAT "m", s / 3600, s / 60 % 60);
  return g_strdup_printf("%" G_GUINT64_FORMAT "d%02" G_GUINT64_FORMAT "h", s / 86400,
                         s / 3600 % 24);
}

/* "a", "a valid" or "b unvalidated" from a guest's extras; NULL when its
 * disk has no Nerves firmware env. An unvalidated slot is the one a reboot
 * reverts, which is what someone watching an OTA rollout looks for. */
static char *fmt_firmware(json_t *guest)
{
  json_t *extras = json_object_get(guest, "extras");
  const char *active = json_string_value(json_object_get(extras, "fw_active"));
  if (!active)
    return NULL;
  const char *validated = json_string_value(json_object_get(extras, "fw_validated"));
  if (!validated)
    return g_strdup(active);
  return g_strdup_printf(
      "%s %s", active,
      strcmp(validated, "1") == 0 || strcmp(validated, "true") == 0 ? "valid" : "unvalidated");
}

/* "20001->22,20002->80" from the guest's `ports`, or NULL without any. */
static char *fmt_ports(json_t *guest)
{
  json_t *ports = json_object_get(guest, "ports");
  if (json_array_size(ports) == 0)
    return NULL;
  GString *s = g_string_new(NULL);
  gsize i;
  json_t *p;
  json_array_foreach(ports, i, p)
  {
    g_string_append_printf(s, "%s%" JSON_INTEGER_FORMAT "->%" JSON_INTEGER_FORMAT, i ? "," : "",
                           json_integer_value(json_object_get(p, "host")),
                           json_integer_value(json_object_get(p, "guest")));
  }
  return g_string_free(s, FALSE);
}

static void print_table(json_t *result)
{
  json_t *guests = json_object_get(result, "guests");
  GString *out = g_string_sized_new(128 + 128 * json_array_size(guests));
  gsize i;
  json_t *g;
  gboolean firmware = FALSE;
  int ports_width = 0; /* 0: no PORTS column */
  json_array_foreach(guests, i, g)
  {
    firmware = firmware || json_object_get(json_object_get(g, "extras"), "fw_active") != NULL;
    g_autofree char *ports = fmt_ports(g);
    if (ports)
      ports_width = MAX(ports_width, MAX((int)strlen(ports), 5));
  }
  g_string_append_printf(out, "%-8s %-10s %-10s %7s %8s %4s %7s %7s %7s  ", "NAME", "SERIAL",
                         "STATE", "PID", "UPTIME", "RST", "BALLOON", "RSS", "PSS");
  if (firmware)
    g_string_append_printf(out, "%-13s  ", "FIRMWARE");
  if (ports_width)
    g_string_append_printf(out, "%-*s  ", ports_width, "PORTS");
  g_string_append(out, "LAST EXIT\n");
  json_array_foreach(guests, i, g)
  {
    g_autofree char *pid = json_is_integer(json_object_get(g, "pid"))
                               ? g_strdup_printf("%" JSON_INTEGER_FORMAT,
                                                 json_integer_value(json_object_get(g, "pid")))
                               : g_strdup("-");
    g_autofree char *up = fmt_secs(json_object_get(g, "uptime_s"));
    g_autofree char *bal = fmt_bytes(json_object_get(g, "balloon_bytes"));
    g_autofree char *rss = fmt_bytes(json_object_get(g, "rss_bytes"));
    g_autofree char *pss = fmt_bytes(json_object_get(g, "pss_bytes"));
    json_t *last = json_object_get(g, "last_exit");
    const char *why =
        json_is_object(last) ? json_string_value(json_object_get(last, "reason")) : NULL;
    if (!why && json_is_object(last))
      why = json_string_value(json_object_get(last, "kind"));
    g_string_append_printf(out, "%-8s %-10s %-10s %7s %8s %4" JSON_INTEGER_FORMAT " %7s %7s %7s  ",
                           json_string_value(json_object_get(g, "name")),
                           json_string_value(json_object_get(g, "serial")) ?: "-",
                           json_string_value(json_object_get(g, "state")), pid, up,
                           json_integer_value(json_object_get(g, "restarts")), bal, rss, pss);
    if (firmware) {
      g_autofree char *fw = fmt_firmware(g);
      g_string_append_printf(out, "%-13s  ", fw ? fw : "-");
    }
    if (ports_width) {
      g_autofree char *ports = fmt_ports(g);
      g_string_append_printf(out, "%-*s  ", ports_width, ports ? ports : "-");
    }
    g_string_append_printf(out, "%s\n", why ? why : "-");
  }
  g_autofree char *summary = nf_ps_summary(result);
  g_string_append_printf(out, "%s\n", summary);
  /* Files the supervisor could not write (a full state dir): said under
   * the table, since the logs themselves cannot say it. */
  json_array_foreach(guests, i, g)
  {
    const char *werr =
        json_string_value(json_object_get(json_object_get(g, "extras"), "write_error"));
    if (werr)
      g_string_append_printf(out, "warning: %s: %s\n",
                             json_string_value(json_object_get(g, "name")), werr);
  }
  fwrite(out->str, 1, out->len, stdout);
  g_string_free(out, TRUE);
}

int nf_cmd_ps(int argc, char **argv)
{
  g_auto(NfClientOptions) o = {0};
  gboolean json = FALSE;
  GOptionEntry entries[] = {
      {"json", 0, 0, G_OPTION_ARG_NONE, &json, "Print the stable JSON document", NULL},
      NF_CLIENT_OPTION_ENTRIES(&o),
      {NULL}};
  if (!nf_client_parse_args("ps", "[TARGET]",
                            "Lists the fleet's guests: state, pid, uptime, restarts, last exit,\n"
                            "balloon size, qemu RSS and PSS (shared pages split among their\n"
                            "users: what the host really spends), forwarded host ports (PORTS)\n"
                            "and, for Nerves firmware, the active slot.\n"
                            "TARGET: 3, 3-17, 1,4,7-9 or all.",
                            entries, &argc, &argv))
    return NF_EXIT_USAGE;
  if (argc > 2) {
    nf_cli_error("ps: too many arguments; see `nervesfleet ps --help`");
    return NF_EXIT_USAGE;
  }
  const char *target = argc == 2 ? argv[1] : "all";
  g_autoptr(GError) error = NULL;
  g_autoptr(NfTargets) t = nf_targets_parse(target, &error);
  if (!t) {
    nf_cli_error("ps: %s", error->message);
    return NF_EXIT_USAGE;
  }
  g_autoptr(NfClient) c = nf_client_connect(&o, &error);
  if (!c)
    return nf_client_fail("ps", error, NULL);
  json_t *args = json_pack("{s:s}", "targets", target);
  if (json) {
    /* As the supervisor wrote it: at thousands of guests, parsing and
     * encoding it again was most of this command's CPU (issue 17). */
    if (!nf_client_call_print(c, "ps", args, NF_CLIENT_TIMEOUT_MS, stdout, &error))
      return nf_client_fail("ps", error, c);
    return NF_EXIT_OK;
  }
  json_auto_t *result = nf_client_call(c, "ps", args, NF_CLIENT_TIMEOUT_MS, &error);
  if (!result)
    return nf_client_fail("ps", error, c);
  nf_client_print_result(result, json, print_table);
  return NF_EXIT_OK;
}
