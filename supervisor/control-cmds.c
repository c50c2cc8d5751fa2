/*
 * control-cmds.c: the control protocol's commands, one handler each, and the
 * waits some of them leave pending (`wait`, `stop` until down, `scale`,
 * `balloon` until the guest reports its new size). See control-protocol.md.
 *
 * Handlers answer from memory: `ps` reads the guests' fields, /proc (for
 * RSS) and firmware envs cached by overlay mtime, never QMP, so it stays
 * fast on thousands of guests. A handler either
 * replies at once or hands a pending wait its own reference on the client;
 * a wait whose client went away is dropped at its next evaluation.
 */
#include "supervisor/control-private.h"

#include <string.h>
#include <unistd.h>
#include <glib/gstdio.h>

#include "supervisor/cmd-mem.h"
#include "supervisor/targets.h"

#define CONSOLE_REPLAY_BYTES 4096
#define FAIL_TAIL_BYTES 1500
#define BALLOON_DEFAULT_TIMEOUT_MS 10000
#define BALLOON_CHECK_MS 100

typedef enum {
  WAIT_READY, /* READY (after a fresh transition for ids in `fresh`) */
  WAIT_DOWN,  /* not running and staying down, or removed */
} WaitUntil;

struct NfCtlWait {
  NfControl *ctl;
  NfCtlClient *client; /* ref */
  json_t *id;          /* ref */
  WaitUntil until;
  GHashTable *pending; /* ids not there yet */
  GHashTable *fresh;   /* ids that must become READY anew (restart) */
  json_t *result;      /* the reply on success (owned) */
  guint timer;
};

typedef void (*Handler)(NfCtlClient *c, json_t *id, json_t *args);

static void cmd_hello(NfCtlClient *c, json_t *id, json_t *args);
static void cmd_ps(NfCtlClient *c, json_t *id, json_t *args);
static void cmd_start(NfCtlClient *c, json_t *id, json_t *args);
static void cmd_stop(NfCtlClient *c, json_t *id, json_t *args);
static void cmd_restart(NfCtlClient *c, json_t *id, json_t *args);
static void cmd_kill(NfCtlClient *c, json_t *id, json_t *args);
static void cmd_reflash(NfCtlClient *c, json_t *id, json_t *args);
static void cmd_scale(NfCtlClient *c, json_t *id, json_t *args);
static void cmd_balloon(NfCtlClient *c, json_t *id, json_t *args);
static void cmd_logs(NfCtlClient *c, json_t *id, json_t *args);
static void cmd_console(NfCtlClient *c, json_t *id, json_t *args);
static void cmd_events(NfCtlClient *c, json_t *id, json_t *args);
static void cmd_wait(NfCtlClient *c, json_t *id, json_t *args);
static void cmd_down(NfCtlClient *c, json_t *id, json_t *args);

static const struct {
  const char *name;
  Handler fn;
} commands[] = {
    {"hello", cmd_hello},     {"ps", cmd_ps},           {"start", cmd_start},
    {"stop", cmd_stop},       {"restart", cmd_restart}, {"kill", cmd_kill},
    {"scale", cmd_scale},     {"balloon", cmd_balloon}, {"logs", cmd_logs},
    {"console", cmd_console}, {"events", cmd_events},   {"wait", cmd_wait},
    {"down", cmd_down},       {"reflash", cmd_reflash}, {"mem", nf_ctl_cmd_mem}, /* cmd-mem.c */
};

static gboolean arg_string(NfCtlClient *c, json_t *id, json_t *args, const char *key,
                           const char *def, const char **out);
static gboolean arg_bool(NfCtlClient *c, json_t *id, json_t *args, const char *key, gboolean def,
                         gboolean *out);
static gboolean arg_uint(NfCtlClient *c, json_t *id, json_t *args, const char *key,
                         gboolean required, guint64 def, guint64 max, guint64 *out);
static GPtrArray *arg_targets(NfCtlClient *c, json_t *id, json_t *args, const char *def);
static NfVm *arg_vm(NfCtlClient *c, json_t *id, json_t *args);
static json_t *ids_json(GPtrArray *vms);
static void extra_from_env(json_t *extras, const char *key, const NfUbootEnv *env, const char *var);
static json_t *guest_extras(NfFleet *fleet, NfVm *vm);
static void act_on_targets(NfCtlClient *c, json_t *id, json_t *args, const char *what);
static NfCtlWait *wait_new(NfCtlClient *c, json_t *id, WaitUntil until, json_t *result);
static void wait_add(NfCtlWait *w, guint vm_id, gboolean fresh);
static void wait_arm(NfCtlWait *w, guint64 timeout_ms);
static void wait_free(NfCtlWait *w);
static gboolean wait_timeout_cb(gpointer data);
static gboolean eval_idle_cb(gpointer data);
static json_t *guest_problem(NfVm *vm, guint vm_id, const char *why);
static gint cmp_uint(gconstpointer a, gconstpointer b);

static gint cmp_uint(gconstpointer a, gconstpointer b)
{
  guint x = *(const guint *)a, y = *(const guint *)b;
  return x < y ? -1 : x > y;
}

/* --- arguments --------------------------------------------------------------- */

/* Each helper replies "bad_args" and returns FALSE when the value is there
 * but of the wrong type or out of range; an absent key takes `def`. */
static gboolean arg_string(NfCtlClient *c, json_t *id, json_t *args, const char *key,
                           const char *def, const char **out)
{
  json_t *v = json_object_get(args, key);
  if (!v || json_is_null(v)) {
    if (!def) {
      nf_ctl_reply_error(c, id, "bad_args", NULL, "args.%s is required (a string)", key);
      return FALSE;
    }
    *out = def;
    return TRUE;
  }
  if (!json_is_string(v)) {
    nf_ctl_reply_error(c, id, "bad_args", NULL, "args.%s must be a string", key);
    return FALSE;
  }
  *out = json_string_value(v);
  return TRUE;
}

static gboolean arg_bool(NfCtlClient *c, json_t *id, json_t *args, const char *key, gboolean def,
                         gboolean *out)
{
  json_t *v = json_object_get(args, key);
  if (!v || json_is_null(v)) {
    *out = def;
    return TRUE;
  }
  if (!json_is_boolean(v)) {
    nf_ctl_reply_error(c, id, "bad_args", NULL, "args.%s must be true or false", key);
    return FALSE;
  }
  *out = json_is_true(v);
  return TRUE;
}

static gboolean arg_uint(NfCtlClient *c, json_t *id, json_t *args, const char *key,
                         gboolean required, guint64 def, guint64 max, guint64 *out)
{
  json_t *v = json_object_get(args, key);
  if (!v || json_is_null(v)) {
    if (required) {
      nf_ctl_reply_error(c, id, "bad_args", NULL, "args.%s is required (an integer)", key);
      return FALSE;
    }
    *out = def;
    return TRUE;
  }
  if (!json_is_integer(v) || json_integer_value(v) < 0 || (guint64)json_integer_value(v) > max) {
    nf_ctl_reply_error(c, id, "bad_args", NULL,
                       "args.%s must be an integer from 0 to %" G_GUINT64_FORMAT, key, max);
    return FALSE;
  }
  *out = (guint64)json_integer_value(v);
  return TRUE;
}

/* The guests named by args.targets (a TARGET string), in fleet order. */
static GPtrArray *arg_targets(NfCtlClient *c, json_t *id, json_t *args, const char *def)
{
  const char *text;
  if (!arg_string(c, id, args, "targets", def, &text))
    return NULL;
  g_autoptr(GError) error = NULL;
  g_autoptr(NfTargets) t = nf_targets_parse(text, &error);
  if (!t) {
    nf_ctl_reply_error(c, id, "bad_args", NULL, "%s", error->message);
    return NULL;
  }
  NfFleet *fleet = c->ctl->fleet;
  guint n = nf_fleet_size(fleet);
  g_autofree guint *present = g_new(guint, n + 1);
  GPtrArray *vms = g_ptr_array_new();
  for (guint i = 0; i < n; i++) {
    NfVm *vm = nf_fleet_vm(fleet, i);
    present[i] = nf_vm_id(vm);
    if (nf_targets_contains(t, present[i]))
      g_ptr_array_add(vms, vm);
  }
  if (!nf_targets_check(t, present, n, &error)) {
    g_ptr_array_unref(vms);
    nf_ctl_reply_error(c, id, "no_such_guest", NULL, "%s", error->message);
    return NULL;
  }
  return vms;
}

/* The guest named by args.id (an integer). */
static NfVm *arg_vm(NfCtlClient *c, json_t *id, json_t *args)
{
  guint64 vm_id;
  if (!arg_uint(c, id, args, "id", TRUE, 0, G_MAXUINT, &vm_id))
    return NULL;
  NfVm *vm = nf_fleet_find_vm(c->ctl->fleet, (guint)vm_id);
  if (!vm)
    nf_ctl_reply_error(c, id, "no_such_guest", NULL, "no guest %" G_GUINT64_FORMAT " in this fleet",
                       vm_id);
  return vm;
}

static json_t *ids_json(GPtrArray *vms)
{
  json_t *a = json_array();
  for (guint i = 0; i < vms->len; i++)
    json_array_append_new(a, json_integer(nf_vm_id(vms->pdata[i])));
  return a;
}

void nf_ctl_dispatch(NfCtlClient *c, json_t *id, const char *cmd, json_t *args)
{
  for (gsize i = 0; i < G_N_ELEMENTS(commands); i++)
    if (strcmp(cmd, commands[i].name) == 0) {
      commands[i].fn(c, id, args);
      return;
    }
  nf_ctl_reply_error(c, id, "unknown_command", NULL, "unknown command '%s'", cmd);
}

/* --- ps ------------------------------------------------------------------------ */

/* Sets key to the env variable's value when the env has it. */
static void extra_from_env(json_t *extras, const char *key, const NfUbootEnv *env, const char *var)
{
  const char *value = nf_ubootenv_get(env, var);
  if (value)
    json_object_set_new(extras, key, json_string(value));
}

/* The disk and, when the overlay holds a valid U-Boot env, the Nerves
 * firmware state, so an OTA rollout shows which devices reverted. The env
 * read is cached by overlay mtime: a stat per guest, no I/O while idle. */
static json_t *guest_extras(NfFleet *fleet, NfVm *vm)
{
  json_t *extras = json_object();
  const char *disk = nf_vm_disk_path(vm);
  if (!disk)
    return extras;
  json_object_set_new(extras, "disk", json_string(disk));
  const NfUbootEnv *env = nf_fleet_vm_firmware_env(fleet, vm);
  if (!env)
    return extras;
  const char *active = nf_ubootenv_get(env, "nerves_fw_active");
  if (active) {
    json_object_set_new(extras, "fw_active", json_string(active));
    g_autofree char *version_key = g_strconcat(active, ".nerves_fw_version", NULL);
    extra_from_env(extras, "fw_version", env, version_key);
  }
  extra_from_env(extras, "upgrade_available", env, "upgrade_available");
  extra_from_env(extras, "fw_validated", env, "nerves_fw_validated");
  /* Resets in place are the Nerves way to switch slots; only they count here. */
  json_object_set_new(extras, "reboots", json_integer(nf_vm_reboots(vm)));
  return extras;
}

json_t *nf_ctl_guest_json(NfControl *ctl, NfVm *vm, gint64 now)
{
  gboolean running = nf_vm_is_running(vm);
  gint64 started = nf_vm_started_at(vm), ready = nf_vm_ready_at(vm);
  json_t *g = json_pack("{s:I, s:s, s:s?, s:s?, s:s, s:b, s:I}", "id", (json_int_t)nf_vm_id(vm),
                        "name", nf_vm_name(vm), "serial", nf_vm_serial(vm), "mac", nf_vm_mac(vm),
                        "state", nf_vm_state_name(nf_vm_state(vm)), "running", running, "restarts",
                        (json_int_t)nf_vm_restarts(vm));
  json_object_set_new(g, "pid",
                      running && nf_vm_pid(vm) > 0 ? json_integer(nf_vm_pid(vm)) : json_null());
  json_object_set_new(g, "uptime_s",
                      running && started > 0 ? json_real((double)(now - started) / 1e6)
                                             : json_null());
  json_object_set_new(g, "boot_s",
                      running && ready >= started && ready > 0
                          ? json_real((double)(ready - started) / 1e6)
                          : json_null());
  json_t *last = json_null();
  if (nf_vm_exit_kind(vm) != NF_EXIT_NONE)
    last = json_pack("{s:s, s:s?, s:f}", "kind", nf_exit_kind_name(nf_vm_exit_kind(vm)), "reason",
                     nf_vm_exit_reason(vm), "time", (double)nf_vm_exit_time(vm) / 1e6);
  json_object_set_new(g, "last_exit", last);
  guint64 balloon = nf_vm_balloon_actual(vm), rss = running ? nf_vm_rss(vm) : 0;
  guint64 pss = running ? nf_vm_pss(vm) : 0;
  json_object_set_new(g, "balloon_bytes",
                      balloon ? json_integer((json_int_t)balloon) : json_null());
  json_object_set_new(g, "rss_bytes", rss ? json_integer((json_int_t)rss) : json_null());
  json_object_set_new(g, "pss_bytes", pss ? json_integer((json_int_t)pss) : json_null());
  json_object_set_new(g, "extras", guest_extras(ctl->fleet, vm));
  return g;
}

static void cmd_hello(NfCtlClient *c, json_t *id, json_t *args)
{
  NfFleet *fleet = c->ctl->fleet;
  nf_ctl_reply_ok(c, id,
                  json_pack("{s:i, s:s, s:i, s:I, s:s, s:s, s:s}", "protocol", NF_CONTROL_PROTOCOL,
                            "fleet", nf_fleet_name(fleet), "pid", (int)getpid(), "count",
                            (json_int_t)nf_fleet_size(fleet), "runtime_dir",
                            nf_fleet_runtime_dir(fleet), "state_dir", nf_fleet_state_dir(fleet),
                            "socket", nf_control_socket_path(c->ctl)));
}

static void cmd_ps(NfCtlClient *c, json_t *id, json_t *args)
{
  g_autoptr(GPtrArray) vms = arg_targets(c, id, args, "all");
  if (!vms)
    return;
  NfFleet *fleet = c->ctl->fleet;
  gint64 now = g_get_monotonic_time();
  json_t *guests = json_array();
  for (guint i = 0; i < vms->len; i++)
    json_array_append_new(guests, nf_ctl_guest_json(c->ctl, vms->pdata[i], now));
  NfFleetCounts k;
  nf_fleet_counts(fleet, &k);
  json_t *counts = json_pack(
      "{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "total", (json_int_t)k.total, "queued",
      (json_int_t)k.queued, "booting", (json_int_t)k.booting, "ready", (json_int_t)k.ready,
      "unhealthy", (json_int_t)k.unhealthy, "stopping", (json_int_t)k.stopping, "stopped",
      (json_int_t)k.stopped, "backoff", (json_int_t)k.backoff, "failed", (json_int_t)k.failed);
  nf_ctl_reply_ok(c, id,
                  json_pack("{s:s, s:I, s:I, s:o, s:o}", "fleet", nf_fleet_name(fleet), "count",
                            (json_int_t)nf_fleet_size(fleet), "memory_mib",
                            (json_int_t)nf_fleet_config(fleet)->memory_mib, "counts", counts,
                            "guests", guests));
}

/* --- start / stop / restart / kill / reflash ------------------------------------ */

static void act_on_targets(NfCtlClient *c, json_t *id, json_t *args, const char *what)
{
  g_autoptr(GPtrArray) vms = arg_targets(c, id, args, NULL);
  gboolean wait;
  if (!vms || !arg_bool(c, id, args, "wait", FALSE, &wait))
    return;
  guint64 timeout_ms;
  if (!arg_uint(c, id, args, "timeout_ms", FALSE, 0, G_MAXUINT, &timeout_ms))
    return;
  NfFleet *fleet = c->ctl->fleet;
  gboolean down = strcmp(what, "stop") == 0 || strcmp(what, "kill") == 0;
  gboolean reflash = strcmp(what, "reflash") == 0;
  /* A reflashed guest is stopped and started too: --wait means ready again. */
  gboolean fresh = reflash || strcmp(what, "restart") == 0;
  NfCtlWait *w = wait ? wait_new(c, id, down ? WAIT_DOWN : WAIT_READY,
                                 json_pack("{s:o}", "guests", ids_json(vms)))
                      : NULL;
  for (guint i = 0; i < vms->len; i++) {
    NfVm *vm = vms->pdata[i];
    if (w)
      wait_add(w, nf_vm_id(vm), fresh);
    if (strcmp(what, "start") == 0) {
      NfVmState s = nf_vm_state(vm);
      if (s == NF_VM_CREATED || s == NF_VM_STOPPED || s == NF_VM_FAILED || s == NF_VM_BACKOFF)
        nf_fleet_start_vm(fleet, vm);
    } else if (down) {
      nf_fleet_stop_vm(fleet, vm, strcmp(what, "kill") == 0);
    } else if (reflash) {
      g_autoptr(GError) error = NULL;
      if (!nf_fleet_reflash_vm(fleet, vm, &error)) {
        /* Only a fleet without disks refuses, and then it refuses its
         * first guest: nothing was done, so one error says it all. */
        if (w)
          wait_free(w);
        nf_ctl_reply_error(c, id, "unsupported", NULL, "%s", error->message);
        return;
      }
    } else {
      nf_fleet_restart_vm(fleet, vm);
    }
  }
  if (w)
    wait_arm(w, timeout_ms);
  else
    nf_ctl_reply_ok(c, id, json_pack("{s:o}", "guests", ids_json(vms)));
}

static void cmd_start(NfCtlClient *c, json_t *id, json_t *args)
{
  act_on_targets(c, id, args, "start");
}
static void cmd_stop(NfCtlClient *c, json_t *id, json_t *args)
{
  act_on_targets(c, id, args, "stop");
}
static void cmd_restart(NfCtlClient *c, json_t *id, json_t *args)
{
  act_on_targets(c, id, args, "restart");
}
static void cmd_kill(NfCtlClient *c, json_t *id, json_t *args)
{
  act_on_targets(c, id, args, "kill");
}
static void cmd_reflash(NfCtlClient *c, json_t *id, json_t *args)
{
  act_on_targets(c, id, args, "reflash");
}

static void cmd_wait(NfCtlClient *c, json_t *id, json_t *args)
{
  g_autoptr(GPtrArray) vms = arg_targets(c, id, args, "all");
  const char *until;
  guint64 timeout_ms;
  if (!vms || !arg_string(c, id, args, "until", "ready", &until) ||
      !arg_uint(c, id, args, "timeout_ms", FALSE, 0, G_MAXUINT, &timeout_ms))
    return;
  WaitUntil u;
  if (strcmp(until, "ready") == 0)
    u = WAIT_READY;
  else if (strcmp(until, "down") == 0)
    u = WAIT_DOWN;
  else {
    nf_ctl_reply_error(c, id, "bad_args", NULL, "args.until must be \"ready\" or \"down\"");
    return;
  }
  NfCtlWait *w = wait_new(c, id, u, json_pack("{s:o}", "guests", ids_json(vms)));
  for (guint i = 0; i < vms->len; i++)
    wait_add(w, nf_vm_id(vms->pdata[i]), FALSE);
  wait_arm(w, timeout_ms);
}

/* --- scale ----------------------------------------------------------------------- */

static void cmd_scale(NfCtlClient *c, json_t *id, json_t *args)
{
  guint64 count, timeout_ms;
  gboolean wait;
  if (!arg_uint(c, id, args, "count", TRUE, 0, 100000, &count) ||
      !arg_bool(c, id, args, "wait", FALSE, &wait) ||
      !arg_uint(c, id, args, "timeout_ms", FALSE, 0, G_MAXUINT, &timeout_ms))
    return;
  NfFleet *fleet = c->ctl->fleet;
  guint before = nf_fleet_size(fleet);
  g_autoptr(GHashTable) old_ids = g_hash_table_new(g_direct_hash, g_direct_equal);
  g_autoptr(GArray) sorted = g_array_new(FALSE, FALSE, sizeof(guint));
  for (guint i = 0; i < before; i++) {
    guint vid = nf_vm_id(nf_fleet_vm(fleet, i));
    g_hash_table_add(old_ids, GUINT_TO_POINTER(vid));
    g_array_append_val(sorted, vid);
  }
  g_autoptr(GError) error = NULL;
  if (!nf_fleet_scale(fleet, (guint)count, &error)) {
    nf_ctl_reply_error(c, id, "failed", NULL, "%s", error->message);
    return;
  }
  json_t *result =
      json_pack("{s:I, s:I}", "previous", (json_int_t)before, "count", (json_int_t)count);
  if (!wait) {
    nf_ctl_reply_ok(c, id, result);
    return;
  }
  NfCtlWait *w = wait_new(c, id, count < before ? WAIT_DOWN : WAIT_READY, result);
  if (count < before) {
    /* The highest ids go: wait until each is down (or already freed). */
    g_array_sort(sorted, cmp_uint);
    for (guint i = (guint)count; i < before; i++)
      wait_add(w, g_array_index(sorted, guint, i), FALSE);
  } else {
    for (guint i = 0; i < nf_fleet_size(fleet); i++) {
      guint vid = nf_vm_id(nf_fleet_vm(fleet, i));
      if (!g_hash_table_contains(old_ids, GUINT_TO_POINTER(vid)))
        wait_add(w, vid, FALSE);
    }
  }
  wait_arm(w, timeout_ms);
}

/* --- balloon ---------------------------------------------------------------------- */

typedef struct {
  NfControl *ctl;      /* NULL once the server is gone (orphaned) */
  NfCtlClient *client; /* ref */
  json_t *id;          /* ref */
  guint64 bytes;
  json_t *guests;    /* one entry per target, filled in as answers come */
  guint outstanding; /* QMP replies still to come */
  gint64 deadline;   /* monotonic µs: stop waiting for the size to settle */
  guint timer;
} BalloonOp;

typedef struct {
  BalloonOp *op;
  guint index;
} BalloonSlot;

static void balloon_reply_cb(NfQmp *qmp, const NfQmpReply *reply, gpointer data);
static gboolean balloon_check_cb(gpointer data);
static void balloon_finish(BalloonOp *op);
static void balloon_free(BalloonOp *op);

/* Every guest asked answered: now wait (briefly, from memory) for the guests
 * to report the size they reached, then reply with it. */
static gboolean balloon_check_cb(gpointer data)
{
  BalloonOp *op = data;
  gboolean settled = TRUE;
  gsize i;
  json_t *g;
  json_array_foreach(op->guests, i, g)
  {
    if (json_object_get(g, "error"))
      continue;
    NfVm *vm =
        nf_fleet_find_vm(op->ctl->fleet, (guint)json_integer_value(json_object_get(g, "id")));
    guint64 actual = vm ? nf_vm_balloon_actual(vm) : 0;
    if (vm && actual != op->bytes)
      settled = FALSE;
  }
  if (!settled && g_get_monotonic_time() < op->deadline && !op->client->dead)
    return G_SOURCE_CONTINUE;
  op->timer = 0;
  balloon_finish(op);
  return G_SOURCE_REMOVE;
}

static void balloon_free(BalloonOp *op)
{
  if (op->ctl)
    op->ctl->balloons = g_list_remove(op->ctl->balloons, op);
  if (op->timer)
    g_source_remove(op->timer);
  nf_ctl_client_unref(op->client);
  json_decref(op->id);
  json_decref(op->guests);
  g_free(op);
}

void nf_ctl_balloons_orphan(NfControl *ctl)
{
  while (ctl->balloons) {
    BalloonOp *op = ctl->balloons->data;
    ctl->balloons = g_list_delete_link(ctl->balloons, ctl->balloons);
    op->ctl = NULL;
    if (op->outstanding == 0)
      balloon_free(op);
  }
}

static void balloon_finish(BalloonOp *op)
{
  gsize i;
  json_t *g;
  json_array_foreach(op->guests, i, g)
  {
    NfVm *vm =
        nf_fleet_find_vm(op->ctl->fleet, (guint)json_integer_value(json_object_get(g, "id")));
    guint64 actual = vm ? nf_vm_balloon_actual(vm) : 0;
    json_object_set_new(g, "actual_bytes", actual ? json_integer((json_int_t)actual) : json_null());
    json_object_set_new(g, "reached", json_boolean(actual == op->bytes));
  }
  nf_ctl_reply_ok(
      op->client, op->id,
      json_pack("{s:I, s:O}", "target_bytes", (json_int_t)op->bytes, "guests", op->guests));
  balloon_free(op);
}

static void balloon_reply_cb(NfQmp *qmp, const NfQmpReply *reply, gpointer data)
{
  BalloonSlot *slot = data;
  BalloonOp *op = slot->op;
  if (!op->ctl) {
    g_free(slot);
    if (--op->outstanding == 0)
      balloon_free(op);
    return;
  }
  if (reply->error)
    json_object_set_new(json_array_get(op->guests, slot->index), "error",
                        json_string(reply->error->message));
  g_free(slot);
  if (--op->outstanding > 0)
    return;
  if (balloon_check_cb(op) == G_SOURCE_CONTINUE)
    op->timer = g_timeout_add(BALLOON_CHECK_MS, balloon_check_cb, op);
}

static void cmd_balloon(NfCtlClient *c, json_t *id, json_t *args)
{
  g_autoptr(GPtrArray) vms = arg_targets(c, id, args, NULL);
  guint64 bytes, timeout_ms;
  if (!vms || !arg_uint(c, id, args, "bytes", TRUE, 0, G_MAXINT64, &bytes) ||
      !arg_uint(c, id, args, "timeout_ms", FALSE, BALLOON_DEFAULT_TIMEOUT_MS, G_MAXUINT,
                &timeout_ms))
    return;
  if (bytes < 16 * 1024 * 1024) {
    nf_ctl_reply_error(c, id, "bad_args", NULL, "args.bytes: at least 16M, or the guest starves");
    return;
  }
  BalloonOp *op = g_new0(BalloonOp, 1);
  op->ctl = c->ctl;
  op->client = nf_ctl_client_ref(c);
  op->id = json_incref(id ? id : json_null());
  op->bytes = bytes;
  op->guests = json_array();
  op->deadline = g_get_monotonic_time() + (gint64)timeout_ms * 1000;
  op->outstanding = 1; /* held until every request is sent */
  c->ctl->balloons = g_list_prepend(c->ctl->balloons, op);
  for (guint i = 0; i < vms->len; i++) {
    NfVm *vm = vms->pdata[i];
    json_array_append_new(op->guests, json_pack("{s:I, s:s}", "id", (json_int_t)nf_vm_id(vm),
                                                "name", nf_vm_name(vm)));
    BalloonSlot *slot = g_new0(BalloonSlot, 1);
    slot->op = op;
    slot->index = i;
    op->outstanding++;
    if (!nf_vm_balloon(vm, bytes, balloon_reply_cb, slot)) {
      op->outstanding--;
      g_free(slot);
      json_object_set_new(json_array_get(op->guests, i), "error",
                          json_string("not running (no QMP connection)"));
    }
  }
  NfQmpReply none = {0};
  BalloonSlot *self = g_new0(BalloonSlot, 1);
  self->op = op;
  self->index = G_MAXUINT;
  balloon_reply_cb(NULL, &none, self);
}

/* --- logs, console, events, down ---------------------------------------------------- */

static void cmd_logs(NfCtlClient *c, json_t *id, json_t *args)
{
  NfVm *vm = arg_vm(c, id, args);
  gboolean follow;
  const char *since;
  if (!vm || !arg_bool(c, id, args, "follow", FALSE, &follow) ||
      !arg_string(c, id, args, "since", "", &since))
    return;
  if (*since && strcmp(since, "start") != 0) {
    nf_ctl_reply_error(c, id, "bad_args", NULL, "args.since must be \"start\" or absent");
    return;
  }
  const char *path = nf_vm_console_log_path(vm);
  GStatBuf st;
  gint64 end = g_stat(path, &st) == 0 ? (gint64)st.st_size : 0;
  gint64 start = 0;
  g_autofree char *rotated = g_strconcat(path, ".1", NULL);
  gboolean has_rotated = g_file_test(rotated, G_FILE_TEST_EXISTS);
  if (*since) {
    gint64 *mark = g_hash_table_lookup(c->ctl->run_starts, GUINT_TO_POINTER(nf_vm_id(vm)));
    start = mark && *mark <= end ? *mark : 0;
    has_rotated = FALSE;
  }
  json_t *result = json_pack("{s:I, s:s, s:s, s:I, s:I, s:b}", "id", (json_int_t)nf_vm_id(vm),
                             "name", nf_vm_name(vm), "path", path, "start", (json_int_t)start,
                             "end", (json_int_t)end, "follow", follow);
  if (has_rotated)
    json_object_set_new(result, "rotated_path", json_string(rotated));
  nf_ctl_reply_ok(c, id, result);
  if (follow)
    nf_ctl_client_attach_console(c, vm, FALSE, 0);
}

static void cmd_console(NfCtlClient *c, json_t *id, json_t *args)
{
  NfVm *vm = arg_vm(c, id, args);
  gboolean ro;
  if (!vm || !arg_bool(c, id, args, "ro", FALSE, &ro))
    return;
  NfCtlClient *holder = g_hash_table_lookup(c->ctl->writers, GUINT_TO_POINTER(nf_vm_id(vm)));
  if (!ro && holder) {
    nf_ctl_reply_error(c, id, "busy", NULL,
                       "%s's console already has a writer (pid %d); watch with --ro",
                       nf_vm_name(vm), (int)holder->pid);
    return;
  }
  nf_ctl_reply_ok(c, id,
                  json_pack("{s:I, s:s, s:b, s:s}", "id", (json_int_t)nf_vm_id(vm), "name",
                            nf_vm_name(vm), "writer", !ro, "state",
                            nf_vm_state_name(nf_vm_state(vm))));
  nf_ctl_client_attach_console(c, vm, !ro, CONSOLE_REPLAY_BYTES);
}

static void cmd_events(NfCtlClient *c, json_t *id, json_t *args)
{
  nf_ctl_reply_ok(c, id, json_pack("{s:s}", "fleet", nf_fleet_name(c->ctl->fleet)));
  c->mode = NF_CTL_MODE_EVENTS;
}

static void cmd_down(NfCtlClient *c, json_t *id, json_t *args)
{
  gboolean force;
  if (!arg_bool(c, id, args, "force", FALSE, &force))
    return;
  NfControl *ctl = c->ctl;
  if (!ctl->hooks.down) {
    nf_ctl_reply_error(c, id, "unsupported", NULL, "this supervisor cannot be stopped remotely");
    return;
  }
  nf_ctl_log(ctl, "stop asked over the control socket (pid %d)%s", (int)c->pid,
             force ? ", killing" : "");
  /* The connection stays open: the client sees EOF when the supervisor is gone. */
  nf_ctl_reply_ok(c, id, json_pack("{s:i}", "pid", (int)getpid()));
  ctl->hooks.down(force, ctl->hooks_data);
}

/* --- waits ---------------------------------------------------------------------------- */

static NfCtlWait *wait_new(NfCtlClient *c, json_t *id, WaitUntil until, json_t *result)
{
  NfCtlWait *w = g_new0(NfCtlWait, 1);
  w->ctl = c->ctl;
  w->client = nf_ctl_client_ref(c);
  w->id = json_incref(id ? id : json_null());
  w->until = until;
  w->pending = g_hash_table_new(g_direct_hash, g_direct_equal);
  w->fresh = g_hash_table_new(g_direct_hash, g_direct_equal);
  w->result = result;
  return w;
}

static void wait_add(NfCtlWait *w, guint vm_id, gboolean fresh)
{
  g_hash_table_add(w->pending, GUINT_TO_POINTER(vm_id));
  if (fresh)
    g_hash_table_add(w->fresh, GUINT_TO_POINTER(vm_id));
}

/* Pending from now on; evaluated at once (on the next idle) and after changes. */
static void wait_arm(NfCtlWait *w, guint64 timeout_ms)
{
  NfControl *ctl = w->ctl;
  ctl->waits = g_list_append(ctl->waits, w);
  if (timeout_ms)
    w->timer = g_timeout_add((guint)MIN(timeout_ms, G_MAXUINT), wait_timeout_cb, w);
  if (!ctl->eval_src)
    ctl->eval_src = g_idle_add(eval_idle_cb, ctl);
}

static void wait_free(NfCtlWait *w)
{
  w->ctl->waits = g_list_remove(w->ctl->waits, w);
  if (w->timer)
    g_source_remove(w->timer);
  nf_ctl_client_unref(w->client);
  json_decref(w->id);
  json_decref(w->result);
  g_hash_table_unref(w->pending);
  g_hash_table_unref(w->fresh);
  g_free(w);
}

void nf_ctl_waits_free_all(NfControl *ctl)
{
  while (ctl->waits)
    wait_free(ctl->waits->data);
}

/* Why a guest did not make it: state, last exit, and its recent console. */
static json_t *guest_problem(NfVm *vm, guint vm_id, const char *why)
{
  if (!vm)
    return json_pack("{s:I, s:s}", "id", (json_int_t)vm_id, "problem", why);
  g_autofree char *tail = nf_control_console_tail(vm, FAIL_TAIL_BYTES);
  json_t *p = json_pack("{s:I, s:s, s:s?, s:s, s:s}", "id", (json_int_t)vm_id, "name",
                        nf_vm_name(vm), "serial", nf_vm_serial(vm), "state",
                        nf_vm_state_name(nf_vm_state(vm)), "problem", why);
  if (nf_vm_exit_kind(vm) != NF_EXIT_NONE) {
    json_object_set_new(p, "exit", json_string(nf_exit_kind_name(nf_vm_exit_kind(vm))));
    if (nf_vm_exit_reason(vm))
      json_object_set_new(p, "reason", json_string(nf_vm_exit_reason(vm)));
  }
  json_object_set_new(p, "console_tail", json_string(tail));
  return p;
}

static gboolean wait_timeout_cb(gpointer data)
{
  NfCtlWait *w = data;
  w->timer = 0;
  json_t *details = json_array();
  g_autoptr(GString) names = g_string_new(NULL);
  GHashTableIter it;
  gpointer key;
  g_hash_table_iter_init(&it, w->pending);
  while (g_hash_table_iter_next(&it, &key, NULL)) {
    NfVm *vm = nf_fleet_find_vm(w->ctl->fleet, GPOINTER_TO_UINT(key));
    json_array_append_new(details, guest_problem(vm, GPOINTER_TO_UINT(key), "timeout"));
    if (names->len < 200)
      g_string_append_printf(names, "%s%s", names->len ? ", " : "",
                             vm ? nf_vm_name(vm) : "(removed)");
  }
  nf_ctl_reply_error(w->client, w->id, "timeout", details, "timed out waiting for %u guest%s: %s",
                     g_hash_table_size(w->pending), g_hash_table_size(w->pending) == 1 ? "" : "s",
                     names->str);
  wait_free(w);
  return G_SOURCE_REMOVE;
}

void nf_ctl_waits_changed(NfControl *ctl, NfVm *vm, NfVmState new_state)
{
  if (!ctl->waits)
    return;
  if (new_state == NF_VM_READY)
    for (GList *l = ctl->waits; l; l = l->next)
      g_hash_table_remove(((NfCtlWait *)l->data)->fresh, GUINT_TO_POINTER(nf_vm_id(vm)));
  if (!ctl->eval_src)
    ctl->eval_src = g_idle_add(eval_idle_cb, ctl);
}

static gboolean eval_idle_cb(gpointer data)
{
  NfControl *ctl = data;
  ctl->eval_src = 0;
  nf_ctl_waits_evaluate(ctl);
  return G_SOURCE_REMOVE;
}

/* Runs from an idle after changes, so a guest passing through STOPPED on its
 * way back up (restart) is seen where it settled, not mid-way. */
void nf_ctl_waits_evaluate(NfControl *ctl)
{
  GList *copy = g_list_copy(ctl->waits);
  for (GList *l = copy; l; l = l->next) {
    NfCtlWait *w = l->data;
    if (w->client->dead) {
      wait_free(w);
      continue;
    }
    json_t *failed = json_array();
    g_autoptr(GString) names = g_string_new(NULL);
    GHashTableIter it;
    gpointer key;
    g_hash_table_iter_init(&it, w->pending);
    while (g_hash_table_iter_next(&it, &key, NULL)) {
      guint vid = GPOINTER_TO_UINT(key);
      NfVm *vm = nf_fleet_find_vm(ctl->fleet, vid);
      NfVmState s = vm ? nf_vm_state(vm) : NF_VM_STOPPED;
      const char *why = NULL;
      gboolean done = FALSE;
      if (w->until == WAIT_DOWN) {
        done = !vm || (!nf_vm_is_running(vm) &&
                       (s == NF_VM_STOPPED || s == NF_VM_FAILED || s == NF_VM_CREATED));
      } else if (!vm) {
        why = "removed from the fleet";
      } else if (s == NF_VM_READY) {
        done = !g_hash_table_contains(w->fresh, key);
      } else if (s == NF_VM_FAILED) {
        why = "failed";
      } else if (s == NF_VM_STOPPED || s == NF_VM_CREATED) {
        why = "stopped";
      }
      if (done) {
        g_hash_table_iter_remove(&it);
      } else if (why) {
        json_array_append_new(failed, guest_problem(vm, vid, why));
        if (names->len < 300) {
          const char *reason = vm ? nf_vm_exit_reason(vm) : NULL;
          g_string_append_printf(names, "%s%s %s%s%s%s", names->len ? "; " : "",
                                 vm ? nf_vm_name(vm) : "?", why, reason ? " (" : "",
                                 reason ? reason : "", reason ? ")" : "");
        }
      }
    }
    if (json_array_size(failed) > 0) {
      nf_ctl_reply_error(w->client, w->id, "failed", failed, "%s", names->str);
      wait_free(w);
    } else {
      json_decref(failed);
      if (g_hash_table_size(w->pending) == 0) {
        nf_ctl_reply_ok(w->client, w->id, json_incref(w->result));
        wait_free(w);
      }
    }
  }
  g_list_free(copy);
}
