/*
 * abort-cleanup.h: what a test leaves behind when an assertion aborts it.
 *
 * A failed g_assert aborts the test program before nf_test_tmpdir_cleanup()
 * runs: the supervisors it started (daemons too), their qemu, the fleets'
 * memory cgroups and the temp dir itself would stay on the host, and the
 * next run's leftover checks would trip over them. Every temp dir made by
 * nf_test_tmpdir_new() is registered here until it is cleaned up. On
 * SIGABRT (SIGTRAP for a fatal g_critical), and before a sanitizer's report
 * ends the program (ASan, UBSan: a bad access, a SIGSEGV), a shell is run
 * for each registered dir (_Fork and execve: what a signal handler may
 * do). It sends SIGTERM to every process that names the dir in its command
 * line or runs in it (a supervisor then stops its fleet and removes its
 * cgroups), then SIGKILL to those still running after 5 s; the test reaps
 * its own children; a second shell removes the cgroups named after the dir
 * (in-process fake fleets name theirs so), those of the CLI's fleets whose
 * runtime dirs are in it (a supervisor that crashed leaves them), and the
 * dir. Then the program
 * ends as it would have: the test still fails. A child forked without exec
 * inherits the handler but leaves its parent's dirs alone.
 *
 * A GLib test subprocess (g_test_trap_subprocess) exits instead of
 * aborting on a failed assertion, so its parent gives it a temp dir of its
 * own as TMPDIR (test-net.c): the parent's failure then cleans up both.
 */
#pragma once

/* Registers `dir` (kept as a copy; at most 64 at once, more are not
 * registered and a message says so). */
void nf_test_abort_cleanup_add(const char *dir);
/* Forgets `dir` (its owner cleans it up itself). */
void nf_test_abort_cleanup_remove(const char *dir);
