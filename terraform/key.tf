# The gateway key pair. With var.private_key null the provider generates a
# key; with a key supplied it only derives the public key from it. Either way
# the public key comes from here and reaches the outputs and client configs,
# so a supplied key never needs its public half passed in separately.
resource "wireguard_asymmetric_key" "gateway" {
  private_key = var.private_key
}

resource "kubernetes_secret_v1" "key" {
  metadata {
    name      = "${var.name}-key"
    namespace = local.namespace
    labels    = local.common_labels
  }

  type = "Opaque"

  data = {
    (local.key_file) = wireguard_asymmetric_key.gateway.private_key
  }
}
