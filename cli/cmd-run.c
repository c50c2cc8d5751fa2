/*
 * cmd-run.c: `nervesfleet run N`: the supervisor. Parses flags into an
 * NfFleetConfig, builds the fleet (which checks every input before anything
 * starts), optionally goes to the background (-d), runs the main loop, and
 * turns Ctrl-C / SIGTERM into an orderly stop (a second one kills at once).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <glib-unix.h>
#include <glib/gstdio.h>

#include "cli/daemon.h"
#include "cli/notify.h"
#include "cli/progress.h"
#include "cli/run-config.h"
#include "cli/run-exec.h"
#include "cli/run-http.h"
#include "cli/run-options.h"
#include "cli/verbs.h"
#include "supervisor/accel.h"
#include "supervisor/control.h"
#include "supervisor/fleet.h"
#include "http/http.h"
#include "supervisor/paths.h"
#include "supervisor/poll-guard.h"
#include "supervisor/shard.h"

typedef struct {
  GMainLoop *loop;
  NfFleet *fleet;
  NfProgress *progress;
  NfControl *control;
  NfHttp *http;     /* --http */
  NfRunExec *exec;  /* --exec */
  NfNotify *notify; /* systemd's Type=notify (a no-op without NOTIFY_SOCKET) */
  int exit_code;
  guint signals_seen;
  gboolean stopping;
  gboolean left_running; /* `down --leave-running`: the guests outlive us */
  gboolean fleet_down;   /* stopped; waiting for --exec's CMD to end */
} RunState;

/* The main loop's poll guard acted (an open-file limit lowered under us). */
static void poll_notice_cb(const char *message, gpointer data)
{
  RunState *rs = data;
  nf_progress_say(rs->progress, "%s", message);
}

static void vm_changed_cb(NfFleet *fleet, NfVm *vm, NfVmState old_state, const char *reason,
                          gpointer data);
static void start_failed_cb(NfFleet *fleet, const GError *error, gpointer data);
static void stopped_cb(NfFleet *fleet, gpointer data);
static gboolean signal_cb(gpointer data);
static gboolean leave_cb(gpointer data);
static void notice_cb(NfFleet *fleet, const char *message, gpointer data);
static void control_down_cb(gboolean force, gpointer data);
static void control_log_cb(const char *message, gpointer data);
static void poll_notice_cb(const char *message, gpointer data);
static void exec_done_cb(int status, gpointer data);

/* --exec: CMD ended (or never ran: a guest failed): stop the fleet in
 * order and exit with CMD's status. */
static void exec_done_cb(int status, gpointer data)
{
  RunState *rs = data;
  rs->exit_code = status;
  if (rs->fleet_down) {
    g_main_loop_quit(rs->loop); /* stopped_cb waited for CMD */
    return;
  }
  if (!rs->stopping) {
    rs->stopping = TRUE;
    nf_notify_stopping(rs->notify);
    nf_fleet_stop(rs->fleet, FALSE);
  }
}

/* `nervesfleet down` over the control socket: the same as SIGTERM (twice
 * when forced). */
static void control_down_cb(gboolean force, gpointer data)
{
  RunState *rs = data;
  signal_cb(rs);
  if (force && rs->signals_seen < 2)
    signal_cb(rs);
}

static void control_log_cb(const char *message, gpointer data)
{
  RunState *rs = data;
  nf_progress_say(rs->progress, "control: %s", message);
}

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
  rs->stopping = TRUE;
  nf_notify_stopping(rs->notify);
  if (rs->exec)
    nf_run_exec_cancel(rs->exec);
  nf_fleet_stop(fleet, FALSE);
  rs->exit_code = NF_EXIT_FAILURE;
}

static void stopped_cb(NfFleet *fleet, gpointer data)
{
  RunState *rs = data;
  NfFleetCounts c;
  nf_fleet_counts(fleet, &c);
  nf_progress_say(rs->progress, "fleet stopped (%u stopped, %u failed)", c.stopped, c.failed);
  nf_progress_finish(rs->progress);
  if (rs->exec && nf_run_exec_running(rs->exec)) {
    rs->fleet_down = TRUE; /* run's status is CMD's: wait for it */
    nf_run_exec_cancel(rs->exec);
    return;
  }
  g_main_loop_quit(rs->loop);
}

static void notice_cb(NfFleet *fleet, const char *message, gpointer data)
{
  RunState *rs = data;
  nf_progress_say(rs->progress, "%s", message);
}

/* SIGUSR1 (`down --leave-running`): a detached supervisor goes away and
 * leaves its guests running for the next one (an upgrade). */
static gboolean leave_cb(gpointer data)
{
  RunState *rs = data;
  if (!nf_fleet_config(rs->fleet)->detached) {
    nf_progress_say(rs->progress, "SIGUSR1 ignored: only a detached (-d) fleet can be left "
                                  "running");
    return G_SOURCE_CONTINUE;
  }
  nf_progress_say(rs->progress, "leaving the guests running for the next supervisor");
  rs->left_running = TRUE;
  nf_fleet_detach(rs->fleet);
  g_main_loop_quit(rs->loop);
  return G_SOURCE_CONTINUE;
}

static gboolean signal_cb(gpointer data)
{
  RunState *rs = data;
  rs->signals_seen++;
  gboolean first = rs->signals_seen == 1 && !rs->stopping;
  if (first) {
    NfFleetCounts c;
    nf_fleet_counts(rs->fleet, &c);
    nf_progress_say(rs->progress, "stopping %u guests (Ctrl-C again to kill them now)",
                    c.total - c.stopped - c.failed);
    nf_notify_stopping(rs->notify);
    rs->stopping = TRUE;
  }
  /* Before the guests change: a CMD not yet run is told it will not run
   * (exit 1), not that a guest failed. */
  if (rs->exec)
    nf_run_exec_cancel(rs->exec);
  if (first) {
    nf_fleet_stop(rs->fleet, FALSE);
  } else {
    nf_progress_say(rs->progress, "killing all guests now");
    nf_fleet_stop(rs->fleet, TRUE);
  }
  return G_SOURCE_CONTINUE;
}

static void remove_signals(const guint *sigs, gsize n)
{
  for (gsize i = 0; i < n; i++)
    g_source_remove(sigs[i]);
}

/* How a person would run this binary again from here: `nervesfleet` when
 * that is what PATH finds, `./nervesfleet` from its own directory (make
 * demo), else its full path. */
static char *self_command(void)
{
  g_autofree char *exe = g_file_read_link("/proc/self/exe", NULL);
  if (exe == NULL)
    return g_strdup("nervesfleet");
  g_autofree char *found = g_find_program_in_path("nervesfleet");
  g_autofree char *real = found ? realpath(found, NULL) : NULL;
  if (g_strcmp0(real, exe) == 0)
    return g_strdup("nervesfleet");
  g_autofree char *dir = g_path_get_dirname(exe);
  g_autofree char *cwd = g_get_current_dir();
  if (g_str_equal(dir, cwd)) {
    g_autofree char *base = g_path_get_basename(exe);
    return g_strconcat("./", base, NULL);
  }
  return g_steal_pointer(&exe);
}

/* `s` as one word a shell takes back as it is: quoted only when it must be. */
static char *shell_word(const char *s)
{
  return strpbrk(s, " \t\n'\"\\$`!*?[]{}()<>|&;#~") ? g_shell_quote(s) : g_strdup(s);
}

int nf_cmd_run(int argc, char **argv)
{
  g_autoptr(GError) error = NULL;
  NfFleetConfig cfg;
  NfRunMode mode = {0};
  int report_fd = -1;
  nf_fleet_config_init(&cfg);
  g_set_prgname("nervesfleet run");

  if (!nf_run_options_parse(&argc, &argv, &cfg, &mode, &error)) {
    nf_cli_error("run: %s; see `nervesfleet run --help`", error->message);
    nf_fleet_config_clear(&cfg);
    g_strfreev(mode.exec_argv);
    nf_run_http_flags_free(&mode);
    return NF_EXIT_USAGE;
  }
  if (mode.detach && mode.exec_argv) {
    nf_cli_error("run: --exec and -d exclude each other; see `nervesfleet run --help`");
    nf_fleet_config_clear(&cfg);
    g_strfreev(mode.exec_argv);
    nf_run_http_flags_free(&mode);
    return NF_EXIT_USAGE;
  }
  NfHttpOptions http_opts;
  gboolean http_on;
  if (!nf_run_http_options(&mode, &http_opts, &http_on, &error)) {
    nf_cli_error("run: %s; see `nervesfleet run --help`", error->message);
    nf_fleet_config_clear(&cfg);
    g_strfreev(mode.exec_argv);
    return NF_EXIT_USAGE;
  }
  if (mode.print_config) {
    g_autofree char *listen =
        http_on ? g_strdup_printf("%s:%u", http_opts.addr, http_opts.port) : NULL;
    g_autofree char *doc = nf_run_config_to_json(&cfg, &mode, listen);
    printf("%s\n", doc);
    nf_run_http_options_clear(&http_opts);
    nf_fleet_config_clear(&cfg);
    g_strfreev(mode.exec_argv);
    return NF_EXIT_OK;
  }
  if (!nf_notify_load(&error)) {
    nf_cli_error("run: %s", error->message);
    nf_run_http_options_clear(&http_opts);
    nf_fleet_config_clear(&cfg);
    g_strfreev(mode.exec_argv);
    return NF_EXIT_FAILURE;
  }
  if (mode.detach)
    nf_daemon_start(&report_fd); /* only the daemon returns */

  RunState rs = {.exit_code = NF_EXIT_OK};
  rs.loop = g_main_loop_new(NULL, FALSE);
  static const NfFleetCallbacks cb = {.vm_changed = vm_changed_cb,
                                      .start_failed = start_failed_cb,
                                      .stopped = stopped_cb,
                                      .notice = notice_cb};
  /* Before the fleet is built: making a thousand guests' disks takes a
   * while, and a Ctrl-C then killed the supervisor mid-way (Nerves
   * overlays made but without their serial). Caught now, it is handled
   * once the main loop runs: the fleet comes up and stops in order. */
  guint sigs[] = {
      g_unix_signal_add(SIGINT, signal_cb, &rs), g_unix_signal_add(SIGTERM, signal_cb, &rs),
      g_unix_signal_add(SIGHUP, signal_cb, &rs), g_unix_signal_add(SIGUSR1, leave_cb, &rs)};
  rs.fleet = nf_fleet_new(&cfg, &cb, &rs, &error);
  if (rs.fleet == NULL) {
    remove_signals(sigs, G_N_ELEMENTS(sigs));
    if (report_fd >= 0)
      nf_daemon_report_error(report_fd, error->message);
    else
      nf_cli_error("run: %s", error->message);
    g_main_loop_unref(rs.loop);
    nf_fleet_config_clear(&cfg);
    g_strfreev(mode.exec_argv);
    return NF_EXIT_FAILURE;
  }
  /* Before -d reports success: once `run` returns, the fleet answers. */
  static const NfControlHooks hooks = {.down = control_down_cb, .log = control_log_cb};
  rs.control = nf_control_new(rs.fleet, &hooks, &rs, &error);
  if (rs.control == NULL) {
    /* Guests still run without it; say so rather than refuse the fleet. */
    nf_cli_error("run: no control socket (ps, console... will not work): %s", error->message);
    g_clear_error(&error);
  }
  if (http_on) {
    rs.http = rs.control ? nf_http_new(nf_control_commands(rs.control), &http_opts, &error) : NULL;
    if (rs.http == NULL) {
      /* Asked for explicitly: no fleet without it. */
      g_autofree char *msg =
          g_strdup_printf("run: --http: %s", error ? error->message : "needs the control socket");
      if (report_fd >= 0)
        nf_daemon_report_error(report_fd, msg);
      else
        nf_cli_error("%s", msg);
      nf_control_free(rs.control);
      remove_signals(sigs, G_N_ELEMENTS(sigs));
      nf_fleet_free(rs.fleet);
      g_main_loop_unref(rs.loop);
      nf_run_http_options_clear(&http_opts);
      nf_fleet_config_clear(&cfg);
      g_strfreev(mode.exec_argv);
      return NF_EXIT_FAILURE;
    }
  }
  if (report_fd >= 0) {
    g_autofree char *log = g_build_filename(nf_fleet_state_dir(rs.fleet), "supervisor.log", NULL);
    g_autofree char *msg = g_strdup_printf(
        "fleet '%s' starting %u guests in the background (supervisor pid %d, log %s); stop it "
        "with `nervesfleet down --name %s`",
        cfg.name, cfg.count, (int)getpid(), log, cfg.name);
    if (rs.http) {
      g_autofree char *base = g_steal_pointer(&msg);
      msg = g_strdup_printf("%s; dashboard on %s", base, nf_http_url(rs.http));
    }
    nf_daemon_report_ok(report_fd, msg, log);
  }
  rs.progress = nf_progress_new(stdout, isatty(STDOUT_FILENO), mode.quiet);

  nf_progress_say(rs.progress,
                  "fleet '%s': %u guests, %s, %" G_GUINT64_FORMAT "M each, %u booting at once, "
                  "restart %s",
                  cfg.name, cfg.count, nf_accel_name(nf_fleet_accel(rs.fleet)), cfg.memory_mib,
                  nf_fleet_batch(rs.fleet), nf_restart_mode_name(cfg.restart.mode));
  nf_progress_say(rs.progress, "logs in %s; %s", nf_fleet_state_dir(rs.fleet),
                  mode.detach ? "`nervesfleet down` stops the fleet" : "Ctrl-C stops the fleet");
  if (rs.http) {
    nf_progress_say(rs.progress, "dashboard on %s (metrics: %smetrics)", nf_http_url(rs.http),
                    nf_http_url(rs.http));
    if (!nf_http_addr_is_loopback(http_opts.addr))
      nf_progress_say(rs.progress,
                      "warning: the dashboard and API listen beyond this host (%s): anyone "
                      "with the token can stop guests; plain HTTP, so use it on a trusted "
                      "network or behind TLS",
                      http_opts.addr);
  }
  if (!mode.exec_argv && !mode.detach && rs.control && nf_fleet_size(rs.fleet) > 0) {
    g_autofree char *bin = self_command();
    g_autofree char *me = shell_word(bin);
    g_autofree char *dir = cfg.runtime_dir ? shell_word(cfg.runtime_dir) : NULL;
    g_autofree char *name =
        g_strdup_printf("%s%s%s%s", g_str_equal(cfg.name, "default") ? "" : " --name ",
                        g_str_equal(cfg.name, "default") ? "" : cfg.name,
                        dir ? " --runtime-dir " : "", dir ? dir : "");
    guint first = nf_vm_id(nf_fleet_vm(rs.fleet, 0)); /* 1, unless --id-offset or a shard */
    g_autofree char *hint = g_strdup_printf(
        "in another terminal: `%s ps%s`, `%s console %u%s` (Ctrl-] q detaches), `%s logs %u -f%s`",
        me, name, me, first, name, me, first, name);
    nf_progress_set_ready_hint(rs.progress, hint);
  }
  if (mode.exec_argv)
    rs.exec =
        nf_run_exec_new(rs.fleet, mode.exec_argv,
                        rs.control ? nf_control_socket_path(rs.control) : NULL, exec_done_cb, &rs);
  rs.notify = nf_notify_new(rs.fleet, mode.notify_ready);
  nf_fleet_start(rs.fleet);
  nf_notify_started(rs.notify);
  NfPollGuard *guard = nf_poll_guard_install(NULL, poll_notice_cb, &rs, &error);
  if (guard == NULL) {
    nf_progress_say(rs.progress, "warning: %s", error->message);
    g_clear_error(&error);
  }
  g_main_loop_run(rs.loop);
  nf_poll_guard_free(guard);
  nf_notify_free(rs.notify);
  nf_run_exec_free(rs.exec);
  nf_http_free(rs.http);
  nf_run_http_options_clear(&http_opts);
  nf_control_free(rs.control);
  g_autofree char *state_dir = g_strdup(nf_fleet_state_dir(rs.fleet));

  remove_signals(sigs, G_N_ELEMENTS(sigs));
  int state_lock = mode.ephemeral ? nf_fleet_keep_state_lock(rs.fleet) : -1;
  nf_fleet_free(rs.fleet);
  if (mode.ephemeral && rs.left_running)
    nf_progress_say(rs.progress,
                    "--ephemeral: %s stays, the guests left running use it (the supervisor that "
                    "takes them over removes it if it runs with --ephemeral)",
                    state_dir);
  else if (mode.ephemeral)
    nf_run_remove_state(state_dir); /* nothing of the fleet left on disk */
  if (state_lock >= 0)
    close(state_lock);
  nf_progress_free(rs.progress);
  g_main_loop_unref(rs.loop);
  nf_fleet_config_clear(&cfg);
  g_strfreev(mode.exec_argv);
  return rs.exit_code;
}
