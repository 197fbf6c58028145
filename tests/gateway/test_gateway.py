"""sandbox-gateway against a real daemon: python-sandbox's requests and
responses, files from /tmp/output, auth, limits, cancellation, NDJSON,
sessions, concurrency; and the daemon's metrics and audit trail as the
runs happen. Each case says how many VMs it boots; the suite shares one
daemon."""
from __future__ import annotations

import http.client
import json
import re
import socket
import subprocess
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List

import pytest

from conftest import ROOT, SANDBOXCTL_BIN, TOKEN_A, TOKEN_B, TOKEN_TINY, Stack

prometheus = pytest.importorskip(
    "prometheus_client.parser", reason="python3-prometheus-client is not installed (apt-get install python3-prometheus-client)"
)


def metrics(stack: Stack) -> Dict[str, float]:
    """Every sample of /metrics, parsed by prometheus_client's own parser."""
    status, headers, body = stack.request("GET", "/metrics", token=None)
    assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
    out: Dict[str, float] = {}
    for family in prometheus.text_string_to_metric_families(body.decode()):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def audit_entries(stack: Stack) -> List[Dict[str, str]]:
    """The daemon's audit entries from its stderr (no journald here)."""
    out = []
    for line in stack.daemon.log().splitlines():
        m = re.match(r"^<\d>audit: (\{.*\})$", line)
        if m:
            out.append(json.loads(m.group(1)))
    return out


# ---------------------------------------------------------------- no VM


def test_health_openapi_and_auth(stack: Stack) -> None:
    status, h = stack.json("GET", "/health", token=None)
    assert status == 200 and h["status"] == "ok"
    assert h["accelerator"] in ("tcg", "kvm") and h["max_vms"] >= 1 and h["queue"] == 0
    assert sorted(p["language"] for p in h["pool"]) == ["javascript", "python", "raw"]
    status, _, body = stack.request("GET", "/openapi.json", token=None)
    assert status == 200
    assert json.loads(body) == json.loads((ROOT / "gateway/openapi.json").read_text())
    # No token, a wrong one, another scheme: 401, and nothing runs.
    for token, header in ((None, None), ("wrong-token-0123456789", None), (None, f"Basic {TOKEN_A}")):
        hdrs = {"Authorization": header} if header else None
        status, headers, body = stack.request("POST", "/execute", {"code": "print(1)"}, token=token, headers=hdrs)
        assert status == 401, body
        assert headers.get("www-authenticate") == "Bearer"
    assert stack.request("GET", "/v1/sessions", token="x" * 20)[0] == 401


def test_body_cap_and_bad_requests(stack: Stack) -> None:
    status, _, _ = stack.request("POST", "/execute", {"code": "x" * 70000})  # --max-body 65536
    assert status == 413
    status, _, _ = stack.request("POST", "/execute", b"x" * (60 << 20))  # past every cap: refused before reading
    assert status == 413
    status, body = stack.json("POST", "/execute", b"{not json")
    assert status == 400 and body["success"] is False and body["code"] == "invalid_argument"
    status, body = stack.json("POST", "/execute", {"timeout": 3})
    assert status == 400 and "'code' is required" in body["error"]
    status, body = stack.json("POST", "/v1/runs", {"code": "print(1)", "surprise": 1})
    assert status == 400 and body["error"]["code"] == "invalid_argument"
    status, body = stack.json("GET", "/files/" + "0" * 32 + "/x", token=None)
    assert status == 404


def test_hostile_input_leaves_the_gateway_serving(stack: Stack) -> None:
    def raw(data: bytes) -> bytes:
        s = socket.create_connection(("127.0.0.1", stack.port), timeout=30)
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            out = b""
            while chunk := s.recv(65536):
                out += chunk
            return out
        except OSError:
            return b""
        finally:
            s.close()

    auth = f"Authorization: Bearer {TOKEN_A}\r\n".encode()
    raw(bytes(range(256)) * 64)  # not HTTP at all
    raw(b"GET /health HTTP/1.1\r\nX: " + b"a" * (1 << 20) + b"\r\n\r\n")  # a huge header
    raw(b"GET /" + b"a" * 100000 + b" HTTP/1.1\r\n\r\n")  # a huge target
    raw(b"POST /execute HTTP/1.1\r\n" + auth + b"Content-Length: 99999999999999999999\r\n\r\n")
    raw(b"POST /execute HTTP/1.1\r\n" + auth + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n")
    for body in (b"[" * 100000, b'{"code": "\\ud800"}', b'{"code": 1}', b'{"code": "x", "env": {"A": 1}}',
                 b'{"code": "x", "timeout": 1e400}', b'{"code": "x", "memory_mb": -1}', b'{"code": "x", "language": "cobol"}',
                 rb'{"code": "print(1)\u0000"}', b'{"code": "   "}', b'{"code": "x", "allowed_domains": "example.org"}',
                 b'{"code": "x", "allowed_domains": ["1.2.3.4"]}', b'{"code": "x", "allowed_domains": [7]}',
                 b'{"code": "x", "allow_network": "yes"}', b'{"code": "x", "expose_ports": [8080]}',
                 b'{"code": "x", "expose_ports": [70000]}', b'{"code": "x", "expose_ports": [{"internal": 1, "x": 2}]}'):  # fmt: skip
        status, _, _ = stack.request("POST", "/execute", body)
        assert status in (400, 413), body[:40]
    for path in ("/v1/sessions/../../etc/passwd/exec", "/v1/sessions/" + "x" * 100 + "/exec", "/files/zz", "/nope"):
        assert stack.request("POST", path, {"code": "1"})[0] in (400, 404, 405)
    status, _, _ = stack.request("PUT", "/v1/sessions/s-unknown/files/../../x", b"data")
    assert status == 404
    assert stack.gateway and stack.gateway.proc.poll() is None
    assert stack.json("GET", "/health", token=None)[0] == 200


# ---------------------------------------------------------------- VMs


def test_execute_answers_python_sandboxs_shape(stack: Stack) -> None:  # 1 VM
    before = metrics(stack)
    status, r = stack.json("POST", "/execute", {"code": "print(2+2)", "timeout": 10})
    assert status == 200, r
    assert {k: r[k] for k in ("success", "stdout", "stderr", "exit_code", "error", "files")} == {
        "success": True, "stdout": "4\n", "stderr": "", "exit_code": 0, "error": None, "files": [],
    }  # fmt: skip
    assert isinstance(r["execution_time"], float) and r["execution_time"] >= 0
    after = metrics(stack)
    assert after['sandboxd_runs_total{kind="session_exec",result="ok"}'] >= before['sandboxd_runs_total{kind="session_exec",result="ok"}'] + 1
    assert after["sandboxd_sessions_opened_total"] >= before["sandboxd_sessions_opened_total"] + 1
    assert stack.wait_no_vm()  # /execute's session is closed at once
    # The same text through sandboxctl, which the parser reads too.
    text = subprocess.run([SANDBOXCTL_BIN, "--socket", stack.socket, "metrics"], capture_output=True, check=True, timeout=30).stdout
    names = {f.name for f in prometheus.text_string_to_metric_families(text.decode())}
    assert {"sandboxd_runs", "sandboxd_run_phase_seconds", "sandboxd_vms", "sandboxd_denials"} <= names
    assert {"sandboxd_layer_requests", "sandboxd_layer_builds", "sandboxd_layer_build_seconds", "sandboxd_layer_cache_bytes",
            "sandboxd_layer_cache_layers", "sandboxd_layer_builds_in_progress"} <= names  # fmt: skip


def test_execute_returns_files_from_tmp_output(stack: Stack) -> None:  # 1 VM
    code = (
        "import os, sys\nos.makedirs('/tmp/output/sub', exist_ok=True)\n"
        "open('/tmp/output/report.txt', 'w').write('hello report\\n')\n"
        "open('/tmp/output/data.bin', 'wb').write(bytes(range(256)) * 40)\n"
        "open('/tmp/output/sub/nested.txt', 'w').write('not returned')\n"
        "print('wrote'); sys.exit(3)"
    )
    status, r = stack.json("POST", "/execute", {"code": code, "timeout": 20})
    assert status == 200, r
    assert r["success"] is False and r["exit_code"] == 3 and r["error"] == "exited with code 3"
    files = {f["name"]: f for f in r["files"]}
    assert sorted(files) == ["data.bin", "report.txt"]
    assert files["data.bin"]["size"] == 10240
    for name, want in (("report.txt", b"hello report\n"), ("data.bin", bytes(range(256)) * 40)):
        url = files[name]["url"]
        assert url.startswith(f"http://127.0.0.1:{stack.port}/files/")
        assert files[name]["expires_at"] > time.time()
        status, _, body = stack.request("GET", url.split(str(stack.port), 1)[1], token=None)
        assert status == 200 and body == want


@pytest.mark.parametrize(
    "language,code",
    [
        ("javascript", "const fs = require('fs'); fs.mkdirSync('/tmp/output'); fs.writeFileSync('/tmp/output/out.txt', 'from js'); console.log('js')"),
        ("raw", "mkdir /tmp/output && printf 'from js' > /tmp/output/out.txt && echo raw"),
    ],
)
def test_execute_collects_files_in_every_language(stack: Stack, language: str, code: str) -> None:  # 1 VM each
    status, r = stack.json("POST", "/execute", {"code": code, "language": language, "timeout": 20})
    assert status == 200, r
    assert r["success"] is True, r["stderr"][:300]
    assert r["language"] == language and r["stdout"] == ("js\n" if language == "javascript" else "raw\n")
    assert [f["name"] for f in r["files"]] == ["out.txt"]
    status, _, body = stack.request("GET", r["files"][0]["url"].split(str(stack.port), 1)[1], token=None)
    assert status == 200 and body == b"from js"


def test_expired_download_links_are_refused(stack: Stack) -> None:  # 1 VM
    gw, port = stack.start_gateway(["--file-ttl", "1"], "gateway-ttl")
    try:
        status, _, r = stack.request("POST", "/execute", {"code": "import os; os.makedirs('/tmp/output'); open('/tmp/output/a', 'w').write('a')"}, port=port)
        assert status == 200
        url = json.loads(r)["files"][0]["url"]
        path = url.split(str(port), 1)[1]
        time.sleep(2.5)
        status, _, _ = stack.request("GET", path, token=None, port=port)
        assert status == 404
    finally:
        gw.stop()


def test_timeout_is_504_with_the_output_so_far(stack: Stack) -> None:  # 1 VM
    status, r = stack.json("POST", "/execute", {"code": "import time\nprint('before', flush=True)\ntime.sleep(60)", "timeout": 1})
    assert status == 504, r
    assert r["success"] is False and r["timed_out"] is True and r["stdout"] == "before\n"
    assert r["error"].startswith("timed out after 1.000 s")


def test_ndjson_stream_joined_equals_stdout(stack: Stack) -> None:  # 1 VM
    code = "import sys, time\nfor i in range(5):\n    print('line', i, flush=True)\n    time.sleep(0.2)\nprint('err', file=sys.stderr)"
    c = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=240)
    c.request("POST", "/v1/runs", body=json.dumps({"code": code, "stream": True}),
              headers={"Authorization": f"Bearer {TOKEN_A}", "Content-Type": "application/json"})  # fmt: skip
    t0 = time.monotonic()
    resp = c.getresponse()
    headers_after = time.monotonic() - t0
    assert resp.status == 200 and resp.getheader("Content-Type") == "application/x-ndjson"
    lines = [json.loads(line) for line in resp.read().decode().splitlines()]
    c.close()
    # The status waits for the daemon's first answer only briefly: the
    # headers come while the run still goes (it sleeps for a second).
    assert headers_after < time.monotonic() - t0 - 0.5
    outputs = [x for x in lines if x["type"] == "output"]
    assert lines[-1]["type"] == "result" and all(x["type"] == "output" for x in lines[:-1])
    result = lines[-1]["result"]
    assert "".join(x["data"] for x in outputs if x["stream"] == "stdout") == result["stdout"] == "".join(
        f"line {i}\n" for i in range(5)
    )
    assert "".join(x["data"] for x in outputs if x["stream"] == "stderr") == result["stderr"] == "err\n"


def test_a_session_exposes_a_port_and_changes_its_allowlist(stack: Stack) -> None:  # 1 VM
    before = metrics(stack)
    status, created = stack.json("POST", "/v1/sessions", {"language": "python", "expose_ports": [{"internal": 8000}],
                                                          "allowed_domains": ["api.example.org"]})  # fmt: skip
    assert status == 201, created
    sid = created["session"]
    base = f"/v1/sessions/{sid}"
    try:
        assert created["allowed_domains"] == ["api.example.org"]
        [port] = created["exposed_ports"]
        assert port["internal"] == 8000 and port["host"] == "127.0.0.1"
        assert port["url"] == f"http://127.0.0.1:{port['external']}"
        # A server the session starts in the background, reached from here.
        status, r = stack.json("POST", base + "/exec", {"code": "import subprocess, sys, os\n"
                               "srv = subprocess.Popen([sys.executable, '-m', 'http.server', '8000', '--bind', '127.0.0.1'], "
                               "cwd='/tmp', stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
                               "print(os.environ.get('https_proxy'))"})  # fmt: skip
        assert status == 200 and r["stdout"] == "http://127.0.0.1:3128\n", r
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(port["url"] + "/", timeout=10) as page:
                    assert page.status == 200 and b"Directory listing" in page.read()
                    break
            except OSError:
                assert time.monotonic() < deadline, "the guest's server never answered on its exposed port"
                time.sleep(0.5)
        # The allowlist replaced, then emptied; bad lists and other tokens refused.
        status, info = stack.json("PUT", base + "/network", {"allowed_domains": ["*.example.org", "example.com:8443"]})
        assert status == 200 and info["allowed_domains"] == ["*.example.org", "example.com:8443"], info
        for body in ({"allowed_domains": ["1.2.3.4"]}, {"allowed_domains": "x"}, {"code": "x"}):
            status, err = stack.json("PUT", base + "/network", body)
            assert status == 400 and err["error"]["code"] == "invalid_argument", (body, err)
        assert stack.json("PUT", base + "/network", {"allowed_domains": []}, token=TOKEN_B)[0] == 404
        status, info = stack.json("PUT", base + "/network", {"allowed_domains": []})
        assert status == 200 and info["allowed_domains"] == [], info
        # The exposed port's connection shows in the next exec's result and the metrics.
        status, r = stack.json("POST", base + "/exec", {"code": "print('after')"})
        assert status == 200 and r["network"]["connections"] >= 1, r
        m = metrics(stack)
        assert m["sandboxd_network_connections_total"] >= before["sandboxd_network_connections_total"] + 1
        assert m['sandboxd_network_bytes_total{direction="in"}'] > before['sandboxd_network_bytes_total{direction="in"}']
        assert m['sandboxd_network_bytes_total{direction="out"}'] > before['sandboxd_network_bytes_total{direction="out"}']
    finally:
        assert stack.request("DELETE", base)[0] in (204, 404)


def test_a_streamed_run_sends_its_exposed_ports_first(stack: Stack) -> None:  # 1 VM
    status, err = stack.json("POST", "/v1/runs", {"code": "print(1)", "expose_ports": [8080]})
    assert status == 400 and "stream" in err["error"]["message"]
    c = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=240)
    c.request("POST", "/v1/runs", body=json.dumps({"code": "print('up')", "stream": True, "expose_ports": [{"internal": 8080}]}),
              headers={"Authorization": f"Bearer {TOKEN_A}", "Content-Type": "application/json"})  # fmt: skip
    resp = c.getresponse()
    assert resp.status == 200
    lines = [json.loads(line) for line in resp.read().decode().splitlines()]
    c.close()
    assert lines[0]["type"] == "exposed_ports" and lines[-1]["type"] == "result", lines
    assert all(x["type"] == "output" for x in lines[1:-1])
    [port] = lines[0]["exposed_ports"]
    assert port["internal"] == 8080 and port["url"] == f"http://127.0.0.1:{port['external']}"
    assert "".join(x["data"] for x in lines[1:-1]) == lines[-1]["result"]["stdout"] == "up\n"
    assert stack.wait_no_vm(60)


def test_capacity_quota_and_a_departed_client(stack: Stack) -> None:  # 1 VM
    # A run that sleeps, through the one-request token; its client will leave.
    s = socket.create_connection(("127.0.0.1", stack.port), timeout=30)
    body = json.dumps({"code": "import time; time.sleep(120)", "timeout": 200}).encode()
    s.sendall(
        b"POST /v1/runs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN_TINY.encode()
        + b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while stack.json("GET", "/health", token=None)[1]["runs_active"] < 1:
        assert time.monotonic() < deadline, "the sleeping run never started"
        time.sleep(0.1)
    # The token's own quota: 429 from the gateway.
    status, headers, _ = stack.request("POST", "/v1/runs", {"code": "print(1)"}, token=TOKEN_TINY)
    assert status == 429 and headers["retry-after"] == "1"
    # The daemon's per-uid limit (1 run): 429 from the daemon's capacity.
    status, headers, body = stack.request("POST", "/v1/runs", {"code": "print(1)"}, token=TOKEN_B)
    assert status == 429 and headers["retry-after"] == "1"
    assert json.loads(body)["error"]["code"] == "capacity"
    # Streamed, the same refusal is a status too, not 200 and an error line.
    t0 = time.monotonic()
    status, headers, body = stack.request("POST", "/v1/runs", {"code": "print(1)", "stream": True}, token=TOKEN_B)
    assert status == 429 and headers["retry-after"] == "1", body
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["error"]["code"] == "capacity"
    assert time.monotonic() - t0 < 5
    before = metrics(stack)["sandbox_gateway_cancelled_total"]
    s.close()  # the client goes: the run is cancelled and its VM destroyed
    assert stack.wait_no_vm(60)
    deadline = time.monotonic() + 30
    while stack.json("GET", "/health", token=None)[1]["runs_active"] != 0:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert metrics(stack)["sandbox_gateway_cancelled_total"] == before + 1
    assert any(e["SANDBOXD_AUDIT"] == "run" and e["SANDBOXD_RESULT"] == "cancelled" for e in audit_entries(stack))


def test_a_departed_execute_client_leaves_no_vm_and_no_session(stack: Stack) -> None:  # 1 VM
    s = socket.create_connection(("127.0.0.1", stack.port), timeout=30)
    body = json.dumps({"code": "import time; time.sleep(120)", "timeout": 200}).encode()
    s.sendall(
        b"POST /execute HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN_A.encode()
        + b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while stack.json("GET", "/health", token=None)[1]["sessions"] < 1:
        assert time.monotonic() < deadline, "the session never opened"
        time.sleep(0.1)
    s.close()
    assert stack.wait_no_vm(60)
    deadline = time.monotonic() + 30
    while stack.json("GET", "/health", token=None)[1]["sessions"] != 0:
        assert time.monotonic() < deadline, "the session outlived its client"
        time.sleep(0.1)


def test_sessions_belong_to_their_token_and_hold_100_concurrent_requests(stack: Stack) -> None:  # 1 VM
    status, created = stack.json("POST", "/v1/sessions", {"language": "python", "timeout": 30})
    assert status == 201, created
    sid = created["session"]
    base = f"/v1/sessions/{sid}"
    try:
        assert stack.json("POST", base + "/exec", {"code": "x = 41"})[0] == 200
        status, r = stack.json("POST", base + "/exec", {"code": "print(x + 1)"})
        assert status == 200 and r["stdout"] == "42\n"
        payload = bytes(range(256)) * 100
        assert stack.request("PUT", base + "/files/in/data.bin", payload)[0] == 204
        status, _, body = stack.request("GET", base + "/files/in/data.bin")
        assert status == 200 and body == payload
        status, listing = stack.json("GET", base + "/files?path=in")
        assert status == 200 and listing["entries"] == [{"name": "data.bin", "is_dir": False, "size": 25600}]
        assert sid in [s["session"] for s in stack.json("GET", "/v1/sessions")[1]["sessions"]]
        # Another token sees nothing and may touch nothing.
        assert stack.json("GET", "/v1/sessions", token=TOKEN_B)[1]["sessions"] == []
        for method, path, body in (("POST", base + "/exec", {"code": "print(x)"}), ("GET", base + "/files/in/data.bin", None),
                                   ("PUT", base + "/files/evil", b"x"), ("DELETE", base, None)):  # fmt: skip
            assert stack.request(method, path, body, token=TOKEN_B)[0] == 404, (method, path)

        # 100 requests from 16 clients: execs on the session (serialized by
        # the daemon, 16 waiting at most) and health checks; all answered.
        def one(i: int) -> Any:
            if i % 4 == 3:
                return stack.json("GET", "/health", token=None)[0]
            status, r = stack.json("POST", base + "/exec", {"code": f"print({i})"})
            return status, r.get("stdout")

        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(one, range(100)))
        for i, a in enumerate(answers):
            assert a == (200 if i % 4 == 3 else (200, f"{i}\n")), (i, a)
    finally:
        status, _, _ = stack.request("DELETE", base)
    assert status == 204
    # Deleted: gone (410), as the daemon remembers it closed.
    assert stack.request("POST", base + "/exec", {"code": "1"})[0] == 410
    assert stack.wait_no_vm()


def test_metrics_and_audit_follow_the_runs(stack: Stack) -> None:  # no new VM
    m = metrics(stack)
    assert m["sandboxd_sessions_opened_total"] >= 4
    assert m["sandboxd_sessions_closed_total"] >= 4
    assert m['sandboxd_runs_total{kind="run",result="ok"}'] >= 1  # the NDJSON run
    assert m['sandboxd_runs_total{kind="session_exec",result="timeout"}'] >= 1
    assert m["sandboxd_timeouts_total"] >= 1
    assert m['sandboxd_errors_total{code="capacity"}'] >= 1
    assert m['sandboxd_denials_total{code="capacity"}'] >= 1
    assert m['sandboxd_file_transfers_total{direction="upload"}'] >= 1
    assert m['sandboxd_file_bytes_total{direction="download"}'] >= 25600
    assert m['sandboxd_run_phase_seconds_count{path="cold",phase="total"}'] >= 1
    assert m['sandboxd_vms{state="leased"}'] == 0
    assert m['sandbox_gateway_requests_total{route="/execute",status="200"}'] >= 1
    assert m['sandbox_gateway_requests_total{route="/execute",status="413"}'] >= 1
    # A request the daemon itself refuses: counted and audited as a denial.
    before = m['sandboxd_denials_total{code="not_found"}']
    p = subprocess.run([SANDBOXCTL_BIN, "--socket", stack.socket, "session", "exec", "s-nosuchsession", "print(1)"],
                       capture_output=True, timeout=30)  # fmt: skip
    assert p.returncode != 0 and b"not_found" in p.stderr
    assert metrics(stack)['sandboxd_denials_total{code="not_found"}'] == before + 1

    entries = audit_entries(stack)
    kinds = {e["SANDBOXD_AUDIT"] for e in entries}
    assert {"run", "session_open", "session_exec", "session_close", "file_write", "file_read", "file_list", "denial"} <= kinds
    ids = {}
    for e in entries:
        ids.setdefault(e["SANDBOXD_AUDIT"], set()).add(e["MESSAGE_ID"])
        assert e["SANDBOXD_UID"].isdigit()
    assert all(len(v) == 1 for v in ids.values())  # one fixed MESSAGE_ID per kind
    run = next(e for e in entries if e["SANDBOXD_AUDIT"] == "run" and e["SANDBOXD_RESULT"] == "ok")
    assert run["SANDBOXD_LANGUAGE"] == "python" and run["SANDBOXD_VM"].startswith("vm-")
    assert int(run["SANDBOXD_TOTAL_MS"]) >= int(run["SANDBOXD_BOOT_MS"])
    assert run["SANDBOXD_STDOUT_BYTES"] == str(len("".join(f"line {i}\n" for i in range(5))))
    write = next(e for e in entries if e["SANDBOXD_AUDIT"] == "file_write")
    assert write["SANDBOXD_BYTES"] == "25600" and write["SANDBOXD_PATH"] == "in/data.bin"
    # sandboxctl's refused exec (the gateway's own probes of ids it does not
    # know are file listings, audited as such).
    denials = [e for e in entries if e["SANDBOXD_AUDIT"] == "denial" and e["SANDBOXD_ERROR"] == "not_found"]
    assert any(d["SANDBOXD_REQUEST"] == "session_exec" and d["PRIORITY"] == "5" for d in denials), denials
    timeout = next(e for e in entries if e["SANDBOXD_AUDIT"] == "session_exec" and e["SANDBOXD_RESULT"] == "timeout")
    assert timeout["SANDBOXD_SIGNAL"] in ("0", "9", "15")
    # sandboxctl top draws the same numbers (one frame, no terminal).
    top = subprocess.run([SANDBOXCTL_BIN, "--socket", stack.socket, "top", "-n", "1"], capture_output=True, timeout=30, check=True)
    text = top.stdout.decode()
    assert text.startswith("sandboxd ") and "\x1b[" not in text
    cold = next(line.split() for line in text.splitlines() if line.startswith("cold "))
    assert int(cold[1]) >= 1 and cold[2].startswith("<")
    assert re.search(r"^python +0 +0 +0 ", text, re.M)
    # Never the code or its output.
    log = stack.daemon.log()
    assert "hello report" not in log and "time.sleep(60)" not in log and "print(2+2)" not in log
