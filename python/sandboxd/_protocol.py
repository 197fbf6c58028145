"""The control socket's wire format, as tables of fields.

This mirrors common/protocol.h field for field (the C++ tables are the
truth; docs/protocol.md describes them in prose). Every message is one
msgpack map holding "type" and the message's fields in table order, with
the fields of an embedded struct flattened into the same map. The encoder
and decoder below walk these tables; nothing else spells a field name.

Encoding checks each value against its kind and bound, so a request this
client sends is never malformed on the wire. Decoding is strict, like the
daemon's: unknown, missing or duplicate keys, wrong types and values past
their bounds are errors.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Set, Tuple

import msgpack

from . import limits
from .errors import CommunicationError, InvalidArgumentError

# proto::kProtocolVersion. The control socket has no handshake: client and
# daemon must speak the same tables (see docs/protocol.md, "Versioning").
PROTOCOL_VERSION = 4

# Entries one list may hold (common/protocol.h).
MAX_SNAPSHOT_ENTRIES = 512
MAX_POOL_ENTRIES = 8
MAX_SESSION_ENTRIES = 256
MAX_METRICS_BYTES = 256 << 10
MAX_LAYER_ENTRIES = 512
MAX_LOCK_ENTRIES = 1000
MAX_LAYER_KEY_BYTES = 80

FRAME_HEADER = struct.Struct(">I")

U32_MAX = 2**32 - 1
U64_MAX = 2**64 - 1

LANGUAGES = ("python", "javascript", "raw")
STREAMS = ("stdout", "stderr")
ERROR_CODES = (
    "invalid_argument",
    "permission_denied",
    "capacity",
    "timeout",
    "vm_boot_failed",
    "guest_error",
    "communication",
    "session_closed",
    "not_found",
    "package_not_allowed",
    "image_missing",
    "image_corrupt",
    "internal",
    "package_install_failed",
)

# Value kinds: how a field travels and what it becomes in Python.
U32 = "u32"  # msgpack positive int <= bound and <= 2^32-1 -> int
U64 = "u64"  # msgpack positive int <= bound -> int
I32 = "i32"  # msgpack int in [-2^31, 2^31-1] -> int
BOOL = "bool"
BIN = "bin"  # msgpack bin (str accepted on decode) -> bytes
TEXT = "text"  # msgpack str -> str
MS = "ms"  # a duration: msgpack positive int of milliseconds -> int
ENV = "env"  # msgpack map str -> str, at most `bound` entries -> list of pairs
LANGUAGE = "language"  # enum by name (str)
STREAM = "stream"
ERROR_CODE = "error_code"
STRUCT = "struct"  # a nested map described by `struct`
LIST = "list"  # an array of `struct` maps, at most `bound` entries
TEXT_LIST = "text_list"  # an array of msgpack str, at most `bound` entries -> list of str
EMBED = "embed"  # `struct`'s fields in the enclosing map

_ENUMS = {LANGUAGE: LANGUAGES, STREAM: STREAMS, ERROR_CODE: ERROR_CODES}
_INT_RANGE = {U32: (0, U32_MAX), U64: (0, U64_MAX), I32: (-(2**31), 2**31 - 1), MS: (0, U64_MAX)}


@dataclass(frozen=True)
class Field:
    key: str
    kind: str
    bound: int = U64_MAX
    struct: Optional[str] = None


def _f(key: str, kind: str, bound: int = U64_MAX, struct: Optional[str] = None) -> Field:
    return Field(key, kind, bound, struct)


def _embed(struct: str) -> Field:
    return Field("", EMBED, 0, struct)


# Structs (common/include/sandbox/types.h), as common/protocol.h lists them.
STRUCTS: Dict[str, Tuple[Field, ...]] = {
    "PortMapping": (
        _f("internal", U32, 65535),
        _f("external", U32, 65535),
        _f("unix_socket", BOOL),
    ),
    "NetworkRequest": (
        _f("network", BOOL),
        _f("allowed_domains", TEXT_LIST, limits.MAX_ALLOWED_DOMAINS),
        _f("expose_ports", LIST, limits.MAX_EXPOSED_PORTS, "PortMapping"),
    ),
    "ExposedPort": (
        _f("internal", U32, 65535),
        _f("external", U32, 65535),
        _f("host", TEXT, limits.MAX_NAME_BYTES),
        _f("url", TEXT, limits.MAX_NAME_BYTES),
    ),
    "NetworkDenial": (
        _f("host", TEXT, limits.MAX_NAME_BYTES),
        _f("port", U32, 65535),
        _f("reason", TEXT, limits.MAX_NAME_BYTES),
    ),
    "NetworkStats": (
        _f("connections", U64),
        _f("bytes_in", U64),
        _f("bytes_out", U64),
        _f("denied", LIST, limits.MAX_NETWORK_DENIALS, "NetworkDenial"),
    ),
    "RunRequest": (
        _f("language", LANGUAGE),
        _f("code", BIN, limits.MAX_CODE_BYTES),
        _f("env", ENV, limits.MAX_ENV_VARS),
        _f("timeout_ms", MS, U32_MAX),
        _f("memory_mb", U32),
        _embed("NetworkRequest"),
        _f("packages", TEXT_LIST, limits.MAX_PACKAGES),
    ),
    "LayerUse": (
        _f("key", TEXT, MAX_LAYER_KEY_BYTES),
        _f("cache", TEXT, limits.MAX_NAME_BYTES),
        _f("build_ms", U64),
    ),
    "Timing": (
        _f("setup_ms", U64),
        _f("boot_ms", U64),
        _f("startup_ms", U64),
        _f("execute_ms", U64),
        _f("total_ms", U64),
    ),
    "RunResult": (
        _f("language", LANGUAGE),
        _f("stdout", BIN, limits.MAX_STDOUT_BYTES),
        _f("stderr", BIN, limits.MAX_STDERR_BYTES),
        _f("stdout_truncated", BOOL),
        _f("stderr_truncated", BOOL),
        _f("exit_code", I32),
        _f("signal", I32),
        _f("timed_out", BOOL),
        _f("execution_time_ms", U64),
        _f("cpu_time_ms", U64),
        _f("memory_peak_mb", U64),
        _f("timing", STRUCT, struct="Timing"),
        _f("warm_pool_hit", BOOL),
        _f("accelerator", TEXT, limits.MAX_NAME_BYTES),
        _f("vm_start", TEXT, limits.MAX_NAME_BYTES),
        _f("state_lost", BOOL),
        _f("exposed_ports", LIST, limits.MAX_EXPOSED_PORTS, "ExposedPort"),
        _f("network", STRUCT, struct="NetworkStats"),
        _f("layer", STRUCT, struct="LayerUse"),
    ),
    "PoolInfo": (
        _f("language", LANGUAGE),
        _f("size", U32),
        _f("ready", U32),
        _f("booting", U32),
        _f("hits", U64),
        _f("misses", U64),
        _f("layer", TEXT, MAX_LAYER_KEY_BYTES),
    ),
    "DaemonStatus": (
        _f("version", TEXT, limits.MAX_NAME_BYTES),
        _f("accelerator", TEXT, limits.MAX_NAME_BYTES),
        _f("accelerator_reason", TEXT, limits.MAX_MESSAGE_BYTES),
        _f("vms", U32),
        _f("max_vms", U32),
        _f("runs_active", U32),
        _f("runs_queued", U32),
        _f("sessions", U32),
        _f("runs_per_uid", U32),
        _f("pool", LIST, MAX_POOL_ENTRIES, "PoolInfo"),
        _f("host_limits", TEXT, limits.MAX_MESSAGE_BYTES),
        _f("draining", BOOL),
    ),
    "SnapshotInfo": (
        _f("key", TEXT, limits.MAX_NAME_BYTES),
        _f("language", LANGUAGE),
        _f("memory_mb", U32),
        _f("bytes", U64),
    ),
    "SessionOptions": (
        _f("language", LANGUAGE),
        _f("env", ENV, limits.MAX_ENV_VARS),
        _f("timeout_ms", MS, U32_MAX),
        _f("memory_mb", U32),
        _f("idle_timeout_ms", MS, U32_MAX),
        _embed("NetworkRequest"),
        _f("packages", TEXT_LIST, limits.MAX_PACKAGES),
    ),
    "SessionInfo": (
        _f("session", TEXT, limits.MAX_SESSION_ID_BYTES),
        _f("language", LANGUAGE),
        _f("memory_mb", U32),
        _f("idle_timeout_ms", MS, U32_MAX),
        _f("exec_count", U64),
        _f("created_unix_ms", U64),
        _f("last_activity_unix_ms", U64),
        _f("vm_start", TEXT, limits.MAX_NAME_BYTES),
        _f("exposed_ports", LIST, limits.MAX_EXPOSED_PORTS, "ExposedPort"),
        _f("allowed_domains", TEXT_LIST, limits.MAX_ALLOWED_DOMAINS),
        _f("layer", STRUCT, struct="LayerUse"),
    ),
    "LayerInfo": (
        _f("key", TEXT, MAX_LAYER_KEY_BYTES),
        _f("language", LANGUAGE),
        _f("packages", TEXT_LIST, limits.MAX_PACKAGES),
        _f("lock", TEXT_LIST, MAX_LOCK_ENTRIES),
        _f("bytes", U64),
        _f("last_used_unix_ms", U64),
        _f("users", U32),
        _f("building", BOOL),
    ),
    "FileEntry": (
        _f("name", BIN, limits.MAX_PATH_BYTES),
        _f("is_dir", BOOL),
        _f("size", U64),
    ),
    "FileListing": (
        _f("entries", LIST, limits.MAX_LIST_ENTRIES, "FileEntry"),
        _f("truncated", BOOL),
    ),
}

# Control-socket messages: wire type -> fields. (The agent channel's
# messages -- hello, resume, ping, pong, exec, exec_done, cancel -- never
# reach a client and are not described here.)
MESSAGES: Dict[str, Tuple[Field, ...]] = {
    "run": (_f("id", U64), _embed("RunRequest")),
    "output": (_f("id", U64), _f("stream", STREAM), _f("data", BIN, limits.MAX_FRAME_BYTES)),
    "result": (_f("id", U64), _embed("RunResult")),
    "error": (_f("id", U64), _f("code", ERROR_CODE), _f("message", TEXT, limits.MAX_MESSAGE_BYTES)),
    "status_request": (_f("id", U64),),
    "status": (_f("id", U64), _embed("DaemonStatus")),
    "snapshots_request": (_f("id", U64), _f("drop", BOOL)),
    "snapshot_list": (_f("id", U64), _f("snapshots", LIST, MAX_SNAPSHOT_ENTRIES, "SnapshotInfo")),
    "session_create": (_f("id", U64), _embed("SessionOptions")),
    "session_list": (_f("id", U64), _f("sessions", LIST, MAX_SESSION_ENTRIES, "SessionInfo")),
    "session_list_request": (_f("id", U64),),
    "session_exec": (
        _f("id", U64),
        _f("session", TEXT, limits.MAX_SESSION_ID_BYTES),
        _f("code", BIN, limits.MAX_CODE_BYTES),
        _f("timeout_ms", U32),
    ),
    "session_close": (_f("id", U64), _f("session", TEXT, limits.MAX_SESSION_ID_BYTES)),
    "session_network": (
        _f("id", U64),
        _f("session", TEXT, limits.MAX_SESSION_ID_BYTES),
        _f("network", BOOL),
        _f("allowed_domains", TEXT_LIST, limits.MAX_ALLOWED_DOMAINS),
    ),
    "ack": (_f("id", U64),),
    "file_write": (
        _f("id", U64),
        _f("session", TEXT, limits.MAX_SESSION_ID_BYTES),
        _f("path", BIN, limits.MAX_PATH_BYTES),
        _f("size", U64, limits.MAX_FILE_BYTES),
        _f("executable", BOOL),
    ),
    "file_chunk": (_f("id", U64), _f("data", BIN, limits.MAX_FILE_CHUNK_WIRE_BYTES)),
    "file_read": (
        _f("id", U64),
        _f("session", TEXT, limits.MAX_SESSION_ID_BYTES),
        _f("path", BIN, limits.MAX_PATH_BYTES),
    ),
    "file_done": (_f("id", U64), _f("size", U64, limits.MAX_FILE_BYTES)),
    "file_list_request": (
        _f("id", U64),
        _f("session", TEXT, limits.MAX_SESSION_ID_BYTES),
        _f("path", BIN, limits.MAX_PATH_BYTES),
    ),
    "file_list": (_f("id", U64), _embed("FileListing")),
    "metrics_request": (_f("id", U64),),
    "metrics": (_f("id", U64), _f("text", TEXT, MAX_METRICS_BYTES)),
    "layers_request": (_f("id", U64), _f("drop", TEXT, MAX_LAYER_KEY_BYTES), _f("drop_all", BOOL)),
    "layer_list": (_f("id", U64), _f("layers", LIST, MAX_LAYER_ENTRIES, "LayerInfo")),
}

# Who may send what: a client sends only requests; the daemon only answers.
CLIENT_SENDS = frozenset(
    {
        "run",
        "status_request",
        "snapshots_request",
        "session_create",
        "session_list_request",
        "session_exec",
        "session_close",
        "session_network",
        "file_write",
        "file_chunk",
        "file_read",
        "file_list_request",
        "metrics_request",
        "layers_request",
    }
)
DAEMON_SENDS = frozenset(
    {
        "output",
        "result",
        "error",
        "status",
        "snapshot_list",
        "session_list",
        "ack",
        "file_done",
        "file_list",
        "file_chunk",
        "metrics",
        "layer_list",
    }
)


def _nested(f: Field) -> Tuple[Field, ...]:
    assert f.struct is not None
    return STRUCTS[f.struct]


class ProtocolError(ValueError):
    """A value that does not fit its field (encoding) or a malformed message (decoding)."""


# ---------------------------------------------------------------- encoding


def _default(f: Field) -> Any:
    if f.kind in (U32, U64, I32, MS):
        return 0
    if f.kind == BOOL:
        return False
    if f.kind == BIN:
        return b""
    if f.kind == TEXT:
        return ""
    if f.kind == ENV:
        return []
    if f.kind == LANGUAGE:
        return "python"
    if f.kind == STREAM:
        return "stdout"
    if f.kind == ERROR_CODE:
        return "internal"
    if f.kind == STRUCT:
        return {}
    if f.kind in (LIST, TEXT_LIST):
        return []
    raise AssertionError(f.kind)


def _check_value(f: Field, v: Any, where: str) -> Any:
    """The wire value for field `f`, or ProtocolError."""
    k = f.kind
    if k in _INT_RANGE:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ProtocolError(f"{where} must be an integer, not {type(v).__name__}")
        lo, hi = _INT_RANGE[k]
        if k != I32:
            hi = min(hi, f.bound)
        if not lo <= v <= hi:
            raise ProtocolError(f"{where} is {v}, outside {lo}-{hi}")
        return v
    if k == BOOL:
        if not isinstance(v, bool):
            raise ProtocolError(f"{where} must be a bool")
        return v
    if k == BIN:
        if isinstance(v, str):
            v = v.encode("utf-8", "surrogateescape")
        if not isinstance(v, (bytes, bytearray, memoryview)):
            raise ProtocolError(f"{where} must be bytes, not {type(v).__name__}")
        v = bytes(v)
        if len(v) > f.bound:
            raise ProtocolError(f"{where} is {len(v)} bytes; the limit is {f.bound}")
        return v
    if k == TEXT:
        if not isinstance(v, str):
            raise ProtocolError(f"{where} must be a str")
        if len(v.encode("utf-8", "surrogateescape")) > f.bound:
            raise ProtocolError(f"{where} is longer than {f.bound} bytes")
        return v
    if k in _ENUMS:
        if v not in _ENUMS[k]:
            raise ProtocolError(f"{where} is {v!r}, not one of {', '.join(_ENUMS[k])}")
        return v
    if k == ENV:
        pairs = list(v.items()) if isinstance(v, dict) else list(v)
        if len(pairs) > f.bound:
            raise ProtocolError(f"more than {f.bound} environment variables")
        out: Dict[str, str] = {}
        for pair in pairs:
            name, value = pair
            if not isinstance(name, str) or not isinstance(value, str):
                raise ProtocolError(f"{where}: names and values must be str")
            if name in out:
                raise ProtocolError(f"{where}: '{name}' given twice")
            out[name] = value
        return out
    if k == STRUCT:
        return _encode_struct(_nested(f), v, where)
    if k == LIST:
        if len(v) > f.bound:
            raise ProtocolError(f"{where} has more than {f.bound} entries")
        return [_encode_struct(_nested(f), e, f"{where}[{i}]") for i, e in enumerate(v)]
    if k == TEXT_LIST:
        if isinstance(v, str) or len(v) > f.bound:
            raise ProtocolError(f"{where} must be a list of at most {f.bound} strings")
        if not all(isinstance(e, str) for e in v):
            raise ProtocolError(f"{where} must hold strings")
        return list(v)
    raise AssertionError(k)


def _encode_fields(fields: Tuple[Field, ...], values: Dict[str, Any], out: Dict[str, Any], used: Set[str]) -> None:
    for f in fields:
        if f.kind == EMBED:
            _encode_fields(_nested(f), values, out, used)
            continue
        used.add(f.key)
        v = values.get(f.key, None)
        out[f.key] = _check_value(f, _default(f) if v is None else v, f"'{f.key}'")


def _encode_struct(fields: Tuple[Field, ...], values: Dict[str, Any], where: str) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    used: Set[str] = set()
    _encode_fields(fields, values, out, used)
    extra = set(values) - used
    if extra:
        raise ProtocolError(f"{where} has no field {sorted(extra)[0]!r}")
    return out


def encode(message: Dict[str, Any]) -> bytes:
    """The msgpack payload (no length prefix) of `message`: a dict with
    "type" and that type's fields (embedded structs flattened). Fields left
    out get their zero value, as a default-constructed C++ message has."""
    mtype = message.get("type")
    if mtype not in MESSAGES:
        raise ProtocolError(f"unknown message type {mtype!r}")
    body = {k: v for k, v in message.items() if k != "type"}
    wire: Dict[str, Any] = {"type": mtype}
    wire.update(_encode_struct(MESSAGES[mtype], body, f"'{mtype}'"))
    packed: bytes = msgpack.packb(wire, use_bin_type=True, unicode_errors="surrogateescape")
    return packed


def frame(payload: bytes) -> bytes:
    """Header (4-byte big-endian length) and payload."""
    if len(payload) > limits.MAX_FRAME_BYTES:
        raise ProtocolError(f"a frame of {len(payload)} bytes is over the {limits.MAX_FRAME_BYTES}-byte limit")
    return FRAME_HEADER.pack(len(payload)) + payload


def encode_frame(message: Dict[str, Any]) -> bytes:
    """`message` encoded and framed; InvalidArgumentError when a value does
    not fit its field (nothing is sent then)."""
    try:
        return frame(encode(message))
    except ProtocolError as e:
        raise InvalidArgumentError(f"invalid request: {e}", retry_safe=True) from None


# ---------------------------------------------------------------- decoding


def _read_value(f: Field, v: Any, where: str) -> Any:
    k = f.kind
    if k in _INT_RANGE:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ProtocolError(f"{where} is not an integer")
        lo, hi = _INT_RANGE[k]
        if k != I32:
            hi = min(hi, f.bound)
        if not lo <= v <= hi:
            raise ProtocolError(f"{where} out of range")
        return v
    if k == BOOL:
        if not isinstance(v, bool):
            raise ProtocolError(f"{where} is not a boolean")
        return v
    if k == BIN:
        if isinstance(v, str):  # the C++ decoder takes str for bytes too
            v = v.encode("utf-8", "surrogateescape")
        if not isinstance(v, bytes):
            raise ProtocolError(f"{where} is not bytes")
        if len(v) > f.bound:
            raise ProtocolError(f"{where} longer than {f.bound} bytes")
        return v
    if k == TEXT:
        if not isinstance(v, str):
            raise ProtocolError(f"{where} is not a string")
        if len(v.encode("utf-8", "surrogateescape")) > f.bound:
            raise ProtocolError(f"{where} longer than {f.bound} bytes")
        return v
    if k in _ENUMS:
        if not isinstance(v, str) or v not in _ENUMS[k]:
            raise ProtocolError(f"unknown {where} {v!r}")
        return v
    if k == ENV:
        if not isinstance(v, dict):
            raise ProtocolError(f"{where} is not a map")
        if len(v) > f.bound:
            raise ProtocolError(f"more than {f.bound} env vars")
        if not all(isinstance(a, str) and isinstance(b, str) for a, b in v.items()):
            raise ProtocolError("env entries must be strings")
        return list(v.items())
    if k == STRUCT:
        return _decode_struct(_nested(f), v, where)
    if k == LIST:
        if not isinstance(v, list):
            raise ProtocolError(f"{where} is not an array")
        if len(v) > f.bound:
            raise ProtocolError(f"{where} has too many entries")
        return [_decode_struct(_nested(f), e, where) for e in v]
    if k == TEXT_LIST:
        if not isinstance(v, list) or len(v) > f.bound or not all(isinstance(e, str) for e in v):
            raise ProtocolError(f"{where} is not an array of at most {f.bound} strings")
        return v
    raise AssertionError(k)


def _read_fields(fields: Tuple[Field, ...], m: Dict[str, Any], out: Dict[str, Any], used: Set[str]) -> None:
    for f in fields:
        if f.kind == EMBED:
            _read_fields(_nested(f), m, out, used)
            continue
        if f.key not in m:
            raise ProtocolError(f"missing key '{f.key}'")
        used.add(f.key)
        out[f.key] = _read_value(f, m[f.key], f"'{f.key}'")


def _decode_struct(fields: Tuple[Field, ...], m: Any, where: str) -> Dict[str, Any]:
    if not isinstance(m, dict):
        raise ProtocolError(f"{where} is not a map")
    out: Dict[str, Any] = {}
    used: Set[str] = set()
    _read_fields(fields, m, out, used)
    for key in m:
        if key not in used:
            raise ProtocolError(f"unknown key {str(key)[:64]!r}")
    return out


def _no_duplicates(pairs: List[Tuple[Any, Any]]) -> Dict[Any, Any]:
    out: Dict[Any, Any] = {}
    for k, v in pairs:
        if not isinstance(k, str):
            raise ProtocolError("non-string key")
        if k in out:
            raise ProtocolError(f"duplicate key {k[:64]!r}")
        out[k] = v
    return out


def decode(payload: bytes) -> Dict[str, Any]:
    """One payload as a dict with "type" and the fields (embedded structs
    flattened, nested ones as dicts, env as a list of pairs). ProtocolError
    for anything the tables do not describe exactly."""
    try:
        m = msgpack.unpackb(
            payload,
            raw=False,
            unicode_errors="surrogateescape",
            object_pairs_hook=_no_duplicates,
            strict_map_key=False,
        )
    except ProtocolError:
        raise
    except Exception as e:  # msgpack raises several types for bad bytes
        raise ProtocolError(f"not one msgpack object: {e}") from None
    if not isinstance(m, dict):
        raise ProtocolError("not a map")
    mtype = m.get("type")
    if not isinstance(mtype, str):
        raise ProtocolError("'type' is missing or not a name")
    if mtype not in MESSAGES:
        raise ProtocolError(f"unknown message type {mtype[:64]!r}")
    body = dict(m)
    del body["type"]
    out = {"type": mtype}
    out.update(_decode_struct(MESSAGES[mtype], body, f"'{mtype}'"))
    return out


class FrameReader:
    """Accumulates bytes from a stream and yields whole payloads."""

    def __init__(self, max_payload: int = limits.MAX_FRAME_BYTES) -> None:
        self._buf = bytearray()
        self._max = max_payload

    def feed(self, data: bytes) -> None:
        self._buf += data

    def next_payload(self) -> Optional[bytes]:
        if len(self._buf) < FRAME_HEADER.size:
            return None
        (n,) = FRAME_HEADER.unpack_from(self._buf)
        if n > self._max:
            raise CommunicationError(f"sandboxd announced a frame of {n} bytes, over the {self._max}-byte limit")
        if len(self._buf) < FRAME_HEADER.size + n:
            return None
        payload = bytes(self._buf[FRAME_HEADER.size : FRAME_HEADER.size + n])
        del self._buf[: FRAME_HEADER.size + n]
        return payload

    def next_message(self) -> Optional[Dict[str, Any]]:
        payload = self.next_payload()
        if payload is None:
            return None
        try:
            return decode(payload)
        except ProtocolError as e:
            raise CommunicationError(f"sandboxd sent a malformed message: {e}") from None
