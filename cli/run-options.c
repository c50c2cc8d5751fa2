/*
 * run-options.c: flags of `nervesfleet run` (see run-options.h). Every value
 * is checked here, with an error that names the flag and an example.
 */
#include <string.h>

#include "cli/parse.h"
#include "cli/run-config.h"
#include "cli/run-options.h"
#include "supervisor/accel.h"
#include "supervisor/net.h"
#include "supervisor/ksm.h"
#include "supervisor/paths.h"
#include "supervisor/snapshot.h"
#include "supervisor/shard.h"

/* `text` is one of `names` (n of them): *index is its place. Otherwise an
 * error naming the flag, the value and the choices. */
static gboolean parse_choice(const char *flag, const char *text, const char *const *names, guint n,
                             guint *index, GError **error)
{
  for (guint i = 0; i < n; i++)
    if (g_str_equal(text, names[i])) {
      *index = i;
      return TRUE;
    }
  g_autoptr(GString) choices = g_string_new(NULL);
  for (guint i = 0; i < n; i++)
    g_string_append_printf(choices, "%s%s", i == 0 ? "" : i + 1 == n ? " or " : ", ", names[i]);
  g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE, "%s '%s': use %s (e.g. %s %s)", flag,
              text, choices->str, flag, names[n - 1]);
  return FALSE;
}

/* The --exec command can be run: checked before any guest boots, so that a
 * CI job with a typo in it fails at once, not after the whole fleet came up.
 * The command is the rest of the line; one quoted word with spaces in it is
 * the usual slip, so the error shows the form that works. (A program that
 * only appears while the fleet boots is refused too: name a wrapper that
 * exists, such as `sh -c '...'`.) */
static gboolean exec_findable(char **argv, GError **error)
{
  g_autofree char *found = g_find_program_in_path(argv[0]);
  if (found)
    return TRUE;
  if (argv[1] == NULL && strpbrk(argv[0], " \t"))
    g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                "--exec: no program '%s': the command is the rest of the line, so write "
                "`--exec make test`, not `--exec 'make test'` (a shell line: `--exec sh -c '...'`)",
                argv[0]);
  else
    g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                "--exec: no program '%s' (not in PATH, or not executable)", argv[0]);
  return FALSE;
}

/* --net, --forward, --forward-base, --server, --ready. Asking for a network
 * feature implies --net user; with an explicit --net none it is an error. */
static gboolean net_options(NfFleetConfig *cfg, const char *net, char **forwards,
                            const char *forward_base, const char *server, const char *ready,
                            GError **error)
{
  if (cfg->profile == NF_PROFILE_NERVES)
    cfg->net = NF_NET_USER; /* a Nerves device expects its eth0 */
  if (net && !nf_net_parse_mode(net, &cfg->net, error))
    return FALSE;
  if (ready) {
    static const char *const hows[] = {"console", "http"};
    guint how = 0;
    if (!parse_choice("--ready", ready, hows, G_N_ELEMENTS(hows), &how, error))
      return FALSE;
    cfg->ready_http = how == 1;
  }
  const char *needs = forwards          ? "--forward"
                      : forward_base    ? "--forward-base"
                      : server          ? "--server"
                      : cfg->ready_http ? "--ready http"
                                        : NULL;
  if (needs && cfg->net == NF_NET_NONE) {
    if (net) {
      g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                  "%s needs a network, but --net none was given; use --net user", needs);
      return FALSE;
    }
    cfg->net = NF_NET_USER;
  }
  if (cfg->net == NF_NET_TAP && (forwards || forward_base)) {
    g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                "%s is for --net user: with --net tap every guest has its own address on the "
                "fleet's bridge (`ps --json` field ip)",
                forwards ? "--forward" : "--forward-base");
    return FALSE;
  }
  for (char **f = forwards; f && *f; f++) {
    if (cfg->n_forwards == NF_NET_MAX_FORWARDS) {
      g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                  "too many --forward flags: at most %d", NF_NET_MAX_FORWARDS);
      return FALSE;
    }
    guint16 port = 0;
    if (!nf_net_parse_port("--forward", *f, &port, error))
      return FALSE;
    for (guint i = 0; i < cfg->n_forwards; i++)
      if (cfg->forwards[i] == port) {
        g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE, "--forward %u given twice",
                    port);
        return FALSE;
      }
    cfg->forwards[cfg->n_forwards++] = port;
  }
  if (forward_base) {
    guint16 base = 0;
    if (!nf_net_parse_port("--forward-base", forward_base, &base, error))
      return FALSE;
    if (forwards == NULL) {
      g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                  "--forward-base without --forward: nothing to forward (e.g. --forward 22)");
      return FALSE;
    }
    guint last = base + cfg->count * cfg->n_forwards - 1;
    if (last > 65535) {
      g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                  "--forward-base %u: %u guests x %u forwards need host ports up to %u, past "
                  "65535; choose a lower --forward-base",
                  base, cfg->count, cfg->n_forwards, last);
      return FALSE;
    }
    cfg->forward_base = base;
  }
  if (server) {
    g_autofree char *guest_addr = NULL;
    if (!nf_net_parse_server(server, NULL, &guest_addr, error))
      return FALSE;
    g_free(cfg->server);
    cfg->server = g_strdup(server);
  }
  return TRUE;
}

/* --log-max: KiB granularity, bounded below so that a rotation, which
 * moves whole filesystem blocks, always leaves the log under its cap. */
static gboolean parse_log_max(const char *text, guint64 *bytes, GError **error)
{
  guint64 kib;
  if (!nf_parse_size_kib("--log-max", text, &kib, error))
    return FALSE;
  if (kib < NF_LOG_MAX_MIN / 1024) {
    g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                "--log-max %s is too small: a console log needs at least 64K (e.g. --log-max 1M)",
                text);
    return FALSE;
  }
  *bytes = kib * 1024;
  return TRUE;
}

gboolean nf_run_options_parse(int *argc, char ***argv, NfFleetConfig *cfg, NfRunMode *mode,
                              GError **error)
{
  g_autofree char *name = NULL, *memory = NULL, *accel = NULL, *qemu = NULL, *kernel = NULL,
                  *initrd = NULL, *append = NULL, *state_dir = NULL, *runtime_dir = NULL,
                  *serial_format = NULL, *stop_timeout = NULL, *boot_timeout = NULL, *batch = NULL,
                  *tb_size = NULL, *id_offset = NULL, *restart = NULL, *backoff = NULL,
                  *backoff_max = NULL, *max_restarts = NULL, *restart_window = NULL,
                  *health_interval = NULL, *health_timeout = NULL, *heartbeat_timeout = NULL,
                  *memory_limit = NULL, *profile = NULL, *disk = NULL, *disk_format = NULL,
                  *firmware = NULL, *loader = NULL, *ready_marker = NULL, *balloon_policy = NULL,
                  *net = NULL, *forward_base = NULL, *server = NULL, *ready = NULL, *ksm = NULL,
                  *ready_sched = NULL, *boot_affinity = NULL, *log_max = NULL;
  g_auto(GStrv) qemu_args = NULL;
  g_auto(GStrv) forwards = NULL;
  gboolean exec_flag = FALSE;
  /* Running as a service: systemd, fleet files, shards (cli/notify.c, run-config.c). */
  g_autofree char *notify_ready = NULL, *config = NULL, *count = NULL, *shard = NULL,
                  *shard_size = NULL;
  gboolean name_given = FALSE;
  GOptionEntry service_entries[] = {
      {"shard", 0, 0, G_OPTION_ARG_STRING, &shard,
       "This supervisor runs shard I (from 0) of N: ids from id-offset + I*K + 1, name shard-I",
       "I/N"},
      {"shard-size", 0, 0, G_OPTION_ARG_STRING, &shard_size,
       "Ids per shard, K (default: the guest count); room to scale up to", "K"},
      {"config", 0, 0, G_OPTION_ARG_FILENAME, &config,
       "Fleet file: a [fleet] group whose keys are these long options (memory=256M); the "
       "command line wins",
       "FILE"},
      {"count", 0, 0, G_OPTION_ARG_STRING, &count, "The guest count, for fleet files (N wins)",
       "N"},
      {"print-config", 0, 0, G_OPTION_ARG_NONE, &mode->print_config,
       "Print the effective configuration (flags and fleet file) as JSON and exit", NULL},
      {"notify-ready", 0, 0, G_OPTION_ARG_STRING, &notify_ready,
       "Under systemd (Type=notify): READY=1 once all guests are ready, or once started "
       "(default: ready)",
       "ready|started"},
      {NULL}};
  GOptionEntry entries[] = {
      {"name", 'n', 0, G_OPTION_ARG_STRING, &name, "Fleet name (default: default)", "NAME"},
      {"batch", 'b', 0, G_OPTION_ARG_STRING, &batch,
       "Guests booting at once (default: one per core under TCG)", "K"},
      {"memory", 'm', 0, G_OPTION_ARG_STRING, &memory, "Guest RAM (default: 128M)", "SIZE"},
      {"accel", 0, 0, G_OPTION_ARG_STRING, &accel, "auto, kvm, tcg or hvf (default: auto)",
       "ACCEL"},
      {"qemu", 0, 0, G_OPTION_ARG_FILENAME, &qemu, "qemu binary (default: qemu-system-aarch64)",
       "PATH"},
      {"kernel", 0, 0, G_OPTION_ARG_FILENAME, &kernel, "Guest kernel (default: built guest)",
       "FILE"},
      {"initrd", 0, 0, G_OPTION_ARG_FILENAME, &initrd, "Guest initramfs (default: built guest)",
       "FILE"},
      {"append", 0, 0, G_OPTION_ARG_STRING, &append, "Extra kernel command line", "ARGS"},
      {"qemu-arg", 0, 0, G_OPTION_ARG_STRING_ARRAY, &qemu_args, "Extra qemu argument (repeatable)",
       "ARG"},
      {"state-dir", 0, 0, G_OPTION_ARG_FILENAME, &state_dir,
       "Logs and disks (default: $XDG_STATE_HOME/nervesfleet/NAME)", "DIR"},
      {"runtime-dir", 0, 0, G_OPTION_ARG_FILENAME, &runtime_dir,
       "Sockets and pid files (default: $XDG_RUNTIME_DIR/nervesfleet/NAME)", "DIR"},
      {"serial-format", 0, 0, G_OPTION_ARG_STRING, &serial_format,
       "Serial numbers (default: NF-%06u)", "FMT"},
      {"id-offset", 0, 0, G_OPTION_ARG_STRING, &id_offset, "First guest id minus one (default: 0)",
       "K"},
      {"stop-timeout", 0, 0, G_OPTION_ARG_STRING, &stop_timeout,
       "Seconds between QMP quit and SIGKILL (default: 10)", "S"},
      {"boot-timeout", 0, 0, G_OPTION_ARG_STRING, &boot_timeout,
       "Seconds from start to ready line before a guest fails (default: 180)", "S"},
      {"restart", 0, 0, G_OPTION_ARG_STRING, &restart,
       "always, on-failure or never (default: on-failure)", "MODE"},
      {"backoff", 0, 0, G_OPTION_ARG_STRING, &backoff,
       "First restart delay in seconds, doubling per failure; never under 0.1 (default: 1)", "S"},
      {"backoff-max", 0, 0, G_OPTION_ARG_STRING, &backoff_max,
       "Longest restart delay (default: 60)", "S"},
      {"max-restarts", 0, 0, G_OPTION_ARG_STRING, &max_restarts,
       "More restarts than this within --restart-window: failed (default: 5)", "R"},
      {"restart-window", 0, 0, G_OPTION_ARG_STRING, &restart_window,
       "Seconds over which restarts are counted (default: 60)", "S"},
      {"health-interval", 0, 0, G_OPTION_ARG_STRING, &health_interval,
       "Seconds between health probes; 0 turns them off (default: 30)", "S"},
      {"health-timeout", 0, 0, G_OPTION_ARG_STRING, &health_timeout,
       "Seconds QMP may take to answer a probe before the guest is hung (default: 15)", "S"},
      {"heartbeat-timeout", 0, 0, G_OPTION_ARG_STRING, &heartbeat_timeout,
       "Seconds the guest kernel may go without updating its balloon stats; 0: off (default: 60)",
       "S"},
      {"memory-limit", 0, 0, G_OPTION_ARG_STRING, &memory_limit,
       "Hard memory cap per guest's qemu (cgroup), e.g. 256M (default: none)", "SIZE"},
      {"log-max", 0, 0, G_OPTION_ARG_STRING, &log_max,
       "A guest's console log is moved to console.log.1 past SIZE, so a guest keeps at most "
       "twice SIZE (default: 4M, at least 64K)",
       "SIZE"},
      {"profile", 0, 0, G_OPTION_ARG_STRING, &profile,
       "sim (default guest) or nerves (little_loader + firmware disk)", "PROFILE"},
      {"disk", 0, 0, G_OPTION_ARG_FILENAME, &disk,
       "Base image; each guest gets its own persistent qcow2 overlay of it", "FILE"},
      {"disk-format", 0, 0, G_OPTION_ARG_STRING, &disk_format, "raw or qcow2 (default: detected)",
       "FMT"},
      {"firmware", 0, 0, G_OPTION_ARG_FILENAME, &firmware,
       "Nerves profile: the fwup-made firmware disk image (the base)", "FILE"},
      {"loader", 0, 0, G_OPTION_ARG_FILENAME, &loader,
       "Nerves profile: little_loader.elf (qemu's -kernel)", "FILE"},
      {"reflash-all", 0, 0, G_OPTION_ARG_NONE, &cfg->reflash_all,
       "Recreate every guest's disk from the base before starting", NULL},
      {"ready-marker", 0, 0, G_OPTION_ARG_STRING, &ready_marker,
       "Console text that means a guest is up (default: nervesfleet-ready)", "TEXT"},
      {"net", 0, 0, G_OPTION_ARG_STRING, &net,
       "none, user (one user-mode NIC per guest) or tap (a bridge per fleet, root) (default: "
       "none; nerves: user)",
       "MODE"},
      {"forward", 0, 0, G_OPTION_ARG_STRING_ARRAY, &forwards,
       "Forward a host port (127.0.0.1) to this guest port on every guest (repeatable)",
       "GUESTPORT"},
      {"forward-base", 0, 0, G_OPTION_ARG_STRING, &forward_base,
       "First guest's first forwarded host port (default: a free range)", "PORT"},
      {"server", 0, 0, G_OPTION_ARG_STRING, &server,
       "The fleet's server; guests get its address as they reach it (127.0.0.1 -> 10.0.2.2)",
       "HOST:PORT"},
      {"ready", 0, 0, G_OPTION_ARG_STRING, &ready,
       "How guests report ready: console (the marker) or http (a request to the supervisor)",
       "HOW"},
      {"balloon-policy", 0, 0, G_OPTION_ARG_STRING, &balloon_policy,
       "guard: while the host nears OOM hold new guests back and squeeze balloons; auto: also "
       "shrink idle guests' balloons all the time; off: neither (default: guard)",
       "MODE"},
      {"ksm", 0, 0, G_OPTION_ARG_STRING, &ksm,
       "Merge identical guest pages (host KSM, root): auto (on from 8 guests when the host "
       "allows it), on or off; restored when the fleet stops (default: auto)",
       "MODE"},
      {"ready-sched", 0, 0, G_OPTION_ARG_STRING, &ready_sched,
       "Scheduling class of guests that are ready while others still boot: idle (SCHED_IDLE), "
       "batch (SCHED_BATCH, nice 10) or normal; back to normal once none boots (root; default: "
       "idle)",
       "CLASS"},
      {"boot-affinity", 0, 0, G_OPTION_ARG_STRING, &boot_affinity,
       "core: pin each booting guest to the least-used core, unpinned once ready; none: leave "
       "it to the scheduler; auto: core under TCG (default: auto)",
       "MODE"},
      {"dense", 0, 0, G_OPTION_ARG_NONE, &cfg->dense,
       "Every memory lever, including those that cost some boot time or, with KSM, qemu's ASLR "
       "(README: memory)",
       NULL},
      {"tb-size", 0, 0, G_OPTION_ARG_STRING, &tb_size,
       "TCG translation buffer per guest in MiB, 1-2048: bigger boots on less CPU for more "
       "memory (default: 32, 16 with --dense; README: memory)",
       "MIB"},
      {"snapshot", 0, 0, G_OPTION_ARG_NONE, &cfg->snapshot,
       "Boot one template guest, snapshot it, and start every guest by restoring that snapshot "
       "(sim guests; --ksm auto then turns KSM on at any fleet size)",
       NULL},
      {"detach", 'd', 0, G_OPTION_ARG_NONE, &mode->detach,
       "Run the supervisor in the background; guests survive its crash", NULL},
      {"quiet", 'q', 0, G_OPTION_ARG_NONE, &mode->quiet, "Only the status line and failures", NULL},
      {"ephemeral", 0, 0, G_OPTION_ARG_NONE, &mode->ephemeral,
       "Remove the fleet's state dir (logs, disks) when it stops", NULL},
      {"http", 0, 0, G_OPTION_ARG_STRING, &mode->http,
       "Serve the dashboard, /metrics and the JSON API on [ADDR:]PORT (default address "
       "127.0.0.1)",
       "[ADDR:]PORT"},
      {"http-token", 0, 0, G_OPTION_ARG_FILENAME, &mode->http_token,
       "Token every HTTP API request must carry (Authorization: Bearer); needed beyond "
       "loopback",
       "FILE|-"},
      {"http-no-guest-metrics", 0, 0, G_OPTION_ARG_NONE, &mode->http_no_guest_metrics,
       "No per-guest series in /metrics (huge fleets)", NULL},
      {"exec", 0, 0, G_OPTION_ARG_NONE, &exec_flag,
       "CI mode: once all guests are ready run CMD (the rest of the line), then stop the fleet "
       "and exit with CMD's status",
       "CMD..."},
      {NULL}};
  /* --exec takes the rest of the command line verbatim: split it off first. */
  for (int i = 1; i < *argc; i++)
    if (g_strcmp0((*argv)[i], "--exec") == 0) {
      if (i + 1 >= *argc) {
        g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "--exec needs a command (e.g. `--exec make test`)");
        return FALSE;
      }
      g_strfreev(mode->exec_argv);
      mode->exec_argv = g_new0(char *, (gsize)(*argc - i));
      for (int j = i + 1; j < *argc; j++)
        mode->exec_argv[j - i - 1] = g_strdup((*argv)[j]);
      (*argv)[i] = NULL;
      *argc = i;
      break;
    }
  /* A fleet file becomes options in front of the command line's (so these
   * win); the rest of this function parses the expanded copy. */
  const GOptionEntry *const tables[] = {entries, service_entries, NULL};
  int expanded_argc = 0;
  g_auto(GStrv) expanded = nf_run_config_expand(*argc, *argv, tables, &expanded_argc, error);
  if (expanded == NULL)
    return FALSE;
  g_autofree char **expanded_argv =
      g_memdup2(expanded, sizeof(char *) * (gsize)(expanded_argc + 1));
  argc = &expanded_argc;
  argv = &expanded_argv;

  g_autoptr(GOptionContext) ctx = g_option_context_new("N");
  g_option_context_set_summary(
      ctx, "Starts N guests in batches and supervises them until Ctrl-C or SIGTERM,\n"
           "which stops them in order (a second Ctrl-C kills them at once).");
  g_option_context_add_main_entries(ctx, entries, NULL);
  g_option_context_add_main_entries(ctx, service_entries, NULL);
  if (!g_option_context_parse(ctx, argc, argv, error))
    return FALSE;
  name_given = name != NULL;

  /* GOption leaves a "--" separator in place; it only ends the options. */
  if (*argc >= 2 && g_strcmp0((*argv)[1], "--") == 0) {
    memmove(*argv + 1, *argv + 2, sizeof(char *) * (gsize)(*argc - 1));
    (*argc)--;
  }
  if (*argc > 2 || (*argc < 2 && count == NULL)) {
    g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                *argc < 2 ? "missing the guest count N (e.g. `nervesfleet run 4`)"
                          : "too many arguments: expected only the guest count N");
    return FALSE;
  }
  if (!nf_parse_count("guest count", *argc == 2 ? (*argv)[1] : count, 100000, &cfg->count, error))
    return FALSE;
  if (name) {
    /* A name that cannot be a directory is a bad argument (exit 2), found
     * here rather than when the fleet is built. Creates nothing. */
    NfFleetPaths paths = {0};
    gboolean ok = nf_paths_resolve(&paths, name, NULL, NULL, error);
    nf_paths_clear(&paths);
    if (!ok)
      return FALSE;
    g_free(cfg->name);
    cfg->name = g_steal_pointer(&name);
  }
  if (batch && !nf_parse_count("--batch", batch, 100000, &cfg->batch, error))
    return FALSE;
  if (tb_size && !nf_parse_count("--tb-size", tb_size, 2048, &cfg->tb_mib, error))
    return FALSE;
  if (memory && !nf_parse_size_mib("--memory", memory, &cfg->memory_mib, error))
    return FALSE;
  if (memory && cfg->memory_mib < 16) {
    g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                "--memory %s is too small: a guest needs at least 16M (e.g. --memory 128M)",
                memory);
    return FALSE;
  }
  if (accel && !nf_accel_parse(accel, &cfg->accel, error))
    return FALSE;
  if (ksm && !nf_ksm_mode_parse(ksm, &cfg->ksm, error))
    return FALSE;
  if (qemu) {
    g_free(cfg->qemu);
    cfg->qemu = g_steal_pointer(&qemu);
  }
  if (profile) {
    static const char *const profiles[] = {"sim", "nerves"};
    guint p = 0;
    if (!parse_choice("--profile", profile, profiles, G_N_ELEMENTS(profiles), &p, error))
      return FALSE;
    cfg->profile = p == 1 ? NF_PROFILE_NERVES : NF_PROFILE_SIM;
  }
  if (cfg->profile == NF_PROFILE_NERVES) {
    if (firmware == NULL || loader == NULL) {
      g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                  "--profile nerves needs --firmware DISK.img and --loader little_loader.elf");
      return FALSE;
    }
    cfg->kernel = g_steal_pointer(&loader);
    cfg->initrd = g_steal_pointer(&initrd);
    cfg->disk = g_steal_pointer(&firmware);
    if (memory == NULL)
      cfg->memory_mib = 256;
    if (ready_marker == NULL) {
      g_free(cfg->ready_marker);
      cfg->ready_marker = g_strdup("Interactive Elixir");
    }
  } else {
    if (firmware || loader) {
      g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE, "%s is for --profile nerves",
                  firmware ? "--firmware" : "--loader");
      return FALSE;
    }
    g_autofree char *guest_dir = nf_paths_default_guest_dir();
    cfg->kernel = kernel ? g_steal_pointer(&kernel) : g_build_filename(guest_dir, "vmlinuz", NULL);
    cfg->initrd =
        initrd ? g_steal_pointer(&initrd) : g_build_filename(guest_dir, "initrd.gz", NULL);
  }
  if (disk) {
    g_free(cfg->disk);
    cfg->disk = g_steal_pointer(&disk);
  }
  cfg->disk_format = g_steal_pointer(&disk_format);
  /* Said here (usage, exit 2), not after the fleet's dirs are made. */
  if (cfg->disk_format && !g_str_equal(cfg->disk_format, "raw") &&
      !g_str_equal(cfg->disk_format, "qcow2")) {
    g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                "--disk-format '%s': raw or qcow2 (or leave it out: detected)", cfg->disk_format);
    return FALSE;
  }
  if (cfg->disk == NULL && (cfg->disk_format || cfg->reflash_all)) {
    g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                "%s is about the guests' disks, and this fleet has none: give --disk FILE (or "
                "--profile nerves --firmware FILE)",
                cfg->reflash_all ? "--reflash-all" : "--disk-format");
    return FALSE;
  }
  if (ready_marker) {
    if (!*ready_marker) {
      g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                  "--ready-marker must not be empty");
      return FALSE;
    }
    g_free(cfg->ready_marker);
    cfg->ready_marker = g_steal_pointer(&ready_marker);
  }
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
  if (stop_timeout &&
      !nf_parse_seconds_ms("--stop-timeout", stop_timeout, &cfg->stop_timeout_ms, error))
    return FALSE;
  if (boot_timeout &&
      !nf_parse_seconds_ms("--boot-timeout", boot_timeout, &cfg->boot_timeout_ms, error))
    return FALSE;
  if (restart && !nf_restart_mode_parse(restart, &cfg->restart.mode, error))
    return FALSE;
  if ((backoff &&
       !nf_parse_seconds_ms("--backoff", backoff, &cfg->restart.backoff_initial_ms, error)) ||
      (backoff_max &&
       !nf_parse_seconds_ms("--backoff-max", backoff_max, &cfg->restart.backoff_max_ms, error)) ||
      (restart_window &&
       !nf_parse_seconds_ms("--restart-window", restart_window, &cfg->restart.window_ms, error)) ||
      (max_restarts && !nf_parse_count("--max-restarts", max_restarts, 1000000,
                                       &cfg->restart.max_restarts, error)) ||
      (health_interval && !nf_parse_seconds_ms("--health-interval", health_interval,
                                               &cfg->health_interval_ms, error)) ||
      (health_timeout &&
       !nf_parse_seconds_ms("--health-timeout", health_timeout, &cfg->health_timeout_ms, error)) ||
      (heartbeat_timeout && !nf_parse_seconds_ms("--heartbeat-timeout", heartbeat_timeout,
                                                 &cfg->heartbeat_timeout_ms, error)) ||
      (memory_limit &&
       !nf_parse_size_mib("--memory-limit", memory_limit, &cfg->memory_limit_mib, error)) ||
      (log_max && !parse_log_max(log_max, &cfg->log_max, error)))
    return FALSE;
  if (balloon_policy) {
    static const char *const policies[] = {"guard", "auto", "off"};
    static const NfBalloonPolicy values[] = {NF_BALLOON_POLICY_GUARD, NF_BALLOON_POLICY_AUTO,
                                             NF_BALLOON_POLICY_OFF};
    guint p = 0;
    if (!parse_choice("--balloon-policy", balloon_policy, policies, G_N_ELEMENTS(policies), &p,
                      error))
      return FALSE;
    cfg->balloon_policy = values[p];
  }
  if (ready_sched) {
    static const char *const classes[] = {"normal", "batch", "idle"};
    static const NfReadySched values[] = {NF_READY_SCHED_NORMAL, NF_READY_SCHED_BATCH,
                                          NF_READY_SCHED_IDLE};
    guint p = 0;
    if (!parse_choice("--ready-sched", ready_sched, classes, G_N_ELEMENTS(classes), &p, error))
      return FALSE;
    cfg->ready_sched = values[p];
  }
  if (boot_affinity) {
    static const char *const modes[] = {"auto", "none", "core"};
    static const NfBootAffinity values[] = {NF_BOOT_AFFINITY_AUTO, NF_BOOT_AFFINITY_NONE,
                                            NF_BOOT_AFFINITY_CORE};
    guint p = 0;
    if (!parse_choice("--boot-affinity", boot_affinity, modes, G_N_ELEMENTS(modes), &p, error))
      return FALSE;
    cfg->boot_affinity = values[p];
  }
  if (cfg->restart.window_ms == 0) {
    /* Nothing would ever count: no intensity limit, no storm guard. */
    g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                "--restart-window '%s': restarts are counted within this window, so it must be "
                "longer than 0 s, such as 60",
                restart_window);
    return FALSE;
  }
  if (!net_options(cfg, net, forwards, forward_base, server, ready, error))
    return FALSE;
  if (notify_ready && !nf_notify_ready_parse(notify_ready, &mode->notify_ready, error))
    return FALSE;
  if ((shard && !nf_shard_parse(shard, &cfg->shard_index, &cfg->shard_count, error)) ||
      (shard_size &&
       !nf_parse_count("--shard-size", shard_size, 10000000, &cfg->shard_size, error)) ||
      !nf_shard_apply(cfg, name_given, error))
    return FALSE;
  if (cfg->snapshot && !nf_snapshot_check_config(cfg, error))
    return FALSE;
  if (mode->exec_argv && !mode->print_config && !exec_findable(mode->exec_argv, error))
    return FALSE;
  cfg->restart.backoff_max_ms = MAX(cfg->restart.backoff_max_ms, cfg->restart.backoff_initial_ms);
  cfg->detached = mode->detach;
  return TRUE;
}
