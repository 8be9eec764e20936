# ---------------------------------------------------------------------------
# Naming and placement
# ---------------------------------------------------------------------------

variable "name" {
  description = "Name of every object this module creates, and the value of the app.kubernetes.io/instance label."
  type        = string
  default     = "promgate"

  validation {
    # The Services take this name too, and a Service name is an RFC 1035 label.
    condition     = can(regex("^[a-z]([-a-z0-9]{0,30}[a-z0-9])?$", var.name))
    error_message = "name must be a lowercase RFC 1035 label of at most 32 characters (letters, digits, '-'; starting with a letter)."
  }
}

variable "namespace" {
  description = "Namespace promgate runs in."
  type        = string
  default     = "promgate"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", var.namespace))
    error_message = "namespace must be a lowercase RFC 1123 label of at most 63 characters."
  }
}

variable "create_namespace" {
  description = "Create the namespace, labelled to enforce Pod Security \"restricted\". Set false to deploy into an existing namespace."
  type        = bool
  default     = true
}

variable "pod_readiness_gate_inject" {
  description = "Label the namespace elbv2.k8s.aws/pod-readiness-gate-inject=enabled, so that the AWS Load Balancer Controller gives the pods a readiness gate: a rollout then waits until each new pod is healthy in the NLB's target group before it stops an old one. Needs the controller (its webhook injects the gate) and create_namespace; label an existing namespace yourself."
  type        = bool
  default     = false
}

variable "labels" {
  description = "Extra labels put on every object. The app.kubernetes.io/* labels are set by the module and cannot be overridden here."
  type        = map(string)
  default     = {}
}

# ---------------------------------------------------------------------------
# Image and pod
# ---------------------------------------------------------------------------

variable "image" {
  description = "promgate container image. Pin it by digest (repo@sha256:...) in production so that every node runs the same bytes."
  type        = string

  validation {
    condition     = length(trimspace(var.image)) > 0 && !can(regex("\\s", var.image))
    error_message = "image must be a non-empty image reference without whitespace."
  }

  validation {
    # A fixed version: a digest, or a tag other than "latest" (the last path
    # segment must carry one; a registry's :port does not count).
    condition = (
      can(regex("@sha256:[0-9a-f]{64}$", var.image))
      || can(regex("^[^@]*:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$", element(split("/", var.image), length(split("/", var.image)) - 1)))
    ) && !can(regex(":latest$", var.image))
    error_message = "image must name a fixed version: repo:tag (not :latest) or repo@sha256:<digest>."
  }
}

variable "image_pull_policy" {
  description = "imagePullPolicy of the container. \"Never\" suits an image loaded into minikube with `minikube image load`."
  type        = string
  default     = "IfNotPresent"

  validation {
    condition     = contains(["Always", "IfNotPresent", "Never"], var.image_pull_policy)
    error_message = "image_pull_policy must be Always, IfNotPresent or Never."
  }
}

variable "replicas" {
  description = "Number of gateway pods. Every replica holds the same key and peers; each client stays on one pod by the Service's ClientIP affinity or the NLB's source-IP stickiness. A PodDisruptionBudget is created when this is above 1; the pods spread over nodes."
  type        = number
  default     = 1

  validation {
    condition     = var.replicas >= 1 && var.replicas <= 10 && floor(var.replicas) == var.replicas
    error_message = "replicas must be a whole number from 1 to 10."
  }
}

variable "resources" {
  description = "Container resource requests and limits. promgate is a single process with bounded buffers; the defaults leave room for a few dozen peers."
  type = object({
    requests = object({ cpu = string, memory = string })
    limits   = object({ cpu = string, memory = string })
  })
  default = {
    requests = { cpu = "50m", memory = "32Mi" }
    limits   = { cpu = "500m", memory = "128Mi" }
  }

  validation {
    condition = alltrue([
      for q in [var.resources.requests.cpu, var.resources.limits.cpu] : can(regex("^[0-9]+(\\.[0-9]+)?m?$", q))
    ])
    error_message = "CPU quantities must look like \"50m\" or \"0.5\"."
  }

  validation {
    condition = alltrue([
      for q in [var.resources.requests.memory, var.resources.limits.memory] : can(regex("^[0-9]+(Ki|Mi|Gi|k|M|G)?$", q))
    ])
    error_message = "Memory quantities must look like \"32Mi\" or \"128Mi\"."
  }
}

variable "extra_env" {
  description = "Extra environment variables for the container, e.g. { RUST_LOG = \"promgate=debug\" }."
  type        = map(string)
  default     = {}
}

variable "pre_stop_sleep_seconds" {
  description = "How long a terminating pod keeps serving before the gateway is told to stop (a preStop hook running the image's /usr/local/bin/sleep). It must outlast the load balancer's deregistration: examples/eks sets a 15 s deregistration delay, so the default is 20. The pod's terminationGracePeriodSeconds (45) leaves the gateway its 10 s drain after it."
  type        = number
  default     = 20

  validation {
    condition     = var.pre_stop_sleep_seconds >= 1 && var.pre_stop_sleep_seconds <= 30 && floor(var.pre_stop_sleep_seconds) == var.pre_stop_sleep_seconds
    error_message = "pre_stop_sleep_seconds must be a whole number from 1 to 30 (terminationGracePeriodSeconds is 45, and the gateway needs its 10 s drain after the hook)."
  }
}

variable "topology_spread_when_unsatisfiable" {
  description = "whenUnsatisfiable of the pods' topology spread over nodes (kubernetes.io/hostname, maxSkew 1). DoNotSchedule keeps two replicas off one node, so one node going away never takes every gateway with it; it needs at least as many schedulable nodes as replicas. ScheduleAnyway only prefers spreading."
  type        = string
  default     = "DoNotSchedule"

  validation {
    condition     = contains(["DoNotSchedule", "ScheduleAnyway"], var.topology_spread_when_unsatisfiable)
    error_message = "topology_spread_when_unsatisfiable must be DoNotSchedule or ScheduleAnyway."
  }
}

variable "node_selector" {
  description = "nodeSelector for the gateway pods."
  type        = map(string)
  default     = {}
}

# ---------------------------------------------------------------------------
# Gateway key
# ---------------------------------------------------------------------------

variable "private_key" {
  description = "Gateway WireGuard private key (base64, as printed by `wg genkey` or `promgate genkey`). Leave null to generate one in Terraform. Either way the public key is derived from it and output, and the key is stored in Terraform state: keep the state encrypted."
  type        = string
  default     = null
  sensitive   = true

  validation {
    condition     = var.private_key == null || can(regex("^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$", var.private_key))
    error_message = "private_key must be a base64-encoded 32-byte WireGuard key (44 characters ending in '=')."
  }
}

# ---------------------------------------------------------------------------
# Tunnel
# ---------------------------------------------------------------------------

variable "tunnel_address" {
  description = "The gateway's address inside the tunnel with the tunnel prefix length, e.g. 10.13.13.1/24. Clients reach Prometheus at http://<this address>/."
  type        = string
  default     = "10.13.13.1/24"

  validation {
    condition = (
      can(cidrnetmask(var.tunnel_address))
      && can(regex("^[0-9.]+/[0-9]+$", var.tunnel_address))
      && try(split("/", var.tunnel_address)[0] != cidrhost(var.tunnel_address, 0), false)
    )
    error_message = "tunnel_address must be an IPv4 host address with a prefix length, e.g. 10.13.13.1/24, and not the network address."
  }
}

variable "listen_port" {
  description = "UDP port the gateway listens on in the pod, and the port of the tunnel Service."
  type        = number
  default     = 51820

  validation {
    condition     = var.listen_port >= 1024 && var.listen_port <= 65535 && floor(var.listen_port) == var.listen_port
    error_message = "listen_port must be an unprivileged port (1024-65535): the container runs without capabilities."
  }
}

variable "admin_port" {
  description = "TCP port of the admin listener (/metrics, /healthz, /readyz), served by its own ClusterIP Service."
  type        = number
  default     = 9586

  validation {
    condition     = var.admin_port >= 1024 && var.admin_port <= 65535 && floor(var.admin_port) == var.admin_port
    error_message = "admin_port must be an unprivileged port (1024-65535)."
  }

  validation {
    condition     = var.admin_port != var.listen_port
    error_message = "admin_port must differ from listen_port."
  }
}

variable "http_ports" {
  description = "TCP ports the gateway serves inside the tunnel. Clients open http://<gateway tunnel address>:<port>/."
  type        = list(number)
  default     = [80]

  validation {
    condition     = length(var.http_ports) > 0 && alltrue([for p in var.http_ports : p >= 1 && p <= 65535 && floor(p) == p])
    error_message = "http_ports must be a non-empty list of TCP ports (1-65535)."
  }
}

variable "mtu" {
  description = "MTU of the tunnel, for the gateway and written into client configs."
  type        = number
  default     = 1420

  validation {
    condition     = var.mtu >= 1280 && var.mtu <= 1500
    error_message = "mtu must be between 1280 (IPv6 minimum) and 1500."
  }
}

variable "endpoint" {
  description = "Public host:port that clients send WireGuard packets to, written into the gateway config and client configs. Null takes the tunnel LoadBalancer's hostname or IP and listen_port; it is required with service_type NodePort (use <node address>:<node_port>)."
  type        = string
  default     = null

  validation {
    condition     = var.endpoint != null || var.service_type == "LoadBalancer"
    error_message = "endpoint is required with service_type NodePort: set it to <node address>:<node_port>, e.g. \"$(minikube ip):31820\"."
  }

  validation {
    condition     = var.endpoint == null || can(regex("^(\\[[0-9a-fA-F:]+\\]|[A-Za-z0-9.-]+):[0-9]{1,5}$", var.endpoint))
    error_message = "endpoint must be host:port, e.g. vpn.example.com:51820 or 192.168.49.2:31820."
  }
}

variable "upstream_unready_after" {
  description = "How long the upstream may fail before the gateway's /readyz fails ([admin] upstream_unready_after): a duration such as \"60s\" or \"2m\", or \"off\" to keep readiness independent of the upstream. The gateway probes the upstream's /-/ready itself, so readiness recovers on its own. The kubelet and the NLB health check both follow /readyz: with every pod unready, an NLB fails open and still sends packets to all of them."
  type        = string
  default     = "60s"

  validation {
    condition     = var.upstream_unready_after == "off" || can(regex("^([0-9]+(ms|s|m|h))+$", var.upstream_unready_after))
    error_message = "upstream_unready_after must be a duration such as \"60s\", \"2m\" or \"1m30s\", or \"off\"."
  }
}

variable "identity_header" {
  description = "Request header in which the gateway tells the upstream which peer sent a request. The gateway overwrites any value a client sends."
  type        = string
  default     = "X-Promgate-Peer"

  validation {
    condition     = can(regex("^[A-Za-z0-9-]+$", var.identity_header))
    error_message = "identity_header must be an HTTP header name (letters, digits, '-')."
  }
}

variable "allowed_hosts" {
  description = "Host names (or IP literals) the gateway answers to besides its tunnel address, e.g. a DNS name pointing at it. Any other Host gets 421, and a POST or other unsafe request whose Origin is not the gateway or one of these names gets 403 (DNS rebinding and cross-site requests through a peer's browser)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for h in var.allowed_hosts : can(regex("^([A-Za-z0-9_]([-A-Za-z0-9_]*[A-Za-z0-9_])?\\.)*[A-Za-z0-9_]([-A-Za-z0-9_]*[A-Za-z0-9_])?\\.?$|^[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*$|^\\[[0-9A-Fa-f:.]+\\]$", h))])
    error_message = "allowed_hosts entries must be a bare DNS name or IP address, e.g. \"prometheus.vpn.example\": no scheme, port, path or spaces."
  }
}

variable "peers" {
  description = "WireGuard peers allowed in. Each becomes one <name>.toml key of the peers ConfigMap, which the gateway hot-reloads: adding or removing a peer does not restart the pod. allowed_ips are the peer's tunnel addresses; role is viewer or admin."
  type = list(object({
    name        = string
    public_key  = string
    allowed_ips = list(string)
    role        = optional(string, "viewer")
    allow_paths = optional(list(string), [])
  }))
  default = []

  validation {
    condition     = alltrue([for p in var.peers : can(regex("^[a-z0-9]([-_a-z0-9]{0,61}[a-z0-9])?$", p.name))])
    error_message = "Each peer name must be 1-63 lowercase letters, digits, '-' or '_', starting and ending with a letter or digit (it becomes a ConfigMap key <name>.toml)."
  }

  validation {
    condition     = length(distinct([for p in var.peers : p.name])) == length(var.peers)
    error_message = "Peer names must be unique."
  }

  validation {
    condition     = alltrue([for p in var.peers : can(regex("^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$", p.public_key))])
    error_message = "Each peer public_key must be a base64-encoded 32-byte WireGuard key (44 characters ending in '=')."
  }

  validation {
    condition     = length(distinct([for p in var.peers : p.public_key])) == length(var.peers)
    error_message = "Peer public keys must be unique: WireGuard identifies a peer by its key."
  }

  validation {
    condition     = alltrue([for p in var.peers : contains(["viewer", "responder", "admin"], p.role)])
    error_message = "Each peer role must be \"viewer\", \"responder\" or \"admin\"."
  }

  validation {
    # "/prefix", or "upstream:/prefix" for one upstream (the only way into
    # a kind http upstream); the gateway checks that the name exists.
    condition = alltrue(flatten([
      for p in var.peers : [for a in p.allow_paths : can(regex("^([a-z][-_a-z0-9]{0,31}:)?/", a))]
    ]))
    error_message = "Each allow_paths entry must be a path prefix starting with '/', or an upstream's name, ':' and one (\"wiki:/\")."
  }

  validation {
    condition = alltrue(flatten([
      for p in var.peers : [
        for ip in p.allowed_ips : can(cidrnetmask(ip)) && can(regex("^[0-9.]+/[0-9]+$", ip))
      ]
    ])) && alltrue([for p in var.peers : length(p.allowed_ips) > 0])
    error_message = "Each peer needs at least one allowed_ips entry, each an IPv4 CIDR such as 10.13.13.2/32."
  }

  # The two checks below are the gateway's own (src/config/cross_check.rs),
  # on networks rather than strings: the gateway refuses such a peer set at
  # reload (a log line and promgate_config_reloads_refused_total) and at
  # start (a crash loop). Two IPv4 networks overlap when their addresses
  # agree on the shorter of the two prefixes; host bits are ignored, as the
  # gateway truncates them. Entries that are not CIDRs are left to the format
  # check above (try(..., [])).

  validation {
    # Networks of different peers must not overlap; one peer must not list
    # the same network twice (nested networks of one peer are allowed).
    # (format() rather than nested "${...}": checkov's HCL parser needs it.)
    condition = length(flatten([
      for i, a in flatten([for pi, p in var.peers : [for c in p.allowed_ips : { peer = p.name, index = pi, cidr = c }]]) : [
        for j, b in flatten([for pi, p in var.peers : [for c in p.allowed_ips : { peer = p.name, index = pi, cidr = c }]]) : try(
          j > i
          && cidrhost(format("%s/%d", split("/", a.cidr)[0], min(tonumber(split("/", a.cidr)[1]), tonumber(split("/", b.cidr)[1]))), 0) == cidrhost(format("%s/%d", split("/", b.cidr)[0], min(tonumber(split("/", a.cidr)[1]), tonumber(split("/", b.cidr)[1]))), 0)
          && (a.index != b.index || tonumber(split("/", a.cidr)[1]) == tonumber(split("/", b.cidr)[1]))
          ? [format("%s of %q overlaps %s of %q", b.cidr, b.peer, a.cidr, a.peer)] : [],
          []
        )
      ]
    ])) == 0
    error_message = format("allowed_ips overlap (the gateway would refuse this peer set): %s.", join("; ", flatten([
      for i, a in flatten([for pi, p in var.peers : [for c in p.allowed_ips : { peer = p.name, index = pi, cidr = c }]]) : [
        for j, b in flatten([for pi, p in var.peers : [for c in p.allowed_ips : { peer = p.name, index = pi, cidr = c }]]) : try(
          j > i
          && cidrhost(format("%s/%d", split("/", a.cidr)[0], min(tonumber(split("/", a.cidr)[1]), tonumber(split("/", b.cidr)[1]))), 0) == cidrhost(format("%s/%d", split("/", b.cidr)[0], min(tonumber(split("/", a.cidr)[1]), tonumber(split("/", b.cidr)[1]))), 0)
          && (a.index != b.index || tonumber(split("/", a.cidr)[1]) == tonumber(split("/", b.cidr)[1]))
          ? [format("%s of %q overlaps %s of %q", b.cidr, b.peer, a.cidr, a.peer)] : [],
          []
        )
      ]
    ])))
  }

  validation {
    # No peer network may contain the gateway's own address: not its /32,
    # and not the whole tunnel prefix either.
    condition = length(flatten([
      for p in var.peers : [
        for c in p.allowed_ips : try(
          cidrhost(c, 0) == cidrhost(format("%s/%s", split("/", var.tunnel_address)[0], split("/", c)[1]), 0) ? [c] : [],
          []
        )
      ]
    ])) == 0
    error_message = format("No peer network may contain the gateway's own tunnel address %s (the gateway would refuse it): %s.", split("/", var.tunnel_address)[0], join(", ", flatten([
      for p in var.peers : [
        for c in p.allowed_ips : try(
          cidrhost(c, 0) == cidrhost(format("%s/%s", split("/", var.tunnel_address)[0], split("/", c)[1]), 0) ? [format("%s of %q", c, p.name)] : [],
          []
        )
      ]
    ])))
  }
}

# ---------------------------------------------------------------------------
# Services
# ---------------------------------------------------------------------------

variable "service_type" {
  description = "Type of the UDP tunnel Service: LoadBalancer (cloud) or NodePort (minikube, bare metal)."
  type        = string
  default     = "LoadBalancer"

  validation {
    condition     = contains(["LoadBalancer", "NodePort"], var.service_type)
    error_message = "service_type must be LoadBalancer or NodePort."
  }
}

variable "load_balancer_class" {
  description = "spec.loadBalancerClass of the tunnel Service (service_type LoadBalancer only). \"service.k8s.aws/nlb\" hands the Service to the AWS Load Balancer Controller (examples/eks). Set it to what the cluster's controller would set: the controller's webhook writes service.k8s.aws/nlb into every new LoadBalancer Service, and with null here every later plan would then want to replace the Service. Kubernetes does not allow changing the field, so a change replaces the Service, and with it the load balancer and its address. Null leaves the Service to the default controller, which on EKS without the AWS controller is the in-tree one (a Classic LB, no UDP)."
  type        = string
  default     = null

  validation {
    condition     = var.load_balancer_class == null || can(regex("^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$", coalesce(var.load_balancer_class, "-")))
    error_message = "load_balancer_class must be a prefixed name such as \"service.k8s.aws/nlb\", or null."
  }

  validation {
    condition     = var.load_balancer_class == null || var.service_type == "LoadBalancer"
    error_message = "load_balancer_class applies only to service_type LoadBalancer."
  }
}

variable "node_port" {
  description = "Fixed nodePort of the tunnel Service (service_type NodePort or LoadBalancer). Null lets Kubernetes pick one."
  type        = number
  default     = null

  validation {
    condition     = var.node_port == null || (coalesce(var.node_port, 0) >= 30000 && coalesce(var.node_port, 0) <= 32767)
    error_message = "node_port must be in the default NodePort range 30000-32767."
  }
}

variable "service_annotations" {
  description = "Annotations of the tunnel Service, e.g. the AWS NLB annotations in examples/eks."
  type        = map(string)
  default     = {}
}

variable "external_traffic_policy" {
  description = "externalTrafficPolicy of the tunnel Service. Local keeps the client's source address (WireGuard roaming and ClientIP affinity then see the real client) but only nodes running a gateway pod answer."
  type        = string
  default     = "Cluster"

  validation {
    condition     = contains(["Cluster", "Local"], var.external_traffic_policy)
    error_message = "external_traffic_policy must be Cluster or Local."
  }
}

variable "load_balancer_source_ranges" {
  description = "CIDRs allowed to reach the tunnel LoadBalancer. Empty allows all; WireGuard itself drops every packet not from a configured peer key."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.load_balancer_source_ranges : can(cidrnetmask(c))])
    error_message = "load_balancer_source_ranges must be IPv4 CIDRs."
  }
}

variable "session_affinity_timeout_seconds" {
  description = "sessionAffinity ClientIP timeout of the tunnel Service: how long kube-proxy keeps sending one client address to the same pod (NodePort and externalTrafficPolicy paths). A WireGuard session lives in one pod, so moving a client forces a new handshake. An NLB with IP targets bypasses kube-proxy: there its own source-IP stickiness (examples/eks) keeps a client on one pod."
  type        = number
  default     = 10800

  validation {
    condition     = var.session_affinity_timeout_seconds >= 1 && var.session_affinity_timeout_seconds <= 86400
    error_message = "session_affinity_timeout_seconds must be between 1 and 86400."
  }
}

# ---------------------------------------------------------------------------
# Upstream Prometheus and network policy
# ---------------------------------------------------------------------------

variable "upstreams" {
  description = "The upstreams served through the tunnel, each on a tunnel TCP port of its own (the gateway config's [[upstream]] tables): name (a-z 0-9 _ -), kind (prometheus, alertmanager or http), port (the tunnel port clients open), and where it lives: its Service (service, namespace, service_port) and pods (target_port, pod_selector). The gateway's egress policy allows each one's pods and Service port, and DNS, nothing else; the first upstream is also the one create_upstream_network_policy guards (list Prometheus first). Null keeps the single Prometheus of the upstream_* variables, served on http_ports."
  type = list(object({
    name         = string
    kind         = string
    port         = number
    service      = string
    namespace    = string
    service_port = number
    target_port  = number
    pod_selector = map(string)
  }))
  default = null

  validation {
    condition     = var.upstreams == null ? true : length(var.upstreams) > 0
    error_message = "upstreams must list at least one upstream, or be null."
  }

  validation {
    condition     = alltrue([for u in coalesce(var.upstreams, []) : can(regex("^[a-z][-_a-z0-9]{0,31}$", u.name))])
    error_message = "Each upstream name must be 1-32 characters of a-z, 0-9, '_' or '-', starting with a letter."
  }

  validation {
    condition     = alltrue([for u in coalesce(var.upstreams, []) : contains(["prometheus", "alertmanager", "http"], u.kind)])
    error_message = "Each upstream kind must be \"prometheus\", \"alertmanager\" or \"http\"."
  }

  validation {
    condition     = length(distinct([for u in coalesce(var.upstreams, []) : u.name])) == length(coalesce(var.upstreams, []))
    error_message = "Upstream names must be unique."
  }

  validation {
    # The tunnel port picks the upstream, so each needs its own.
    condition     = length(distinct([for u in coalesce(var.upstreams, []) : u.port])) == length(coalesce(var.upstreams, []))
    error_message = "Each upstream needs a tunnel port of its own: two upstreams share one."
  }

  validation {
    condition = alltrue([
      for u in coalesce(var.upstreams, []) : alltrue([
        for p in [u.port, u.service_port, u.target_port] : p >= 1 && p <= 65535 && floor(p) == p
      ])
    ])
    error_message = "Upstream port, service_port and target_port must be TCP ports (1-65535)."
  }

  validation {
    condition     = alltrue([for u in coalesce(var.upstreams, []) : length(u.pod_selector) > 0])
    error_message = "Each upstream pod_selector must not be empty: an empty selector would open egress to every pod of its namespace."
  }
}

variable "upstream_service" {
  description = "Name of the Prometheus Service."
  type        = string
  default     = "prometheus"
}

variable "upstream_namespace" {
  description = "Namespace of the Prometheus Service and pods."
  type        = string
  default     = "default"
}

variable "upstream_port" {
  description = "Port of the Prometheus Service. The gateway's egress policy allows it as well as upstream_target_port: the AWS VPC CNI matches egress before the Service's DNAT."
  type        = number
  default     = 80
}

variable "upstream_target_port" {
  description = "Container port of the Prometheus pods (the Service's targetPort). The policy on Prometheus admits only this port; the gateway's egress policy allows it and upstream_port."
  type        = number
  default     = 9090
}

variable "upstream_pod_selector" {
  description = "Labels of the Prometheus pods (the Service's selector)."
  type        = map(string)
  default     = { app = "prometheus" }

  validation {
    condition     = length(var.upstream_pod_selector) > 0
    error_message = "upstream_pod_selector must not be empty: an empty selector would select every pod of the namespace."
  }
}

variable "cluster_domain" {
  description = "Cluster DNS domain, used to build the upstream URL."
  type        = string
  default     = "cluster.local"
}

variable "create_upstream_network_policy" {
  description = "Create a NetworkPolicy in upstream_namespace that allows ingress to the Prometheus port only from promgate and upstream_allowed_sources. Every other client of Prometheus is then cut off: list them first."
  type        = bool
  default     = true
}

variable "upstream_allowed_sources" {
  description = "Other clients allowed to reach the Prometheus port, besides promgate. Each entry sets namespace_labels and/or pod_labels (a pod selector, optionally in namespaces matched by labels), or cidr (an ipBlock)."
  type = list(object({
    namespace_labels = optional(map(string))
    pod_labels       = optional(map(string))
    cidr             = optional(string)
  }))
  default = []

  validation {
    condition = alltrue([
      for s in var.upstream_allowed_sources :
      (s.cidr != null) != (s.namespace_labels != null || s.pod_labels != null)
    ])
    error_message = "Each upstream_allowed_sources entry sets either cidr, or namespace_labels and/or pod_labels, not both and not neither."
  }

  validation {
    condition     = alltrue([for s in var.upstream_allowed_sources : s.cidr == null || can(cidrnetmask(s.cidr))])
    error_message = "cidr must be an IPv4 CIDR."
  }
}

variable "dns_namespace_labels" {
  description = "Labels of the namespace holding cluster DNS, to which promgate may send DNS queries."
  type        = map(string)
  default     = { "kubernetes.io/metadata.name" = "kube-system" }
}

variable "dns_pod_labels" {
  description = "Labels of the cluster DNS pods (CoreDNS keeps the kube-dns label)."
  type        = map(string)
  default     = { "k8s-app" = "kube-dns" }
}
