/*
 * verbs.h: the CLI's verb table. Each verb is one function taking the argv
 * that follows it (argv[0] is the verb) and returning the process exit code.
 */
#pragma once
#include <glib.h>

/* Exit codes, documented in README.md. */
enum {
  NF_EXIT_OK = 0,
  NF_EXIT_FAILURE = 1, /* the fleet could not start or run */
  NF_EXIT_USAGE = 2,   /* bad flags or arguments */
};

typedef struct {
  const char *name;
  int (*run)(int argc, char **argv);
  const char *summary;
} NfVerb;

int nf_cmd_run(int argc, char **argv);
int nf_cmd_down(int argc, char **argv);

/* Prints "nervesfleet: <message>" to stderr. */
void nf_cli_error(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
