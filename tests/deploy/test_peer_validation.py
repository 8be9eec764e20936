"""The module's peer validation refuses what the gateway refuses.

Runs `terraform plan` on a module holding only terraform/variables.tf: it has
no resources and no providers, so init and plan work offline, and plan
evaluates every variable validation. The cases mirror the gateway's own
cross_check_peers (src/config/cross_check.rs). With a promgate binary at $PROMGATE_BIN,
each case is also given to `promgate check`, which must agree.

scripts/check-deploy sets PROMGATE_REQUIRE_TERRAFORM=1, so there a missing
terraform fails these tests instead of skipping them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from deploy_model import TERRAFORM_DIR


def _key(ch: str) -> str:
    return ch * 42 + "A="


A, B, C = _key("A"), _key("B"), _key("C")


def peer(name: str, key: str, *ips: str) -> dict:
    return {"name": name, "public_key": key, "allowed_ips": list(ips), "role": "viewer"}


# (case, peers, accepted, a phrase of the Terraform error when refused)
CASES = [
    ("two hosts", [peer("a", A, "10.13.13.2/32"), peer("b", B, "10.13.13.3/32")], True, None),
    ("nested networks of one peer", [peer("a", A, "10.13.13.16/28", "10.13.13.17/32")], True, None),
    ("neighbouring networks", [peer("a", A, "10.13.13.16/28"), peer("b", B, "10.13.13.32/28")], True, None),
    (
        "host inside another peer's network",
        [peer("a", A, "10.13.13.16/28"), peer("b", B, "10.13.13.20/32"), peer("c", C, "10.13.13.40/32")],
        False,
        '10.13.13.20/32 of "b" overlaps 10.13.13.16/28 of "a"',
    ),
    ("/31 over a /32", [peer("a", A, "10.13.13.2/32"), peer("b", B, "10.13.13.2/31")], False, "overlaps"),
    ("same host twice", [peer("a", A, "10.13.13.2/32"), peer("b", B, "10.13.13.2/32")], False, "overlaps"),
    ("one peer lists a network twice", [peer("a", A, "10.13.13.2/32", "10.13.13.2/32")], False, "overlaps"),
    ("host bits ignored", [peer("a", A, "10.13.13.20/28"), peer("b", B, "10.13.13.17/32")], False, "overlaps"),
    ("the whole tunnel prefix", [peer("a", A, "10.13.13.0/24")], False, "gateway's own tunnel address"),
    ("a prefix with host bits", [peer("a", A, "10.13.13.7/24")], False, "gateway's own tunnel address"),
    ("the gateway's address", [peer("a", A, "10.13.13.1/32")], False, "gateway's own tunnel address"),
    ("duplicate names", [peer("a", A, "10.13.13.2/32"), peer("a", B, "10.13.13.3/32")], False, "names must be unique"),
    ("duplicate keys", [peer("a", A, "10.13.13.2/32"), peer("b", A, "10.13.13.3/32")], False, "keys must be unique"),
]


@pytest.fixture(scope="module")
def stub(tmp_path_factory) -> Path:
    tf = shutil.which("terraform")
    if tf is None:
        if os.environ.get("PROMGATE_REQUIRE_TERRAFORM") == "1":
            pytest.fail("terraform is not installed")
        pytest.skip("terraform is not installed")
    d = tmp_path_factory.mktemp("tfvars")
    shutil.copy(TERRAFORM_DIR / "variables.tf", d / "variables.tf")
    res = subprocess.run(
        [tf, "init", "-input=false", "-backend=false", "-no-color"],
        cwd=d, capture_output=True, text=True, env=_env(),
    )
    assert res.returncode == 0, res.stdout + res.stderr
    return d


def _env() -> dict:
    env = dict(os.environ)
    env["TF_CLI_CONFIG_FILE"] = "/dev/null"
    env["TF_IN_AUTOMATION"] = "1"
    env.pop("TF_CLI_ARGS", None)
    return env


def plan(stub: Path, **variables) -> tuple[bool, str]:
    values = {"image": "promgate:dev", "service_type": "NodePort", "endpoint": "192.168.49.2:31820"}
    values.update(variables)
    (stub / "case.tfvars.json").write_text(json.dumps(values))
    res = subprocess.run(
        ["terraform", "plan", "-input=false", "-no-color", "-var-file=case.tfvars.json"],
        cwd=stub, capture_output=True, text=True, env=_env(),
    )
    out = " ".join((res.stdout + res.stderr).split())
    return res.returncode == 0, out


@pytest.mark.parametrize("case,peers,accepted,phrase", CASES, ids=[c[0] for c in CASES])
def test_terraform_peer_validation(stub, case, peers, accepted, phrase):
    ok, out = plan(stub, peers=peers)
    assert ok == accepted, f"{case}: plan {'passed' if ok else 'failed'}\n{out}"
    if phrase:
        assert phrase in out, f"{case}: expected {phrase!r} in\n{out}"


def test_nodeport_needs_an_endpoint(stub):
    ok, out = plan(stub, endpoint=None)
    assert not ok and "endpoint is required with service_type NodePort" in out, out
    ok, out = plan(stub, endpoint=None, service_type="LoadBalancer")
    assert ok, out


@pytest.mark.parametrize("value,accepted", [("60s", True), ("1m30s", True), ("off", True), ("1 minute", False), ("", False)])
def test_upstream_unready_after(stub, value, accepted):
    ok, out = plan(stub, upstream_unready_after=value)
    assert ok == accepted, out


@pytest.mark.parametrize("value,accepted", [(None, True), ("service.k8s.aws/nlb", True), ("", False)])
def test_load_balancer_class(stub, value, accepted):
    ok, out = plan(stub, service_type="LoadBalancer", load_balancer_class=value)
    assert ok == accepted, out
    if value:
        ok, out = plan(stub, load_balancer_class=value)  # NodePort
        assert not ok, f"load_balancer_class with NodePort must be refused\n{out}"


def upstream(name: str, kind: str, port: int, **more) -> dict:
    u = {
        "name": name, "kind": kind, "port": port, "service": name, "namespace": "monitoring",
        "service_port": 9090, "target_port": 9090, "pod_selector": {"app": name},
    }
    u.update(more)
    return u


PROM = upstream("prometheus", "prometheus", 80)
AM = upstream("alertmanager", "alertmanager", 9093, service_port=9093, target_port=9093)

# (case, upstreams, accepted, a phrase of the Terraform error when refused)
UPSTREAM_CASES = [
    ("none: the older single Prometheus", None, True, None),
    ("Prometheus and Alertmanager", [PROM, AM], True, None),
    ("a plain http upstream", [PROM, upstream("wiki", "http", 8080)], True, None),
    ("an empty list", [], False, "at least one upstream"),
    ("two on one tunnel port", [PROM, dict(AM, port=80)], False, "tunnel port of its own"),
    ("an unknown kind", [PROM, dict(AM, kind="loki")], False, '"prometheus", "alertmanager" or "http"'),
    ("a duplicate name", [PROM, dict(AM, name="prometheus")], False, "names must be unique"),
    ("a name with a colon", [dict(PROM, name="prom:x")], False, "starting with a letter"),
    ("an empty pod selector", [dict(PROM, pod_selector={})], False, "must not be empty"),
    ("port 0", [dict(PROM, port=0)], False, "TCP ports (1-65535)"),
]


@pytest.mark.parametrize("case,upstreams,accepted,phrase", UPSTREAM_CASES, ids=[c[0] for c in UPSTREAM_CASES])
def test_terraform_upstream_validation(stub, case, upstreams, accepted, phrase):
    ok, out = plan(stub, upstreams=upstreams)
    assert ok == accepted, f"{case}: plan {'passed' if ok else 'failed'}\n{out}"
    if phrase:
        assert phrase in out, f"{case}: expected {phrase!r} in\n{out}"


@pytest.mark.parametrize(
    "role,allow_paths,accepted",
    [("responder", [], True), ("viewer", ["wiki:/", "/api/v1/write"], True), ("viewer", ["api"], False), ("oncall", [], False)],
)
def test_terraform_peer_role_and_allow_paths(stub, role, allow_paths, accepted):
    p = dict(peer("a", A, "10.13.13.2/32"), role=role, allow_paths=allow_paths)
    ok, out = plan(stub, peers=[p])
    assert ok == accepted, out


# -- the gateway agrees ------------------------------------------------------

GATEWAY_KEY = "QEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEA="


@pytest.mark.parametrize("case,peers,accepted,phrase", CASES, ids=[c[0] for c in CASES])
def test_gateway_agrees(tmp_path, case, peers, accepted, phrase):
    binary = os.environ.get("PROMGATE_BIN")
    if not binary:
        pytest.skip("PROMGATE_BIN is not set")
    (tmp_path / "private.key").write_text(GATEWAY_KEY + "\n")
    (tmp_path / "private.key").chmod(0o600)
    peers_dir = tmp_path / "peers.d"
    peers_dir.mkdir()
    for i, p in enumerate(peers):
        (peers_dir / f"{i}-{p['name']}.toml").write_text(
            "[[peer]]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in p.items())
        )
    cfg = tmp_path / "promgate.toml"
    cfg.write_text(
        "[gateway]\n"
        f'private_key_file = "{tmp_path / "private.key"}"\n'
        'address = "10.13.13.1/24"\n'
        'upstream = "http://127.0.0.1:9090"\n'
        f'peers_dir = "{peers_dir}"\n'
    )
    res = subprocess.run([binary, "check", "--config", str(cfg)], capture_output=True, text=True)
    assert (res.returncode == 0) == accepted, f"{case}: promgate check said\n{res.stdout}{res.stderr}"


# -- the alert rule example ---------------------------------------------------

RULES = TERRAFORM_DIR.parent / "config" / "prometheus" / "promgate-rules.yml"


def test_alert_rules_name_real_metrics():
    import re

    import yaml

    doc = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    rules = [r for g in doc["groups"] for r in g["rules"]]
    by_name = {r["alert"]: r for r in rules}
    assert "PromgateConfigReloadRefused" in by_name
    expr = by_name["PromgateConfigReloadRefused"]["expr"]
    assert "promgate_config_reloads_refused_total" in expr
    # The gateway exports that counter (OpenMetrics adds _total to the name).
    src = (TERRAFORM_DIR.parent / "src" / "ops" / "telemetry" / "metrics.rs").read_text(encoding="utf-8")
    assert '"promgate_config_reloads_refused"' in src
    for r in rules:
        assert set(r) <= {"alert", "expr", "for", "labels", "annotations"}, r
        assert r["labels"]["severity"] in {"warning", "critical"}
        assert re.search(r"\{[^}]*job=\"kubernetes-service-endpoints\"", r["expr"]), r["expr"]
    promtool = shutil.which("promtool")
    if promtool:
        res = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True)
        assert res.returncode == 0, res.stdout + res.stderr
