"""What calls return: runs' results, output events, status, sessions, files.

Each mirrors a struct of common/include/sandbox/types.h, field by field,
with durations in milliseconds as on the wire. Output is bytes, exactly as
the code wrote it; `.text` decodes on request.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional

__all__ = [
    "Timing",
    "RunResult",
    "Output",
    "PoolInfo",
    "DaemonStatus",
    "SnapshotInfo",
    "SessionInfo",
    "FileEntry",
    "FileListing",
]


@dataclass(frozen=True)
class Timing:
    """Where a run's time went, in milliseconds."""

    setup_ms: int = 0  #: request accepted -> VM process started (or taken warm)
    boot_ms: int = 0  #: VM process started -> agent ready
    startup_ms: int = 0  #: exec sent -> interpreter ready for the code (outside the timeout)
    execute_ms: int = 0  #: code handed over -> its process tree gone
    total_ms: int = 0  #: request accepted -> result


@dataclass(frozen=True)
class RunResult:
    """The end of a run or a session exec.

    A non-zero ``exit_code``, a ``signal`` or ``timed_out`` describe how the
    code ended; none of them is an exception."""

    language: str = "python"
    stdout: bytes = b""
    stderr: bytes = b""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    exit_code: int = 0
    signal: int = 0  #: the signal that killed the code, 0 if none
    timed_out: bool = False
    execution_time_ms: int = 0  #: the code's wall time, measured in the guest
    cpu_time_ms: int = 0  #: host CPU time of the VM while the code ran
    memory_peak_mb: int = 0
    timing: Timing = field(default_factory=Timing)
    warm_pool_hit: bool = False
    accelerator: str = ""  #: "kvm" or "tcg"
    vm_start: str = ""  #: "pool", "snapshot", "boot", "boot (snapshot failed)"
    state_lost: bool = False  #: session execs: the interpreter was restarted
    #: Guest ports offered on the host: [{internal, external, host, url}].
    exposed_ports: List[Dict[str, Any]] = field(default_factory=list)
    #: What the network did: {connections, bytes_in, bytes_out, denied: [{host, port, reason}]}.
    network: Dict[str, Any] = field(default_factory=dict)
    #: The package layer: {key, cache ("hit", "built", "joined", "fetched"), build_ms}; key "" without packages.
    layer: Dict[str, Any] = field(default_factory=dict)
    #: Files fetched after a run with ``download=``: guest path -> bytes.
    files: Dict[str, bytes] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Exited 0, not killed, not timed out."""
        return self.exit_code == 0 and self.signal == 0 and not self.timed_out

    @property
    def text(self) -> str:
        """stdout decoded as UTF-8 (undecodable bytes replaced)."""
        return self.stdout.decode("utf-8", "replace")

    @property
    def stderr_text(self) -> str:
        """stderr decoded as UTF-8 (undecodable bytes replaced)."""
        return self.stderr.decode("utf-8", "replace")


@dataclass(frozen=True)
class Output:
    """A piece of a running code's output, in the order it was written."""

    stream: str  #: "stdout" or "stderr"
    data: bytes

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", "replace")


@dataclass(frozen=True)
class PoolInfo:
    """The warm pool of one language, or of one package set (pool_layers)."""

    language: str
    size: int  #: configured warm VMs
    ready: int
    booting: int
    hits: int
    misses: int
    layer: str = ""  #: the package layer's key, for a pool_layers lane


@dataclass(frozen=True)
class DaemonStatus:
    """What the daemon is doing."""

    version: str
    accelerator: str
    accelerator_reason: str
    vms: int
    max_vms: int
    runs_active: int
    runs_queued: int
    sessions: int
    runs_per_uid: int  #: runs one uid may have running and queued at once
    pool: List[PoolInfo]
    host_limits: str
    draining: bool = False  #: taking no new runs or sessions (``sandboxctl drain``)


@dataclass(frozen=True)
class SnapshotInfo:
    """One entry of the snapshot cache."""

    key: str
    language: str
    memory_mb: int
    bytes: int


@dataclass(frozen=True)
class SessionInfo:
    """An open session, as the daemon lists it."""

    id: str
    language: str
    memory_mb: int
    idle_timeout_ms: int
    exec_count: int
    created_unix_ms: int
    last_activity_unix_ms: int
    vm_start: str
    exposed_ports: List[Dict[str, Any]] = field(default_factory=list)  #: [{internal, external, host, url}]
    allowed_domains: List[str] = field(default_factory=list)  #: the egress allowlist in force
    layer: Dict[str, Any] = field(default_factory=dict)  #: the package layer, as in RunResult


@dataclass(frozen=True)
class LayerInfo:
    """A package layer in the daemon's cache, or one being built."""

    key: str
    language: str
    packages: List[str]  #: the canonical request
    lock: List[str]  #: every installed package with its version and hash
    bytes: int
    last_used_unix_ms: int
    users: int  #: runs and sessions attached now
    building: bool


@dataclass(frozen=True)
class FileEntry:
    """A directory entry in a session's home. ``name`` is decoded with
    ``surrogateescape``, so any name the guest has round-trips."""

    name: str
    is_dir: bool
    size: int  #: regular files; 0 otherwise


@dataclass(frozen=True)
class FileListing:
    """A directory's entries; ``truncated`` when it held more than one
    listing returns (1000)."""

    entries: List[FileEntry]
    truncated: bool

    def __iter__(self) -> Iterator[FileEntry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def names(self) -> List[str]:
        return [e.name for e in self.entries]


# ---------------------------------------------------------------- from the wire


def run_result(m: Dict[str, Any], files: Optional[Dict[str, bytes]] = None) -> RunResult:
    t = m["timing"]
    return RunResult(
        language=m["language"],
        stdout=m["stdout"],
        stderr=m["stderr"],
        stdout_truncated=m["stdout_truncated"],
        stderr_truncated=m["stderr_truncated"],
        exit_code=m["exit_code"],
        signal=m["signal"],
        timed_out=m["timed_out"],
        execution_time_ms=m["execution_time_ms"],
        cpu_time_ms=m["cpu_time_ms"],
        memory_peak_mb=m["memory_peak_mb"],
        timing=Timing(**t),
        warm_pool_hit=m["warm_pool_hit"],
        accelerator=m["accelerator"],
        vm_start=m["vm_start"],
        state_lost=m["state_lost"],
        exposed_ports=list(m.get("exposed_ports", [])),
        network=dict(m.get("network", {})),
        layer=dict(m.get("layer", {})),
        files=dict(files or {}),
    )


def daemon_status(m: Dict[str, Any]) -> DaemonStatus:
    return DaemonStatus(
        version=m["version"],
        accelerator=m["accelerator"],
        accelerator_reason=m["accelerator_reason"],
        vms=m["vms"],
        max_vms=m["max_vms"],
        runs_active=m["runs_active"],
        runs_queued=m["runs_queued"],
        sessions=m["sessions"],
        runs_per_uid=m["runs_per_uid"],
        pool=[PoolInfo(**p) for p in m["pool"]],
        host_limits=m["host_limits"],
        draining=m["draining"],
    )


def layer_info(m: Dict[str, Any]) -> LayerInfo:
    return LayerInfo(**m)


def snapshot_info(m: Dict[str, Any]) -> SnapshotInfo:
    return SnapshotInfo(**m)


def session_info(m: Dict[str, Any]) -> SessionInfo:
    d = dict(m)
    d["id"] = d.pop("session")
    return SessionInfo(**d)


def file_listing(m: Dict[str, Any]) -> FileListing:
    return FileListing(
        entries=[
            FileEntry(name=e["name"].decode("utf-8", "surrogateescape"), is_dir=e["is_dir"], size=e["size"])
            for e in m["entries"]
        ],
        truncated=m["truncated"],
    )
