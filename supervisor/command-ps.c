/*
 * command-ps.c: `ps`, every guest answered from memory (control-protocol.md
 * "ps"), as the text of the document.
 *
 * Contract: the answer costs about 2 us of supervisor CPU per guest (2.0
 * ms a call at 1,000, 21 ms at 10,000), so that `ps --json` stays within
 * 10 ms at 1,000 guests and grows linearly beyond (issue 17). Encoding a
 * guest's ~20 fields with jansson costs ~4 us, two thirds of it in
 * json_dumps, and a guest's fields rarely change between two calls. So:
 *  - Every input of a guest's document except four numbers that move on
 *    their own is gathered into a GuestFacts; the document's parts are
 *    built from the facts alone. Equal facts therefore give equal text:
 *    the text encoded last time is kept with a copy of its facts and used
 *    again while the facts compare equal. Nothing has to remember to
 *    invalidate it.
 *  - The four moving numbers (uptime, balloon, RSS, PSS) are encoded at
 *    each call.
 * Every byte of JSON comes from jansson, with the control socket's flags;
 * what this file writes by hand is the glue between encoded objects (the
 * braces and commas that join a guest's three parts, and the "guests"
 * array). Transports that want the document as a tree get it parsed
 * (nf_command_reply_ok_text).
 *
 * `ps` reads the guests' fields, /proc (RSS and PSS, sampled by the health
 * probe) and firmware envs cached by overlay mtime, never QMP.
 */
#include "supervisor/command-private.h"

#include <string.h>

#include "supervisor/net.h"
#include "supervisor/shard.h"

#define PS_JSON_FLAGS (JSON_COMPACT | JSON_REAL_PRECISION(10))

/* What a guest's document says apart from the moving numbers. Strings are
 * borrowed when gathered (ip excepted: always owned) and owned in the
 * cache. */
typedef struct {
  guint id;
  const char *name, *serial, *mac;
  NfVmState state;
  gboolean running;
  guint restarts;
  GPid pid;       /* 0: null */
  gint64 boot_us; /* < 0: null */
  NfExitKind exit_kind;
  const char *exit_reason;
  gint64 exit_time;
  guint n_ports;
  NfNetForward ports[NF_NET_MAX_FORWARDS];
  char *ip;
  const char *write_error, *disk;
  gboolean has_env;
  const char *fw_active, *fw_version, *upgrade_available, *fw_validated;
  guint reboots;
} GuestFacts;

/* One guest's last encoding: its document without the moving numbers, as
 * `head` ({"id":.. up to "pid", without the closing brace) and `tail`
 * ("boot_s":.. to the end, without the opening brace). */
typedef struct {
  GuestFacts facts; /* deep copy */
  char *head, *tail;
  guint64 pass; /* the last `ps` that used it */
} PsEntry;

static void facts_gather(NfFleet *fleet, NfVm *vm, GuestFacts *f);
static gboolean facts_equal(const GuestFacts *a, const GuestFacts *b);
static void facts_copy(GuestFacts *dst, const GuestFacts *src);
static void facts_clear_owned(GuestFacts *f);
static void ps_entry_free(gpointer data);
static void encode_parts(const GuestFacts *f, PsEntry *e);
static char *encode_trimmed(json_t *obj, gboolean drop_open, gboolean drop_close);
static void append_guest(NfCommands *cmds, GString *out, NfVm *vm, gint64 now);
static json_t *moving_numbers(NfVm *vm, gint64 now);
static json_t *fleet_header(NfFleet *fleet);

/* --- facts ------------------------------------------------------------------------- */

static void facts_gather(NfFleet *fleet, NfVm *vm, GuestFacts *f)
{
  memset(f, 0, sizeof *f);
  f->id = nf_vm_id(vm);
  f->name = nf_vm_name(vm);
  f->serial = nf_vm_serial(vm);
  f->mac = nf_vm_mac(vm);
  f->state = nf_vm_state(vm);
  f->running = nf_vm_is_running(vm);
  f->restarts = nf_vm_restarts(vm);
  f->pid = f->running && nf_vm_pid(vm) > 0 ? nf_vm_pid(vm) : 0;
  gint64 started = nf_vm_started_at(vm), ready = nf_vm_ready_at(vm);
  f->boot_us = f->running && ready >= started && ready > 0 ? ready - started : -1;
  f->exit_kind = nf_vm_exit_kind(vm);
  if (f->exit_kind != NF_EXIT_NONE) {
    f->exit_reason = nf_vm_exit_reason(vm);
    f->exit_time = nf_vm_exit_time(vm);
  }
  const NfNet *net = nf_fleet_net(fleet);
  f->n_ports = net ? nf_net_forwards(net, f->id, f->ports) : 0;
  f->ip = nf_fleet_guest_ip(fleet, f->id);
  /* The extras: the disk and, when the overlay holds a valid U-Boot env,
   * the Nerves firmware state, so an OTA rollout shows which devices
   * reverted. The env read is cached by overlay mtime: a stat per guest,
   * no I/O while idle. */
  f->write_error = nf_vm_write_error(vm);
  f->disk = nf_vm_disk_path(vm);
  const NfUbootEnv *env = f->disk ? nf_fleet_vm_firmware_env(fleet, vm) : NULL;
  if (!env)
    return;
  f->has_env = TRUE;
  f->fw_active = nf_ubootenv_get(env, "nerves_fw_active");
  if (f->fw_active) {
    g_autofree char *version_key = g_strconcat(f->fw_active, ".nerves_fw_version", NULL);
    f->fw_version = nf_ubootenv_get(env, version_key);
  }
  f->upgrade_available = nf_ubootenv_get(env, "upgrade_available");
  f->fw_validated = nf_ubootenv_get(env, "nerves_fw_validated");
  /* Resets in place are the Nerves way to switch slots; only they count here. */
  f->reboots = nf_vm_reboots(vm);
}

static gboolean facts_equal(const GuestFacts *a, const GuestFacts *b)
{
  return a->id == b->id && a->state == b->state && a->running == b->running &&
         a->restarts == b->restarts && a->pid == b->pid && a->boot_us == b->boot_us &&
         a->exit_kind == b->exit_kind && a->exit_time == b->exit_time && a->n_ports == b->n_ports &&
         memcmp(a->ports, b->ports, a->n_ports * sizeof a->ports[0]) == 0 &&
         a->has_env == b->has_env && a->reboots == b->reboots && g_strcmp0(a->name, b->name) == 0 &&
         g_strcmp0(a->serial, b->serial) == 0 && g_strcmp0(a->mac, b->mac) == 0 &&
         g_strcmp0(a->exit_reason, b->exit_reason) == 0 && g_strcmp0(a->ip, b->ip) == 0 &&
         g_strcmp0(a->write_error, b->write_error) == 0 && g_strcmp0(a->disk, b->disk) == 0 &&
         g_strcmp0(a->fw_active, b->fw_active) == 0 &&
         g_strcmp0(a->fw_version, b->fw_version) == 0 &&
         g_strcmp0(a->upgrade_available, b->upgrade_available) == 0 &&
         g_strcmp0(a->fw_validated, b->fw_validated) == 0;
}

static void facts_copy(GuestFacts *dst, const GuestFacts *src)
{
  *dst = *src;
  dst->name = g_strdup(src->name);
  dst->serial = g_strdup(src->serial);
  dst->mac = g_strdup(src->mac);
  dst->exit_reason = g_strdup(src->exit_reason);
  dst->ip = g_strdup(src->ip);
  dst->write_error = g_strdup(src->write_error);
  dst->disk = g_strdup(src->disk);
  dst->fw_active = g_strdup(src->fw_active);
  dst->fw_version = g_strdup(src->fw_version);
  dst->upgrade_available = g_strdup(src->upgrade_available);
  dst->fw_validated = g_strdup(src->fw_validated);
}

/* Frees the strings of a copy made by facts_copy. */
static void facts_clear_owned(GuestFacts *f)
{
  const char *owned[] = {
      f->name, f->serial,    f->mac,        f->exit_reason,       f->ip,          f->write_error,
      f->disk, f->fw_active, f->fw_version, f->upgrade_available, f->fw_validated};
  for (gsize i = 0; i < G_N_ELEMENTS(owned); i++)
    g_free((char *)owned[i]);
  memset(f, 0, sizeof *f);
}

static void ps_entry_free(gpointer data)
{
  PsEntry *e = data;
  facts_clear_owned(&e->facts);
  g_free(e->head);
  g_free(e->tail);
  g_free(e);
}

/* --- encoding ---------------------------------------------------------------------- */

/* jansson's encoding of `obj` (stolen), without its first and/or last
 * byte (the braces). */
static char *encode_trimmed(json_t *obj, gboolean drop_open, gboolean drop_close)
{
  char *text = json_dumps(obj, PS_JSON_FLAGS);
  json_decref(obj);
  if (!text)
    g_error("ps: cannot encode a guest (out of memory)");
  gsize len = strlen(text);
  char *out =
      g_strndup(text + (drop_open ? 1 : 0), len - (drop_open ? 1 : 0) - (drop_close ? 1 : 0));
  free(text);
  return out;
}

static void encode_parts(const GuestFacts *f, PsEntry *e)
{
  json_t *head =
      json_pack("{s:I, s:s, s:s?, s:s?, s:s, s:b, s:I}", "id", (json_int_t)f->id, "name", f->name,
                "serial", f->serial, "mac", f->mac, "state", nf_vm_state_name(f->state), "running",
                f->running, "restarts", (json_int_t)f->restarts);
  json_object_set_new(head, "pid", f->pid ? json_integer(f->pid) : json_null());

  json_t *tail = json_object();
  json_object_set_new(tail, "boot_s",
                      f->boot_us >= 0 ? json_real((double)f->boot_us / 1e6) : json_null());
  json_t *last = json_null();
  if (f->exit_kind != NF_EXIT_NONE)
    last = json_pack("{s:s, s:s?, s:f}", "kind", nf_exit_kind_name(f->exit_kind), "reason",
                     f->exit_reason, "time", (double)f->exit_time / 1e6);
  json_object_set_new(tail, "last_exit", last);
  json_t *ports = json_array();
  for (guint i = 0; i < f->n_ports; i++)
    json_array_append_new(ports, json_pack("{s:i, s:i}", "host", (int)f->ports[i].host, "guest",
                                           (int)f->ports[i].guest));
  json_object_set_new(tail, "ports", ports);
  json_object_set_new(tail, "ip", f->ip ? json_string(f->ip) : json_null());
  json_t *extras = json_object();
  if (f->write_error)
    json_object_set_new(extras, "write_error", json_string(f->write_error));
  if (f->disk)
    json_object_set_new(extras, "disk", json_string(f->disk));
  if (f->has_env) {
    const struct {
      const char *key, *value;
    } fw[] = {{"fw_active", f->fw_active},
              {"fw_version", f->fw_version},
              {"upgrade_available", f->upgrade_available},
              {"fw_validated", f->fw_validated}};
    for (gsize i = 0; i < G_N_ELEMENTS(fw); i++)
      if (fw[i].value)
        json_object_set_new(extras, fw[i].key, json_string(fw[i].value));
    json_object_set_new(extras, "reboots", json_integer(f->reboots));
  }
  json_object_set_new(tail, "extras", extras);

  e->head = encode_trimmed(head, FALSE, TRUE);
  e->tail = encode_trimmed(tail, TRUE, FALSE);
}

/* The numbers that move without anything else changing. */
static json_t *moving_numbers(NfVm *vm, gint64 now)
{
  gboolean running = nf_vm_is_running(vm);
  gint64 started = nf_vm_started_at(vm);
  guint64 balloon = nf_vm_balloon_actual(vm);
  guint64 rss = running ? nf_vm_rss(vm) : 0, pss = running ? nf_vm_pss(vm) : 0;
  json_t *m = json_object();
  json_object_set_new(m, "uptime_s",
                      running && started > 0 ? json_real((double)(now - started) / 1e6)
                                             : json_null());
  json_object_set_new(m, "balloon_bytes",
                      balloon ? json_integer((json_int_t)balloon) : json_null());
  json_object_set_new(m, "rss_bytes", rss ? json_integer((json_int_t)rss) : json_null());
  json_object_set_new(m, "pss_bytes", pss ? json_integer((json_int_t)pss) : json_null());
  return m;
}

/* Appends one guest's document: head, the moving numbers, tail. */
static void append_guest(NfCommands *cmds, GString *out, NfVm *vm, gint64 now)
{
  GuestFacts f;
  facts_gather(cmds->fleet, vm, &f);
  PsEntry *e = g_hash_table_lookup(cmds->ps_cache, GUINT_TO_POINTER(f.id));
  if (!e || !facts_equal(&e->facts, &f)) {
    PsEntry *fresh = g_new0(PsEntry, 1);
    facts_copy(&fresh->facts, &f);
    encode_parts(&fresh->facts, fresh);
    g_hash_table_replace(cmds->ps_cache, GUINT_TO_POINTER(f.id), fresh);
    e = fresh;
  }
  g_free(f.ip);
  e->pass = cmds->ps_pass;
  g_autofree char *moving = encode_trimmed(moving_numbers(vm, now), TRUE, TRUE);
  g_string_append(out, e->head);
  g_string_append_c(out, ',');
  g_string_append(out, moving);
  g_string_append_c(out, ',');
  g_string_append(out, e->tail);
}

static json_t *fleet_header(NfFleet *fleet)
{
  NfFleetCounts k;
  nf_fleet_counts(fleet, &k);
  json_t *counts = json_pack(
      "{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "total", (json_int_t)k.total, "queued",
      (json_int_t)k.queued, "booting", (json_int_t)k.booting, "ready", (json_int_t)k.ready,
      "unhealthy", (json_int_t)k.unhealthy, "stopping", (json_int_t)k.stopping, "stopped",
      (json_int_t)k.stopped, "backoff", (json_int_t)k.backoff, "failed", (json_int_t)k.failed);
  const NfFleetConfig *cfg = nf_fleet_config(fleet);
  json_t *doc = json_pack("{s:s, s:s, s:I, s:I, s:o}", "fleet", nf_fleet_name(fleet), "host",
                          g_get_host_name(), "count", (json_int_t)nf_fleet_size(fleet),
                          "memory_mib", (json_int_t)cfg->memory_mib, "counts", counts);
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
  return doc;
}

/* --- the command ---------------------------------------------------------------------- */

void nf_command_ps(NfCommandReply *r, json_t *args)
{
  g_autoptr(GPtrArray) vms = nf_command_arg_targets(r, args, "all");
  if (!vms)
    return;
  NfCommands *cmds = nf_command_reply_commands(r);
  NfFleet *fleet = cmds->fleet;
  if (!cmds->ps_cache)
    cmds->ps_cache = g_hash_table_new_full(g_direct_hash, g_direct_equal, NULL, ps_entry_free);
  cmds->ps_pass++;
  gint64 now = g_get_monotonic_time();
  g_autofree char *header = encode_trimmed(fleet_header(fleet), FALSE, TRUE);
  GString *out = g_string_sized_new(strlen(header) + 32 + vms->len * 320);
  g_string_append(out, header);
  g_string_append(out, ",\"guests\":[");
  for (guint i = 0; i < vms->len; i++) {
    if (i > 0)
      g_string_append_c(out, ',');
    append_guest(cmds, out, vms->pdata[i], now);
  }
  g_string_append(out, "]}");
  /* A call that listed every guest drops the entries of guests scaled away. */
  if (vms->len == nf_fleet_size(fleet)) {
    GHashTableIter it;
    gpointer value;
    g_hash_table_iter_init(&it, cmds->ps_cache);
    while (g_hash_table_iter_next(&it, NULL, &value))
      if (((PsEntry *)value)->pass != cmds->ps_pass)
        g_hash_table_iter_remove(&it);
  }
  nf_command_reply_ok_text(r, out);
}

void nf_commands_ps_cache_free(NfCommands *cmds)
{
  g_clear_pointer(&cmds->ps_cache, g_hash_table_unref);
}
