"""The transport-free half of every call, shared by the sync and asyncio
clients: the request a call sends, how long it may take, and what each
message received means. Each call has a connection of its own (as in
libsandbox): a client object holds no connection, is safe to share
between threads, and a failed or abandoned call leaves nothing behind --
closing the connection makes the daemon cancel the call's run or exec.

Validation: this client checks what the wire itself bounds (the field
tables' types and sizes, the language name, positive timeouts), so that it
never sends a malformed frame. The policy of common/validate.cc (code
rules, environment name classes, timeout, memory and idle ranges, guest
paths) is left to the daemon, the one authority for it: it answers
invalid_argument before any VM starts, so nothing is lost by asking, and
no copy of the rules can drift from it.
"""
from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from . import limits
from ._files import ChunkAssembler, compress_chunks
from ._protocol import encode_frame
from .errors import CommunicationError, InvalidArgumentError, SandboxError, SandboxTimeoutError, from_reply
from .types import Output

# Every request on a connection of its own carries this id; an error with
# id 0 is the daemon refusing the connection itself.
REQUEST_ID = 1

# How long past the code's own timeout a call waits for the daemon: a boot
# under software emulation, an interpreter start and a boot retry fit well
# inside it (libsandbox's kReplySlack).
DEFAULT_REPLY_SLACK = 180.0
# A request with packages may also wait for its layer's build, which the
# daemon bounds (package_build_timeout_ms, at most an hour; libsandbox's
# kBuildSlack).
DEFAULT_BUILD_SLACK = 3600.0
# Calls that only read the daemon's state.
DEFAULT_QUICK_TIMEOUT = 30.0
# A busy daemon (capacity) is retried for this long by run(); the first
# wait and the most between tries (libsandbox's backoff).
DEFAULT_CAPACITY_WAIT = 60.0
FIRST_BACKOFF = 0.05
MAX_BACKOFF = 1.0

DEFAULT_SOCKET = "/run/sandboxd/sandboxd.sock"

# What people type for each language (common/types.cc).
_LANGUAGE_ALIASES = {
    "python": "python",
    "py": "python",
    "python3": "python",
    "javascript": "javascript",
    "js": "javascript",
    "node": "javascript",
    "raw": "raw",
    "sh": "raw",
    "bash": "raw",
    "shell": "raw",
}

OutputCallback = Callable[[bytes], Any]
FileData = Union[bytes, bytearray, memoryview, str, "os.PathLike[str]"]
EnvArg = Optional[Union[Mapping[str, str], Sequence[Tuple[str, str]]]]


def socket_path(path: Optional[Union[str, "os.PathLike[str]"]]) -> str:
    """The socket: `path`, else $SANDBOXD_SOCKET, else the system daemon's."""
    if path is not None:
        return os.fspath(path)
    return os.environ.get("SANDBOXD_SOCKET") or DEFAULT_SOCKET


def language(name: str) -> str:
    """The canonical language name for `name` or one of its aliases."""
    canonical = _LANGUAGE_ALIASES.get(name) if isinstance(name, str) else None
    if canonical is None:
        raise InvalidArgumentError(f"unknown language {name!r} (python, javascript, raw)", retry_safe=True)
    return canonical


def millis(seconds: Optional[float], what: str) -> int:
    """Seconds to whole milliseconds, rounded up; None is 0 (the daemon's default)."""
    if seconds is None:
        return 0
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not math.isfinite(seconds) or seconds <= 0:
        raise InvalidArgumentError(f"{what} must be a positive number of seconds, not {seconds!r}", retry_safe=True)
    return max(1, math.ceil(seconds * 1000))


def env_pairs(env: EnvArg) -> List[Tuple[str, str]]:
    if env is None:
        return []
    if isinstance(env, Mapping):
        return list(env.items())
    return [(name, value) for name, value in env]


def guest_path(path: Union[str, bytes, "os.PathLike[str]"]) -> bytes:
    """A guest path on the wire: bytes (str encoded as UTF-8, surrogates escaped)."""
    if isinstance(path, bytes):
        return path
    return os.fspath(path).encode("utf-8", "surrogateescape")


def file_bytes(data: FileData) -> bytes:
    """Content to upload: bytes as they are, str as UTF-8, a path-like's file."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, os.PathLike):
        with open(data, "rb") as f:
            return f.read()
    raise TypeError(f"file data must be bytes, str or a path, not {type(data).__name__}")


def code_bytes(code: Union[str, bytes]) -> bytes:
    if isinstance(code, str):
        return code.encode("utf-8", "surrogateescape")
    if isinstance(code, (bytes, bytearray)):
        return bytes(code)
    raise TypeError(f"code must be str or bytes, not {type(code).__name__}")


def backoff_after(previous: float) -> float:
    """The next wait after `previous`: doubled up to MAX_BACKOFF, with
    jitter so that many clients do not retry in step."""
    nxt = min(previous * 2, MAX_BACKOFF)
    return nxt / 2 + random.uniform(0, nxt / 2)


@dataclass
class Request:
    """One call: the request, the answer that ends it, how long it may take."""

    message: Dict[str, Any]
    answer: str
    wait: float  #: seconds until the call gives up
    runs_code: bool = False  #: a run or exec: its code may run once sent
    upload: Optional[bytes] = None  #: file_write: the content, sent as chunks
    read_file: bool = False  #: file_read: chunks come before the answer

    def frames(self) -> Iterator[bytes]:
        """The frames to write, in order (chunks compressed one at a time)."""
        yield encode_frame(self.message)
        if self.upload:
            for chunk in compress_chunks(self.upload):
                yield encode_frame({"type": "file_chunk", "id": REQUEST_ID, "data": chunk})


@dataclass
class Done:
    """The answer that ends a call (its decoded message, or a file's bytes)."""

    value: Any


@dataclass
class Exchange:
    """What each message received means for one call."""

    request: Request
    sent: bool = False  #: the whole request reached the socket
    _file: Optional[ChunkAssembler] = field(default=None)

    def __post_init__(self) -> None:
        if self.request.read_file:
            self._file = ChunkAssembler()

    def feed(self, m: Dict[str, Any]) -> Optional[Union[Output, Done]]:
        """Output to pass on, the Done answer, or None (a file chunk, kept)."""
        t = m["type"]
        if t == "error" and m["id"] in (REQUEST_ID, 0):
            raise from_reply(m["code"], m["message"], code_may_run=self.request.runs_code and self.sent)
        if m.get("id") != REQUEST_ID:
            raise self.broken(f"sandboxd sent a '{t}' for another request")
        if t == "output":
            return Output(m["stream"], m["data"])
        if t == "file_chunk" and self._file is not None:
            self._file.add(m["data"])
            return None
        if t != self.request.answer:
            raise self.broken(f"sandboxd sent an unexpected '{t}' message")
        if self._file is not None:
            return Done(self._file.finish(m["size"]))
        return Done(m)

    # Failures of the call itself. Before the request was sent in full the
    # daemon cannot have acted on it; after, a run's code may have run.
    def broken(self, message: str) -> CommunicationError:
        return CommunicationError(message, retry_safe=self.retry_safe())

    def closed(self) -> CommunicationError:
        return CommunicationError("sandboxd closed the connection before replying", retry_safe=self.retry_safe())

    def timed_out(self, wait: float) -> SandboxTimeoutError:
        return SandboxTimeoutError(f"no reply from sandboxd within {wait:g} s", retry_safe=self.retry_safe())

    def retry_safe(self) -> bool:
        return not (self.request.runs_code and self.sent)


def connect_error(path: str, err: OSError) -> SandboxError:
    """The error for a connection that could not be made."""
    import errno as _errno

    if err.errno in (_errno.ENOENT, _errno.ECONNREFUSED):
        return CommunicationError(f"connect '{path}': {err.strerror} (is sandboxd running?)", retry_safe=True)
    if err.errno in (_errno.EACCES, _errno.EPERM):
        from .errors import PermissionDeniedError

        return PermissionDeniedError(f"connect '{path}': {err.strerror}", retry_safe=True)
    return CommunicationError(f"connect '{path}': {err.strerror or err}", retry_safe=True)


# ---------------------------------------------------------------- requests


def run(
    code: Union[str, bytes],
    lang: str,
    timeout: Optional[float],
    memory_mb: Optional[int],
    env: EnvArg,
    slack: float,
    net: Optional[Dict[str, Any]] = None,
    build_slack: float = DEFAULT_BUILD_SLACK,
) -> Request:
    t = millis(timeout, "timeout")
    msg = {
        **(net or {}),
        "type": "run",
        "id": REQUEST_ID,
        "language": language(lang),
        "code": code_bytes(code),
        "env": env_pairs(env),
        "timeout_ms": t,
        "memory_mb": memory_mb or 0,
    }
    # An unstated timeout is the daemon's default: wait as for the longest.
    wait = (t or limits.MAX_TIMEOUT_MS) / 1000 + slack + build_wait(msg, build_slack)
    return Request(msg, "result", wait, runs_code=True)


def session_create(
    lang: str,
    env: EnvArg,
    timeout: Optional[float],
    memory_mb: Optional[int],
    idle_timeout: Optional[float],
    slack: float,
    net: Optional[Dict[str, Any]] = None,
    build_slack: float = DEFAULT_BUILD_SLACK,
) -> Request:
    msg = {
        **(net or {}),
        "type": "session_create",
        "id": REQUEST_ID,
        "language": language(lang),
        "env": env_pairs(env),
        "timeout_ms": millis(timeout, "timeout"),
        "memory_mb": memory_mb or 0,
        "idle_timeout_ms": millis(idle_timeout, "idle_timeout"),
    }
    # A boot, perhaps queued behind others, and its retry; first a layer
    # build when packages are asked for.
    return Request(msg, "session_list", 2 * slack + build_wait(msg, build_slack))


def build_wait(msg: Mapping[str, Any], build_slack: float) -> float:
    """The extra wait of a request that may build a package layer first."""
    return build_slack if msg.get("packages") else 0.0


def session_exec(session: str, code: Union[str, bytes], timeout: Optional[float], slack: float) -> Request:
    t = millis(timeout, "timeout")
    msg = {"type": "session_exec", "id": REQUEST_ID, "session": session, "code": code_bytes(code), "timeout_ms": t}
    # An exec may wait behind earlier requests on its session.
    wait = max(t, limits.MAX_TIMEOUT_MS) / 1000 + slack
    return Request(msg, "result", wait, runs_code=True)


def file_wait(slack: float) -> float:
    # The largest transfer, perhaps behind an exec on the session.
    return limits.MAX_TIMEOUT_MS / 1000 + slack


def session_network(session: str, allowed_domains: Optional[Iterable[str]], network_default: bool, slack: float) -> Request:
    net = network(allowed_domains, network_default, None)
    msg = {"type": "session_network", "id": REQUEST_ID, "session": session, "network": net["network"],
           "allowed_domains": net["allowed_domains"]}
    # Waits behind the session's running calls, like a close.
    return Request(msg, "session_list", file_wait(slack))


def session_close(session: str, slack: float) -> Request:
    # A close waits for the session's running exec to end.
    return Request({"type": "session_close", "id": REQUEST_ID, "session": session}, "ack", file_wait(slack))


def file_write(session: str, path: Any, data: bytes, executable: bool, slack: float) -> Request:
    msg = {
        "type": "file_write",
        "id": REQUEST_ID,
        "session": session,
        "path": guest_path(path),
        "size": len(data),
        "executable": bool(executable),
    }
    return Request(msg, "file_done", file_wait(slack), upload=data)


def file_read(session: str, path: Any, slack: float) -> Request:
    msg = {"type": "file_read", "id": REQUEST_ID, "session": session, "path": guest_path(path)}
    return Request(msg, "file_done", file_wait(slack), read_file=True)


def file_list(session: str, path: Any, slack: float) -> Request:
    msg = {"type": "file_list_request", "id": REQUEST_ID, "session": session, "path": guest_path(path)}
    return Request(msg, "file_list", file_wait(slack))


def status(wait: float) -> Request:
    return Request({"type": "status_request", "id": REQUEST_ID}, "status", wait)


def metrics(wait: float) -> Request:
    return Request({"type": "metrics_request", "id": REQUEST_ID}, "metrics", wait)


def layers(drop: Optional[str], drop_all: bool, wait: float) -> Request:
    msg = {"type": "layers_request", "id": REQUEST_ID, "drop": drop or "", "drop_all": bool(drop_all)}
    return Request(msg, "layer_list", wait)


def snapshots(drop: bool, wait: float) -> Request:
    return Request({"type": "snapshots_request", "id": REQUEST_ID, "drop": bool(drop)}, "snapshot_list", wait)


def session_list(wait: float) -> Request:
    return Request({"type": "session_list_request", "id": REQUEST_ID}, "session_list", wait)


def uploads(files: Optional[Mapping[str, FileData]]) -> List[Tuple[str, bytes]]:
    """Files to put in before a run, read now so a bad local path fails
    before any VM starts."""
    return [(guest, file_bytes(data)) for guest, data in (files or {}).items()]


def check_downloads(download: Optional[Iterable[str]]) -> List[str]:
    if download is None:
        return []
    if isinstance(download, str):
        return [download]
    return list(download)


def network(
    allowed_domains: Optional[Iterable[str]],
    network_default: bool,
    expose_ports: Optional[Iterable[Any]],
    packages: Optional[Iterable[str]] = None,
) -> Dict[str, Any]:
    """The request's network fields: names to allow (implying network),
    the operator's default list, and guest ports to offer on 127.0.0.1
    (GUEST, (GUEST, HOST), or (GUEST, "unix") for a Unix socket only this
    uid can use); with the packages to install first ("name==1.2.3",
    "name@1.2.3", Debian's "apt:name=1.2-3"), which the daemon checks
    against its policy."""
    if isinstance(packages, str):
        raise InvalidArgumentError("packages must be a list of specifiers, not one string", retry_safe=True)
    pkgs = [] if packages is None else list(packages)
    if len(pkgs) > limits.MAX_PACKAGES:
        raise InvalidArgumentError(f"{len(pkgs)} packages; the limit is {limits.MAX_PACKAGES}", retry_safe=True)
    domains = [] if allowed_domains is None else list(allowed_domains)
    if isinstance(allowed_domains, str):
        raise InvalidArgumentError("allowed_domains must be a list of names, not one string", retry_safe=True)
    ports = []
    for p in expose_ports or ():
        internal, external = (p, 0) if isinstance(p, int) else tuple(p)
        unix_socket = external == "unix"
        ports.append({"internal": internal, "external": 0 if unix_socket else external, "unix_socket": unix_socket})
    return {"network": bool(network_default or domains), "allowed_domains": domains, "expose_ports": ports,
            "packages": pkgs}
