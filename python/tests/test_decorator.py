"""@sandbox: functions shipped as source, JSON across, results on their
own channel, remote exceptions, refusals before any VM starts."""
from __future__ import annotations

import json
import sys

import pytest

import sandboxd
from sandboxd import NoResultError, RemoteError, sandbox
from sandboxd.decorator import _mark, _StderrFilter, _trailer
from sandboxd.types import RunResult


@pytest.fixture
def socket_env(daemon, monkeypatch):  # type: ignore[no-untyped-def]
    """Decorated functions use the default Client(): point it at our daemon."""
    monkeypatch.setenv("SANDBOXD_SOCKET", daemon.socket)
    return daemon


@sandbox(timeout=20)
def summarize(values, *, label="stats", extra=None):
    import statistics
    import sys

    print("computing", label)
    print("a warning", file=sys.stderr)
    # Output that looks like a result trailer cannot be taken for one.
    sys.stderr.write("\x00sandboxd-result-" + "0" * 32 + "\x00" + '9:{"ok":true}')
    sys.stderr.write("\n")
    return {
        "label": label,
        "mean": statistics.mean(values),
        "nested": {"values": values, "extra": extra, "tuple": (1, "two")},
        "unicode": "héllo ✓",
    }


@sandbox(timeout=20)
def fails(n):
    def inner(k):
        raise ValueError(f"bad value {k}")

    return inner(n * 2)


PRINTED: list = []


@sandbox(timeout=20, on_stdout=PRINTED.append)
def returns_a_set():
    print("a set is coming")
    return {1, 2}


@sandbox(timeout=1)
def spins():
    while True:
        pass


@sandbox(timeout=20, pickle_args=True)
def total(items):
    return sum(items)


def test_a_round_trip_with_nested_data_and_output_to_the_caller(socket_env, capsys) -> None:
    value = summarize([1, 2, 3, 4], label="four", extra={"k": [None, True, 1.5]})
    assert value == {
        "label": "four",
        "mean": 2.5,
        "nested": {"values": [1, 2, 3, 4], "extra": {"k": [None, True, 1.5]}, "tuple": [1, "two"]},
        "unicode": "héllo ✓",
    }
    out, err = capsys.readouterr()
    assert out == "computing four\n"
    assert "a warning\n" in err and '9:{"ok":true}' in err  # the fake reached the caller
    assert "sandboxd-result-" + "0" * 32 in err


def test_an_exception_is_raised_as_remote_error_with_its_traceback(socket_env) -> None:
    with pytest.raises(RemoteError) as e:
        fails(21)
    err = e.value
    assert err.type_name == "ValueError" and err.message == "bad value 42"
    assert __file__ in err.traceback  # the caller's file and lines
    assert "in fails" in err.traceback and "in inner" in err.traceback
    assert 'raise ValueError(f"bad value {k}")' in err.traceback
    assert "_sandboxd" not in err.traceback  # no wrapper frames
    assert err.result is not None and err.result.exit_code == 0
    assert "Remote traceback" in str(err)


def test_a_return_value_that_is_not_json_is_refused(socket_env) -> None:
    with pytest.raises(TypeError, match="the return value is a set"):
        returns_a_set()
    assert b"".join(PRINTED) == b"a set is coming\n"  # print went to the callback


def test_a_function_that_never_returns_is_no_result(socket_env) -> None:
    with pytest.raises(NoResultError, match="timed out") as e:
        spins()
    assert e.value.timed_out


def test_map_runs_concurrently_and_pickled_arguments_go_one_way(socket_env) -> None:
    # Sets do not cross as JSON; pickled, they reach the guest. The result
    # still comes back as JSON.
    assert total.map([{1, 2}, {3, 4, 5}, frozenset({10})]) == [3, 12, 10]
    assert total.map([]) == []


# ---------------------------------------------------------------- no VM


def test_arguments_that_are_not_json_are_refused_before_any_vm(tmp_path) -> None:
    nowhere = sandboxd.Client(tmp_path / "no-daemon.sock")  # a call would fail differently
    f = sandbox(client=nowhere)(returns_a_set.__wrapped__)
    for args, kwargs, what in [
        (({1, 2},), {}, "argument 0 is a set"),
        (([1, object()],), {}, r"argument 0\[1\] is a object"),
        (({1: "a"},), {}, "key 1 that is not a str"),
        ((float("nan"),), {}, "nan"),
        ((), {"k": b"bytes"}, "argument 'k' is a bytes"),
    ]:
        with pytest.raises(TypeError, match=what):
            f(*args, **kwargs)


def test_what_cannot_travel_is_refused_when_decorated() -> None:
    with pytest.raises(TypeError, match="lambda"):
        sandbox(lambda x: x)
    y = 3

    def closure(x):
        return x + y

    with pytest.raises(TypeError, match=r"local variables of its enclosing function \(y\)"):
        sandbox(closure)
    with pytest.raises(TypeError, match="method"):

        class Holder:
            @sandbox
            def method(self):
                return 1

    namespace: dict = {}
    exec("def made_by_exec():\n    return 1\n", namespace)
    with pytest.raises(TypeError, match="cannot find the source"):
        sandbox(namespace["made_by_exec"])

    async def coro():
        return 1

    with pytest.raises(TypeError, match="coroutines"):
        sandbox(coro)
    with pytest.raises(TypeError, match="def"):
        sandbox(print)


def test_a_nested_function_without_closures_ships_and_local_calls_the_plain_function() -> None:
    def nested(a, b=2):
        return a * b

    f = sandbox(timeout=5)(nested)
    assert f.local(3) == 6 and f.__name__ == "nested"
    program, mark = f.code(3, b=4)
    assert repr(mark) in program
    compile(program, "<wrapper>", "exec")  # the wrapper is valid Python
    assert "@sandbox" not in program


def test_the_trailer_is_taken_only_from_the_wrappers_exit_path() -> None:
    mark = _mark("ab" * 16)

    def result(stderr: bytes, **kw: object) -> RunResult:
        return RunResult(stderr=stderr, **kw)  # type: ignore[arg-type]

    good = json.dumps({"ok": True, "value": 5}).encode()
    trailer = mark + b"%d:" % len(good) + good
    assert _trailer(result(b"noise" + trailer), mark) == ({"ok": True, "value": 5}, "")
    assert _trailer(result(trailer + b"later"), mark)[0] is None
    assert _trailer(result(trailer, exit_code=1), mark)[0] is None
    assert _trailer(result(trailer, timed_out=True), mark)[1].startswith("timed out")
    assert _trailer(result(trailer, signal=9), mark)[1] == "killed by signal 9"
    assert _trailer(result(trailer, stderr_truncated=True), mark)[0] is None
    assert _trailer(result(b"no trailer", exit_code=3), mark)[1] == "exited with status 3 before returning"
    assert _trailer(result(mark + b"3:abc"), mark)[1] == "its result is not JSON"
    other = _mark("cd" * 16)
    assert _trailer(result(other + b"%d:" % len(good) + good), mark)[0] is None


def test_streamed_stderr_never_shows_the_trailer_whatever_the_chunking() -> None:
    mark = _mark("ef" * 16)
    stream = b"err \x00 line\n" + mark + b"2:{}"
    for size in range(1, len(stream) + 1):
        got = []
        f = _StderrFilter(mark, got.append)
        for i in range(0, len(stream), size):
            f.feed(stream[i : i + size])
        f.finish()
        assert b"".join(got) == b"err \x00 line\n", size
    got = []
    f = _StderrFilter(mark, got.append)
    f.feed(b"partial \x00sandbox")
    f.finish()  # no trailer came: what was held back is passed on
    assert b"".join(got) == b"partial \x00sandbox"


def test_help_shows_the_docstrings() -> None:
    assert "run in a fresh sandbox VM" in (sandbox.__doc__ or "")
    assert sandboxd.Client.run.__doc__ and sandboxd.AsyncClient.stream.__doc__
    assert sys.modules["sandboxd"].__doc__
