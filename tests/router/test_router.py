"""sandbox-router in front of three nodes found through DNS SRV: runs
placed and spread, a key kept on its node, sessions pinned by their id, a
drained node skipped while its sessions finish, a killed node's runs and
sessions failing cleanly (never a hang) and a restarted node rejoining.

The cases share one cluster and run in file order (each leaves it as the
next expects): warm placement first, while every node is idle.
"""
from __future__ import annotations

import json
import threading
import time
from typing import Any, Dict, List, Tuple

import pytest

from conftest import Cluster, Node, wait_for

prometheus = pytest.importorskip(
    "prometheus_client.parser", reason="python3-prometheus-client is not installed (apt-get install python3-prometheus-client)"
)

# Bounds, not speeds: a VM boots in seconds under TCG, many more on a
# loaded machine; a dead node must be noticed far sooner than a run ends.
LEAVES_ROTATION_S = 15
CLEAN_FAILURE_S = 30


def samples(c: Cluster) -> Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]:
    status, _, body = c.request("GET", "/metrics", token=None)
    assert status == 200
    out = {}
    for family in prometheus.text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def per_node(c: Cluster, name: str) -> Dict[str, float]:
    return {dict(labels)["node"]: v for (n, labels), v in samples(c).items() if n == name}


def run(c: Cluster, code: str, language: str = "python", **kw: Any) -> Tuple[int, Dict[str, str], Any]:
    return c.json("POST", "/v1/runs", {"code": code, "language": language, "timeout": 60, **kw})


def test_same_key_stays_on_its_node_and_the_api_is_the_gateways(cluster: Cluster) -> None:
    health = cluster.health()
    assert health["status"] == "ok" and health["role"] == "router" and health["ready"] == 3
    # No token, no run: refused before any node is asked.
    status, headers, body = cluster.json("POST", "/v1/runs", {"code": "print(1)"}, token=None)
    assert status == 401 and body["error"]["code"] == "permission_denied"
    # A wrong token is the node's to refuse, and it does.
    status, _, body = cluster.json("POST", "/v1/runs", {"code": "print(1)"}, token="not-a-token-0123456789")
    assert status == 401

    status, h1, r1 = run(cluster, "print(6*7)")
    assert status == 200, r1
    assert r1["stdout"] == "42\n" and r1["exit_code"] == 0
    # python-sandbox's /execute, through the router, on the same node.
    status, h2, r2 = cluster.json("POST", "/execute", {"code": "print('hi')", "timeout": 60})
    assert status == 200, r2
    assert r2["success"] is True and r2["stdout"] == "hi\n" and r2["files"] == []
    # NDJSON streaming passes through; the joined output is stdout.
    status, h3, raw = cluster.request("POST", "/v1/runs", {"code": "print('a'); print('b')", "stream": True, "timeout": 60})
    assert status == 200 and h3["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(l) for l in raw.decode().splitlines()]
    assert "".join(l["data"] for l in lines if l["type"] == "output") == "a\nb\n"
    assert lines[-1]["type"] == "result" and lines[-1]["result"]["exit_code"] == 0
    # The same language on an idle cluster: the key's node every time.
    assert h1["x-sandbox-node"] == h2["x-sandbox-node"], (h1, h2)
    placements = per_node(cluster, "sandbox_router_placements_total")
    assert placements[h1["x-sandbox-node"]] >= 2


def test_runs_spread_and_all_succeed(cluster: Cluster) -> None:
    results: List[Tuple[int, Dict[str, str], Any]] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        r = run(cluster, f"sleep 3; echo run{i}", language="raw")
        with lock:
            results.append(r)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert len(results) == 4
    for status, _, body in results:
        assert status == 200, body
        assert body["exit_code"] == 0 and body["stdout"].startswith("run")
    # One key, four at once: the load bound sends some beyond the key's node.
    assert len({h["x-sandbox-node"] for _, h, _ in results}) >= 2
    s = samples(cluster)
    assert sum(v for (n, _), v in s.items() if n == "sandbox_router_node_up") == 3
    assert sum(v for (n, _), v in s.items() if n == "sandbox_router_placements_total") >= 7


def test_drained_node_takes_no_new_work_and_finishes_its_sessions(cluster: Cluster) -> None:
    status, _, s = cluster.json("POST", "/v1/sessions", {"language": "python", "timeout": 60})
    assert status == 201, s
    sid = s["session"]
    tag = sid[1:9]
    node = cluster.node_by_tag(tag)
    status, _, r = cluster.json("POST", f"/v1/sessions/{sid}/exec", {"code": "x = 41"})
    assert status == 200, r

    p = node.ctl("drain", "--deadline", "300")
    assert p.returncode == 0, p.stderr
    assert "draining" in p.stderr
    # The node says so, and the router takes it out of placement.
    status, _, nh = node_health(node)
    assert status == 200 and nh["draining"] is True
    wait_for(lambda: cluster.node_state(node).get("draining"), LEAVES_ROTATION_S, "the router sees the drain")
    assert cluster.health()["ready"] == 2
    # The node itself refuses new work (capacity), whoever asks.
    status, _, body = node_request(node, "POST", "/v1/runs", {"code": "print(1)"})
    assert status == 429 and body["error"]["code"] == "capacity"

    for _ in range(2):
        status, h, r = run(cluster, "print(1)")
        assert status == 200, r
        assert h["x-sandbox-node"] != tag

    # Its session goes on, state kept, then closes.
    status, _, r = cluster.json("POST", f"/v1/sessions/{sid}/exec", {"code": "print(x + 1)"})
    assert status == 200, r
    assert r["stdout"] == "42\n"
    status, _, body = cluster.request("DELETE", f"/v1/sessions/{sid}")
    assert status == 204, body
    drains = per_node(cluster, "sandbox_router_drains_seen_total")
    assert drains[tag] == 1
    st = json.loads(node.ctl("--json", "status").stdout)
    assert st["draining"] is True and st["sessions"] == 0

    # Restarted, the node is back in rotation (drains end with the process).
    node.stop()
    node.start()
    wait_for(lambda: cluster.node_state(node).get("up") and not cluster.node_state(node).get("draining"),
             LEAVES_ROTATION_S + 30, "the restarted node back in rotation")
    assert cluster.health()["ready"] == 3


def node_request(node: Node, method: str, path: str, body: Any = None) -> Tuple[int, Dict[str, str], Any]:
    from conftest import http_request

    status, headers, data = http_request(node.port, method, path, body)
    return status, headers, json.loads(data) if data else None


def node_health(node: Node) -> Tuple[int, Dict[str, str], Any]:
    from conftest import http_request

    status, headers, data = http_request(node.port, "GET", "/health", token=None)
    return status, headers, json.loads(data)


def test_killed_node_fails_cleanly_and_a_restarted_one_rejoins(cluster: Cluster) -> None:
    status, _, s = cluster.json("POST", "/v1/sessions", {"language": "python", "timeout": 120})
    assert status == 201, s
    sid = s["session"]
    tag = sid[1:9]
    victim = cluster.node_by_tag(tag)

    outcomes: Dict[str, Any] = {}

    def in_flight_exec() -> None:
        t0 = time.monotonic()
        outcomes["exec"] = cluster.json("POST", f"/v1/sessions/{sid}/exec", {"code": "import time; time.sleep(100)"})
        outcomes["exec_s"] = time.monotonic() - t0

    def in_flight_run(i: int) -> None:
        t0 = time.monotonic()
        outcomes[f"run{i}"] = run(cluster, "sleep 20", language="raw")
        outcomes[f"run{i}_s"] = time.monotonic() - t0

    threads = [threading.Thread(target=in_flight_exec)] + [threading.Thread(target=in_flight_run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    # The exec is on the victim; the runs are placed by load (the victim has the session).
    wait_for(lambda: cluster.node_state(victim).get("in_flight", 0) >= 1, 30, "the exec in flight")
    wait_for(lambda: sum(n["in_flight"] for n in cluster.health()["nodes"]) >= 3, 30, "three requests in flight")
    time.sleep(1)  # past placement: into the runs' boots
    killed_at = time.monotonic()
    victim.kill()
    for t in threads:
        t.join(timeout=CLEAN_FAILURE_S + 120)
    assert not any(t.is_alive() for t in threads), "a request hung on a dead node"

    # The exec on the dead node ends at once, as a closed session.
    status, _, body = outcomes["exec"]
    assert status == 410 and body["error"]["code"] == "session_closed", body
    assert time.monotonic() - killed_at < CLEAN_FAILURE_S + 120
    # Runs on the dead node fail as `communication` (502); nothing else is lost.
    for i in range(2):
        status, h, body = outcomes[f"run{i}"]
        if h.get("x-sandbox-node") == tag:
            assert status == 502 and body["error"]["code"] == "communication", body
        else:
            # Elsewhere, the run finishes (it was never on the victim).
            assert status == 200 and body["exit_code"] == 0, body

    # Out of rotation within seconds; its session answers session_closed at once.
    wait_for(lambda: not cluster.node_state(victim).get("up"), LEAVES_ROTATION_S, "the dead node out of rotation")
    t0 = time.monotonic()
    status, _, body = cluster.json("POST", f"/v1/sessions/{sid}/exec", {"code": "print(1)"}, timeout=30)
    assert status == 410 and body["error"]["code"] == "session_closed"
    assert time.monotonic() - t0 < 10
    # New work goes elsewhere.
    status, h, r = run(cluster, "print(2)")
    assert status == 200 and r["stdout"] == "2\n"
    assert h["x-sandbox-node"] != tag
    assert cluster.health()["ready"] == 2

    # Restarted (its state directory cleaned up by recovery), it rejoins.
    victim.start()
    wait_for(lambda: cluster.node_state(victim).get("up"), LEAVES_ROTATION_S + 30, "the restarted node back in rotation")
    assert cluster.health()["ready"] == 3
    # Its predecessor's session is still gone, not unknown: the new daemon
    # read its journal.
    status, _, body = cluster.json("POST", f"/v1/sessions/{sid}/exec", {"code": "print(1)"}, timeout=30)
    assert status == 410 and body["error"]["code"] == "session_closed", body
    s = samples(cluster)
    assert s[("sandbox_router_node_up", (("address", victim.address), ("node", tag)))] == 1
    assert per_node(cluster, "sandbox_router_node_failures_total")[tag] >= 1


def test_discovery_follows_dns(cluster: Cluster) -> None:
    """A node gone from the SRV answer leaves; its sessions are gone with it."""
    last = cluster.nodes[-1]
    tag = cluster.tag_of(last)
    cluster.dns.records = [r for r in cluster.dns.records if r[1] != last.port]
    wait_for(lambda: not cluster.node_state(last), LEAVES_ROTATION_S, "the node gone from the router")
    status, _, body = cluster.json("DELETE", f"/v1/sessions/n{tag}-s-0123456789abcdef")
    assert status == 410 and body["error"]["code"] == "session_closed"
    cluster.dns.records.append((f"{last.name}.router.test", last.port))
    wait_for(lambda: cluster.node_state(last).get("up"), LEAVES_ROTATION_S, "the node back from DNS")
    # Ids the router never handed out are simply unknown.
    status, _, body = cluster.json("POST", "/v1/sessions/s-0123456789abcdef/exec", {"code": "1"})
    assert status == 404


# The router's placement hash, as gateway/placement.cc computes it, to give
# a fake node the port whose tag wins a key.
M64 = (1 << 64) - 1


def _fnv1a(s: bytes, h: int = 1469598103934665603) -> int:
    for c in s:
        h = ((h ^ c) * 1099511628211) & M64
    return h


def _mix(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


def node_tag(address: str) -> str:
    return "%08x" % (_mix(_fnv1a(address.encode())) & 0xFFFFFFFF)


def score(tag: str, key: str) -> int:
    return _mix(_fnv1a(key.encode(), _fnv1a(b"\x1f", _fnv1a(tag.encode()))))


def test_a_busy_node_makes_the_router_try_another(cluster: Cluster) -> None:
    """A node answering 429 (capacity) is skipped for the next one: the
    caller gets the run, not the 429. The busy node is a fake that the key
    'python' prefers (its port chosen for that)."""
    import http.server

    hits: List[str] = []

    class Busy(http.server.BaseHTTPRequestHandler):
        def _send(self, status: int, body: Dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if status == 429:
                self.send_header("Retry-After", "1")
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802
            self._send(200, {"status": "ok", "runs_active": 0, "queue": 0, "sessions": 0, "draining": False})

        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            hits.append(self.path)
            self._send(429, {"error": {"code": "capacity", "message": "busy", "retryable": True}})

        def log_message(self, *args: Any) -> None:
            pass

    real = [cluster.tag_of(n) for n in cluster.nodes]
    server = None
    for port in range(20000, 60000):
        tag = node_tag(f"127.0.0.1:{port}")
        if all(score(tag, "python") > score(t, "python") for t in real):
            try:
                server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Busy)
                break
            except OSError:
                continue
    assert server, "no free port whose tag wins 'python'"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        cluster.dns.records.append(("busy.router.test", port))
        wait_for(lambda: cluster.health().get("ready") == 4, LEAVES_ROTATION_S, "the busy node in rotation")
        before = samples(cluster).get(("sandbox_router_retries_total", ()), 0)
        status, h, r = run(cluster, "print(3)")
        assert status == 200 and r["stdout"] == "3\n", r
        assert h["x-sandbox-node"] != tag and h["x-sandbox-node"] in real
        # Streamed: the same (the 429 comes before any line).
        status, _, raw = cluster.request("POST", "/v1/runs", {"code": "print(4)", "stream": True, "timeout": 60})
        lines = [json.loads(l) for l in raw.decode().splitlines()]
        assert status == 200 and lines[-1]["type"] == "result", lines
        assert hits == ["/v1/runs", "/v1/runs"]
        assert samples(cluster)[("sandbox_router_retries_total", ())] >= before + 2
    finally:
        cluster.dns.records = [r for r in cluster.dns.records if r[0] != "busy.router.test"]
        server.shutdown()
        server.server_close()
    wait_for(lambda: cluster.health().get("ready") == 3, LEAVES_ROTATION_S, "the busy node gone")
