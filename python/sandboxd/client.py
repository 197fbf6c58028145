"""The blocking client: `Client` and its `Session`s.

Each call opens its own connection to the daemon, sends one request and
reads until that request's answer, within a deadline: a call never waits
longer than its ``call_timeout`` (by default the code's own timeout plus
`reply_slack` for runs and execs), and a daemon that dies or closes the
socket makes the call raise at once. Leaving a call early (an exception,
Ctrl-C, an abandoned `stream()`) closes its connection, and the daemon
then stops the run or exec.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import socket as _socket
import time
from typing import Any, Callable, Iterable, Iterator, List, Mapping, Optional, TypeVar, Union

from . import _calls, limits
from ._calls import Done, EnvArg, Exchange, FileData, OutputCallback, Request
from ._protocol import FrameReader
from .errors import CapacityError, CommunicationError, SandboxError, SessionClosedError
from .types import (
    DaemonStatus,
    FileListing,
    LayerInfo,
    Output,
    PoolInfo,
    RunResult,
    SessionInfo,
    SnapshotInfo,
    daemon_status,
    file_listing,
    layer_info,
    run_result,
    session_info,
    snapshot_info,
)

__all__ = ["Client", "Session"]

T = TypeVar("T")

_RECV_BYTES = 64 << 10


def _events(path: str, req: Request, call_timeout: Optional[float]) -> Iterator[Union[Output, Done]]:
    """The messages of one call, as Output events and then its Done answer."""
    wait = req.wait if call_timeout is None else call_timeout
    deadline = time.monotonic() + wait
    ex = Exchange(req)

    def left() -> float:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ex.timed_out(wait)
        return remaining

    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(left())
        try:
            sock.connect(path)
        except _socket.timeout:
            raise ex.timed_out(wait) from None
        except OSError as e:
            raise _calls.connect_error(path, e) from None
        reader = FrameReader()
        try:
            for fr in req.frames():
                sock.settimeout(left())
                sock.sendall(fr)
        except _socket.timeout:
            raise ex.timed_out(wait) from None
        except OSError as e:
            # The daemon may have answered and closed already (a refused
            # peer, a refused upload): its answer says more than the pipe.
            early = _early_answer(sock, reader, ex)
            if early is not None:
                raise early from None
            raise CommunicationError(f"sending to sandboxd: {e.strerror or e}", retry_safe=True) from None
        ex.sent = True
        while True:
            m = reader.next_message()
            if m is None:
                sock.settimeout(left())
                try:
                    data = sock.recv(_RECV_BYTES)
                except _socket.timeout:
                    raise ex.timed_out(wait) from None
                except OSError as e:
                    raise ex.broken(f"reading from sandboxd: {e.strerror or e}") from None
                if not data:
                    raise ex.closed()
                reader.feed(data)
                continue
            ev = ex.feed(m)
            if ev is None:
                continue
            yield ev
            if isinstance(ev, Done):
                return
    finally:
        sock.close()


def _early_answer(sock: _socket.socket, reader: FrameReader, ex: Exchange) -> Optional[SandboxError]:
    try:
        sock.settimeout(2.0)
        while True:
            m = reader.next_message()
            if m is not None:
                try:
                    ex.feed(m)
                except SandboxError as e:
                    return e
                continue
            data = sock.recv(_RECV_BYTES)
            if not data:
                return None
            reader.feed(data)
    except (OSError, SandboxError):
        return None


def _answer(
    path: str,
    req: Request,
    call_timeout: Optional[float],
    on_stdout: Optional[OutputCallback] = None,
    on_stderr: Optional[OutputCallback] = None,
) -> Any:
    for ev in _events(path, req, call_timeout):
        if isinstance(ev, Done):
            return ev.value
        cb = on_stdout if ev.stream == "stdout" else on_stderr
        if cb is not None:
            cb(ev.data)
    raise AssertionError("a call ended without its answer")


class Client:
    """A client of sandboxd's control socket.

    >>> with Client() as c:                       # doctest: +SKIP
    ...     r = c.run("print(6*7)")
    ...     r.exit_code, r.stdout
    (0, b'42\\n')

    `socket` defaults to ``$SANDBOXD_SOCKET``, else
    ``/run/sandboxd/sandboxd.sock``. `reply_slack` is how long past a
    code's own timeout a run or exec waits for the daemon (boot, queue);
    `build_slack` is added for a run or session with ``packages``, whose
    layer may have to be built first (the daemon bounds a build by its
    ``package_build_timeout_ms``); `quick_timeout` bounds calls that only read state; `capacity_wait` is
    how long `run` retries a busy daemon (``capacity``) with jittered
    backoff -- 0 turns retrying off. Every method also takes
    ``call_timeout``: the most that one call may take, in seconds.

    A Client holds no connection: it may be shared between threads, and
    ``with`` is only a convenience.
    """

    def __init__(
        self,
        socket: Optional[Union[str, "os.PathLike[str]"]] = None,
        *,
        reply_slack: float = _calls.DEFAULT_REPLY_SLACK,
        quick_timeout: float = _calls.DEFAULT_QUICK_TIMEOUT,
        capacity_wait: float = _calls.DEFAULT_CAPACITY_WAIT,
        build_slack: float = _calls.DEFAULT_BUILD_SLACK,
    ) -> None:
        self.socket_path = _calls.socket_path(socket)
        self.reply_slack = reply_slack
        self.quick_timeout = quick_timeout
        self.capacity_wait = capacity_wait
        self.build_slack = build_slack

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def __repr__(self) -> str:
        return f"Client({self.socket_path!r})"

    # ------------------------------------------------------------ runs

    def run(
        self,
        code: Union[str, bytes],
        language: str = "python",
        *,
        timeout: Optional[float] = None,
        memory_mb: Optional[int] = None,
        env: EnvArg = None,
        allowed_domains: Optional[Iterable[str]] = None,
        network: bool = False,
        expose_ports: Optional[Iterable[Any]] = None,
        packages: Optional[Iterable[str]] = None,
        files: Optional[Mapping[str, FileData]] = None,
        download: Optional[Iterable[str]] = None,
        on_stdout: Optional[OutputCallback] = None,
        on_stderr: Optional[OutputCallback] = None,
        call_timeout: Optional[float] = None,
    ) -> RunResult:
        """Runs `code` in a fresh VM and returns its result.

        `timeout` (seconds) bounds the code itself, `memory_mb` the VM;
        None takes the daemon's defaults (30 s, 256 MB). `env` sets the
        code's environment. `on_stdout`/`on_stderr` get the output as it
        streams (bytes). `files` (guest path -> bytes, str, or a local
        path) are put in the VM's home before the code runs, and
        `download` paths are read back after it into ``result.files``;
        either makes the run a session that lives for one exec, as
        ``sandboxctl run --upload/--download`` does.

        A busy daemon is retried for up to `capacity_wait` seconds. A
        non-zero exit or a timeout is a result, not an exception.
        """
        if files or download:
            return self._run_with_files(
                code, language, timeout, memory_mb, env, files, download, on_stdout, on_stderr, call_timeout,
                dict(allowed_domains=allowed_domains, network=network, expose_ports=expose_ports, packages=packages),
            )
        req = _calls.run(
            code, language, timeout, memory_mb, env, self.reply_slack,
            _calls.network(allowed_domains, network, expose_ports, packages), self.build_slack,
        )
        m = self._retrying(functools.partial(_answer, self.socket_path, req, call_timeout, on_stdout, on_stderr))
        return run_result(m)

    def stream(
        self,
        code: Union[str, bytes],
        language: str = "python",
        *,
        timeout: Optional[float] = None,
        memory_mb: Optional[int] = None,
        env: EnvArg = None,
        allowed_domains: Optional[Iterable[str]] = None,
        network: bool = False,
        expose_ports: Optional[Iterable[Any]] = None,
        packages: Optional[Iterable[str]] = None,
        call_timeout: Optional[float] = None,
    ) -> Iterator[Union[Output, RunResult]]:
        """Runs `code` and yields its output as `Output` events, in order,
        then the `RunResult`. Leaving the loop early stops the run."""
        req = _calls.run(
            code, language, timeout, memory_mb, env, self.reply_slack,
            _calls.network(allowed_domains, network, expose_ports, packages), self.build_slack,
        )
        give_up = time.monotonic() + self.capacity_wait
        backoff = _calls.FIRST_BACKOFF
        while True:
            try:
                for ev in _events(self.socket_path, req, call_timeout):
                    if isinstance(ev, Done):
                        yield run_result(ev.value)
                        return
                    yield ev
            except CapacityError:
                # Refused before anything ran or streamed: try again.
                if time.monotonic() + backoff > give_up:
                    raise
                time.sleep(backoff)
                backoff = _calls.backoff_after(backoff)

    def _retrying(self, call: Callable[[], T]) -> T:
        # Busy is not broken: the daemon refused before anything ran.
        give_up = time.monotonic() + self.capacity_wait
        backoff = _calls.FIRST_BACKOFF
        while True:
            try:
                return call()
            except CapacityError:
                if time.monotonic() + backoff > give_up:
                    raise
                time.sleep(backoff)
                backoff = _calls.backoff_after(backoff)

    def _run_with_files(
        self,
        code: Union[str, bytes],
        language: str,
        timeout: Optional[float],
        memory_mb: Optional[int],
        env: EnvArg,
        files: Optional[Mapping[str, FileData]],
        download: Optional[Iterable[str]],
        on_stdout: Optional[OutputCallback],
        on_stderr: Optional[OutputCallback],
        call_timeout: Optional[float],
        net: Optional[Mapping[str, Any]] = None,
    ) -> RunResult:
        ups = _calls.uploads(files)
        downs = _calls.check_downloads(download)
        session = self._retrying(
            lambda: self.session(
                language,
                env=env,
                timeout=timeout,
                memory_mb=memory_mb,
                idle_timeout=limits.MIN_SESSION_IDLE_MS / 1000,
                **(net or {}),
            )
        )
        try:
            for guest, data in ups:
                session.write_file(guest, data)
            result = session.exec(code, on_stdout=on_stdout, on_stderr=on_stderr, call_timeout=call_timeout)
            got = {}
            for guest in downs:
                try:
                    got[guest] = session.read_file(guest)
                except SandboxError as e:
                    e.result = result
                    raise
            return dataclasses.replace(result, files=got)
        finally:
            try:
                session.close()
            except SandboxError:
                pass  # the session is gone either way; its own error says more

    # ------------------------------------------------------------ sessions

    def session(
        self,
        language: str = "python",
        *,
        env: EnvArg = None,
        allowed_domains: Optional[Iterable[str]] = None,
        network: bool = False,
        expose_ports: Optional[Iterable[Any]] = None,
        packages: Optional[Iterable[str]] = None,
        timeout: Optional[float] = None,
        memory_mb: Optional[int] = None,
        idle_timeout: Optional[float] = None,
        call_timeout: Optional[float] = None,
    ) -> "Session":
        """Opens a session: a VM kept for many execs, whose interpreter
        keeps its state. `timeout` is each exec's default, `idle_timeout`
        (10-3600 s, default the daemon's) closes it when unused. Returns
        once the VM is ready; use it as a context manager to close it."""
        req = _calls.session_create(
            language, env, timeout, memory_mb, idle_timeout, self.reply_slack,
            _calls.network(allowed_domains, network, expose_ports, packages), self.build_slack,
        )
        m = _answer(self.socket_path, req, call_timeout)
        listed = m["sessions"]
        if len(listed) != 1:
            raise CommunicationError("sandboxd sent an unexpected session list", retry_safe=False)
        info = session_info(listed[0])
        return Session(self, info.id, info)

    def open_session(self, session_id: str) -> "Session":
        """A session by its id (another process's, or one kept from before).
        Nothing is sent: the session keeps the options it was created with."""
        return Session(self, session_id, None)

    def sessions(self, *, call_timeout: Optional[float] = None) -> List[SessionInfo]:
        """Your open sessions."""
        m = _answer(self.socket_path, _calls.session_list(self.quick_timeout), call_timeout)
        return [session_info(s) for s in m["sessions"]]

    # ------------------------------------------------------------ the daemon

    def status(self, *, call_timeout: Optional[float] = None) -> DaemonStatus:
        """Version, accelerator, VMs, queue, per-uid run limit, warm pool."""
        return daemon_status(_answer(self.socket_path, _calls.status(self.quick_timeout), call_timeout))

    def pool(self, *, call_timeout: Optional[float] = None) -> List[PoolInfo]:
        """The warm pool, per language."""
        return self.status(call_timeout=call_timeout).pool

    def metrics(self, *, call_timeout: Optional[float] = None) -> str:
        """The daemon's metrics in Prometheus' text format (as `sandboxctl metrics`)."""
        m = _answer(self.socket_path, _calls.metrics(self.quick_timeout), call_timeout)
        return str(m["text"])

    def layers(
        self, drop: Optional[str] = None, *, drop_all: bool = False, call_timeout: Optional[float] = None
    ) -> List[LayerInfo]:
        """The package layer cache and the builds in progress; `drop` removes
        the layer with that key first, `drop_all` every layer not in use (root only)."""
        m = _answer(self.socket_path, _calls.layers(drop, drop_all, 2 * self.quick_timeout), call_timeout)
        return [layer_info(x) for x in m["layers"]]

    def snapshots(self, drop: bool = False, *, call_timeout: Optional[float] = None) -> List[SnapshotInfo]:
        """The snapshot cache; with `drop`, emptied first (root only)."""
        m = _answer(self.socket_path, _calls.snapshots(drop, 2 * self.quick_timeout), call_timeout)
        return [snapshot_info(s) for s in m["snapshots"]]


class Session:
    """A session: one VM whose interpreter keeps its state across execs.

    Calls on one session run one at a time, in arrival order. The session
    belongs to the uid that created it; ``with`` closes it."""

    def __init__(self, client: Client, session_id: str, info: Optional[SessionInfo]) -> None:
        self.client = client
        self.id = session_id
        #: What the daemon said at creation (None for a session opened by id).
        self.info = info
        self.closed = False

    def __repr__(self) -> str:
        return f"Session({self.id!r})"

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if not self.closed:
            try:
                self.close()
            except SessionClosedError:
                pass  # gone already (its VM died, or it idled out)
            except SandboxError:
                if exc_type is None:
                    raise  # else the block's own exception says more

    def _path(self) -> str:
        return self.client.socket_path

    def exec(
        self,
        code: Union[str, bytes],
        *,
        timeout: Optional[float] = None,
        on_stdout: Optional[OutputCallback] = None,
        on_stderr: Optional[OutputCallback] = None,
        call_timeout: Optional[float] = None,
    ) -> RunResult:
        """Runs `code` in the session's interpreter (None: the session's
        default timeout). Raises SessionClosedError once the session is gone."""
        req = _calls.session_exec(self.id, code, timeout, self.client.reply_slack)
        return run_result(_answer(self._path(), req, call_timeout, on_stdout, on_stderr))

    def stream(
        self, code: Union[str, bytes], *, timeout: Optional[float] = None, call_timeout: Optional[float] = None
    ) -> Iterator[Union[Output, RunResult]]:
        """Like `exec`, yielding `Output` events and then the `RunResult`.
        Leaving the loop early stops the exec; the session stays usable."""
        req = _calls.session_exec(self.id, code, timeout, self.client.reply_slack)
        for ev in _events(self._path(), req, call_timeout):
            if isinstance(ev, Done):
                yield run_result(ev.value)
                return
            yield ev

    def write_file(
        self,
        path: str,
        data: FileData,
        *,
        executable: bool = False,
        call_timeout: Optional[float] = None,
    ) -> None:
        """Writes `data` (bytes, str as UTF-8, or a local path's file) to
        `path` under the session's home, creating parent directories;
        `executable` makes it mode 0755. Up to 50 MB; atomic."""
        blob = _calls.file_bytes(data)
        req = _calls.file_write(self.id, path, blob, executable, self.client.reply_slack)
        _answer(self._path(), req, call_timeout)

    def read_file(self, path: str, *, call_timeout: Optional[float] = None) -> bytes:
        """The bytes of `path` under the session's home."""
        req = _calls.file_read(self.id, path, self.client.reply_slack)
        data: bytes = _answer(self._path(), req, call_timeout)
        return data

    def list_files(self, path: str = "", *, call_timeout: Optional[float] = None) -> FileListing:
        """The entries of a directory under home ("" is home itself);
        ``truncated`` says there were more than one listing holds."""
        req = _calls.file_list(self.id, path, self.client.reply_slack)
        return file_listing(_answer(self._path(), req, call_timeout))

    def set_network(
        self, allowed_domains: Optional[Iterable[str]] = None, *, network: bool = False,
        call_timeout: Optional[float] = None,
    ) -> SessionInfo:
        """Replaces the session's egress allowlist while it runs (none: off;
        `network` alone: the operator's default list); connections the new
        list does not admit are reset. Returns the session as it is now."""
        req = _calls.session_network(self.id, allowed_domains, network, self.client.reply_slack)
        return session_info(_answer(self._path(), req, call_timeout)["sessions"][0])

    def close(self, *, call_timeout: Optional[float] = None) -> None:
        """Closes the session and destroys its VM."""
        _answer(self._path(), _calls.session_close(self.id, self.client.reply_slack), call_timeout)
        self.closed = True
