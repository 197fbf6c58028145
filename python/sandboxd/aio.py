"""The asyncio client: `AsyncClient` and its `AsyncSession`s.

The same calls as the blocking client, each on a connection of its own and
within a deadline. Cancelling a call's task closes its connection, and the
daemon then stops the run or exec. Output callbacks may be plain functions
or coroutine functions.
"""
from __future__ import annotations

import asyncio
import dataclasses
import inspect
import os
import time
from typing import Any, AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable, List, Mapping, Optional, TypeVar, Union

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

__all__ = ["AsyncClient", "AsyncSession"]

T = TypeVar("T")

_RECV_BYTES = 64 << 10


async def _events(
    path: str, req: Request, call_timeout: Optional[float]
) -> AsyncGenerator[Union[Output, Done], None]:
    wait = req.wait if call_timeout is None else call_timeout
    deadline = time.monotonic() + wait
    ex = Exchange(req)

    def left() -> float:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ex.timed_out(wait)
        return remaining

    try:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(path), left())
    except asyncio.TimeoutError:
        raise ex.timed_out(wait) from None
    except OSError as e:
        raise _calls.connect_error(path, e) from None
    frames = FrameReader()
    try:
        try:
            for fr in req.frames():
                writer.write(fr)
                await asyncio.wait_for(writer.drain(), left())
        except asyncio.TimeoutError:
            raise ex.timed_out(wait) from None
        except OSError as e:
            early = await _early_answer(reader, frames, ex)
            if early is not None:
                raise early from None
            raise CommunicationError(f"sending to sandboxd: {e.strerror or e}", retry_safe=True) from None
        ex.sent = True
        while True:
            m = frames.next_message()
            if m is None:
                try:
                    data = await asyncio.wait_for(reader.read(_RECV_BYTES), left())
                except asyncio.TimeoutError:
                    raise ex.timed_out(wait) from None
                except OSError as e:
                    raise ex.broken(f"reading from sandboxd: {e.strerror or e}") from None
                if not data:
                    raise ex.closed()
                frames.feed(data)
                continue
            ev = ex.feed(m)
            if ev is None:
                continue
            yield ev
            if isinstance(ev, Done):
                return
    finally:
        writer.close()


async def _early_answer(reader: asyncio.StreamReader, frames: FrameReader, ex: Exchange) -> Optional[SandboxError]:
    try:
        while True:
            m = frames.next_message()
            if m is not None:
                try:
                    ex.feed(m)
                except SandboxError as e:
                    return e
                continue
            data = await asyncio.wait_for(reader.read(_RECV_BYTES), 2.0)
            if not data:
                return None
            frames.feed(data)
    except (OSError, SandboxError, asyncio.TimeoutError):
        return None


async def _call_back(cb: Optional[OutputCallback], data: bytes) -> None:
    if cb is None:
        return
    r = cb(data)
    if inspect.isawaitable(r):
        await r


async def _answer(
    path: str,
    req: Request,
    call_timeout: Optional[float],
    on_stdout: Optional[OutputCallback] = None,
    on_stderr: Optional[OutputCallback] = None,
) -> Any:
    gen = _events(path, req, call_timeout)
    try:
        async for ev in gen:
            if isinstance(ev, Done):
                return ev.value
            await _call_back(on_stdout if ev.stream == "stdout" else on_stderr, ev.data)
    finally:
        await gen.aclose()
    raise AssertionError("a call ended without its answer")


class AsyncClient:
    """The asyncio twin of `sandboxd.Client`, with the same arguments.

    >>> async with AsyncClient() as c:                       # doctest: +SKIP
    ...     async for event in c.stream("for i in range(3): print(i)"):
    ...         print(event)
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

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass

    def __repr__(self) -> str:
        return f"AsyncClient({self.socket_path!r})"

    async def _retrying(self, call: Callable[[], Awaitable[T]]) -> T:
        give_up = time.monotonic() + self.capacity_wait
        backoff = _calls.FIRST_BACKOFF
        while True:
            try:
                return await call()
            except CapacityError:
                if time.monotonic() + backoff > give_up:
                    raise
                await asyncio.sleep(backoff)
                backoff = _calls.backoff_after(backoff)

    async def run(
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
        """Runs `code` in a fresh VM; see `sandboxd.Client.run`."""
        if files or download:
            return await self._run_with_files(
                code, language, timeout, memory_mb, env, files, download, on_stdout, on_stderr, call_timeout,
                dict(allowed_domains=allowed_domains, network=network, expose_ports=expose_ports, packages=packages),
            )
        req = _calls.run(
            code, language, timeout, memory_mb, env, self.reply_slack,
            _calls.network(allowed_domains, network, expose_ports, packages), self.build_slack,
        )
        m = await self._retrying(lambda: _answer(self.socket_path, req, call_timeout, on_stdout, on_stderr))
        return run_result(m)

    async def stream(
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
    ) -> AsyncIterator[Union[Output, RunResult]]:
        """Runs `code`, yielding `Output` events in order and then the
        `RunResult`. Leaving the loop early stops the run."""
        req = _calls.run(
            code, language, timeout, memory_mb, env, self.reply_slack,
            _calls.network(allowed_domains, network, expose_ports, packages), self.build_slack,
        )
        give_up = time.monotonic() + self.capacity_wait
        backoff = _calls.FIRST_BACKOFF
        while True:
            gen = _events(self.socket_path, req, call_timeout)
            try:
                async for ev in gen:
                    if isinstance(ev, Done):
                        yield run_result(ev.value)
                        return
                    yield ev
            except CapacityError:
                if time.monotonic() + backoff > give_up:
                    raise
                await asyncio.sleep(backoff)
                backoff = _calls.backoff_after(backoff)
            finally:
                await gen.aclose()

    async def _run_with_files(
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
        session = await self._retrying(
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
                await session.write_file(guest, data)
            result = await session.exec(code, on_stdout=on_stdout, on_stderr=on_stderr, call_timeout=call_timeout)
            got = {}
            for guest in downs:
                try:
                    got[guest] = await session.read_file(guest)
                except SandboxError as e:
                    e.result = result
                    raise
            return dataclasses.replace(result, files=got)
        finally:
            try:
                await session.close()
            except SandboxError:
                pass

    async def session(
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
    ) -> "AsyncSession":
        """Opens a session; see `sandboxd.Client.session`. Use it with
        ``async with await client.session(...) as s``."""
        req = _calls.session_create(
            language, env, timeout, memory_mb, idle_timeout, self.reply_slack,
            _calls.network(allowed_domains, network, expose_ports, packages), self.build_slack,
        )
        m = await _answer(self.socket_path, req, call_timeout)
        if len(m["sessions"]) != 1:
            raise CommunicationError("sandboxd sent an unexpected session list", retry_safe=False)
        info = session_info(m["sessions"][0])
        return AsyncSession(self, info.id, info)

    def open_session(self, session_id: str) -> "AsyncSession":
        """A session by its id; nothing is sent."""
        return AsyncSession(self, session_id, None)

    async def sessions(self, *, call_timeout: Optional[float] = None) -> List[SessionInfo]:
        """Your open sessions."""
        m = await _answer(self.socket_path, _calls.session_list(self.quick_timeout), call_timeout)
        return [session_info(s) for s in m["sessions"]]

    async def status(self, *, call_timeout: Optional[float] = None) -> DaemonStatus:
        """Version, accelerator, VMs, queue, per-uid run limit, warm pool."""
        return daemon_status(await _answer(self.socket_path, _calls.status(self.quick_timeout), call_timeout))

    async def pool(self, *, call_timeout: Optional[float] = None) -> List[PoolInfo]:
        """The warm pool, per language."""
        return (await self.status(call_timeout=call_timeout)).pool

    async def metrics(self, *, call_timeout: Optional[float] = None) -> str:
        """The daemon's metrics in Prometheus' text format (as `sandboxctl metrics`)."""
        m = await _answer(self.socket_path, _calls.metrics(self.quick_timeout), call_timeout)
        return str(m["text"])

    async def layers(
        self, drop: Optional[str] = None, *, drop_all: bool = False, call_timeout: Optional[float] = None
    ) -> List[LayerInfo]:
        """The package layer cache and the builds in progress; `drop` removes
        the layer with that key first, `drop_all` every layer not in use (root only)."""
        m = await _answer(self.socket_path, _calls.layers(drop, drop_all, 2 * self.quick_timeout), call_timeout)
        return [layer_info(x) for x in m["layers"]]

    async def snapshots(self, drop: bool = False, *, call_timeout: Optional[float] = None) -> List[SnapshotInfo]:
        """The snapshot cache; with `drop`, emptied first (root only)."""
        m = await _answer(self.socket_path, _calls.snapshots(drop, 2 * self.quick_timeout), call_timeout)
        return [snapshot_info(s) for s in m["snapshots"]]


class AsyncSession:
    """The asyncio twin of `sandboxd.Session`."""

    def __init__(self, client: AsyncClient, session_id: str, info: Optional[SessionInfo]) -> None:
        self.client = client
        self.id = session_id
        self.info = info
        self.closed = False

    def __repr__(self) -> str:
        return f"AsyncSession({self.id!r})"

    async def __aenter__(self) -> "AsyncSession":
        return self

    async def __aexit__(self, exc_type: object, *rest: object) -> None:
        if not self.closed:
            try:
                await self.close()
            except SessionClosedError:
                pass  # gone already (its VM died, or it idled out)
            except SandboxError:
                if exc_type is None:
                    raise  # else the block's own exception says more

    def _path(self) -> str:
        return self.client.socket_path

    async def exec(
        self,
        code: Union[str, bytes],
        *,
        timeout: Optional[float] = None,
        on_stdout: Optional[OutputCallback] = None,
        on_stderr: Optional[OutputCallback] = None,
        call_timeout: Optional[float] = None,
    ) -> RunResult:
        """Runs `code` in the session's interpreter."""
        req = _calls.session_exec(self.id, code, timeout, self.client.reply_slack)
        return run_result(await _answer(self._path(), req, call_timeout, on_stdout, on_stderr))

    async def stream(
        self, code: Union[str, bytes], *, timeout: Optional[float] = None, call_timeout: Optional[float] = None
    ) -> AsyncIterator[Union[Output, RunResult]]:
        """Like `exec`, yielding `Output` events and then the `RunResult`."""
        req = _calls.session_exec(self.id, code, timeout, self.client.reply_slack)
        gen = _events(self._path(), req, call_timeout)
        try:
            async for ev in gen:
                if isinstance(ev, Done):
                    yield run_result(ev.value)
                    return
                yield ev
        finally:
            await gen.aclose()

    async def write_file(
        self, path: str, data: FileData, *, executable: bool = False, call_timeout: Optional[float] = None
    ) -> None:
        """Writes `data` to `path` under the session's home (see `Session.write_file`)."""
        blob = _calls.file_bytes(data)
        await _answer(self._path(), _calls.file_write(self.id, path, blob, executable, self.client.reply_slack), call_timeout)

    async def read_file(self, path: str, *, call_timeout: Optional[float] = None) -> bytes:
        """The bytes of `path` under the session's home."""
        data: bytes = await _answer(self._path(), _calls.file_read(self.id, path, self.client.reply_slack), call_timeout)
        return data

    async def list_files(self, path: str = "", *, call_timeout: Optional[float] = None) -> FileListing:
        """The entries of a directory under home ("" is home itself)."""
        return file_listing(
            await _answer(self._path(), _calls.file_list(self.id, path, self.client.reply_slack), call_timeout)
        )

    async def set_network(
        self, allowed_domains: Optional[Iterable[str]] = None, *, network: bool = False,
        call_timeout: Optional[float] = None,
    ) -> SessionInfo:
        """Replaces the session's egress allowlist while it runs (see the
        sync client's Session.set_network)."""
        req = _calls.session_network(self.id, allowed_domains, network, self.client.reply_slack)
        return session_info((await _answer(self._path(), req, call_timeout))["sessions"][0])

    async def close(self, *, call_timeout: Optional[float] = None) -> None:
        """Closes the session and destroys its VM."""
        await _answer(self._path(), _calls.session_close(self.id, self.client.reply_slack), call_timeout)
        self.closed = True
