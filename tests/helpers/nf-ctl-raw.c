/*
 * nf-ctl-raw.c: test helper: `nf-ctl-raw SOCKET LINE` connects to a control
 * socket, sends LINE plus a newline, prints the first line it gets back (of
 * any length) and
 * exits 0; exits 3 when it cannot connect, 4 on EOF without a line. Used by
 * test-control.c to speak to the supervisor as another uid (under setpriv).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int main(int argc, char **argv)
{
  if (argc != 3) {
    fprintf(stderr, "usage: nf-ctl-raw SOCKET LINE\n");
    return 2;
  }
  /* A refused peer is answered and closed at once: our write may hit EPIPE,
   * the answer is still there to read. */
  signal(SIGPIPE, SIG_IGN);
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", argv[1]);
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
    perror("connect");
    return 3;
  }
  dprintf(fd, "%s\n", argv[2]);
  /* A line of any length (a `ps` of thousands of guests is megabytes). */
  size_t cap = 4096, len = 0;
  char *buf = malloc(cap);
  if (buf == NULL)
    return 5;
  for (;;) {
    if (len + 1 >= cap) {
      char *bigger = realloc(buf, cap *= 2);
      if (bigger == NULL)
        return 5;
      buf = bigger;
    }
    ssize_t n = read(fd, buf + len, cap - 1 - len);
    if (n <= 0)
      break;
    char *nl = memchr(buf + len, '\n', (size_t)n);
    len += (size_t)n;
    if (nl)
      break;
  }
  buf[len] = '\0';
  char *nl = strchr(buf, '\n');
  if (!nl) {
    free(buf);
    return 4;
  }
  *nl = '\0';
  fputs(buf, stdout);
  fputc('\n', stdout);
  free(buf);
  close(fd);
  return 0;
}
