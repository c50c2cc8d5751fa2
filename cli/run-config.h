/*
 * run-config.h: fleet files, `nervesfleet run --config FILE`. A fleet file
 * is a GKeyFile with one [fleet] group whose keys are run's long options
 * without the dashes (memory=256M, restart=always, forward=22;80,
 * ksm=true). There is no second list of settings: each key is looked up in
 * run's own GOptionEntry tables and turned into that option, placed before
 * the command line's, which therefore wins. The systemd unit runs
 * `run --config /etc/nervesfleet/%i.conf`.
 */
#pragma once
#include <glib.h>
#include "cli/run-options.h"

/* Returns a new argv (NULL-terminated, owned; g_strfreev) and its length in
 * *argc_out: argv[0], then the options of the file named by --config FILE
 * (or --config=FILE) if there is one, then argv[1..] without --config. A
 * string-array key (qemu-arg, forward) given on the command line is taken
 * from there only. `tables` is a NULL-terminated list of entry arrays.
 * Errors (NULL): the file cannot be read or parsed, a group other than
 * [fleet], a key that is no option of run (naming the key and the file), a
 * key that a file cannot set (config, exec, print-config), a bad boolean. */
char **nf_run_config_expand(int argc, char **argv, const GOptionEntry *const *tables, int *argc_out,
                            GError **error);

/* The effective configuration after flags and file, as a JSON document
 * (owned, one line): what `run --print-config` prints, so a fleet file and
 * the equivalent flags can be compared. `http` is the checked listen
 * address (ADDR:PORT) or NULL; the token itself is never printed. */
char *nf_run_config_to_json(const NfFleetConfig *cfg, const NfRunMode *mode, const char *http);
