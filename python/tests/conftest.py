"""A private sandboxd for the suite, started once and killed with it.

The daemon is the build's (``$SANDBOXD_BIN``, else build/bin/sandboxd)
with the images in ``$SANDBOXD_TEST_IMAGES`` (else build/images), flags as
tests/integration/harness.cc uses: no warm pool, no snapshots, so every
VM a test sees is one it asked for. It is started with PR_SET_PDEATHSIG,
so it dies with the test process however that ends.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator, List, Sequence

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "python"))

SANDBOXD_BIN = os.environ.get("SANDBOXD_BIN") or str(ROOT / "build/bin/sandboxd")
IMAGES = os.environ.get("SANDBOXD_TEST_IMAGES") or str(ROOT / "build/images")

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class Daemon:
    """One private sandboxd: its socket, log, children (QEMUs) and end."""

    def __init__(self, extra_args: Sequence[str] = ()) -> None:
        self.dir = tempfile.mkdtemp(prefix="sandboxd-pytest.")
        self.socket = os.path.join(self.dir, "sandboxd.sock")
        state = os.path.join(self.dir, "state")
        os.mkdir(state)
        self.log_path = os.path.join(self.dir, "sandboxd.log")
        argv = [
            SANDBOXD_BIN,
            "--config", "/dev/null",
            "--socket", self.socket,
            "--images", IMAGES,
            "--state-dir", state,
            "--log-level", "debug",
            "--pool-python", "0", "--pool-javascript", "0", "--pool-raw", "0",
            "--snapshots", "off",
            *extra_args,
        ]  # fmt: skip
        # sandboxd reads SANDBOXD_<KEY> variables as configuration and
        # refuses unknown keys: ours (SANDBOXD_BIN, SANDBOXD_TEST_IMAGES,
        # SANDBOXD_SOCKET) are not for it.
        env = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOXD_")}
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                preexec_fn=_die_with_parent,
            )
        # Image verification hashes a few hundred MB: allow for a slow disk.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = self.log()
                self.stop()
                raise RuntimeError(f"sandboxd exited at start-up:\n{log}")
            if self._connectable():
                return
            time.sleep(0.02)
        log = self.log()
        self.stop()
        raise RuntimeError(f"sandboxd did not listen within 60 s:\n{log}")

    def _connectable(self) -> bool:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(self.socket)
            return True
        except OSError:
            return False
        finally:
            s.close()

    def log(self) -> str:
        try:
            return Path(self.log_path).read_text(errors="replace")
        except OSError:
            return ""

    def children(self) -> List[int]:
        """The daemon's child processes (its QEMUs)."""
        try:
            text = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        except OSError:
            return []
        return [int(p) for p in text.split()]

    def wait_children_at_most(self, n: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while len(self.children()) > n:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def kill(self) -> None:
        """SIGKILL, as a crash would (its QEMUs die with it)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def daemon() -> Iterator[Daemon]:
    if not os.access(SANDBOXD_BIN, os.X_OK):
        pytest.skip(f"no sandboxd at {SANDBOXD_BIN} (build first)")
    if not os.path.exists(os.path.join(IMAGES, "manifest")):
        pytest.skip(f"no guest images in {IMAGES} (images/build.sh)")
    d = Daemon()
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture(scope="session")
def client(daemon: Daemon):  # type: ignore[no-untyped-def]
    import sandboxd

    return sandboxd.Client(daemon.socket)


@pytest.fixture(scope="session")
def session(client):  # type: ignore[no-untyped-def]
    """One Python session shared by the tests whose behaviour allows it."""
    s = client.session("python", timeout=30)
    try:
        yield s
    finally:
        if not s.closed:
            try:
                s.close()
            except Exception:
                pass


def _daemons() -> Iterator:
    started: List[Daemon] = []

    def start(*extra_args: str) -> Daemon:
        d = Daemon(extra_args)
        started.append(d)
        return d

    try:
        yield start
    finally:
        for d in started:
            d.stop()


@pytest.fixture
def private_daemon():  # type: ignore[no-untyped-def]
    """A factory of further daemons (other flags), each stopped after its test."""
    yield from _daemons()


@pytest.fixture(scope="module")
def private_daemon_module():  # type: ignore[no-untyped-def]
    """The same, stopped after the test module."""
    yield from _daemons()
