/*
 * targets.h: which guests a command is about. A TARGET is a guest id ("3"),
 * a range ("3-17"), a comma list of those ("1,4,7-9"), or "all". Parsed into
 * a few ranges (never expanded, so "1-100000" costs nothing), checked against
 * a fleet's ids when resolved. Pure: shared by the CLI (to reject a bad
 * TARGET with a usage error before connecting) and the control server.
 */
#pragma once
#include <glib.h>

#define NF_TARGETS_ERROR (nf_targets_error_quark())
GQuark nf_targets_error_quark(void);
typedef enum {
  NF_TARGETS_ERROR_SYNTAX,  /* not an id, range, list or "all" */
  NF_TARGETS_ERROR_MISSING, /* names ids the fleet does not have */
} NfTargetsError;

/* Largest id a TARGET may name (ids are 1-based). */
#define NF_TARGETS_MAX_ID 10000000u

typedef struct NfTargets NfTargets;

/* Parses `text`. NULL with NF_TARGETS_ERROR_SYNTAX (quoting the text and an
 * example) when it is empty, has a zero, a reversed range, junk, or more than
 * 1024 items. Ids may be written as "3" or "vm-0003". */
NfTargets *nf_targets_parse(const char *text, GError **error);
void nf_targets_free(NfTargets *targets);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(NfTargets, nf_targets_free)

gboolean nf_targets_is_all(const NfTargets *targets);
gboolean nf_targets_contains(const NfTargets *targets, guint id);

/* Checks that every id named explicitly is in `present` (ids the fleet has,
 * any order; `n` of them): FALSE with NF_TARGETS_ERROR_MISSING naming up to a
 * few absent ids otherwise. "all" always passes. */
gboolean nf_targets_check(const NfTargets *targets, const guint *present, gsize n, GError **error);

/* The normalised text ("1,4,7-9", "all"). */
char *nf_targets_to_string(const NfTargets *targets);
