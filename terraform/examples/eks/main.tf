# promgate on EKS behind an AWS Network Load Balancer (UDP) made by the AWS
# Load Balancer Controller, which must be installed in the cluster.
#
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
  replicas          = 2

  service_type = "LoadBalancer"
  endpoint     = var.endpoint
  service_annotations = {
    # AWS Load Balancer Controller: an internet-facing NLB sending UDP
    # straight to pod IPs, which keeps the client's source address (the
    # ClientIP session affinity and WireGuard roaming both need it).
    "service.beta.kubernetes.io/aws-load-balancer-type"            = "external"
    "service.beta.kubernetes.io/aws-load-balancer-nlb-target-type" = "ip"
    "service.beta.kubernetes.io/aws-load-balancer-scheme"          = "internet-facing"
    # UDP cannot be health-checked: check the gateway's readiness endpoint
    # on its admin port instead.
    "service.beta.kubernetes.io/aws-load-balancer-healthcheck-protocol" = "HTTP"
    "service.beta.kubernetes.io/aws-load-balancer-healthcheck-port"     = "9586"
    "service.beta.kubernetes.io/aws-load-balancer-healthcheck-path"     = "/readyz"
    # Keep each client on one target, as the Service's ClientIP affinity does.
    "service.beta.kubernetes.io/aws-load-balancer-target-group-attributes" = "stickiness.enabled=true,stickiness.type=source_ip"
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
