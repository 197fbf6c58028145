"""The asyncio client against the same daemon: every call, the async
iterator, async callbacks, timeouts, cancellation and a dead session."""
from __future__ import annotations

import asyncio
import os
import time

import pytest

import sandboxd


def arun(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_async_status_pool_snapshots_sessions(daemon, session) -> None:
    async def go() -> None:
        async with sandboxd.AsyncClient(daemon.socket) as c:
            st = await c.status()
            assert st.runs_per_uid >= 1
            assert sorted(p.language for p in await c.pool()) == ["javascript", "python", "raw"]
            assert await c.snapshots() == []
            assert session.id in {s.id for s in await c.sessions()}

    arun(go())


def test_async_run_with_an_async_callback_and_files(daemon) -> None:
    async def go() -> None:
        c = sandboxd.AsyncClient(daemon.socket)
        seen = []

        async def on_out(data: bytes) -> None:
            await asyncio.sleep(0)
            seen.append(data)

        r = await c.run(
            "import sys\nprint(open('in.txt').read())\nopen('o', 'w').write('out')\nsys.exit(4)",
            files={"in.txt": b"from host"},
            download=["o"],
            on_stdout=on_out,
        )
        assert r.exit_code == 4 and r.stdout == b"from host\n" == b"".join(seen)
        assert r.files == {"o": b"out"}
        # A plain run, no files, stderr to a plain callback.
        err = []
        r = await c.run("console.error('e'); process.exit(2)", "javascript", timeout=10, on_stderr=err.append)
        assert r.exit_code == 2 and r.stderr == b"e\n" == b"".join(err)

    arun(go())


def test_async_stream_is_ordered_and_complete(daemon) -> None:
    async def go() -> None:
        c = sandboxd.AsyncClient(daemon.socket)
        events = []
        async for ev in c.stream(
            "import sys, time\nfor i in range(4):\n    print('o', i, flush=True)\n"
            "    print('e', i, file=sys.stderr, flush=True)\n    time.sleep(0.3)\n",
            timeout=20,
        ):
            events.append(ev)
        result = events.pop()
        assert isinstance(result, sandboxd.RunResult)
        assert b"".join(e.data for e in events if e.stream == "stdout") == result.stdout == b"o 0\no 1\no 2\no 3\n"
        assert b"".join(e.data for e in events if e.stream == "stderr") == result.stderr
        text = "".join(e.text for e in events)
        positions = [text.index(f"{s} {i}\n") for i in range(4) for s in "oe"]
        assert positions == sorted(positions)

    arun(go())


def test_async_session_calls_timeouts_and_its_vm_killed(daemon) -> None:
    async def go() -> None:
        c = sandboxd.AsyncClient(daemon.socket)
        before = set(daemon.children())
        async with await c.session("python", timeout=20, idle_timeout=60) as s:
            mine = set(daemon.children()) - before
            assert len(mine) == 1 and s.info is not None
            await s.exec("state = [1, 2]")
            again = c.open_session(s.id)
            assert (await again.exec("print(sum(state))")).stdout == b"3\n"
            await s.write_file("d/x.bin", b"\x00\x01" * 1000, executable=True)
            assert await s.read_file("d/x.bin") == b"\x00\x01" * 1000
            listing = await s.list_files("d")
            assert [(e.name, e.size) for e in listing] == [("x.bin", 2000)] and not listing.truncated
            chunks = [ev async for ev in s.stream("print('s')")]
            assert isinstance(chunks[-1], sandboxd.RunResult) and chunks[-1].stdout == b"s\n"

            # A call past its call_timeout raises in time; the session lives on.
            t = time.monotonic()
            with pytest.raises(sandboxd.SandboxTimeoutError) as e:
                await s.exec("import time\ntime.sleep(20)", call_timeout=1.5)
            assert 1.4 < time.monotonic() - t < 3 and not e.value.retry_safe
            # A cancelled task closes its connection: the daemon stops that exec too.
            task = asyncio.ensure_future(s.exec("import time\ntime.sleep(20)"))
            await asyncio.sleep(1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            t = time.monotonic()
            assert (await s.exec("print(state)")).stdout == b"[1, 2]\n"
            assert time.monotonic() - t < 15  # not behind a 20 s sleep

            os.kill(mine.pop(), 9)
            assert daemon.wait_children_at_most(len(before), 30)
            deadline = time.monotonic() + 10
            while True:
                try:
                    await s.exec("1")
                except sandboxd.SessionClosedError:
                    break
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
        assert s.closed is False  # the close found it gone; leaving was quiet

    arun(go())


def test_async_errors(daemon, tmp_path) -> None:
    async def go() -> None:
        with pytest.raises(sandboxd.CommunicationError):
            await sandboxd.AsyncClient(tmp_path / "none.sock").status()
        c = sandboxd.AsyncClient(daemon.socket)
        with pytest.raises(sandboxd.InvalidArgumentError, match="code is empty"):
            await c.run("")
        with pytest.raises(sandboxd.NotFoundError):
            await c.open_session("s-ffffffffffffffffffffffff").close()

    arun(go())
