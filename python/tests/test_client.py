"""The blocking client against a real daemon: every call, streaming,
timeouts, sessions and files. Tests share one daemon and, where the
behaviour allows, one session (each VM boot costs seconds under TCG)."""
from __future__ import annotations

import os
import time

import pytest

import sandboxd
from sandboxd import limits


def test_status_pool_snapshots_and_sessions(client, session) -> None:
    st = client.status()
    assert st.version and st.accelerator in ("tcg", "kvm")
    assert st.runs_per_uid >= 1 and st.max_vms >= 1
    assert st.sessions >= 1  # the shared session
    assert sorted(p.language for p in client.pool()) == ["javascript", "python", "raw"]
    assert all(p.size == 0 for p in client.pool())  # --pool-* 0
    assert client.snapshots() == []  # --snapshots off
    assert client.snapshots(drop=True) == []  # root may drop
    listed = {s.id: s for s in client.sessions()}
    assert session.id in listed
    assert listed[session.id].language == "python"
    assert session.info is not None and session.info.id == session.id


def test_metrics_are_prometheus_text(client) -> None:
    text = client.metrics()
    assert "# TYPE sandboxd_runs_total counter\n" in text
    assert 'sandboxd_run_phase_seconds_bucket{phase="total",path="cold",le="+Inf"}' in text


def test_a_run_returns_exit_code_output_and_sees_its_environment(client) -> None:
    r = client.run(
        "import os, sys\nprint(os.environ['GREETING'])\nprint('to stderr', file=sys.stderr)\n"
        "sys.stdout.buffer.write(bytes([0, 255]))\nsys.exit(3)",
        env={"GREETING": "héllo"},
        timeout=20,
        memory_mb=256,
    )
    assert isinstance(r, sandboxd.RunResult)
    assert r.exit_code == 3 and r.signal == 0 and not r.timed_out and not r.ok
    assert r.stdout == "héllo\n".encode() + b"\x00\xff"
    assert r.text.startswith("héllo\n")
    assert r.stderr == b"to stderr\n" and r.stderr_text == "to stderr\n"
    assert r.language == "python" and r.vm_start == "boot" and not r.warm_pool_hit
    assert r.timing.total_ms >= r.timing.boot_ms > 0
    assert r.accelerator in ("tcg", "kvm")


def test_javascript_output_reaches_the_callbacks_in_full(client) -> None:
    out, err = [], []
    r = client.run(
        "for (let i = 0; i < 200; i++) { console.log('line ' + i); if (i % 50 == 0) console.error('e' + i); }",
        language="js",
        on_stdout=out.append,
        on_stderr=err.append,
    )
    assert r.language == "javascript" and r.exit_code == 0
    assert b"".join(out) == r.stdout == b"".join(b"line %d\n" % i for i in range(200))
    assert b"".join(err) == r.stderr == b"e0\ne50\ne100\ne150\n"


def test_stream_yields_output_in_order_while_the_code_runs_then_the_result(client) -> None:
    code = (
        "import sys, time\n"
        "print('first', flush=True)\n"
        "time.sleep(2)\n"
        "for i in range(5):\n"
        "    print('out', i, flush=True)\n"
        "    print('err', i, file=sys.stderr, flush=True)\n"
        "    time.sleep(0.2)\n"
    )
    events = []
    for ev in client.stream(code, timeout=30):
        events.append((time.monotonic(), ev))
    *outputs, (end, result) = events
    assert isinstance(result, sandboxd.RunResult) and result.exit_code == 0
    assert all(isinstance(ev, sandboxd.Output) for _, ev in outputs)
    # Completeness: the streamed bytes are the result's, stream by stream.
    assert b"".join(ev.data for _, ev in outputs if ev.stream == "stdout") == result.stdout
    assert b"".join(ev.data for _, ev in outputs if ev.stream == "stderr") == result.stderr
    # Order: each "out i" came before "err i", and before "out i+1".
    seen = "".join(ev.text for _, ev in outputs)
    positions = [seen.index(f"{s} {i}\n") for i in range(5) for s in ("out", "err")]
    assert positions == sorted(positions)
    # It streamed: "first" arrived while the code still slept.
    first_at = next(t for t, ev in outputs if ev.data.startswith(b"first"))
    assert end - first_at >= 1.5


def test_a_timeout_is_a_result_with_the_output_written_before_it(client) -> None:
    r = client.run("print('before', flush=True)\nwhile True: pass", timeout=2)
    assert r.timed_out and r.signal != 0 and not r.ok
    assert r.stdout == b"before\n"


def test_a_call_that_outlives_its_call_timeout_raises_in_time_and_is_cancelled(client, daemon) -> None:
    before = len(daemon.children())
    t = time.monotonic()
    with pytest.raises(sandboxd.SandboxTimeoutError) as e:
        client.run("import time\ntime.sleep(60)", timeout=120, call_timeout=4)
    took = time.monotonic() - t
    assert 3.9 <= took < 6
    assert isinstance(e.value, TimeoutError)
    assert e.value.code == "timeout" and e.value.retryable
    assert not e.value.retry_safe  # sent: the code may have run
    # The connection closed, so the daemon stopped the run and its VM.
    assert daemon.wait_children_at_most(before, 30)


def test_a_run_with_files_in_and_out(client, tmp_path) -> None:
    before = {s.id for s in client.sessions()}
    local = tmp_path / "local.bin"
    local.write_bytes(bytes(range(256)))
    r = client.run(
        "data = open('in/a.txt').read()\nraw = open('blob', 'rb').read()\n"
        "open('out.txt', 'w').write(data.upper() + str(len(raw)))\nprint('done')",
        files={"in/a.txt": "hello", "blob": local},
        download=["out.txt"],
        timeout=20,
    )
    assert r.exit_code == 0 and r.stdout == b"done\n"
    assert r.files == {"out.txt": b"HELLO256"}
    # The one-exec session is gone.
    assert {s.id for s in client.sessions()} == before


# ---------------------------------------------------------------- sessions


def test_a_session_keeps_state_between_execs_and_by_id(client, session) -> None:
    assert session.exec("counter = 41").exit_code == 0
    r = session.exec("counter += 1\nprint(counter)")
    assert r.stdout == b"42\n" and not r.state_lost
    again = client.open_session(session.id)
    assert again.info is None
    assert again.exec("print(counter)").stdout == b"42\n"


def test_session_stream_and_exec_timeout_keep_the_session(session) -> None:
    events = list(session.stream("import sys\nprint('a')\nprint('b', file=sys.stderr)"))
    assert isinstance(events[-1], sandboxd.RunResult)
    assert b"".join(e.data for e in events[:-1] if e.stream == "stdout") == b"a\n"
    r = session.exec("import time\nkept = 'yes'\ntime.sleep(30)", timeout=1)
    assert r.timed_out
    assert session.exec("print(kept)").stdout == b"yes\n"


def test_session_files_write_read_list(session) -> None:
    blob = os.urandom(3 * limits.FILE_CHUNK_BYTES + 123)  # four chunks
    session.write_file("data/blob.bin", blob)
    session.write_file("data/run.sh", "#!/bin/sh\necho ran\n", executable=True)
    session.write_file("data/empty", b"")
    assert session.read_file("data/blob.bin") == blob
    assert session.read_file("data/empty") == b""
    r = session.exec("import os, hashlib\nprint(os.access('data/run.sh', os.X_OK))\n"
                     "print(hashlib.sha256(open('data/blob.bin','rb').read()).hexdigest())")
    import hashlib

    assert r.stdout.decode().split() == ["True", hashlib.sha256(blob).hexdigest()]
    listing = session.list_files("data")
    assert not listing.truncated
    entries = {e.name: e for e in listing}
    assert set(entries) == {"blob.bin", "run.sh", "empty"}
    assert entries["blob.bin"].size == len(blob) and not entries["blob.bin"].is_dir
    assert any(e.name == "data" and e.is_dir for e in session.list_files())


def test_a_listing_past_its_limit_says_truncated(session) -> None:
    session.exec("import os\nos.makedirs('many', exist_ok=True)\n"
                 "for i in range(1005): open(f'many/f{i}', 'w').close()")
    listing = session.list_files("many")
    assert listing.truncated and len(listing) == limits.MAX_LIST_ENTRIES


def test_session_file_errors(session) -> None:
    with pytest.raises(sandboxd.NotFoundError) as e:
        session.read_file("no/such/file")
    assert e.value.retry_safe and not e.value.retryable
    with pytest.raises(sandboxd.InvalidArgumentError, match="leaves the session's home"):
        session.write_file("../escape", b"x")
    with pytest.raises(sandboxd.InvalidArgumentError, match="absolute"):
        session.read_file("/etc/passwd")


def test_a_session_as_a_context_manager_is_closed(client) -> None:
    with client.session("raw", idle_timeout=60) as s:
        assert s.exec("x=5; echo $x").stdout == b"5\n"
        sid = s.id
    assert s.closed
    assert sid not in {i.id for i in client.sessions()}
    with pytest.raises(sandboxd.SessionClosedError):
        s.exec("echo again")


def test_session_exposes_a_port_and_its_network_can_change(client) -> None:  # type: ignore[no-untyped-def]
    import urllib.request

    with client.session("python", expose_ports=[8000]) as s:
        assert len(s.info.exposed_ports) == 1
        url = s.info.exposed_ports[0]["url"]
        assert url.startswith("http://127.0.0.1:")
        s.exec(
            "import http.server, threading\n"
            "srv = http.server.ThreadingHTTPServer(('127.0.0.1', 8000), http.server.SimpleHTTPRequestHandler)\n"
            "threading.Thread(target=srv.serve_forever, daemon=True).start()\n"
        )
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        assert direct.open(url + "/", timeout=30).status == 200
        info = s.set_network(["example.org"])
        assert info.allowed_domains == ["example.org"]
        assert s.set_network(None).allowed_domains == []
        r = s.exec("print(1)")
        assert r.network["connections"] >= 0 and isinstance(r.network["denied"], list)
