output "gateway_public_key" {
  description = "The gateway's WireGuard public key (the PublicKey of the [Peer] section in client configs)."
  value       = wireguard_asymmetric_key.gateway.public_key
}

output "endpoint" {
  description = "host:port clients send WireGuard packets to."
  value       = local.endpoint
}

output "tunnel_address" {
  description = "The gateway's address inside the tunnel; Prometheus is at http://<this>/."
  value       = local.gateway_ip
}

output "prometheus_url" {
  description = "URL of Prometheus as seen from a connected WireGuard client."
  value       = "http://${local.gateway_ip}${local.first_tunnel_port == 80 ? "" : ":${local.first_tunnel_port}"}/"
}

output "client_configs" {
  description = "wg-quick config for each peer, keyed by peer name. The client's private key is the placeholder <CLIENT_PRIVATE_KEY>: the module never sees it."
  value       = local.client_configs
  sensitive   = true
}

output "namespace" {
  description = "Namespace promgate runs in."
  value       = local.namespace
}

output "tunnel_service_name" {
  description = "Name of the UDP tunnel Service."
  value       = kubernetes_service_v1.tunnel.metadata[0].name
}

output "tunnel_node_port" {
  description = "nodePort of the tunnel Service (what to reach at the node's address on minikube)."
  value       = kubernetes_service_v1.tunnel.spec[0].port[0].node_port
}

output "admin_service_name" {
  description = "Name of the ClusterIP Service serving /metrics, /healthz and /readyz."
  value       = kubernetes_service_v1.admin.metadata[0].name
}

output "peers_config_map_name" {
  description = "Name of the ConfigMap holding one <peer>.toml per peer."
  value       = kubernetes_config_map_v1.peers.metadata[0].name
}
