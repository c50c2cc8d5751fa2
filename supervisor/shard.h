/*
 * shard.h: one big fleet spread over several supervisors (hosts, CI
 * runners, pods), each with its own disjoint slice of device identities.
 *
 * `--shard I/N` (I counts from 0, like a StatefulSet ordinal or a Nomad
 * allocation index) with `--shard-size K` (default: the guest count) gives
 * shard I the ids id_offset + I*K + 1 ... id_offset + (I+1)*K, so serial
 * numbers, MACs and names never collide across shards without any
 * coordination; without --name the fleet is called shard-I. Scaling a shard
 * beyond K guests would run into the next shard's ids (not enforced by
 * `scale`: size the shards for growth).
 *
 * On one host the shards' ranges are also checked against each other: each
 * running fleet leaves an `ids` file in its runtime dir, and a fleet whose
 * range overlaps another live fleet's (same serial format, either sharded)
 * is refused before any guest starts.
 */
#pragma once
#include <glib.h>
#include "supervisor/config.h"

#define NF_SHARD_ERROR (nf_shard_error_quark())
GQuark nf_shard_error_quark(void);
typedef enum {
  NF_SHARD_ERROR_OVERLAP, /* another live fleet on this host has some of our ids */
  NF_SHARD_ERROR_IO,      /* our ids file cannot be written */
} NfShardError;

/* Parses "I/N" (0 <= I < N <= 100000) into *index and *count. FALSE with a
 * G_OPTION_ERROR naming --shard and an example otherwise. */
gboolean nf_shard_parse(const char *text, guint *index, guint *count, GError **error);

/* Applies cfg's shard fields (no-op when shard_count is 0): checks that
 * count fits the shard size, moves id_offset to the shard's slice and names
 * the fleet shard-I unless `name_given`. FALSE with a G_OPTION_ERROR. */
gboolean nf_shard_apply(NfFleetConfig *cfg, gboolean name_given, GError **error);

/* The last id a fleet may use: its shard's end, or id_offset + count. */
guint nf_shard_last_id(const NfFleetConfig *cfg);

typedef struct NfShardClaim NfShardClaim;

/* Records the fleet's id range in <runtime_dir>/ids, then compares it with
 * every other fleet's under the same parent dir whose supervisor still holds
 * its fleet.lock. NULL with NF_SHARD_ERROR_OVERLAP naming the other fleet
 * and both ranges (our file is removed again), or NF_SHARD_ERROR_IO. Call
 * once the fleet holds its lock (after nf_fleet_new). */
NfShardClaim *nf_shard_claim(const NfFleetConfig *cfg, const char *runtime_dir, GError **error);

/* Removes the ids file and frees; before the runtime dir is removed
 * (nf_fleet_free). NULL is a no-op. */
void nf_shard_claim_release(NfShardClaim *claim);
