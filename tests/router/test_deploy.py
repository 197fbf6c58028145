"""The Nomad job and the Kubernetes manifests in deploy/, checked for the
structure and the values README.md's "Many hosts" steps rely on (neither
engine runs here). YAML through python3-yaml; HCL through the small
parser below, which knows blocks, attributes, strings, numbers and lists:
all that file uses, and anything else fails the test."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

yaml = pytest.importorskip("yaml", reason="python3-yaml is not installed (apt-get install python3-yaml)")

ROOT = Path(__file__).resolve().parents[2]
NOMAD = ROOT / "deploy/nomad/sandboxd.nomad.hcl"
K8S = ROOT / "deploy/kubernetes"
README = (ROOT / "README.md").read_text()

TOKEN = re.compile(r'\s+|#[^\n]*|//[^\n]*|"(?:[^"\\]|\\.)*"|[A-Za-z_][A-Za-z0-9_.\-]*|-?\d+(?:\.\d+)?|[{}\[\]=,]')


def tokens(text: str) -> List[str]:
    out, pos = [], 0
    while pos < len(text):
        m = TOKEN.match(text, pos)
        assert m, f"HCL: cannot read {text[pos:pos + 40]!r}"
        pos = m.end()
        t = m.group(0)
        if not t.isspace() and not t.startswith("#") and not t.startswith("//"):
            out.append(t)
    return out


Block = Dict[str, Any]  # attributes, and "blocks": [(type, labels, Block)]


def parse_hcl(text: str) -> Block:
    toks = tokens(text)
    pos = 0

    def value() -> Any:
        nonlocal pos
        t = toks[pos]
        pos += 1
        if t.startswith('"'):
            return t[1:-1].replace('\\"', '"')
        if t == "[":
            items = []
            while toks[pos] != "]":
                items.append(value())
                if toks[pos] == ",":
                    pos += 1
            pos += 1
            return items
        if re.fullmatch(r"-?\d+(\.\d+)?", t):
            return float(t) if "." in t else int(t)
        if t in ("true", "false"):
            return t == "true"
        raise AssertionError(f"HCL: unexpected {t!r}")

    def body(end: str) -> Block:
        nonlocal pos
        b: Block = {"blocks": []}
        while toks[pos] != end:
            name = toks[pos]
            assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name), f"HCL: bad name {name!r}"
            pos += 1
            if toks[pos] == "=":
                pos += 1
                assert name not in b, f"HCL: {name} set twice"
                b[name] = value()
                continue
            labels = []
            while toks[pos].startswith('"'):
                labels.append(toks[pos][1:-1])
                pos += 1
            assert toks[pos] == "{", f"HCL: {name} is neither attribute nor block"
            pos += 1
            inner = body("}")
            pos += 1
            b["blocks"].append((name, labels, inner))
        return b

    toks.append("<eof>")
    return body("<eof>")


def blocks(b: Block, kind: str) -> List[Tuple[List[str], Block]]:
    return [(labels, inner) for k, labels, inner in b["blocks"] if k == kind]


def one(b: Block, kind: str, label: str = "") -> Block:
    found = [inner for labels, inner in blocks(b, kind) if not label or labels[:1] == [label]]
    assert len(found) == 1, f"one {kind} {label!r} expected, found {len(found)}"
    return found[0]


def test_nomad_system_job() -> None:
    top = parse_hcl(NOMAD.read_text())
    job = one(top, "job", "sandboxd")
    assert job["type"] == "system"  # one allocation per client node
    constraints = {c["attribute"]: c["value"] for _, c in blocks(job, "constraint")}
    assert constraints["${meta.sandboxd}"] == "true"
    group = one(job, "group", "node")
    port = one(one(group, "network"), "port", "http")
    service = one(group, "service")
    assert service["name"] == "sandbox-gateway" and service["port"] == "http" and service["provider"] == "consul"
    check = one(service, "check")
    assert check["type"] == "http" and check["path"] == "/health"
    daemon = one(group, "task", "sandboxd")
    assert one(daemon, "config")["command"] == "/usr/bin/sandboxd"
    assert daemon["kill_signal"] == "SIGTERM"
    gateway = one(group, "task", "gateway")
    assert gateway.get("user") and gateway["user"] != "root"
    args = one(gateway, "config")["args"]
    assert args[args.index("--listen") + 1] == "${NOMAD_ADDR_http}"
    assert args[args.index("--tokens") + 1] == "${NOMAD_SECRETS_DIR}/gateway.tokens"
    assert one(gateway, "template")["destination"] == "secrets/gateway.tokens"
    assert one(gateway, "template")["perms"] == "600"
    assert port["static"] == 8000
    # README: the meta the clients need and the SRV name the router asks.
    assert 'sandboxd = "true"' in README
    assert "--srv sandbox-gateway.service.consul" in README
    assert "nomad job run deploy/nomad/sandboxd.nomad.hcl" in README


def k8s_docs() -> Dict[Tuple[str, str], Dict[str, Any]]:
    docs = {}
    for f in sorted(K8S.glob("*.yaml")):
        for d in yaml.safe_load_all(f.read_text()):
            if d:
                docs[(d["kind"], d["metadata"]["name"])] = d
                assert d["metadata"]["namespace"] == "sandboxd", f
    return docs


def test_kubernetes_manifests() -> None:
    docs = k8s_docs()
    ds = docs[("DaemonSet", "sandboxd")]
    pod = ds["spec"]["template"]["spec"]
    assert ds["spec"]["selector"]["matchLabels"].items() <= ds["spec"]["template"]["metadata"]["labels"].items()
    assert pod["nodeSelector"] == {"sandboxd": "true"}
    containers = {c["name"]: c for c in pod["containers"]}
    daemon, gateway = containers["sandboxd"], containers["gateway"]
    # The daemon: the node's KVM, state, images and delegated cgroup; only the capabilities it keeps.
    assert "devices.kubevirt.io/kvm" in daemon["resources"]["limits"]
    sc = daemon["securityContext"]
    assert sc["privileged"] is False and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert set(sc["capabilities"]["add"]) == {"SETUID", "SETGID", "SYS_ADMIN", "KILL", "CHOWN", "SETPCAP"}
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in daemon["volumeMounts"]}
    for path in ("/var/lib/sandboxd", "/var/cache/sandboxd/images", "/sys/fs/cgroup"):
        assert "hostPath" in volumes[mounts[path]], path
    assert volumes[mounts["/sys/fs/cgroup"]]["hostPath"]["path"] == "/sys/fs/cgroup/sandboxd.slice"
    # Drain before stopping, with the time for it.
    pre = daemon["lifecycle"]["preStop"]["exec"]["command"]
    assert pre[:1] == ["/usr/bin/sandboxctl"] and "drain" in pre and "--wait" in pre
    deadline = int(pre[pre.index("--deadline") + 1])
    assert pod["terminationGracePeriodSeconds"] > deadline
    # The gateway: unprivileged, the daemon's socket shared, ready by /health.
    gsc = gateway["securityContext"]
    assert gsc["runAsNonRoot"] is True and gsc["capabilities"]["drop"] == ["ALL"]
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/health"
    shared = {m["name"] for m in daemon["volumeMounts"]} & {m["name"] for m in gateway["volumeMounts"]}
    assert "run" in shared and "emptyDir" in volumes["run"]
    assert "secret" in volumes["tokens"]
    port = gateway["ports"][0]["containerPort"]
    assert f"0.0.0.0:{port}" in gateway["command"]
    # The headless Service publishes the gateways' SRV records under the name the router asks.
    svc = docs[("Service", "sandbox-gateway")]
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["selector"] == ds["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["ports"][0]["name"] == "http" and svc["spec"]["ports"][0]["port"] == port
    router = docs[("Deployment", "sandbox-router")]
    rc = router["spec"]["template"]["spec"]["containers"][0]
    srv = rc["command"][rc["command"].index("--srv") + 1]
    assert srv == f"_http._tcp.{svc['metadata']['name']}.sandboxd.svc.cluster.local"
    assert rc["readinessProbe"]["httpGet"]["path"] == "/health"
    assert rc["securityContext"]["runAsNonRoot"] is True
    assert docs[("Service", "sandbox-router")]["spec"]["selector"] == router["spec"]["template"]["metadata"]["labels"]
    # README: the steps name these files, the label and the SRV name.
    for f in K8S.glob("*.yaml"):
        assert f"deploy/kubernetes/{f.name}" in README
    assert "kubectl label node" in README and "sandboxd=true" in README
    assert srv in README
