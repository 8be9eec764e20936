# The gateway pods: Pod Security "restricted", read-only root filesystem, no
# capabilities, no Kubernetes API access.

resource "kubernetes_service_account_v1" "gateway" {
  metadata {
    name      = var.name
    namespace = local.namespace
    labels    = local.common_labels
  }

  # promgate never talks to the Kubernetes API.
  automount_service_account_token = false
}

resource "kubernetes_deployment_v1" "gateway" {
  # The image is var.image, which checkov cannot see through:
  #checkov:skip=CKV_K8S_14:var.image has a validation that rejects a missing tag and :latest.
  #checkov:skip=CKV_K8S_43:A digest is recommended (README) but not required: images built into minikube have no registry digest.
  #checkov:skip=CKV_K8S_15:Pull policy is var.image_pull_policy; Never is needed for minikube-loaded images and a digest-pinned image is as safe with IfNotPresent.
  metadata {
    name      = var.name
    namespace = local.namespace
    labels    = local.common_labels
  }

  spec {
    replicas = var.replicas

    selector {
      match_labels = local.selector_labels
    }

    strategy {
      type = "RollingUpdate"
      rolling_update {
        # Start the new pod before stopping the old one: with one replica a
        # rollout then costs clients one re-handshake, not an outage.
        max_surge       = "1"
        max_unavailable = "0"
      }
    }

    template {
      metadata {
        labels = local.common_labels
        annotations = {
          # Roll the pods when promgate.toml or the key changes. The peers
          # ConfigMap is left out on purpose: peers are hot-reloaded.
          "checksum/config" = sha256(local.gateway_config)
          "checksum/key"    = sha256(wireguard_asymmetric_key.gateway.public_key)
        }
      }

      spec {
        service_account_name            = kubernetes_service_account_v1.gateway.metadata[0].name
        automount_service_account_token = false
        enable_service_links            = false
        # preStop sleep (at most 30 s) + the gateway's 10 s drain, with room.
        termination_grace_period_seconds = 45
        node_selector                    = var.node_selector

        # Two replicas never share a node (with DoNotSchedule), so a node
        # drain or failure takes at most one gateway.
        topology_spread_constraint {
          max_skew           = 1
          topology_key       = "kubernetes.io/hostname"
          when_unsatisfiable = var.topology_spread_when_unsatisfiable
          label_selector {
            match_labels = local.selector_labels
          }
        }

        security_context {
          run_as_non_root = true
          run_as_user     = 65532
          run_as_group    = 65532
          # The key Secret is mounted 0440: fs_group makes it readable by the
          # gateway's group without making it world-readable.
          fs_group = 65532
          seccomp_profile {
            type = "RuntimeDefault"
          }
        }

        container {
          name              = "promgate"
          image             = var.image
          image_pull_policy = var.image_pull_policy
          # The image's entrypoint runs `promgate serve --config <config_file>`.

          # No container port is declared, not even the admin port. The
          # team's Prometheus job (endpoints discovery, no filter) turns every
          # declared container port that a Service does not cover into a
          # target of that Service: a declared 9586 would be scraped a second
          # time under the tunnel Service (doubling every process_* series),
          # a declared UDP port would be an always-DOWN target. The Services,
          # the probes and the NetworkPolicy all use port numbers instead.

          dynamic "env" {
            for_each = var.extra_env
            content {
              name  = env.key
              value = env.value
            }
          }

          resources {
            requests = var.resources.requests
            limits   = var.resources.limits
          }

          # Keep serving while the load balancer deregisters this pod; only
          # then does SIGTERM start the gateway's drain. The image has no
          # shell: sleep is a single binary copied in for this. (Kubernetes'
          # native preStop sleep action has no schema in the provider yet.)
          lifecycle {
            pre_stop {
              exec {
                command = ["/usr/local/bin/sleep", tostring(var.pre_stop_sleep_seconds)]
              }
            }
          }

          liveness_probe {
            http_get {
              path = "/healthz"
              port = tostring(var.admin_port)
            }
            initial_delay_seconds = 5
            period_seconds        = 10
            timeout_seconds       = 2
            failure_threshold     = 3
          }

          readiness_probe {
            http_get {
              path = "/readyz"
              port = tostring(var.admin_port)
            }
            period_seconds    = 5
            timeout_seconds   = 2
            failure_threshold = 2
          }

          security_context {
            allow_privilege_escalation = false
            privileged                 = false
            read_only_root_filesystem  = true
            run_as_non_root            = true
            run_as_user                = 65532
            run_as_group               = 65532
            capabilities {
              drop = ["ALL"]
            }
            seccomp_profile {
              type = "RuntimeDefault"
            }
          }

          # promgate.toml as a single file (subPath): it changes only with a
          # rollout (see checksum/config above).
          volume_mount {
            name       = "config"
            mount_path = local.config_file
            sub_path   = "promgate.toml"
            read_only  = true
          }

          volume_mount {
            name       = "key"
            mount_path = local.key_dir
            read_only  = true
          }

          # A whole directory, never subPath: only then does the kubelet's
          # symlink swap reach the pod, and the gateway hot-reloads peers.
          volume_mount {
            name       = "peers"
            mount_path = local.peers_dir
            read_only  = true
          }
        }

        volume {
          name = "config"
          config_map {
            name         = kubernetes_config_map_v1.gateway.metadata[0].name
            default_mode = "0444"
          }
        }

        volume {
          name = "key"
          secret {
            secret_name  = kubernetes_secret_v1.key.metadata[0].name
            default_mode = "0440"
          }
        }

        volume {
          name = "peers"
          config_map {
            name         = kubernetes_config_map_v1.peers.metadata[0].name
            default_mode = "0444"
          }
        }
      }
    }
  }
}

# Keeps one gateway up through node drains when there is more than one.
resource "kubernetes_pod_disruption_budget_v1" "gateway" {
  count = var.replicas > 1 ? 1 : 0

  metadata {
    name      = var.name
    namespace = local.namespace
    labels    = local.common_labels
  }

  spec {
    max_unavailable = "1"
    selector {
      match_labels = local.selector_labels
    }
  }
}
