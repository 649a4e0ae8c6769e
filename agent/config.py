"""Agent configuration: one TOML file validated strictly (an unknown key or a bad value is an error naming
the key). Every setting has a default and a description; `facefleet-agent check-config FILE` checks one."""

from __future__ import annotations

import ipaddress
import json
import re
import socket
import ssl
import stat
import sys
import time
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from facefleet.agent.publish.certificates import date_problem, read_validity
from facefleet.agent.recognition.doors import (
    DOOR_DEFAULT_THRESHOLD,
    DOOR_THRESHOLDS,
    DoorThreshold,
    door_threshold,
    parse_window,
)
from facefleet.agent.recognition.liveness import LivenessMode
from facefleet.agent.recognition.matching import DecisionPolicy
from facefleet.core.config import (
    AbsolutePath,
    CredentialPath,
    StrictSection,
    check_private,
    credential_path,
    load_toml_model,
    parse_address,
)
from facefleet.core.errors import ConfigError
from facefleet.core.files import read_small, replace_atomic
from facefleet.core.logs import LogFormat
from facefleet.core.metrics import MetricsSection
from facefleet.link.checks import check_groups, check_id, check_model_id
from facefleet.link.errors import LinkError
from facefleet.vision.config import ConversionConfig, DetectorConfig, QualityConfig, RuntimeConfig
from facefleet.vision.images.reading import MAX_FILE_BYTES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class MatchingConfig(StrictSection):
    """[matching] When a face is a known person."""

    thresholds: dict[str, float] = Field(
        default_factory=dict,
        description="Cosine threshold per embedding model id, e.g. 'sface@2021dec' = 0.363",
    )
    default_threshold: float = Field(0.363, ge=-1, le=1, description="Threshold for models not listed")
    door_thresholds: dict[str, float] = Field(
        default_factory=dict,
        description="Door threshold per embedding model id, e.g. 'sface@2021dec' = 0.5; unlisted models use "
        "the built-in one measured for them (sface@2021dec 0.50, sface@2021dec-int8 0.51)",
    )
    door_default_threshold: float = Field(
        DOOR_DEFAULT_THRESHOLD,
        ge=-1,
        le=1,
        description="Door threshold for models neither listed in door_thresholds nor measured",
    )
    ambiguity_margin: float = Field(
        0.05, ge=0, lt=2, description="Best and second-best person closer than this: ambiguous, nobody named"
    )
    min_quality: float = Field(0.3, ge=0, le=1, description="Faces below this quality are not decided on")
    scoring: Literal["best", "template"] = Field(
        "best", description="Person score: best sample, or the mean of their samples"
    )

    @field_validator("thresholds", "door_thresholds")
    @classmethod
    def _cosines_per_model(cls, thresholds: dict[str, float]) -> dict[str, float]:
        for model_id, value in thresholds.items():
            try:
                check_model_id(model_id)
            except LinkError as exc:
                raise ValueError(f"{exc}; the keys are embedding model ids such as 'sface@2021dec'") from None
            if not -1 <= value <= 1:
                raise ValueError(f"{model_id} = {value}: a threshold is a cosine between -1 and 1")
        return thresholds

    def policy(self) -> DecisionPolicy:
        return DecisionPolicy(
            thresholds=self.thresholds,
            default_threshold=self.default_threshold,
            ambiguity_margin=self.ambiguity_margin,
            min_quality=self.min_quality,
        )


class MqttConfig(StrictSection):
    """[mqtt] The broker events are published to."""

    enabled: bool = Field(True, description="Publish events over MQTT")
    host: str = Field("localhost", min_length=1, max_length=255, description="Broker host name or address")
    port: int = Field(1883, ge=1, le=65535, description="Broker port (8883 is usual for TLS)")
    prefix: str = Field("", max_length=128, description="Topic prefix; empty = 'facefleet/<device_id>/'")
    username: str | None = Field(None, description="User name, if the broker wants one")
    password_file: CredentialPath | None = Field(
        None, description="File holding the password; a bare name is looked up in $CREDENTIALS_DIRECTORY"
    )
    tls: bool = Field(False, description="Connect with TLS")
    ca_file: AbsolutePath | None = Field(None, description="CA certificate to trust (default: the system's)")
    cert_file: AbsolutePath | None = Field(None, description="Client certificate for brokers that want one")
    key_file: CredentialPath | None = Field(
        None, description="Client key; a bare name is looked up in $CREDENTIALS_DIRECTORY"
    )
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keep-alive (s)")
    reconnect_max_s: int = Field(60, ge=1, le=3600, description="Longest wait between reconnect attempts (s)")
    outbox_limit: int = Field(
        10_000, ge=10, le=10_000_000, description="Events kept while the broker is away"
    )
    discovery_prefix: str = Field("homeassistant", description="Home Assistant discovery prefix; empty = off")

    @field_validator("host")
    @classmethod
    def _host_name(cls, host: str) -> str:
        """A host name or address, not a URL or host:port (the port is its own key)."""
        bracketed = host.startswith("[") and host.endswith("]")
        bare = host[1:-1] if bracketed else host
        if (
            "://" in host
            or "/" in host
            or any(c.isspace() for c in host)
            or (":" in bare and not _is_ip_address(bare))
            or (bracketed and not _is_ip_address(bare))
        ):
            raise ValueError(
                f"{host!r} is not a host name or address: give the host alone, e.g. 'broker.example' "
                "(the port goes in mqtt.port, TLS in mqtt.tls)"
            )
        return bare  # an IPv6 address as the connection takes it: ::1, not [::1]

    @field_validator("prefix")
    @classmethod
    def _topic_prefix(cls, prefix: str) -> str:
        if prefix:
            check_topic(prefix, "a topic prefix such as 'site/door-1/'")
            if not prefix.endswith("/"):
                raise ValueError(f"{prefix!r} must end with '/', e.g. {prefix + '/'!r}")
        return prefix

    @field_validator("discovery_prefix")
    @classmethod
    def _discovery_prefix(cls, prefix: str) -> str:
        if prefix:
            check_topic(prefix, "a Home Assistant discovery prefix such as 'homeassistant'")
            if prefix.endswith("/"):
                raise ValueError(f"{prefix!r}: give the prefix without the trailing '/'")
        return prefix

    @model_validator(mode="after")
    def _tls_files_need_tls(self) -> MqttConfig:
        """TLS files with tls = false would be ignored, and the password sent in clear text."""
        if not self.tls:
            for key in ("ca_file", "cert_file", "key_file"):
                if getattr(self, key) is not None:
                    raise ValueError(
                        f"mqtt.{key} is set but mqtt.tls is false, so the connection would be plain TCP (the "
                        f"password in clear text): set tls = true or remove {key}"
                    )
        return self

    def password(self) -> str | None:
        """The password in password_file (a bare name: in $CREDENTIALS_DIRECTORY), if one is set."""
        if self.password_file is None:
            return None
        path = credential_path(self.password_file)
        text = _read("mqtt.password_file", path, "the broker password", MAX_SECRET_BYTES)
        check_private("mqtt.password_file", path)
        return text.decode("utf-8", "replace").strip()

    def tls_files(self) -> tuple[Path | None, Path | None, Path | None]:
        """(ca_file, cert_file, key_file) as the connection uses them, each checked: a readable PEM file of
        the right kind, the key the certificate's. All None when tls is off (the config then names none)."""
        if not self.tls:
            return None, None, None
        if self.key_file is not None and self.cert_file is None:
            raise ConfigError("mqtt.key_file is set but cert_file is not: give both for a client certificate")
        ca = cert = key = None
        if self.ca_file is not None:
            ca = _certificates("mqtt.ca_file", self.ca_file, "the CA certificate that signed the broker's")
        if self.cert_file is not None:
            cert = _certificates("mqtt.cert_file", self.cert_file, "this device's client certificate")
            key = credential_path(self.key_file) if self.key_file is not None else None
            _key_pair("mqtt", cert, key)
        return ca, cert, key


class CameraConfig(StrictSection):
    """[[cameras]] One frame source."""

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,32}$", description="Camera name, used in topics and events")
    source: str = Field(
        min_length=1, description="V4L2 index, /dev/videoN, rtsp:// or http(s):// URL, file, folder"
    )
    max_fps: float = Field(
        0.0, ge=0, le=240, description="Frames per second to read at most; 0 = source rate"
    )
    loop: bool = Field(False, description="Restart a video file or folder at its end")
    timeout_s: float = Field(5.0, gt=0, le=120, description="Open/read timeout of a stream (s)")

    @field_validator("source")
    @classmethod
    def _absolute_source(cls, source: str) -> str:
        """A file, folder or device by its absolute path (~ expanded); a V4L2 index or a URL as it is."""
        if source.isdigit() or "://" in source:
            return source
        path = Path(source).expanduser()
        if not path.is_absolute():
            raise ValueError(
                f"{source!r} is a relative path, which would be read from the working directory (/ under "
                "systemd): give its absolute path, a V4L2 index such as 0, or a stream URL"
            )
        return str(path)


class DoorConfig(StrictSection):
    """[[doors]] A door opened for recognised people."""

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,32}$", description="Door name, used in topics and events")
    camera: str = Field(description="The camera watching this door")
    allow_people: list[str] = Field(default_factory=list, description="Person ids who may enter")
    allow_groups: list[str] = Field(default_factory=list, description="Groups whose members may enter")
    min_frames: int = Field(3, ge=1, le=100, description="Good frames of the track needed before a decision")
    evidence_frames: int = Field(
        5,
        ge=1,
        le=100,
        description="The latest good frames of the track whose scores are averaged for a decision "
        "(at least min_frames)",
    )
    threshold: float | None = Field(
        None,
        ge=-1,
        le=1,
        description="Match threshold of this door for every model; empty = [matching] door_thresholds, "
        "else the built-in one for the model",
    )
    schedule: list[str] = Field(
        default_factory=list, description="Open hours as 'HH:MM-HH:MM' (local time); empty = always"
    )
    relay_topic: str = Field(
        "", description="MQTT topic (under the prefix) told 'open' on a grant; empty = none"
    )
    relay_expiry_s: int = Field(
        5,
        ge=1,
        le=300,
        description="An 'open' not delivered within this many seconds is dropped (never opens the door "
        "later); it is sent at once, never queued",
    )
    command: list[str] = Field(default_factory=list, description="Program run on a grant, e.g. gpioset …")
    command_timeout_s: float = Field(5.0, gt=0, le=60, description="Longest the command may run (s)")
    claim_timeout_s: float = Field(
        10.0, gt=0, le=300, description="How long a badge claim waits for a face (s)"
    )
    liveness: LivenessMode = Field(
        "off",
        description="Proof of a live face before a grant, against photos held up to the camera: off, "
        "blink (the person blinks) or blink_turn (blinks and turns the head); needs the face-mesh model",
    )
    liveness_timeout_s: float = Field(
        5.0, gt=0, le=60, description="How long a recognised person has to give the proof before a denial (s)"
    )
    liveness_turn_deg: float = Field(
        15.0, ge=5, le=60, description="Head yaw change that blink_turn asks for (degrees)"
    )

    @field_validator("allow_people")
    @classmethod
    def _person_ids(cls, people: list[str]) -> list[str]:
        for person in people:
            try:
                check_id("person id", person)
            except LinkError as exc:
                raise ValueError(f"{exc} (the id given at enrolment)") from None
        return people

    @field_validator("allow_groups")
    @classmethod
    def _groups(cls, groups: list[str]) -> list[str]:
        try:
            check_groups(tuple(groups))
        except LinkError as exc:
            raise ValueError(f"{exc} (a group given at enrolment)") from None
        return groups

    @field_validator("command")
    @classmethod
    def _program(cls, command: list[str]) -> list[str]:
        """A program by absolute path or by bare name (looked up in $PATH), never relative to the working
        directory (/ under systemd)."""
        if command:
            program = command[0]
            if not program.strip() or (("/" in program) and not program.startswith("/")):
                raise ValueError(
                    f"the program {program!r} must be an absolute path or a name found in $PATH, e.g. "
                    '["gpioset", "gpiochip0", "17=1"] or ["/usr/local/bin/open-door"]'
                )
        return command

    @field_validator("relay_topic")
    @classmethod
    def _relay_topic(cls, topic: str) -> str:
        if topic:
            check_topic(topic, "a topic under the MQTT prefix such as 'relay/front'")
        return topic


class FleetServerConfig(StrictSection):
    """[server] The central FaceFleet server: the gallery comes from it, events are reported to it."""

    enabled: bool = Field(False, description="Sync the gallery from the server and report events to it")
    address: str = Field(
        "", max_length=300, description="host:port of the server's agent listener, e.g. 'fleet.example:7443'"
    )
    server_name: str = Field(
        "", max_length=255, description="Name the server certificate must carry; empty = the host of address"
    )
    ca_file: AbsolutePath | None = Field(
        None, description="Site CA certificate (PEM) that signed the server's"
    )
    cert_file: AbsolutePath | None = Field(
        None, description="This device's certificate (PEM), from `facefleet-server certs issue DEVICE`"
    )
    key_file: CredentialPath | None = Field(
        None, description="This device's key (PEM); a bare name is looked up in $CREDENTIALS_DIRECTORY"
    )
    report_batch: int = Field(
        500, ge=1, le=100_000, description="Most events in one report (the server's own limit also applies)"
    )
    queue_limit: int = Field(
        100_000, ge=10, le=10_000_000, description="Events kept for the server while it is away"
    )
    reconnect_max_s: int = Field(60, ge=1, le=3600, description="Longest wait between reconnect attempts (s)")
    keepalive_s: int = Field(
        30, ge=10, le=3600, description="gRPC keep-alive ping interval (s); the server refuses < 10 s"
    )
    groups: list[str] = Field(
        default_factory=list,
        max_length=32,
        description="Groups this agent belongs to, for model rollouts that target a group",
    )

    @field_validator("groups")
    @classmethod
    def _group_names(cls, groups: list[str]) -> list[str]:
        for group in groups:
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}", group):
                raise ValueError(f"group {group[:40]!r}: use 1–128 letters, digits, '.', '_', ':', '@', '-'")
        return groups

    def tls_files(self) -> tuple[Path, Path, Path]:
        """(ca_file, cert_file, key_file) as the connection uses them, each checked: a readable PEM file of
        the right kind, the key the certificate's."""
        if self.ca_file is None or self.cert_file is None or self.key_file is None:
            raise ConfigError("[server] is enabled: set ca_file, cert_file and key_file")
        ca = _certificates(
            "server.ca_file", self.ca_file, "the site CA certificate (tls/ca.pem on the server)"
        )
        cert = _certificates("server.cert_file", self.cert_file, f"this device's certificate {_ISSUED}")
        key = credential_path(self.key_file)
        _key_pair("server", cert, key)
        return ca, cert, key

    @model_validator(mode="after")
    def _complete_when_enabled(self) -> FleetServerConfig:
        if self.address:
            parse_address(self.address)
        if self.enabled:
            missing = [
                key
                for key, value in (
                    ("address", self.address),
                    ("ca_file", self.ca_file),
                    ("cert_file", self.cert_file),
                    ("key_file", self.key_file),
                )
                if not value
            ]
            if missing:
                raise ValueError(
                    f"[server] is enabled but {', '.join(missing)} not set: give the server's host:port and "
                    "the PEM files from `facefleet-server certs issue DEVICE`"
                )
        return self


class ModelsConfig(ConversionConfig):
    """[models] Model versions rolled out by the server, and the limits of `models import`."""

    accept_rollouts: bool = Field(
        True, description="Download, verify and switch to the model versions the server assigns"
    )
    keep_versions: int = Field(
        3,
        ge=2,
        le=50,
        description="Stored versions kept per task, the running and the previous one included",
    )
    smoke_photo: AbsolutePath | None = Field(
        None, description="Photo with one clear face for the smoke inference; empty = the bundled sample"
    )
    gallery_timeout_s: float = Field(
        300.0, ge=1, le=86400, description="Longest wait for the gallery of a new embedding model (s)"
    )


class SnapshotsConfig(StrictSection):
    """[snapshots] The best face of each track that ends: reported to the server with its face event, and
    optionally published as each camera's latest face crop."""

    report: Literal["unknown", "all", "none"] = Field(
        "unknown",
        description="Tracks whose best face goes to the server: 'unknown' (not recognised), 'all' or 'none'",
    )
    keep_days: int = Field(
        7, ge=1, le=365, description="Days a snapshot waits for the server before it is dropped"
    )
    max_pending_mb: int = Field(
        256,
        ge=1,
        le=100_000,
        description="Snapshots kept for the server while it is away (MiB); the oldest dropped",
    )
    context_px: int = Field(
        320, ge=0, le=320, description="Longest side of the view of the frame around the face (px); 0 = none"
    )
    jpeg_quality: int = Field(90, ge=30, le=100, description="JPEG quality of the aligned 112×112 face crop")
    context_jpeg_quality: int = Field(75, ge=30, le=100, description="JPEG quality of the context view")
    publish_latest: bool = Field(
        False,
        description="Publish each camera's latest face crop as a retained JPEG on cameras/<camera>/face",
    )
    latest_expiry_s: int = Field(
        600,
        ge=10,
        le=7 * 86400,
        description="How long the broker keeps a published face crop for later subscribers (s; MQTT 5 "
        "message expiry), so a face does not stay there once nobody is in view",
    )

    @field_validator("context_px")
    @classmethod
    def _context_size(cls, context_px: int) -> int:
        if 0 < context_px < 32:
            raise ValueError(
                f"context_px {context_px} is too small to show a face: use 32–320, or 0 for none"
            )
        return context_px


class AttributesConfig(StrictSection):
    """[attributes] Estimated gender and age of each face (the optional `attributes` model task): smoothed
    per track, in MQTT face events and the events reported to the server. Off by default; never used for
    an access decision."""

    enabled: bool = Field(
        False, description="Estimate gender and age of each face; needs the attributes model in the store"
    )


class ServiceConfig(StrictSection):
    """[service] The long-running agent."""

    audit_retention_days: int = Field(90, ge=1, le=3650, description="Access decisions kept in the audit log")
    status_interval_s: float = Field(30.0, ge=1, le=3600, description="How often the status is refreshed (s)")
    pipeline: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Analyse frames with inference in flight while the loop handles the previous ones: 'on', "
        "'off' (one frame at a time, the shortest latency), or 'auto': measure both on the frames seen "
        "(at start, after a model switch, every 10 minutes) and run the faster, 'off' on a tie",
    )


class MetricsConfig(MetricsSection):
    """[metrics] The agent's Prometheus endpoint."""

    listen: str = Field(
        "127.0.0.1:9108", description="host:port of the Prometheus endpoint (port 0 = any free one); '' = off"
    )


class AgentConfig(StrictSection):
    """The whole agent configuration file."""

    device_id: str = Field(
        "", description="This agent's id: letters, digits, '.', '_', ':', '@', '-'; empty = the host name"
    )
    state_dir: AbsolutePath | None = Field(
        None, description="Models, database and cache; see the README for the default"
    )
    log_format: LogFormat = Field(
        "text", description="Log lines of `run`: 'text', or 'json' (one object per line, with device_id)"
    )
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    detector: DetectorConfig = Field(default_factory=DetectorConfig)
    quality: QualityConfig = Field(default_factory=QualityConfig)
    matching: MatchingConfig = Field(default_factory=MatchingConfig)
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    service: ServiceConfig = Field(default_factory=ServiceConfig)
    server: FleetServerConfig = Field(default_factory=FleetServerConfig)
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    snapshots: SnapshotsConfig = Field(default_factory=SnapshotsConfig)
    attributes: AttributesConfig = Field(default_factory=AttributesConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    cameras: list[CameraConfig] = Field(default_factory=list, max_length=64)
    doors: list[DoorConfig] = Field(default_factory=list, max_length=64)

    @field_validator("device_id")
    @classmethod
    def _device_id_rule(cls, device_id: str) -> str:
        """The link's id rule, which the server applies too: '/', '#' and '+' would also break MQTT topics."""
        if device_id:
            try:
                check_id("device_id", device_id)
            except LinkError as exc:
                raise ValueError(str(exc)) from None
        return device_id

    def device(self) -> str:
        """This agent's id: device_id, or the host name when it is empty, which must then follow the id rule
        too (it names MQTT topics and the agent on the server); ConfigError otherwise."""
        if self.device_id:
            return self.device_id
        hostname = socket.gethostname()
        try:
            return check_id("device_id", hostname)
        except LinkError:
            raise ConfigError(
                f"device_id is empty and the host name {hostname!r} is not a valid id (1–128 letters, "
                "digits, '.', '_', ':', '@' or '-', starting with a letter or digit): set device_id"
            ) from None

    def check_files(self) -> None:
        """Check the device id and every file the enabled sections name, as `run` reads them, without
        connecting anywhere; ConfigError naming the key and the file otherwise."""
        self.device()
        if self.mqtt.enabled:
            self.mqtt.password()
            self.mqtt.tls_files()
        if self.server.enabled:
            self.server.tls_files()
        if self.models.smoke_photo is not None:
            _read(
                "models.smoke_photo", self.models.smoke_photo, "a photo with one clear face", MAX_FILE_BYTES
            )

    def client_certificates(self) -> dict[str, Path]:
        """This device's certificates of the enabled sections, by config key ('server.cert_file',
        'mqtt.cert_file')."""
        found: dict[str, Path] = {}
        if self.server.enabled and self.server.cert_file is not None:
            found["server.cert_file"] = self.server.cert_file
        if self.mqtt.enabled and self.mqtt.tls and self.mqtt.cert_file is not None:
            found["mqtt.cert_file"] = self.mqtt.cert_file
        return found

    def certificate_date_problems(self, now: float | None = None) -> dict[str, str]:
        """By config key, each client certificate that is expired, or not valid yet, at `now` (default: the
        wall clock): the file, its date and the fix. `run` warns of them and runs on (doors decide
        offline)."""
        now = time.time() if now is None else now
        problems = {}
        for key, path in self.client_certificates().items():
            validity = read_validity(path)
            problem = None if validity is None else date_problem(key, path, validity, now, self.device())
            if problem is not None:
                problems[key] = problem
        return problems

    def check_certificate_dates(self) -> None:
        """check-config: ConfigError for a client certificate that is expired or not valid yet."""
        problems = self.certificate_date_problems()
        if problems:
            raise ConfigError("; ".join(problems.values()))

    def door_threshold(self, door: DoorConfig, model_id: str) -> DoorThreshold:
        """The threshold `door` applies to faces of embedding model `model_id`, and where it comes from."""
        matching = self.matching
        return door_threshold(
            model_id, door.name, door.threshold, matching.door_thresholds, matching.door_default_threshold
        )

    def door_thresholds(self, door: DoorConfig) -> dict[str, DoorThreshold]:
        """The door's threshold for every embedding model the configuration or the built-in table names,
        and ('*') for any other."""
        models = [*DOOR_THRESHOLDS, *self.matching.thresholds, *self.matching.door_thresholds]
        found = {model_id: self.door_threshold(door, model_id) for model_id in dict.fromkeys(models)}
        fallback = self.door_threshold(door, "*")
        found["*"] = DoorThreshold("*", fallback.threshold, fallback.source)
        return found

    def decision_thresholds(self, model_id: str, cluster_threshold: float | None = None) -> tuple[float, ...]:
        """The cosine thresholds decisions are taken at with embedding model model_id (the ones a faster
        precision of the model must not change): this agent's matching threshold, each door's, then the
        fleet server's cluster_threshold (the one it groups the unknown faces agents report at), if known."""
        found = [self.matching.policy().threshold(model_id)]
        found += [self.door_threshold(door, model_id).threshold for door in self.doors]
        found += [] if cluster_threshold is None else [cluster_threshold]
        return tuple(dict.fromkeys(found))

    @model_validator(mode="after")
    def _doors_watch_known_cameras(self) -> AgentConfig:
        cameras = [camera.name for camera in self.cameras]
        if len(set(cameras)) != len(cameras):
            raise ValueError("camera names must be unique")
        doors = [door.name for door in self.doors]
        if len(set(doors)) != len(doors):
            raise ValueError("door names must be unique")
        for door in self.doors:
            if door.camera not in cameras:
                raise ValueError(
                    f"door '{door.name}' watches camera '{door.camera}', which is not configured"
                )
            for window in door.schedule:
                parse_window(window)
            if door.evidence_frames < door.min_frames:
                raise ValueError(
                    f"door '{door.name}': evidence_frames {door.evidence_frames} < min_frames "
                    f"{door.min_frames}; the frames averaged must include those required"
                )
        return self


_ISSUED = "from `facefleet-server certs issue DEVICE`"
MAX_PEM_BYTES = 1 << 20
"""Largest PEM file (certificates, a key) the config may name."""
MAX_SECRET_BYTES = 4096
"""Largest password file."""
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----")


def check_topic(topic: str, what: str) -> str:
    """An MQTT topic (or part of one) to publish to: no wildcards, no empty level at either end, no '$', and
    no character a broker refuses (mosquitto drops the connection over one). ValueError says what was
    expected."""
    refused = next((c for c in topic if _refused_in_topic(ord(c))), None)
    if refused is not None:
        raise ValueError(
            f"{topic!r} is not {what}: it holds U+{ord(refused):04X}, and MQTT brokers refuse control "
            "characters (U+0000–U+001F, U+007F–U+009F), surrogates and Unicode non-characters "
            "(U+FDD0–U+FDEF, U+xFFFE, U+xFFFF) in a topic; remove it"
        )
    if (
        any(c in topic for c in "#+$")
        or topic.startswith("/")
        or "//" in topic
        or len(topic.encode("utf-8")) > 128
    ):
        raise ValueError(
            f"{topic!r} is not {what}: at most 128 bytes, no '#', '+' or '$', no empty level ('//' or a "
            "leading '/')"
        )
    return topic


def _refused_in_topic(code: int) -> bool:
    """A code point MQTT brokers refuse in a topic: a C0 or C1 control, DEL, a surrogate, a non-character."""
    return (
        code < 0x20
        or 0x7F <= code <= 0x9F
        or 0xD800 <= code <= 0xDFFF
        or 0xFDD0 <= code <= 0xFDEF
        or code & 0xFFFE == 0xFFFE
    )


def _is_ip_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _read(key: str, path: Path, what: str, limit: int = MAX_PEM_BYTES) -> bytes:
    """A regular file of at most `limit` bytes the config names at `key`; ConfigError naming the key, the
    file and what it should hold. A bare name left by credential_path means $CREDENTIALS_DIRECTORY was not
    set, which the error says."""
    try:
        return read_small(path, limit)
    except OSError as exc:
        problem = "no such file" if isinstance(exc, FileNotFoundError) else f"cannot read ({exc.strerror})"
    if key.endswith(("key_file", "password_file")) and len(path.parts) == 1:
        what += " (a bare name is read from $CREDENTIALS_DIRECTORY, which is not set)"
    raise ConfigError(f"{key} {path}: {problem}; it should hold {what}")


def _certificates(key: str, path: Path, what: str) -> Path:
    """A readable PEM file of one or more certificates that TLS can load."""
    blocks = _PEM_BLOCK.findall(_read(key, path, what))
    if b"CERTIFICATE" not in blocks:
        raise ConfigError(f"{key} {path}: not a PEM certificate; it should hold {what}")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=path)
    except ssl.SSLError as exc:
        raise ConfigError(
            f"{key} {path}: not a PEM certificate ({exc.reason}); it should hold {what}"
        ) from None
    return path


def _key_pair(section: str, cert: Path, key: Path | None) -> None:
    """The private key (key_file, or inside cert_file when key is None) loads and is the certificate's."""
    key_name = f"{section}.key_file" if key is not None else f"{section}.cert_file"
    key_path = key if key is not None else cert
    what = f"the unencrypted private key of {section}.cert_file"
    if not any(
        block.endswith(b"PRIVATE KEY") for block in _PEM_BLOCK.findall(_read(key_name, key_path, what))
    ):
        raise ConfigError(f"{key_name} {key_path}: not a PEM private key; it should hold {what}")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(cert, key, password=lambda: b"")
    except ssl.SSLError as exc:
        raise ConfigError(
            f"{key_name} {key_path}: does not match {section}.cert_file {cert}, or needs a passphrase "
            f"({exc.reason}); it should hold {what}"
        ) from None
    check_private(key_name, key_path)


def load_config(path: Path | None) -> AgentConfig:
    """Read and validate an agent config file; None gives the defaults."""
    return load_toml_model(path, AgentConfig, ConfigError)


def write_threshold(path: Path, model_id: str, threshold: float) -> None:
    """Set [matching.thresholds] '<model_id>' in a config file, keeping every other line as it is.

    The result is validated before it replaces the file (atomically, the file a symbolic link points to,
    with the old file's mode and owner), so a bad edit never lands and the service can still read it."""
    path = path.resolve()
    try:
        kept = path.stat()
    except FileNotFoundError:
        kept = None
    lines = path.read_text(encoding="utf-8").splitlines() if kept is not None else []
    entry = f"{json.dumps(model_id)} = {threshold:.4f}"
    section = next((i for i, line in enumerate(lines) if line.strip() == "[matching.thresholds]"), None)
    if section is None:
        lines += ["", "[matching.thresholds]", entry]
    else:
        end = next(
            (i for i in range(section + 1, len(lines)) if lines[i].lstrip().startswith("[")), len(lines)
        )
        keys = [i for i in range(section + 1, end) if _key_of(lines[i]) == model_id]
        if keys:
            lines[keys[0]] = entry
        else:
            lines.insert(section + 1, entry)
    text = "\n".join(lines) + "\n"
    try:
        AgentConfig.model_validate(tomllib.loads(text))
    except (tomllib.TOMLDecodeError, ValidationError) as exc:
        raise ConfigError(
            f"config file {path}: cannot add the threshold without breaking it ({exc})"
        ) from None
    data = text.encode("utf-8")
    try:
        replace_atomic(
            path,
            lambda handle: handle.write(data),
            mode=stat.S_IMODE(kept.st_mode) if kept is not None else None,
            owner=(kept.st_uid, kept.st_gid) if kept is not None else None,
        )
    except OSError as exc:
        raise ConfigError(
            f"config file {path}: cannot replace it keeping its mode and owner ({exc.strerror}); run as "
            "its owner or root, or add the threshold by hand"
        ) from None


def _key_of(line: str) -> str | None:
    key, sep, _ = line.partition("=")
    if not sep:
        return None
    return key.strip().strip('"').strip("'")
