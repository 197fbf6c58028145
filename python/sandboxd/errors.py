"""The error taxonomy (common/errors.cc), one exception class per code.

Every error the daemon answers, and every failure of the client itself
(no daemon, a closed socket, no reply in time), is a `SandboxError` with:

- ``code``: the taxonomy's stable name ("capacity", "not_found", ...);
- ``retryable``: whether the same call may succeed later (the taxonomy's
  verdict: capacity, timeout, vm_boot_failed and communication);
- ``retry_safe``: whether the caller's code certainly did **not** run, so
  that sending the call again cannot run it twice. False means the outcome
  is unknown: the code may have run, in part or in full.

A run that exits non-zero or times out is not an error: it is a result.
"""
from __future__ import annotations

import builtins
from typing import Dict, FrozenSet, Optional, Type

# The taxonomy's retry verdicts, code by code (common/errors.cc).
RETRYABLE: Dict[str, bool] = {
    "invalid_argument": False,
    "permission_denied": False,
    "capacity": True,
    "timeout": True,
    "vm_boot_failed": True,
    "guest_error": False,
    "communication": True,
    "session_closed": False,
    "not_found": False,
    "package_not_allowed": False,
    "image_missing": False,
    "image_corrupt": False,
    "internal": False,
    "package_install_failed": False,
}

# Codes the daemon only ever answers before any code reaches a guest: the
# request was refused (bad input, access, limits, no such session), or its
# VM never came up (boot failure; a daemon-side `timeout` is a boot or
# queue deadline). For the others -- guest_error, communication, internal,
# and session_closed for an exec whose VM died under it -- the code may
# have run.
NEVER_RAN: FrozenSet[str] = frozenset(
    {
        "invalid_argument",
        "permission_denied",
        "capacity",
        "timeout",
        "vm_boot_failed",
        "not_found",
        "package_not_allowed",
        "package_install_failed",
        "image_missing",
        "image_corrupt",
    }
)


class SandboxError(Exception):
    """Base of every error from sandboxd or this client."""

    code: str = "internal"

    def __init__(self, message: str, *, retry_safe: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.retry_safe = retry_safe
        # Set on errors that end a call after a result was already had
        # (a failed download after a run with files).
        self.result: Optional[object] = None

    @property
    def retryable(self) -> bool:
        """Whether the taxonomy says a retry may succeed."""
        return RETRYABLE.get(self.code, False)

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, retry_safe={self.retry_safe})"


class InvalidArgumentError(SandboxError):
    """The request was refused as malformed or out of bounds."""

    code = "invalid_argument"


class PermissionDeniedError(SandboxError):
    """The caller's uid may not do this (or may not use sandboxd at all)."""

    code = "permission_denied"


class CapacityError(SandboxError):
    """The daemon is busy or a per-user limit is reached; retry later."""

    code = "capacity"


class SandboxTimeoutError(SandboxError, builtins.TimeoutError):
    """A deadline passed: the daemon's (boot, queue) or this client's (no
    reply in time). Also a built-in ``TimeoutError``."""

    code = "timeout"


class VMBootFailedError(SandboxError):
    """The VM did not come up (after the daemon's own retry)."""

    code = "vm_boot_failed"


class GuestError(SandboxError):
    """The guest misbehaved."""

    code = "guest_error"


class CommunicationError(SandboxError, builtins.ConnectionError):
    """The daemon cannot be reached, closed the connection, or sent
    something unreadable. Also a built-in ``ConnectionError``."""

    code = "communication"


class SessionClosedError(SandboxError):
    """The session was closed (by its owner, its idle timeout, or its VM dying)."""

    code = "session_closed"


class NotFoundError(SandboxError):
    """No such session, file or directory (another uid's sessions do not exist for you)."""

    code = "not_found"


class PackageNotAllowedError(SandboxError):
    """A package the daemon's policy does not allow."""

    code = "package_not_allowed"


class PackageInstallFailedError(SandboxError):
    """Installing the requested packages failed; the message ends with the
    installer's last lines."""

    code = "package_install_failed"


class ImageMissingError(SandboxError):
    """A guest image is missing."""

    code = "image_missing"


class ImageCorruptError(SandboxError):
    """A guest image does not match its manifest."""

    code = "image_corrupt"


class InternalError(SandboxError):
    """A failure inside sandboxd."""

    code = "internal"


ERROR_CLASSES: Dict[str, Type[SandboxError]] = {
    cls.code: cls
    for cls in (
        InvalidArgumentError,
        PermissionDeniedError,
        CapacityError,
        SandboxTimeoutError,
        VMBootFailedError,
        GuestError,
        CommunicationError,
        SessionClosedError,
        NotFoundError,
        PackageNotAllowedError,
        PackageInstallFailedError,
        ImageMissingError,
        ImageCorruptError,
        InternalError,
    )
}


def from_reply(code: str, message: str, *, code_may_run: bool) -> SandboxError:
    """The exception for a daemon's error reply. `code_may_run` says whether
    the request could have run code at all (runs and execs can)."""
    cls = ERROR_CLASSES.get(code, InternalError)
    safe = (not code_may_run) or code in NEVER_RAN
    return cls(message, retry_safe=safe)
