"""A private sandboxd and a sandbox-gateway in front of it, shared by the
suite (each VM boot costs seconds under TCG), both killed with it.

The daemon runs without warm pool or snapshots and with
--max-runs-per-uid 1, so a second run of the gateway's uid is refused with
`capacity` (429) while one is running. The gateway listens on a loopback
port of its own choosing; two tokens own sessions apart and a third has a
quota of one request.
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
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[2]
SANDBOXD_BIN = os.environ.get("SANDBOXD_BIN") or str(ROOT / "build/bin/sandboxd")
GATEWAY_BIN = os.environ.get("SANDBOX_GATEWAY_BIN") or str(ROOT / "build/bin/sandbox-gateway")
SANDBOXCTL_BIN = os.environ.get("SANDBOXCTL_BIN") or str(ROOT / "build/bin/sandboxctl")
IMAGES = os.environ.get("SANDBOXD_TEST_IMAGES") or str(ROOT / "build/images")

TOKEN_A = "token-a-0123456789abcdef"
TOKEN_B = "token-b-0123456789abcdef"
TOKEN_TINY = "token-tiny-0123456789ab"


def _die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


def _clean_env() -> Dict[str, str]:
    # sandboxd reads SANDBOXD_* as configuration and refuses unknown keys.
    return {k: v for k, v in os.environ.items() if not k.startswith("SANDBOXD_")}


class Proc:
    def __init__(self, argv: Sequence[str], log_path: str) -> None:
        self.log_path = log_path
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(
                list(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=_clean_env(), preexec_fn=_die_with_parent,
            )  # fmt: skip

    def log(self) -> str:
        try:
            return Path(self.log_path).read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Stack:
    """sandboxd + sandbox-gateway in one temp directory."""

    def __init__(self, gateway_args: Sequence[str] = ()) -> None:
        self.dir = tempfile.mkdtemp(prefix="sandbox-gateway-test.")
        self.socket = os.path.join(self.dir, "sandboxd.sock")
        state = os.path.join(self.dir, "state")
        os.mkdir(state)
        self.daemon = Proc(
            [
                SANDBOXD_BIN, "--config", "/dev/null", "--socket", self.socket, "--images", IMAGES,
                "--state-dir", state, "--pool-python", "0", "--pool-javascript", "0", "--pool-raw", "0",
                "--snapshots", "off", "--max-runs-per-uid", "1",
            ],
            os.path.join(self.dir, "sandboxd.log"),
        )  # fmt: skip
        self.gateway: Optional[Proc] = None
        try:
            self._wait(lambda: self._connectable(), 60, "sandboxd did not listen", self.daemon)
            self.gateway, self.port = self.start_gateway(gateway_args, "gateway")
        except Exception:
            self.stop()
            raise

    def start_gateway(self, args: Sequence[str], name: str) -> Tuple[Proc, int]:
        """A sandbox-gateway on this daemon, on a loopback port of its choosing."""
        tokens = os.path.join(self.dir, "tokens")
        Path(tokens).write_text(f"# test tokens\n{TOKEN_A} alice 64\n{TOKEN_B} bob\n{TOKEN_TINY} tiny 1\n")
        gw = Proc(
            [GATEWAY_BIN, "--listen", "127.0.0.1:0", "--tokens", tokens, "--socket", self.socket,
             "--max-body", "65536", *args],
            os.path.join(self.dir, name + ".log"),
        )  # fmt: skip
        found: List[int] = []

        def listening() -> bool:
            m = re.search(r"listening on 127\.0\.0\.1:(\d+)", gw.log())
            if m:
                found.append(int(m.group(1)))
            return bool(m)

        try:
            self._wait(listening, 30, "sandbox-gateway did not listen", gw)
        except Exception:
            gw.stop()
            raise
        return gw, found[0]

    def _connectable(self) -> bool:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(self.socket)
            return True
        except OSError:
            return False
        finally:
            s.close()

    @staticmethod
    def _wait(cond: Any, seconds: float, what: str, proc: Proc) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if proc.proc.poll() is not None:
                raise RuntimeError(f"{what}: it exited\n{proc.log()}")
            if cond():
                return
            time.sleep(0.05)
        raise RuntimeError(f"{what} within {seconds} s\n{proc.log()}")

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        token: Optional[str] = TOKEN_A,
        headers: Optional[Dict[str, str]] = None,
        timeout: float = 240,
        port: Optional[int] = None,
    ) -> Tuple[int, Dict[str, str], bytes]:
        c = http.client.HTTPConnection("127.0.0.1", port or self.port, timeout=timeout)
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

    def json(self, method: str, path: str, body: Any = None, **kw: Any) -> Tuple[int, Any]:
        status, _, data = self.request(method, path, body, **kw)
        return status, json.loads(data) if data else None

    def children(self) -> List[int]:
        pid = self.daemon.proc.pid
        try:
            return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        except OSError:
            return []

    def wait_no_vm(self, seconds: float = 60) -> bool:
        deadline = time.monotonic() + seconds
        while self.children():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def stop(self) -> None:
        if self.gateway:
            self.gateway.stop()
        self.daemon.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def _skip_unless_built() -> None:
    for path, why in ((SANDBOXD_BIN, "sandboxd"), (GATEWAY_BIN, "sandbox-gateway")):
        if not os.access(path, os.X_OK):
            pytest.skip(f"no {why} at {path} (build first; the gateway needs libcpp-httplib-dev)")
    if not os.path.exists(os.path.join(IMAGES, "manifest")):
        pytest.skip(f"no guest images in {IMAGES} (images/build.sh)")


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    _skip_unless_built()
    s = Stack()
    try:
        yield s
    finally:
        s.stop()
