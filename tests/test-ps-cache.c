/*
 * test-ps-cache.c: `ps` answers from per-guest text kept between calls
 * (supervisor/command-ps.c). Guards, on the fake qemu: after every kind of
 * change (stop, start, crash and restart, scale down and up, a change of
 * state alone), the answer of
 * a layer that has answered before equals the answer of a fresh layer that
 * encodes everything anew, field for field; a guest's document has each
 * documented key exactly once (the parts are joined as text); the text a
 * transport takes as it is and the tree a transport without ok_text gets
 * are the same document; a `ps` of some guests does not disturb the others;
 * RSS and PSS looked at while a guest boots are read again once it is ready.
 */
#include <signal.h>
#include <string.h>

#include "supervisor/command.h"
#include "tests/lib/fake-fleet.h"
#include "tests/lib/nf-test.h"

#define WAIT_MS 60000

/* A peer that keeps its answer: as text when the transport has ok_text. */
typedef struct {
  NfCommandPeer peer;
  char *text;
  json_t *tree;
  char *error;
} Peer;

static void peer_nop(NfCommandPeer *peer) {}

static void peer_ok(NfCommandPeer *peer, json_t *id, json_t *result)
{
  Peer *p = (Peer *)peer;
  g_assert_null(p->tree);
  p->tree = result;
}

static void peer_ok_text(NfCommandPeer *peer, json_t *id, const char *result, gsize len)
{
  Peer *p = (Peer *)peer;
  g_assert_null(p->text);
  p->text = g_strndup(result, len);
}

static void peer_error(NfCommandPeer *peer, json_t *id, const char *code, const char *message,
                       json_t *guests)
{
  ((Peer *)peer)->error = g_strdup_printf("%s: %s", code, message);
  if (guests)
    json_decref(guests);
}

static const NfCommandTransport text_transport = {.name = "test (text)",
                                                  .ref = peer_nop,
                                                  .unref = peer_nop,
                                                  .ok = peer_ok,
                                                  .ok_text = peer_ok_text,
                                                  .error = peer_error};
static const NfCommandTransport tree_transport = {
    .name = "test (tree)", .ref = peer_nop, .unref = peer_nop, .ok = peer_ok, .error = peer_error};

static const char *const guest_keys[] = {
    "id",    "name",     "serial",        "mac",       "state",     "running", "restarts",
    "pid",   "uptime_s", "balloon_bytes", "rss_bytes", "pss_bytes", "boot_s",  "last_exit",
    "ports", "ip",       "extras"};

/* The four numbers that move by themselves, so that two answers a few
 * microseconds apart compare equal without them. */
static void drop_moving(json_t *doc)
{
  gsize i;
  json_t *g;
  json_array_foreach(json_object_get(doc, "guests"), i, g)
  {
    json_object_del(g, "uptime_s");
    json_object_del(g, "balloon_bytes");
    json_object_del(g, "rss_bytes");
    json_object_del(g, "pss_bytes");
  }
}

/* `ps` of `targets` through `cmds`: the text answer parsed (duplicate keys
 * rejected), or the tree when `tree` is set. */
static json_t *ps(NfCommands *cmds, const char *targets, gboolean tree)
{
  Peer p = {.peer = {.transport = tree ? &tree_transport : &text_transport}};
  json_auto_t *args = targets ? json_pack("{s:s}", "targets", targets) : json_object();
  nf_commands_dispatch(cmds, &p.peer, NULL, "ps", args);
  g_assert_null(p.error);
  if (tree) {
    g_assert_null(p.text);
    g_assert_nonnull(p.tree);
    return p.tree;
  }
  g_assert_null(p.tree);
  g_assert_nonnull(p.text);
  json_error_t err;
  json_t *doc = json_loads(p.text, JSON_REJECT_DUPLICATES, &err);
  if (!doc)
    g_error("ps text is not one JSON document (%s): %.200s", err.text, p.text);
  g_free(p.text);
  gsize i;
  json_t *g;
  json_array_foreach(json_object_get(doc, "guests"), i, g)
  {
    g_assert_cmpuint(json_object_size(g), ==, G_N_ELEMENTS(guest_keys));
    for (gsize k = 0; k < G_N_ELEMENTS(guest_keys); k++)
      g_assert_nonnull(json_object_get(g, guest_keys[k]));
  }
  return doc;
}

/* The warm layer's answer equals a cold layer's and the tree answer:
 * returns the warm one (moving numbers dropped). */
static json_t *ps_checked(NfFakeFleet *f, NfCommands *warm)
{
  json_t *hot = ps(warm, NULL, FALSE);
  g_autoptr(NfCommands) cold_cmds = nf_commands_new(f->fleet, NULL, NULL);
  json_auto_t *cold = ps(cold_cmds, NULL, FALSE);
  json_auto_t *tree = ps(warm, NULL, TRUE);
  drop_moving(hot);
  drop_moving(cold);
  drop_moving(tree);
  if (!json_equal(hot, cold) || !json_equal(hot, tree)) {
    g_autofree char *a = json_dumps(hot, JSON_INDENT(1));
    g_autofree char *b = json_dumps(cold, JSON_INDENT(1));
    g_error("ps from the cache differs from a fresh encoding:\n%s\n---\n%s", a, b);
  }
  return hot;
}

static json_t *guest(json_t *doc, guint id)
{
  json_t *guests = json_object_get(doc, "guests");
  for (gsize i = 0; i < json_array_size(guests); i++) {
    json_t *g = json_array_get(guests, i);
    if (json_integer_value(json_object_get(g, "id")) == (json_int_t)id)
      return g;
  }
  g_error("guest %u is not in the answer", id);
}

static gboolean two_left(NfFakeFleet *f)
{
  return nf_fleet_size(f->fleet) == 2;
}

static gboolean restarted_once(NfFakeFleet *f)
{
  return nf_fake_fleet_seen(f, NF_VM_BACKOFF, NF_VM_QUEUED) >= 1 &&
         nf_fake_fleet_count(f, NF_VM_READY) == 4;
}

static void test_cache_follows_changes(void)
{
  NfFakeFleet *f = nf_fake_fleet_new(4, 4);
  nf_fake_fleet_start(f);
  g_assert_true(nf_fake_fleet_wait_all(f, NF_VM_READY, WAIT_MS));
  NfCommands *cmds = nf_commands_new(f->fleet, NULL, NULL);

  json_auto_t *d0 = ps_checked(f, cmds);
  json_int_t pid2 = json_integer_value(json_object_get(guest(d0, 2), "pid"));
  g_assert_cmpint(pid2, >, 0);
  g_assert_cmpstr(json_string_value(json_object_get(guest(d0, 2), "state")), ==, "ready");

  /* Stopped: state, pid, running and the last exit change together. */
  NfVm *vm2 = nf_fleet_find_vm(f->fleet, 2);
  nf_fleet_stop_vm(f->fleet, vm2, FALSE);
  g_assert_true(nf_fake_fleet_wait_vm(f, 2, NF_VM_STOPPED, WAIT_MS));
  json_auto_t *d1 = ps_checked(f, cmds);
  json_t *g2 = guest(d1, 2);
  g_assert_cmpstr(json_string_value(json_object_get(g2, "state")), ==, "stopped");
  g_assert_true(json_is_false(json_object_get(g2, "running")));
  g_assert_true(json_is_null(json_object_get(g2, "pid")));
  g_assert_cmpstr(json_string_value(json_object_get(json_object_get(g2, "last_exit"), "kind")), ==,
                  "stopped");

  /* Some guests only: the answer holds them, the others keep their text. */
  json_auto_t *some = ps(cmds, "2-3", FALSE);
  g_assert_cmpuint(json_array_size(json_object_get(some, "guests")), ==, 2);
  json_decref(ps_checked(f, cmds));

  /* Started again: a new pid. */
  nf_fleet_start_vm(f->fleet, vm2);
  g_assert_true(nf_fake_fleet_wait_vm(f, 2, NF_VM_READY, WAIT_MS));
  json_auto_t *d2 = ps_checked(f, cmds);
  json_int_t pid2b = json_integer_value(json_object_get(guest(d2, 2), "pid"));
  g_assert_cmpint(pid2b, >, 0);
  g_assert_cmpint(pid2b, !=, pid2);

  /* Killed: a crash, a restart counted, a new pid. */
  json_int_t pid3 = json_integer_value(json_object_get(guest(d2, 3), "pid"));
  g_assert_cmpint(kill((pid_t)pid3, SIGKILL), ==, 0);
  g_assert_true(nf_fake_fleet_wait(f, restarted_once, WAIT_MS));
  json_auto_t *d3 = ps_checked(f, cmds);
  json_t *g3 = guest(d3, 3);
  g_assert_cmpint(json_integer_value(json_object_get(g3, "restarts")), ==, 1);
  g_assert_cmpstr(json_string_value(json_object_get(json_object_get(g3, "last_exit"), "kind")), ==,
                  "crashed");
  g_assert_cmpint(json_integer_value(json_object_get(g3, "pid")), !=, pid3);

  /* Scaled down and up: the new guests 3 and 4 are not the old ones. */
  g_autoptr(GError) error = NULL;
  g_assert_true(nf_fleet_scale(f->fleet, 2, &error));
  g_assert_true(nf_fake_fleet_wait(f, two_left, WAIT_MS));
  json_auto_t *d4 = ps_checked(f, cmds);
  g_assert_cmpint(json_integer_value(json_object_get(d4, "count")), ==, 2);
  g_assert_true(nf_fleet_scale(f->fleet, 4, &error));
  g_assert_true(nf_fake_fleet_wait_all(f, NF_VM_READY, WAIT_MS));
  json_auto_t *d5 = ps_checked(f, cmds);
  g_assert_cmpuint(json_array_size(json_object_get(d5, "guests")), ==, 4);
  g_assert_cmpint(json_integer_value(json_object_get(guest(d5, 3), "restarts")), ==, 0);
  g_assert_true(json_is_null(json_object_get(guest(d5, 3), "last_exit")));

  /* A change of state alone: a paused qemu asked to stop is `stopping`
   * with the same pid until it runs again. */
  json_int_t pid1 = json_integer_value(json_object_get(guest(d5, 1), "pid"));
  g_assert_cmpint(kill((pid_t)pid1, SIGSTOP), ==, 0);
  nf_fleet_stop_vm(f->fleet, nf_fleet_find_vm(f->fleet, 1), FALSE);
  g_assert_true(nf_fake_fleet_wait_vm(f, 1, NF_VM_STOPPING, WAIT_MS));
  json_auto_t *d6 = ps_checked(f, cmds);
  g_assert_cmpstr(json_string_value(json_object_get(guest(d6, 1), "state")), ==, "stopping");
  g_assert_cmpint(json_integer_value(json_object_get(guest(d6, 1), "pid")), ==, pid1);
  g_assert_cmpint(kill((pid_t)pid1, SIGCONT), ==, 0);
  g_assert_true(nf_fake_fleet_wait_vm(f, 1, NF_VM_STOPPED, WAIT_MS));
  json_decref(ps_checked(f, cmds));

  nf_commands_free(cmds);
  nf_fake_fleet_finish(f, FALSE);
}

static json_int_t guest_int(json_t *doc, const char *key)
{
  return json_integer_value(json_object_get(guest(doc, 1), key));
}

/* RSS and PSS follow a guest from its boot to its ready line: a look while
 * it boots does not stand for the ready guest. (It did, for up to a minute
 * (RSS) and ten (PSS): `ps` right after a storm showed 5M for guests of
 * 124M.) The fake touches 64 MiB as it prints its ready line, 2 s after it
 * starts. */
static void test_memory_after_ready(void)
{
  NfFakeFleet *f = nf_fake_fleet_new(1, 1);
  g_setenv("FAKE_QEMU_BOOT_MS", "2000", TRUE);
  g_setenv("FAKE_QEMU_READY_KB", "65536", TRUE);
  nf_fake_fleet_start(f);
  g_assert_true(nf_fake_fleet_wait_vm(f, 1, NF_VM_BOOTING, WAIT_MS));
  NfCommands *cmds = nf_commands_new(f->fleet, NULL, NULL);
  json_auto_t *booting = ps(cmds, NULL, FALSE);
  const char *state = json_string_value(json_object_get(guest(booting, 1), "state"));
  g_test_message("while %s: RSS %" JSON_INTEGER_FORMAT ", PSS %" JSON_INTEGER_FORMAT, state,
                 guest_int(booting, "rss_bytes"), guest_int(booting, "pss_bytes"));
  if (g_strcmp0(state, "booting") == 0)
    g_assert_cmpint(guest_int(booting, "rss_bytes"), <, 32 << 20);

  g_assert_true(nf_fake_fleet_wait_vm(f, 1, NF_VM_READY, WAIT_MS));
  json_auto_t *ready = ps(cmds, NULL, FALSE);
  g_assert_cmpint(guest_int(ready, "rss_bytes"), >=, 64 << 20);
  g_assert_cmpint(guest_int(ready, "pss_bytes"), >=, 64 << 20);
  nf_commands_free(cmds);
  nf_fake_fleet_finish(f, FALSE);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/ps-cache/follows-changes", test_cache_follows_changes);
  g_test_add_func("/ps-cache/memory-after-ready", test_memory_after_ready);
  return g_test_run();
}
