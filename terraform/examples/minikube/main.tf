# promgate on minikube. The tunnel is a NodePort: `minikube service` forwards
# TCP only, so WireGuard clients send UDP straight to $(minikube ip):31820.
#
#   minikube image build -t promgate:dev ../../..     # or: minikube image load promgate:dev
#   terraform init
#   terraform apply -var "minikube_ip=$(minikube ip)" -var-file=peers.tfvars

terraform {
  required_version = ">= 1.9"

  required_providers {
    kubernetes = {
      source  = "hashicorp/kubernetes"
      version = ">= 2.36, < 4.0"
    }
    wireguard = {
      source  = "OJFord/wireguard"
      version = "~> 0.4"
    }
  }
}

provider "kubernetes" {
  config_path    = "~/.kube/config"
  config_context = "minikube"
}

variable "minikube_ip" {
  description = "Output of `minikube ip`: the node address clients send WireGuard packets to."
  type        = string
}

variable "node_port" {
  description = "nodePort of the tunnel Service on the minikube node."
  type        = number
  default     = 31820
}

variable "peers" {
  description = "WireGuard peers (see the module's peers variable)."
  type = list(object({
    name        = string
    public_key  = string
    allowed_ips = list(string)
    role        = optional(string, "viewer")
  }))
}

module "promgate" {
  source = "../.."

  image             = "promgate:dev"
  image_pull_policy = "Never" # built or loaded into minikube's runtime

  service_type = "NodePort"
  node_port    = var.node_port
  endpoint     = "${var.minikube_ip}:${var.node_port}"

  peers = var.peers

  # minikube's default CNI does not enforce NetworkPolicy (start minikube with
  # --cni=calico to enforce it). The policies are still created, so the same
  # objects are tested here as in production.
}

output "gateway_public_key" {
  value = module.promgate.gateway_public_key
}

output "endpoint" {
  value = module.promgate.endpoint
}

output "prometheus_url" {
  value = module.promgate.prometheus_url
}

output "client_configs" {
  value     = module.promgate.client_configs
  sensitive = true
}
