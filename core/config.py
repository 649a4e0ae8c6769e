"""The strict configuration base both programs use: sections that reject unknown keys, TOML files read
with a size limit and errors naming each offending key, host:port addresses, and secrets from files or
systemd credentials."""

from __future__ import annotations

import grp
import os
import pwd
import stat
import sys
from pathlib import Path
from typing import Annotated, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

from facefleet.core.errors import EXIT_IO, ConfigError, FaceFleetError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

MAX_CONFIG_BYTES = 1 << 20
Model = TypeVar("Model", bound=BaseModel)


class StrictSection(BaseModel):
    """A config section: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def load_toml_model(path: Path | None, model: type[Model], error: type[FaceFleetError]) -> Model:
    """Read a TOML file (at most MAX_CONFIG_BYTES) into a strict pydantic model; problems raise `error`
    naming the file and each offending key. None gives the model's defaults."""
    if path is None:
        return model()
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_CONFIG_BYTES + 1)  # a device such as /dev/zero never ends
    except FileNotFoundError:
        raise error(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise error(f"config file {path} is a directory; give the path of the TOML file") from None
    except OSError as exc:
        raise error(f"config file {path}: cannot read ({exc.strerror})") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise error(f"config file {path} is larger than {MAX_CONFIG_BYTES // 1024} KiB")
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise error(f"config file {path} is not valid TOML: {exc}") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise error(f"config file {path}: " + "; ".join(_describe(e) for e in exc.errors())) from None


def _describe(error: object) -> str:
    """One validation problem: the key and what is wrong with it; a rule across keys by its message alone,
    without the values of the whole file (no key) or section."""
    assert isinstance(error, dict)
    key = ".".join(str(part) for part in error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        return f"unknown key '{key}'"
    if not key:
        return message
    if isinstance(error.get("input"), dict):  # a rule across a section's keys: its message names them
        return f"'{key}': {message}"
    return f"'{key}': {message} (got {error.get('input')!r})"


def parse_address(address: str, *, listening: bool = False) -> tuple[str, int]:
    """'host:port' (host may be a bracketed IPv6 address) → (host, port). listening: an address to listen
    on, where port 0 lets the system pick a free port. ValueError names the rule."""
    host, sep, port = address.rpartition(":")
    valid_port = port.isdigit() and (0 if listening else 1) <= int(port) <= 65535
    if not sep or not host or not valid_port or any(c.isspace() for c in host):
        example = "'[::]:7443' or '127.0.0.1:9108'" if listening else "'fleet.example:7443'"
        raise ValueError(f"address {address!r} must look like 'host:port', e.g. {example}")
    return host.strip("[]"), int(port)


def check_listen(address: str) -> str:
    """A config validator: '' (off) or an address to listen on."""
    if address:
        parse_address(address, listening=True)
    return address


def _absolute(path: Path) -> Path:
    """A config validator: an absolute path ('~' expanded); a relative one would be read from the working
    directory, which is / under systemd, so `check-config` by hand and the unit would disagree."""
    expanded = path.expanduser()
    if not expanded.is_absolute():
        raise ValueError(
            f"{str(path)!r} is a relative path, which would be read from the working directory (/ under "
            f"systemd): give an absolute path, e.g. '/etc/facefleet/{path}'"
        )
    return expanded


def _credential(path: Path) -> Path:
    """A config validator: a bare file name (a systemd credential) or an absolute path."""
    if len(path.parts) == 1 and not path.name.startswith((".", "~")):
        return path
    try:
        return _absolute(path)
    except ValueError as exc:
        raise ValueError(
            f"{exc}, or a bare file name to read from $CREDENTIALS_DIRECTORY (LoadCredential= in the unit)"
        ) from None


AbsolutePath = Annotated[Path, AfterValidator(_absolute)]
"""A path in a config file: absolute ('~' expanded), never relative to the working directory."""
CredentialPath = Annotated[Path, AfterValidator(_credential)]
"""A secret file in a config file: a bare name, read from $CREDENTIALS_DIRECTORY, or an absolute path."""


def credential_path(path: Path) -> Path:
    """A secret file's path; a bare file name is looked up in systemd's $CREDENTIALS_DIRECTORY."""
    if len(path.parts) == 1 and os.environ.get("CREDENTIALS_DIRECTORY"):
        return Path(os.environ["CREDENTIALS_DIRECTORY"]) / path
    return path


def check_private(key: str, path: Path, error: type[FaceFleetError] = ConfigError) -> None:
    """A secret file (a private key, a password) must not be open to other users: no access for others and
    no group write (group read stays allowed, for a root-owned file in the service's group). Files in
    $CREDENTIALS_DIRECTORY are systemd's own copies and not checked. `error` names the key, mode and fix."""
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    if credentials and path.parent == Path(credentials):
        return
    try:
        info = path.stat()
    except OSError:
        return  # reading it reports the problem
    mode = stat.S_IMODE(info.st_mode)
    if mode & (stat.S_IRWXO | stat.S_IWGRP):
        raise error(
            f"{key} {path}: mode {mode:04o} lets other users read or change this secret; "
            f"`chmod 600 {path}` (or 640 with the service's group owning it), or hand it over with "
            "LoadCredential="
        )
    readers = group_users(info.st_gid) if mode & stat.S_IRGRP else []
    if len(readers) > 1:
        shown = ", ".join(readers[:5]) + (", …" if len(readers) > 5 else "")
        raise error(
            f"{key} {path}: mode {mode:04o} lets the {len(readers)} users of its group ({shown}) read this "
            f"secret; `chmod 600 {path}`, or give it to a group of the service's user alone (640), or hand "
            "it over with LoadCredential="
        )


def group_users(gid: int) -> list[str]:
    """The users other than root in group `gid`: its members, and those whose primary group it is; sorted."""
    try:
        members = set(grp.getgrgid(gid).gr_mem)
    except KeyError:
        members = set()
    members |= {user.pw_name for user in pwd.getpwall() if user.pw_gid == gid}
    return sorted(members - {"root"})


class UnwritableError(FaceFleetError):
    """A directory a long-running program writes cannot be created or written."""

    exit_code = EXIT_IO


def check_writable(key: str, directory: Path) -> Path:
    """A directory `run` or `serve` writes (made if missing) that this user can write; UnwritableError names
    the key and the fixes otherwise, at start rather than at the first write. Under systemd's
    ProtectSystem=strict everything outside StateDirectory= is read-only unless the unit lists it in
    ReadWritePaths=."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        problem = None if os.access(directory, os.W_OK) else "not writable"
    except OSError as exc:
        problem = f"cannot create {exc.filename or directory} ({exc.strerror})"
    if problem is not None:
        raise UnwritableError(
            f"{key} {directory}: {problem}; make it writable for this user, and under systemd list it in the "
            f"unit (`systemctl edit`: ReadWritePaths={directory}) when it is outside StateDirectory="
        )
    return directory


def secret(path: Path | None) -> str | None:
    """A secret's text from a file; a bare file name is looked up in systemd's $CREDENTIALS_DIRECTORY."""
    if path is None:
        return None
    path = credential_path(path)
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"secret file {path}: cannot read ({exc.strerror})") from None
