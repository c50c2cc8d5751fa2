/*
 * fleet.c: the fleet: input checks, dirs and lock, guests queued through the
 * boot window (limiter.c), the fleet-wide failure-storm guard, scaling,
 * listeners and the orderly stop (see fleet.h).
 */
#include "supervisor/fleet.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <unistd.h>
#include <glib/gstdio.h>

#include "supervisor/accel.h"
#include "supervisor/cgroup.h"
#include "supervisor/disks.h"
#include "supervisor/health.h"
#include "supervisor/identity.h"
#include "supervisor/ksm.h"
#include "supervisor/limiter.h"
#include "supervisor/mempolicy.h"
#include "supervisor/net.h"
#include "supervisor/ready-http.h"
#include "supervisor/tap.h"
#include "supervisor/paths.h"
#include "supervisor/strays.h"

/* Spelled out rather than G_DEFINE_QUARK(a-b-c, ...): clang-format
 * reads the dashes as operators and the quark string would change. */
GQuark nf_fleet_error_quark(void)
{
  return g_quark_from_static_string("nf-fleet-error-quark");
}

#define NF_FLEET_FDS_PER_GUEST 4
/* ksmd's pace with --ksm: about 1 GiB/s of guest RAM scanned, which merged
 * ~600 MB across 20 idle guests within a minute on a 2-core host. */
#define NF_FLEET_KSM_PAGES 5000
#define NF_FLEET_KSM_SLEEP_MS 20
#define NF_FLEET_FDS_SPARE 256 /* clients, spawning, libraries */

struct NfFleet {
  const NfFleetConfig *config;
  NfFleetCallbacks cb;
  gpointer user_data;
  NfFleetPaths paths;
  NfVmEnv env;
  char *lock_path;
  int lock_fd;
  GPtrArray *vms;
  NfLimiter *limiter;     /* the boot window */
  NfMemPolicy *mempolicy; /* balloons and admission back-pressure, or NULL */
  guint per_state[NF_VM_N_STATES];
  guint started;
  gboolean stopping;
  gboolean start_failed_sent;
  guint stopped_idle;
  gboolean stopped_sent;
  gboolean any_up;    /* some guest got as far as QMP: the setup works */
  gboolean detaching; /* leave guests running when freed */
  GArray *listeners;  /* Listener */
  guint next_listener;
  GHashTable *retiring; /* NfVm* being scaled away */
  guint retire_idle;
  guint resume_timer;
  NfKsm *ksm;                /* host KSM settings to restore, when --ksm */
  NfStrayGuests *strays;     /* guests beyond our ids a dead supervisor left: being stopped */
  gboolean write_error_told; /* a guest's file could not be written: said once */
  gboolean built;            /* nf_fleet_new succeeded */
  char *made_runtime_dir;    /* top-most dirs nf_fleet_new created, removed if it fails */
  char *made_state_dir;
  NfWindowCount failing;   /* guests that failed within the restart window */
  NfReadyHttp *ready_http; /* --ready http listener, or NULL */
};

typedef struct {
  guint id;
  NfFleetCallbacks cb;
  gpointer user_data;
} Listener;

static gboolean check_file(const char *path, const char *what, const char *fix, GError **error);
static gboolean take_lock(NfFleet *fleet, GError **error);
static void remove_stale_runtime_files(NfFleet *fleet);
static gboolean ensure_fd_limit(guint guests, GError **error);
static void vm_changed_cb(NfVm *vm, NfVmState old_state, NfVmState new_state, const char *reason,
                          gpointer data);
static guint booting_cb(gpointer data);
static void start_cb(NfVm *vm, gpointer data);
static void maybe_stopped(NfFleet *fleet);
static gboolean stopped_idle_cb(gpointer data);
static gboolean is_booting(NfVmState s);
static gboolean resume_cb(gpointer data);
static void notice(NfFleet *fleet, const char *message);
static void mempolicy_notice_cb(const char *message, gpointer data);
static void note_failure(NfFleet *fleet, NfVm *vm);
static void emit_vm_changed(NfFleet *fleet, NfVm *vm, NfVmState old_state, const char *reason);
static gboolean retire_cb(gpointer data);
static void adopt_strays(NfFleet *fleet);
static void strays_notice_cb(const char *message, gpointer data);
static void strays_down_cb(gpointer data);
static void vm_notice_cb(NfVm *vm, const char *message, gpointer data);
static gboolean ready_http_cb(const char *serial, gpointer data);

static gboolean check_file(const char *path, const char *what, const char *fix, GError **error)
{
  if (path == NULL || !g_file_test(path, G_FILE_TEST_IS_REGULAR) || access(path, R_OK) != 0) {
    g_set_error(
        error, NF_FLEET_ERROR, NF_FLEET_ERROR_INPUT, "%s %s %s; %s", what, path ? path : "(none)",
        path && g_file_test(path, G_FILE_TEST_EXISTS) ? "is not a readable file" : "does not exist",
        fix);
    return FALSE;
  }
  return TRUE;
}

static gboolean take_lock(NfFleet *fleet, GError **error)
{
  fleet->lock_path = g_build_filename(fleet->paths.runtime_dir, "fleet.lock", NULL);
  fleet->lock_fd = open(fleet->lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fleet->lock_fd < 0) {
    int e = errno;
    g_set_error(error, NF_FLEET_ERROR, NF_FLEET_ERROR_INPUT,
                "cannot create %s: %s; choose another --runtime-dir", fleet->lock_path,
                g_strerror(e));
    return FALSE;
  }
  if (flock(fleet->lock_fd, LOCK_EX | LOCK_NB) != 0) {
    char pid[32] = "";
    ssize_t n = pread(fleet->lock_fd, pid, sizeof(pid) - 1, 0);
    pid[n > 0 ? n : 0] = '\0';
    g_strchomp(pid);
    g_set_error(error, NF_FLEET_ERROR, NF_FLEET_ERROR_BUSY,
                "fleet '%s' is already running (supervisor pid %s); stop it first or choose "
                "another --name",
                fleet->config->name, pid[0] ? pid : "?");
    close(fleet->lock_fd);
    fleet->lock_fd = -1;
    g_clear_pointer(&fleet->lock_path, g_free); /* not ours to remove */
    return FALSE;
  }
  g_autofree char *pid = g_strdup_printf("%d\n", (int)getpid());
  if (ftruncate(fleet->lock_fd, 0) != 0 || pwrite(fleet->lock_fd, pid, strlen(pid), 0) < 0) {
  }
  return TRUE;
}

gboolean nf_fleet_retake_lock(NfFleet *fleet, GError **error)
{
  if (fleet->lock_path && g_file_test(fleet->lock_path, G_FILE_TEST_EXISTS))
    return TRUE;
  if (g_mkdir_with_parents(fleet->paths.runtime_dir, 0700) != 0) {
    int e = errno;
    g_set_error(error, NF_FLEET_ERROR, NF_FLEET_ERROR_INPUT, "cannot create %s: %s",
                fleet->paths.runtime_dir, g_strerror(e));
    return FALSE;
  }
  /* The old lock's inode is gone with its name: a new one, held again. */
  if (fleet->lock_fd >= 0)
    close(fleet->lock_fd);
  fleet->lock_fd = -1;
  g_clear_pointer(&fleet->lock_path, g_free);
  return take_lock(fleet, error);
}

static void remove_stale_runtime_files(NfFleet *fleet)
{
  /* We hold the lock, so guest files here that no running guest of ours
   * owns belong to a supervisor that died without cleaning up. */
  g_autoptr(GDir) dir = g_dir_open(fleet->paths.runtime_dir, 0, NULL);
  const char *name;
  while (dir && (name = g_dir_read_name(dir)) != NULL) {
    guint id = (guint)g_ascii_strtoull(name + MIN(strlen(name), 3), NULL, 10);
    NfVm *vm = nf_fleet_find_vm(fleet, id);
    if (vm && nf_vm_is_running(vm))
      continue;
    if (fleet->strays && nf_stray_guests_running(fleet->strays, id))
      continue; /* still stopping: its files go when it is down */
    if (g_str_has_prefix(name, "vm-") &&
        (g_str_has_suffix(name, ".qmp") || g_str_has_suffix(name, ".pid") ||
         g_str_has_suffix(name, ".ctl") || g_str_has_suffix(name, ".serial"))) {
      g_autofree char *path = g_build_filename(fleet->paths.runtime_dir, name, NULL);
      g_unlink(path);
    }
  }
}

/* Each running guest holds NF_FLEET_FDS_PER_GUEST of our fds (QMP socket,
 * console socket, console log, pidfd); thousands of guests need far more than
 * the usual soft limit of 1024. Raises the soft limit as far as allowed and
 * fails, naming the numbers and the fix, when `guests` cannot fit. */
static gboolean ensure_fd_limit(guint guests, GError **error)
{
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
    return TRUE;
  rlim_t need = (rlim_t)guests * NF_FLEET_FDS_PER_GUEST + NF_FLEET_FDS_SPARE;
  if (rl.rlim_cur < need && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = MIN(rl.rlim_max, MAX(need, rl.rlim_cur));
    setrlimit(RLIMIT_NOFILE, &rl);
    getrlimit(RLIMIT_NOFILE, &rl);
  }
  if (rl.rlim_cur >= need)
    return TRUE;
  g_set_error(error, NF_FLEET_ERROR, NF_FLEET_ERROR_INPUT,
              "%u guests need about %lu open files (%d each) but this process may open only "
              "%lu (hard limit %lu); raise the limit (`ulimit -Hn %lu` as root, or LimitNOFILE= "
              "in a service unit) or run at most %lu guests per supervisor",
              guests, (unsigned long)need, NF_FLEET_FDS_PER_GUEST, (unsigned long)rl.rlim_cur,
              (unsigned long)rl.rlim_max, (unsigned long)need,
              (unsigned long)((rl.rlim_cur - MIN(rl.rlim_cur, NF_FLEET_FDS_SPARE)) /
                              NF_FLEET_FDS_PER_GUEST));
  return FALSE;
}

NfFleet *nf_fleet_new(const NfFleetConfig *config, const NfFleetCallbacks *callbacks,
                      gpointer user_data, GError **error)
{
  g_autoptr(NfFleet) fleet = g_new0(NfFleet, 1);
  fleet->config = config;
  fleet->cb = *callbacks;
  fleet->user_data = user_data;
  fleet->lock_fd = -1;
  fleet->vms = g_ptr_array_new_with_free_func((GDestroyNotify)nf_vm_free);
  fleet->listeners = g_array_new(FALSE, FALSE, sizeof(Listener));
  fleet->retiring = g_hash_table_new(NULL, NULL);

  if (config->count == 0) {
    g_set_error(error, NF_FLEET_ERROR, NF_FLEET_ERROR_INPUT,
                "the guest count must be a positive integer");
    return NULL;
  }
  if (config->memory_mib < 16) {
    g_set_error(error, NF_FLEET_ERROR, NF_FLEET_ERROR_INPUT,
                "--memory %" G_GUINT64_FORMAT "M is too small; a guest needs at least 16M",
                config->memory_mib);
    return NULL;
  }
  if (!nf_identity_validate_serial_format(config->serial_format, error)) {
    g_prefix_error(error, "--serial-format: ");
    return NULL;
  }

  fleet->env.qemu_path = g_find_program_in_path(config->qemu);
  if (fleet->env.qemu_path == NULL) {
    g_set_error(error, NF_FLEET_ERROR, NF_FLEET_ERROR_INPUT,
                "%s not found%s; install it with `make deps` (Debian package "
                "qemu-system-arm) or pass --qemu PATH",
                config->qemu, strchr(config->qemu, '/') ? "" : " in PATH");
    return NULL;
  }
  gboolean nerves = config->profile == NF_PROFILE_NERVES;
  if (!check_file(config->kernel, nerves ? "--loader" : "guest kernel",
                  nerves ? "pass the path of little_loader.elf"
                         : "build the default guest with `make guest`, or pass --kernel",
                  error) ||
      (config->initrd && !check_file(config->initrd, "guest initramfs",
                                     "build the default guest with `make guest`, or pass "
                                     "--initrd",
                                     error)))
    return NULL;

  NfHostInfo host;
  nf_accel_detect_host(&host);
  if (!nf_accel_resolve(config->accel, &host, &fleet->env.accel, error))
    return NULL;
  static const NfLimiterOps limiter_ops = {.booting = booting_cb, .start = start_cb};
  fleet->limiter = nf_limiter_new(config->batch ? config->batch
                                                : nf_accel_default_batch(fleet->env.accel, &host),
                                  config->batch == 0, host.cores, &limiter_ops, fleet);
  if (config->balloon_policy != NF_BALLOON_POLICY_OFF) {
    NfMemPolicyParams mp;
    nf_mempolicy_params_from_config(&mp, config);
    fleet->mempolicy =
        nf_mempolicy_new(&mp, fleet->vms, fleet->limiter, mempolicy_notice_cb, fleet);
  }

  if (!nf_paths_resolve(&fleet->paths, config->name, config->runtime_dir, config->state_dir, error))
    return NULL;
  /* The longest socket name this fleet will use, checked before anything runs. */
  guint last_id = config->id_offset + config->count;
  g_autofree char *longest = nf_paths_guest_runtime(&fleet->paths, MAX(last_id, 9999), "serial");
  if (!nf_paths_check_socket(longest, error))
    return NULL;
  /* A fleet that cannot start leaves no dir it made behind. */
  fleet->made_runtime_dir = nf_paths_first_missing(fleet->paths.runtime_dir);
  fleet->made_state_dir = nf_paths_first_missing(fleet->paths.state_dir);
  if (!nf_paths_ensure_dir(fleet->paths.runtime_dir, 0700, "--runtime-dir", error) ||
      !nf_paths_ensure_dir(fleet->paths.state_dir, 0755, "--state-dir", error) ||
      !nf_paths_probe_write(fleet->paths.state_dir, "--state-dir", error))
    return NULL;
  if (!take_lock(fleet, error))
    return NULL;
  fleet->env.cgroup_name = nf_paths_cgroup_name(&fleet->paths, config->name);
  if (!ensure_fd_limit(config->count, error))
    return NULL;
  if (config->health_interval_ms)
    fleet->env.health = nf_health_wheel_new(config->health_interval_ms);
  if (config->ksm &&
      (fleet->ksm = nf_ksm_enable(NF_FLEET_KSM_PAGES, NF_FLEET_KSM_SLEEP_MS, error)) == NULL)
    return NULL;
  const char *host_addr = NULL; /* the host as guests see it; NULL: slirp's */
  if (config->net == NF_NET_TAP) {
    fleet->env.tap = nf_tap_new(fleet->paths.runtime_dir, error);
    if (fleet->env.tap == NULL)
      return NULL;
    host_addr = nf_tap_host_addr(fleet->env.tap);
  }
  if (config->net != NF_NET_NONE || config->server) {
    fleet->env.net = nf_net_new(config, fleet->paths.runtime_dir, host_addr, error);
    if (fleet->env.net == NULL)
      return NULL;
  }
  if (config->ready_http) {
    fleet->ready_http = nf_ready_http_new(host_addr, host_addr, ready_http_cb, fleet, error);
    if (fleet->ready_http == NULL)
      return NULL;
    fleet->env.ready_url = nf_ready_http_guest_url(fleet->ready_http);
  }
  fleet->env.use_cgroups = TRUE;
  if (config->disk) {
    fleet->env.disks = nf_disks_new(config, &fleet->paths, error);
    if (fleet->env.disks == NULL ||
        !nf_disks_prepare(fleet->env.disks, config->id_offset + 1, config->count, error))
      return NULL;
  }

  fleet->env.config = config;
  fleet->env.paths = &fleet->paths;
  static const NfVmCallbacks vm_cb = {.state_changed = vm_changed_cb, .notice = vm_notice_cb};
  for (guint i = 0; i < config->count; i++) {
    NfVm *vm = nf_vm_new(config->id_offset + i + 1, &fleet->env, &vm_cb, fleet);
    g_ptr_array_add(fleet->vms, vm);
    fleet->per_state[NF_VM_CREATED]++;
  }
  fleet->built = TRUE;
  return g_steal_pointer(&fleet);
}

/* --ready http: a guest's request names its serial. A linear search: one
 * request per guest boot. */
static gboolean ready_http_cb(const char *serial, gpointer data)
{
  NfFleet *fleet = data;
  for (guint i = 0; i < fleet->vms->len; i++) {
    NfVm *vm = g_ptr_array_index(fleet->vms, i);
    if (g_strcmp0(nf_vm_serial(vm), serial) == 0) {
      nf_vm_report_ready(vm, "http");
      return TRUE;
    }
  }
  return FALSE;
}

static gboolean is_booting(NfVmState s)
{
  return s == NF_VM_STARTING || s == NF_VM_BOOTING;
}

void nf_fleet_start(NfFleet *fleet)
{
  /* Guests a dead supervisor of this fleet left running are taken over, not
   * started twice; the rest queue up for the limiter. */
  for (guint i = 0; i < fleet->vms->len; i++) {
    NfVm *vm = g_ptr_array_index(fleet->vms, i);
    if (!(fleet->config->adopt && nf_vm_adopt(vm)))
      nf_vm_queue(vm);
  }
  if (fleet->config->adopt)
    adopt_strays(fleet);
  remove_stale_runtime_files(fleet);
  nf_cgroup_sweep(fleet->env.cgroup_name);
  nf_limiter_kick(fleet->limiter);
}

/* Guests of this fleet beyond its ids (an earlier run had more) are
 * adopted and stopped (strays.h); then a qemu of the fleet that no pid file
 * names is killed, since nothing can adopt it. */
static void adopt_strays(NfFleet *fleet)
{
  static const NfStrayGuestsCallbacks cb = {
      .notice = strays_notice_cb, .vm_notice = vm_notice_cb, .all_down = strays_down_cb};
  guint first = fleet->config->id_offset + 1;
  fleet->strays =
      nf_stray_guests_adopt(&fleet->env, first, first + fleet->vms->len - 1, &cb, fleet);
  g_autoptr(GArray) pids = g_array_new(FALSE, FALSE, sizeof(GPid));
  for (guint i = 0; i < fleet->vms->len; i++) {
    GPid pid = nf_vm_pid(g_ptr_array_index(fleet->vms, i));
    if (pid)
      g_array_append_val(pids, pid);
  }
  guint killed = nf_stray_guests_kill_unowned(fleet->strays, fleet->paths.runtime_dir, pids);
  if (killed) {
    g_autofree char *msg = g_strdup_printf(
        "killed %u process%s of fleet '%s' that no guest owned (qemu left without a pid file)",
        killed, killed == 1 ? "" : "es", fleet->config->name);
    notice(fleet, msg);
  }
}

static void strays_notice_cb(const char *message, gpointer data)
{
  notice(data, message);
}

static void strays_down_cb(gpointer data)
{
  NfFleet *fleet = data;
  if (fleet->stopping)
    maybe_stopped(fleet);
}

/* A guest could not write one of its files (a full or read-only state
 * dir). Said once per fleet: on a full disk every guest fails alike, and
 * `ps` shows each guest's error. */
static void vm_notice_cb(NfVm *vm, const char *message, gpointer data)
{
  NfFleet *fleet = data;
  if (fleet->write_error_told)
    return;
  fleet->write_error_told = TRUE;
  g_autofree char *msg = g_strdup_printf(
      "%s: %s; logs and status files are incomplete until that is fixed (other guests' files "
      "in %s are likely affected too; `nervesfleet ps` shows which)",
      nf_vm_name(vm), message, fleet->paths.state_dir);
  notice(fleet, msg);
}

static guint booting_cb(gpointer data)
{
  NfFleet *fleet = data;
  return fleet->per_state[NF_VM_STARTING] + fleet->per_state[NF_VM_BOOTING];
}

static void start_cb(NfVm *vm, gpointer data)
{
  NfFleet *fleet = data;
  fleet->started++;
  nf_vm_start(vm, NULL); /* a failure arrives as a state change */
}

static gboolean resume_cb(gpointer data)
{
  NfFleet *fleet = data;
  fleet->resume_timer = 0;
  notice(fleet, "restarts resumed");
  nf_limiter_kick(fleet->limiter);
  return G_SOURCE_REMOVE;
}

static void notice(NfFleet *fleet, const char *message)
{
  if (fleet->cb.notice)
    fleet->cb.notice(fleet, message, fleet->user_data);
  g_autoptr(GArray) ls = g_array_copy(fleet->listeners);
  for (guint i = 0; i < ls->len; i++) {
    Listener *li = &g_array_index(ls, Listener, i);
    if (li->cb.notice)
      li->cb.notice(fleet, message, li->user_data);
  }
}

static void mempolicy_notice_cb(const char *message, gpointer data)
{
  notice(data, message);
}

/* A fleet-wide failure storm (host trouble: OOM, disk, a bad base image)
 * must not turn into a restart storm: when at least half the fleet (3 guests
 * at least) has failed within the restart window, restarts wait a window
 * before going on. Guests are counted, not failures, so one guest in a crash
 * loop is left to its own intensity limit; each guest counts once per window
 * (its tally remembers when). The count lives in a window counter of fixed
 * size, so this works the same at 10 guests and at 10,000. */
static void note_failure(NfFleet *fleet, NfVm *vm)
{
  const NfRestartPolicy *p = &fleet->config->restart;
  gint64 now = g_get_monotonic_time();
  if (!nf_vm_storm_count_once(vm, p->window_ms, now))
    return; /* already counted within this window */
  nf_window_count_add(&fleet->failing, p->window_ms, now);
  guint recent = nf_window_count_recent(&fleet->failing, p->window_ms, now);
  guint threshold = MAX(3, (fleet->vms->len + 1) / 2);
  if (recent >= threshold && !nf_limiter_restarts_held(fleet->limiter) && fleet->vms->len >= 3) {
    nf_limiter_hold_restarts(fleet->limiter, now + (gint64)p->window_ms * 1000);
    g_autofree char *msg =
        g_strdup_printf("restarts paused for %g s: %u guests failed within %g s (host trouble?)",
                        p->window_ms / 1000.0, recent, p->window_ms / 1000.0);
    notice(fleet, msg);
    nf_vm_clear_timer(&fleet->resume_timer);
    fleet->resume_timer = g_timeout_add(p->window_ms, resume_cb, fleet);
  }
}

static void emit_vm_changed(NfFleet *fleet, NfVm *vm, NfVmState old_state, const char *reason)
{
  if (fleet->cb.vm_changed)
    fleet->cb.vm_changed(fleet, vm, old_state, reason, fleet->user_data);
  g_autoptr(GArray) ls = g_array_copy(fleet->listeners);
  for (guint i = 0; i < ls->len; i++) {
    Listener *li = &g_array_index(ls, Listener, i);
    if (li->cb.vm_changed)
      li->cb.vm_changed(fleet, vm, old_state, reason, li->user_data);
  }
}

static void vm_changed_cb(NfVm *vm, NfVmState old_state, NfVmState new_state, const char *reason,
                          gpointer data)
{
  NfFleet *fleet = data;
  fleet->per_state[old_state]--;
  fleet->per_state[new_state]++;
  if (new_state == NF_VM_BOOTING || new_state == NF_VM_READY)
    fleet->any_up = TRUE;

  emit_vm_changed(fleet, vm, old_state, reason);

  if ((new_state == NF_VM_BACKOFF || new_state == NF_VM_FAILED) && nf_vm_failed_at_start(vm) &&
      !fleet->any_up && !fleet->start_failed_sent && !fleet->stopping) {
    /* No guest of this fleet ever came up: it is the setup, not the guest. */
    fleet->start_failed_sent = TRUE;
    nf_limiter_close(fleet->limiter);
    g_autoptr(GError) error =
        g_error_new(NF_FLEET_ERROR, NF_FLEET_ERROR_START, "%s: qemu failed before it was up: %s",
                    nf_vm_name(vm), nf_vm_exit_reason(vm));
    if (fleet->cb.start_failed)
      fleet->cb.start_failed(fleet, error, fleet->user_data);
    return;
  }
  if ((new_state == NF_VM_BACKOFF || new_state == NF_VM_FAILED) &&
      nf_exit_kind_is_failure(nf_vm_exit_kind(vm)))
    note_failure(fleet, vm);
  if (new_state == NF_VM_QUEUED) {
    if (fleet->stopping)
      nf_vm_stop(vm, FALSE);
    else
      nf_limiter_push(fleet->limiter, vm);
  }
  if (old_state == NF_VM_QUEUED && new_state != NF_VM_STARTING)
    nf_limiter_remove(fleet->limiter, vm);
  if (is_booting(old_state) && !is_booting(new_state))
    nf_limiter_kick(fleet->limiter);
  if (!nf_vm_is_running(vm) && g_hash_table_contains(fleet->retiring, vm) &&
      fleet->retire_idle == 0)
    fleet->retire_idle = g_idle_add(retire_cb, fleet);
  if (fleet->stopping)
    maybe_stopped(fleet);
}

static gboolean retire_cb(gpointer data)
{
  NfFleet *fleet = data;
  fleet->retire_idle = 0;
  for (guint i = fleet->vms->len; i-- > 0;) {
    NfVm *vm = g_ptr_array_index(fleet->vms, i);
    if (g_hash_table_contains(fleet->retiring, vm) && !nf_vm_is_running(vm)) {
      g_hash_table_remove(fleet->retiring, vm);
      nf_limiter_remove(fleet->limiter, vm);
      fleet->per_state[nf_vm_state(vm)]--;
      g_ptr_array_remove_index(fleet->vms, i); /* frees it */
    }
  }
  return G_SOURCE_REMOVE;
}

guint nf_fleet_add_listener(NfFleet *fleet, const NfFleetCallbacks *callbacks, gpointer user_data)
{
  Listener li = {.id = ++fleet->next_listener, .cb = *callbacks, .user_data = user_data};
  g_array_append_val(fleet->listeners, li);
  return li.id;
}

void nf_fleet_remove_listener(NfFleet *fleet, guint id)
{
  for (guint i = 0; i < fleet->listeners->len; i++)
    if (g_array_index(fleet->listeners, Listener, i).id == id) {
      g_array_remove_index(fleet->listeners, i);
      return;
    }
}

NfVm *nf_fleet_find_vm(const NfFleet *fleet, guint id)
{
  /* Ids are contiguous from id_offset + 1 in array order (scale adds and
   * removes at the end), so this is a direct index; called per runtime file
   * at start and per TARGET id, a scan would be quadratic at thousands. */
  guint i = id - fleet->config->id_offset - 1;
  if (id > fleet->config->id_offset && i < fleet->vms->len) {
    NfVm *vm = g_ptr_array_index(fleet->vms, i);
    if (nf_vm_id(vm) == id)
      return g_hash_table_contains(fleet->retiring, vm) ? NULL : vm;
  }
  for (i = 0; i < fleet->vms->len; i++) {
    NfVm *vm = g_ptr_array_index(fleet->vms, i);
    if (nf_vm_id(vm) == id && !g_hash_table_contains(fleet->retiring, vm))
      return vm;
  }
  return NULL;
}

void nf_fleet_start_vm(NfFleet *fleet, NfVm *vm)
{
  if (!fleet->stopping)
    nf_vm_queue(vm);
}

void nf_fleet_stop_vm(NfFleet *fleet, NfVm *vm, gboolean force)
{
  nf_vm_stop(vm, force);
}

void nf_fleet_restart_vm(NfFleet *fleet, NfVm *vm)
{
  if (!fleet->stopping)
    nf_vm_restart(vm);
}

gboolean nf_fleet_scale(NfFleet *fleet, guint count, GError **error)
{
  if (count == 0 || count > 100000) {
    g_set_error(error, NF_FLEET_ERROR, NF_FLEET_ERROR_INPUT, "%u guests is out of range (1-100000)",
                count);
    return FALSE;
  }
  if (fleet->stopping) {
    g_set_error(error, NF_FLEET_ERROR, NF_FLEET_ERROR_INPUT, "the fleet is stopping");
    return FALSE;
  }
  guint live = fleet->vms->len - g_hash_table_size(fleet->retiring);
  if (count > live && !ensure_fd_limit(fleet->vms->len + (count - live), error))
    return FALSE;
  if (count > live) {
    guint last = fleet->config->id_offset + live;
    g_autofree char *longest =
        nf_paths_guest_runtime(&fleet->paths, last + (count - live), "serial");
    if (!nf_paths_check_socket(longest, error))
      return FALSE;
    /* A guest of these ids still stopping (scaled away, or a stray) would
     * share its files (sockets, pid file) with the new one. */
    for (guint id = last + 1; id <= last + (count - live); id++) {
      NfVm *old = NULL;
      for (guint i = live; i < fleet->vms->len && !old; i++)
        if (nf_vm_id(g_ptr_array_index(fleet->vms, i)) == id)
          old = g_ptr_array_index(fleet->vms, i);
      if (old || (fleet->strays && nf_stray_guests_running(fleet->strays, id))) {
        g_autofree char *name = nf_paths_guest_name(id);
        g_set_error(error, NF_FLEET_ERROR, NF_FLEET_ERROR_INPUT,
                    "scale: %s is still stopping; try again once it is down", name);
        return FALSE;
      }
    }
    static const NfVmCallbacks vm_cb = {.state_changed = vm_changed_cb, .notice = vm_notice_cb};
    for (guint id = last + 1; id <= last + (count - live); id++) {
      NfVm *vm = nf_vm_new(id, &fleet->env, &vm_cb, fleet);
      g_ptr_array_add(fleet->vms, vm);
      fleet->per_state[NF_VM_CREATED]++;
      nf_vm_queue(vm);
    }
  } else {
    /* The highest ids go: the vms array is in id order, retiring ones last. */
    guint to_retire = live - count;
    for (guint i = fleet->vms->len; i-- > 0 && to_retire > 0;) {
      NfVm *vm = g_ptr_array_index(fleet->vms, i);
      if (g_hash_table_contains(fleet->retiring, vm))
        continue;
      g_hash_table_add(fleet->retiring, vm);
      to_retire--;
      nf_vm_stop(vm, FALSE);
      if (!nf_vm_is_running(vm) && fleet->retire_idle == 0)
        fleet->retire_idle = g_idle_add(retire_cb, fleet);
    }
  }
  return TRUE;
}

gboolean nf_fleet_reflash_vm(NfFleet *fleet, NfVm *vm, GError **error)
{
  if (fleet->env.disks == NULL) {
    g_set_error(error, NF_FLEET_ERROR, NF_FLEET_ERROR_INPUT,
                "fleet '%s' has no disks to reflash (start it with --disk or --profile nerves "
                "--firmware)",
                fleet->config->name);
    return FALSE;
  }
  if (!fleet->stopping)
    nf_vm_reflash(vm);
  return TRUE;
}

const NfUbootEnv *nf_fleet_vm_firmware_env(NfFleet *fleet, NfVm *vm)
{
  return fleet->env.disks ? nf_disks_env(fleet->env.disks, nf_vm_id(vm)) : NULL;
}

void nf_fleet_detach(NfFleet *fleet)
{
  fleet->detaching = TRUE;
}

void nf_fleet_stop(NfFleet *fleet, gboolean force)
{
  if (fleet->ksm && !fleet->stopping) {
    guint64 pages = nf_ksm_pages_sharing();
    g_autofree char *msg =
        g_strdup_printf("KSM saved %" G_GUINT64_FORMAT " MiB by merging identical guest pages",
                        pages * (guint64)sysconf(_SC_PAGESIZE) / (1024 * 1024));
    notice(fleet, msg);
  }
  fleet->stopping = TRUE;
  nf_vm_clear_timer(&fleet->resume_timer);
  nf_limiter_close(fleet->limiter);
  for (NfVm *vm; (vm = nf_limiter_pop(fleet->limiter)) != NULL;)
    nf_vm_stop(vm, force);
  for (guint i = 0; i < fleet->vms->len; i++)
    nf_vm_stop(g_ptr_array_index(fleet->vms, i), force);
  if (fleet->strays)
    nf_stray_guests_stop(fleet->strays, force);
  maybe_stopped(fleet);
}

static void maybe_stopped(NfFleet *fleet)
{
  if (fleet->stopped_sent || fleet->stopped_idle)
    return;
  for (guint i = 0; i < fleet->vms->len; i++)
    if (nf_vm_is_running(g_ptr_array_index(fleet->vms, i)))
      return;
  if (fleet->strays && nf_stray_guests_any_running(fleet->strays))
    return;
  /* From an idle, so the caller of nf_fleet_stop never sees it re-entrantly. */
  fleet->stopped_idle = g_idle_add(stopped_idle_cb, fleet);
}

static gboolean stopped_idle_cb(gpointer data)
{
  NfFleet *fleet = data;
  fleet->stopped_idle = 0;
  fleet->stopped_sent = TRUE;
  if (fleet->cb.stopped)
    fleet->cb.stopped(fleet, fleet->user_data);
  return G_SOURCE_REMOVE;
}

void nf_fleet_free(NfFleet *fleet)
{
  if (fleet == NULL)
    return;
  if (fleet->stopped_idle)
    g_source_remove(fleet->stopped_idle);
  nf_vm_clear_timer(&fleet->retire_idle);
  nf_vm_clear_timer(&fleet->resume_timer);
  g_clear_pointer(&fleet->mempolicy, nf_mempolicy_free);
  g_clear_pointer(&fleet->limiter, nf_limiter_free);
  if (fleet->detaching) {
    for (guint i = 0; i < fleet->vms->len; i++)
      nf_vm_detach(g_ptr_array_index(fleet->vms, i));
    if (fleet->strays)
      nf_stray_guests_detach(fleet->strays);
  }
  g_clear_pointer(&fleet->strays, nf_stray_guests_free);
  /* Freeing a guest kills and reaps whatever still runs (detached ones were
   * let go above). */
  GPtrArray *vms = g_steal_pointer(&fleet->vms);
  fleet->vms = g_ptr_array_new();
  g_ptr_array_unref(vms);
  /* Before the runtime dir goes: its net.base is the plan's to remove. */
  nf_net_free(fleet->env.net, fleet->detaching);
  fleet->env.net = NULL;
  /* After the guests: their taps are gone with their qemu. */
  g_clear_pointer(&fleet->ready_http, nf_ready_http_free);
  nf_tap_free(fleet->env.tap, fleet->detaching);
  fleet->env.tap = NULL;
  if (fleet->lock_fd >= 0) {
    if (!fleet->detaching)
      remove_stale_runtime_files(fleet);
    g_unlink(fleet->lock_path);
    close(fleet->lock_fd);
    /* Only empty dirs go: anything else in there is not ours to delete. */
    g_rmdir(fleet->paths.runtime_dir);
    if (fleet->config->runtime_dir == NULL) {
      g_autofree char *parent = g_path_get_dirname(fleet->paths.runtime_dir);
      g_rmdir(parent);
    }
  }
  if (!fleet->detaching && fleet->env.cgroup_name)
    nf_cgroup_sweep(fleet->env.cgroup_name);
  if (!fleet->built) {
    nf_paths_remove_empty_dirs(fleet->paths.runtime_dir, fleet->made_runtime_dir);
    nf_paths_remove_empty_dirs(fleet->paths.state_dir, fleet->made_state_dir);
  }
  g_free(fleet->made_runtime_dir);
  g_free(fleet->made_state_dir);
  g_ptr_array_unref(fleet->vms);
  g_array_unref(fleet->listeners);
  g_hash_table_unref(fleet->retiring);
  g_free(fleet->lock_path);
  g_free(fleet->env.qemu_path);
  g_free(fleet->env.cgroup_name);
  g_clear_pointer(&fleet->env.disks, nf_disks_free);
  g_clear_pointer(&fleet->ksm, nf_ksm_restore);
  g_clear_pointer(&fleet->env.health, nf_health_wheel_free);
  nf_paths_clear(&fleet->paths);
  g_free(fleet);
}

void nf_fleet_counts(const NfFleet *fleet, NfFleetCounts *c)
{
  const guint *s = fleet->per_state;
  *c = (NfFleetCounts){
      .total = fleet->vms->len,
      .queued = s[NF_VM_QUEUED] + s[NF_VM_CREATED],
      .booting = s[NF_VM_STARTING] + s[NF_VM_BOOTING],
      .ready = s[NF_VM_READY],
      .unhealthy = s[NF_VM_UNHEALTHY],
      .stopping = s[NF_VM_STOPPING],
      .stopped = s[NF_VM_STOPPED],
      .backoff = s[NF_VM_BACKOFF],
      .failed = s[NF_VM_FAILED],
      .started = fleet->started,
  };
}

guint nf_fleet_size(const NfFleet *fleet)
{
  return fleet->vms->len;
}
NfVm *nf_fleet_vm(const NfFleet *fleet, guint index)
{
  return index < fleet->vms->len ? g_ptr_array_index(fleet->vms, index) : NULL;
}
guint nf_fleet_batch(const NfFleet *fleet)
{
  return nf_limiter_batch(fleet->limiter);
}
NfAccel nf_fleet_accel(const NfFleet *fleet)
{
  return fleet->env.accel;
}
const char *nf_fleet_runtime_dir(const NfFleet *fleet)
{
  return fleet->paths.runtime_dir;
}
const char *nf_fleet_state_dir(const NfFleet *fleet)
{
  return fleet->paths.state_dir;
}
const char *nf_fleet_name(const NfFleet *fleet)
{
  return fleet->config->name;
}
const struct NfNet *nf_fleet_net(const NfFleet *fleet)
{
  return fleet->env.net;
}

char *nf_fleet_guest_ip(const NfFleet *fleet, guint id)
{
  if (fleet->env.tap == NULL || id <= fleet->config->id_offset)
    return NULL;
  return nf_tap_guest_addr(fleet->env.tap, id - fleet->config->id_offset);
}

const NfFleetConfig *nf_fleet_config(const NfFleet *fleet)
{
  return fleet->config;
}
const char *nf_fleet_qemu_path(const NfFleet *fleet)
{
  return fleet->env.qemu_path;
}
