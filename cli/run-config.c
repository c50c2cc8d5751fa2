/*
 * run-config.c: fleet files for `nervesfleet run` (see run-config.h). The
 * file is turned into command-line options rather than into a config
 * struct, so every check, default and error message of run-options.c
 * applies to it unchanged, and a new flag is a new key for free.
 */
#include <stdlib.h>
#include <string.h>
#include <jansson.h>

#include "cli/run-config.h"
#include "supervisor/accel.h"
#include "supervisor/qemu-argv.h"
#include "supervisor/restart-policy.h"

#define FLEET_GROUP "fleet"

static const GOptionEntry *find_entry(const GOptionEntry *const *tables, const char *name);
static gboolean on_command_line(int argc, char **argv, const char *name);
static gboolean add_key(GPtrArray *out, GKeyFile *kf, const char *file, const char *key,
                        const GOptionEntry *e, int argc, char **argv, GError **error);
static const char *config_path(int argc, char **argv, int *at, int *width, GError **error);

static const GOptionEntry *find_entry(const GOptionEntry *const *tables, const char *name)
{
  for (const GOptionEntry *const *t = tables; *t; t++)
    for (const GOptionEntry *e = *t; e->long_name; e++)
      if (g_str_equal(e->long_name, name))
        return e;
  return NULL;
}

/* --NAME or --NAME=... among the command line's own arguments. */
static gboolean on_command_line(int argc, char **argv, const char *name)
{
  gsize len = strlen(name);
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (g_str_equal(a, "--"))
      break;
    if (g_str_has_prefix(a, "--") && strncmp(a + 2, name, len) == 0 &&
        (a[2 + len] == '\0' || a[2 + len] == '='))
      return TRUE;
  }
  return FALSE;
}

static gboolean add_key(GPtrArray *out, GKeyFile *kf, const char *file, const char *key,
                        const GOptionEntry *e, int argc, char **argv, GError **error)
{
  g_autoptr(GError) local = NULL;
  switch (e->arg) {
  case G_OPTION_ARG_NONE: {
    gboolean on = g_key_file_get_boolean(kf, FLEET_GROUP, key, &local);
    if (local) {
      g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                  "%s: key '%s' is a switch: use %s=true or %s=false", file, key, key, key);
      return FALSE;
    }
    if (on)
      g_ptr_array_add(out, g_strdup_printf("--%s", key));
    return TRUE;
  }
  case G_OPTION_ARG_STRING_ARRAY: {
    if (on_command_line(argc, argv, key))
      return TRUE; /* the command line's list replaces the file's */
    g_auto(GStrv) list = g_key_file_get_string_list(kf, FLEET_GROUP, key, NULL, &local);
    if (list == NULL) {
      g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE, "%s: key '%s': %s", file, key,
                  local->message);
      return FALSE;
    }
    for (char **v = list; *v; v++)
      g_ptr_array_add(out, g_strdup_printf("--%s=%s", key, *v));
    return TRUE;
  }
  default: {
    g_autofree char *value = g_key_file_get_string(kf, FLEET_GROUP, key, &local);
    if (value == NULL) {
      g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE, "%s: key '%s': %s", file, key,
                  local->message);
      return FALSE;
    }
    g_ptr_array_add(out, g_strdup_printf("--%s=%s", key, value));
    return TRUE;
  }
  }
}

/* Where --config is in argv: its index and how many arguments it takes (1
 * for --config=FILE, 2 for --config FILE). NULL when absent (not an error,
 * *at stays -1) or given twice (an error). */
static const char *config_path(int argc, char **argv, int *at, int *width, GError **error)
{
  for (int i = 1; i < argc; i++) {
    if (g_str_equal(argv[i], "--"))
      break;
    if (g_str_has_prefix(argv[i], "--config=")) {
      if (*at >= 0)
        break; /* a second one: an error below */
      *at = i;
      *width = 1;
      continue;
    }
    if (g_str_equal(argv[i], "--config")) {
      if (*at >= 0)
        break;
      if (i + 1 >= argc) {
        g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "--config needs a fleet file (e.g. --config /etc/nervesfleet/lab.conf)");
        return NULL;
      }
      *at = i;
      *width = 2;
      i++;
    }
  }
  if (*at < 0)
    return NULL;
  for (int i = *at + *width; i < argc && !g_str_equal(argv[i], "--"); i++)
    if (g_str_equal(argv[i], "--config") || g_str_has_prefix(argv[i], "--config=")) {
      g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                  "--config given twice: one fleet file per fleet (the command line adds to it)");
      return NULL;
    }
  return *width == 1 ? argv[*at] + strlen("--config=") : argv[*at + 1];
}

char **nf_run_config_expand(int argc, char **argv, const GOptionEntry *const *tables, int *argc_out,
                            GError **error)
{
  g_autoptr(GError) local = NULL;
  int at = -1, width = 0;
  const char *file = config_path(argc, argv, &at, &width, &local);
  if (local) {
    g_propagate_error(error, g_steal_pointer(&local));
    return NULL;
  }
  g_autoptr(GPtrArray) out = g_ptr_array_new_with_free_func(g_free);
  g_ptr_array_add(out, g_strdup(argc > 0 ? argv[0] : "run"));
  if (file) {
    g_autoptr(GKeyFile) kf = g_key_file_new();
    if (!g_key_file_load_from_file(kf, file, G_KEY_FILE_NONE, &local)) {
      g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE, "--config %s: %s", file,
                  local->message);
      return NULL;
    }
    g_auto(GStrv) groups = g_key_file_get_groups(kf, NULL);
    for (char **g = groups; *g; g++)
      if (!g_str_equal(*g, FLEET_GROUP)) {
        g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "%s: unknown group [%s]; a fleet file has one group, [fleet]", file, *g);
        return NULL;
      }
    g_auto(GStrv) keys = g_key_file_get_keys(kf, FLEET_GROUP, NULL, NULL);
    for (char **k = keys; k && *k; k++) {
      const GOptionEntry *e = find_entry(tables, *k);
      if (e == NULL) {
        g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_UNKNOWN_OPTION,
                    "%s: unknown key '%s' in [fleet]; keys are run's long options without the "
                    "dashes (e.g. memory=256M)",
                    file, *k);
        return NULL;
      }
      if (g_str_equal(*k, "config") || g_str_equal(*k, "exec") || g_str_equal(*k, "print-config")) {
        g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "%s: key '%s' cannot be set in a fleet file; give --%s on the command line",
                    file, *k, *k);
        return NULL;
      }
      if (!add_key(out, kf, file, *k, e, argc, argv, error))
        return NULL;
    }
  }
  for (int i = 1; i < argc; i++)
    if (i < at || i >= at + width || at < 0)
      g_ptr_array_add(out, g_strdup(argv[i]));
  *argc_out = (int)out->len;
  g_ptr_array_add(out, NULL);
  return (char **)g_ptr_array_free(g_steal_pointer(&out), FALSE);
}

char *nf_run_config_to_json(const NfFleetConfig *cfg, const NfRunMode *mode, const char *http)
{
  static const char *const profiles[] = {"sim", "nerves"};
  static const char *const nets[] = {"none", "user", "tap"};
  static const char *const balloons[] = {"guard", "auto", "off"};
  json_t *forwards = json_array();
  for (guint i = 0; i < cfg->n_forwards; i++)
    json_array_append_new(forwards, json_integer(cfg->forwards[i]));
  json_t *qemu_args = json_array();
  for (char **a = cfg->qemu_args; a && *a; a++)
    json_array_append_new(qemu_args, json_string(*a));
  json_t *doc = json_pack(
      "{s:s, s:I, s:I, s:I, s:s, s:s?, s:s?, s:s?, s:s?, s:o, s:s?, s:s?, s:s, s:I, s:I, s:I, "
      "s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:s, s:s?, s:s?, s:b, s:b, s:s}",
      "name", cfg->name, "count", (json_int_t)cfg->count, "batch", (json_int_t)cfg->batch,
      "memory_mib", (json_int_t)cfg->memory_mib, "accel", nf_accel_name(cfg->accel), "qemu",
      cfg->qemu, "kernel", cfg->kernel, "initrd", cfg->initrd, "append", cfg->append, "qemu_args",
      qemu_args, "state_dir", cfg->state_dir, "runtime_dir", cfg->runtime_dir, "serial_format",
      cfg->serial_format, "id_offset", (json_int_t)cfg->id_offset, "stop_timeout_ms",
      (json_int_t)cfg->stop_timeout_ms, "boot_timeout_ms", (json_int_t)cfg->boot_timeout_ms,
      "ready_marker", cfg->ready_marker, "restart", nf_restart_mode_name(cfg->restart.mode),
      "backoff_ms", (json_int_t)cfg->restart.backoff_initial_ms, "backoff_max_ms",
      (json_int_t)cfg->restart.backoff_max_ms, "max_restarts",
      (json_int_t)cfg->restart.max_restarts, "restart_window_ms",
      (json_int_t)cfg->restart.window_ms, "health_interval_ms", (json_int_t)cfg->health_interval_ms,
      "health_timeout_ms", (json_int_t)cfg->health_timeout_ms, "heartbeat_timeout_ms",
      (json_int_t)cfg->heartbeat_timeout_ms, "memory_limit_mib", (json_int_t)cfg->memory_limit_mib,
      "profile", profiles[cfg->profile], "disk", cfg->disk, "disk_format", cfg->disk_format,
      "reflash_all", cfg->reflash_all, "ksm", cfg->ksm, "balloon_policy",
      balloons[cfg->balloon_policy]);
  static const char *const classes[] = {"normal", "batch", "idle"};
  static const char *const affinities[] = {"auto", "none", "core"};
  json_object_set_new(doc, "ready_sched", json_string(classes[cfg->ready_sched]));
  json_object_set_new(doc, "boot_affinity", json_string(affinities[cfg->boot_affinity]));
  json_object_set_new(doc, "dense", json_boolean(cfg->dense));
  json_object_set_new(doc, "log_max", json_integer((json_int_t)cfg->log_max));
  json_object_set_new(doc, "tb_mib", json_integer(nf_qemu_tb_mib(cfg->tb_mib, cfg->dense)));
  json_object_set_new(doc, "net", json_string(nets[cfg->net]));
  json_object_set_new(doc, "forwards", forwards);
  json_object_set_new(doc, "forward_base", json_integer(cfg->forward_base));
  json_object_set_new(doc, "server", cfg->server ? json_string(cfg->server) : json_null());
  json_object_set_new(doc, "ready", json_string(cfg->ready_http ? "http" : "console"));
  json_object_set_new(doc, "detach", json_boolean(mode->detach));
  json_object_set_new(doc, "quiet", json_boolean(mode->quiet));
  json_object_set_new(doc, "ephemeral", json_boolean(mode->ephemeral));
  json_object_set_new(doc, "http", http ? json_string(http) : json_null());
  json_object_set_new(
      doc, "notify_ready",
      json_string(mode->notify_ready == NF_NOTIFY_READY_STARTED ? "started" : "ready"));
  char *text = json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS);
  json_decref(doc);
  char *owned = g_strdup(text);
  free(text);
  return owned;
}
