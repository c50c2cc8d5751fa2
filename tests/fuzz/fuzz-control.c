/*
 * fuzz-control.c: libFuzzer target for the control protocol: the request
 * envelope (nf_control_request_parse, supervisor/control-request.c) AND the
 * command layer behind it (nf_commands_dispatch and every handler's argument
 * checks), as any local client can send them.
 *
 * The input is split into lines as the control socket frames them; each
 * line is parsed and, when its envelope is good, dispatched over a real
 * fleet of three guests that was created but never started (its qemu is
 * /bin/false, so a `start` that gets through fails at once, as a broken
 * binary would). Each line gets a fresh peer that goes away after the
 * input, as a client that disconnects with requests pending. Checked: every
 * line that is not blank is answered exactly once (now, or `gone` later),
 * with a code the protocol documents, and nothing crashes or leaks.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <glib/gstdio.h>

#include "supervisor/command.h"
#include "supervisor/config.h"
#include "supervisor/control-request.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct {
  NfCommandPeer peer;
  int refs;
  int answers;
} Peer;

static void peer_ref(NfCommandPeer *peer);
static void peer_unref(NfCommandPeer *peer);
static void peer_ok(NfCommandPeer *peer, json_t *id, json_t *result);
static void peer_error(NfCommandPeer *peer, json_t *id, const char *code, const char *message,
                       json_t *guests);
static void setup(void);
static void teardown(void);

static const NfCommandTransport transport = {
    .name = "fuzzer", .ref = peer_ref, .unref = peer_unref, .ok = peer_ok, .error = peer_error};

static const char *const codes[] = {"bad_request",
                                    "unsupported_version",
                                    "too_large",
                                    "unknown_command",
                                    "bad_args",
                                    "no_such_guest",
                                    "failed",
                                    "unsupported",
                                    "timeout",
                                    "busy",
                                    "permission_denied",
                                    NULL};

static NfFleetConfig config;
static NfFleet *fleet;
static NfCommands *cmds;
static guint inputs;
static char *tmp;

static void peer_ref(NfCommandPeer *peer)
{
  ((Peer *)peer)->refs++;
}

static void peer_unref(NfCommandPeer *peer)
{
  Peer *p = (Peer *)peer;
  if (--p->refs == 0)
    g_free(p);
}

static void peer_ok(NfCommandPeer *peer, json_t *id, json_t *result)
{
  g_assert_false(peer->gone);
  ((Peer *)peer)->answers++;
  json_decref(result);
}

static void peer_error(NfCommandPeer *peer, json_t *id, const char *code, const char *message,
                       json_t *guests)
{
  g_assert_false(peer->gone);
  ((Peer *)peer)->answers++;
  g_assert_nonnull(message);
  g_assert_true(g_strv_contains(codes, code));
  json_decref(guests);
}

/* At exit: the fleet's dirs go with their temp dir. */
static void teardown(void)
{
  g_clear_pointer(&cmds, nf_commands_free);
  g_clear_pointer(&fleet, nf_fleet_free);
  nf_fleet_config_clear(&config);
  g_autofree char *rm = g_strdup_printf("rm -rf '%s'", tmp);
  if (system(rm) != 0)
    g_printerr("fuzz-control: could not remove %s\n", tmp);
}

static void setup(void)
{
  tmp = g_dir_make_tmp("nf-fuzz-control-XXXXXX", NULL);
  g_assert_nonnull(tmp);
  nf_fleet_config_init(&config);
  g_free(config.name);
  config.name = g_strdup("fuzz");
  g_free(config.qemu);
  config.qemu = g_strdup("/bin/false");
  config.kernel = g_build_filename(tmp, "Image", NULL);
  g_assert_true(g_file_set_contents(config.kernel, "not a kernel", -1, NULL));
  config.state_dir = g_build_filename(tmp, "state", NULL);
  config.runtime_dir = g_build_filename(tmp, "run", NULL);
  config.count = 3;
  config.batch = 3;
  config.accel = NF_ACCEL_TCG;
  config.adopt = FALSE;
  config.health_interval_ms = 0;
  config.heartbeat_timeout_ms = 0;
  g_autoptr(GError) error = NULL;
  static const NfFleetCallbacks callbacks = {0};
  fleet = nf_fleet_new(&config, &callbacks, NULL, &error);
  g_assert_no_error(error);
  atexit(teardown);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  if (!fleet)
    setup();
  /* A fresh command layer now and then drops waits that would never end. */
  if (!cmds || ++inputs % 512 == 0) {
    g_clear_pointer(&cmds, nf_commands_free);
    cmds = nf_commands_new(fleet, NULL, NULL);
  }
  GPtrArray *peers = g_ptr_array_new();
  const char *p = (const char *)data, *end = p + size;
  while (p < end) {
    const char *nl = memchr(p, '\n', (gsize)(end - p));
    gsize len = nl ? (gsize)(nl - p) : (gsize)(end - p);
    NfControlRequest req;
    if (nf_control_request_parse(p, len, &req)) {
      /* Growing a never-started fleet by thousands only measures malloc. */
      json_t *count = json_object_get(req.args, "count");
      gboolean skip =
          g_str_equal(req.cmd, "scale") && json_is_integer(count) && json_integer_value(count) > 8;
      if (!skip) {
        Peer *peer = g_new0(Peer, 1);
        peer->peer.transport = &transport;
        peer->refs = 1;
        nf_commands_dispatch(cmds, &peer->peer, req.id, req.cmd, req.args);
        g_ptr_array_add(peers, peer);
      }
    } else if (req.code) {
      g_assert_true(g_strv_contains(codes, req.code));
      g_assert_nonnull(req.message);
    }
    nf_control_request_clear(&req);
    p += len + (nl ? 1 : 0);
  }
  /* Let spawns fail and timers that are due run, as the main loop would. */
  for (int i = 0; i < 64 && g_main_context_iteration(NULL, FALSE); i++)
    ;
  for (guint i = 0; i < peers->len; i++) {
    Peer *peer = peers->pdata[i];
    g_assert_cmpint(peer->answers, <=, 1);
    peer->peer.gone = TRUE;
    peer_unref(&peer->peer);
  }
  g_ptr_array_free(peers, TRUE);
  return 0;
}
