terraform {
  # 1.9 is the first release whose variable validation may refer to other
  # variables; variables.tf uses that to check peers against the tunnel.
  required_version = ">= 1.9"

  required_providers {
    # Only the typed *_v1 resources are used, which 2.x and 3.x both have.
    kubernetes = {
      source  = "hashicorp/kubernetes"
      version = ">= 2.36, < 4.0"
    }
    # Generates the gateway key pair (or derives the public key from a
    # supplied private key) without shelling out to `wg`. See README.md.
    wireguard = {
      source  = "OJFord/wireguard"
      version = "~> 0.4"
    }
  }
}
