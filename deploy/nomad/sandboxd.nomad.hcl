# sandboxd and sandbox-gateway on every Nomad client that is prepared for it
# (meta.sandboxd = "true"; see "Many hosts" in README.md): a system job, one
# allocation per node. The gateway registers as the Consul service
# "sandbox-gateway" with an HTTP check of /health, so Consul's DNS answers
# SRV for sandbox-gateway.service.consul, which sandbox-router reads.
#
# sandboxd needs root at start (it drops to the capabilities it lists in its
# log), /dev/kvm for KVM, and a delegated cgroup v2 subtree for per-VM
# limits: raw_exec gives it the host as the systemd unit does. Each QEMU is
# confined by the daemon itself (its own user, seccomp, namespaces, cgroup).
job "sandboxd" {
  type        = "system"
  datacenters = ["dc1"]

  constraint {
    attribute = "${attr.kernel.name}"
    value     = "linux"
  }

  # Only nodes the operator prepared (packages, images, the qemu-vm user).
  constraint {
    attribute = "${meta.sandboxd}"
    value     = "true"
  }

  # A rollout replaces one node at a time and waits for its gateway to be
  # healthy; the kill timeout lets a draining daemon finish its sessions.
  update {
    max_parallel     = 1
    min_healthy_time = "10s"
    healthy_deadline = "5m"
  }

  group "node" {
    network {
      port "http" {
        static = 8000
      }
    }

    service {
      name     = "sandbox-gateway"
      provider = "consul"
      port     = "http"
      tags     = ["sandboxd"]

      check {
        name     = "ready"
        type     = "http"
        path     = "/health"
        interval = "5s"
        timeout  = "2s"
      }
    }

    task "sandboxd" {
      driver = "raw_exec"

      config {
        command = "/usr/bin/sandboxd"
        args    = ["--config", "/etc/sandboxd/sandboxd.conf"]
      }

      # sandboxd drains on SIGTERM: running runs get shutdown_grace_ms.
      kill_signal  = "SIGTERM"
      kill_timeout = "60s"

      resources {
        cpu    = 500
        memory = 256
      }
    }

    task "gateway" {
      driver = "raw_exec"
      # Unprivileged, in the group that may reach the daemon's socket.
      user = "sandbox-gateway"

      lifecycle {
        hook    = "poststart"
        sidecar = true
      }

      config {
        command = "/usr/bin/sandbox-gateway"
        args = [
          "--listen", "${NOMAD_ADDR_http}",
          "--tokens", "${NOMAD_SECRETS_DIR}/gateway.tokens",
          "--socket", "/run/sandboxd/sandboxd.sock",
          "--base-url", "http://${NOMAD_ADDR_http}",
        ]
      }

      # The same token file on every node: the router passes callers'
      # tokens through and each node checks them.
      template {
        data        = "{{ with nomadVar \"nomad/jobs/sandboxd\" }}{{ .tokens }}{{ end }}"
        destination = "secrets/gateway.tokens"
        perms       = "600"
        change_mode = "restart"
      }

      resources {
        cpu    = 200
        memory = 256
      }
    }
  }
}
