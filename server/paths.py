"""Where the server keeps its state: the database, the model store and the TLS files. `models` is
[models] dir when set (a folder every replica shares)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from facefleet.core.config import check_private
from facefleet.core.files import read_small
from facefleet.core.paths import model_store_dir
from facefleet.server.config import ServerConfig
from facefleet.server.errors import ServerConfigError


@dataclass(frozen=True)
class ServerPaths:
    """The files under one state directory (TLS paths may be overridden by the config)."""

    state_dir: Path
    models: Path
    ca_cert: Path
    server_cert: Path
    server_key: Path

    @classmethod
    def from_config(cls, state_dir: Path, config: ServerConfig) -> ServerPaths:
        tls = state_dir / "tls"
        return cls(
            state_dir=state_dir,
            models=config.models.dir or model_store_dir(state_dir),
            ca_cert=config.tls.ca_cert or tls / "ca.pem",
            server_cert=config.tls.server_cert or tls / "server.pem",
            server_key=config.tls.server_key or tls / "server.key",
        )

    @property
    def database(self) -> Path:
        return self.state_dir / "server.db"

    @property
    def uploads(self) -> Path:
        """Model uploads in progress (PublishModel), one temporary directory each."""
        return self.state_dir / "uploads"

    @property
    def tls_dir(self) -> Path:
        return self.state_dir / "tls"

    @property
    def ca_key(self) -> Path:
        return self.tls_dir / "ca.key"

    @property
    def devices_dir(self) -> Path:
        return self.tls_dir / "devices"


TLS_FILES = {"ca_cert": "CA certificate", "server_cert": "server certificate", "server_key": "server key"}
"""The server's TLS files: the ServerPaths attribute and [tls] key → what it is."""


MAX_PEM_BYTES = 1 << 20
"""Largest PEM file (the CA, the server's chain, its key) read."""


def read_pem(path: Path, key: str) -> bytes:
    """The PEM file of one of TLS_FILES (by key); ServerConfigError says what is wrong and the fix."""
    what = f"{TLS_FILES[key]} (tls.{key})"
    try:
        data = read_small(path, MAX_PEM_BYTES)
    except FileNotFoundError:
        raise ServerConfigError(
            f"{what} {path} does not exist; create the site CA and server certificate with "
            "`facefleet-server certs init`, or set the path in [tls]"
        ) from None
    except OSError as exc:
        raise ServerConfigError(f"{what} {path}: cannot read ({exc.strerror})") from None
    if b"-----BEGIN" not in data:
        raise ServerConfigError(f"{what} {path} is not a PEM file")
    if key == "server_key":
        check_private(f"tls.{key}", path, ServerConfigError)
    return data
