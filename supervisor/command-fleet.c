/*
 * command-fleet.c: the commands about the fleet as a whole: `hello` (who
 * answers, where its files are), `ps` (every guest, answered from memory),
 * `scale` and `down`. See control-protocol.md for the documents.
 *
 * `ps` reads the guests' fields, /proc (for RSS) and firmware envs cached
 * by overlay mtime, never QMP, so it stays fast on thousands of guests.
 */
#include "supervisor/command-private.h"

#include <unistd.h>

#include "supervisor/control.h"
#include "supervisor/net.h"
#include "supervisor/shard.h"

static void extra_from_env(json_t *extras, const char *key, const NfUbootEnv *env, const char *var);
static json_t *guest_extras(NfFleet *fleet, NfVm *vm);
static json_t *guest_ports(NfFleet *fleet, NfVm *vm);
static gint cmp_uint(gconstpointer a, gconstpointer b);

static gint cmp_uint(gconstpointer a, gconstpointer b)
{
  guint x = *(const guint *)a, y = *(const guint *)b;
  return x < y ? -1 : x > y;
}

void nf_command_hello(NfCommandReply *r, json_t *args)
{
  NfFleet *fleet = nf_command_reply_fleet(r);
  g_autofree char *socket =
      g_build_filename(nf_fleet_runtime_dir(fleet), NF_CONTROL_SOCKET_NAME, NULL);
  nf_command_reply_ok(r, json_pack("{s:i, s:s, s:i, s:I, s:s, s:s, s:s}", "protocol",
                                   NF_CONTROL_PROTOCOL, "fleet", nf_fleet_name(fleet), "pid",
                                   (int)getpid(), "count", (json_int_t)nf_fleet_size(fleet),
                                   "runtime_dir", nf_fleet_runtime_dir(fleet), "state_dir",
                                   nf_fleet_state_dir(fleet), "socket", socket));
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
  if (nf_vm_write_error(vm))
    json_object_set_new(extras, "write_error", json_string(nf_vm_write_error(vm)));
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

/* The host ports forwarded to the guest (--forward): [{"host":..,"guest":..}]. */
static json_t *guest_ports(NfFleet *fleet, NfVm *vm)
{
  json_t *ports = json_array();
  const NfNet *net = nf_fleet_net(fleet);
  NfNetForward f[NF_NET_MAX_FORWARDS];
  guint n = net ? nf_net_forwards(net, nf_vm_id(vm), f) : 0;
  for (guint i = 0; i < n; i++)
    json_array_append_new(
        ports, json_pack("{s:i, s:i}", "host", (int)f[i].host, "guest", (int)f[i].guest));
  return ports;
}

json_t *nf_commands_guest_json(NfCommands *cmds, NfVm *vm, gint64 now)
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
  json_object_set_new(g, "balloon_bytes",
                      balloon ? json_integer((json_int_t)balloon) : json_null());
  json_object_set_new(g, "rss_bytes", rss ? json_integer((json_int_t)rss) : json_null());
  guint64 pss = running ? nf_vm_pss(vm) : 0;
  json_object_set_new(g, "pss_bytes", pss ? json_integer((json_int_t)pss) : json_null());
  json_object_set_new(g, "ports", guest_ports(cmds->fleet, vm));
  g_autofree char *ip = nf_fleet_guest_ip(cmds->fleet, nf_vm_id(vm));
  json_object_set_new(g, "ip", ip ? json_string(ip) : json_null());
  json_object_set_new(g, "extras", guest_extras(cmds->fleet, vm));
  return g;
}

void nf_command_ps(NfCommandReply *r, json_t *args)
{
  g_autoptr(GPtrArray) vms = nf_command_arg_targets(r, args, "all");
  if (!vms)
    return;
  NfCommands *cmds = nf_command_reply_commands(r);
  NfFleet *fleet = cmds->fleet;
  gint64 now = g_get_monotonic_time();
  json_t *guests = json_array();
  for (guint i = 0; i < vms->len; i++)
    json_array_append_new(guests, nf_commands_guest_json(cmds, vms->pdata[i], now));
  NfFleetCounts k;
  nf_fleet_counts(fleet, &k);
  json_t *counts = json_pack(
      "{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "total", (json_int_t)k.total, "queued",
      (json_int_t)k.queued, "booting", (json_int_t)k.booting, "ready", (json_int_t)k.ready,
      "unhealthy", (json_int_t)k.unhealthy, "stopping", (json_int_t)k.stopping, "stopped",
      (json_int_t)k.stopped, "backoff", (json_int_t)k.backoff, "failed", (json_int_t)k.failed);
  const NfFleetConfig *cfg = nf_fleet_config(fleet);
  json_t *doc =
      json_pack("{s:s, s:s, s:I, s:I, s:o, s:o}", "fleet", nf_fleet_name(fleet), "host",
                g_get_host_name(), "count", (json_int_t)nf_fleet_size(fleet), "memory_mib",
                (json_int_t)cfg->memory_mib, "counts", counts, "guests", guests);
  /* Where this fleet sits in a fleet spread over hosts (supervisor/shard.h). */
  json_object_set_new(doc, "shard",
                      cfg->shard_count
                          ? json_pack("{s:I, s:I, s:I}", "index", (json_int_t)cfg->shard_index,
                                      "count", (json_int_t)cfg->shard_count, "size",
                                      (json_int_t)cfg->shard_size)
                          : json_null());
  json_object_set_new(doc, "ids",
                      json_pack("{s:I, s:I}", "first", (json_int_t)cfg->id_offset + 1, "last",
                                (json_int_t)nf_shard_last_id(cfg)));
  nf_command_reply_ok(r, doc);
}

/* --- scale ------------------------------------------------------------------------ */

void nf_command_scale(NfCommandReply *r, json_t *args)
{
  guint64 count, timeout_ms;
  gboolean wait;
  if (!nf_command_arg_uint(r, args, "count", TRUE, 0, 100000, &count) ||
      !nf_command_arg_bool(r, args, "wait", FALSE, &wait) ||
      !nf_command_arg_uint(r, args, "timeout_ms", FALSE, 0, G_MAXUINT, &timeout_ms))
    return;
  if (count == 0) {
    nf_command_reply_error(r, "bad_args", NULL,
                           "args.count must be an integer from 1 to 100000 (a fleet keeps at "
                           "least one guest; `down` stops it)");
    return;
  }
  NfFleet *fleet = nf_command_reply_fleet(r);
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
    nf_command_reply_error(r, "failed", NULL, "%s", error->message);
    return;
  }
  json_t *result =
      json_pack("{s:I, s:I}", "previous", (json_int_t)before, "count", (json_int_t)count);
  if (!wait) {
    nf_command_reply_ok(r, result);
    return;
  }
  NfCommandWait *w = nf_command_wait_new(
      r, count < before ? NF_COMMAND_UNTIL_DOWN : NF_COMMAND_UNTIL_READY, result);
  if (count < before) {
    /* The highest ids go: wait until each is down (or already freed). */
    g_array_sort(sorted, cmp_uint);
    for (guint i = (guint)count; i < before; i++)
      nf_command_wait_add(w, g_array_index(sorted, guint, i), FALSE);
  } else {
    for (guint i = 0; i < nf_fleet_size(fleet); i++) {
      guint vid = nf_vm_id(nf_fleet_vm(fleet, i));
      if (!g_hash_table_contains(old_ids, GUINT_TO_POINTER(vid)))
        nf_command_wait_add(w, vid, FALSE);
    }
  }
  nf_command_wait_arm(w, timeout_ms);
}

/* --- down ---------------------------------------------------------------------------- */

void nf_command_down(NfCommandReply *r, json_t *args)
{
  gboolean force;
  if (!nf_command_arg_bool(r, args, "force", FALSE, &force))
    return;
  NfCommands *cmds = nf_command_reply_commands(r);
  if (!cmds->hooks.down) {
    nf_command_reply_error(r, "unsupported", NULL, "this supervisor cannot be stopped remotely");
    return;
  }
  NfCommandPeer *peer = nf_command_reply_peer(r);
  nf_command_log(cmds, "stop asked over the %s (pid %d)%s", peer->transport->name, (int)peer->pid,
                 force ? ", killing" : "");
  /* The connection stays open: the client sees EOF when the supervisor is gone. */
  nf_command_reply_ok(r, json_pack("{s:i}", "pid", (int)getpid()));
  cmds->hooks.down(force, cmds->hooks_data);
}
