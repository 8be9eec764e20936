# Two policies. On Prometheus (the first upstream): only promgate (and the
# sources listed in var.upstream_allowed_sources) may open its port. On
# promgate: the tunnel port is open to the world (WireGuard authenticates
# every packet), the admin port to the cluster, and egress goes only to each
# upstream (pod and Service port) and DNS.
#
# NetworkPolicy is enforced only by a CNI that implements it (Calico, Cilium,
# the AWS VPC CNI with network policy enabled, ...). Without one these
# objects are accepted and do nothing.

resource "kubernetes_network_policy_v1" "upstream" {
  count = var.create_upstream_network_policy ? 1 : 0

  metadata {
    name      = "${var.name}-to-${local.first_upstream_service}"
    namespace = local.first_upstream_namespace
    labels    = local.common_labels
  }

  spec {
    pod_selector {
      match_labels = local.first_upstream_pod_selector
    }

    policy_types = ["Ingress"]

    ingress {
      # Policies see the pod's port, after the Service's port 80 -> 9090.
      ports {
        port     = tostring(local.first_upstream_target_port)
        protocol = "TCP"
      }

      from {
        namespace_selector {
          match_labels = { "kubernetes.io/metadata.name" = var.namespace }
        }
        pod_selector {
          match_labels = local.selector_labels
        }
      }

      dynamic "from" {
        for_each = [for s in var.upstream_allowed_sources : s if s.cidr == null]
        content {
          dynamic "namespace_selector" {
            for_each = from.value.namespace_labels == null ? [] : [from.value.namespace_labels]
            content {
              match_labels = namespace_selector.value
            }
          }
          dynamic "pod_selector" {
            for_each = from.value.pod_labels == null ? [] : [from.value.pod_labels]
            content {
              match_labels = pod_selector.value
            }
          }
        }
      }

      dynamic "from" {
        for_each = [for s in var.upstream_allowed_sources : s.cidr if s.cidr != null]
        content {
          ip_block {
            cidr = from.value
          }
        }
      }
    }
  }
}

resource "kubernetes_network_policy_v1" "gateway" {
  metadata {
    name      = var.name
    namespace = local.namespace
    labels    = local.common_labels
  }

  spec {
    pod_selector {
      match_labels = local.selector_labels
    }

    policy_types = ["Ingress", "Egress"]

    # WireGuard from anywhere: the load balancer or node port forwards client
    # packets with their own or a node's source address, and the gateway
    # drops every packet that no configured peer key authenticates.
    ingress {
      ports {
        port     = tostring(var.listen_port)
        protocol = "UDP"
      }
    }

    # Admin port from any source: the kubelet's probes come from the node
    # (not selectable by pod labels), Prometheus scrapes /metrics, and an AWS
    # NLB with IP targets health-checks /readyz from the VPC. It serves only
    # metrics and health, nothing from Prometheus.
    ingress {
      ports {
        port     = tostring(var.admin_port)
        protocol = "TCP"
      }
    }

    # Prometheus on both its pod port and its Service port. Calico and
    # Cilium match egress after the Service's DNAT (the pod port, 9090); the
    # AWS VPC CNI's network policy agent matches before it, on the Service's
    # ClusterIP and port (80), which its controller adds for Services that
    # select these pods. Listing both works on all three; the Prometheus pods
    # listen on 9090 only, so port 80 opens nothing more. (When the two
    # ports are equal the entry is listed twice, which the API accepts.)
    egress {
      ports {
        port     = tostring(local.first_upstream_target_port)
        protocol = "TCP"
      }
      ports {
        port     = tostring(local.first_upstream_port)
        protocol = "TCP"
      }
      to {
        namespace_selector {
          match_labels = { "kubernetes.io/metadata.name" = local.first_upstream_namespace }
        }
        pod_selector {
          match_labels = local.first_upstream_pod_selector
        }
      }
    }

    # Every other upstream (var.upstreams), the same way: its pods on
    # their pod port and its Service port, and nothing else of theirs.
    dynamic "egress" {
      for_each = local.other_upstreams
      content {
        ports {
          port     = tostring(egress.value.target_port)
          protocol = "TCP"
        }
        ports {
          port     = tostring(egress.value.service_port)
          protocol = "TCP"
        }
        to {
          namespace_selector {
            match_labels = { "kubernetes.io/metadata.name" = egress.value.namespace }
          }
          pod_selector {
            match_labels = egress.value.pod_selector
          }
        }
      }
    }

    egress {
      ports {
        port     = "53"
        protocol = "UDP"
      }
      ports {
        port     = "53"
        protocol = "TCP"
      }
      to {
        namespace_selector {
          match_labels = var.dns_namespace_labels
        }
        pod_selector {
          match_labels = var.dns_pod_labels
        }
      }
    }
  }
}
