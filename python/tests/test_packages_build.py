"""Package layers end to end: a daemon of its own with the operator's index
on loopback (tests/integration/make_index.py's wheels, served over HTTPS by
net_hosts.py with its own CA, and a DNS server naming pypi.test), as
tests/integration/packages_test.cc sets it up. The first run with
``mypkg==1.0`` makes the daemon boot its builder VM (about 30 s under
TCG); the other cases reuse that layer, so the module boots one builder
and five VMs in all.
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator, List, Optional

import pytest

import sandboxd
from conftest import IMAGES, ROOT, SANDBOXD_BIN, _die_with_parent

INTEGRATION = ROOT / "tests" / "integration"
INDEX_HOST = "pypi.test"
# Every call's own bound: a build (one builder boot, pip, an erofs image)
# and a boot under TCG on a busy two-core machine fit well inside it.
CALL_TIMEOUT = 600.0
# The loopback hosts write their ports within a second or two (openssl
# makes a key first).
HOSTS_START_TIMEOUT = 30.0
# Prints mypkg's version and its answer (42, through its dependency sbxdep).
CODE = "import mypkg\nprint(mypkg.__version__, mypkg.answer())\n"


def _has_builder() -> bool:
    try:
        manifest = Path(IMAGES, "manifest").read_text()
    except OSError:
        return False
    return any(line.split()[1:3] == ["builder", "builder.erofs"] for line in manifest.splitlines() if line[:1] != "#")


def _skip(request: pytest.FixtureRequest, reason: str) -> None:
    # -q hides skip reasons: say it where a reader of the suite's log sees it.
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if capture is not None:
        with capture.global_and_fixture_disabled():
            print(f"\nSKIPPED: {reason}")
    pytest.skip(reason)


class LoopbackIndex:
    """make_index.py's index served by net_hosts.py as https://pypi.test."""

    def __init__(self) -> None:
        self.index_dir = tempfile.mkdtemp(prefix="sandboxd-pyindex.")
        self.hosts_dir = tempfile.mkdtemp(prefix="sandboxd-pynet.")
        self.proc: Optional[subprocess.Popen] = None  # type: ignore[type-arg]
        # A file, not a pipe: nobody reads the servers' stderr while they run.
        self._log = open(os.path.join(self.hosts_dir, "hosts.log"), "w+b")
        try:
            subprocess.run([sys.executable, str(INTEGRATION / "make_index.py"), self.index_dir],
                           check=True, capture_output=True, timeout=60)
            self.proc = subprocess.Popen(
                [sys.executable, str(INTEGRATION / "net_hosts.py"), self.hosts_dir, f"--index={self.index_dir}",
                 f"{INDEX_HOST}=127.0.0.9"],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._log,
                preexec_fn=_die_with_parent,
            )  # fmt: skip
            ports_path = Path(self.hosts_dir, "ports")
            deadline = time.monotonic() + HOSTS_START_TIMEOUT
            while not ports_path.exists():
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the loopback index did not start: " + self._stderr())
                time.sleep(0.05)
            ports = json.loads(ports_path.read_text())
            self.dns: int = ports["dns"]
            self.https: int = ports["https"]
        except BaseException:
            self.stop()
            raise

    def _stderr(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    @property
    def url(self) -> str:
        return f"https://{INDEX_HOST}:{self.https}/simple"

    @property
    def ca(self) -> str:
        return os.path.join(self.hosts_dir, "ca.pem")

    def requests(self) -> List[str]:
        """The paths the index has served, in order."""
        try:
            return Path(self.hosts_dir, "index_requests").read_text().splitlines()
        except OSError:
            return []

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(timeout=30)
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            self.proc = None
        self._log.close()
        shutil.rmtree(self.index_dir, ignore_errors=True)
        shutil.rmtree(self.hosts_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def index(request: pytest.FixtureRequest) -> Iterator[LoopbackIndex]:
    if not os.access(SANDBOXD_BIN, os.X_OK):
        _skip(request, f"no sandboxd at {SANDBOXD_BIN} (build first)")
    if not _has_builder():
        _skip(request, f"the images in {IMAGES} have no package builder (images/build.sh makes builder.erofs)")
    if shutil.which("openssl") is None:
        _skip(request, "the loopback index needs openssl")
    idx = LoopbackIndex()
    try:
        yield idx
    finally:
        idx.stop()


@pytest.fixture(scope="module")
def pkg_daemon(index: LoopbackIndex, private_daemon_module):  # type: ignore[no-untyped-def]
    """One daemon for the module, whose index is the loopback one."""
    return private_daemon_module(
        "--network-resolver", f"127.0.0.1:{index.dns}",
        "--network-allowed-ranges", "127.0.0.0/8",
        "--extra-ca-file", index.ca,
        "--python-index-url", index.url,
    )  # fmt: skip


@pytest.fixture(scope="module")
def pkg_client(pkg_daemon) -> sandboxd.Client:  # type: ignore[no-untyped-def]
    return sandboxd.Client(pkg_daemon.socket)


def test_a_run_builds_the_layer_then_hits_it(pkg_client: sandboxd.Client, index: LoopbackIndex) -> None:
    first = pkg_client.run(CODE, packages=["mypkg==1.0"], timeout=60, call_timeout=CALL_TIMEOUT)
    assert first.ok, first.stderr_text
    assert first.text == "1.0 42\n"
    assert first.layer["cache"] == "built"
    assert first.layer["build_ms"] > 0
    key = first.layer["key"]
    assert key.startswith("py-")

    (layer,) = pkg_client.layers()
    assert layer.key == key and layer.packages == ["mypkg==1.0"] and not layer.building
    assert sorted(entry.split()[0] for entry in layer.lock) == ["mypkg==1.0", "sbxdep==2.0"]

    second = pkg_client.run(CODE, packages=["mypkg==1.0"], timeout=60, call_timeout=CALL_TIMEOUT)
    assert second.ok, second.stderr_text
    assert second.text == "1.0 42\n"
    assert second.layer == {"key": key, "cache": "hit", "build_ms": 0}
    # Fetched once, by the build.
    assert sum("/files/sbxdep" in r for r in index.requests()) == 1


def test_the_decorator_imports_its_packages(pkg_daemon) -> None:  # type: ignore[no-untyped-def]
    bounded = sandboxd.Client(pkg_daemon.socket, build_slack=CALL_TIMEOUT)

    @sandboxd.sandbox(packages=["mypkg==1.0"], timeout=60, client=bounded, on_stdout=lambda b: None)
    def scaled_answer(factor: int) -> dict:
        import mypkg

        return {"version": mypkg.__version__, "value": mypkg.answer() * factor}

    assert scaled_answer(2) == {"version": "1.0", "value": 84}


def test_the_async_client_runs_with_packages(pkg_daemon) -> None:  # type: ignore[no-untyped-def]
    async def go() -> sandboxd.RunResult:
        async with sandboxd.AsyncClient(pkg_daemon.socket) as c:
            return await c.run(CODE, packages=["mypkg==1.0"], timeout=60, call_timeout=CALL_TIMEOUT)

    r = asyncio.run(asyncio.wait_for(go(), CALL_TIMEOUT + 30))
    assert r.ok, r.stderr_text
    assert r.text == "1.0 42\n"
    assert r.layer["cache"] in ("hit", "built") and r.layer["key"].startswith("py-")


def test_a_session_reports_its_layer(pkg_client: sandboxd.Client) -> None:
    with pkg_client.session(packages=["mypkg==1.0"], timeout=60, call_timeout=CALL_TIMEOUT) as s:
        assert s.info is not None
        assert s.info.layer["key"].startswith("py-") and s.info.layer["cache"] in ("hit", "built")
        r = s.exec("import mypkg\nprint(mypkg.answer())", call_timeout=CALL_TIMEOUT)
        assert r.ok and r.text == "42\n", r.stderr_text


@pytest.mark.parametrize("spec", ["mypkg", "mypkg>=1.0"])
def test_an_unpinned_package_is_refused_before_anything_starts(
    pkg_client: sandboxd.Client, pkg_daemon, index: LoopbackIndex, spec: str  # type: ignore[no-untyped-def]
) -> None:
    assert pkg_daemon.wait_children_at_most(0, 30)  # the VMs of the cases before
    served = len(index.requests())
    layers = [x.key for x in pkg_client.layers()]
    with pytest.raises(sandboxd.PackageNotAllowedError, match="mypkg") as e:
        pkg_client.run(CODE, packages=[spec], timeout=30, call_timeout=60)
    assert e.value.retry_safe
    assert pkg_daemon.children() == []  # no builder, no VM
    assert len(index.requests()) == served
    assert [x.key for x in pkg_client.layers()] == layers
