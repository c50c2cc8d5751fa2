/*
 * daemon.h: `run -d`: the supervisor goes to the background, and the
 * command that started it reports whether the fleet came up (errors such as
 * bad flags or a busy fleet name still reach the terminal, with a non-zero
 * status), then returns.
 */
#pragma once
#include <glib.h>

/* Forks into the background (fork, setsid, fork). Returns in the daemon with
 * *report_fd set to a pipe whose other end the original process reads; in
 * the original process it never returns: it waits for the report, prints it
 * and exits (0 after "ok", 1 otherwise). */
void nf_daemon_start(int *report_fd);

/* In the daemon: the fleet is up. Sends the terminal line and redirects
 * stdio to `log_path` (stdin from /dev/null). */
void nf_daemon_report_ok(int report_fd, const char *message, const char *log_path);

/* In the daemon: starting failed; the original process prints `message`. */
void nf_daemon_report_error(int report_fd, const char *message);
