# hello-service: the reference blue/green job for zerodown.
#
# Two groups run the two versions side by side. Both register the same Consul service,
# `hello-service`; zerodown watches it and routes to the instances tagged `active`,
# keeping those tagged `standby` ready. Switching versions means swapping `active` and
# `standby` in the two `tags` lists (or flipping zerodown's KV key instead).
#
# Why the tags live in service `tags` and nowhere else:
#   - a change to service tags or meta is applied IN PLACE: Nomad re-registers the same
#     Consul service IDs with the new tags, one instance at a time, and restarts nothing;
#   - a change to job, group or task `meta` feeds every task's environment
#     (NOMAD_META_*) and RESTARTS all tasks (a destructive update).
# Always `nomad job plan` first: a tag flip must show no "create/destroy update".
#
# The test double's helper `reference_job(image_blue, image_green, version_blue,
# version_green)` in crates/testkit/src/nomad/ builds the JSON of this job.

job "hello-service" {
  datacenters = ["dc1"]
  type        = "service"

  # Rolling updates for image changes, one instance at a time, judged by the Consul
  # checks below. A failed deployment reverts the whole job (tags included) to the last
  # stable version. Each group inherits this block.
  update {
    max_parallel      = 1
    health_check      = "checks"
    min_healthy_time  = "10s"
    healthy_deadline  = "2m"
    progress_deadline = "5m"
    auto_revert       = true
    canary            = 0
  }

  group "blue" {
    count = 2

    # On stop, Nomad deregisters the group's services from Consul first, then waits
    # this long before killing the task, so zerodown drops the instance while it still
    # answers.
    shutdown_delay = "5s"

    network {
      port "http" {
        to = 8080
      }
    }

    service {
      name     = "hello-service"
      port     = "http"
      provider = "consul"

      # Role first, then the version this group runs.
      tags = ["active", "v1"]

      meta {
        version = "v1"
      }

      check {
        type     = "http"
        path     = "/hello"
        interval = "5s"
        timeout  = "2s"
      }
    }

    task "hello" {
      driver = "docker"

      config {
        image = "ghcr.io/example/hello-service:v1"
        ports = ["http"]
      }

      # Time for in-flight requests to finish after SIGTERM.
      kill_timeout = "10s"

      resources {
        cpu    = 100
        memory = 64
      }
    }
  }

  group "green" {
    count = 2

    shutdown_delay = "5s"

    network {
      port "http" {
        to = 8080
      }
    }

    service {
      name     = "hello-service"
      port     = "http"
      provider = "consul"

      tags = ["standby", "v2"]

      meta {
        version = "v2"
      }

      check {
        type     = "http"
        path     = "/hello"
        interval = "5s"
        timeout  = "2s"
      }
    }

    task "hello" {
      driver = "docker"

      config {
        image = "ghcr.io/example/hello-service:v2"
        ports = ["http"]
      }

      kill_timeout = "10s"

      resources {
        cpu    = 100
        memory = 64
      }
    }
  }
}
