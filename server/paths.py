"""Where the server keeps its state: the database, the model store and the TLS files."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from server.config import ServerConfig

SERVICE_STATE_DIR = Path("/var/lib/facefleet-server")


def resolve_state_dir(cli_value: Path | None, config_value: Path | None) -> Path:
    """--state-dir, then the config's state_dir, then $FACEFLEET_STATE_DIR, then systemd's
    $STATE_DIRECTORY or /var/lib/facefleet-server under systemd, else ~/.local/share/facefleet-server."""
    for candidate in (cli_value, config_value):
        if candidate is not None:
            return candidate.expanduser()
    if os.environ.get("FACEFLEET_STATE_DIR"):
        return Path(os.environ["FACEFLEET_STATE_DIR"]).expanduser()
    if os.environ.get("STATE_DIRECTORY"):
        return Path(os.environ["STATE_DIRECTORY"].split(":")[0])
    if os.environ.get("INVOCATION_ID"):
        return SERVICE_STATE_DIR
    return Path.home() / ".local" / "share" / "facefleet-server"


@dataclass(frozen=True)
class ServerPaths:
    """The files under one state directory (TLS paths may be overridden by the config)."""

    state_dir: Path
    ca_cert: Path
    server_cert: Path
    server_key: Path

    @classmethod
    def from_config(cls, state_dir: Path, config: ServerConfig) -> ServerPaths:
        tls = state_dir / "tls"
        return cls(
            state_dir=state_dir,
            ca_cert=config.tls.ca_cert or tls / "ca.pem",
            server_cert=config.tls.server_cert or tls / "server.pem",
            server_key=config.tls.server_key or tls / "server.key",
        )

    @property
    def database(self) -> Path:
        return self.state_dir / "server.db"

    @property
    def models(self) -> Path:
        return self.state_dir / "models"

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
