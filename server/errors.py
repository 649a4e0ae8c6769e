"""Domain errors of the server. Each names the gRPC status it becomes (servicers map it with
`grpc.StatusCode[error.status]`) and the process exit code the CLI returns for it."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

from facefleet.core.errors import (
    EXIT_CONFIG,
    EXIT_DATA,
    EXIT_FAILURE,
    EXIT_IO,
    EXIT_NO_INPUT,
    EXIT_USAGE,
    FaceFleetError,
)
from facefleet.link.errors import LinkError

__all__ = [
    "AlreadyExistsError",
    "DataLossError",
    "FailedPreconditionError",
    "InvalidArgumentError",
    "NotFoundError",
    "OutOfRangeError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "ServerConfigError",
    "ServerError",
    "StateError",
    "StateOutdatedError",
    "StateSchemaError",
    "UnauthenticatedError",
    "UsageError",
    "disk_full",
    "error_for_status",
    "is_disk_full",
]


EXIT_NO_PERMISSION = 77
"""EX_NOPERM: a token the server does not know, or of a role that may not do this."""


class UsageError(FaceFleetError):
    """A command-line option the command cannot use (exit 2, as argparse's own usage errors); never a
    gRPC status."""

    exit_code = EXIT_USAGE


class ServerError(FaceFleetError):
    """Base class: a message naming the thing and the fix, a gRPC status name and an exit code."""

    status = "INTERNAL"
    exit_code = EXIT_FAILURE


class InvalidArgumentError(ServerError, LinkError):
    """A request field is malformed, too large, or inconsistent (the caller must change the request)."""

    status = "INVALID_ARGUMENT"
    exit_code = EXIT_DATA


class NotFoundError(ServerError):
    status = "NOT_FOUND"
    exit_code = EXIT_NO_INPUT


class AlreadyExistsError(ServerError):
    status = "ALREADY_EXISTS"
    exit_code = EXIT_DATA


class FailedPreconditionError(ServerError):
    """The request is valid but the system is not in a state to serve it (e.g. an unregistered device)."""

    status = "FAILED_PRECONDITION"
    exit_code = EXIT_DATA


class OutOfRangeError(ServerError):
    """A position past the end of something (e.g. a download offset beyond the file)."""

    status = "OUT_OF_RANGE"
    exit_code = EXIT_DATA


class ResourceExhaustedError(ServerError):
    """A request larger than a configured limit (e.g. a model upload), or no disk space left for it."""

    status = "RESOURCE_EXHAUSTED"
    exit_code = EXIT_DATA


def is_disk_full(exc: OSError) -> bool:
    """Whether a failed write found no space (or no quota) left on its filesystem."""
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)


def disk_full(what: str, path: Path) -> ResourceExhaustedError:
    """The error for a write to `path` that found its disk full: names the file, the free space left on its
    filesystem and the fix. what: e.g. "state database" or "model upload"."""
    try:
        free = f"{_size(shutil.disk_usage(path if path.is_dir() else path.parent).free)} free"
    except OSError:
        free = "free space unknown"
    return ResourceExhaustedError(
        f"{what} {path}: the disk is full ({free} there); free space on the disk holding {path} and retry "
        "- nothing was stored"
    )


def _size(n_bytes: int) -> str:
    """A byte count for people: "0 B", "12 KiB", "3.4 GiB"."""
    size, unit = float(n_bytes), "B"
    for bigger in ("KiB", "MiB", "GiB"):
        if size < 1024:
            break
        size, unit = size / 1024, bigger
    return f"{size:.0f} {unit}" if unit == "B" or size >= 10 else f"{size:.1f} {unit}"


class DataLossError(ServerError):
    """Stored data fails its own check (e.g. a model file whose sha256 no longer matches the catalogue)."""

    status = "DATA_LOSS"
    exit_code = EXIT_IO


class UnauthenticatedError(ServerError):
    """No credentials, or credentials the server does not know (a wrong or revoked token)."""

    status = "UNAUTHENTICATED"
    exit_code = EXIT_NO_PERMISSION


class PermissionDeniedError(ServerError):
    """Known credentials that may not do this (another device's identity, a token of another role)."""

    status = "PERMISSION_DENIED"
    exit_code = EXIT_NO_PERMISSION


class UnavailableError(ServerError):
    """The server cannot do this now and a retry later will do (e.g. another model is being converted)."""

    status = "UNAVAILABLE"
    exit_code = EXIT_IO


class StateError(ServerError):
    """The state database cannot be opened, migrated or written."""

    status = "UNAVAILABLE"
    exit_code = EXIT_IO


class StateSchemaError(StateError):
    """The state database's schema is not this server's (a newer server's, another program's): exit 65,
    which systemd does not restart on, since only upgrading this host helps."""

    status = "FAILED_PRECONDITION"
    exit_code = EXIT_DATA


class StateOutdatedError(StateSchemaError):
    """The state database is older than this server, and this command does not upgrade it (only `serve`
    does, at start): nothing was written."""


class ServerConfigError(ServerError):
    """A server configuration file or value, or a TLS file it names, is unusable."""

    status = "FAILED_PRECONDITION"
    exit_code = EXIT_CONFIG


def error_for_status(status: str) -> type[ServerError]:
    """The domain error that a gRPC status name stands for (the first class naming it), ServerError for a
    status none names: a refusal that came back over the wire, raised again as the same error."""
    for cls in ServerError.__subclasses__():
        if cls.status == status:
            return cls
    return ServerError
