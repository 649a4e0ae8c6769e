"""Server configuration: one TOML file validated strictly (an unknown key or a bad value is an error naming
the key). Every setting has a default and a description; `facefleet-server check-config FILE` checks one.
See systemd/server.example.toml for a commented example."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from facefleet.core.config import AbsolutePath, StrictSection, check_listen, load_toml_model, parse_address
from facefleet.core.logs import LogFormat
from facefleet.core.metrics import MetricsSection
from facefleet.server.errors import ServerConfigError
from facefleet.vision.config import ConversionConfig, DetectorConfig, QualityConfig, RuntimeConfig


class ListenConfig(StrictSection):
    """[listen] Where the server accepts connections and how large a message may be."""

    agents: str = Field(
        "[::]:7443",
        description="host:port for agents (FleetService): TLS with a required client certificate; '' = off",
    )
    operators: str = Field(
        "[::]:7444",
        description="host:port for operators, dashboards (Admin/QueryService): TLS + bearer token; '' = off",
    )
    http: str = Field(
        "[::]:7445",
        description="host:port of the HTTP/JSON API and web console: TLS (the server certificate) + bearer "
        "token; '' = off",
    )
    max_message_bytes: int = Field(
        16 * 1024 * 1024,
        ge=64 * 1024,
        le=256 * 1024 * 1024,
        description="Largest request or response message; bigger requests fail with RESOURCE_EXHAUSTED",
    )
    grace_seconds: float = Field(
        10.0,
        ge=0,
        le=300,
        description="On SIGTERM, time given to running calls (HTTP and gRPC at once); above 20 s raise the "
        "unit's TimeoutStopSec= (30 s) to grace_seconds + 10 s",
    )
    max_concurrent_streams: int = Field(
        1000, ge=1, le=100_000, description="Largest number of calls in flight on one connection"
    )
    handshake_timeout_seconds: float = Field(
        10.0,
        ge=0.1,
        le=300,
        description="A connection to any listener that has not completed its TLS handshake (gRPC: and its "
        "HTTP/2 preface) this long after it was accepted is closed",
    )
    http_header_timeout_seconds: float = Field(
        10.0,
        ge=0.1,
        le=300,
        description="An HTTP connection that has not sent a request's complete headers this long after its "
        "handshake, or after its previous response, is closed",
    )
    http_body_timeout_seconds: float = Field(
        10.0,
        ge=0.1,
        le=300,
        description="An HTTP connection whose request body stalls this long while the server waits for it is "
        "closed; so is one whose body that needs no token (the console's sign-in), or the rest of a refused "
        "request's body, is not all in within this time",
    )
    http_max_connections: int = Field(
        1000,
        ge=1,
        le=100_000,
        description="Most HTTP connections at once, handshakes in progress included; one more is closed at "
        "once",
    )
    http_max_connections_per_client: int = Field(
        100,
        ge=1,
        le=100_000,
        description="Most HTTP connections at once from one address (an IPv6 /64); one more is closed at "
        "once. Behind a TCP load balancer every connection comes from its address: make this "
        "http_max_connections",
    )

    @field_validator("agents", "operators", "http")
    @classmethod
    def _address(cls, address: str) -> str:
        return check_listen(address)

    @model_validator(mode="after")
    def _per_client_within_all(self) -> ListenConfig:
        if self.http_max_connections_per_client > self.http_max_connections:
            raise ValueError(
                f"[listen] http_max_connections_per_client ({self.http_max_connections_per_client}) must not "
                f"exceed http_max_connections ({self.http_max_connections})"
            )
        return self


class TlsConfig(StrictSection):
    """[tls] PEM files; unset = those `facefleet-server certs init` made in <state_dir>/tls."""

    ca_cert: AbsolutePath | None = Field(None, description="CA that signs device (client) certificates")
    server_cert: AbsolutePath | None = Field(None, description="The server's certificate chain")
    server_key: AbsolutePath | None = Field(None, description="The server's private key")


class GalleryConfig(StrictSection):
    """[gallery] Enrolled people and how their changes reach the agents."""

    retain_crops: bool = Field(
        True, description="Keep each enrolled face's aligned 112×112 crop so a future model can re-embed it"
    )
    crop_format: Literal["png", "jpeg"] = Field("png", description="Encoding of retained crops")
    log_revisions: int = Field(
        1000,
        ge=1,
        le=10_000_000,
        description="Revisions kept in the change log; an agent further behind receives a full snapshot",
    )
    heartbeat_seconds: int = Field(30, ge=1, le=3600, description="Heartbeat interval on idle Watch streams")
    embedding_models: tuple[str, ...] = Field(
        (), description="Models ('name@version') enrolment embeds with; empty = the active embedding model"
    )
    max_image_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, le=256 * 1024 * 1024, description="Largest enrolment image file"
    )
    max_image_pixels: int = Field(
        40_000_000, ge=10_000, le=400_000_000, description="Largest enrolment image (width × height)"
    )


class FleetConfig(StrictSection):
    """[fleet] Agents and their reports."""

    max_report_events: int = Field(10_000, ge=1, le=100_000, description="Most events in one ReportResults")
    online_window_seconds: int = Field(
        120, ge=1, le=86400, description="An agent seen this recently counts as online"
    )
    poll_seconds: float = Field(
        1.0,
        ge=0.05,
        le=60,
        description="How often the server looks for gallery, model, rollout and device changes made by "
        "another process on the same state (e.g. `facefleet-server rollout start`, another replica); on "
        "PostgreSQL notifications bring them at once, and this look catches any a notification did not bring",
    )
    max_event_age_days: int = Field(
        365,
        ge=1,
        le=3650,
        description="Reported events older than this are refused (per event, with the reason)",
    )
    max_event_ahead_seconds: int = Field(
        86400,
        ge=60,
        le=7 * 86400,
        description="Reported events dated further ahead of the server's clock are refused",
    )
    watch_max_age_seconds: int = Field(
        3600,
        ge=0,
        le=7 * 86400,
        description="A Watch stream ends after 85–100 % of this and the agent reconnects at once, so a TCP "
        "load balancer in front of several replicas can rebalance (0 = streams last as long as the server)",
    )


class StateConfig(StrictSection):
    """[state] The database the server keeps its state in."""

    url: str = Field(
        "",
        description="'' = the embedded SQLite database <state_dir>/server.db; 'sqlite:///ABSOLUTE/PATH.db'; "
        "or 'postgresql://USER@HOST:PORT/DBNAME' (password from ~/.pgpass or PGPASSWORD, TLS by sslmode=…) "
        "for a fleet beyond one machine and several server replicas on one database",
    )
    pool_size: int = Field(10, ge=1, le=500, description="PostgreSQL connections per server process")

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, url: str) -> str:
        if url and not url.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError(
                "must be '' (the state directory's SQLite file), 'sqlite:///ABSOLUTE/PATH.db' or "
                "'postgresql://USER@HOST:PORT/DBNAME'"
            )
        return url


class ModelsConfig(ConversionConfig):
    """[models] Model versions operators publish through AdminService.PublishModel."""

    dir: AbsolutePath | None = Field(
        None,
        description="The model store; unset = <state_dir>/models. With several replicas on one PostgreSQL "
        "database, a folder every replica shares (e.g. NFS): a model published through one is served by all",
    )

    max_upload_bytes: int = Field(
        512 * 1024 * 1024,
        ge=1024,
        le=16 * 1024 * 1024 * 1024,
        description="Largest PublishModel upload (all its files together); a bigger one fails with "
        "RESOURCE_EXHAUSTED and nothing is stored",
    )


class RetentionConfig(StrictSection):
    """[retention] How long the server keeps what agents report and what operators did; an hourly job deletes
    what expired (whole monthly partitions of events on PostgreSQL), on every replica. 0 keeps forever."""

    events_days: int = Field(
        365, ge=0, le=36500, description="Events (and their dashboard counts) older than this many days"
    )
    snapshots_days: int = Field(30, ge=0, le=36500, description="Face snapshots older than this many days")
    audit_days: int = Field(730, ge=0, le=36500, description="Admin audit entries older than this many days")


class SnapshotsConfig(StrictSection):
    """[snapshots] Face snapshots the agents report, and the review of unknown faces."""

    cluster_threshold: float = Field(
        0.363,
        ge=-1,
        le=1,
        description="Cosine similarity at which an unknown face joins a cluster (the agents' matching "
        "threshold)",
    )
    cluster_window_days: int = Field(
        30, ge=1, le=3650, description="Unknown faces of this many days back are clustered for review"
    )


class TokensConfig(StrictSection):
    """[tokens] Operator bearer tokens (stored as salted sha256 digests in the state database)."""

    cache_seconds: float = Field(
        10.0,
        ge=0,
        le=3600,
        description="The token table is read again after this long (a revocation waits for it); an unknown "
        "token id reads it at most once a second",
    )


class ConsoleConfig(StrictSection):
    """[console] The web console at /console/ on the HTTP API's address: sign-in with an operator token
    starts a session kept in the server's memory (a restart signs everyone out)."""

    enabled: bool = Field(True, description="Serve the web console (the HTTP API stays on when false)")
    session_idle_minutes: int = Field(
        60, ge=1, le=24 * 60, description="A session unused this long ends; the next request must sign in"
    )
    session_max_hours: int = Field(
        12, ge=1, le=24 * 30, description="A session ends this long after sign-in, used or not"
    )
    max_sessions: int = Field(
        1000,
        ge=1,
        le=100_000,
        description="Most sessions at once; a sign-in past it ends that token's own oldest, or is refused "
        "(503) when all are other tokens'",
    )
    max_sessions_per_token: int = Field(
        20,
        ge=1,
        le=1000,
        description="Most sessions of one operator token; signing in past it ends that token's oldest "
        "(never another token's)",
    )
    sign_ins_per_minute: int = Field(
        10, ge=1, le=1000, description="Most sign-ins of one token in a minute; more are refused with 429"
    )

    @model_validator(mode="after")
    def _per_token_within_all(self) -> ConsoleConfig:
        if self.max_sessions_per_token > self.max_sessions:
            raise ValueError(
                f"[console] max_sessions_per_token ({self.max_sessions_per_token}) must not exceed "
                f"max_sessions ({self.max_sessions})"
            )
        return self


class MetricsConfig(MetricsSection):
    """[metrics] The server's Prometheus endpoint."""

    listen: str = Field(
        "127.0.0.1:9109", description="host:port of the Prometheus endpoint (port 0 = any free one); '' = off"
    )


class ServerConfig(StrictSection):
    """The whole server configuration file."""

    state_dir: AbsolutePath | None = Field(None, description="Database, models and TLS files; see the README")
    insecure_development: bool = Field(
        False,
        description="Plaintext listeners and device ids taken from requests: for development only",
    )
    log_format: LogFormat = Field(
        "text", description="Log lines of `serve`: 'text', or 'json' (one object per line)"
    )
    listen: ListenConfig = Field(default_factory=ListenConfig)
    tls: TlsConfig = Field(default_factory=TlsConfig)
    gallery: GalleryConfig = Field(default_factory=GalleryConfig)
    fleet: FleetConfig = Field(default_factory=FleetConfig)
    state: StateConfig = Field(default_factory=StateConfig)
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    tokens: TokensConfig = Field(default_factory=TokensConfig)
    console: ConsoleConfig = Field(default_factory=ConsoleConfig)
    snapshots: SnapshotsConfig = Field(default_factory=SnapshotsConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    detector: DetectorConfig = Field(default_factory=DetectorConfig)
    quality: QualityConfig = Field(default_factory=QualityConfig)

    @model_validator(mode="after")
    def _insecure_only_on_loopback(self) -> ServerConfig:
        """Plaintext listeners that take device ids from requests stay on this machine."""
        if self.insecure_development:
            for key in ("agents", "operators", "http"):
                address = getattr(self.listen, key)
                if address and not is_loopback(parse_address(address, listening=True)[0]):
                    raise ValueError(
                        f"insecure_development = true serves plaintext and takes device ids from requests, "
                        f"so listen.{key} must be a loopback address such as '127.0.0.1:0', not {address!r}"
                    )
        return self


def is_loopback(host: str) -> bool:
    """Whether a listening host name or address reaches only this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_config(path: Path | None) -> ServerConfig:
    """Read and validate a server config file; None gives the defaults."""
    return load_toml_model(path, ServerConfig, ServerConfigError)
