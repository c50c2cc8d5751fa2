/*
 * daemon.c: backgrounding for `run -d` (see daemon.h). The report travels
 * over a pipe as one line: "ok <text>" or "error <text>". The original
 * process exits with the daemon's verdict, so scripts can rely on `run -d`'s
 * status.
 */
#include "cli/daemon.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void write_all(int fd, const char *s);

static void write_all(int fd, const char *s)
{
  gsize len = strlen(s);
  while (len > 0) {
    ssize_t n = write(fd, s, len);
    if (n <= 0)
      return;
    s += n;
    len -= (gsize)n;
  }
}

void nf_daemon_start(int *report_fd)
{
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) {
    perror("nervesfleet: pipe");
    exit(1);
  }
  fflush(NULL);
  pid_t pid = fork();
  if (pid < 0) {
    perror("nervesfleet: fork");
    exit(1);
  }
  if (pid == 0) {
    close(p[0]);
    setsid();
    /* Not a session leader: the daemon can never acquire a terminal. */
    pid_t again = fork();
    if (again < 0)
      _exit(1);
    if (again > 0)
      _exit(0);
    *report_fd = p[1];
    return;
  }
  close(p[1]);
  int status;
  waitpid(pid, &status, 0);
  GString *msg = g_string_new(NULL);
  char buf[512];
  ssize_t n;
  while ((n = read(p[0], buf, sizeof(buf))) > 0)
    g_string_append_len(msg, buf, n);
  close(p[0]);
  g_strchomp(msg->str);
  if (g_str_has_prefix(msg->str, "ok ")) {
    printf("%s\n", msg->str + 3);
    exit(0);
  }
  fprintf(stderr, "nervesfleet: %s\n",
          g_str_has_prefix(msg->str, "error ") ? msg->str + 6
                                               : "run -d: the supervisor died while starting");
  exit(1);
}

void nf_daemon_report_ok(int report_fd, const char *message, const char *log_path)
{
  fflush(NULL);
  int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
  int log = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (devnull >= 0) {
    dup2(devnull, STDIN_FILENO);
    close(devnull);
  }
  if (log >= 0) {
    dup2(log, STDOUT_FILENO);
    dup2(log, STDERR_FILENO);
    close(log);
  }
  g_autofree char *line = g_strdup_printf("ok %s\n", message);
  write_all(report_fd, line);
  close(report_fd);
}

void nf_daemon_report_error(int report_fd, const char *message)
{
  g_autofree char *line = g_strdup_printf("error %s\n", message);
  write_all(report_fd, line);
  close(report_fd);
}
