/*
 * cmd-mem.c: `nervesfleet mem [--json]`: where the fleet's memory goes. The
 * supervisor's `mem` command reads /proc for each guest (RSS, and PSS, where
 * pages shared between guests, KSM-merged ones included, count once across
 * the fleet) and the guests' own balloon stats; this prints it for people,
 * or the document as is (schema in supervisor/control-protocol.md).
 */
#include <stdio.h>

#include "cli/client.h"
#include "cli/fleet-verbs.h"
#include "cli/verbs.h"

static char *mib(json_t *v);
static void print_table(json_t *r);

static char *mib(json_t *v)
{
  if (!json_is_integer(v))
    return g_strdup("-");
  return g_strdup_printf("%.0fM", (double)json_integer_value(v) / (1024.0 * 1024));
}

static void print_table(json_t *r)
{
  json_t *host = json_object_get(r, "host"), *psi = json_object_get(host, "psi");
  json_t *ksm = json_object_get(r, "ksm");
  g_autofree char *total = mib(json_object_get(host, "total_bytes"));
  g_autofree char *avail = mib(json_object_get(host, "available_bytes"));
  printf("host: %s total, %s available (%.0f%%)", total, avail,
         json_number_value(json_object_get(host, "available_pct")));
  if (json_is_object(psi))
    printf(", memory pressure some %.2f%% full %.2f%% (avg10)",
           json_number_value(json_object_get(psi, "some_avg10")),
           json_number_value(json_object_get(psi, "full_avg10")));
  printf("\n");
  g_autofree char *saved = mib(json_object_get(ksm, "saved_bytes"));
  if (!json_is_true(json_object_get(ksm, "present")))
    printf("KSM: not in this kernel\n");
  else
    printf("KSM: %s on the host, %s for this fleet (--ksm %s), saving %s host-wide\n",
           json_integer_value(json_object_get(ksm, "run")) == 1 ? "running" : "stopped",
           json_is_true(json_object_get(ksm, "fleet_uses")) ? "on" : "off",
           json_string_value(json_object_get(ksm, "mode")), saved);
  printf("%-8s %-10s %7s %7s %7s %7s %15s %15s\n", "NAME", "STATE", "PID", "RSS", "PSS", "KSM",
         "BALLOON TGT/ACT", "GUEST FREE/AVL");
  gsize i;
  json_t *g;
  json_array_foreach(json_object_get(r, "guests"), i, g)
  {
    json_t *pid = json_object_get(g, "pid");
    g_autofree char *p = json_is_integer(pid)
                             ? g_strdup_printf("%" JSON_INTEGER_FORMAT, json_integer_value(pid))
                             : g_strdup("-");
    g_autofree char *rss = mib(json_object_get(g, "rss_bytes"));
    g_autofree char *pss = mib(json_object_get(g, "pss_bytes"));
    g_autofree char *merged = mib(json_object_get(g, "ksm_merged_bytes"));
    g_autofree char *tgt = mib(json_object_get(g, "balloon_target_bytes"));
    g_autofree char *act = mib(json_object_get(g, "balloon_actual_bytes"));
    g_autofree char *fr = mib(json_object_get(g, "guest_free_bytes"));
    g_autofree char *av = mib(json_object_get(g, "guest_available_bytes"));
    g_autofree char *bal = g_strdup_printf("%s/%s", tgt, act);
    g_autofree char *gm = g_strdup_printf("%s/%s", fr, av);
    printf("%-8s %-10s %7s %7s %7s %7s %15s %15s\n", json_string_value(json_object_get(g, "name")),
           json_string_value(json_object_get(g, "state")), p, rss, pss, merged, bal, gm);
  }
  g_autofree char *pss = mib(json_object_get(r, "pss_bytes"));
  g_autofree char *per = mib(json_object_get(r, "pss_per_guest_bytes"));
  printf("%" JSON_INTEGER_FORMAT " running: qemu PSS %s in all, %s per guest\n",
         json_integer_value(json_object_get(r, "running")), pss, per);
}

int nf_cmd_mem(int argc, char **argv)
{
  g_auto(NfClientOptions) o = {0};
  gboolean json = FALSE;
  GOptionEntry entries[] = {
      {"json", 0, 0, G_OPTION_ARG_NONE, &json, "Print the JSON document", NULL},
      NF_CLIENT_OPTION_ENTRIES(&o),
      {NULL}};
  if (!nf_client_parse_args("mem", NULL,
                            "Where the fleet's memory goes: host total, available and pressure;\n"
                            "KSM state and saving; per guest qemu RSS, PSS (shared pages split\n"
                            "among their users), KSM-merged pages, balloon target/actual and\n"
                            "what the guest kernel reports free/available; PSS per guest.",
                            entries, &argc, &argv))
    return NF_EXIT_USAGE;
  if (argc > 1) {
    nf_cli_error("mem: unexpected argument '%s'; see `nervesfleet mem --help`", argv[1]);
    return NF_EXIT_USAGE;
  }
  g_autoptr(GError) error = NULL;
  g_autoptr(NfClient) c = nf_client_connect(&o, &error);
  if (!c)
    return nf_client_fail("mem", error, NULL);
  json_auto_t *result = nf_client_call(c, "mem", json_object(), NF_CLIENT_TIMEOUT_MS, &error);
  if (!result)
    return nf_client_fail("mem", error, c);
  nf_client_print_result(result, json, print_table);
  return NF_EXIT_OK;
}
