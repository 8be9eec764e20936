# Shared names, labels, paths and the rendered gateway config. The resources
# are split by concern: namespace.tf, key.tf, configmap.tf, deployment.tf,
# service.tf, networkpolicy.tf.

locals {
  # Selector labels never change after the first apply (a Deployment's
  # selector is immutable); everything else may.
  selector_labels = {
    "app.kubernetes.io/name"     = "promgate"
    "app.kubernetes.io/instance" = var.name
  }
  common_labels = merge(var.labels, local.selector_labels, {
    "app.kubernetes.io/component"  = "wireguard-gateway"
    "app.kubernetes.io/managed-by" = "terraform"
  })

  # AWS Load Balancer Controller: pods of a namespace with this label get a
  # readiness gate that holds a rollout until the new pod is healthy in the
  # NLB's target group.
  readiness_gate_labels = var.pod_readiness_gate_inject ? { "elbv2.k8s.aws/pod-readiness-gate-inject" = "enabled" } : {}

  namespace = var.create_namespace ? kubernetes_namespace_v1.this[0].metadata[0].name : var.namespace

  # Paths inside the container. The image's entrypoint reads config_file;
  # the other two are named by the gateway config below.
  config_file = "/etc/promgate/promgate.toml"
  key_dir     = "/etc/promgate/key"
  key_file    = "private.key"
  peers_dir   = "/etc/promgate/peers.d"

  gateway_ip   = split("/", var.tunnel_address)[0]
  upstream_url = "http://${var.upstream_service}.${var.upstream_namespace}.svc.${var.cluster_domain}${var.upstream_port == 80 ? "" : ":${var.upstream_port}"}"

  # The upstreams. With var.upstreams null, the one Prometheus of the
  # upstream_* variables, served on http_ports, as the gateway's older two
  # keys; otherwise one [[upstream]] table each (the gateway refuses both
  # spellings in one file). The first upstream's Service is the one the
  # static egress rule and the policy on the upstream's pods name; the
  # others get dynamic egress rules (networkpolicy.tf).
  upstream_line   = var.upstreams == null ? "upstream = ${jsonencode(local.upstream_url)}" : "# The upstreams are the [[upstream]] tables at the end."
  http_ports_line = var.upstreams == null ? "http_ports = ${jsonencode(var.http_ports)}" : ""
  upstream_tables = var.upstreams == null ? "" : join("", [
    for u in var.upstreams : format(
      "\n[[upstream]]\nname = %s\nurl = %s\nport = %d\nkind = %s\n",
      jsonencode(u.name),
      jsonencode("http://${u.service}.${u.namespace}.svc.${var.cluster_domain}${u.service_port == 80 ? "" : ":${u.service_port}"}"),
      u.port,
      jsonencode(u.kind),
    )
  ])

  first_upstream_service      = var.upstreams == null ? var.upstream_service : var.upstreams[0].service
  first_upstream_namespace    = var.upstreams == null ? var.upstream_namespace : var.upstreams[0].namespace
  first_upstream_port         = var.upstreams == null ? var.upstream_port : var.upstreams[0].service_port
  first_upstream_target_port  = var.upstreams == null ? var.upstream_target_port : var.upstreams[0].target_port
  first_upstream_pod_selector = var.upstreams == null ? var.upstream_pod_selector : var.upstreams[0].pod_selector
  other_upstreams             = var.upstreams == null ? [] : slice(var.upstreams, 1, length(var.upstreams))
  # The tunnel port a client opens first (the first upstream's).
  first_tunnel_port = var.upstreams == null ? var.http_ports[0] : var.upstreams[0].port

  # With service_type LoadBalancer and no explicit endpoint, clients are sent
  # to the load balancer's hostname (AWS NLB) or IP (most other clouds). It is
  # never null where it is used: var.endpoint is required with NodePort (its
  # validation), and wait_for_load_balancer holds the apply until a
  # LoadBalancer has an address. The precondition in configmap.tf says so
  # plainly should that ever change.
  lb_ingress = try(kubernetes_service_v1.tunnel.status[0].load_balancer[0].ingress[0], null)
  lb_host    = try(coalesce(local.lb_ingress.hostname, local.lb_ingress.ip), null)
  endpoint   = var.endpoint != null ? var.endpoint : (local.lb_host == null ? null : "${local.lb_host}:${var.listen_port}")

  gateway_config = templatefile("${path.module}/templates/promgate.toml.tftpl", {
    private_key_file = "${local.key_dir}/${local.key_file}"
    listen_port      = var.listen_port
    address          = var.tunnel_address
    upstream_line    = local.upstream_line
    http_ports_line  = local.http_ports_line
    upstream_tables  = local.upstream_tables
    mtu              = var.mtu
    endpoint         = local.endpoint
    peers_dir        = local.peers_dir
    identity_header  = var.identity_header
    allowed_hosts    = var.allowed_hosts
    admin_port       = var.admin_port
    unready_after    = var.upstream_unready_after
  })

  peer_files = {
    for p in var.peers : "${p.name}.toml" => templatefile("${path.module}/templates/peer.toml.tftpl", {
      name        = p.name
      public_key  = p.public_key
      allowed_ips = p.allowed_ips
      role        = p.role
      allow_paths = p.allow_paths
    })
  }

  client_configs = {
    for p in var.peers : p.name => templatefile("${path.module}/templates/client.conf.tftpl", {
      name               = p.name
      address            = join(", ", p.allowed_ips)
      mtu                = var.mtu
      gateway_public_key = wireguard_asymmetric_key.gateway.public_key
      endpoint           = local.endpoint
      gateway_ip         = local.gateway_ip
      http_port          = local.first_tunnel_port
    })
  }
}
