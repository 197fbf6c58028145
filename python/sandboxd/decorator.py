"""``@sandbox``: a Python function that runs in a fresh VM when called.

The function travels as its source code; its arguments and its return
value travel as JSON. The guest's output is never unpickled, or otherwise
executed, on the host: what comes back is parsed as JSON and nothing else.
``pickle_args=True`` pickles the arguments host -> guest only (for values
JSON cannot carry); the guest must be able to import their classes.

How the return value comes back
-------------------------------
The function runs as an ordinary run (so calls use the warm pool, count
against the daemon's per-uid run limit, and ``.map()`` can size itself by
it). Its stdout and stderr stream to the caller as the function prints.
The in-guest wrapper reports the outcome as a trailer at the very end of
stderr::

    NUL "sandboxd-result-" NONCE NUL  LENGTH ":"  JSON

and then leaves with ``os._exit(0)``. NONCE is 128 random bits drawn for
this call, so no output that was not written by this call's wrapper can
contain the marker by accident, however it was produced. The host accepts
a trailer only on the wrapper's exit path: the run exited 0, was not
killed or timed out, stderr was not truncated, and the marker is followed
by exactly LENGTH bytes of JSON up to the end of stderr (output after it
means the result cannot be trusted and is refused). Streamed stderr is
filtered so the trailer never reaches the caller's stderr.

The function itself could read the nonce (it runs in the same process as
the wrapper) and forge a trailer -- but a function that wants to give its
caller a value can simply return it: forging gives it nothing it did not
have, and the trailer is parsed only as length-checked JSON. Output that
merely passes through the function (data it prints) cannot forge one.
The trailer shares stderr's 100 KB cap with the function's own stderr, so
return values are bounded by it; a larger one fails with NoResultError.
"""
from __future__ import annotations

import ast
import base64
import codecs
import functools
import inspect
import json
import pickle
import secrets
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, Generic, Iterable, List, Optional, Tuple, TypeVar, Union

from .client import Client
from .errors import SandboxError
from .types import RunResult

__all__ = ["sandbox", "SandboxedFunction", "RemoteError", "NoResultError"]

R = TypeVar("R")


class RemoteError(Exception):
    """The sandboxed function raised. ``type_name`` is the remote exception's
    type ("ValueError", "json.decoder.JSONDecodeError"), ``traceback`` the
    remote traceback as text, ``result`` the run's result."""

    def __init__(self, type_name: str, message: str, traceback: str, result: Optional[RunResult] = None) -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message
        self.traceback = traceback
        self.result = result

    def __str__(self) -> str:
        return f"{self.type_name}: {self.message}\n\nRemote traceback:\n{self.traceback}"


class NoResultError(Exception):
    """The run ended without the function returning or raising: it timed
    out, was killed (memory, a signal), exited on its own (``os._exit``),
    or its result could not be read. ``result`` is the run's result."""

    def __init__(self, message: str, result: RunResult) -> None:
        super().__init__(message)
        self.result = result

    @property
    def timed_out(self) -> bool:
        return self.result.timed_out


# ---------------------------------------------------------------- JSON, strictly


def _json_problem(value: object, where: str, depth: int = 0) -> "str | None":
    """What keeps `value` from crossing as JSON, or None. Tuples cross as
    lists; dict keys must be str; floats must be finite. (This function is
    shipped to the guest too, to check the return value there.)"""
    if depth > 100:
        return where + " is nested too deeply"
    if value is None or isinstance(value, (bool, int, str)):
        return None
    if isinstance(value, float):
        # x - x is 0.0 for finite floats, NaN for infinities and NaN.
        return None if value - value == 0 else where + " is " + repr(value) + ", which JSON cannot carry"
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            p = _json_problem(v, where + "[" + str(i) + "]", depth + 1)
            if p:
                return p
        return None
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                return where + " has a key " + repr(k) + " that is not a str"
            p = _json_problem(v, where + "[" + repr(k) + "]", depth + 1)
            if p:
                return p
        return None
    return where + " is a " + type(value).__name__ + ", which JSON cannot carry"


_JSON_PROBLEM_SOURCE = textwrap.dedent(inspect.getsource(_json_problem))

# ---------------------------------------------------------------- the guest's side

_WRAPPER = """\
import json as _sandboxd_json, linecache as _sandboxd_linecache, os as _sandboxd_os
import sys as _sandboxd_sys, traceback as _sandboxd_traceback
{json_problem}

def _sandboxd_report(payload):
    data = _sandboxd_json.dumps(payload, allow_nan=False).encode()
    try:
        _sandboxd_sys.stdout.flush()
        _sandboxd_sys.stderr.flush()
    except BaseException:
        pass
    out = {mark!r} + b"%d:" % len(data) + data
    while out:
        out = out[_sandboxd_os.write(2, out):]
    _sandboxd_os._exit(0)

def _sandboxd_main():
    filename = {filename!r}
    source = {source!r}
    _sandboxd_linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    try:
        args, kwargs = {load_args}
        exec(compile(source, filename, "exec", dont_inherit=True), globals())
        value = globals()[{name!r}](*args, **kwargs)
    except BaseException as e:
        tb = e.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename != filename:
            tb = tb.tb_next
        t = type(e)
        name = t.__qualname__ if t.__module__ == "builtins" else t.__module__ + "." + t.__qualname__
        try:
            message = str(e)
        except BaseException:
            message = "<unprintable " + name + ">"
        text = "".join(_sandboxd_traceback.format_exception(t, e, tb or e.__traceback__))
        _sandboxd_report({{"ok": False, "error": {{"type": name, "message": message, "traceback": text}}}})
    problem = _json_problem(value, "the return value")
    if problem:
        _sandboxd_report({{"ok": False, "not_json": problem}})
    _sandboxd_report({{"ok": True, "value": value}})

_sandboxd_main()
"""


def _mark(nonce: str) -> bytes:
    return b"\x00sandboxd-result-" + nonce.encode() + b"\x00"


def _function_source(fn: Callable[..., Any]) -> Tuple[str, str]:
    """(file name, source) of `fn` for the guest: the def alone (its
    decorators blanked), at its own line numbers, so the remote traceback
    names the caller's file and lines. TypeError for what cannot travel."""
    name = getattr(fn, "__name__", None)
    if not inspect.isfunction(fn):
        raise TypeError(f"@sandbox takes a function defined with def, not {type(fn).__name__}")
    if name == "<lambda>":
        raise TypeError("@sandbox cannot ship a lambda: define the function with def")
    if inspect.iscoroutinefunction(fn) or inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
        raise TypeError(f"@sandbox cannot ship {name}: coroutines and generators are not supported")
    parts = fn.__qualname__.split(".")
    if len(parts) > 1 and parts[-2] != "<locals>":
        raise TypeError(
            f"@sandbox cannot ship the method {fn.__qualname__}: a method needs its object; "
            "use a module-level function and pass what it needs as arguments"
        )
    if fn.__code__.co_freevars:
        names = ", ".join(fn.__code__.co_freevars)
        raise TypeError(
            f"@sandbox cannot ship {name}: it uses local variables of its enclosing function ({names}); "
            "pass them as arguments"
        )
    try:
        lines, first = inspect.getsourcelines(fn)
        filename = inspect.getsourcefile(fn) or inspect.getfile(fn)
    except (OSError, TypeError) as e:
        raise TypeError(
            f"@sandbox cannot find the source of {name} ({e}); define it in a file, not in an interactive session "
            "or with exec()"
        ) from None
    source = textwrap.dedent("".join(lines))
    try:
        tree = ast.parse(source)
    except SyntaxError as e:
        raise TypeError(f"@sandbox cannot parse the source of {name}: {e}") from None
    node = tree.body[0] if tree.body else None
    if not isinstance(node, ast.FunctionDef) or node.name != name:
        raise TypeError(f"@sandbox cannot find the def of {name} in its source")
    src_lines = source.splitlines(True)
    for i in range(node.lineno - 1):  # decorator lines, blanked to keep numbering
        src_lines[i] = "\n"
    return filename, "\n" * (first - 1) + "".join(src_lines)


class _StderrFilter:
    """Passes stderr on as it streams, but never the trailer: bytes that may
    begin the marker are held back until the next chunk says otherwise."""

    def __init__(self, mark: bytes, sink: Callable[[bytes], Any]) -> None:
        self._mark = mark
        self._sink = sink
        self._held = b""
        self.seen = False

    def feed(self, data: bytes) -> None:
        if self.seen:
            return
        buf = self._held + data
        i = buf.find(self._mark)
        if i >= 0:
            self.seen = True
            self._held = b""
            if i:
                self._sink(buf[:i])
            return
        keep = 0
        for k in range(min(len(self._mark) - 1, len(buf)), 0, -1):
            if self._mark.startswith(buf[-k:]):
                keep = k
                break
        out, self._held = buf[: len(buf) - keep], buf[len(buf) - keep :]
        if out:
            self._sink(out)

    def finish(self) -> None:
        if not self.seen and self._held:
            self._sink(self._held)
        self._held = b""


def _text_sink(stream_name: str) -> Callable[[bytes], None]:
    """Writes output to the caller's sys.stdout/sys.stderr as it is at the
    time (so redirections and test captures see it), decoding UTF-8 across
    chunk boundaries."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def write(data: bytes) -> None:
        stream = getattr(sys, stream_name)
        stream.write(decoder.decode(data))
        stream.flush()

    return write


def _trailer(result: RunResult, mark: bytes) -> Tuple[Optional[Dict[str, Any]], str]:
    """The wrapper's report, or None and why it cannot be had."""
    if result.timed_out:
        return None, f"timed out after {result.execution_time_ms} ms"
    if result.signal:
        return None, f"killed by signal {result.signal}"
    if result.stderr_truncated:
        return None, "its stderr passed the daemon's cap, so its result was lost (return less, or print less to stderr)"
    at = result.stderr.rfind(mark)
    if at < 0:
        return None, f"exited with status {result.exit_code} before returning"
    if result.exit_code != 0:
        return None, f"exited with status {result.exit_code} after its result"
    rest = result.stderr[at + len(mark) :]
    length, colon, body = rest.partition(b":")
    if not colon or not length.isdigit() or len(length) > 9 or int(length) != len(body):
        return None, "its result was followed by other output or is damaged"
    try:
        report = json.loads(body)
    except ValueError:
        return None, "its result is not JSON"
    if not isinstance(report, dict) or not isinstance(report.get("ok"), bool):
        return None, "its result is not a report"
    return report, ""


class SandboxedFunction(Generic[R]):
    """A function that runs in a fresh VM when called (see `sandbox`)."""

    __name__: str
    __qualname__: str

    def __init__(
        self,
        fn: Callable[..., R],
        *,
        timeout: Optional[float],
        memory_mb: Optional[int],
        env: Optional[Dict[str, str]],
        pickle_args: bool,
        client: Optional[Client],
        on_stdout: Optional[Callable[[bytes], Any]],
        on_stderr: Optional[Callable[[bytes], Any]],
        packages: Optional[Iterable[str]] = None,
    ) -> None:
        if isinstance(packages, str):
            raise TypeError("@sandbox takes packages as a list of specifiers, not one string")
        self._filename, self._source = _function_source(fn)
        self._fn = fn
        self.timeout = timeout
        self.memory_mb = memory_mb
        self.env = env
        self.packages = list(packages or [])  #: "name==1.2.3" entries whose layer the function gets
        self.pickle_args = pickle_args
        self._client = client
        self.on_stdout = on_stdout
        self.on_stderr = on_stderr
        functools.update_wrapper(self, fn)

    @property
    def client(self) -> Client:
        return self._client if self._client is not None else Client()

    def local(self, *args: Any, **kwargs: Any) -> R:
        """Calls the plain function here, without a VM (for tests)."""
        return self._fn(*args, **kwargs)

    def code(self, *args: Any, **kwargs: Any) -> Tuple[str, bytes]:
        """The program a call with these arguments runs, and its result marker.
        TypeError when the arguments cannot travel."""
        if self.pickle_args:
            try:
                blob = pickle.dumps((list(args), kwargs), protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as e:
                raise TypeError(f"arguments of {self.__name__} cannot be pickled: {e}") from None
            load = f"__import__('pickle').loads(__import__('base64').b64decode({base64.b64encode(blob).decode()!r}))"
        else:
            for i, a in enumerate(args):
                p = _json_problem(a, f"argument {i}")
                if p:
                    raise TypeError(f"{self.__name__}: {p} (arguments cross as JSON; pickle_args=True sends others)")
            for k, v in kwargs.items():
                p = _json_problem(v, f"argument {k!r}")
                if p:
                    raise TypeError(f"{self.__name__}: {p} (arguments cross as JSON; pickle_args=True sends others)")
            load = f"_sandboxd_json.loads({json.dumps([list(args), kwargs], allow_nan=False)!r})"
        nonce = secrets.token_hex(16)
        mark = _mark(nonce)
        program = _WRAPPER.format(
            json_problem=_JSON_PROBLEM_SOURCE,
            mark=mark,
            filename=self._filename,
            source=self._source,
            load_args=load,
            name=self.__name__,
        )
        return program, mark

    def __call__(self, *args: Any, **kwargs: Any) -> R:
        """Runs the function in a fresh VM and returns its value.

        Raises TypeError (before any VM starts) when the arguments cannot
        cross as JSON, RemoteError when the function raised, TypeError when
        its return value cannot cross as JSON, NoResultError when it never
        returned (timeout, killed, exited), and SandboxError for the
        sandbox's own failures."""
        program, mark = self.code(*args, **kwargs)
        out = self.on_stdout or _text_sink("stdout")
        err = _StderrFilter(mark, self.on_stderr or _text_sink("stderr"))
        result = self.client.run(
            program,
            "python",
            timeout=self.timeout,
            memory_mb=self.memory_mb,
            env=self.env,
            packages=self.packages,
            on_stdout=out,
            on_stderr=err.feed,
        )
        report, why = _trailer(result, mark)
        err.finish()
        if report is None:
            raise NoResultError(f"{self.__name__} {why}", result)
        if report["ok"]:
            return report.get("value")  # type: ignore[return-value]
        if "not_json" in report:
            raise TypeError(f"{self.__name__}: {report['not_json']} (return values cross as JSON)")
        e = report.get("error") or {}
        raise RemoteError(str(e.get("type", "?")), str(e.get("message", "")), str(e.get("traceback", "")), result)

    def map(self, *iterables: Iterable[Any], concurrency: Optional[int] = None) -> List[R]:
        """Calls the function once per item (several iterables give several
        arguments, as the built-in map), concurrently, and returns the
        values in order. At most `concurrency` calls run at once; by default
        as many as the daemon lets one user run (``status().runs_per_uid``).
        The first failure is raised once every call has ended."""
        calls = list(zip(*iterables))
        if not calls:
            return []
        if concurrency is None:
            concurrency = max(1, self.client.status().runs_per_uid)
        with ThreadPoolExecutor(max_workers=min(concurrency, len(calls))) as pool:
            futures = [pool.submit(self, *a) for a in calls]
            errors = [f.exception() for f in futures]
        for e in errors:
            if e is not None:
                raise e
        return [f.result() for f in futures]

    def __get__(self, obj: Any, objtype: Any = None) -> "SandboxedFunction[R]":
        return self

    def __repr__(self) -> str:
        return f"<sandboxed function {self.__qualname__}>"


def sandbox(
    fn: Optional[Callable[..., R]] = None,
    *,
    timeout: Optional[float] = None,
    memory_mb: Optional[int] = None,
    env: Optional[Dict[str, str]] = None,
    pickle_args: bool = False,
    client: Optional[Client] = None,
    on_stdout: Optional[Callable[[bytes], Any]] = None,
    on_stderr: Optional[Callable[[bytes], Any]] = None,
    packages: Optional[Iterable[str]] = None,
) -> Union[SandboxedFunction[R], Callable[[Callable[..., R]], SandboxedFunction[R]]]:
    """Makes a Python function run in a fresh sandbox VM when called.

    >>> @sandbox(timeout=10)                          # doctest: +SKIP
    ... def stats(xs):
    ...     import statistics
    ...     return {"mean": statistics.mean(xs)}
    >>> stats([1, 2, 3])                              # doctest: +SKIP
    {'mean': 2}

    The function must be self-contained: it travels as source, without its
    module's globals, so it imports what it needs inside. Lambdas, methods,
    closures over local variables and functions without findable source
    are refused with TypeError when decorated. Arguments and the return
    value cross as JSON (tuples become lists; dict keys must be str);
    ``pickle_args=True`` pickles arguments host -> guest instead. The guest's
    output is never unpickled on the host.

    `timeout` (seconds) and `memory_mb` are the run's; `env` its
    environment; `client` the daemon to use (default: a `Client()`). What
    the function prints goes to the caller's stdout/stderr, or to
    `on_stdout`/`on_stderr` (bytes). ``f.map(items)`` runs calls
    concurrently, ``f.local(...)`` calls the plain function.

    ``packages=["name==1.2.3", ...]`` are importable in the function: the
    daemon attaches their layer (see the README's "Packages"). A call that
    has to wait for the layer's build first waits up to the client's
    ``build_slack`` longer; a specifier the daemon's policy refuses raises
    `PackageNotAllowedError` before any VM starts.
    """

    def wrap(f: Callable[..., R]) -> SandboxedFunction[R]:
        return SandboxedFunction(
            f,
            timeout=timeout,
            memory_mb=memory_mb,
            env=env,
            pickle_args=pickle_args,
            client=client,
            on_stdout=on_stdout,
            on_stderr=on_stderr,
            packages=packages,
        )

    if fn is not None:
        return wrap(fn)
    return wrap
