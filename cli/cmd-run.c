/*
 * cmd-run.c: `nervesfleet run N`: the foreground supervisor. Parses flags
 * into an NfFleetConfig, builds the fleet (which checks every input before
 * anything starts), runs the main loop, and turns Ctrl-C / SIGTERM into an
 * orderly stop (a second Ctrl-C kills at once).
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <glib-unix.h>

#include "cli/parse.h"
#include "cli/progress.h"
#include "cli/verbs.h"
#include "supervisor/accel.h"
#include "supervisor/fleet.h"
#include "supervisor/paths.h"

typedef struct {
  GMainLoop *loop;
  NfFleet *fleet;
  NfProgress *progress;
  int exit_code;
  guint signals_seen;
  gboolean stopping;
} RunState;

static void vm_changed_cb(NfFleet *fleet, NfVm *vm, NfVmState old_state, const char *reason,
                          gpointer data);
static void start_failed_cb(NfFleet *fleet, const GError *error, gpointer data);
static void stopped_cb(NfFleet *fleet, gpointer data);
static gboolean signal_cb(gpointer data);
static gboolean parse_run_options(int *argc, char ***argv, NfFleetConfig *cfg,
                                  gboolean *quiet, GError **error);

static void vm_changed_cb(NfFleet *fleet, NfVm *vm, NfVmState old_state, const char *reason,
                          gpointer data)
{
  RunState *rs = data;
  nf_progress_vm(rs->progress, fleet, vm, old_state, reason);
}

static void start_failed_cb(NfFleet *fleet, const GError *error, gpointer data)
{
  RunState *rs = data;
  nf_progress_finish(rs->progress);
  nf_cli_error("%s", error->message);
  rs->exit_code = NF_EXIT_FAILURE;
  rs->stopping = TRUE;
  nf_fleet_stop(fleet, FALSE);
}

static void stopped_cb(NfFleet *fleet, gpointer data)
{
  RunState *rs = data;
  NfFleetCounts c;
  nf_fleet_counts(fleet, &c);
  nf_progress_say(rs->progress, "fleet stopped (%u stopped, %u failed)", c.stopped, c.failed);
  nf_progress_finish(rs->progress);
  g_main_loop_quit(rs->loop);
}

static gboolean signal_cb(gpointer data)
{
  RunState *rs = data;
  rs->signals_seen++;
  if (rs->signals_seen == 1 && !rs->stopping) {
    NfFleetCounts c;
    nf_fleet_counts(rs->fleet, &c);
    nf_progress_say(rs->progress, "stopping %u guests (Ctrl-C again to kill them now)",
                    c.total - c.stopped - c.failed);
    rs->stopping = TRUE;
    nf_fleet_stop(rs->fleet, FALSE);
  } else {
    nf_progress_say(rs->progress, "killing all guests now");
    nf_fleet_stop(rs->fleet, TRUE);
  }
  return G_SOURCE_CONTINUE;
}

static gboolean parse_run_options(int *argc, char ***argv, NfFleetConfig *cfg,
                                  gboolean *quiet, GError **error)
{
  g_autofree char *name = NULL, *memory = NULL, *accel = NULL, *qemu = NULL, *kernel = NULL,
                  *initrd = NULL, *append = NULL, *state_dir = NULL, *runtime_dir = NULL,
                  *serial_format = NULL, *stop_timeout = NULL, *boot_timeout = NULL,
                  *batch = NULL, *id_offset = NULL;
  g_auto(GStrv) qemu_args = NULL;
  GOptionEntry entries[] = {
      {"name", 'n', 0, G_OPTION_ARG_STRING, &name, "Fleet name (default: default)", "NAME"},
      {"batch", 'b', 0, G_OPTION_ARG_STRING, &batch,
       "Guests booting at once (default: one per core under TCG)", "K"},
      {"memory", 'm', 0, G_OPTION_ARG_STRING, &memory, "Guest RAM (default: 128M)", "SIZE"},
      {"accel", 0, 0, G_OPTION_ARG_STRING, &accel, "auto, kvm, tcg or hvf (default: auto)",
       "ACCEL"},
      {"qemu", 0, 0, G_OPTION_ARG_FILENAME, &qemu,
       "qemu binary (default: qemu-system-aarch64)", "PATH"},
      {"kernel", 0, 0, G_OPTION_ARG_FILENAME, &kernel, "Guest kernel (default: built guest)",
       "FILE"},
      {"initrd", 0, 0, G_OPTION_ARG_FILENAME, &initrd,
       "Guest initramfs (default: built guest)", "FILE"},
      {"append", 0, 0, G_OPTION_ARG_STRING, &append, "Extra kernel command line", "ARGS"},
      {"qemu-arg", 0, 0, G_OPTION_ARG_STRING_ARRAY, &qemu_args,
       "Extra qemu argument (repeatable)", "ARG"},
      {"state-dir", 0, 0, G_OPTION_ARG_FILENAME, &state_dir,
       "Logs and disks (default: $XDG_STATE_HOME/nervesfleet/NAME)", "DIR"},
      {"runtime-dir", 0, 0, G_OPTION_ARG_FILENAME, &runtime_dir,
       "Sockets and pid files (default: $XDG_RUNTIME_DIR/nervesfleet/NAME)", "DIR"},
      {"serial-format", 0, 0, G_OPTION_ARG_STRING, &serial_format,
       "Serial numbers (default: NF-%06u)", "FMT"},
      {"id-offset", 0, 0, G_OPTION_ARG_STRING, &id_offset,
       "First guest id minus one (default: 0)", "K"},
      {"stop-timeout", 0, 0, G_OPTION_ARG_STRING, &stop_timeout,
       "Seconds between QMP quit and SIGKILL (default: 10)", "S"},
      {"boot-timeout", 0, 0, G_OPTION_ARG_STRING, &boot_timeout,
       "Seconds from start to ready line before a guest fails (default: 180)", "S"},
      {"quiet", 'q', 0, G_OPTION_ARG_NONE, quiet, "Only the status line and failures", NULL},
      {NULL}};
  g_autoptr(GOptionContext) ctx = g_option_context_new("N");
  g_option_context_set_summary(
      ctx, "Starts N guests in batches and supervises them until Ctrl-C or SIGTERM,\n"
           "which stops them in order (a second Ctrl-C kills them at once).");
  g_option_context_add_main_entries(ctx, entries, NULL);
  if (!g_option_context_parse(ctx, argc, argv, error))
    return FALSE;

  /* GOption leaves a "--" separator in place; it only ends the options. */
  if (*argc >= 2 && g_strcmp0((*argv)[1], "--") == 0) {
    memmove(*argv + 1, *argv + 2, sizeof(char *) * (gsize)(*argc - 1));
    (*argc)--;
  }
  if (*argc != 2) {
    g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                *argc < 2 ? "missing the guest count N (e.g. `nervesfleet run 4`)"
                          : "too many arguments: expected only the guest count N");
    return FALSE;
  }
  if (!nf_parse_count("guest count", (*argv)[1], 100000, &cfg->count, error))
    return FALSE;
  if (name) {
    g_free(cfg->name);
    cfg->name = g_steal_pointer(&name);
  }
  if (batch && !nf_parse_count("--batch", batch, 100000, &cfg->batch, error))
    return FALSE;
  if (memory && !nf_parse_size_mib("--memory", memory, &cfg->memory_mib, error))
    return FALSE;
  if (accel && !nf_accel_parse(accel, &cfg->accel, error))
    return FALSE;
  if (qemu) {
    g_free(cfg->qemu);
    cfg->qemu = g_steal_pointer(&qemu);
  }
  g_autofree char *guest_dir = nf_paths_default_guest_dir();
  cfg->kernel = kernel ? g_steal_pointer(&kernel) : g_build_filename(guest_dir, "vmlinuz", NULL);
  cfg->initrd = initrd ? g_steal_pointer(&initrd) : g_build_filename(guest_dir, "initrd.gz", NULL);
  cfg->append = g_steal_pointer(&append);
  cfg->qemu_args = g_steal_pointer(&qemu_args);
  cfg->state_dir = g_steal_pointer(&state_dir);
  cfg->runtime_dir = g_steal_pointer(&runtime_dir);
  if (serial_format) {
    g_free(cfg->serial_format);
    cfg->serial_format = g_steal_pointer(&serial_format);
  }
  if (id_offset) {
    guint v = 0;
    if (g_strcmp0(id_offset, "0") != 0 &&
        !nf_parse_count("--id-offset", id_offset, 10000000, &v, error))
      return FALSE;
    cfg->id_offset = v;
  }
  if (stop_timeout && !nf_parse_seconds_ms("--stop-timeout", stop_timeout,
                                           &cfg->stop_timeout_ms, error))
    return FALSE;
  if (boot_timeout && !nf_parse_seconds_ms("--boot-timeout", boot_timeout,
                                           &cfg->boot_timeout_ms, error))
    return FALSE;
  return TRUE;
}

int nf_cmd_run(int argc, char **argv)
{
  g_autoptr(GError) error = NULL;
  NfFleetConfig cfg;
  gboolean quiet = FALSE;
  nf_fleet_config_init(&cfg);
  g_set_prgname("nervesfleet run");

  if (!parse_run_options(&argc, &argv, &cfg, &quiet, &error)) {
    nf_cli_error("run: %s; see `nervesfleet run --help`", error->message);
    nf_fleet_config_clear(&cfg);
    return NF_EXIT_USAGE;
  }

  RunState rs = {.exit_code = NF_EXIT_OK};
  rs.loop = g_main_loop_new(NULL, FALSE);
  rs.progress = nf_progress_new(stdout, isatty(STDOUT_FILENO), quiet);
  static const NfFleetCallbacks cb = {
      .vm_changed = vm_changed_cb, .start_failed = start_failed_cb, .stopped = stopped_cb};
  rs.fleet = nf_fleet_new(&cfg, &cb, &rs, &error);
  if (rs.fleet == NULL) {
    nf_cli_error("run: %s", error->message);
    nf_progress_free(rs.progress);
    g_main_loop_unref(rs.loop);
    nf_fleet_config_clear(&cfg);
    return NF_EXIT_FAILURE;
  }
  guint sigs[] = {g_unix_signal_add(SIGINT, signal_cb, &rs),
                  g_unix_signal_add(SIGTERM, signal_cb, &rs),
                  g_unix_signal_add(SIGHUP, signal_cb, &rs)};

  nf_progress_say(rs.progress, "fleet '%s': %u guests, %s, %" G_GUINT64_FORMAT "M each, %u booting at once",
                  cfg.name, cfg.count, nf_accel_name(nf_fleet_accel(rs.fleet)), cfg.memory_mib,
                  nf_fleet_batch(rs.fleet));
  nf_progress_say(rs.progress, "logs in %s; Ctrl-C stops the fleet", nf_fleet_state_dir(rs.fleet));
  nf_fleet_start(rs.fleet);
  g_main_loop_run(rs.loop);

  for (gsize i = 0; i < G_N_ELEMENTS(sigs); i++)
    g_source_remove(sigs[i]);
  nf_fleet_free(rs.fleet);
  nf_progress_free(rs.progress);
  g_main_loop_unref(rs.loop);
  nf_fleet_config_clear(&cfg);
  return rs.exit_code;
}
