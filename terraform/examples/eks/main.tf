# promgate on EKS behind an AWS Network Load Balancer (UDP) made by the AWS
# Load Balancer Controller, which must be installed in the cluster first:
# without it the in-tree controller makes a Classic LB, which has no UDP, and
# the apply waits for it forever. docs/deploy.md walks through the whole path.
#
#   cp peers.tfvars.example peers.tfvars    # put the first client's public key in it
#   terraform init
#   terraform apply -var cluster_name=my-cluster -var image=<repo>@sha256:<digest> -var-file=peers.tfvars

terraform {
  required_version = ">= 1.9"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.0, < 7.0"
    }
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

variable "region" {
  description = "AWS region of the cluster."
  type        = string
  default     = "us-east-1"
}

variable "cluster_name" {
  description = "Name of the EKS cluster."
  type        = string
}

variable "image" {
  description = "promgate image, pinned by digest: <repo>@sha256:<digest>."
  type        = string
}

variable "endpoint" {
  description = "DNS name clients use (host:port), e.g. a Route 53 record aliasing the NLB. Null uses the NLB's own hostname."
  type        = string
  default     = null
}

variable "client_cidrs" {
  description = "Source CIDRs allowed through the NLB. Empty allows all; WireGuard still drops unauthenticated packets."
  type        = list(string)
  default     = []
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

provider "aws" {
  region = var.region
}

data "aws_eks_cluster" "this" {
  name = var.cluster_name
}

provider "kubernetes" {
  host                   = data.aws_eks_cluster.this.endpoint
  cluster_ca_certificate = base64decode(data.aws_eks_cluster.this.certificate_authority[0].data)
  exec {
    api_version = "client.authentication.k8s.io/v1beta1"
    command     = "aws"
    args        = ["eks", "get-token", "--cluster-name", var.cluster_name, "--region", var.region]
  }
}

module "promgate" {
  source = "../.."

  image             = var.image
  image_pull_policy = "IfNotPresent" # safe: the image is pinned by digest

  # Two gateways on two nodes (the module's topology spread), and rollouts
  # that wait for each new pod to be healthy in the NLB (the controller's
  # readiness gate, switched on by a namespace label).
  replicas                  = 2
  pod_readiness_gate_inject = true

  service_type = "LoadBalancer"
  # The AWS Load Balancer Controller's class: it, not the in-tree
  # controller, makes this load balancer. Changing it replaces the Service.
  load_balancer_class = "service.k8s.aws/nlb"
  endpoint            = var.endpoint
  service_annotations = {
    # An internet-facing NLB sending UDP straight to pod IPs.
    "service.beta.kubernetes.io/aws-load-balancer-type"            = "external"
    "service.beta.kubernetes.io/aws-load-balancer-nlb-target-type" = "ip"
    "service.beta.kubernetes.io/aws-load-balancer-scheme"          = "internet-facing"
    # UDP cannot be health-checked: check the gateway's readiness endpoint
    # on its admin port instead, often enough to notice a pod in ~20 s.
    "service.beta.kubernetes.io/aws-load-balancer-healthcheck-protocol"            = "HTTP"
    "service.beta.kubernetes.io/aws-load-balancer-healthcheck-port"                = "9586"
    "service.beta.kubernetes.io/aws-load-balancer-healthcheck-path"                = "/readyz"
    "service.beta.kubernetes.io/aws-load-balancer-healthcheck-interval"            = "10"
    "service.beta.kubernetes.io/aws-load-balancer-healthcheck-healthy-threshold"   = "2"
    "service.beta.kubernetes.io/aws-load-balancer-healthcheck-unhealthy-threshold" = "2"
    # Target group: keep each client on one pod by source IP (with IP targets
    # the NLB bypasses kube-proxy, so the Service's ClientIP affinity plays
    # no part); on deregistration wait 15 s, then close the pod's UDP flows so
    # that the client's next packets reach a live pod (the preStop sleep,
    # 20 s, keeps the pod serving until then).
    "service.beta.kubernetes.io/aws-load-balancer-target-group-attributes" = "stickiness.enabled=true,stickiness.type=source_ip,deregistration_delay.timeout_seconds=15,deregistration_delay.connection_termination.enabled=true"
    # One NLB node per zone; without cross-zone load balancing a zone whose
    # gateway is gone would drop its clients' packets.
    "service.beta.kubernetes.io/aws-load-balancer-attributes" = "load_balancing.cross_zone.enabled=true"
  }
  load_balancer_source_ranges = var.client_cidrs

  peers = var.peers
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
