# Two Services on purpose. The team's Prometheus job scrapes every port of
# every Service endpoint at /metrics, so the UDP tunnel port must not share a
# Service with the admin port, or the gateway shows up DOWN.

resource "kubernetes_service_v1" "tunnel" {
  metadata {
    name        = var.name
    namespace   = local.namespace
    labels      = local.common_labels
    annotations = var.service_annotations
  }

  spec {
    type     = var.service_type
    selector = local.selector_labels

    # Handed to the AWS Load Balancer Controller with "service.k8s.aws/nlb".
    # Immutable in Kubernetes: the provider replaces the Service (and the
    # load balancer, and its address) when it changes.
    load_balancer_class = var.service_type == "LoadBalancer" ? var.load_balancer_class : null

    # A WireGuard session lives in one pod: keep each client on the pod it
    # did its handshake with. This is kube-proxy's affinity (NodePort, and
    # load balancers that send to nodes); an NLB with IP targets bypasses
    # kube-proxy and keeps clients on a pod by its own source-IP stickiness.
    session_affinity = "ClientIP"
    session_affinity_config {
      client_ip {
        timeout_seconds = var.session_affinity_timeout_seconds
      }
    }

    external_traffic_policy     = var.external_traffic_policy
    load_balancer_source_ranges = var.service_type == "LoadBalancer" ? var.load_balancer_source_ranges : null

    port {
      name        = "wireguard"
      protocol    = "UDP"
      port        = var.listen_port
      target_port = tostring(var.listen_port)
      node_port   = var.node_port
    }
  }

  wait_for_load_balancer = var.service_type == "LoadBalancer"
}

resource "kubernetes_service_v1" "admin" {
  metadata {
    name      = "${var.name}-admin"
    namespace = local.namespace
    labels    = local.common_labels
  }

  spec {
    type     = "ClusterIP"
    selector = local.selector_labels

    port {
      name        = "admin"
      protocol    = "TCP"
      port        = var.admin_port
      target_port = tostring(var.admin_port)
    }
  }
}
