/*
 * test-service.c: `nervesfleet run` as a systemd service, on the fake qemu.
 * Guards: with NOTIFY_SOCKET set (a unix datagram socket this test binds,
 * as systemd would), the supervisor sends STATUS= with the counts, READY=1
 * once every guest is ready (or at once with --notify-ready started),
 * WATCHDOG=1 every half WATCHDOG_USEC, and STOPPING=1 on SIGTERM; a
 * stopped main loop (SIGSTOP) sends no pet until it runs again.
 */
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <gio/gio.h>
#include <jansson.h>

#include "tests/lib/nf-test.h"

#define FLEET_MS 60000

typedef struct {
  GSocket *sock;
  GPtrArray *msgs; /* every datagram's text, in order */
  GSource *source;
} Listener;

static gboolean readable_cb(GSocket *sock, GIOCondition cond, gpointer data)
{
  Listener *l = data;
  char buf[4096];
  gssize n;
  while ((n = g_socket_receive(sock, buf, sizeof buf - 1, NULL, NULL)) > 0) {
    buf[n] = '\0';
    /* One datagram may carry several lines (READY=1\nSTATUS=...). */
    g_auto(GStrv) lines = g_strsplit(buf, "\n", -1);
    for (char **s = lines; *s; s++)
      if (**s)
        g_ptr_array_add(l->msgs, g_strdup(*s));
  }
  return G_SOURCE_CONTINUE;
}

static Listener *listener_new(const char *path)
{
  Listener *l = g_new0(Listener, 1);
  l->msgs = g_ptr_array_new_with_free_func(g_free);
  l->sock = g_socket_new(G_SOCKET_FAMILY_UNIX, G_SOCKET_TYPE_DATAGRAM, 0, NULL);
  g_assert_nonnull(l->sock);
  g_socket_set_blocking(l->sock, FALSE);
  g_autoptr(GSocketAddress) addr = g_unix_socket_address_new(path);
  g_assert_true(g_socket_bind(l->sock, addr, TRUE, NULL));
  l->source = g_socket_create_source(l->sock, G_IO_IN, NULL);
  g_source_set_callback(l->source, (GSourceFunc)(void (*)(void))readable_cb, l, NULL);
  g_source_attach(l->source, NULL);
  return l;
}

static void listener_free(Listener *l)
{
  g_source_destroy(l->source);
  g_source_unref(l->source);
  g_object_unref(l->sock);
  g_ptr_array_unref(l->msgs);
  g_free(l);
}

typedef struct {
  Listener *l;
  const char *prefix;
  guint from; /* only messages at index >= from count */
} Want;

static gboolean seen_cb(gpointer data)
{
  Want *w = data;
  for (guint i = w->from; i < w->l->msgs->len; i++)
    if (g_str_has_prefix(g_ptr_array_index(w->l->msgs, i), w->prefix))
      return TRUE;
  return FALSE;
}

static gboolean seen(Listener *l, const char *prefix, guint from, guint timeout_ms)
{
  Want w = {l, prefix, from};
  return nf_test_wait_for(seen_cb, &w, timeout_ms);
}

static guint index_of(Listener *l, const char *prefix)
{
  for (guint i = 0; i < l->msgs->len; i++)
    if (g_str_has_prefix(g_ptr_array_index(l->msgs, i), prefix))
      return i;
  return G_MAXUINT;
}

/* `run N --qemu fake --kernel placeholder --accel tcg` plus `extra`. */
static NfTestProc *spawn_fake(const char *tmp, const char *count, const char *const *extra)
{
  g_autofree char *qemu = g_build_filename(g_getenv("NF_HELPERS"), "fake-qemu", NULL);
  g_autofree char *kernel = g_build_filename(tmp, "Image", NULL);
  g_assert_true(g_file_set_contents(kernel, "not a kernel", -1, NULL));
  g_autoptr(GPtrArray) args = g_ptr_array_new();
  const char *base[] = {"run", count, "--qemu", qemu, "--kernel", kernel, "--accel", "tcg"};
  for (gsize i = 0; i < G_N_ELEMENTS(base); i++)
    g_ptr_array_add(args, (gpointer)base[i]);
  for (const char *const *e = extra; *e; e++)
    g_ptr_array_add(args, (gpointer)*e);
  g_ptr_array_add(args, NULL);
  return nf_test_proc_spawn(tmp, (const char *const *)args->pdata);
}

static gboolean file_says(const char *path, const char *needle)
{
  g_autofree char *text = NULL;
  return g_file_get_contents(path, &text, NULL, NULL) && strstr(text, needle);
}

static json_t *ps_json(const char *tmp, const char *name)
{
  g_autofree char *out = NULL;
  const char *args[] = {"ps", "--json", "--name", name, NULL};
  g_assert_cmpint(nf_test_run_cli(tmp, args, 30000, &out), ==, 0);
  json_t *doc = json_loads(out, 0, NULL);
  g_assert_nonnull(doc);
  return doc;
}

static NfTestProc *spawn_fleet(const char *tmp, const char *notify_ready)
{
  g_autofree char *qemu = g_build_filename(g_getenv("NF_HELPERS"), "fake-qemu", NULL);
  g_autofree char *kernel = g_build_filename(tmp, "Image", NULL);
  g_assert_true(g_file_set_contents(kernel, "not a kernel", -1, NULL));
  const char *args[] = {"run",      "2",    "--name",  "svc", "--qemu",         qemu,
                        "--kernel", kernel, "--accel", "tcg", "--notify-ready", notify_ready,
                        NULL};
  return nf_test_proc_spawn(tmp, args);
}

static void test_notify(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  g_autofree char *path = g_build_filename(tmp, "notify", NULL);
  Listener *l = listener_new(path);
  g_setenv("NOTIFY_SOCKET", path, TRUE);
  g_setenv("WATCHDOG_USEC", "200000", TRUE); /* a pet every 100 ms */
  NfTestProc *p = spawn_fleet(tmp, "ready");
  g_unsetenv("NOTIFY_SOCKET");
  g_unsetenv("WATCHDOG_USEC");

  g_assert_true(seen(l, "READY=1", 0, FLEET_MS));
  g_assert_true(seen(l, "WATCHDOG=1", 0, FLEET_MS));
  /* READY=1 comes with every guest ready, never before. */
  guint ready = index_of(l, "READY=1");
  g_assert_true(seen(l, "STATUS=fleet 'svc': 2/2 ready", 0, 1));
  g_assert_cmpuint(index_of(l, "STATUS=fleet 'svc': 2/2 ready"), <, ready);
  g_assert_cmpuint(index_of(l, "STATUS="), <, ready);

  /* The pets come from the main loop: none while it cannot run. */
  GPid pid = nf_test_proc_pid(p);
  nf_test_proc_signal(p, SIGSTOP);
  g_assert_true(nf_test_wait_polled(nf_test_pid_stopped, GINT_TO_POINTER(pid), 10, 10000));
  /* Stopped: all it sent is queued on our socket; take it in. */
  while (g_main_context_iteration(NULL, FALSE))
    ;
  guint frozen = l->msgs->len;
  g_assert_false(seen(l, "WATCHDOG=1", frozen, 1000)); /* ten intervals */
  nf_test_proc_signal(p, SIGCONT);
  g_assert_true(seen(l, "WATCHDOG=1", frozen, FLEET_MS));

  guint before_stop = l->msgs->len;
  nf_test_proc_signal(p, SIGTERM);
  g_assert_cmpint(nf_test_proc_wait_exit(p, FLEET_MS), ==, 0);
  g_assert_true(seen(l, "STOPPING=1", before_stop, 1000));
  nf_test_proc_free(p);
  listener_free(l);
  nf_test_tmpdir_cleanup(tmp);
}

/* --notify-ready started: READY=1 before any guest is ready; no watchdog
 * pets without WATCHDOG_USEC. */
static void test_notify_started(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  g_autofree char *path = g_build_filename(tmp, "notify", NULL);
  Listener *l = listener_new(path);
  g_setenv("NOTIFY_SOCKET", path, TRUE);
  g_setenv("FAKE_QEMU_NO_READY", "1", TRUE); /* guests never become ready */
  NfTestProc *p = spawn_fleet(tmp, "started");
  g_unsetenv("NOTIFY_SOCKET");
  g_unsetenv("FAKE_QEMU_NO_READY");

  g_assert_true(seen(l, "READY=1", 0, FLEET_MS));
  g_assert_cmpuint(index_of(l, "STATUS=fleet 'svc': 2/2 ready"), ==, G_MAXUINT);
  g_assert_cmpuint(index_of(l, "WATCHDOG=1"), ==, G_MAXUINT);
  nf_test_proc_signal(p, SIGTERM);
  g_assert_cmpint(nf_test_proc_wait_exit(p, FLEET_MS), ==, 0);
  g_assert_true(seen(l, "STOPPING=1", 0, 1000));
  nf_test_proc_free(p);
  listener_free(l);
  nf_test_tmpdir_cleanup(tmp);
}

/* A fleet file and the equivalent flags give the same effective config
 * (`--print-config`); the command line wins over the file, a list on the
 * command line replaces the file's; every kind of option (switch, string,
 * list, the count) goes through. */
static void test_config_equals_flags(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  g_autofree char *conf = g_build_filename(tmp, "lab.conf", NULL);
  g_assert_true(g_file_set_contents(conf,
                                    "# a fleet file\n"
                                    "[fleet]\n"
                                    "count=3\n"
                                    "memory=96M\n"
                                    "restart=always\n"
                                    "forward=22;80\n"
                                    "ksm=on\n"
                                    "ephemeral=false\n"
                                    "serial-format=LAB-%04u\n"
                                    "qemu-arg=-no-reboot\n"
                                    "id-offset=100\n",
                                    -1, NULL));
  g_autofree char *from_file = NULL, *from_flags = NULL, *overridden = NULL, *expected = NULL;
  const char *file_args[] = {"run", "--config", conf, "--print-config", NULL};
  g_assert_cmpint(nf_test_run_cli(tmp, file_args, 30000, &from_file), ==, 0);
  const char *flag_args[] = {"run",
                             "3",
                             "--memory",
                             "96M",
                             "--restart",
                             "always",
                             "--forward",
                             "22",
                             "--forward",
                             "80",
                             "--ksm",
                             "on",
                             "--serial-format",
                             "LAB-%04u",
                             "--qemu-arg",
                             "-no-reboot",
                             "--id-offset",
                             "100",
                             "--print-config",
                             NULL};
  g_assert_cmpint(nf_test_run_cli(tmp, flag_args, 30000, &from_flags), ==, 0);
  g_assert_cmpstr(from_file, ==, from_flags);
  g_assert_nonnull(strstr(from_file, "\"memory_mib\":96"));

  /* Command line over file: N, a string, a list. */
  const char *over_args[] = {"run",       "5",   "--config=",      "--memory", "64M",
                             "--forward", "443", "--print-config", NULL};
  g_autofree char *config_eq = g_strconcat("--config=", conf, NULL);
  over_args[2] = config_eq;
  g_assert_cmpint(nf_test_run_cli(tmp, over_args, 30000, &overridden), ==, 0);
  const char *want_args[] = {
      "run",        "5",          "--memory",    "64M", "--restart",       "always",
      "--forward",  "443",        "--ksm",       "on",  "--serial-format", "LAB-%04u",
      "--qemu-arg", "-no-reboot", "--id-offset", "100", "--print-config",  NULL};
  g_assert_cmpint(nf_test_run_cli(tmp, want_args, 30000, &expected), ==, 0);
  g_assert_cmpstr(overridden, ==, expected);
  nf_test_tmpdir_cleanup(tmp);
}

/* Bad fleet files are usage errors (exit 2) naming the file and the key. */
static void test_config_errors(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  static const struct {
    const char *text;
    const char *says;
  } cases[] = {
      {"[fleet]\nmemroy=1G\n", "unknown key 'memroy'"},
      {"[fleet]\ncount=2\n[extra]\nx=1\n", "unknown group [extra]"},
      {"[fleet]\ncount=2\nephemeral=maybe\n", "key 'ephemeral' is a switch"},
      {"[fleet]\ncount=2\nexec=true\n", "key 'exec' cannot be set"},
      {"[fleet]\ncount=2\nmemory=huge\n", "--memory"},
      {"[fleet]\ncount=2\nksm=maybe\n", "--ksm 'maybe'"},
      {"[fleet]\nmemory=64M\n", "missing the guest count"},
      {"not a key file\n", "lab.conf"},
  };
  g_autofree char *conf = g_build_filename(tmp, "lab.conf", NULL);
  for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
    g_assert_true(g_file_set_contents(conf, cases[i].text, -1, NULL));
    g_autofree char *out = NULL;
    const char *args[] = {"run", "--config", conf, "--print-config", NULL};
    g_assert_cmpint(nf_test_run_cli(tmp, args, 30000, &out), ==, 2);
    g_test_message("%s", out);
    g_assert_nonnull(strstr(out, cases[i].says));
    if (i < 4)
      g_assert_nonnull(strstr(out, conf));
  }
  g_autofree char *twice_out = NULL;
  g_assert_true(g_file_set_contents(conf, "[fleet]\ncount=2\n", -1, NULL));
  const char *twice[] = {"run", "--config", conf, "--config", conf, "--print-config", NULL};
  g_assert_cmpint(nf_test_run_cli(tmp, twice, 30000, &twice_out), ==, 2);
  g_assert_nonnull(strstr(twice_out, "--config given twice"));
  g_autofree char *out = NULL;
  g_autofree char *missing = g_build_filename(tmp, "nope.conf", NULL);
  const char *args[] = {"run", "--config", missing, NULL};
  g_assert_cmpint(nf_test_run_cli(tmp, args, 30000, &out), ==, 2);
  g_assert_nonnull(strstr(out, missing));
  nf_test_tmpdir_cleanup(tmp);
}

/* --shard I/N: the id slice and the name follow from I, N and the size;
 * bad shards are usage errors. */
static void test_shard_flags(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  g_autofree char *out = NULL;
  const char *two[] = {"run", "2", "--shard", "1/3", "--id-offset", "100", "--print-config", NULL};
  g_assert_cmpint(nf_test_run_cli(tmp, two, 30000, &out), ==, 0);
  g_assert_nonnull(strstr(out, "\"id_offset\":102,"));
  g_assert_nonnull(strstr(out, "\"name\":\"shard-1\""));
  g_clear_pointer(&out, g_free);
  const char *sized[] = {"run",    "2",   "--shard",        "2/3", "--shard-size", "1000",
                         "--name", "lab", "--print-config", NULL};
  g_assert_cmpint(nf_test_run_cli(tmp, sized, 30000, &out), ==, 0);
  g_assert_nonnull(strstr(out, "\"id_offset\":2000,"));
  g_assert_nonnull(strstr(out, "\"name\":\"lab\""));
  static const struct {
    const char *shard, *size, *says;
  } bad[] = {
      {"3/3", NULL, "--shard '3/3'"},
      {"1", NULL, "--shard '1'"},
      {"-1/2", NULL, "--shard '-1/2'"},
      {"0/2", "1", "do not fit --shard-size 1"},
      {NULL, "10", "--shard-size without --shard"},
  };
  for (gsize i = 0; i < G_N_ELEMENTS(bad); i++) {
    g_autoptr(GPtrArray) args = g_ptr_array_new();
    g_ptr_array_add(args, "run");
    g_ptr_array_add(args, "2");
    if (bad[i].shard) {
      g_ptr_array_add(args, "--shard");
      g_ptr_array_add(args, (gpointer)bad[i].shard);
    }
    if (bad[i].size) {
      g_ptr_array_add(args, "--shard-size");
      g_ptr_array_add(args, (gpointer)bad[i].size);
    }
    g_ptr_array_add(args, "--print-config");
    g_ptr_array_add(args, NULL);
    g_clear_pointer(&out, g_free);
    g_assert_cmpint(nf_test_run_cli(tmp, (const char *const *)args->pdata, 30000, &out), ==, 2);
    g_test_message("%s", out);
    g_assert_nonnull(strstr(out, bad[i].says));
  }
  nf_test_tmpdir_cleanup(tmp);
}

/* Two shards on one host run side by side with disjoint ids (ps --json
 * carries the host, the shard and the range); a third fleet whose range
 * overlaps a live shard's is refused (exit 1, naming both) and leaves
 * nothing behind; once the shard is gone, the same range is free. */
static void test_shard_overlap(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  const char *s0[] = {"--shard", "0/2", NULL};
  const char *s1[] = {"--shard", "1/2", NULL};
  g_autoptr(NfTestProc) a = spawn_fake(tmp, "2", s0);
  g_autoptr(NfTestProc) b = spawn_fake(tmp, "2", s1);
  g_autofree char *ids_a = g_build_filename(tmp, "run", "nervesfleet", "shard-0", "ids", NULL);
  g_autofree char *ids_b = g_build_filename(tmp, "run", "nervesfleet", "shard-1", "ids", NULL);
  /* run prints its fleet line once the range is claimed. */
  g_assert_true(nf_test_proc_wait_output(a, "fleet 'shard-0':", FLEET_MS));
  g_assert_true(nf_test_proc_wait_output(b, "fleet 'shard-1':", FLEET_MS));
  g_assert_true(file_says(ids_a, "last=2"));
  g_assert_true(file_says(ids_b, "last=4"));
  const char *wait_b[] = {"wait", "--name", "shard-1", NULL};
  g_assert_cmpint(nf_test_run_cli(tmp, wait_b, 60000, NULL), ==, 0);

  json_auto_t *ps = ps_json(tmp, "shard-1");
  g_assert_cmpstr(json_string_value(json_object_get(ps, "host")), ==, g_get_host_name());
  g_assert_cmpint(json_integer_value(json_object_get(json_object_get(ps, "shard"), "index")), ==,
                  1);
  g_assert_cmpint(json_integer_value(json_object_get(json_object_get(ps, "ids"), "first")), ==, 3);
  json_t *guests = json_object_get(ps, "guests");
  g_assert_cmpint(json_integer_value(json_object_get(json_array_get(guests, 0), "id")), ==, 3);
  g_assert_cmpint(json_integer_value(json_object_get(json_array_get(guests, 1), "id")), ==, 4);

  /* Ids 2-3, same serial format: overlaps both shards. Refused before its
   * disks are made: it leaves no overlay, no state or runtime dir (the
   * claim used to come after the overlays, which stayed). */
  g_autofree char *out = NULL;
  g_autofree char *base = nf_test_make_ext4_base(tmp);
  const char *over[] = {"--name", "odd",    "--id-offset", "1", "--shard",
                        "0/1",    "--disk", base,          NULL};
  g_autoptr(NfTestProc) c = spawn_fake(tmp, "2", over);
  g_assert_cmpint(nf_test_proc_wait_exit(c, 60000), ==, 1);
  g_test_message("%s", nf_test_proc_output(c));
  g_assert_nonnull(strstr(nf_test_proc_output(c), "fleet 'odd' would use ids 2-3"));
  g_assert_nonnull(strstr(nf_test_proc_output(c), "already has ids"));
  g_autofree char *odd_ids = g_build_filename(tmp, "run", "nervesfleet", "odd", "ids", NULL);
  g_assert_false(g_file_test(odd_ids, G_FILE_TEST_EXISTS));
  g_autofree char *odd_run = g_path_get_dirname(odd_ids);
  g_autofree char *odd_state = g_build_filename(tmp, "state", "nervesfleet", "odd", NULL);
  g_assert_false(g_file_test(odd_run, G_FILE_TEST_EXISTS));
  g_assert_false(g_file_test(odd_state, G_FILE_TEST_EXISTS));
  /* Another serial format is another identity space: no overlap. */
  const char *other_format[] = {"--name",          "other",    "--shard",        "0/1",
                                "--serial-format", "LAB-%06u", "--print-config", NULL};
  g_autoptr(NfTestProc) d = spawn_fake(tmp, "2", other_format);
  g_assert_cmpint(nf_test_proc_wait_exit(d, 60000), ==, 0);

  nf_test_proc_signal(a, SIGTERM);
  g_assert_cmpint(nf_test_proc_wait_exit(a, 60000), ==, 0);
  g_assert_false(g_file_test(ids_a, G_FILE_TEST_EXISTS));
  /* Shard 0's ids are free again; shard 1 still holds 3-4. */
  const char *again[] = {"--name", "again", "--shard", "0/2", "--exec", "true", NULL};
  g_autoptr(NfTestProc) e = spawn_fake(tmp, "2", again);
  g_assert_cmpint(nf_test_proc_wait_exit(e, 60000), ==, 0);
  nf_test_proc_signal(b, SIGTERM);
  g_assert_cmpint(nf_test_proc_wait_exit(b, 60000), ==, 0);
  g_clear_pointer(&a, nf_test_proc_free);
  g_clear_pointer(&b, nf_test_proc_free);
  g_clear_pointer(&c, nf_test_proc_free);
  g_clear_pointer(&d, nf_test_proc_free);
  g_clear_pointer(&e, nf_test_proc_free);
  nf_test_tmpdir_cleanup(tmp);
}

/* A SIGKILLed supervisor leaves its ids file behind; `down` removes it
 * with the other runtime files, so the runtime dir goes. */
static void test_killed_supervisor_ids(void)
{
  g_autofree char *tmp = nf_test_tmpdir_new();
  const char *extra[] = {"--name", "gone", NULL};
  g_autoptr(NfTestProc) p = spawn_fake(tmp, "1", extra);
  g_autofree char *rt = g_build_filename(tmp, "run", "nervesfleet", "gone", NULL);
  g_autofree char *ids = g_build_filename(rt, "ids", NULL);
  g_assert_true(nf_test_proc_wait_output(p, "fleet 'gone':", FLEET_MS));
  g_assert_true(file_says(ids, "last=1"));
  const char *wait[] = {"wait", "--name", "gone", NULL};
  g_assert_cmpint(nf_test_run_cli(tmp, wait, FLEET_MS, NULL), ==, 0);
  g_autoptr(GArray) guests = nf_test_pids_matching(tmp);
  nf_test_proc_signal(p, SIGKILL);
  g_assert_cmpint(nf_test_proc_wait_exit(p, FLEET_MS), ==, 128 + SIGKILL);
  g_assert_true(nf_test_wait_pids_gone(guests, FLEET_MS));
  g_assert_true(g_file_test(ids, G_FILE_TEST_EXISTS));
  const char *down[] = {"down", "--name", "gone", NULL};
  g_assert_cmpint(nf_test_run_cli(tmp, down, 30000, NULL), ==, 0);
  g_assert_false(g_file_test(rt, G_FILE_TEST_EXISTS));
  nf_test_tmpdir_cleanup(tmp);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/service/killed-supervisor-ids", test_killed_supervisor_ids);
  g_test_add_func("/service/shard-flags", test_shard_flags);
  g_test_add_func("/service/shard-overlap", test_shard_overlap);
  g_test_add_func("/service/config-equals-flags", test_config_equals_flags);
  g_test_add_func("/service/config-errors", test_config_errors);
  g_test_add_func("/service/notify", test_notify);
  g_test_add_func("/service/notify-started", test_notify_started);
  return g_test_run();
}
