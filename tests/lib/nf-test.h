/*
 * nf-test.h: helpers shared by the test programs (temp dirs, waiting on
 * events with deadlines, leftover checks, the guest's files).
 *
 * Every test that starts processes runs inside its own temp dir made by
 * nf_test_tmpdir_new(), and every process it starts carries that dir in its
 * command line (a socket path, a -pidfile, a --state-dir...). That is how
 * nf_test_tmpdir_cleanup() proves that nothing of the test is left running,
 * without touching other tests that run in parallel.
 */
#pragma once
#include <glib.h>

/* A new empty directory $TMPDIR/nf-test-XXXXXX (short, so unix socket paths
 * inside it fit). Never NULL; aborts the test on failure. Until
 * nf_test_tmpdir_cleanup(), a failed assertion removes it and stops what
 * the test left running in it (abort-cleanup.h). */
char *nf_test_tmpdir_new(void);

/* Asserts that no process has `dir` in its command line (any found are
 * SIGKILLed first so the run is left clean, then the test fails), then removes
 * `dir` recursively. */
void nf_test_tmpdir_cleanup(const char *dir);

/* Memory cgroups (the fleet's parent; v1) of fleet `name` run from `tmp`
 * by the CLI helpers; 0 when there is no v1 memory cgroup to look in. */
guint nf_test_cgroups_of(const char *tmp, const char *name);
/* Memory cgroups below ours with `dir`'s last component in their names (an
 * in-process fake fleet names its cgroup after its temp dir). */
guint nf_test_cgroups_naming(const char *dir);

/* KSM's files stood in for (NERVESFLEET_KSM_SYSFS) in `sysfs`, made if need
 * be, as a host with KSM off: run 0, pages_to_scan 100, sleep_millisecs 200,
 * use_zero_pages 0, pages_sharing 0. nf_test_ksm_knob reads one back. */
void nf_test_ksm_standin(const char *sysfs);
char *nf_test_ksm_knob(const char *sysfs, const char *name);

/* How many file descriptors this process has open now (/proc/self/fd). */
guint nf_test_count_open_fds(void);
/* The same for another process of ours (/proc/PID/fd). */
guint nf_test_count_open_fds_of(GPid pid);

/* Lists pids whose /proc/PID/cmdline contains `needle` (excluding ourselves). */
GArray *nf_test_pids_matching(const char *needle);

/* Iterates the thread-default main context until `done` returns TRUE or
 * `timeout_ms` passes; returns the last value of `done`. No sleeps. */
gboolean nf_test_wait_for(gboolean (*done)(gpointer data), gpointer data, guint timeout_ms);
/* The same for a condition no event of ours announces (a socket's state in
 * /proc/net/unix): `done` is also looked at every `every_ms`. */
gboolean nf_test_wait_polled(gboolean (*done)(gpointer data), gpointer data, guint every_ms,
                             guint timeout_ms);

/* Paths of the default guest's kernel and initramfs (from NF_GUEST_DIR).
 * The test fails with a clear message if they are missing. */
char *nf_test_guest_kernel(void);
char *nf_test_guest_initrd(void);

/* The nervesfleet binary under test (NF_BIN). */
const char *nf_test_bin(void);

/* A nervesfleet process under test. Its environment points XDG_RUNTIME_DIR,
 * XDG_STATE_HOME and XDG_CACHE_HOME into `tmpdir` (so everything it makes
 * lives there) and NERVESFLEET_GUEST_DIR at the built guest. stdout and
 * stderr are collected (merged) as they arrive. */
typedef struct NfTestProc NfTestProc;
NfTestProc *nf_test_proc_spawn(const char *tmpdir, const char *const *args);
/* Waits until the output contains `needle`; FALSE on timeout or exit first. */
gboolean nf_test_proc_wait_output(NfTestProc *p, const char *needle, guint timeout_ms);
/* The same until `needle` was printed at least `times` times. */
gboolean nf_test_proc_wait_count(NfTestProc *p, const char *needle, guint times, guint timeout_ms);
/* Waits for exit; returns the exit status (128+signal when killed), or -1 on timeout. */
int nf_test_proc_wait_exit(NfTestProc *p, guint timeout_ms);
const char *nf_test_proc_output(NfTestProc *p);
/* Sends `sig` now (not through GLib's worker thread), unless it exited. */
void nf_test_proc_signal(NfTestProc *p, int sig);
/* For nf_test_wait_polled (no event of ours says it): the process
 * GINT_TO_POINTER(pid) is stopped (T). */
gboolean nf_test_pid_stopped(gpointer pid);
GPid nf_test_proc_pid(NfTestProc *p);
/* Kills it if still running and frees. */
void nf_test_proc_free(NfTestProc *p);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(NfTestProc, nf_test_proc_free)

/* Runs nervesfleet to completion (timeout_ms); returns the exit status and
 * the merged output in *output. */
int nf_test_run_cli(const char *tmpdir, const char *const *args, guint timeout_ms, char **output);

/* Waits (on pidfds, no polling) until every pid in `pids` has exited. */
gboolean nf_test_wait_pids_gone(GArray *pids, guint timeout_ms);
/* The pid of fleet `name`'s supervisor (under nf_test_proc_spawn's dirs in
 * `tmp`), as its fleet.lock holds it; the test fails without one. */
GPid nf_test_supervisor_pid(const char *tmp, const char *name);
/* SIGKILLs that supervisor (as a crash would) and waits until it is gone;
 * detached guests run on. */
void nf_test_kill_supervisor(const char *tmp, const char *name, guint timeout_ms);

/* Whether `path` exists (a predicate for nf_test_wait_for/_polled), and
 * whether the file at `path` contains `needle` now. */
gboolean nf_test_path_exists(gpointer path);
gboolean nf_test_file_contains(const char *path, const char *needle);
/* Waits (on inotify via GFileMonitor) until the file at `path` exists and
 * contains `needle`. */
gboolean nf_test_wait_file_contains(const char *path, const char *needle, guint timeout_ms);

/* Runs `cmd` with /bin/sh; the test fails (with its stderr) if it does. */
void nf_test_sh(const char *cmd);
/* Hex SHA-256 of a file's contents. */
char *nf_test_sha256_file(const char *path);
/* A 16 MiB ext4 image at <dir>/data.img (a base for --disk). */
char *nf_test_make_ext4_base(const char *dir);
/* A 4 MiB raw "Nerves firmware" disk at <dir>/firmware.img: a U-Boot env
 * (mkenvimage, 128 KiB) at byte 0x2000 with slot a active, version 1.0.0,
 * validated, and a placeholder nerves_serial_number. */
char *nf_test_make_firmware_disk(const char *dir);
