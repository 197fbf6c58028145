"""Every error class of the taxonomy, triggered for real where a client
can provoke it, each with its code, `retryable` and `retry_safe`; and a
daemon that dies under a call."""
from __future__ import annotations

import os
import socket
import threading
import time

import pytest

import sandboxd
from sandboxd import _calls, errors
from sandboxd._protocol import FrameReader, encode_frame


def test_the_classes_mirror_the_taxonomy_one_to_one() -> None:
    assert set(errors.ERROR_CLASSES) == set(errors.RETRYABLE) == set(sandboxd._protocol.ERROR_CODES)
    for code, cls in errors.ERROR_CLASSES.items():
        assert issubclass(cls, sandboxd.SandboxError) and cls.code == code
        assert getattr(sandboxd, cls.__name__) is cls
        e = errors.from_reply(code, "m", code_may_run=True)
        assert type(e) is cls and e.retryable == errors.RETRYABLE[code]
        # The code may have run only where the daemon does not promise otherwise.
        assert e.retry_safe == (code in errors.NEVER_RAN)
        assert errors.from_reply(code, "m", code_may_run=False).retry_safe
    assert [c for c, r in errors.RETRYABLE.items() if r] == ["capacity", "timeout", "vm_boot_failed", "communication"]
    # A code this client does not know yet is still an error, not a crash.
    assert type(errors.from_reply("quota_exceeded", "m", code_may_run=True)) is sandboxd.InternalError


def test_invalid_arguments_are_refused_by_the_daemon_before_any_vm(client, daemon) -> None:
    before = len(daemon.children())
    cases = [
        (dict(code=""), "code is empty"),
        (dict(code="  \n"), "only white space"),
        (dict(code="x\0"), "NUL"),
        (dict(code="1", env={"LD_PRELOAD": "/x.so"}), "LD_PRELOAD"),
        (dict(code="1", env={"pythonpath": "/x"}), "not allowed"),
        (dict(code="1", memory_mb=64), "memory 64 MB"),
        (dict(code="1", timeout=0.01), "timeout 10 ms"),
    ]
    for kwargs, message in cases:
        with pytest.raises(sandboxd.InvalidArgumentError, match=message) as e:
            client.run(**kwargs)
        assert e.value.retry_safe and not e.value.retryable and e.value.code == "invalid_argument"
    assert len(daemon.children()) <= before  # (an earlier test's VM may still be going)
    # Checked here, against the wire's bounds, without a round trip.
    with pytest.raises(sandboxd.InvalidArgumentError, match="limit is 1048576"):
        client.run("#" * (sandboxd.limits.MAX_CODE_BYTES + 1))
    with pytest.raises(sandboxd.InvalidArgumentError, match="unknown language"):
        client.run("1", language="cobol")
    with pytest.raises(sandboxd.InvalidArgumentError, match="positive"):
        client.run("1", timeout=-1)


def test_not_found_for_a_session_that_does_not_exist(client) -> None:
    ghost = client.open_session("s-ffffffffffffffffffffffff")
    for call in (lambda: ghost.exec("1"), lambda: ghost.read_file("x"), ghost.list_files, ghost.close):
        with pytest.raises(sandboxd.NotFoundError) as e:
            call()
        assert e.value.retry_safe


def test_no_daemon_is_a_communication_error_at_once(tmp_path) -> None:
    t = time.monotonic()
    with pytest.raises(sandboxd.CommunicationError, match="is sandboxd running") as e:
        sandboxd.Client(tmp_path / "none.sock").run("print(1)")
    assert time.monotonic() - t < 1
    assert e.value.retry_safe and e.value.retryable and isinstance(e.value, ConnectionError)
    # A socket nobody listens on any more.
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(tmp_path / "dead.sock"))
    s.close()
    with pytest.raises(sandboxd.CommunicationError):
        sandboxd.Client(tmp_path / "dead.sock").status()


def test_permission_denied_for_a_uid_the_daemon_does_not_allow(daemon) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to act as a second uid")
    os.chmod(daemon.socket, 0o666)
    os.chmod(daemon.dir, 0o711)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: nobody
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            try:
                sandboxd.Client(daemon.socket, capacity_wait=0).run("print(1)")
                msg = "ran"
            except sandboxd.SandboxError as e:
                msg = f"{type(e).__name__}|{e.code}|{e.retry_safe}|{e.message}"
            os.write(w, msg.encode())
        finally:
            os._exit(0)
    os.close(w)
    try:
        got = b""
        while chunk := os.read(r, 4096):
            got += chunk
        os.waitpid(pid, 0)
    finally:
        os.close(r)
        os.chmod(daemon.socket, 0o660)
        os.chmod(daemon.dir, 0o700)
    assert got.decode() == "PermissionDeniedError|permission_denied|True|uid 65534 is not allowed to use sandboxd"


@pytest.fixture(scope="module")
def limited(private_daemon_module):  # type: ignore[no-untyped-def]
    """A daemon that lets one uid have one run at a time."""
    return private_daemon_module("--max-runs-per-uid", "1")


def test_capacity_refuses_a_second_run_and_is_retried_with_backoff(limited) -> None:
    no_retry = sandboxd.Client(limited.socket, capacity_wait=0)
    assert no_retry.status().runs_per_uid == 1
    first: dict = {}
    t = threading.Thread(target=lambda: first.setdefault("r", no_retry.run("import time\ntime.sleep(3)\nprint(1)")))
    t.start()
    try:
        deadline = time.monotonic() + 30
        while no_retry.status().runs_active + no_retry.status().runs_queued == 0:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        with pytest.raises(sandboxd.CapacityError) as e:
            no_retry.run("print(2)")
        assert e.value.retryable and e.value.retry_safe
        # With retries (the default), the same call waits its turn.
        r = sandboxd.Client(limited.socket).run("print(3)")
        assert r.stdout == b"3\n"
    finally:
        t.join(120)
    assert first["r"].stdout == b"1\n"


def test_a_daemon_killed_mid_call_raises_at_once(limited) -> None:
    c = sandboxd.Client(limited.socket, capacity_wait=0)
    started = threading.Event()
    outcome: dict = {}

    def call() -> None:
        try:
            c.run("print('up', flush=True)\nimport time\ntime.sleep(60)", timeout=120,
                  on_stdout=lambda b: started.set())
        except BaseException as e:  # noqa: BLE001 - examined below
            outcome["error"] = e
            outcome["at"] = time.monotonic()

    t = threading.Thread(target=call)
    t.start()
    assert started.wait(120), limited.log()[-2000:]
    killed_at = time.monotonic()
    limited.kill()
    t.join(10)
    assert not t.is_alive()
    e = outcome["error"]
    assert isinstance(e, sandboxd.CommunicationError)
    assert outcome["at"] - killed_at < 2
    assert not e.retry_safe  # the code was running


def test_vm_boot_failed_and_a_daemon_side_timeout(private_daemon) -> None:
    # /bin/false stands in for a QEMU that dies at once; frames must be
    # complete within 200 ms.
    broken = private_daemon("--qemu", "/bin/false", "--frame-timeout-ms", "200")
    c = sandboxd.Client(broken.socket)
    with pytest.raises(sandboxd.VMBootFailedError, match="during boot") as e:
        c.run("print(1)")
    assert e.value.retryable and e.value.retry_safe
    with pytest.raises(sandboxd.VMBootFailedError):
        c.session()
    # A frame begun and not finished: the daemon answers `timeout` on the
    # connection (id 0) and closes it.
    s = socket.socket(socket.AF_UNIX)
    s.connect(broken.socket)
    s.sendall(encode_frame({"type": "status_request", "id": 1})[:3])
    s.settimeout(10)
    reader = FrameReader()
    data = s.recv(65536)
    s.close()
    reader.feed(data)
    ex = _calls.Exchange(_calls.Request({"type": "status_request", "id": 1}, "status", 5))
    with pytest.raises(sandboxd.SandboxTimeoutError, match="not completed") as t:
        ex.feed(reader.next_message())
    assert t.value.retryable and t.value.retry_safe


def test_session_closed_after_its_vm_is_killed(client, daemon) -> None:
    before = set(daemon.children())
    s = client.session("python", idle_timeout=60)
    mine = set(daemon.children()) - before
    assert len(mine) == 1
    assert s.exec("x = 1").exit_code == 0
    os.kill(mine.pop(), 9)  # its QEMU, started by our own daemon
    assert daemon.wait_children_at_most(len(before), 30)
    deadline = time.monotonic() + 10
    while True:
        try:
            s.exec("print(x)")
        except sandboxd.SessionClosedError as e:
            assert not e.retryable and not e.retry_safe  # an exec: the VM may have died under it
            break
        assert time.monotonic() < deadline
        time.sleep(0.1)
    with pytest.raises(sandboxd.SessionClosedError) as e:
        s.read_file("x")
    assert e.value.retry_safe  # a file call runs no code
    with s:
        pass  # leaving a dead session's block is quiet
