"""Three sandboxd nodes on this machine, each a private daemon and
sandbox-gateway on a loopback port of its own, a DNS server on loopback
serving their SRV records, and sandbox-router in front, discovering them.

The daemons run without warm pool or snapshots (every run boots a VM, and
three daemons share this machine's cores), so the suite boots few VMs.
Every process is started here and stopped by its pid.
"""
from __future__ import annotations

import ctypes
import http.client
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[2]
SANDBOXD_BIN = os.environ.get("SANDBOXD_BIN") or str(ROOT / "build/bin/sandboxd")
GATEWAY_BIN = os.environ.get("SANDBOX_GATEWAY_BIN") or str(ROOT / "build/bin/sandbox-gateway")
ROUTER_BIN = os.environ.get("SANDBOX_ROUTER_BIN") or str(ROOT / "build/bin/sandbox-router")
SANDBOXCTL_BIN = os.environ.get("SANDBOXCTL_BIN") or str(ROOT / "build/bin/sandboxctl")
IMAGES = os.environ.get("SANDBOXD_TEST_IMAGES") or str(ROOT / "build/images")

TOKEN = "token-router-0123456789"
SRV_NAME = "_sandbox._tcp.router.test"


def _die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


def _clean_env() -> Dict[str, str]:
    # sandboxd reads SANDBOXD_* as configuration and refuses unknown keys.
    return {k: v for k, v in os.environ.items() if not k.startswith("SANDBOXD_")}


def wait_for(cond: Callable[[], Any], seconds: float, what: str) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"{what} within {seconds} s")


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Proc:
    def __init__(self, argv: Sequence[str], log_path: str) -> None:
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                list(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=_clean_env(), preexec_fn=_die_with_parent,
            )  # fmt: skip

    def log(self) -> str:
        try:
            return Path(self.log_path).read_text(errors="replace")
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def http_request(
    port: int, method: str, path: str, body: Any = None, token: Optional[str] = TOKEN,
    headers: Optional[Dict[str, str]] = None, timeout: float = 240,
) -> Tuple[int, Dict[str, str], bytes]:  # fmt: skip
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    h = dict(headers or {})
    if token:
        h["Authorization"] = f"Bearer {token}"
    data: Optional[bytes] = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        h.setdefault("Content-Type", "application/json")
    try:
        c.request(method, path, body=data, headers=h)
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


class Node:
    """sandboxd + sandbox-gateway, on a fixed loopback port so that a
    restarted node is found where its SRV record says."""

    def __init__(self, name: str, root: str) -> None:
        self.name = name
        self.dir = os.path.join(root, name)
        os.mkdir(self.dir)
        self.socket = os.path.join(self.dir, "sandboxd.sock")
        self.state = os.path.join(self.dir, "state")
        os.mkdir(self.state)
        self.tokens = os.path.join(self.dir, "tokens")
        Path(self.tokens).write_text(f"{TOKEN} tester 64\n")
        os.chmod(self.tokens, 0o600)
        self.port = free_port()
        self.daemon: Optional[Proc] = None
        self.gateway: Optional[Proc] = None
        self.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.daemon = Proc(
            [
                SANDBOXD_BIN, "--config", "/dev/null", "--socket", self.socket, "--images", IMAGES,
                "--state-dir", self.state, "--pool-python", "0", "--pool-javascript", "0", "--pool-raw", "0",
                "--snapshots", "off", "--max-runs-per-uid", "8",
            ],
            os.path.join(self.dir, "sandboxd.log"),
        )  # fmt: skip
        wait_for(lambda: self._connectable() or not self.daemon.alive(), 60, f"{self.name}: sandboxd listening")
        assert self.daemon.alive(), self.daemon.log()
        self.gateway = Proc(
            [GATEWAY_BIN, "--listen", self.address, "--tokens", self.tokens, "--socket", self.socket],
            os.path.join(self.dir, "gateway.log"),
        )  # fmt: skip
        wait_for(lambda: "listening on" in self.gateway.log() or not self.gateway.alive(), 30, f"{self.name}: gateway listening")
        assert self.gateway.alive(), self.gateway.log()

    def _connectable(self) -> bool:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(self.socket)
            return True
        except OSError:
            return False
        finally:
            s.close()

    def kill(self) -> None:
        """The node dies at once: gateway and daemon, SIGKILL, by pid (the
        gateway first: the router sees its connections cut)."""
        for p in (self.gateway, self.daemon):
            if p:
                p.stop(signal.SIGKILL)

    def stop(self) -> None:
        for p in (self.gateway, self.daemon):
            if p:
                p.stop()

    def ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(
            [SANDBOXCTL_BIN, "--socket", self.socket, *args], capture_output=True, text=True, timeout=timeout,
            env=_clean_env(),
        )  # fmt: skip


class SrvServer:
    """A DNS server on loopback answering SRV for SRV_NAME with the current
    nodes (targets nodeN.router.test, their A records in the additional
    section); NXDOMAIN for anything else. Queries are bytes from the router:
    a malformed one is dropped."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.records: List[Tuple[str, int]] = []  # (target, port)
        self.queries = 0
        self._stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @staticmethod
    def _name(n: str) -> bytes:
        return b"".join(bytes([len(l)]) + l.encode() for l in n.split(".")) + b"\0"

    def _answer(self, q: bytes) -> Optional[bytes]:
        if len(q) < 12:
            return None
        qid, flags, qd = struct.unpack(">HHH", q[:6])
        if qd != 1 or flags & 0x8000:
            return None
        pos, labels = 12, []
        while pos < len(q) and q[pos]:
            n = q[pos]
            labels.append(q[pos + 1 : pos + 1 + n].decode(errors="replace"))
            pos += 1 + n
        question = q[12 : pos + 5]
        if pos + 5 > len(q):
            return None
        qtype = struct.unpack(">H", q[pos + 1 : pos + 3])[0]
        name = ".".join(labels).lower()
        if name != SRV_NAME or qtype != 33:
            return struct.pack(">HHHHHH", qid, 0x8183, 1, 0, 0, 0) + question
        records = list(self.records)
        answers = b"".join(
            b"\xc0\x0c" + struct.pack(">HHIH", 33, 1, 5, 6 + len(self._name(t))) + struct.pack(">HHH", 1, 10, p) + self._name(t)
            for t, p in records
        )
        extra = b"".join(self._name(t) + struct.pack(">HHIH", 1, 1, 5, 4) + socket.inet_aton("127.0.0.1") for t, _ in records)
        return struct.pack(">HHHHHH", qid, 0x8580, 1, len(records), 0, len(records)) + question + answers + extra

    def _serve(self) -> None:
        while not self._stop:
            try:
                q, peer = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            self.queries += 1
            a = self._answer(q)
            if a:
                self.sock.sendto(a, peer)

    def stop(self) -> None:
        self._stop = True
        self.thread.join(timeout=5)
        self.sock.close()


class Cluster:
    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="sandbox-router-test.")
        self.nodes: List[Node] = []
        self.dns = SrvServer()
        self.router: Optional[Proc] = None
        try:
            for i in range(3):
                self.nodes.append(Node(f"node{i + 1}", self.dir))
            self.dns.records = [(f"{n.name}.router.test", n.port) for n in self.nodes]
            self.router = Proc(
                [
                    ROUTER_BIN, "--listen", "127.0.0.1:0", "--srv", SRV_NAME, "--dns", f"127.0.0.1:{self.dns.port}",
                    "--health-interval", "300", "--health-timeout", "2000", "--discovery-interval", "1000",
                ],
                os.path.join(self.dir, "router.log"),
            )  # fmt: skip
            m = wait_for(lambda: re.search(r"listening on 127\.0\.0\.1:(\d+)", self.router.log()) or not self.router.alive(),
                         30, "sandbox-router listening")
            assert self.router.alive(), self.router.log()
            self.port = int(m.group(1))
            wait_for(lambda: self.health().get("ready") == 3, 60, "three ready nodes")
        except Exception:
            self.stop()
            raise

    def request(self, method: str, path: str, body: Any = None, **kw: Any) -> Tuple[int, Dict[str, str], bytes]:
        return http_request(self.port, method, path, body, **kw)

    def json(self, method: str, path: str, body: Any = None, **kw: Any) -> Tuple[int, Dict[str, str], Any]:
        status, headers, data = self.request(method, path, body, **kw)
        return status, headers, json.loads(data) if data else None

    def health(self) -> Dict[str, Any]:
        try:
            _, _, data = http_request(self.port, "GET", "/health", token=None, timeout=10)
            return json.loads(data)
        except (OSError, ValueError):
            return {}

    def node_state(self, node: Node) -> Dict[str, Any]:
        for n in self.health().get("nodes", []):
            if n["address"] == node.address:
                return n
        return {}

    def tag_of(self, node: Node) -> str:
        return wait_for(lambda: self.node_state(node).get("node"), 10, f"{node.name} known to the router")

    def node_by_tag(self, tag: str) -> Node:
        for n in self.nodes:
            if self.tag_of(n) == tag:
                return n
        raise AssertionError(f"no node has tag {tag}")

    def stop(self) -> None:
        if self.router:
            self.router.stop()
        for n in self.nodes:
            n.stop()
        self.dns.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def _skip_unless_built() -> None:
    for path, why in ((SANDBOXD_BIN, "sandboxd"), (GATEWAY_BIN, "sandbox-gateway"), (ROUTER_BIN, "sandbox-router"),
                      (SANDBOXCTL_BIN, "sandboxctl")):
        if not os.access(path, os.X_OK):
            pytest.skip(f"no {why} at {path} (build first; the gateway and router need libcpp-httplib-dev)")
    if not os.path.exists(os.path.join(IMAGES, "manifest")):
        pytest.skip(f"no guest images in {IMAGES} (images/build.sh)")


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    _skip_unless_built()
    c = Cluster()
    try:
        yield c
    finally:
        c.stop()
