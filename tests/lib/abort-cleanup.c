/*
 * abort-cleanup.c: a test's temp dirs, processes and cgroups removed when an
 * assertion aborts it (see abort-cleanup.h for why and what).
 */
#include "tests/lib/abort-cleanup.h"

#include <errno.h>
#include <glib.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#endif

#define MAX_DIRS 64

/* Run per registered dir with the dir in NF_ABORT_DIR, first as `stop`,
 * then, once the test has reaped its children, as `remove`. A process of
 * the test names the dir in its command line (qemu's sockets, --state-dir)
 * or has XDG_RUNTIME_DIR in it (a supervisor started by nf_test_proc_spawn:
 * `run 1 -d` names nothing else). A zombie is a child of the aborting test
 * that has already exited: not waited for, but it keeps its cgroup until
 * reaped, hence the two steps. SIGKILL goes only to a pid that still runs
 * and still matches: one that went away after SIGTERM may have been reused
 * by a process of someone else. */
static const char script[] =
    "d=$NF_ABORT_DIR\n"
    "if [ \"$1\" = remove ]; then\n"
    "  for c in $(find /sys/fs/cgroup -type d -name \"*${d##*/}*\" -prune 2>/dev/null); do\n"
    "    find \"$c\" -depth -type d -exec rmdir {} + 2>/dev/null\n"
    "  done\n"
    /* A CLI fleet's cgroups are nervesfleet-NAME-HASH, HASH its runtime
     * dir's g_str_hash (nf_paths_cgroup_name): a supervisor that crashed
     * left that dir, and its cgroups, which name nothing of ours. The hash
     * adds bytes as signed chars, as g_str_hash does (od -td1). */
    "  for r in \"$d\"/run/nervesfleet/*; do\n"
    "    [ -d \"$r\" ] || continue\n"
    "    h=$(printf %s \"$r\" | od -An -v -td1 | awk 'BEGIN { h = 5381 }\n"
    "      { for (i = 1; i <= NF; i++) { h = (h * 33 + $i) % 4294967296\n"
    "        if (h < 0) h += 4294967296 } }\n"
    "      END { printf \"%08x\", h }')\n"
    "    for c in $(find /sys/fs/cgroup -type d -name \"nervesfleet-${r##*/}-$h\" -prune \\\n"
    "        2>/dev/null); do\n"
    "      find \"$c\" -depth -type d -exec rmdir {} + 2>/dev/null\n"
    "    done\n"
    "  done\n"
    "  rm -rf \"$d\"\n"
    "  echo \"# aborted: removed $d\"\n"
    "  exit 0\n"
    "fi\n"
    "ours() {\n"
    "  c=$(tr '\\0' '\\n' 2>/dev/null < \"/proc/$1/cmdline\")\n"
    "  case $c in *\"$d\"*) return 0;; esac\n"
    "  e=$(tr '\\0' '\\n' 2>/dev/null < \"/proc/$1/environ\")\n"
    "  case $e in *\"XDG_RUNTIME_DIR=$d/\"*) return 0;; esac\n"
    "  return 1\n"
    "}\n"
    "running() {\n"
    "  s=$(sed -n 's/^State:[[:space:]]*\\(.\\).*/\\1/p' /proc/$1/status 2>/dev/null)\n"
    "  [ -n \"$s\" ] && [ \"$s\" != Z ]\n"
    "}\n"
    "still() {\n"
    "  left=\n"
    "  for p in $pids; do running $p && ours $p && left=\"$left $p\"; done\n"
    "  [ -n \"$left\" ]\n"
    "}\n"
    "pids=\n"
    "for p in /proc/[0-9]*; do\n"
    "  p=${p#/proc/}\n"
    "  case $p in $$|$PPID) continue;; esac\n"
    "  ours $p && pids=\"$pids $p\"\n"
    "done\n"
    "[ -n \"$pids\" ] || exit 0\n"
    "echo \"# aborted: stopping what the test left running in $d:$pids\"\n"
    "kill -TERM $pids 2>/dev/null\n"
    "i=0\n"
    "while [ $i -lt 50 ] && still; do sleep 0.1; i=$((i + 1)); done\n"
    "still || exit 0\n"
    "echo \"# aborted: killing what did not stop:$left\"\n"
    "kill -KILL $left 2>/dev/null\n"
    "i=0\n"
    "while [ $i -lt 50 ] && still; do sleep 0.1; i=$((i + 1)); done\n";

/* NF_ABORT_DIR=<dir> per slot, made when the dir is registered: the handler
 * only forks and execs. */
static char *envs[MAX_DIRS];
static gboolean installed;

static pid_t owner; /* the process that registered the dirs */

static void run_script(const char *step)
{
  for (guint i = 0; i < MAX_DIRS; i++) {
    if (envs[i] == NULL)
      continue;
    /* _Fork: no atfork handlers or malloc locks, which an abort from inside
     * malloc could hold; the child only execs. */
    pid_t pid = _Fork();
    if (pid == 0) {
      char *const argv[] = {"sh", "-c", (char *)script, "sh", (char *)step, NULL};
      char *const env[] = {envs[i], "PATH=/usr/sbin:/usr/bin:/sbin:/bin", NULL};
      /* stdout is the TAP stream: comments only, and to stderr anyway. */
      dup2(STDERR_FILENO, STDOUT_FILENO);
      execve("/bin/sh", argv, env);
      _exit(127);
    }
    if (pid > 0)
      while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
        ;
  }
}

static void clean_up(void)
{
  static volatile sig_atomic_t ran;
  /* A child forked without exec has our table too: the dirs are not its. */
  if (ran || getpid() != owner)
    return;
  ran = 1;
  run_script("stop");
  while (waitpid(-1, NULL, WNOHANG) > 0)
    ; /* the test's own qemu, stopped: they leave their cgroups */
  run_script("remove");
}

/* A failed g_assert ends in abort() (SIGABRT); a fatal g_critical
 * (G_DEBUG=fatal-criticals) or g_error in a breakpoint (SIGTRAP). While
 * one thread cleans up, another may fail too (GLib's worker thread warns,
 * fatally in a test, when the clean-up reaped a child it watched): it
 * waits, so that the clean-up runs to its end and the process dies of the
 * first failure's signal. */
static void first_failure_only(void)
{
  static pid_t first; /* the thread cleaning up */
  pid_t me = gettid(), none = 0;
  if (!__atomic_compare_exchange_n(&first, &none, me, FALSE, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST) &&
      none != me)
    for (;;)
      pause();
}

static void on_abort(int sig)
{
  first_failure_only();
  clean_up();
  signal(sig, SIG_DFL);
  raise(sig); /* a breakpoint would carry on after the trap otherwise */
}

#if defined(__SANITIZE_ADDRESS__)
/* An ASan or UBSan report (a bad access, a SIGSEGV, undefined behaviour)
 * ends in the sanitizer's _exit, not in a signal: it calls this first. */
static void on_sanitizer_death(void)
{
  first_failure_only();
  clean_up();
}
#endif

void nf_test_abort_cleanup_add(const char *dir)
{
  if (!installed) {
    owner = getpid();
    struct sigaction sa = {.sa_handler = on_abort};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGABRT, &sa, NULL);
    sigaction(SIGTRAP, &sa, NULL);
#if defined(__SANITIZE_ADDRESS__)
    __sanitizer_set_death_callback(on_sanitizer_death);
#endif
    installed = TRUE;
  }
  for (guint i = 0; i < MAX_DIRS; i++)
    if (envs[i] == NULL) {
      envs[i] = g_strconcat("NF_ABORT_DIR=", dir, NULL);
      return;
    }
  g_test_message("more than %d temp dirs: %s is not removed if the test aborts", MAX_DIRS, dir);
}

void nf_test_abort_cleanup_remove(const char *dir)
{
  for (guint i = 0; i < MAX_DIRS; i++)
    if (envs[i] && strcmp(envs[i] + strlen("NF_ABORT_DIR="), dir) == 0) {
      char *e = envs[i];
      envs[i] = NULL;
      g_free(e);
      return;
    }
}
