/*
 * cmd-fleet.c: `scale N` and `balloon TARGET SIZE`: change a running
 * fleet's size or its guests' memory through the control socket. Scaling
 * down stops the highest ids and returns once they are gone; scaling up
 * returns once the new guests are queued (--wait: ready). balloon returns
 * with the size each guest reached, and fails (exit 1) naming each guest
 * that had not reached it when --timeout passed.
 */
#include <stdio.h>
#include <string.h>

#include "cli/client.h"
#include "cli/fleet-verbs.h"
#include "cli/parse.h"
#include "cli/verbs.h"
#include "supervisor/targets.h"

int nf_cmd_scale(int argc, char **argv)
{
  g_auto(NfClientOptions) o = {0};
  gboolean wait = FALSE;
  g_autofree char *timeout = NULL;
  GOptionEntry entries[] = {
      {"wait", 'w', 0, G_OPTION_ARG_NONE, &wait, "When growing, return once all are ready", NULL},
      {"timeout", 't', 0, G_OPTION_ARG_STRING, &timeout, "Give up waiting after S seconds", "S"},
      NF_CLIENT_OPTION_ENTRIES(&o),
      {NULL}};
  if (!nf_client_parse_args("scale", "N",
                            "Grows the fleet to N guests (new ids, through the batch limiter)\n"
                            "or shrinks it (the highest ids are stopped and removed).",
                            entries, &argc, &argv))
    return NF_EXIT_USAGE;
  g_autoptr(GError) error = NULL;
  guint count = 0, timeout_ms = 0;
  if (argc != 2) {
    nf_cli_error("scale: %s; see `nervesfleet scale --help`",
                 argc < 2 ? "missing the guest count N" : "too many arguments");
    return NF_EXIT_USAGE;
  }
  if (!nf_parse_count("guest count", argv[1], 100000, &count, &error) ||
      (timeout && !nf_parse_seconds_ms("--timeout", timeout, &timeout_ms, &error))) {
    nf_cli_error("scale: %s", error->message);
    return NF_EXIT_USAGE;
  }
  g_autoptr(NfClient) c = nf_client_connect(&o, &error);
  if (!c)
    return nf_client_fail("scale", error, NULL);
  /* Shrinking always waits for the removed guests to be down: the caller
   * asked for fewer running guests, not for a stop to begin. */
  json_t *args = json_pack("{s:i, s:b}", "count", (int)count, "wait", TRUE);
  if (timeout_ms)
    json_object_set_new(args, "timeout_ms", json_integer(timeout_ms));
  json_int_t before = json_integer_value(json_object_get(nf_client_hello(c), "count"));
  if ((json_int_t)count > before && !wait)
    json_object_set_new(args, "wait", json_false());
  json_auto_t *result = nf_client_call(c, "scale", args, 0, &error);
  if (!result) {
    int rc = nf_client_fail("scale", error, c);
    nf_client_print_problems(c, 10);
    return rc;
  }
  printf("fleet scaled from %" JSON_INTEGER_FORMAT " to %" JSON_INTEGER_FORMAT " guests\n",
         json_integer_value(json_object_get(result, "previous")),
         json_integer_value(json_object_get(result, "count")));
  return NF_EXIT_OK;
}

int nf_cmd_balloon(int argc, char **argv)
{
  g_auto(NfClientOptions) o = {0};
  g_autofree char *timeout = NULL;
  GOptionEntry entries[] = {{"timeout", 't', 0, G_OPTION_ARG_STRING, &timeout,
                             "Wait at most S seconds for the guests to reach SIZE (default: 10)",
                             "S"},
                            NF_CLIENT_OPTION_ENTRIES(&o),
                            {NULL}};
  if (!nf_client_parse_args("balloon", "TARGET SIZE",
                            "Sets the balloon target of guests (e.g. 96M: the guest keeps that\n"
                            "much RAM) and prints the size each one reached.",
                            entries, &argc, &argv))
    return NF_EXIT_USAGE;
  if (argc != 3) {
    nf_cli_error("balloon: expected TARGET SIZE (e.g. `nervesfleet balloon all 96M`)");
    return NF_EXIT_USAGE;
  }
  g_autoptr(GError) error = NULL;
  g_autoptr(NfTargets) t = nf_targets_parse(argv[1], &error);
  guint64 mib = 0;
  guint timeout_ms = 10000;
  if (!t || !nf_parse_size_mib("SIZE", argv[2], &mib, &error) ||
      (timeout && !nf_parse_seconds_ms("--timeout", timeout, &timeout_ms, &error))) {
    nf_cli_error("balloon: %s", error->message);
    return NF_EXIT_USAGE;
  }
  g_autoptr(NfClient) c = nf_client_connect(&o, &error);
  if (!c)
    return nf_client_fail("balloon", error, NULL);
  json_auto_t *result =
      nf_client_call(c, "balloon",
                     json_pack("{s:s, s:I, s:i}", "targets", argv[1], "bytes",
                               (json_int_t)(mib << 20), "timeout_ms", (int)timeout_ms),
                     timeout_ms + NF_CLIENT_TIMEOUT_MS, &error);
  if (!result)
    return nf_client_fail("balloon", error, c);
  int rc = NF_EXIT_OK;
  gsize i;
  json_t *g;
  json_array_foreach(json_object_get(result, "guests"), i, g)
  {
    const char *name = json_string_value(json_object_get(g, "name"));
    const char *err = json_string_value(json_object_get(g, "error"));
    json_t *actual = json_object_get(g, "actual_bytes");
    if (err) {
      fprintf(stderr, "nervesfleet: balloon: %s: %s\n", name, err);
      rc = NF_EXIT_FAILURE;
    } else if (json_is_true(json_object_get(g, "reached"))) {
      printf("%s balloon %" G_GUINT64_FORMAT "M\n", name, mib);
    } else {
      /* Asked and not there: a failure to say, not a line to skim past. */
      fprintf(stderr,
              "nervesfleet: balloon: %s is at %" JSON_INTEGER_FORMAT "M, target %" G_GUINT64_FORMAT
              "M not reached within %g s (more than the guest's RAM? a guest without a "
              "balloon driver?)\n",
              name, json_is_integer(actual) ? json_integer_value(actual) >> 20 : 0, mib,
              timeout_ms / 1000.0);
      rc = NF_EXIT_FAILURE;
    }
  }
  return rc;
}
