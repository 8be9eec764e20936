"""The deployment facts that must agree between the Terraform module and the
plain manifests, extracted from each into the same plain-dict shape.

Each ``*_from_terraform`` / ``*_from_manifests`` pair returns equal values when
the two descriptions agree. Values are those of the module's variable
defaults, except where a difference is intended (tunnel Service type,
NodePort, image), which the facts leave out and the tests check on their own.
"""

from __future__ import annotations

import tomllib
from typing import Any

from deploy_model import Manifests, TerraformModule, gateway_toml, one


def _octal(mode: Any) -> int:
    """defaultMode: "0440" (Terraform, octal string) or 288 (YAML, int)."""
    return int(mode, 8) if isinstance(mode, str) else int(mode)


def _blocks(body: dict, key: str) -> list[dict]:
    val = body.get(key, [])
    return val if isinstance(val, list) else [val]


# ---------------------------------------------------------------------------
# Terraform
# ---------------------------------------------------------------------------


def _tf_pod(tf: TerraformModule) -> tuple[dict, dict]:
    dep = tf.resource("kubernetes_deployment_v1", "gateway")
    spec = one(dep["spec"], "deployment spec")
    template = one(spec["template"], "template")
    pod = one(template["spec"], "pod spec")
    containers = _blocks(pod, "container")
    assert len(containers) == 1, "the gateway pod has exactly one container"
    return pod, containers[0]


def _tf_security(block: dict) -> dict:
    sc = one(block["security_context"], "security_context")
    out = {
        "runAsNonRoot": tf_bool(sc.get("run_as_non_root")),
        "runAsUser": sc.get("run_as_user"),
        "runAsGroup": sc.get("run_as_group"),
        "seccompProfile": one(sc["seccomp_profile"])["type"] if "seccomp_profile" in sc else None,
    }
    if "fs_group" in sc:
        out["fsGroup"] = sc["fs_group"]
    if "allow_privilege_escalation" in sc:
        out["allowPrivilegeEscalation"] = tf_bool(sc["allow_privilege_escalation"])
        out["privileged"] = tf_bool(sc.get("privileged"))
        out["readOnlyRootFilesystem"] = tf_bool(sc.get("read_only_root_filesystem"))
        out["capabilitiesDrop"] = list(one(sc["capabilities"]).get("drop", []))
        out["capabilitiesAdd"] = list(one(sc["capabilities"]).get("add", []))
    return out


def tf_bool(v: Any) -> Any:
    return {"true": True, "false": False}.get(v, v) if isinstance(v, str) else v


# Kubernetes' defaults for probe fields left out.
PROBE_DEFAULTS = {"initialDelaySeconds": 0, "periodSeconds": 10, "timeoutSeconds": 1, "failureThreshold": 3, "successThreshold": 1}
_TF_PROBE_FIELDS = {
    "initial_delay_seconds": "initialDelaySeconds",
    "period_seconds": "periodSeconds",
    "timeout_seconds": "timeoutSeconds",
    "failure_threshold": "failureThreshold",
    "success_threshold": "successThreshold",
}


def _tf_probe(tf: TerraformModule, container: dict, key: str) -> dict:
    probe = one(container[key], key)
    get = one(probe["http_get"], "http_get")
    timings = dict(PROBE_DEFAULTS)
    timings.update({k8s: int(tf.value(probe[tf_key])) for tf_key, k8s in _TF_PROBE_FIELDS.items() if tf_key in probe})
    return {"path": tf.value(get["path"]), "port": str(tf.value(get["port"])), "timings": timings}


def _k8s_probe(probe: dict) -> dict:
    timings = dict(PROBE_DEFAULTS)
    timings.update({k: int(probe[k]) for k in PROBE_DEFAULTS if k in probe})
    return {"path": probe["httpGet"]["path"], "port": str(probe["httpGet"]["port"]), "timings": timings}


def facts_from_terraform(tf: TerraformModule) -> dict:
    pod, c = _tf_pod(tf)
    dep = tf.resource("kubernetes_deployment_v1", "gateway")
    dep_spec = one(dep["spec"])
    template_meta = one(one(dep_spec["template"])["metadata"])

    volumes = {}
    for v in _blocks(pod, "volume"):
        if "config_map" in v:
            src = one(v["config_map"])
            volumes[v["name"]] = ("configMap", tf.value(src["name"]), _octal(src["default_mode"]))
        elif "secret" in v:
            src = one(v["secret"])
            volumes[v["name"]] = ("secret", tf.value(src["secret_name"]), _octal(src["default_mode"]))
        else:
            volumes[v["name"]] = ("other", None, None)

    tunnel = tf.resource("kubernetes_service_v1", "tunnel")
    admin = tf.resource("kubernetes_service_v1", "admin")
    tunnel_spec, admin_spec = one(tunnel["spec"]), one(admin["spec"])

    def svc_ports(spec: dict) -> list[tuple]:
        return sorted(
            (tf.value(p["name"]), p["protocol"], int(tf.value(p["port"])), str(tf.value(p["target_port"])))
            for p in _blocks(spec, "port")
        )

    gw_np = tf.resource("kubernetes_network_policy_v1", "gateway")
    gw_np_spec = one(gw_np["spec"])
    up_np = tf.resource("kubernetes_network_policy_v1", "upstream")
    up_np_spec = one(up_np["spec"])

    def np_ports(rule: dict) -> list[tuple]:
        return sorted((p["protocol"], int(tf.value(p["port"]))) for p in _blocks(rule, "ports"))

    def np_peers(rule: dict, key: str) -> list[dict]:
        out = []
        for peer in _blocks(rule, key):
            entry = {}
            if "namespace_selector" in peer:
                entry["namespaceSelector"] = tf.value(one(peer["namespace_selector"])["match_labels"])
            if "pod_selector" in peer:
                entry["podSelector"] = tf.value(one(peer["pod_selector"])["match_labels"])
            out.append(entry)
        return out

    resources = tf.default("resources")

    gateway = tomllib.loads(tf.render_template("gateway_config", {"endpoint": "<endpoint>"}))

    return {
        "selector": tf.value(one(dep_spec["selector"])["match_labels"]),
        "pod_labels": tf.value(template_meta["labels"]),
        "service_account_automount": tf_bool(pod.get("automount_service_account_token")),
        "pod_security": _tf_security(pod),
        "container_security": _tf_security(c),
        "container_ports": sorted(
            (tf.value(p["name"]), int(tf.value(p["container_port"])), p["protocol"]) for p in _blocks(c, "port")
        ),
        "pre_stop": [str(tf.value(x)) for x in one(one(one(c["lifecycle"])["pre_stop"])["exec"])["command"]]
        if "lifecycle" in c
        else None,
        "termination_grace_period": int(tf.value(pod.get("termination_grace_period_seconds", 30))),
        "topology_spread": sorted(
            (
                int(tf.value(t["max_skew"])),
                tf.value(t["topology_key"]),
                tf.value(t["when_unsatisfiable"]),
                tuple(sorted(tf.value(one(t["label_selector"])["match_labels"]).items())),
            )
            for t in _blocks(pod, "topology_spread_constraint")
        ),
        "liveness": _tf_probe(tf, c, "liveness_probe"),
        "readiness": _tf_probe(tf, c, "readiness_probe"),
        "mounts": {
            m["name"]: (tf.value(m["mount_path"]), tf.value(m.get("sub_path")), tf_bool(m.get("read_only")))
            for m in _blocks(c, "volume_mount")
        },
        "volumes": volumes,
        "resources": {"requests": resources["requests"], "limits": resources["limits"]},
        "tunnel_service": {
            "name": tf.value(one(tunnel["metadata"])["name"]),
            "selector": tf.value(tunnel_spec["selector"]),
            "ports": svc_ports(tunnel_spec),
            "sessionAffinity": tunnel_spec["session_affinity"],
            "sessionAffinityTimeout": int(
                tf.value(one(one(tunnel_spec["session_affinity_config"])["client_ip"])["timeout_seconds"])
            ),
            "externalTrafficPolicy": tf.value(tunnel_spec["external_traffic_policy"]),
        },
        "admin_service": {
            "name": tf.value(one(admin["metadata"])["name"]),
            "type": admin_spec["type"],
            "selector": tf.value(admin_spec["selector"]),
            "ports": svc_ports(admin_spec),
        },
        "gateway_policy": {
            "podSelector": tf.value(one(gw_np_spec["pod_selector"])["match_labels"]),
            "policyTypes": sorted(gw_np_spec["policy_types"]),
            "ingress": sorted(np_ports(r) for r in _blocks(gw_np_spec, "ingress")),
            "ingress_sources": [np_peers(r, "from") for r in _blocks(gw_np_spec, "ingress")],
            "egress": sorted((np_ports(r), np_peers(r, "to")) for r in _blocks(gw_np_spec, "egress")),
        },
        "upstream_policy": {
            "namespace": tf.value(one(up_np["metadata"])["namespace"]),
            "podSelector": tf.value(one(up_np_spec["pod_selector"])["match_labels"]),
            "policyTypes": sorted(up_np_spec["policy_types"]),
            "ingress_ports": [np_ports(r) for r in _blocks(up_np_spec, "ingress")],
            "ingress_from": [np_peers(r, "from") for r in _blocks(up_np_spec, "ingress")],
        },
        "gateway_config": gateway,
    }


# ---------------------------------------------------------------------------
# Manifests
# ---------------------------------------------------------------------------


def _k8s_security(sc: dict) -> dict:
    out = {
        "runAsNonRoot": sc.get("runAsNonRoot"),
        "runAsUser": sc.get("runAsUser"),
        "runAsGroup": sc.get("runAsGroup"),
        "seccompProfile": sc.get("seccompProfile", {}).get("type"),
    }
    if "fsGroup" in sc:
        out["fsGroup"] = sc["fsGroup"]
    if "allowPrivilegeEscalation" in sc:
        out["allowPrivilegeEscalation"] = sc["allowPrivilegeEscalation"]
        out["privileged"] = sc.get("privileged")
        out["readOnlyRootFilesystem"] = sc.get("readOnlyRootFilesystem")
        out["capabilitiesDrop"] = list(sc.get("capabilities", {}).get("drop", []))
        out["capabilitiesAdd"] = list(sc.get("capabilities", {}).get("add", []))
    return out


def facts_from_manifests(m: Manifests) -> dict:
    dep = m.get("Deployment", "promgate")
    pod = dep["spec"]["template"]["spec"]
    containers = pod["containers"]
    assert len(containers) == 1, "the gateway pod has exactly one container"
    c = containers[0]

    volumes = {}
    for v in pod.get("volumes", []):
        if "configMap" in v:
            volumes[v["name"]] = ("configMap", v["configMap"]["name"], _octal(v["configMap"]["defaultMode"]))
        elif "secret" in v:
            volumes[v["name"]] = ("secret", v["secret"]["secretName"], _octal(v["secret"]["defaultMode"]))
        else:
            volumes[v["name"]] = ("other", None, None)

    tunnel = m.get("Service", "promgate")
    admin = m.get("Service", "promgate-admin")

    def svc_ports(spec: dict) -> list[tuple]:
        return sorted((p["name"], p["protocol"], int(p["port"]), str(p["targetPort"])) for p in spec["ports"])

    gw_np = m.get("NetworkPolicy", "promgate")["spec"]
    up_np_obj = m.get("NetworkPolicy", "promgate-to-prometheus")
    up_np = up_np_obj["spec"]

    def np_ports(rule: dict) -> list[tuple]:
        return sorted((p["protocol"], int(p["port"])) for p in rule.get("ports", []))

    def np_peers(rule: dict, key: str) -> list[dict]:
        out = []
        for peer in rule.get(key, []):
            entry = {}
            if "namespaceSelector" in peer:
                entry["namespaceSelector"] = peer["namespaceSelector"]["matchLabels"]
            if "podSelector" in peer:
                entry["podSelector"] = peer["podSelector"]["matchLabels"]
            out.append(entry)
        return out

    return {
        "selector": dep["spec"]["selector"]["matchLabels"],
        "pod_labels": dep["spec"]["template"]["metadata"]["labels"],
        "service_account_automount": pod.get("automountServiceAccountToken"),
        "pod_security": _k8s_security(pod["securityContext"]),
        "container_security": _k8s_security(c["securityContext"]),
        "container_ports": sorted((p["name"], int(p["containerPort"]), p["protocol"]) for p in c.get("ports", [])),
        "pre_stop": [str(x) for x in c["lifecycle"]["preStop"]["exec"]["command"]] if "lifecycle" in c else None,
        "termination_grace_period": int(pod.get("terminationGracePeriodSeconds", 30)),
        "topology_spread": sorted(
            (
                int(t["maxSkew"]),
                t["topologyKey"],
                t["whenUnsatisfiable"],
                tuple(sorted(t["labelSelector"]["matchLabels"].items())),
            )
            for t in pod.get("topologySpreadConstraints", [])
        ),
        "liveness": _k8s_probe(c["livenessProbe"]),
        "readiness": _k8s_probe(c["readinessProbe"]),
        "mounts": {
            vm["name"]: (vm["mountPath"], vm.get("subPath"), vm.get("readOnly")) for vm in c.get("volumeMounts", [])
        },
        "volumes": volumes,
        "resources": c["resources"],
        "tunnel_service": {
            "name": tunnel["metadata"]["name"],
            "selector": tunnel["spec"]["selector"],
            "ports": svc_ports(tunnel["spec"]),
            "sessionAffinity": tunnel["spec"].get("sessionAffinity"),
            "sessionAffinityTimeout": tunnel["spec"].get("sessionAffinityConfig", {}).get("clientIP", {}).get("timeoutSeconds"),
            # Kubernetes' default for NodePort and LoadBalancer Services.
            "externalTrafficPolicy": tunnel["spec"].get("externalTrafficPolicy", "Cluster"),
        },
        "admin_service": {
            "name": admin["metadata"]["name"],
            "type": admin["spec"].get("type", "ClusterIP"),
            "selector": admin["spec"]["selector"],
            "ports": svc_ports(admin["spec"]),
        },
        "gateway_policy": {
            "podSelector": gw_np["podSelector"]["matchLabels"],
            "policyTypes": sorted(gw_np["policyTypes"]),
            "ingress": sorted(np_ports(r) for r in gw_np.get("ingress", [])),
            "ingress_sources": [np_peers(r, "from") for r in gw_np.get("ingress", [])],
            "egress": sorted((np_ports(r), np_peers(r, "to")) for r in gw_np.get("egress", [])),
        },
        "upstream_policy": {
            "namespace": up_np_obj["metadata"]["namespace"],
            "podSelector": up_np["podSelector"]["matchLabels"],
            "policyTypes": sorted(up_np["policyTypes"]),
            "ingress_ports": [np_ports(r) for r in up_np.get("ingress", [])],
            "ingress_from": [np_peers(r, "from") for r in up_np.get("ingress", [])],
        },
        "gateway_config": gateway_toml(m),
    }


def differences(a: dict, b: dict, path: str = "") -> list[str]:
    """Human-readable differences between two fact dicts (a: terraform, b: manifests)."""
    out: list[str] = []
    for key in sorted(set(a) | set(b)):
        where = f"{path}.{key}" if path else key
        if key not in a:
            out.append(f"{where}: only in manifests ({b[key]!r})")
        elif key not in b:
            out.append(f"{where}: only in terraform ({a[key]!r})")
        elif isinstance(a[key], dict) and isinstance(b[key], dict):
            out.extend(differences(a[key], b[key], where))
        elif a[key] != b[key]:
            out.append(f"{where}: terraform {a[key]!r} != manifests {b[key]!r}")
    return out
