/*
 * fake-qemu.c: a stand-in for qemu-system-aarch64 that costs almost nothing,
 * so fleet logic can be tested at hundreds to thousands of guests in seconds
 * (tests/test-fleet-*.c) and the supervisor itself measured at 1,000-10,000
 * guests (bench/scale.sh, bench/restart.sh: `nervesfleet run N --qemu
 * build/rel/tests/helpers/fake-qemu`). What needs a real guest is tested with
 * real qemu.
 *
 * It accepts the argv the supervisor builds (supervisor/qemu-argv.c), skips
 * every option it does not know (and that option's value), and honours:
 *   -chardev socket,id=X,fd=N[,server=on][,wait=off]   an inherited fd: with
 *            server=on a listening socket (one client at a time; the next is
 *            accepted after the previous disconnects), else a connected stream
 *   -chardev socket,id=X,path=P,server=on              the same, bound here
 *            (either with logfile=PATH[,logappend=on]: all console output is
 *            appended there too, connected client or not, as qemu does)
 *   -mon chardev=X,mode=control    a QMP monitor on chardev X
 *   -serial chardev:X              the console on chardev X
 *   -serial stdio                  the console on stdout (output only)
 *   -fw_cfg name=...,string=S      S is the serial printed in the ready line
 *   -m SIZE, -name guest=NAME, -pidfile PATH
 *
 * Console: on each client (or at start for a connected stream) a few lines of
 * boot noise, then `nervesfleet-ready serial=S` once FAKE_QEMU_BOOT_MS (default
 * 0) have passed since start or since the last system_reset; input is echoed.
 * QMP: greeting, qmp_capabilities, query-status, query-version, quit,
 * system_reset, system_powerdown, stop, cont, balloon, query-balloon, qom-get
 * and qom-set of the balloon's guest-stats(-polling-interval); anything else
 * gets CommandNotFound, like qemu. Replies echo `id`; events go to every
 * negotiated monitor with qemu's timestamp. SIGTERM/SIGINT/SIGHUP: SHUTDOWN
 * (host-signal) and exit 0, as qemu does.
 *
 * Faults, from the environment (read at each start, so a test can change
 * them between restarts), for every guest or only those named in
 * FAKE_QEMU_FAULT_GUESTS (comma-separated -name values, e.g. vm-0001,vm-0007):
 *   FAKE_QEMU_FAIL_START=1   exit 1 at once, before any channel is up (a bad
 *                            argument or a broken binary)
 *   FAKE_QEMU_EXIT_MS=N      crash N ms after the QMP handshake: exit with
 *                            FAKE_QEMU_EXIT_CODE (default 1), no SHUTDOWN event
 *   FAKE_QEMU_NO_READY=1     never print the ready line (a guest stuck booting)
 *   FAKE_QEMU_HANG_MS=N      N ms after the QMP handshake stop answering
 *                            anything, quit and SIGTERM included (a hung qemu)
 *   FAKE_QEMU_REBOOT_MS=N    the guest reboots itself N ms after the QMP
 *                            handshake: with -no-reboot, SHUTDOWN (guest-reset)
 *                            and exit 0, as qemu does; else RESET and boot again
 *   FAKE_QEMU_MONITOR_GONE_MS=N  N ms after the QMP handshake every QMP
 *                            socket closes (listeners too) while the process
 *                            runs on (a qemu whose monitor broke)
 *   FAKE_QEMU_CHATTER_MS=N   N ms after the QMP handshake the console prints
 *                            FAKE_QEMU_CHATTER_KB KiB (default 64) of lines at
 *                            once (a guest gone chatty after a quiet spell)
 * FAKE_QEMU_READY_KB=N (every guest) touches N KiB of new memory as it prints
 * its first ready line, as a guest's RAM fills while it boots.
 * FAKE_QEMU_QMP_LOG=PATH (every guest) appends a line per command after the
 * negotiation to PATH: "NAME COMMAND", plus the property for qom-get and
 * qom-set, so a test can see what the supervisor asked and how often.
 * SIGUSR1 is a kernel panic: its line on the console, then that reboot.
 * SIGUSR2 turns busy polling on and off: a guest that always wants the CPU
 * (as a starved one does), still answering on every channel.
 *
 * One ppoll loop, no threads, no GLib, built without sanitizers: a few KiB of
 * heap per process, so ten thousand of them fit next to the supervisor.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_CHARDEVS 8
#define OUT_MAX (1 << 20) /* a client that stops reading loses output past this */

typedef enum { KIND_NONE, KIND_QMP, KIND_SERIAL } Kind;

typedef struct {
  char id[64];
  Kind kind;
  int listen_fd; /* server=on: accept clients here; else -1 */
  int fd;        /* the current connection, -1 when none */
  bool negotiated;
  char *in;
  size_t in_len, in_cap;
  char *out;
  size_t out_len, out_cap;
  int64_t ready_due_ms; /* serial: when to print the ready line; 0: not pending */
  bool has_log;         /* logfile=: every byte of output is appended to log_fd */
  int log_fd;
} Chardev;

static Chardev chardevs[MAX_CHARDEVS];
static int n_chardevs;
static const char *serial_string = "unknown";
static const char *guest_name = "fake";
static const char *pidfile;
static int64_t ram_bytes = 128LL << 20;
static int64_t balloon_actual;
static int64_t stats_interval;
static bool running = true;
static int64_t boot_ms;
static int64_t booted_at_ms; /* start, or the last reset, plus boot_ms */
static int64_t powerdown_due_ms;
static volatile sig_atomic_t got_signal;
/* Faults (see the top of the file); -1: off. */
static int64_t exit_after_ms = -1, hang_after_ms = -1, reboot_after_ms = -1;
static int64_t chatter_after_ms = -1, chatter_due_ms, chatter_kib = 64;
static int64_t reboot_due_ms;
static int64_t monitor_gone_after_ms = -1, monitor_gone_due_ms;
static volatile sig_atomic_t got_panic; /* SIGUSR1: a kernel panic now */
static volatile sig_atomic_t busy;      /* SIGUSR2: poll without waiting */
static bool no_reboot;
static int exit_code = 1;
static bool no_ready;
static int64_t exit_due_ms, hang_due_ms; /* armed at the QMP handshake; 0: not armed */
static bool hung;

static int64_t now_ms(void);
static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void parse_chardev(const char *value);
static void parse_args(int argc, char **argv);
static bool takes_no_value(const char *opt);
static void out_append(Chardev *c, const char *data, size_t len);
static void out_flush(Chardev *c);
static void conn_open(Chardev *c, int fd);
static void conn_close(Chardev *c);
static void serial_boot(Chardev *c);
static void send_json(Chardev *c, json_t *msg);
static void emit_event(const char *name, json_t *data);
static void reply(Chardev *c, json_t *id, json_t *ret);
static void reply_error(Chardev *c, json_t *id, const char *cls, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static json_t *guest_stats(void);
static void handle_command(Chardev *c, json_t *req);
static void qmp_input(Chardev *c);
static void conn_readable(Chardev *c);
static void finish(int code, const char *reason);
static void on_signal(int sig);
static void reset(bool guest, const char *reason);
/* FAKE_QEMU_READY_KB: once per process, kept until it exits. */
static void grow_at_ready(void)
{
  static char *grown;
  const char *v = getenv("FAKE_QEMU_READY_KB");
  if (grown || v == NULL || atoll(v) <= 0)
    return;
  size_t n = (size_t)atoll(v) * 1024;
  grown = malloc(n);
  if (grown)
    memset(grown, 1, n);
}

static bool fault_applies(void);
static void read_faults(void);

static int64_t now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void die(const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  fputs("qemu-system-aarch64: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  exit(1);
}

static void parse_chardev(const char *value)
{
  char buf[1024];
  snprintf(buf, sizeof(buf), "%s", value);
  char *save = NULL, *tok = strtok_r(buf, ",", &save);
  if (tok == NULL || strcmp(tok, "socket") != 0)
    return; /* other backends: nothing a benchmark needs */
  if (n_chardevs == MAX_CHARDEVS)
    die("too many -chardev");
  Chardev *c = &chardevs[n_chardevs];
  int fd = -1;
  bool server = false, log_append = false;
  const char *path = NULL, *log = NULL;
  while ((tok = strtok_r(NULL, ",", &save)) != NULL) {
    char *eq = strchr(tok, '=');
    const char *v = eq ? eq + 1 : "on";
    if (eq)
      *eq = '\0';
    if (strcmp(tok, "id") == 0)
      snprintf(c->id, sizeof(c->id), "%s", v);
    else if (strcmp(tok, "fd") == 0)
      fd = atoi(v);
    else if (strcmp(tok, "path") == 0)
      path = v;
    else if (strcmp(tok, "server") == 0)
      server = strcmp(v, "on") == 0 || strcmp(v, "true") == 0 || strcmp(v, "yes") == 0;
    else if (strcmp(tok, "logfile") == 0)
      log = v;
    else if (strcmp(tok, "logappend") == 0)
      log_append = strcmp(v, "on") == 0 || strcmp(v, "true") == 0 || strcmp(v, "yes") == 0;
  }
  if (log) {
    /* As qemu: opened at start, truncated unless logappend=on. */
    c->log_fd = open(log, O_WRONLY | O_CREAT | O_CLOEXEC | (log_append ? O_APPEND : O_TRUNC), 0666);
    if (c->log_fd < 0)
      die("Unable to open logfile %s: %s", log, strerror(errno));
    c->has_log = true;
  }
  if (c->id[0] == '\0')
    die("-chardev %s: 'id' is missing", value);
  if (fd < 0 && path && server) {
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sun.sun_path))
      die("-chardev %s: path too long", value);
    strcpy(sun.sun_path, path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    unlink(path);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0 || listen(fd, 4) < 0)
      die("-chardev %s: %s", value, strerror(errno));
  }
  if (fd < 0 || fcntl(fd, F_GETFD) < 0)
    die("-chardev %s: no usable fd", value);
  fcntl(fd, F_SETFD, FD_CLOEXEC);
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  c->listen_fd = server ? fd : -1;
  c->fd = server ? -1 : fd; /* a connected stream opens once its kind is known */
  n_chardevs++;
}

static bool takes_no_value(const char *opt)
{
  static const char *const flags[] = {"nodefaults",
                                      "no-user-config",
                                      "no-reboot",
                                      "no-shutdown",
                                      "S",
                                      "snapshot",
                                      "nographic",
                                      "enable-kvm",
                                      "daemonize",
                                      "s",
                                      "no-hpet",
                                      "no-acpi",
                                      "only-migratable",
                                      "preconfig",
                                      "full-screen",
                                      "usb",
                                      "no-quit",
                                      "alt-grab",
                                      "ctrl-grab",
                                      "enable-fips",
                                      "version",
                                      "help",
                                      "h",
                                      "no-fd-bootchk",
                                      "win2k-hack",
                                      NULL};
  for (const char *const *f = flags; *f; f++)
    if (strcmp(opt, *f) == 0)
      return true;
  return false;
}

static void parse_args(int argc, char **argv)
{
  const char *serial_dev = NULL;
  const char *qmp_devs[MAX_CHARDEVS];
  int n_qmp = 0;

  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (a[0] != '-')
      continue; /* a positional disk image: ignored */
    const char *opt = a + (a[1] == '-' ? 2 : 1);
    if (strcmp(opt, "no-reboot") == 0)
      no_reboot = true;
    if (takes_no_value(opt))
      continue;
    if (i + 1 >= argc)
      die("%s: requires an argument", a);
    const char *v = argv[++i];
    if (strcmp(opt, "chardev") == 0) {
      parse_chardev(v);
    } else if (strcmp(opt, "mon") == 0) {
      const char *cd = strstr(v, "chardev=");
      if (cd && strstr(v, "mode=control") && n_qmp < MAX_CHARDEVS)
        qmp_devs[n_qmp++] = cd + strlen("chardev=");
    } else if (strcmp(opt, "serial") == 0) {
      if (strncmp(v, "chardev:", 8) == 0) {
        serial_dev = v + 8;
      } else if (strcmp(v, "stdio") == 0 && n_chardevs < MAX_CHARDEVS) {
        /* The console on stdout (output only), for naive baselines. */
        Chardev *c = &chardevs[n_chardevs++];
        snprintf(c->id, sizeof(c->id), "serial-stdio");
        c->listen_fd = -1;
        c->fd = STDOUT_FILENO;
        fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
        serial_dev = c->id;
      }
    } else if (strcmp(opt, "fw_cfg") == 0) {
      const char *s = strstr(v, "string=");
      if (s && strstr(v, "opt/nervesfleet/serial"))
        serial_string = s + strlen("string=");
    } else if (strcmp(opt, "pidfile") == 0) {
      pidfile = v;
    } else if (strcmp(opt, "name") == 0) {
      guest_name = strncmp(v, "guest=", 6) == 0 ? v + 6 : v;
    } else if (strcmp(opt, "m") == 0) {
      const char *s = strncmp(v, "size=", 5) == 0 ? v + 5 : v;
      char *end = NULL;
      long long n = strtoll(s, &end, 10);
      int shift = 20; /* qemu's default unit is MiB */
      if (end && (*end == 'G' || *end == 'g'))
        shift = 30;
      else if (end && (*end == 'K' || *end == 'k'))
        shift = 10;
      if (n > 0)
        ram_bytes = n << shift;
    }
  }
  /* -mon and -serial name chardevs; the ids end at the next comma. */
  for (int i = 0; i < n_chardevs; i++) {
    Chardev *c = &chardevs[i];
    size_t len = strlen(c->id);
    for (int q = 0; q < n_qmp; q++)
      if (strncmp(qmp_devs[q], c->id, len) == 0 && (qmp_devs[q][len] == ',' || !qmp_devs[q][len]))
        c->kind = KIND_QMP;
    if (serial_dev && strcmp(serial_dev, c->id) == 0)
      c->kind = KIND_SERIAL;
    if (c->listen_fd < 0)
      conn_open(c, c->fd);
  }
}

static void out_append(Chardev *c, const char *data, size_t len)
{
  /* The log gets what the device sends, connected client or not. */
  if (c->has_log && write(c->log_fd, data, len) < 0 && errno != EINTR) {
    /* like qemu: a log that cannot be written does not stop the guest */
  }
  if (c->fd < 0 || c->out_len + len > OUT_MAX)
    return;
  if (c->out_len + len > c->out_cap) {
    size_t cap = c->out_cap ? c->out_cap : 1024;
    while (cap < c->out_len + len)
      cap *= 2;
    c->out = realloc(c->out, cap);
    if (c->out == NULL)
      die("out of memory");
    c->out_cap = cap;
  }
  memcpy(c->out + c->out_len, data, len);
  c->out_len += len;
  out_flush(c);
}

static void out_flush(Chardev *c)
{
  while (c->fd >= 0 && c->out_len) {
    ssize_t n = write(c->fd, c->out, c->out_len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && errno == EAGAIN)
      return;
    if (n <= 0) {
      conn_close(c);
      return;
    }
    memmove(c->out, c->out + n, c->out_len - (size_t)n);
    c->out_len -= (size_t)n;
  }
}

static void conn_open(Chardev *c, int fd)
{
  c->fd = fd;
  c->negotiated = false;
  c->in_len = c->out_len = 0;
  if (c->kind == KIND_QMP) {
    static const char greeting[] =
        "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 22, \"minor\": 2, \"major\": 7}, "
        "\"package\": \"fake\"}, \"capabilities\": [\"oob\"]}}\r\n";
    out_append(c, greeting, sizeof(greeting) - 1);
  } else if (c->kind == KIND_SERIAL) {
    serial_boot(c);
  }
}

static void conn_close(Chardev *c)
{
  if (c->fd >= 0 && c->fd != c->listen_fd)
    close(c->fd);
  c->fd = -1;
  c->negotiated = false;
  c->in_len = c->out_len = 0;
  c->ready_due_ms = 0;
  /* Keep the buffers: the next client reuses them. */
}

static void serial_boot(Chardev *c)
{
  char buf[512];
  int n = snprintf(buf, sizeof(buf),
                   "[    0.000000] Booting Linux on physical CPU 0x0000000000 [0x410fd034]\r\n"
                   "[    0.000000] Linux version 6.1.0-fake (nervesfleet bench)\r\n"
                   "[    0.000000] Machine model: linux,dummy-virt (%s)\r\n"
                   "[    0.010000] Run /init as init process\r\n",
                   guest_name);
  out_append(c, buf, (size_t)n);
  int64_t now = now_ms();
  c->ready_due_ms = booted_at_ms > now ? booted_at_ms : now;
  if (c->ready_due_ms == 0)
    c->ready_due_ms = 1;
  if (no_ready)
    c->ready_due_ms = 0;
}

static void send_json(Chardev *c, json_t *msg)
{
  char *s = json_dumps(msg, JSON_COMPACT | JSON_PRESERVE_ORDER);
  if (s) {
    out_append(c, s, strlen(s));
    out_append(c, "\r\n", 2);
    free(s);
  }
  json_decref(msg);
}

static void emit_event(const char *name, json_t *data)
{
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  for (int i = 0; i < n_chardevs; i++) {
    Chardev *c = &chardevs[i];
    if (c->kind != KIND_QMP || c->fd < 0 || !c->negotiated)
      continue;
    json_t *ev = json_pack("{s:{s:I,s:I},s:s}", "timestamp", "seconds", (json_int_t)ts.tv_sec,
                           "microseconds", (json_int_t)(ts.tv_nsec / 1000), "event", name);
    if (data)
      json_object_set(ev, "data", data);
    send_json(c, ev);
  }
  json_decref(data);
}

static void reply(Chardev *c, json_t *id, json_t *ret)
{
  json_t *r = json_pack("{s:o}", "return", ret ? ret : json_object());
  if (id)
    json_object_set(r, "id", id);
  send_json(c, r);
}

static void reply_error(Chardev *c, json_t *id, const char *cls, const char *fmt, ...)
{
  char desc[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(desc, sizeof(desc), fmt, ap);
  va_end(ap);
  json_t *r = json_pack("{s:{s:s,s:s}}", "error", "class", cls, "desc", desc);
  if (id)
    json_object_set(r, "id", id);
  send_json(c, r);
}

static json_t *guest_stats(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  json_int_t free_mem = (json_int_t)(balloon_actual * 3 / 4);
  return json_pack("{s:{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I},s:I}", "stats", "stat-swap-in",
                   (json_int_t)0, "stat-swap-out", (json_int_t)0, "stat-major-faults",
                   (json_int_t)0, "stat-minor-faults", (json_int_t)1234, "stat-free-memory",
                   free_mem, "stat-total-memory", (json_int_t)balloon_actual,
                   "stat-available-memory", free_mem, "stat-disk-caches", (json_int_t)4 << 20,
                   "stat-htlb-pgalloc", (json_int_t)0, "stat-htlb-pgfail", (json_int_t)0,
                   "last-update", (json_int_t)ts.tv_sec);
}

/* FAKE_QEMU_QMP_LOG: one write(2) per line with O_APPEND, so the lines of
 * guests sharing the file do not interleave. */
static void log_command(const char *cmd, json_t *args)
{
  const char *path = getenv("FAKE_QEMU_QMP_LOG");
  if (path == NULL || path[0] == '\0')
    return;
  const char *prop = json_string_value(json_object_get(args, "property"));
  char line[256];
  int n = snprintf(line, sizeof line, "%s %s%s%s\n", guest_name, cmd, prop ? " " : "",
                   prop ? prop : "");
  int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0)
    return;
  if (write(fd, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1) < 0) {
    /* a test's log: nothing to do about it here */
  }
  close(fd);
}

static void handle_command(Chardev *c, json_t *req)
{
  json_t *id = json_object_get(req, "id");
  const char *cmd = json_string_value(json_object_get(req, "execute"));
  if (cmd == NULL)
    cmd = json_string_value(json_object_get(req, "exec-oob"));
  json_t *args = json_object_get(req, "arguments");
  if (cmd == NULL) {
    reply_error(c, id, "GenericError", "QMP input lacks member 'execute'");
    return;
  }
  if (!c->negotiated) {
    if (strcmp(cmd, "qmp_capabilities") == 0) {
      c->negotiated = true;
      reply(c, id, NULL);
      if (exit_after_ms >= 0 && exit_due_ms == 0)
        exit_due_ms = now_ms() + exit_after_ms + 1;
      if (hang_after_ms == 0)
        hung = true; /* at once: not even input already read is answered */
      else if (hang_after_ms > 0 && hang_due_ms == 0)
        hang_due_ms = now_ms() + hang_after_ms;
      if (reboot_after_ms >= 0 && reboot_due_ms == 0)
        reboot_due_ms = now_ms() + reboot_after_ms + 1;
      if (chatter_after_ms >= 0 && chatter_due_ms == 0)
        chatter_due_ms = now_ms() + chatter_after_ms + 1;
      if (monitor_gone_after_ms >= 0 && monitor_gone_due_ms == 0)
        monitor_gone_due_ms = now_ms() + monitor_gone_after_ms + 1;
    } else {
      reply_error(c, id, "CommandNotFound",
                  "Expecting capabilities negotiation with 'qmp_capabilities'");
    }
    return;
  }
  log_command(cmd, args);
  if (strcmp(cmd, "qmp_capabilities") == 0) {
    reply_error(c, id, "CommandNotFound",
                "Capabilities negotiation is already complete, command ignored");
  } else if (strcmp(cmd, "query-status") == 0) {
    reply(c, id,
          json_pack("{s:s,s:b,s:b}", "status", running ? "running" : "paused", "singlestep", 0,
                    "running", running));
  } else if (strcmp(cmd, "query-version") == 0) {
    reply(c, id,
          json_pack("{s:{s:i,s:i,s:i},s:s}", "qemu", "micro", 22, "minor", 2, "major", 7, "package",
                    "fake"));
  } else if (strcmp(cmd, "quit") == 0) {
    reply(c, id, NULL);
    finish(0, "host-qmp-quit");
  } else if (strcmp(cmd, "system_reset") == 0) {
    reply(c, id, NULL);
    reset(false, "host-qmp-system-reset");
  } else if (strcmp(cmd, "system_powerdown") == 0) {
    reply(c, id, NULL);
    emit_event("POWERDOWN", NULL);
    if (running && powerdown_due_ms == 0)
      powerdown_due_ms = now_ms() + 100; /* the guest's init takes a moment */
  } else if (strcmp(cmd, "stop") == 0) {
    reply(c, id, NULL);
    if (running) {
      running = false;
      emit_event("STOP", NULL);
    }
  } else if (strcmp(cmd, "cont") == 0) {
    reply(c, id, NULL);
    if (!running) {
      running = true;
      emit_event("RESUME", NULL);
    }
  } else if (strcmp(cmd, "balloon") == 0) {
    json_t *v = json_object_get(args, "value");
    if (!json_is_integer(v)) {
      reply_error(c, id, "GenericError", "Parameter 'value' is missing");
      return;
    }
    json_int_t target = json_integer_value(v);
    if (target <= 0) {
      reply_error(c, id, "GenericError", "Parameter 'target' expects a size");
      return;
    }
    balloon_actual = target > ram_bytes ? ram_bytes : target;
    reply(c, id, NULL);
    emit_event("BALLOON_CHANGE", json_pack("{s:I}", "actual", (json_int_t)balloon_actual));
  } else if (strcmp(cmd, "query-balloon") == 0) {
    reply(c, id, json_pack("{s:I}", "actual", (json_int_t)balloon_actual));
  } else if (strcmp(cmd, "qom-set") == 0 || strcmp(cmd, "qom-get") == 0) {
    const char *path = json_string_value(json_object_get(args, "path"));
    const char *prop = json_string_value(json_object_get(args, "property"));
    if (path == NULL || prop == NULL) {
      reply_error(c, id, "GenericError", "Parameter '%s' is missing", path ? "property" : "path");
    } else if (strstr(path, "balloon") == NULL) {
      reply_error(c, id, "DeviceNotFound", "Device '%s' not found", path);
    } else if (strcmp(prop, "guest-stats-polling-interval") == 0) {
      if (cmd[4] == 's') {
        json_t *v = json_object_get(args, "value");
        if (!json_is_integer(v) || json_integer_value(v) < 0) {
          reply_error(c, id, "GenericError", "balloon: invalid value");
          return;
        }
        stats_interval = json_integer_value(v);
        reply(c, id, NULL);
      } else {
        reply(c, id, json_integer(stats_interval));
      }
    } else if (strcmp(prop, "guest-stats") == 0 && cmd[4] == 'g') {
      reply(c, id, guest_stats());
    } else {
      reply_error(c, id, "GenericError", "Property '%s.%s' not found", path, prop);
    }
  } else {
    reply_error(c, id, "CommandNotFound", "The command %s has not been found", cmd);
  }
}

static void qmp_input(Chardev *c)
{
  size_t pos = 0;
  while (c->fd >= 0 && !hung) {
    while (pos < c->in_len && strchr(" \t\r\n", c->in[pos]))
      pos++;
    if (pos >= c->in_len)
      break;
    json_error_t err;
    json_t *req = json_loadb(c->in + pos, c->in_len - pos, JSON_DISABLE_EOF_CHECK, &err);
    if (req == NULL) {
      if (json_error_code(&err) == json_error_premature_end_of_input)
        break; /* wait for the rest */
      reply_error(c, NULL, "GenericError", "JSON parse error, %s", err.text);
      char *nl = memchr(c->in + pos, '\n', c->in_len - pos);
      pos = nl ? (size_t)(nl - c->in) + 1 : c->in_len;
      continue;
    }
    pos += (size_t)err.position;
    if (json_is_object(req))
      handle_command(c, req);
    else
      reply_error(c, NULL, "GenericError", "QMP input must be a JSON object");
    json_decref(req);
  }
  if (c->fd < 0)
    return;
  memmove(c->in, c->in + pos, c->in_len - pos);
  c->in_len -= pos;
}

static void conn_readable(Chardev *c)
{
  char buf[4096];
  ssize_t n = read(c->fd, buf, sizeof(buf));
  if (n < 0 && (errno == EAGAIN || errno == EINTR))
    return;
  if (n <= 0) {
    conn_close(c);
    return;
  }
  if (hung)
    return; /* read (so the peer is not blocked) and never answered */
  if (c->kind == KIND_SERIAL) {
    out_append(c, buf, (size_t)n); /* the console echoes */
  } else if (c->kind == KIND_QMP) {
    if (c->in_len + (size_t)n > c->in_cap) {
      size_t cap = c->in_cap ? c->in_cap : 1024;
      while (cap < c->in_len + (size_t)n)
        cap *= 2;
      if (cap > OUT_MAX) {
        conn_close(c); /* qemu drops a monitor that floods it too */
        return;
      }
      c->in = realloc(c->in, cap);
      if (c->in == NULL)
        die("out of memory");
      c->in_cap = cap;
    }
    memcpy(c->in + c->in_len, buf, (size_t)n);
    c->in_len += (size_t)n;
    qmp_input(c);
  }
}

static void finish(int code, const char *reason)
{
  emit_event("SHUTDOWN",
             json_pack("{s:b,s:s}", "guest", strncmp(reason, "guest-", 6) == 0, "reason", reason));
  /* Deliver what is queued (bounded), then go, as qemu does. */
  int64_t deadline = now_ms() + 1000;
  for (int i = 0; i < n_chardevs; i++) {
    Chardev *c = &chardevs[i];
    while (c->fd >= 0 && c->out_len && now_ms() < deadline) {
      struct pollfd p = {.fd = c->fd, .events = POLLOUT};
      poll(&p, 1, 100);
      out_flush(c);
    }
  }
  if (pidfile)
    unlink(pidfile);
  exit(code);
}

/* A reset, by the host (QMP) or by the guest itself. */
static void reset(bool guest, const char *reason)
{
  emit_event("RESET", json_pack("{s:b,s:s}", "guest", guest, "reason", reason));
  booted_at_ms = now_ms() + boot_ms;
  for (int i = 0; i < n_chardevs; i++)
    if (chardevs[i].kind == KIND_SERIAL && chardevs[i].fd >= 0)
      serial_boot(&chardevs[i]);
}

static void on_signal(int sig)
{
  if (sig == SIGUSR1)
    got_panic = 1;
  else if (sig == SIGUSR2)
    busy = !busy;
  else
    got_signal = sig;
}

static bool fault_applies(void)
{
  const char *only = getenv("FAKE_QEMU_FAULT_GUESTS");
  if (only == NULL || only[0] == '\0')
    return true;
  size_t len = strlen(guest_name);
  for (const char *p = only; (p = strstr(p, guest_name)) != NULL; p++)
    if ((p == only || p[-1] == ',') && (p[len] == ',' || p[len] == '\0'))
      return true;
  return false;
}

static void read_faults(void)
{
  if (!fault_applies())
    return;
  const char *v;
  if ((v = getenv("FAKE_QEMU_FAIL_START")) && atoi(v))
    die("fake start failure (FAKE_QEMU_FAIL_START)");
  if ((v = getenv("FAKE_QEMU_EXIT_MS")) && v[0])
    exit_after_ms = atoll(v);
  if ((v = getenv("FAKE_QEMU_EXIT_CODE")) && v[0])
    exit_code = atoi(v);
  if ((v = getenv("FAKE_QEMU_NO_READY")) && atoi(v))
    no_ready = true;
  if ((v = getenv("FAKE_QEMU_HANG_MS")) && v[0])
    hang_after_ms = atoll(v);
  if ((v = getenv("FAKE_QEMU_REBOOT_MS")) && v[0])
    reboot_after_ms = atoll(v);
  if ((v = getenv("FAKE_QEMU_MONITOR_GONE_MS")) && v[0])
    monitor_gone_after_ms = atoll(v);
  if ((v = getenv("FAKE_QEMU_CHATTER_MS")) && v[0])
    chatter_after_ms = atoll(v);
  if ((v = getenv("FAKE_QEMU_CHATTER_KB")) && v[0])
    chatter_kib = atoll(v);
}

int main(int argc, char **argv)
{
  const char *b = getenv("FAKE_QEMU_BOOT_MS");
  boot_ms = b ? atoll(b) : 0;
  booted_at_ms = now_ms() + boot_ms;

  sigset_t block, orig;
  sigemptyset(&block);
  sigaddset(&block, SIGTERM);
  sigaddset(&block, SIGINT);
  sigaddset(&block, SIGHUP);
  sigaddset(&block, SIGUSR1);
  sigaddset(&block, SIGUSR2);
  sigprocmask(SIG_BLOCK, &block, &orig);
  struct sigaction sa = {.sa_handler = on_signal};
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGHUP, &sa, NULL);
  sigaction(SIGUSR1, &sa, NULL);
  sigaction(SIGUSR2, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);

  for (int i = 1; i + 1 < argc; i++)
    if (strcmp(argv[i], "-name") == 0)
      guest_name = strncmp(argv[i + 1], "guest=", 6) == 0 ? argv[i + 1] + 6 : argv[i + 1];
  read_faults();
  parse_args(argc, argv);
  balloon_actual = ram_bytes;
  if (pidfile) {
    FILE *f = fopen(pidfile, "w");
    if (f == NULL)
      die("cannot create PID file: %s", strerror(errno));
    fprintf(f, "%d\n", (int)getpid());
    fclose(f);
  }

  for (;;) {
    struct pollfd pfds[MAX_CHARDEVS];
    Chardev *owner[MAX_CHARDEVS];
    int n = 0;
    int64_t now = now_ms(), due = -1;

    if (exit_due_ms && exit_due_ms <= now)
      _exit(exit_code); /* a crash: no SHUTDOWN event, the pid file stays */
    if (hang_due_ms && hang_due_ms <= now)
      hung = true;
    if (monitor_gone_due_ms && monitor_gone_due_ms <= now) {
      monitor_gone_due_ms = 0;
      for (int i = 0; i < n_chardevs; i++)
        if (chardevs[i].kind == KIND_QMP) {
          conn_close(&chardevs[i]);
          if (chardevs[i].listen_fd >= 0)
            close(chardevs[i].listen_fd);
          chardevs[i].listen_fd = -1;
        }
    }
    if (got_panic && !hung) {
      /* The kernel's last words, then its reboot (panic=N), at once. */
      static const char panic[] = "[   42.000000] Kernel panic - not syncing: fake (SIGUSR1)\r\n";
      got_panic = 0;
      for (int i = 0; i < n_chardevs; i++)
        if (chardevs[i].kind == KIND_SERIAL)
          out_append(&chardevs[i], panic, sizeof(panic) - 1);
      reboot_due_ms = now;
    }
    if (reboot_due_ms && reboot_due_ms <= now && !hung) {
      reboot_due_ms = 0;
      if (no_reboot)
        finish(0, "guest-reset");
      reset(true, "guest-reset");
    }
    if (reboot_due_ms && (due < 0 || reboot_due_ms < due))
      due = reboot_due_ms;
    if (chatter_due_ms > 0 && chatter_due_ms <= now && !hung) {
      chatter_due_ms = -1; /* once */
      char line[64];
      int len = 0;
      for (int64_t i = 0, done = 0; done < chatter_kib * 1024; i++, done += len) {
        len = snprintf(line, sizeof(line), "chatter %08lld ........................\r\n",
                       (long long)i);
        for (int k = 0; k < n_chardevs; k++)
          if (chardevs[k].kind == KIND_SERIAL)
            out_append(&chardevs[k], line, (size_t)len);
      }
    }
    if (chatter_due_ms > 0 && (due < 0 || chatter_due_ms < due))
      due = chatter_due_ms;
    if (exit_due_ms && (due < 0 || exit_due_ms < due))
      due = exit_due_ms;
    if (hang_due_ms && !hung && (due < 0 || hang_due_ms < due))
      due = hang_due_ms;
    if (monitor_gone_due_ms && (due < 0 || monitor_gone_due_ms < due))
      due = monitor_gone_due_ms;

    for (int i = 0; i < n_chardevs; i++) {
      Chardev *c = &chardevs[i];
      if (c->fd >= 0 && c->ready_due_ms && c->ready_due_ms <= now && !hung) {
        char line[256];
        int len = snprintf(line, sizeof(line), "nervesfleet-ready serial=%s\r\n", serial_string);
        c->ready_due_ms = 0;
        grow_at_ready();
        out_append(c, line, (size_t)len);
      }
      if (c->fd >= 0 && c->ready_due_ms && !hung && (due < 0 || c->ready_due_ms < due))
        due = c->ready_due_ms;
      if (c->fd >= 0) {
        pfds[n] = (struct pollfd){.fd = c->fd, .events = POLLIN | (c->out_len ? POLLOUT : 0)};
        owner[n++] = c;
      } else if (c->listen_fd >= 0) {
        pfds[n] = (struct pollfd){.fd = c->listen_fd, .events = POLLIN};
        owner[n++] = c;
      }
    }
    if (powerdown_due_ms && powerdown_due_ms <= now && !hung)
      finish(0, "guest-shutdown");
    if (powerdown_due_ms && (due < 0 || powerdown_due_ms < due))
      due = powerdown_due_ms;

    struct timespec ts, *tsp = NULL;
    if (due >= 0) {
      int64_t wait = due - now;
      ts.tv_sec = wait / 1000;
      ts.tv_nsec = (wait % 1000) * 1000000;
      tsp = &ts;
    }
    if (busy) {
      ts = (struct timespec){0};
      tsp = &ts;
    }
    int r = ppoll(pfds, (nfds_t)n, tsp, &orig);
    if (got_signal && !hung)
      finish(0, "host-signal");
    if (r < 0) {
      if (errno == EINTR)
        continue;
      die("poll: %s", strerror(errno));
    }
    for (int i = 0; i < n; i++) {
      Chardev *c = owner[i];
      if (pfds[i].revents == 0)
        continue;
      if (pfds[i].fd == c->listen_fd && c->fd < 0) {
        int fd = accept4(c->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0)
          conn_open(c, fd);
        continue;
      }
      if (pfds[i].revents & POLLOUT)
        out_flush(c);
      if (c->fd >= 0 && (pfds[i].revents & (POLLIN | POLLHUP | POLLERR)))
        conn_readable(c);
    }
  }
}
