/*
 * ps-summary.h: the one-line fleet summary `nervesfleet ps` prints under
 * its table, from the `ps` document (control-protocol.md).
 */
#pragma once
#include <glib.h>
#include <jansson.h>

/* "3 guests: 1 ready, 1 booting, 1 queued, 0 stopped, 0 failed": ready,
 * booting, stopped and failed always; queued, unhealthy, stopping and
 * backoff ("waiting to restart") only when some guest is in them, so the
 * line adds up to the count; "1 guest" for one. New string. */
char *nf_ps_summary(json_t *ps);
