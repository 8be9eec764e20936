# promgate.toml. Mounted with subPath, so a change reaches the pod only by a
# new rollout, which the checksum/config annotation in deployment.tf causes.
resource "kubernetes_config_map_v1" "gateway" {
  metadata {
    name      = "${var.name}-config"
    namespace = local.namespace
    labels    = local.common_labels
  }

  data = {
    "promgate.toml" = local.gateway_config
  }

  lifecycle {
    precondition {
      condition     = local.endpoint != null
      error_message = "No endpoint for client configs: set var.endpoint (required with service_type NodePort), or use a LoadBalancer that reports a hostname or IP."
    }
  }
}

# One <name>.toml per peer. Mounted as a whole directory (no subPath): the
# kubelet swaps the ..data symlink when this changes and the gateway reloads
# the directory, so adding or removing a peer restarts nothing. Its checksum
# is deliberately NOT in the pod annotations.
resource "kubernetes_config_map_v1" "peers" {
  metadata {
    name      = "${var.name}-peers"
    namespace = local.namespace
    labels    = local.common_labels
  }

  data = local.peer_files
}
