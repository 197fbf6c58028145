"""Protocol conformance without a daemon: the golden frames written by the
C++ codec (tests/golden/messages.h, via proto_golden) decode with the
Python codec to the values stated here, and the Python encoder reproduces
them byte for byte. Plus the strictness and bounds of both directions."""
from __future__ import annotations

import struct
from pathlib import Path

import msgpack
import pytest

from sandboxd import _protocol as p
from sandboxd import limits
from sandboxd._files import ChunkAssembler, compress_chunks
from sandboxd.errors import CommunicationError, InvalidArgumentError

GOLDEN = Path(__file__).parent / "golden"
METRICS_TEXT = '# HELP sandboxd_runs_total Runs.\n# TYPE sandboxd_runs_total counter\nsandboxd_runs_total{kind="run",result="ok"} 3\n'
SID = "s-0123456789abcdef01234567"
CHUNK = bytes.fromhex("28b52ffd20279d000068676f6c64656e206368756e6b0a010060cf2f")

ZERO_TIMING = {"setup_ms": 0, "boot_ms": 0, "startup_ms": 0, "execute_ms": 0, "total_ms": 0}

EXPECTED = {
    "01-run": {
        "type": "run", "id": 1, "language": "python", "code": "print('héllo')\n".encode(),
        "env": [("A", "1"), ("GREETING", "hi there")], "timeout_ms": 1500, "memory_mb": 512,
        "network": True, "allowed_domains": ["example.org", "*.example.com:8443"],
        "expose_ports": [
            {"internal": 8080, "external": 0, "unix_socket": False},
            {"internal": 3000, "external": 18080, "unix_socket": False},
            {"internal": 9000, "external": 0, "unix_socket": True},
        ],
        "packages": ["numpy==1.26.4", "requests[socks]==2.31.0"],
    },
    "02-run-defaults": {"type": "run", "id": 2, "language": "raw", "code": b"echo hi", "env": [], "timeout_ms": 0, "memory_mb": 0,
                        "network": False, "allowed_domains": [], "expose_ports": [], "packages": []},
    "03-output-stdout": {"type": "output", "id": 1, "stream": "stdout", "data": b"line\n\x00\xff"},
    "04-output-stderr": {"type": "output", "id": 7, "stream": "stderr", "data": b"warning: x\n"},
    "05-result": {
        "type": "result", "id": 1, "language": "javascript", "stdout": b"out\n\xfe\x00", "stderr": b"err\n",
        "stdout_truncated": True, "stderr_truncated": False, "exit_code": -3, "signal": 9, "timed_out": True,
        "execution_time_ms": 1234, "cpu_time_ms": 70000, "memory_peak_mb": 300,
        "timing": {"setup_ms": 1, "boot_ms": 200, "startup_ms": 3000, "execute_ms": 65536, "total_ms": 1 << 40},
        "warm_pool_hit": True, "accelerator": "tcg", "vm_start": "boot (snapshot failed)", "state_lost": True,
        "exposed_ports": [{"internal": 8080, "external": 41234, "host": "127.0.0.1", "url": "http://127.0.0.1:41234"}],
        "network": {"connections": 3, "bytes_in": 5000000, "bytes_out": 420, "denied": [
            {"host": "evil.example", "port": 0, "reason": "DNS name not allowed"},
            {"host": "93.184.216.34", "port": 443, "reason": "address not resolved for an allowed name"},
        ]},
        "layer": {"key": "py-0123456789abcdef0123456789abcdef01234567", "cache": "built", "build_ms": 41234},
    },
    "06-result-zero": {
        "type": "result", "id": 3, "language": "python", "stdout": b"", "stderr": b"", "stdout_truncated": False,
        "stderr_truncated": False, "exit_code": 0, "signal": 0, "timed_out": False, "execution_time_ms": 0,
        "cpu_time_ms": 0, "memory_peak_mb": 0, "timing": ZERO_TIMING, "warm_pool_hit": False, "accelerator": "",
        "vm_start": "", "state_lost": False, "exposed_ports": [],
        "network": {"connections": 0, "bytes_in": 0, "bytes_out": 0, "denied": []},
        "layer": {"key": "", "cache": "", "build_ms": 0},
    },
    "07-error": {"type": "error", "id": 1, "code": "capacity", "message": "uid 1000 already has 3 runs in flight — retry"},
    "08-error-refused": {"type": "error", "id": 0, "code": "permission_denied", "message": "uid 65534 is not allowed to use sandboxd"},
    "09-status-request": {"type": "status_request", "id": 1},
    "10-status": {
        "type": "status", "id": 1, "version": "0.1.0", "accelerator": "tcg",
        "accelerator_reason": "kvm_pvm cannot run this guest", "vms": 3, "max_vms": 8, "runs_active": 2,
        "runs_queued": 1, "sessions": 1, "runs_per_uid": 6,
        "pool": [
            {"language": "python", "size": 2, "ready": 1, "booting": 1, "hits": 10, "misses": 4, "layer": ""},
            {"language": "javascript", "size": 1, "ready": 1, "booting": 0, "hits": 0, "misses": 0, "layer": ""},
            {"language": "raw", "size": 0, "ready": 0, "booting": 0, "hits": 0, "misses": 5000000000, "layer": ""},
        ],
        "host_limits": "none: cgroup v2 memory controller missing", "draining": False,
    },
    "11-snapshots-request": {"type": "snapshots_request", "id": 1, "drop": True},
    "12-snapshot-list": {
        "type": "snapshot_list", "id": 1,
        "snapshots": [
            {"key": "python-256-0123abcd", "language": "python", "memory_mb": 256, "bytes": 268435456},
            {"key": "raw-128-ffee", "language": "raw", "memory_mb": 128, "bytes": 1},
        ],
    },
    "13-snapshot-list-empty": {"type": "snapshot_list", "id": 4, "snapshots": []},
    "14-session-create": {
        "type": "session_create", "id": 1, "language": "javascript", "env": [("NODE_ENV", "production")],
        "timeout_ms": 20000, "memory_mb": 384, "idle_timeout_ms": 600000,
        "network": False, "allowed_domains": [], "expose_ports": [{"internal": 3000, "external": 0, "unix_socket": False}],
        "packages": ["left-pad@1.3.0"],
    },
    "15-session-list": {
        "type": "session_list", "id": 1,
        "sessions": [{
            "session": SID, "language": "python", "memory_mb": 256, "idle_timeout_ms": 300000, "exec_count": 12,
            "created_unix_ms": 1700000000000, "last_activity_unix_ms": 1700000005000, "vm_start": "snapshot",
            "exposed_ports": [{"internal": 3000, "external": 40000, "host": "127.0.0.1", "url": "http://127.0.0.1:40000"}],
            "allowed_domains": ["pypi.org", "*.pythonhosted.org"],
            "layer": {"key": "js-89abcdef0123456789abcdef0123456789abcdef", "cache": "hit", "build_ms": 0},
        }],
    },
    "16-session-list-request": {"type": "session_list_request", "id": 1},
    "17-session-exec": {"type": "session_exec", "id": 1, "session": SID, "code": b"x = 1\nprint(x)\n", "timeout_ms": 0},
    "18-session-exec-timeout": {"type": "session_exec", "id": 2, "session": SID, "code": b"import time", "timeout_ms": 2**32 - 1},
    "19-session-close": {"type": "session_close", "id": 1, "session": SID},
    "20-ack": {"type": "ack", "id": 1},
    "21-file-write": {"type": "file_write", "id": 1, "session": SID, "path": "dir/ü.txt".encode(), "size": 39, "executable": True},
    "22-file-chunk": {"type": "file_chunk", "id": 1, "data": CHUNK},
    "23-file-read": {"type": "file_read", "id": 1, "session": SID, "path": b"out/report.txt"},
    "24-file-done": {"type": "file_done", "id": 1, "size": 52428800},
    "25-file-list-request": {"type": "file_list_request", "id": 1, "session": SID, "path": b""},
    "26-file-list": {
        "type": "file_list", "id": 1,
        "entries": [
            {"name": b"input", "is_dir": True, "size": 0},
            {"name": b"a.txt", "is_dir": False, "size": 5},
            {"name": b"bad-\xff-name", "is_dir": False, "size": 123456789012},
        ],
        "truncated": True,
    },
    "27-metrics-request": {"type": "metrics_request", "id": 1},
    "28-metrics": {"type": "metrics", "id": 1, "text": METRICS_TEXT},
    "29-session-network": {
        "type": "session_network", "id": 2, "session": SID, "network": True,
        "allowed_domains": ["pypi.org", "*.pythonhosted.org"],
    },
    "30-layers-request": {"type": "layers_request", "id": 1, "drop": "py-0123456789abcdef0123456789abcdef01234567",
                          "drop_all": False},
    "31-layers-request-all": {"type": "layers_request", "id": 2, "drop": "", "drop_all": True},
    "32-layer-list": {
        "type": "layer_list", "id": 1,
        "layers": [
            {"key": "py-0123456789abcdef0123456789abcdef01234567", "language": "python", "packages": ["mypkg==1.0"],
             "lock": ["mydep==0.1 sha256:ab12", "mypkg==1.0 sha256:cd34"], "bytes": 1048576,
             "last_used_unix_ms": 1700000000000, "users": 2, "building": False},
            {"key": "js-89abcdef0123456789abcdef0123456789abcdef", "language": "javascript", "packages": ["left-pad@1.3.0"],
             "lock": [], "bytes": 0, "last_used_unix_ms": 0, "users": 1, "building": True},
        ],
    },
}  # fmt: skip


def golden_payload(name: str) -> bytes:
    data = (GOLDEN / f"{name}.bin").read_bytes()
    (n,) = struct.unpack(">I", data[:4])
    assert n == len(data) - 4, "one frame per file"
    return data[4:]


def test_every_golden_file_is_expected_and_every_expectation_has_a_file() -> None:
    assert sorted(f.stem for f in GOLDEN.glob("*.bin")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_golden_frame_decodes_to_its_values(name: str) -> None:
    assert p.decode(golden_payload(name)) == EXPECTED[name]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_golden_frame_is_what_python_encodes(name: str) -> None:
    data = (GOLDEN / f"{name}.bin").read_bytes()
    assert p.frame(p.encode(EXPECTED[name])) == data
    # And a decoded message re-encodes to the same bytes.
    assert p.encode(p.decode(data[4:])) == data[4:]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_golden_frame_through_the_frame_reader_in_pieces(name: str) -> None:
    data = (GOLDEN / f"{name}.bin").read_bytes() * 2
    reader = p.FrameReader()
    got = []
    for i in range(0, len(data), 7):
        reader.feed(data[i : i + 7])
        while (m := reader.next_message()) is not None:
            got.append(m)
    assert got == [EXPECTED[name], EXPECTED[name]]


def test_golden_chunk_decompresses() -> None:
    a = ChunkAssembler()
    a.add(p.decode(golden_payload("22-file-chunk"))["data"])
    assert a.finish(39) == b"golden chunk\n" * 3


def test_every_client_request_and_daemon_answer_has_a_golden_frame() -> None:
    covered = {m["type"] for m in EXPECTED.values()}
    assert p.CLIENT_SENDS <= covered
    assert p.DAEMON_SENDS <= covered
    assert set(p.MESSAGES) == covered


# ---------------------------------------------------------------- strictness


def payload(**fields: object) -> bytes:
    return msgpack.packb(fields, use_bin_type=True)


def test_decode_refuses_unknown_missing_and_duplicate_keys() -> None:
    with pytest.raises(p.ProtocolError, match="unknown key 'extra'"):
        p.decode(payload(type="ack", id=1, extra=2))
    with pytest.raises(p.ProtocolError, match="missing key 'id'"):
        p.decode(payload(type="ack"))
    dup = b"\x83\xa4type\xa3ack\xa2id\x01\xa2id\x02"
    with pytest.raises(p.ProtocolError, match="duplicate key"):
        p.decode(dup)
    with pytest.raises(p.ProtocolError, match="unknown message type"):
        p.decode(payload(type="hello", version=2, kernel="k", prestarted=""))


def test_decode_refuses_wrong_types_and_out_of_range_values() -> None:
    with pytest.raises(p.ProtocolError, match="not an integer"):
        p.decode(payload(type="ack", id="1"))
    with pytest.raises(p.ProtocolError, match="out of range"):
        p.decode(payload(type="ack", id=-1))
    with pytest.raises(p.ProtocolError, match="out of range"):
        p.decode(payload(type="file_done", id=1, size=limits.MAX_FILE_BYTES + 1))
    with pytest.raises(p.ProtocolError, match="not a string"):
        p.decode(payload(type="session_close", id=1, session=b"bytes, not text"))
    with pytest.raises(p.ProtocolError, match="unknown 'stream'"):
        p.decode(payload(type="output", id=1, stream="stdin", data=b""))
    with pytest.raises(p.ProtocolError, match="not a map"):
        p.decode(msgpack.packb([1, 2]))
    with pytest.raises(p.ProtocolError, match="not one msgpack object"):
        p.decode(b"\xc1")
    # Bytes fields take str too, as the C++ decoder does.
    assert p.decode(payload(type="output", id=1, stream="stdout", data="text"))["data"] == b"text"


def test_encode_checks_values_against_their_fields() -> None:
    with pytest.raises(p.ProtocolError, match="limit is 1048576"):
        p.encode({"type": "run", "id": 1, "code": b"x" * (limits.MAX_CODE_BYTES + 1)})
    with pytest.raises(p.ProtocolError, match="outside"):
        p.encode({"type": "run", "id": 1, "code": b"x", "timeout_ms": 2**32})
    with pytest.raises(p.ProtocolError, match="not one of"):
        p.encode({"type": "run", "id": 1, "code": b"x", "language": "ruby"})
    with pytest.raises(p.ProtocolError, match="no field"):
        p.encode({"type": "ack", "id": 1, "bogus": 1})
    with pytest.raises(p.ProtocolError, match="more than 100"):
        p.encode({"type": "run", "id": 1, "code": b"x", "env": {f"V{i}": "" for i in range(101)}})
    with pytest.raises(InvalidArgumentError) as e:
        p.encode_frame({"type": "run", "id": 1, "code": b"x" * (limits.MAX_CODE_BYTES + 1)})
    assert e.value.retry_safe


def test_frame_reader_refuses_an_oversize_frame_header() -> None:
    r = p.FrameReader()
    r.feed(struct.pack(">I", limits.MAX_FRAME_BYTES + 1))
    with pytest.raises(CommunicationError, match="over the"):
        r.next_payload()


def test_chunks_round_trip_and_are_one_frame_each() -> None:
    data = bytes(range(256)) * 9000  # just over two chunks
    chunks = list(compress_chunks(data))
    assert len(chunks) == 3
    a = ChunkAssembler()
    for c in chunks:
        a.add(c)
    assert a.finish(len(data)) == data
    assert list(compress_chunks(b"")) == []
    with pytest.raises(CommunicationError, match="exactly one zstd frame"):
        ChunkAssembler().add(chunks[2] + chunks[2])
    with pytest.raises(CommunicationError):
        ChunkAssembler().add(b"not zstd")
    with pytest.raises(CommunicationError, match="does not add up"):
        ChunkAssembler().finish(1)
