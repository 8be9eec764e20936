"""The Terraform module, the plain manifests and the Dockerfile agree with
each other and with the gateway binary's contract.

Run by scripts/check-deploy. Every value compared here is parsed from the
files (python-hcl2, PyYAML, tomllib), never matched as text, and the last
tests mutate parsed manifests to show that the checks do fail on drift.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import tomllib

import pytest

from deploy_model import (
    DOCKERFILE,
    ROOT,
    TERRAFORM_DIR,
    Manifests,
    TerraformModule,
    dockerfile_instructions,
    one,
    parse_tf_file,
)
from facts import differences, facts_from_manifests, facts_from_terraform

# The binary's contract (see docs/deploy.md): ports, paths and probe routes.
TUNNEL_PORT = 51820
ADMIN_PORT = 9586
CONFIG_FILE = "/etc/promgate/promgate.toml"
KEY_DIR = "/etc/promgate/key"
PEERS_DIR = "/etc/promgate/peers.d"
# The gateway's default drain after SIGTERM (serve --grace).
GATEWAY_GRACE_SECONDS = 10
# The sleep binary the Dockerfile puts into the image for the preStop hook.
SLEEP_BINARY = "/usr/local/bin/sleep"
# The names docs/deploy.md and config/kubernetes/README.md tell people to use.
PEERS_CONFIG_MAP = "promgate-peers"
KEY_SECRET = "promgate-key"
NONROOT_UID = 65532
UPSTREAM_HOST = "prometheus.default.svc.cluster.local"
UPSTREAM_NAMESPACE = "default"
UPSTREAM_POD_LABELS = {"app": "prometheus"}
UPSTREAM_POD_PORT = 9090
UPSTREAM_SERVICE_PORT = 80

# Differences between the two descriptions that are meant to be there.
INTENDED_DIFFERENCES = {
    # The module takes the endpoint from a variable or the load balancer; the
    # minikube manifest writes the usual minikube address.
    "gateway_config.gateway.endpoint",
    # Only the module stamps who manages the objects.
    "pod_labels.app.kubernetes.io/managed-by",
}


@pytest.fixture(scope="module")
def tf() -> TerraformModule:
    return TerraformModule.load()


@pytest.fixture(scope="module")
def manifests() -> Manifests:
    return Manifests.load()


@pytest.fixture(scope="module")
def tf_facts(tf: TerraformModule) -> dict:
    return facts_from_terraform(tf)


@pytest.fixture(scope="module")
def k8s_facts(manifests: Manifests) -> dict:
    return facts_from_manifests(manifests)


def contract_violations(f: dict) -> list[str]:
    """Every way a fact set breaks the gateway's deployment contract."""
    bad: list[str] = []

    def expect(cond: bool, msg: str) -> None:
        if not cond:
            bad.append(msg)

    # Ports: UDP tunnel and TCP admin, in separate Services.
    expect(
        f["tunnel_service"]["ports"] == [("wireguard", "UDP", TUNNEL_PORT, str(TUNNEL_PORT))],
        f"tunnel Service ports {f['tunnel_service']['ports']}",
    )
    expect(f["tunnel_service"]["sessionAffinity"] == "ClientIP", "tunnel Service needs sessionAffinity ClientIP")
    expect(
        f["admin_service"]["ports"] == [("admin", "TCP", ADMIN_PORT, str(ADMIN_PORT))],
        f"admin Service ports {f['admin_service']['ports']}",
    )
    expect(f["admin_service"]["type"] == "ClusterIP", "admin Service must be ClusterIP")
    expect(
        f["tunnel_service"]["name"] != f["admin_service"]["name"],
        "tunnel and admin must be separate Services",
    )
    # No container port is declared: the team's endpoints scrape job turns a
    # declared port that a Service does not cover into a target of that
    # Service (a DOWN UDP target, or 9586 scraped twice).
    expect(
        f["container_ports"] == [],
        f"container ports {f['container_ports']} (none may be declared; probes and Services use numbers)",
    )

    # Pod Security "restricted".
    pod, ctr = f["pod_security"], f["container_security"]
    for where, sc in (("pod", pod), ("container", ctr)):
        expect(sc["runAsNonRoot"] is True, f"{where} runAsNonRoot")
        expect(sc["runAsUser"] == NONROOT_UID, f"{where} runAsUser {sc['runAsUser']}")
        expect(sc["runAsGroup"] == NONROOT_UID, f"{where} runAsGroup {sc['runAsGroup']}")
        expect(sc["seccompProfile"] == "RuntimeDefault", f"{where} seccompProfile {sc['seccompProfile']}")
    expect(pod.get("fsGroup") == NONROOT_UID, "pod fsGroup must let the gateway read the 0440 key")
    expect(ctr.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation must be false")
    expect(ctr.get("privileged") is False, "privileged must be false")
    expect(ctr.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem must be true")
    expect(ctr.get("capabilitiesDrop") == ["ALL"], f"capabilities drop {ctr.get('capabilitiesDrop')}")
    expect(ctr.get("capabilitiesAdd") == [], f"capabilities add {ctr.get('capabilitiesAdd')}")
    expect(f["service_account_automount"] is False, "the pod must not mount a service account token")

    # Probes on the admin port.
    live, ready = f["liveness"], f["readiness"]
    expect((live["path"], live["port"]) == ("/healthz", str(ADMIN_PORT)), f"liveness {live}")
    expect((ready["path"], ready["port"]) == ("/readyz", str(ADMIN_PORT)), f"readiness {ready}")
    for name, probe in (("liveness", live), ("readiness", ready)):
        t = probe["timings"]
        expect(t["timeoutSeconds"] < t["periodSeconds"], f"{name} probe timeout {t['timeoutSeconds']}s must be below its period")
    # Readiness reacts within ~15 s (the NLB and Services stop sending to an
    # unready pod); liveness is slower than readiness, so a pod that only
    # lost its upstream is taken out of rotation, not restarted.
    rt, lt = ready["timings"], live["timings"]
    expect(rt["periodSeconds"] * rt["failureThreshold"] <= 15, f"readiness reacts after {rt['periodSeconds'] * rt['failureThreshold']}s")
    expect(
        lt["periodSeconds"] * lt["failureThreshold"] > rt["periodSeconds"] * rt["failureThreshold"],
        "liveness must give up later than readiness",
    )
    expect(
        f["tunnel_service"]["externalTrafficPolicy"] in ("Cluster", "Local"),
        f"externalTrafficPolicy {f['tunnel_service']['externalTrafficPolicy']}",
    )

    # Rollouts: a terminating pod keeps serving while the load balancer
    # deregisters it (preStop sleep), then drains within the grace period;
    # replicas spread over nodes.
    pre = f["pre_stop"]
    expect(
        pre is not None and len(pre) == 2 and pre[0] == SLEEP_BINARY and pre[1].isdigit(),
        f"preStop must be [{SLEEP_BINARY!r}, seconds]: {pre}",
    )
    if pre and len(pre) == 2 and pre[1].isdigit():
        expect(int(pre[1]) >= 15, f"preStop sleep {pre[1]}s must outlast the NLB's 15 s deregistration delay")
        expect(
            int(pre[1]) + GATEWAY_GRACE_SECONDS < f["termination_grace_period"],
            f"preStop {pre[1]}s + drain {GATEWAY_GRACE_SECONDS}s must fit in terminationGracePeriodSeconds {f['termination_grace_period']}",
        )
    expect(
        f["topology_spread"] == [(1, "kubernetes.io/hostname", "DoNotSchedule", tuple(sorted(f["selector"].items())))],
        f"topology spread {f['topology_spread']} (one per node, over the Deployment's own pods)",
    )

    # Mounts: config as one file, key and peers as whole directories.
    mounts, volumes = f["mounts"], f["volumes"]
    expect(set(mounts) == {"config", "key", "peers"}, f"volume mounts {sorted(mounts)}")
    if set(mounts) == {"config", "key", "peers"}:
        expect(mounts["config"] == (CONFIG_FILE, "promgate.toml", True), f"config mount {mounts['config']}")
        expect(mounts["key"] == (KEY_DIR, None, True), f"key mount {mounts['key']}")
        expect(
            mounts["peers"] == (PEERS_DIR, None, True),
            f"peers mount {mounts['peers']} (must be a read-only directory without subPath, for hot reload)",
        )
        expect(volumes.get("key", ("",))[0] == "secret", "the key volume must be a Secret")
        expect(volumes.get("peers", ("",))[0] == "configMap", "the peers volume must be a ConfigMap")
        expect(volumes.get("config", ("",))[0] == "configMap", "the config volume must be a ConfigMap")
        expect(
            volumes.get("peers", (None, None))[1] == PEERS_CONFIG_MAP,
            f"the peers volume must be ConfigMap {PEERS_CONFIG_MAP}, the name the docs use: {volumes.get('peers')}",
        )
        expect(
            volumes.get("key", (None, None))[1] == KEY_SECRET,
            f"the key volume must be Secret {KEY_SECRET}, the name the docs use: {volumes.get('key')}",
        )
        key_mode = volumes.get("key", (None, None, 0o777))[2]
        expect(key_mode & 0o007 == 0, f"the key must not be world-readable (mode {oct(key_mode)})")

    # promgate.toml agrees with the pod it runs in.
    gw = f["gateway_config"]["gateway"]
    expect(gw["listen_port"] == TUNNEL_PORT, f"listen_port {gw['listen_port']}")
    expect(
        f["gateway_config"]["admin"]["listen"].rsplit(":", 1)[-1] == str(ADMIN_PORT),
        f"admin listen {f['gateway_config']['admin']['listen']}",
    )
    unready = f["gateway_config"]["admin"].get("upstream_unready_after")
    expect(
        unready == "off" or re.fullmatch(r"([0-9]+(ms|s|m|h))+", str(unready)) is not None,
        f"admin.upstream_unready_after {unready!r} (rendered from the module variable, a duration or \"off\")",
    )
    expect(gw["private_key_file"] == KEY_DIR + "/private.key", f"private_key_file {gw['private_key_file']}")
    expect(gw["peers_dir"] == PEERS_DIR, f"peers_dir {gw['peers_dir']}")
    expect(re.fullmatch(rf"http://{re.escape(UPSTREAM_HOST)}(:80)?/?", gw["upstream"]) is not None, gw["upstream"])
    expect(gw["http_ports"] == [80], f"http_ports {gw['http_ports']}")
    expect(gw["address"] == "10.13.13.1/24", f"address {gw['address']}")

    # Labels and selectors all name the same pods.
    sel = f["selector"]
    expect(sel and sel.items() <= f["pod_labels"].items(), "pod labels must include the selector")
    expect(f["tunnel_service"]["selector"] == sel, "tunnel Service selector != Deployment selector")
    expect(f["admin_service"]["selector"] == sel, "admin Service selector != Deployment selector")
    expect(f["gateway_policy"]["podSelector"] == sel, "gateway NetworkPolicy podSelector != Deployment selector")

    # NetworkPolicies.
    gp = f["gateway_policy"]
    expect(gp["policyTypes"] == ["Egress", "Ingress"], f"gateway policy types {gp['policyTypes']}")
    expect(
        gp["ingress"] == sorted([[("UDP", TUNNEL_PORT)], [("TCP", ADMIN_PORT)]]),
        f"gateway policy ingress {gp['ingress']}",
    )
    # Both ports: Calico and Cilium match the pod port after DNAT, the AWS VPC
    # CNI's agent matches the Service port before it.
    upstream_rule = (sorted([("TCP", UPSTREAM_POD_PORT), ("TCP", UPSTREAM_SERVICE_PORT)]), [{
        "namespaceSelector": {"kubernetes.io/metadata.name": UPSTREAM_NAMESPACE},
        "podSelector": UPSTREAM_POD_LABELS,
    }])
    expect(upstream_rule in gp["egress"], f"gateway egress lacks Prometheus: {gp['egress']}")
    dns_ports = [("TCP", 53), ("UDP", 53)]
    expect(any(ports == dns_ports for ports, _ in gp["egress"]), "gateway egress lacks DNS")
    expect(len(gp["egress"]) == 2, f"gateway egress should be Prometheus and DNS only: {gp['egress']}")

    up = f["upstream_policy"]
    expect(up["namespace"] == UPSTREAM_NAMESPACE, f"Prometheus policy namespace {up['namespace']}")
    expect(up["podSelector"] == UPSTREAM_POD_LABELS, f"Prometheus policy podSelector {up['podSelector']}")
    expect(up["policyTypes"] == ["Ingress"], f"Prometheus policy types {up['policyTypes']}")
    expect(up["ingress_ports"] == [[("TCP", UPSTREAM_POD_PORT)]], f"Prometheus policy ports {up['ingress_ports']}")
    promgate_peer = {"namespaceSelector": {"kubernetes.io/metadata.name": "promgate"}, "podSelector": sel}
    expect(
        bool(up["ingress_from"]) and promgate_peer in up["ingress_from"][0],
        f"Prometheus policy must admit promgate pods: {up['ingress_from']}",
    )

    # Requests and limits.
    for kind in ("requests", "limits"):
        expect(set(f["resources"].get(kind, {})) >= {"cpu", "memory"}, f"resources.{kind} needs cpu and memory")

    return bad


def _drop(diffs: list[str]) -> list[str]:
    return [d for d in diffs if d.split(":", 1)[0] not in INTENDED_DIFFERENCES]


# ---------------------------------------------------------------------------
# The checks
# ---------------------------------------------------------------------------


def test_every_tf_file_parses():
    files = sorted(TERRAFORM_DIR.rglob("*.tf"))
    files = [p for p in files if ".terraform" not in p.parts]
    assert len(files) >= 10
    for path in files:
        assert isinstance(parse_tf_file(path), dict), path


@pytest.mark.parametrize("side", ["terraform", "manifests"])
def test_contract(side, tf_facts, k8s_facts):
    facts = tf_facts if side == "terraform" else k8s_facts
    assert contract_violations(facts) == []


def test_module_and_manifests_agree(tf_facts, k8s_facts):
    assert _drop(differences(tf_facts, k8s_facts)) == []


def test_tunnel_service_types(tf, manifests):
    assert tf.default("service_type") == "LoadBalancer"
    tunnel = one(tf.resource("kubernetes_service_v1", "tunnel")["spec"])
    assert tf.value(tunnel["type"]) == "LoadBalancer"
    k8s = manifests.get("Service", "promgate")["spec"]
    assert k8s["type"] == "NodePort"
    assert k8s["ports"][0]["nodePort"] == 31820
    # The manifest's endpoint is the NodePort it opens.
    cm = facts_from_manifests(manifests)["gateway_config"]["gateway"]
    assert cm["endpoint"].endswith(":31820")


def test_only_the_gateway_config_rolls_the_pods(tf, manifests):
    dep = tf.resource("kubernetes_deployment_v1", "gateway")
    meta = one(one(one(dep["spec"])["template"])["metadata"])
    annotations = meta.get("annotations", {})
    keys = {k.strip('"') for k in annotations}
    assert "checksum/config" in keys
    assert "local.gateway_config" in annotations.get('"checksum/config"', annotations.get("checksum/config", ""))
    # A peers change must reach the pod by hot reload, not by a restart.
    assert not any("peer" in k or "peer" in str(v) for k, v in annotations.items()), annotations
    k8s_meta = manifests.get("Deployment", "promgate")["spec"]["template"]["metadata"]
    assert not any("peer" in str(v) for v in k8s_meta.get("annotations", {}).values())


def test_peers_config_map_is_one_file_per_peer(tf):
    peers = tf.resource("kubernetes_config_map_v1", "peers")
    assert tf.value(one(peers["metadata"])["name"]) == "promgate-peers"
    assert peers["data"] == "${local.peer_files}"
    assert '"${p.name}.toml" =>' in tf.locals["peer_files"]
    # The template renders [[peer]] tables of the contract's shape.
    text = (TERRAFORM_DIR / "templates" / "peer.toml.tftpl").read_text()
    rendered = re.sub(
        r"\$\{jsonencode\((\w+)\)\}",
        lambda m: json.dumps(
            {"name": "alice", "public_key": "k=", "allowed_ips": ["10.13.13.2/32"], "role": "viewer", "allow_paths": []}[
                m.group(1)
            ]
        ),
        text,
    )
    assert tomllib.loads(rendered) == {
        "peer": [
            {"name": "alice", "public_key": "k=", "allowed_ips": ["10.13.13.2/32"], "role": "viewer", "allow_paths": []}
        ]
    }


def test_client_config_template():
    text = (TERRAFORM_DIR / "templates" / "client.conf.tftpl").read_text()
    body = [l for l in text.splitlines() if l and not l.startswith("#")]
    assert "PrivateKey = <CLIENT_PRIVATE_KEY>" in body
    assert "AllowedIPs = ${gateway_ip}/32" in body
    assert "PersistentKeepalive = 25" in body
    assert body.index("[Interface]") < body.index("[Peer]")


@pytest.mark.parametrize("side", ["terraform", "manifests"])
def test_namespace_enforces_restricted(side, tf, manifests):
    if side == "terraform":
        labels = tf.value(one(tf.resource("kubernetes_namespace_v1", "this")["metadata"])["labels"])
        ns_name = tf.default("namespace")
    else:
        ns = manifests.get("Namespace", "promgate")
        labels, ns_name = ns["metadata"]["labels"], ns["metadata"]["name"]
    assert ns_name == "promgate"
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_dockerfile_matches_the_pod(k8s_facts):
    instrs = dockerfile_instructions(DOCKERFILE)
    froms = [a for i, a in instrs if i == "FROM"]
    assert len(froms) >= 2, "multi-stage build"
    assert froms[-1].startswith("gcr.io/distroless/") and froms[-1].endswith(":nonroot")
    assert not any(":latest" in f for f in froms)
    users = [a for i, a in instrs if i == "USER"]
    assert users and users[-1].split(":")[0] == str(k8s_facts["pod_security"]["runAsUser"])
    exposed = set(" ".join(a for i, a in instrs if i == "EXPOSE").split())
    assert exposed == {f"{TUNNEL_PORT}/udp", f"{ADMIN_PORT}/tcp"}
    final = instrs[max(n for n, (i, _) in enumerate(instrs) if i == "FROM"):]
    copied = [a.split()[-1] for i, a in final if i == "COPY"]
    assert k8s_facts["pre_stop"][0] in copied, f"the preStop hook runs {k8s_facts['pre_stop'][0]}, which the image lacks"
    entry = json.loads(next(a for i, a in instrs if i == "ENTRYPOINT"))
    assert entry == ["/usr/local/bin/promgate", "serve", "--config", k8s_facts["mounts"]["config"][0]]


def test_examples_use_the_module():
    mk = parse_tf_file(TERRAFORM_DIR / "examples" / "minikube" / "main.tf")
    eks = parse_tf_file(TERRAFORM_DIR / "examples" / "eks" / "main.tf")
    mk_mod = one(mk["module"])["promgate"]
    eks_mod = one(eks["module"])["promgate"]
    assert mk_mod["source"] == eks_mod["source"] == "../.."
    assert mk_mod["service_type"] == "NodePort"
    assert eks_mod["service_type"] == "LoadBalancer"
    annotations = eks_mod["service_annotations"]
    assert annotations["service.beta.kubernetes.io/aws-load-balancer-nlb-target-type"] == "ip"
    assert annotations["service.beta.kubernetes.io/aws-load-balancer-healthcheck-port"] == str(ADMIN_PORT)
    assert annotations["service.beta.kubernetes.io/aws-load-balancer-healthcheck-path"] == "/readyz"
    assert eks_mod["load_balancer_class"] == "service.k8s.aws/nlb"
    assert eks_mod["pod_readiness_gate_inject"] is True
    assert eks_mod["replicas"] >= 2
    # Rollouts: deregister within 15 s and close the UDP flows then (so the
    # client's next packets reach a live pod), cross-zone, source-IP
    # stickiness (kube-proxy's ClientIP affinity is bypassed by IP targets).
    tg = dict(
        kv.split("=", 1)
        for kv in annotations["service.beta.kubernetes.io/aws-load-balancer-target-group-attributes"].split(",")
    )
    assert tg["stickiness.enabled"] == "true" and tg["stickiness.type"] == "source_ip"
    assert tg["deregistration_delay.connection_termination.enabled"] == "true"
    dereg = int(tg["deregistration_delay.timeout_seconds"])
    assert dereg <= 30
    lb = dict(
        kv.split("=", 1) for kv in annotations["service.beta.kubernetes.io/aws-load-balancer-attributes"].split(",")
    )
    assert lb["load_balancing.cross_zone.enabled"] == "true"
    # The pods keep serving for longer than the deregistration takes.
    tf = TerraformModule.load()
    pre_stop = eks_mod.get("pre_stop_sleep_seconds", tf.default("pre_stop_sleep_seconds"))
    assert pre_stop > dereg, f"preStop {pre_stop}s must outlast the {dereg}s deregistration delay"


# ---------------------------------------------------------------------------
# The checks can fail: mutate parsed manifests and watch them catch it.
# ---------------------------------------------------------------------------


def _mutated(manifests: Manifests, kind: str, name: str, change) -> Manifests:
    objects = copy.deepcopy(manifests.objects)
    for (k, _, n), obj in objects.items():
        if k == kind and n == name:
            change(obj)
    return Manifests(objects)


MUTATIONS = {
    "writable root fs": (
        "Deployment", "promgate",
        lambda d: d["spec"]["template"]["spec"]["containers"][0]["securityContext"].update(readOnlyRootFilesystem=False),
    ),
    "peers mounted with subPath": (
        "Deployment", "promgate",
        lambda d: d["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][2].update(subPath="alice.toml"),
    ),
    "tunnel port moved": (
        "Service", "promgate", lambda s: s["spec"]["ports"][0].update(port=51821, targetPort=51821),
    ),
    "UDP container port declared": (
        "Deployment", "promgate",
        lambda d: d["spec"]["template"]["spec"]["containers"][0].setdefault("ports", []).append(
            {"name": "wireguard", "containerPort": TUNNEL_PORT, "protocol": "UDP"}
        ),
    ),
    "admin container port declared": (
        "Deployment", "promgate",
        lambda d: d["spec"]["template"]["spec"]["containers"][0].update(
            ports=[{"name": "admin", "containerPort": ADMIN_PORT, "protocol": "TCP"}]
        ),
    ),
    "readiness path": (
        "Deployment", "promgate",
        lambda d: d["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"].update(path="/ready"),
    ),
    "egress without the Service port (AWS VPC CNI)": (
        "NetworkPolicy", "promgate",
        lambda p: p["spec"]["egress"][0].update(ports=[{"port": UPSTREAM_POD_PORT, "protocol": "TCP"}]),
    ),
    "readiness probe slower": (
        "Deployment", "promgate",
        lambda d: d["spec"]["template"]["spec"]["containers"][0]["readinessProbe"].update(periodSeconds=30),
    ),
    "peers ConfigMap renamed in the Deployment": (
        "Deployment", "promgate",
        lambda d: d["spec"]["template"]["spec"]["volumes"][2]["configMap"].update(name="promgate-peer-files"),
    ),
    "no preStop": (
        "Deployment", "promgate", lambda d: d["spec"]["template"]["spec"]["containers"][0].pop("lifecycle"),
    ),
    "grace period too short for preStop": (
        "Deployment", "promgate", lambda d: d["spec"]["template"]["spec"].update(terminationGracePeriodSeconds=25),
    ),
    "spread over zones only": (
        "Deployment", "promgate",
        lambda d: d["spec"]["template"]["spec"]["topologySpreadConstraints"][0].update(topologyKey="topology.kubernetes.io/zone"),
    ),
    "selector label": (
        "Service", "promgate-admin", lambda s: s["spec"]["selector"].update({"app.kubernetes.io/name": "other"}),
    ),
}


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_checks_catch_drift(mutation, manifests, tf_facts):
    kind, name, change = MUTATIONS[mutation]
    facts = facts_from_manifests(_mutated(manifests, kind, name, change))
    assert _drop(differences(tf_facts, facts)), f"{mutation}: no difference found"
    assert contract_violations(facts), f"{mutation}: no contract violation found"


TF_MUTATIONS = {
    "writable root fs": ("deployment.tf", "read_only_root_filesystem  = true", "read_only_root_filesystem  = false"),
    "admin port default": ("variables.tf", "default     = 9586", "default     = 9587"),
    "upstream_unready_after default": ("variables.tf", 'default     = "60s"', 'default     = "1 minute"'),
    "peers dir": ("main.tf", '"/etc/promgate/peers.d"', '"/etc/promgate/peers"'),
    "liveness path": ("deployment.tf", 'path = "/healthz"', 'path = "/health"'),
    "peers ConfigMap renamed": ("configmap.tf", 'name      = "${var.name}-peers"', 'name      = "${var.name}-peer-files"'),
    "readiness timing": ("deployment.tf", "failure_threshold = 2", "failure_threshold = 5"),
    "preStop sleep default": ("variables.tf", "default     = 20", "default     = 5"),
    "spread may share a node": ("variables.tf", 'default     = "DoNotSchedule"', 'default     = "ScheduleAnyway"'),
    "egress without the Service port": (
        "networkpolicy.tf", "port     = tostring(local.first_upstream_port)", "port     = tostring(local.first_upstream_target_port)",
    ),
}


@pytest.mark.parametrize("mutation", sorted(TF_MUTATIONS))
def test_checks_catch_terraform_drift(mutation, tmp_path, k8s_facts):
    filename, old, new = TF_MUTATIONS[mutation]
    copy_dir = tmp_path / "terraform"
    shutil.copytree(TERRAFORM_DIR, copy_dir, ignore=shutil.ignore_patterns("examples", ".terraform"))
    path = copy_dir / filename
    text = path.read_text()
    assert text.count(old) == 1, f"{mutation}: pattern {old!r} must occur once in {filename}"
    path.write_text(text.replace(old, new))
    facts = facts_from_terraform(TerraformModule.load(copy_dir))
    assert _drop(differences(facts, k8s_facts)), f"{mutation}: no difference found"
    assert contract_violations(facts), f"{mutation}: no contract violation found"


# ---------------------------------------------------------------------------
# Secrets stay out of git and out of the image build context.
# ---------------------------------------------------------------------------

SECRET_PATHS = [
    "terraform.tfstate",
    "terraform/examples/eks/terraform.tfstate",
    "terraform/examples/eks/terraform.tfstate.backup",
    "terraform/examples/minikube/.terraform/providers/x",
    "terraform/examples/eks/peers.tfvars",
    "terraform/examples/eks/prod.tfvars.json",
    "terraform/examples/eks/plan.tfplan",
    "gateway.key",
    "alice.key",
    "promgate.conf",
    "clients/bob.conf",
    "peers.d/alice.toml",
]


@pytest.mark.parametrize("path", SECRET_PATHS)
def test_gitignore_covers_secrets(path):
    git = shutil.which("git")
    if git is None:
        pytest.skip("git is not installed")
    # --no-index: judge the path by the ignore rules alone, tracked or not.
    res = subprocess.run([git, "-C", str(ROOT), "check-ignore", "-q", "--no-index", path])
    assert res.returncode == 0, f"{path} is not ignored by .gitignore"


@pytest.mark.parametrize("path", ["terraform/examples/eks/peers.tfvars.example", "terraform/main.tf", "src/main.rs"])
def test_gitignore_keeps_sources(path):
    git = shutil.which("git")
    if git is None:
        pytest.skip("git is not installed")
    res = subprocess.run([git, "-C", str(ROOT), "check-ignore", "-q", "--no-index", path])
    assert res.returncode == 1, f"{path} must not be ignored"


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    return [l.strip() for l in lines if l.strip() and not l.strip().startswith("#")]


def test_dockerignore_is_an_allow_list():
    pats = dockerignore_patterns()
    assert pats[0] == "*", "the first pattern must exclude everything"
    rest = pats[1:]
    includes = [i for i, p in enumerate(rest) if p.startswith("!")]
    excludes = [i for i, p in enumerate(rest) if not p.startswith("!")]
    assert includes, "something must be re-included after '*'"
    # Exclusions (target/, .git, keys, state inside the re-included trees)
    # must come after every re-include: the last matching pattern wins.
    assert not excludes or max(includes) < min(excludes), f"an exclusion precedes a re-include: {rest}"
    allowed = {rest[i][1:].split("/", 1)[0] for i in includes}
    assert allowed == {"Cargo.toml", "Cargo.lock", "src", "benches", "crates", "tools", "patches"}, allowed


def _copy_sources(args: str) -> list[str] | None:
    """Context sources of a COPY (None for COPY --from=...)."""
    words = [w for w in args.split() if not w.startswith("--") or w.startswith("--from")]
    if any(w.startswith("--from") for w in words):
        return None
    return words[:-1]


def test_dockerfile_builds_dependencies_before_sources():
    instrs = dockerfile_instructions(DOCKERFILE)
    copies = [(n, _copy_sources(a)) for n, (i, a) in enumerate(instrs) if i == "COPY"]
    context = [(n, srcs) for n, srcs in copies if srcs is not None]
    assert context, "the build copies something from the context"
    for _, srcs in context:
        assert "." not in srcs and "./" not in srcs, "COPY . . rebuilds every dependency on any edit"
    first_n, first = context[0]
    assert sorted(first) == ["Cargo.lock", "Cargo.toml"], f"the first COPY must be the manifests only: {first}"
    later = [n for n, srcs in context if any(s.rstrip("/") in ("src", "benches") for s in srcs)]
    assert later, "the sources are copied in a later step"
    builds = [n for n, (i, a) in enumerate(instrs) if i == "RUN" and "cargo build" in a]
    assert any(first_n < b < min(later) for b in builds), "dependencies build in their own layer, before the sources arrive"
    assert any(b > max(later) for b in builds), "the binary builds after the sources arrive"
    # A [patch] path (the patched boringtun) is a dependency: in the image
    # before the dependency build, or that build fails.
    dep_build = min(b for b in builds if b > first_n)
    before = {s.rstrip("/").split("/", 1)[0] for n, srcs in context if n < dep_build for s in srcs}
    manifest = tomllib.loads((ROOT / "Cargo.toml").read_text(encoding="utf-8"))
    for name, spec in manifest.get("patch", {}).get("crates-io", {}).items():
        if "path" in spec:
            top = spec["path"].split("/", 1)[0]
            assert top in before, f"the patched {name} ({spec['path']}) is copied after the dependency build"
    # Workspace members' manifests too: cargo reads every member's
    # Cargo.toml before it builds anything.
    for member in manifest.get("workspace", {}).get("members", []):
        if member != ".":
            top = member.split("/", 1)[0]
            assert top in before, f"workspace member {member} is copied after the dependency build"
    # Everything COPY reads from the context is let in by .dockerignore.
    allowed = {p[1:].split("/", 1)[0] for p in dockerignore_patterns()[1:]}
    for _, srcs in context:
        for s in srcs:
            assert s.rstrip("/").split("/", 1)[0] in allowed, f"{s} is copied but .dockerignore keeps it out"



# ---------------------------------------------------------------------------
# Re-applying the plain manifests cannot wipe the peers, and every object the
# pod mounts is either in the apply set or made by a documented command.
# ---------------------------------------------------------------------------

MANIFEST_README = ROOT / "config" / "kubernetes" / "README.md"


def _pod_volume_sources(manifests: Manifests) -> dict[str, tuple[str, str]]:
    pod = manifests.get("Deployment", "promgate")["spec"]["template"]["spec"]
    out = {}
    for v in pod["volumes"]:
        if "configMap" in v:
            out[v["name"]] = ("ConfigMap", v["configMap"]["name"])
        elif "secret" in v:
            out[v["name"]] = ("Secret", v["secret"]["secretName"])
    return out


def test_peers_are_not_in_the_apply_set(manifests, tf):
    kind, name = _pod_volume_sources(manifests)["peers"]
    assert kind == "ConfigMap"
    assert not [o for (k, _, n), o in manifests.objects.items() if k == "ConfigMap" and n == name], (
        f"ConfigMap {name} is in config/kubernetes/: `kubectl apply -f` would merge it over the real peers"
    )
    # The module's peers ConfigMap has the same name.
    assert tf.value(one(tf.resource("kubernetes_config_map_v1", "peers")["metadata"])["name"]) == name


def test_every_mounted_object_exists_or_is_documented(manifests):
    readme = " ".join(MANIFEST_README.read_text(encoding="utf-8").replace("\\\n", " ").split())
    made = {("ConfigMap", n) for n in re.findall(r"create configmap ([a-z0-9-]+)", readme)}
    made |= {("Secret", n) for n in re.findall(r"create secret generic ([a-z0-9-]+)", readme)}
    in_set = {(k, n) for (k, _, n) in manifests.objects}
    for vol, (kind, name) in _pod_volume_sources(manifests).items():
        assert (kind, name) in in_set or (kind, name) in made, (
            f"volume {vol}: {kind} {name} is neither in config/kubernetes/ nor made by a command in its README"
        )
    # The peers ConfigMap is made (with kubectl apply, so that it can be
    # repeated), never shipped.
    assert ("ConfigMap", _pod_volume_sources(manifests)["peers"][1]) in made
    assert re.search(r"create configmap \S+ --from-file=peers\.d/ --dry-run=client -o yaml \| kubectl apply -f -", readme)



# ---------------------------------------------------------------------------
# The documented commands run where the team runs them (Linux and macOS).
# ---------------------------------------------------------------------------

DOCS = [ROOT / "docs" / "deploy.md", ROOT / "config" / "kubernetes" / "README.md", ROOT / "README.md"]


def _shell_lines(path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    blocks = re.findall(r"```(?:sh|bash|shell)\n(.*?)```", text, re.S)
    return [l.strip() for b in blocks for l in b.replace("\\\n", " ").splitlines() if l.strip()]


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_documented_commands_are_portable_and_keep_keys_private(path):
    lines = _shell_lines(path)
    assert lines, f"{path}: no shell blocks found"
    for line in lines:
        cmd = line.split("#", 1)[0]
        # GNU sed -i takes no suffix, BSD sed -i requires one: neither form runs on both.
        assert not re.search(r"\bsed\b[^|;]*\s-i", cmd), f"{path}: `{line}` uses sed -i"
        # A private key written to a file is written under umask 077.
        if re.search(r"\bgenkey\b", cmd) and ">" in cmd.split("genkey", 1)[1]:
            assert "umask 077" in cmd, f"{path}: `{line}` writes a key without umask 077"
        if "tee" in cmd and "genkey" in cmd:
            pytest.fail(f"{path}: `{line}` writes a key with tee (no umask 077)")
        # A client config with a private key in it, likewise.
        if "<CLIENT_PRIVATE_KEY>" in cmd and ">" in cmd:
            assert "umask 077" in cmd, f"{path}: `{line}` writes a client config without umask 077"


def test_eks_path_starts_from_the_example():
    text = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    lines = _shell_lines(ROOT / "docs" / "deploy.md")
    applies = [l for l in lines if re.search(r"terraform\b.*\bapply\b", l)]
    assert applies and all("examples/eks" in l or "examples/minikube" in l for l in applies), applies
    assert "AWS Load Balancer Controller" in text
    assert "describe-target-health" in text, "the docs show how to check the NLB's UDP target health"
    assert "kubectl apply -f config/kubernetes/" in (ROOT / "config" / "kubernetes" / "README.md").read_text()


# ---------------------------------------------------------------------------
# The Alertmanager variant of the manifests (config/kubernetes/alertmanager/):
# the same ConfigMap and gateway policy, with Alertmanager beside Prometheus.
# ---------------------------------------------------------------------------

VARIANT_DIR = ROOT / "config" / "kubernetes" / "alertmanager"
ALERTMANAGER_URL = "http://alertmanager.default.svc.cluster.local:9093"
ALERTMANAGER_POD_LABELS = {"app.kubernetes.io/name": "alertmanager"}


def _variant(kind: str, name: str) -> dict:
    import yaml

    found = []
    for path in sorted(VARIANT_DIR.glob("*.yaml")):
        with path.open(encoding="utf-8") as f:
            found += [d for d in yaml.safe_load_all(f) if d and d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{VARIANT_DIR}: {len(found)} {kind} {name}"
    return found[0]


def test_the_alertmanager_variant_differs_only_in_its_upstreams(manifests):
    base_cm = manifests.get("ConfigMap", "promgate-config")
    var_cm = _variant("ConfigMap", "promgate-config")
    assert var_cm["metadata"] == base_cm["metadata"]
    base = tomllib.loads(base_cm["data"]["promgate.toml"])
    var = tomllib.loads(var_cm["data"]["promgate.toml"])
    gateway = dict(base["gateway"])
    url, ports = gateway.pop("upstream"), gateway.pop("http_ports")
    assert var["gateway"] == gateway, "the variant's [gateway] must be the base's without upstream and http_ports"
    assert var["admin"] == base["admin"]
    assert var["upstream"] == [
        {"name": "prometheus", "url": url, "port": ports[0], "kind": "prometheus"},
        {"name": "alertmanager", "url": ALERTMANAGER_URL, "port": 9093, "kind": "alertmanager"},
    ]
    assert set(var) == {"gateway", "admin", "upstream"}

    base_np = manifests.get("NetworkPolicy", "promgate")
    var_np = _variant("NetworkPolicy", "promgate")
    assert var_np["metadata"] == base_np["metadata"]
    base_spec, var_spec = dict(base_np["spec"]), dict(var_np["spec"])
    base_egress, var_egress = base_spec.pop("egress"), var_spec.pop("egress")
    assert var_spec == base_spec, "only the egress rules may differ"
    extra = [r for r in var_egress if r not in base_egress]
    assert len(var_egress) == len(base_egress) + 1 and len(extra) == 1, var_egress
    assert extra[0] == {
        "ports": [{"port": 9093, "protocol": "TCP"}],
        "to": [{
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": UPSTREAM_NAMESPACE}},
            "podSelector": {"matchLabels": ALERTMANAGER_POD_LABELS},
        }],
    }


def test_the_alertmanager_variant_passes_promgate_check(tmp_path):
    binary = os.environ.get("PROMGATE_BIN")
    if not binary:
        pytest.skip("PROMGATE_BIN is not set")
    text = _variant("ConfigMap", "promgate-config")["data"]["promgate.toml"]
    (tmp_path / "private.key").write_text("QEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEA=\n")
    (tmp_path / "private.key").chmod(0o600)
    (tmp_path / "peers.d").mkdir()
    text = text.replace(KEY_DIR + "/private.key", str(tmp_path / "private.key")).replace(PEERS_DIR, str(tmp_path / "peers.d"))
    cfg = tmp_path / "promgate.toml"
    cfg.write_text(text)
    res = subprocess.run([binary, "check", "--config", str(cfg)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
