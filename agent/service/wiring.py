"""The agent's links, set up from its config: the MQTT link's settings, and the fleet server's sync with
the model updater that takes rollouts."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from facefleet.agent.config import AgentConfig
from facefleet.agent.publish.mqtt import MqttSettings
from facefleet.agent.updates.updater import ModelUpdater, Switch, UpdateSettings
from facefleet.vision.models.store import ModelStore
from facefleet.vision.pipeline import FaceAnalyzer

if TYPE_CHECKING:
    from facefleet.agent.fleet.sync import SyncSettings

log = logging.getLogger(__name__)


def mqtt_settings(config: AgentConfig, prefix: str, device_id: str) -> MqttSettings:
    """How to reach the broker. A TLS file that cannot be read raises ConfigError naming its key; a client
    certificate out of its dates is logged as an error only."""
    mqtt = config.mqtt
    ca_file, cert_file, key_file = mqtt.tls_files()
    _warn_of_dates(config, "mqtt.cert_file", "the broker")
    return MqttSettings(
        host=mqtt.host,
        port=mqtt.port,
        prefix=prefix,
        client_id=f"facefleet-{device_id}",
        username=mqtt.username,
        password=mqtt.password(),
        tls=mqtt.tls,
        ca_file=ca_file,
        cert_file=cert_file,
        key_file=key_file,
        keepalive_s=mqtt.keepalive_s,
        reconnect_max_s=mqtt.reconnect_max_s,
        unacked_timeout_s=min((d.relay_expiry_s for d in config.doors if d.relay_topic), default=None),
        device_id=device_id,
    )


def sync_settings(
    config: AgentConfig,
    device_id: str,
    embedding_model: str,
    models: Mapping[str, str],
    precisions: Mapping[str, str],
) -> SyncSettings:
    """How to reach the fleet server and what to tell it at Register. models: model id per task;
    precisions: what each model runs at. A TLS file that cannot be read raises ConfigError naming its key; a
    client certificate out of its dates is logged as an error only."""
    # imported here: gRPC and cryptography cost an agent without [server] about 17 MB of memory
    from facefleet.agent.fleet.sync import SyncSettings

    server = config.server
    ca_file, cert_file, key_file = server.tls_files()
    _warn_of_dates(config, "server.cert_file", "the fleet server")
    capabilities = [f"openvino:{config.runtime.device}"]
    capabilities += ["expression"] if "expression" in models else []
    capabilities += ["access"] if config.doors else []
    return SyncSettings(
        address=server.address,
        device_id=device_id,
        ca_file=ca_file,
        cert_file=cert_file,
        key_file=key_file,
        models=(embedding_model,),
        server_name=server.server_name,
        hostname=socket.gethostname(),
        model_versions=dict(models),
        model_precisions=dict(precisions),
        capabilities=tuple(capabilities),
        groups=tuple(server.groups),
        report_batch=server.report_batch,
        reconnect_max_s=server.reconnect_max_s,
        keepalive_s=server.keepalive_s,
        health_interval_s=config.service.status_interval_s,
    )


def _warn_of_dates(config: AgentConfig, key: str, peer: str) -> None:
    """An expired or not yet valid client certificate: `run` goes on (doors decide offline, events wait in
    their queues) but says so loudly, as check-config refuses it."""
    problem = config.certificate_date_problems().get(key)
    if problem is not None:
        log.error("%s; until then %s refuses this device: the agent runs on without it", problem, peer)


def model_updater(
    config: AgentConfig,
    models: ModelStore,
    analyzer: Callable[[], FaceAnalyzer],
    queue_switch: Callable[[Switch], None],
) -> ModelUpdater | None:
    """The updater that takes the server's rollouts ([models] accept_rollouts), or None.
    analyzer: the analyzer running now; queue_switch: hands a verified switch to the frame loop."""
    if not config.models.accept_rollouts:
        return None
    settings = UpdateSettings(
        keep_versions=config.models.keep_versions,
        gallery_timeout_s=config.models.gallery_timeout_s,
        smoke_photo=config.models.smoke_photo,
    )
    return ModelUpdater(models, analyzer, queue_switch, settings)
