# Nomad: one allocation per host (distinct_hosts), each running one shard;
# the shard index is the allocation index (NOMAD_ALLOC_INDEX, 0..count-1).
# raw_exec because qemu needs /dev/kvm and the host's cgroups as they are;
# enable it on the clients (plugin "raw_exec" { config { enabled = true } }).
# Not validated here: Nomad is not packaged in Debian 12, so `nomad job
# validate` could not run; the file follows the Nomad 1.x job specification.
job "nervesfleet" {
  datacenters = ["dc1"]
  type        = "service"

  group "shard" {
    count = 4

    constraint {
      operator = "distinct_hosts"
      value    = "true"
    }

    network {
      port "http" {
        static = 9100
      }
    }

    task "supervisor" {
      driver = "raw_exec"

      config {
        command = "/usr/local/bin/nervesfleet"
        args = [
          "run", "200",
          "--shard", "${NOMAD_ALLOC_INDEX}/4",
          "--shard-size", "250",
          "--restart", "always",
          "--http", "0.0.0.0:9100",
          "--http-token", "${NOMAD_SECRETS_DIR}/token",
        ]
      }

      template {
        destination = "secrets/token"
        data        = "{{ with nomadVar \"nomad/jobs/nervesfleet\" }}{{ .token }}{{ end }}"
      }

      # The supervisor stops its guests in order on SIGTERM (stop-timeout 10 s).
      kill_signal  = "SIGTERM"
      kill_timeout = "60s"

      resources {
        cpu    = 16000
        memory = 30000 # MiB: ~140 MiB per guest today, plus headroom
      }

      service {
        name     = "nervesfleet"
        port     = "http"
        provider = "nomad"
        tags     = ["metrics"]
      }
    }
  }
}
