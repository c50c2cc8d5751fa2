/*
 * test-console.c: `nervesfleet console` in a real pseudo-terminal, against
 * one real guest. Guards: attaching prints the escape hint and replays the
 * prompt; the terminal goes raw while attached; a typed command runs in the
 * guest shell and its output comes back; a --ro watcher sees the same
 * output while its own typing never reaches the guest; a second writer is
 * refused; Ctrl-] q detaches with exit 0; and the terminal's settings are
 * exactly restored after a detach and after a SIGTERM; ^C interrupts a
 * command in the guest shell, which was up before the ready line; stdin at EOF
 * detaches (exit 0) once what was read is sent: `echo CMD | console`
 * runs CMD in the guest, and `console --ro </dev/null` returns. Through
 * the same piped console: the sim guest kernel took its idle settings.
 * `run` itself on a terminal says, once all are ready, what to try next.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>
#include <gio/gio.h>
#include <glib-unix.h>

#include "tests/lib/nf-test.h"

#define BOOT_MS 120000
#define WAIT_MS 60000

typedef struct {
  int master, slave;
  GPid pid;
  GString *out;
  guint src;
  gboolean exited;
  int status;
  const char *needle;
} Pty;

static char *tmp;

static gboolean pty_read_cb(int fd, GIOCondition cond, gpointer data)
{
  Pty *p = data;
  char buf[4096];
  ssize_t n = read(fd, buf, sizeof(buf));
  if (n > 0) {
    g_string_append_len(p->out, buf, n);
    return G_SOURCE_CONTINUE;
  }
  p->src = 0;
  return G_SOURCE_REMOVE;
}

static void pty_exit_cb(GPid pid, gint status, gpointer data)
{
  Pty *p = data;
  p->exited = TRUE;
  p->status = status;
  g_spawn_close_pid(pid);
}

/* Runs `nervesfleet ARGS --name con` on a fresh pty (its controlling tty). */
static Pty *pty_spawn(const char *const *args)
{
  Pty *p = g_new0(Pty, 1);
  p->out = g_string_new(NULL);
  p->master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
  g_assert_cmpint(p->master, >=, 0);
  g_assert_cmpint(grantpt(p->master), ==, 0);
  g_assert_cmpint(unlockpt(p->master), ==, 0);
  g_autofree char *name = g_strdup(ptsname(p->master));
  /* We keep the slave open too: to read its termios after the child left. */
  p->slave = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC);
  g_assert_cmpint(p->slave, >=, 0);

  g_autofree char *run = g_build_filename(tmp, "run", NULL);
  g_autofree char *state = g_build_filename(tmp, "state", NULL);
  g_auto(GStrv) env = g_get_environ();
  env = g_environ_setenv(env, "XDG_RUNTIME_DIR", run, TRUE);
  env = g_environ_setenv(env, "XDG_STATE_HOME", state, TRUE);
  g_autoptr(GPtrArray) argv = g_ptr_array_new();
  g_ptr_array_add(argv, (gpointer)nf_test_bin());
  for (const char *const *a = args; *a; a++)
    g_ptr_array_add(argv, (gpointer)*a);
  g_ptr_array_add(argv, "--name");
  g_ptr_array_add(argv, "con");
  g_ptr_array_add(argv, NULL);

  p->pid = fork();
  g_assert_cmpint(p->pid, >=, 0);
  if (p->pid == 0) {
    setsid();
    int t = open(name, O_RDWR); /* the session's controlling tty */
    if (t < 0)
      _exit(126);
    dup2(t, 0);
    dup2(t, 1);
    dup2(t, 2);
    execve(nf_test_bin(), (char **)argv->pdata, env);
    _exit(127);
  }
  g_unix_set_fd_nonblocking(p->master, TRUE, NULL);
  p->src = g_unix_fd_add(p->master, G_IO_IN | G_IO_HUP | G_IO_ERR, pty_read_cb, p);
  g_child_watch_add(p->pid, pty_exit_cb, p);
  return p;
}

static gboolean pty_has(gpointer data)
{
  Pty *p = data;
  return strstr(p->out->str, p->needle) != NULL;
}

static gboolean pty_wait(Pty *p, const char *needle)
{
  p->needle = needle;
  gboolean ok = nf_test_wait_for(pty_has, p, WAIT_MS);
  if (!ok)
    g_test_message("pty output so far: %s", p->out->str);
  return ok;
}

static gboolean pty_exited(gpointer data)
{
  return ((Pty *)data)->exited;
}

static void pty_type(Pty *p, const char *text)
{
  g_assert_cmpint(write(p->master, text, strlen(text)), ==, (gssize)strlen(text));
}

static void pty_free(Pty *p)
{
  if (p->src)
    g_source_remove(p->src);
  close(p->master);
  close(p->slave);
  g_string_free(p->out, TRUE);
  g_free(p);
}

static void assert_same_termios(const struct termios *a, const struct termios *b)
{
  g_assert_cmphex(a->c_iflag, ==, b->c_iflag);
  g_assert_cmphex(a->c_oflag, ==, b->c_oflag);
  g_assert_cmphex(a->c_cflag, ==, b->c_cflag);
  g_assert_cmphex(a->c_lflag, ==, b->c_lflag);
  g_assert_cmpmem(a->c_cc, sizeof(a->c_cc), b->c_cc, sizeof(b->c_cc));
}

typedef struct {
  gboolean done;
  int status;
  char *out;
} Piped;

static void piped_done_cb(GObject *src, GAsyncResult *res, gpointer data)
{
  Piped *p = data;
  g_autoptr(GError) error = NULL;
  g_subprocess_communicate_utf8_finish(G_SUBPROCESS(src), res, &p->out, NULL, &error);
  g_assert_no_error(error);
  p->status = g_subprocess_get_exit_status(G_SUBPROCESS(src));
  p->done = TRUE;
}

static gboolean piped_done(gpointer data)
{
  return ((Piped *)data)->done;
}

/* Runs `nervesfleet ARGS --name con` with `input` on a pipe as stdin (NULL:
 * /dev/null); returns its exit status (-1 if it did not end within
 * WAIT_MS: then it is killed) and its merged output. */
static int run_with_stdin(const char *input, const char *const *args, char **output)
{
  g_autoptr(GSubprocessLauncher) l =
      g_subprocess_launcher_new((input ? G_SUBPROCESS_FLAGS_STDIN_PIPE : G_SUBPROCESS_FLAGS_NONE) |
                                G_SUBPROCESS_FLAGS_STDOUT_PIPE | G_SUBPROCESS_FLAGS_STDERR_MERGE);
  if (!input)
    g_subprocess_launcher_set_stdin_file_path(l, "/dev/null");
  g_autofree char *run = g_build_filename(tmp, "run", NULL);
  g_subprocess_launcher_setenv(l, "XDG_RUNTIME_DIR", run, TRUE);
  g_autoptr(GPtrArray) argv = g_ptr_array_new();
  g_ptr_array_add(argv, (gpointer)nf_test_bin());
  for (const char *const *a = args; *a; a++)
    g_ptr_array_add(argv, (gpointer)*a);
  g_ptr_array_add(argv, "--name");
  g_ptr_array_add(argv, "con");
  g_ptr_array_add(argv, NULL);
  g_autoptr(GError) error = NULL;
  g_autoptr(GSubprocess) proc =
      g_subprocess_launcher_spawnv(l, (const char *const *)argv->pdata, &error);
  g_assert_no_error(error);
  Piped p = {0};
  g_subprocess_communicate_utf8_async(proc, input, NULL, piped_done_cb, &p);
  if (!nf_test_wait_for(piped_done, &p, WAIT_MS)) {
    g_subprocess_force_exit(proc);
    nf_test_wait_for(piped_done, &p, WAIT_MS);
    *output = p.out;
    return -1;
  }
  *output = p.out;
  return p.status;
}

/* The sim guest's kernel took the idle settings from its command line
 * (qemu-argv.h): a sysctl it did not know would only be a boot warning. */
static void check_guest_quiet(void)
{
  const char *attach[] = {"console", "1", NULL};
  g_autofree char *out = NULL;
  int rc = run_with_stdin(
      "echo quiet-$(cat /proc/sys/vm/compaction_proactiveness)-$(cat /proc/sys/vm/stat_interval)-"
      "$(ls /proc/pressure 2>/dev/null | wc -l)-"
      "$( (awk '$1==\"memory\"{print $4}' /proc/cgroups 2>/dev/null; echo 0) | head -n1)-"
      "$(cat /proc/sys/kernel/watchdog 2>/dev/null || echo 0)-boot$(grep -c ' initrd=0x' "
      "/proc/cmdline)\r",
      attach, &out);
  g_assert_cmpint(rc, ==, 0);
  g_autofree char *log = g_build_filename(tmp, "state/nervesfleet/con/vm-0001/console.log", NULL);
  /* Proactiveness 0, stat interval 10, no PSI files, memory cgroup off,
   * lockup detector off (a kernel built without the last two, such as the
   * small one, says 0 for them); booted from the guest's boot.elf, whose
   * initrd the command line names (boot-image.h). */
  g_assert_true(nf_test_wait_file_contains(log, "quiet-0-10-0-0-0-boot1", WAIT_MS));
}

/* stdin at EOF detaches after sending what was read. */
static void check_stdin_eof(void)
{
  const char *attach[] = {"console", "1", NULL};
  g_autofree char *out = NULL;
  int rc = run_with_stdin("echo eof-$((6*7))\r", attach, &out);
  g_test_message("piped console -> %d: %s", rc, out);
  g_assert_cmpint(rc, ==, 0);
  g_assert_nonnull(strstr(out, "input ended: detached from vm-0001"));
  /* The line reached the guest's shell, which ran it. */
  g_autofree char *log = g_build_filename(tmp, "state/nervesfleet/con/vm-0001/console.log", NULL);
  g_assert_true(nf_test_wait_file_contains(log, "eof-42", WAIT_MS));
  /* The writer's seat was given back. */
  const char *ro[] = {"console", "1", "--ro", NULL};
  g_autofree char *out_ro = NULL;
  rc = run_with_stdin(NULL, ro, &out_ro);
  g_test_message("console --ro </dev/null -> %d: %s", rc, out_ro);
  g_assert_cmpint(rc, ==, 0);
  g_assert_nonnull(strstr(out_ro, "input ended: detached from vm-0001"));
  g_autofree char *out_w = NULL;
  g_assert_cmpint(run_with_stdin(NULL, attach, &out_w), ==, 0);
}

/* A file piped into the console, more than the supervisor holds for a
 * guest (1 MiB) while the guest's UART drains it: every line arrives. It
 * was written as far as the socket took it at once, the rest dropped
 * silently; then a writer past 1 MiB was dropped; now it is read at the
 * guest's pace. */
static void check_stdin_large(void)
{
  const char *attach[] = {"console", "1", NULL};
  g_autoptr(GString) input = g_string_new("cat > /tmp/in\r");
  for (guint i = 1; i <= 200000; i++)
    g_string_append_printf(input, "%u\n", i);
  g_string_append_c(input, '\x04'); /* ^D: cat's end of input */
  g_autofree char *out = NULL;
  g_assert_cmpint(run_with_stdin(input->str, attach, &out), ==, 0);
  g_autofree char *out2 = NULL;
  g_assert_cmpint(
      run_with_stdin("echo piped-$((1+1))-lines=$(wc -l < /tmp/in)-$(tail -n 1 /tmp/in)\r", attach,
                     &out2),
      ==, 0);
  g_autofree char *log = g_build_filename(tmp, "state/nervesfleet/con/vm-0001/console.log", NULL);
  g_assert_true(nf_test_wait_file_contains(log, "piped-2-lines=", WAIT_MS));
  g_assert_true(nf_test_wait_file_contains(log, "piped-2-lines=200000-200000", 1000));
}

/* No connected socket on the guest's console: the supervisor let it go
 * (nobody watching for NF_VM_CONSOLE_LINGER_MS) and qemu logs alone.
 * /proc/net/unix: state 03 is a connected socket, and qemu's accepted end
 * carries the listening socket's path. */
static gboolean console_let_go(gpointer data)
{
  g_autofree char *text = NULL;
  g_assert_true(g_file_get_contents("/proc/net/unix", &text, NULL, NULL));
  g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
  for (char **l = lines; *l; l++)
    if (g_str_has_suffix(*l, (const char *)data) && strstr(*l, " 03 "))
      return FALSE;
  return TRUE;
}

/* Input piped to a console the supervisor had let go: the client used to
 * close at the end of its stdin while the supervisor was still sending the
 * replay (read from the log now), and the supervisor dropped it with the
 * input unread (the soak: 'poweroff -f' never typed, 4 tries of 4). */
static void check_stdin_after_let_go(void)
{
  const char *attach[] = {"console", "1", NULL};
  g_autofree char *serial = g_build_filename(tmp, "run/nervesfleet/con/vm-0001.serial", NULL);
  g_autofree char *log = g_build_filename(tmp, "state/nervesfleet/con/vm-0001/console.log", NULL);
  for (int round = 0; round < 2; round++) {
    g_assert_true(nf_test_wait_polled(console_let_go, serial, 100, WAIT_MS));
    g_autofree char *cmd = g_strdup_printf("echo let-go-$((%d*11))\r", round + 3);
    g_autofree char *want = g_strdup_printf("let-go-%d", (round + 3) * 11);
    g_autofree char *out = NULL;
    g_assert_cmpint(run_with_stdin(cmd, attach, &out), ==, 0);
    g_assert_true(nf_test_wait_file_contains(log, want, WAIT_MS));
  }
}

/* The seq-N lines a watcher saw, scanned as they come: the first and last
 * number and the first break in the sequence. */
typedef struct {
  Pty *p;
  gsize pos; /* scanned up to here: the end of the last whole line */
  guint count;
  gint64 first, last, span;
  gint64 until; /* done once this number came (0: once `span` lines did) */
  gboolean broken;
  gint64 before_break, after_break;
} SeqScan;

static void seq_scan(SeqScan *s)
{
  const char *buf = s->p->out->str;
  const char *end = strrchr(buf + s->pos, '\n');
  if (end == NULL)
    return;
  for (const char *q = buf + s->pos; (q = g_strstr_len(q, end - q, "seq-")) != NULL;) {
    char *e;
    q += 4;
    gint64 v = g_ascii_strtoll(q, &e, 10);
    if (e == q || (*e != '\r' && *e != '\n'))
      continue; /* the replay's first line, cut; the typed command */
    if (s->count && v != s->last + 1 && !s->broken) {
      s->broken = TRUE;
      s->before_break = s->last;
      s->after_break = v;
    }
    if (s->count++ == 0)
      s->first = v;
    s->last = v;
  }
  s->pos = (gsize)(end + 1 - buf);
}

static gboolean seq_done(gpointer data)
{
  SeqScan *s = data;
  seq_scan(s);
  if (s->until)
    return s->broken || (s->count && s->last >= s->until);
  return s->broken || (s->count && s->last - s->first >= s->span);
}

/* Watchers of a console the supervisor had let go, while the guest prints:
 * the replay and then the live stream, every line once and in order. The
 * replay used to be read from the log before qemu accepted the watcher's
 * connection, and what the guest printed in between reached neither (the
 * prompt, once in CI). A read-only watcher connects no socket now. */
static void check_watch_exact(void)
{
  const char *attach[] = {"console", "1", NULL};
  const char *watch[] = {"console", "1", "--ro", NULL};
  g_autofree char *serial = g_build_filename(tmp, "run/nervesfleet/con/vm-0001.serial", NULL);
  g_autofree char *log = g_build_filename(tmp, "state/nervesfleet/con/vm-0001/console.log", NULL);
  g_autofree char *out = NULL;
  /* Numbered lines in the background as fast as the guest prints them, until
   * told to stop (~2 MB in all, under the log's 4 MiB cap). */
  const char *printer = "(i=0; while [ ! -e /tmp/seq-stop ]; do echo seq-$i; i=$((i+1)); "
                        "done; echo seq-stopped) &\r";
  g_assert_cmpint(run_with_stdin(printer, attach, &out), ==, 0);
  for (int round = 0; round < 2; round++) {
    g_assert_true(nf_test_wait_polled(console_let_go, serial, 100, WAIT_MS));
    Pty *ro = pty_spawn(watch);
    g_assert_true(pty_wait(ro, "read-only; Ctrl-] then q detaches"));
    /* The replay (4 KiB: ~340 lines) and as many again live, at least. */
    SeqScan s = {.p = ro, .span = 1000};
    gboolean done = nf_test_wait_for(seq_done, &s, WAIT_MS);
    gboolean no_socket = console_let_go(serial);
    pty_type(ro, "\x1dq");
    g_assert_true(nf_test_wait_for(pty_exited, ro, WAIT_MS));
    if (s.broken)
      g_error("round %d: seq-%" G_GINT64_FORMAT " followed by seq-%" G_GINT64_FORMAT, round,
              s.before_break, s.after_break);
    if (!done)
      g_error("round %d: %u lines in %" G_GINT64_FORMAT "..%" G_GINT64_FORMAT, round, s.count,
              s.first, s.last);
    g_test_message("round %d: seq-%" G_GINT64_FORMAT "..%" G_GINT64_FORMAT ", none missed", round,
                   s.first, s.last);
    g_assert_true(no_socket);
    pty_free(ro);
  }
  /* `logs -f`: the file up to where the stream starts, then the stream. */
  g_autofree char *before = NULL;
  g_assert_true(g_file_get_contents(log, &before, NULL, NULL));
  SeqScan logged = {.p = &(Pty){.out = g_string_new(before)}};
  seq_scan(&logged);
  g_string_free(logged.p->out, TRUE);
  g_assert_cmpuint(logged.count, >, 0);
  const char *logs[] = {"logs", "1", "-f", NULL};
  Pty *lf = pty_spawn(logs);
  SeqScan s = {.p = lf, .until = logged.last + 2000};
  gboolean done = nf_test_wait_for(seq_done, &s, WAIT_MS);
  kill(lf->pid, SIGTERM);
  g_assert_true(nf_test_wait_for(pty_exited, lf, WAIT_MS));
  if (s.broken)
    g_error("logs -f: seq-%" G_GINT64_FORMAT " followed by seq-%" G_GINT64_FORMAT, s.before_break,
            s.after_break);
  if (!done)
    g_error("logs -f: %u lines in %" G_GINT64_FORMAT "..%" G_GINT64_FORMAT, s.count, s.first,
            s.last);
  g_test_message("logs -f: seq-%" G_GINT64_FORMAT "..%" G_GINT64_FORMAT ", none missed", s.first,
                 s.last);
  pty_free(lf);

  g_autofree char *out_stop = NULL;
  g_assert_cmpint(run_with_stdin("touch /tmp/seq-stop\r", attach, &out_stop), ==, 0);
  g_assert_true(nf_test_wait_file_contains(log, "seq-stopped", WAIT_MS));
}

static void test_console(void)
{
  /* The fleet itself runs on a terminal too: once all are ready it tells a
   * person what to try next, with the fleet's name. */
  const char *run[] = {"run", "1", "--stop-timeout", "5", NULL};
  Pty *fleet = pty_spawn(run);
  g_assert_true(pty_wait(fleet, "all 1 guests ready"));
  g_assert_true(pty_wait(fleet, "console 1 --name con` (Ctrl-] q detaches)"));

  /* The console shell was up before the ready line (guest/init): its
   * banner comes first in the log, so a ready guest's console answers. */
  g_autofree char *log = g_build_filename(tmp, "state/nervesfleet/con/vm-0001/console.log", NULL);
  g_autofree char *boot = NULL;
  g_assert_true(g_file_get_contents(log, &boot, NULL, NULL));
  const char *banner = strstr(boot, "built-in shell (ash)");
  const char *ready = strstr(boot, "nervesfleet-ready serial=NF-000001");
  g_assert_nonnull(banner);
  g_assert_nonnull(ready);
  g_assert_true(banner < ready);

  /* The writer: hint, replayed prompt, raw mode while attached. */
  const char *attach[] = {"console", "1", NULL};
  Pty *w = pty_spawn(attach);
  struct termios before, during, after;
  g_assert_cmpint(tcgetattr(w->slave, &before), ==, 0);
  g_assert_true(pty_wait(w, "Ctrl-] then q detaches"));
  g_assert_true(pty_wait(w, "NF-000001#"));
  g_assert_cmpint(tcgetattr(w->slave, &during), ==, 0);
  g_assert_false(during.c_lflag & ICANON);
  g_assert_false(during.c_lflag & ECHO);

  /* A read-only watcher. */
  const char *watch[] = {"console", "1", "--ro", NULL};
  Pty *ro = pty_spawn(watch);
  g_assert_true(pty_wait(ro, "read-only; Ctrl-] then q detaches"));
  g_assert_true(pty_wait(ro, "NF-000001#"));
  pty_type(ro, "echo ro-$((6*7))\r");
  g_assert_true(pty_wait(ro, "input ignored"));

  /* A second writer is refused while the first is attached. */
  const char *second[] = {"console", "1", "--name", "con", NULL};
  g_autofree char *refused = NULL;
  g_assert_cmpint(nf_test_run_cli(tmp, second, WAIT_MS, &refused), ==, 1);
  g_assert_nonnull(strstr(refused, "already has a writer"));

  /* Typing reaches the guest shell; both see the result. */
  pty_type(w, "echo hi-$((6*7))\r");
  g_assert_true(pty_wait(w, "hi-42"));
  g_assert_true(pty_wait(ro, "hi-42"));
  /* The watcher's command, typed before, never ran anywhere. */
  g_assert_null(strstr(w->out->str, "ro-42"));
  g_assert_null(strstr(ro->out->str, "ro-42"));
  g_assert_null(strstr(ro->out->str, "echo ro-"));

  /* ^C interrupts a foreground command: the shell was not started with
   * SIGINT ignored. Without it the sleep would run out and print. */
  pty_type(w, "echo sleeping-$((6*7)); sleep 30; echo slept-$((6*7))\r");
  g_assert_true(pty_wait(w, "sleeping-42"));
  pty_type(w, "\x03");
  pty_type(w, "echo woke-$((6*7))\r");
  g_assert_true(pty_wait(w, "woke-42"));
  g_assert_null(strstr(w->out->str, "slept-42"));

  /* Detach: exit 0, and the terminal is exactly as it was. */
  pty_type(w, "\x1dq");
  g_assert_true(nf_test_wait_for(pty_exited, w, WAIT_MS));
  g_assert_true(WIFEXITED(w->status) && WEXITSTATUS(w->status) == 0);
  g_assert_true(pty_wait(w, "detached from vm-0001"));
  g_assert_cmpint(tcgetattr(w->slave, &after), ==, 0);
  assert_same_termios(&before, &after);
  pty_free(w);

  pty_type(ro, "\x1dq");
  g_assert_true(nf_test_wait_for(pty_exited, ro, WAIT_MS));
  g_assert_true(WIFEXITED(ro->status) && WEXITSTATUS(ro->status) == 0);
  pty_free(ro);

  /* SIGTERM while attached: the terminal is restored all the same, and the
   * writer's seat is free again for the next one. */
  Pty *k = pty_spawn(attach);
  g_assert_cmpint(tcgetattr(k->slave, &before), ==, 0);
  g_assert_true(pty_wait(k, "Ctrl-] then q detaches"));
  g_assert_true(pty_wait(k, "NF-000001#"));
  kill(k->pid, SIGTERM);
  g_assert_true(nf_test_wait_for(pty_exited, k, WAIT_MS));
  g_assert_true(WIFSIGNALED(k->status) && WTERMSIG(k->status) == SIGTERM);
  g_assert_cmpint(tcgetattr(k->slave, &after), ==, 0);
  assert_same_termios(&before, &after);
  pty_free(k);

  check_stdin_eof();
  check_stdin_large();
  check_guest_quiet();
  check_stdin_after_let_go();
  check_watch_exact();
  g_test_message("T %" G_GINT64_FORMAT " checks done", g_get_monotonic_time() / 1000);

  kill(fleet->pid, SIGTERM);
  g_assert_true(nf_test_wait_for(pty_exited, fleet, WAIT_MS));
  g_assert_true(WIFEXITED(fleet->status) && WEXITSTATUS(fleet->status) == 0);
  pty_free(fleet);
  g_test_message("T %" G_GINT64_FORMAT " fleet gone", g_get_monotonic_time() / 1000);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  tmp = nf_test_tmpdir_new();
  g_test_add_func("/console/attach-type-watch-detach", test_console);
  int rc = g_test_run();
  nf_test_tmpdir_cleanup(tmp);
  g_free(tmp);
  return rc;
}
