/*
 * cmd-mem.h: the control command `mem`: where the fleet's memory goes (the
 * host's total, available and pressure; KSM's state and saving; per guest
 * qemu RSS and PSS, balloon target and actual, what the guest kernel says it
 * has free). Schema in control-protocol.md.
 */
#pragma once
#include "supervisor/control-private.h"

/* Replies at once; reads /proc for every running guest (fresh PSS, so a
 * caller comparing with smaps_rollup sees the same numbers). */
void nf_ctl_cmd_mem(NfCtlClient *c, json_t *id, json_t *args);
