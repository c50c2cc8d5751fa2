/*
 * config.c: defaults and teardown of NfFleetConfig, kept in one place so
 * that the CLI, the tests and (later) a config-file reader agree on them.
 */
#include "supervisor/config.h"

void nf_fleet_config_init(NfFleetConfig *config)
{
  *config = (NfFleetConfig){
      .name = g_strdup("default"),
      .memory_mib = NF_DEFAULT_MEMORY_MIB,
      .accel = NF_ACCEL_AUTO,
      .qemu = g_strdup("qemu-system-aarch64"),
      .serial_format = g_strdup(NF_DEFAULT_SERIAL_FORMAT),
      .stop_timeout_ms = NF_DEFAULT_STOP_TIMEOUT_MS,
      .boot_timeout_ms = NF_DEFAULT_BOOT_TIMEOUT_MS,
      .ready_marker = g_strdup(NF_DEFAULT_READY_MARKER),
      .restart = {.mode = NF_RESTART_ON_FAILURE,
                  .backoff_initial_ms = 1000,
                  .backoff_max_ms = 60000,
                  .max_restarts = 5,
                  .window_ms = 60000},
      .health_interval_ms = NF_DEFAULT_HEALTH_INTERVAL_MS,
      .health_timeout_ms = NF_DEFAULT_HEALTH_TIMEOUT_MS,
      .heartbeat_timeout_ms = NF_DEFAULT_HEARTBEAT_TIMEOUT_MS,
      .log_max = NF_DEFAULT_LOG_MAX,
      .adopt = TRUE,
      .balloon_policy = NF_BALLOON_POLICY_GUARD,
      .ready_sched = NF_READY_SCHED_IDLE,
  };
}

void nf_fleet_config_clear(NfFleetConfig *config)
{
  g_free(config->name);
  g_free(config->qemu);
  g_free(config->disk);
  g_free(config->disk_format);
  g_free(config->kernel);
  g_free(config->initrd);
  g_free(config->append);
  g_strfreev(config->qemu_args);
  g_free(config->state_dir);
  g_free(config->runtime_dir);
  g_free(config->serial_format);
  g_free(config->ready_marker);
  g_free(config->mem_proc_dir);
  g_free(config->server);
  *config = (NfFleetConfig){0};
}
