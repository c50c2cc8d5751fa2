/*
 * command-mem.c: the command `mem`: where the fleet's memory goes (the
 * host's total, available and pressure; KSM's state and saving; per guest
 * qemu RSS and PSS, balloon target and actual, what the guest kernel says it
 * has free). Schema in control-protocol.md. One document per request, read
 * from /proc (fresh PSS, so a caller comparing with smaps_rollup sees the
 * same numbers) and the guests' last balloon stats; nothing is asked of
 * qemu, so it answers at once even when guests are slow.
 */
#include "supervisor/command-private.h"

#include <unistd.h>

#include "supervisor/ksm.h"
#include "supervisor/memstat.h"

static json_t *bytes_or_null(gint64 v);
static json_t *host_json(void);
static json_t *ksm_json(NfFleet *fleet);
static json_t *guest_json(NfVm *vm, NfMemStat *sum, guint *running);

static json_t *bytes_or_null(gint64 v)
{
  return v >= 0 ? json_integer((json_int_t)v) : json_null();
}

static json_t *host_json(void)
{
  NfHostMem h;
  nf_memstat_host(&h);
  json_t *psi =
      h.psi ? json_pack("{s:f, s:f, s:f, s:f}", "some_avg10", h.some_avg10, "some_avg60",
                        h.some_avg60, "full_avg10", h.full_avg10, "full_avg60", h.full_avg60)
            : json_null();
  return json_pack("{s:I, s:I, s:f, s:o}", "total_bytes", (json_int_t)h.total, "available_bytes",
                   (json_int_t)h.available, "available_pct",
                   h.total ? 100.0 * (double)h.available / (double)h.total : 0.0, "psi", psi);
}

static json_t *ksm_json(NfFleet *fleet)
{
  static const char *const modes[] = {
      [NF_KSM_AUTO] = "auto", [NF_KSM_ON] = "on", [NF_KSM_OFF] = "off"};
  NfKsmState k;
  nf_ksm_read_state(&k);
  guint64 page = (guint64)sysconf(_SC_PAGESIZE);
  return json_pack("{s:s, s:b, s:b, s:i, s:i, s:i, s:I, s:I, s:I, s:I}", "mode",
                   modes[nf_fleet_config(fleet)->ksm], "fleet_uses", nf_fleet_ksm_active(fleet),
                   "present", k.present, "run", (int)k.run, "pages_to_scan", (int)k.pages_to_scan,
                   "sleep_ms", (int)k.sleep_ms, "pages_shared", (json_int_t)k.pages_shared,
                   "pages_sharing", (json_int_t)k.pages_sharing, "zero_pages",
                   (json_int_t)k.zero_pages, "saved_bytes",
                   (json_int_t)((k.pages_sharing + k.zero_pages) * page));
}

static json_t *guest_json(NfVm *vm, NfMemStat *sum, guint *running)
{
  GPid pid = nf_vm_pid(vm);
  NfMemStat m = {0};
  gboolean up = pid > 0 && nf_memstat_read(pid, &m);
  if (up) {
    (*running)++;
    sum->rss += m.rss;
    sum->pss += m.pss;
  }
  NfVmGuestMem g;
  nf_vm_guest_mem(vm, &g);
  guint64 target = nf_vm_balloon_target(vm);
  json_t *o = json_pack("{s:i, s:s, s:s}", "id", (int)nf_vm_id(vm), "name", nf_vm_name(vm), "state",
                        nf_vm_state_name(nf_vm_state(vm)));
  json_object_set_new(o, "pid", up ? json_integer(pid) : json_null());
  json_object_set_new(o, "rss_bytes", up ? json_integer((json_int_t)m.rss) : json_null());
  json_object_set_new(o, "pss_bytes", up ? json_integer((json_int_t)m.pss) : json_null());
  json_object_set_new(o, "pss_anon_bytes", up ? json_integer((json_int_t)m.pss_anon) : json_null());
  json_object_set_new(o, "ksm_merged_bytes",
                      up ? json_integer((json_int_t)nf_ksm_process_saved_bytes(pid)) : json_null());
  json_object_set_new(o, "balloon_target_bytes",
                      target ? json_integer((json_int_t)target) : json_null());
  json_object_set_new(o, "balloon_actual_bytes",
                      up ? json_integer((json_int_t)nf_vm_balloon_actual(vm)) : json_null());
  json_object_set_new(o, "guest_total_bytes", bytes_or_null(up && g.total ? (gint64)g.total : -1));
  json_object_set_new(o, "guest_free_bytes", bytes_or_null(up && g.seq ? (gint64)g.free : -1));
  json_object_set_new(o, "guest_available_bytes",
                      bytes_or_null(up && g.available ? (gint64)g.available : -1));
  return o;
}

void nf_command_mem(NfCommandReply *r, json_t *args)
{
  NfFleet *fleet = nf_command_reply_commands(r)->fleet;
  json_t *guests = json_array();
  NfMemStat sum = {0};
  guint running = 0;
  for (guint i = 0; i < nf_fleet_size(fleet); i++)
    json_array_append_new(guests, guest_json(nf_fleet_vm(fleet, i), &sum, &running));
  json_t *doc =
      json_pack("{s:s, s:o, s:o, s:b, s:I}", "fleet", nf_fleet_name(fleet), "host", host_json(),
                "ksm", ksm_json(fleet), "dense", nf_fleet_config(fleet)->dense, "memory_mib",
                (json_int_t)nf_fleet_config(fleet)->memory_mib);
  json_object_set_new(doc, "running", json_integer(running));
  json_object_set_new(doc, "rss_bytes", json_integer((json_int_t)sum.rss));
  json_object_set_new(doc, "pss_bytes", json_integer((json_int_t)sum.pss));
  json_object_set_new(doc, "pss_per_guest_bytes",
                      running ? json_integer((json_int_t)(sum.pss / running)) : json_null());
  json_object_set_new(doc, "guests", guests);
  nf_command_reply_ok(r, doc);
}
