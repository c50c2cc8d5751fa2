/*
 * notify.c: systemd's notify protocol for `nervesfleet run` (see notify.h).
 * It is a fleet listener like the progress display: it reads the counts on
 * every state change and turns them into READY=1 and STATUS= lines. The
 * watchdog pet is a plain main-loop timer on purpose: it proves the loop
 * turns, which is exactly what systemd's WatchdogSec= should watch.
 */
#include <dlfcn.h>
#include <gio/gio.h>
#include <systemd/sd-daemon.h>

#include "cli/notify.h"

/* libsystemd is opened by nf_notify_load() only under systemd (see
 * notify.h); NULL otherwise, and then nothing is sent. */
static struct {
  __typeof__(sd_notify) *notify;
  __typeof__(sd_watchdog_enabled) *watchdog_enabled;
} sd;

#define STATUS_MIN_INTERVAL_US G_USEC_PER_SEC

struct NfNotify {
  NfFleet *fleet;
  NfNotifyReady when;
  guint listener;
  guint watchdog_id;   /* the WATCHDOG=1 timer, 0 if systemd asks for none */
  guint status_id;     /* a STATUS= held back by the rate limit, 0 if none */
  gint64 last_status;  /* monotonic time of the last STATUS= sent */
  char *last_text;     /* its text: unchanged counts are not sent again */
  gboolean started;    /* nf_fleet_start() has been called */
  gboolean ready_sent; /* READY=1 goes out once */
  gboolean stopping;   /* STOPPING=1 sent */
};

static void vm_changed_cb(NfFleet *fleet, NfVm *vm, NfVmState old_state, const char *reason,
                          gpointer data);
static gboolean watchdog_cb(gpointer data);
static gboolean status_due_cb(gpointer data);
static void send_status(NfNotify *n);
static void update(NfNotify *n);
static void notify_send(const char *text);

gboolean nf_notify_load(GError **error)
{
  if (sd.notify || !g_getenv("NOTIFY_SOCKET"))
    return TRUE;
  void *lib = dlopen(NF_NOTIFY_SONAME, RTLD_NOW | RTLD_LOCAL);
  void *notify = lib ? dlsym(lib, "sd_notify") : NULL;
  void *watchdog = lib ? dlsym(lib, "sd_watchdog_enabled") : NULL;
  if (!notify || !watchdog) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND,
                "NOTIFY_SOCKET is set (a systemd Type=notify service), but %s cannot be used "
                "(%s); install it with `apt-get install libsystemd0`",
                NF_NOTIFY_SONAME, lib ? "sd_notify or sd_watchdog_enabled missing" : dlerror());
    if (lib)
      dlclose(lib);
    return FALSE;
  }
  *(void **)&sd.notify = notify;
  *(void **)&sd.watchdog_enabled = watchdog;
  return TRUE;
}

static void notify_send(const char *text)
{
  if (sd.notify)
    sd.notify(0, text);
}

gboolean nf_notify_ready_parse(const char *text, NfNotifyReady *out, GError **error)
{
  if (g_str_equal(text, "ready"))
    *out = NF_NOTIFY_READY_READY;
  else if (g_str_equal(text, "started"))
    *out = NF_NOTIFY_READY_STARTED;
  else {
    g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                "--notify-ready '%s': use ready (all guests ready) or started", text);
    return FALSE;
  }
  return TRUE;
}

static gboolean watchdog_cb(gpointer data)
{
  notify_send("WATCHDOG=1");
  return G_SOURCE_CONTINUE;
}

static void send_status(NfNotify *n)
{
  NfFleetCounts c;
  nf_fleet_counts(n->fleet, &c);
  g_autofree char *text = g_strdup_printf(
      "STATUS=fleet '%s': %u/%u ready, %u booting, %u queued, %u restarting, %u failed, %u "
      "stopped",
      nf_fleet_name(n->fleet), c.ready, c.total, c.booting, c.queued, c.backoff, c.failed,
      c.stopped);
  n->last_status = g_get_monotonic_time();
  if (g_strcmp0(text, n->last_text) == 0)
    return;
  notify_send(text);
  g_free(n->last_text);
  n->last_text = g_steal_pointer(&text);
}

static gboolean status_due_cb(gpointer data)
{
  NfNotify *n = data;
  n->status_id = 0;
  send_status(n);
  return G_SOURCE_REMOVE;
}

/* READY=1 when due, then STATUS= now or when the rate limit allows. */
static void update(NfNotify *n)
{
  if (!n->ready_sent && n->started && !n->stopping) {
    NfFleetCounts c;
    nf_fleet_counts(n->fleet, &c);
    if (n->when == NF_NOTIFY_READY_STARTED || (c.total > 0 && c.ready == c.total)) {
      n->ready_sent = TRUE;
      send_status(n);
      notify_send("READY=1");
      return;
    }
  }
  if (n->status_id)
    return; /* already scheduled: it reads the counts when it fires */
  gint64 wait_us = n->last_status + STATUS_MIN_INTERVAL_US - g_get_monotonic_time();
  if (n->last_status == 0 || wait_us <= 0)
    send_status(n);
  else
    n->status_id = g_timeout_add((guint)(wait_us / 1000) + 1, status_due_cb, n);
}

static void vm_changed_cb(NfFleet *fleet, NfVm *vm, NfVmState old_state, const char *reason,
                          gpointer data)
{
  update(data);
}

NfNotify *nf_notify_new(NfFleet *fleet, NfNotifyReady when)
{
  NfNotify *n = g_new0(NfNotify, 1);
  n->fleet = fleet;
  n->when = when;
  static const NfFleetCallbacks cb = {.vm_changed = vm_changed_cb};
  n->listener = nf_fleet_add_listener(fleet, &cb, n);
  uint64_t usec = 0;
  if (sd.watchdog_enabled && sd.watchdog_enabled(0, &usec) > 0 && usec > 0) {
    /* Half the interval, as sd_watchdog_enabled(3) advises; at least 1 ms. */
    guint ms = (guint)MAX(usec / 2000, 1);
    n->watchdog_id = g_timeout_add(ms, watchdog_cb, n);
    notify_send("WATCHDOG=1");
  }
  return n;
}

void nf_notify_started(NfNotify *notify)
{
  notify->started = TRUE;
  update(notify);
}

void nf_notify_stopping(NfNotify *notify)
{
  if (notify == NULL || notify->stopping)
    return;
  notify->stopping = TRUE;
  notify_send("STOPPING=1");
  send_status(notify);
}

void nf_notify_free(NfNotify *notify)
{
  if (notify == NULL)
    return;
  nf_fleet_remove_listener(notify->fleet, notify->listener);
  if (notify->watchdog_id)
    g_source_remove(notify->watchdog_id);
  if (notify->status_id)
    g_source_remove(notify->status_id);
  g_free(notify->last_text);
  g_free(notify);
}
