"""sandboxd: run untrusted code in disposable microVMs from Python.

>>> import sandboxd                                            # doctest: +SKIP
>>> with sandboxd.Client() as c:
...     r = c.run("print(6*7)")
...     r.exit_code, r.stdout, r.timed_out
(0, b'42\\n', False)

`Client` (blocking) and `AsyncClient` (asyncio) speak the daemon's socket
protocol (docs/protocol.md) directly; `sandbox` turns a function into one
that runs in a VM. Errors are `SandboxError` subclasses, one per code of
the daemon's taxonomy, each saying whether a retry may help (`retryable`)
and whether the code certainly did not run (`retry_safe`).
"""
from ._protocol import PROTOCOL_VERSION
from .aio import AsyncClient, AsyncSession
from .client import Client, Session
from .decorator import NoResultError, RemoteError, SandboxedFunction, sandbox
from .errors import (
    CapacityError,
    CommunicationError,
    GuestError,
    ImageCorruptError,
    ImageMissingError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    PackageInstallFailedError,
    PackageNotAllowedError,
    PermissionDeniedError,
    SandboxError,
    SandboxTimeoutError,
    SessionClosedError,
    VMBootFailedError,
)
from .types import (
    DaemonStatus,
    FileEntry,
    FileListing,
    LayerInfo,
    Output,
    PoolInfo,
    RunResult,
    SessionInfo,
    SnapshotInfo,
    Timing,
)

__version__ = "0.1.0"

__all__ = [
    "PROTOCOL_VERSION",
    "Client",
    "Session",
    "AsyncClient",
    "AsyncSession",
    "sandbox",
    "SandboxedFunction",
    "RemoteError",
    "NoResultError",
    "SandboxError",
    "InvalidArgumentError",
    "PermissionDeniedError",
    "CapacityError",
    "SandboxTimeoutError",
    "VMBootFailedError",
    "GuestError",
    "CommunicationError",
    "SessionClosedError",
    "NotFoundError",
    "PackageNotAllowedError",
    "PackageInstallFailedError",
    "ImageMissingError",
    "ImageCorruptError",
    "InternalError",
    "RunResult",
    "Timing",
    "Output",
    "DaemonStatus",
    "PoolInfo",
    "SnapshotInfo",
    "LayerInfo",
    "SessionInfo",
    "FileEntry",
    "FileListing",
]
