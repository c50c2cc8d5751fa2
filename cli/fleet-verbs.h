/*
 * fleet-verbs.h: the verbs that talk to a running fleet over its control
 * socket (cmd-ps.c, cmd-guests.c, ...). Same shape as verbs.h: argv starts
 * at the verb, the return value is the exit code (0 ok, 1 failure, 2 usage).
 */
#pragma once

int nf_cmd_ps(int argc, char **argv);
int nf_cmd_start(int argc, char **argv);
int nf_cmd_stop(int argc, char **argv);
int nf_cmd_restart(int argc, char **argv);
int nf_cmd_kill(int argc, char **argv);
int nf_cmd_reflash(int argc, char **argv);
int nf_cmd_scale(int argc, char **argv);
int nf_cmd_balloon(int argc, char **argv);
int nf_cmd_mem(int argc, char **argv); /* cmd-mem.c */
int nf_cmd_logs(int argc, char **argv);
int nf_cmd_console(int argc, char **argv);
int nf_cmd_wait(int argc, char **argv);
int nf_cmd_events(int argc, char **argv);
