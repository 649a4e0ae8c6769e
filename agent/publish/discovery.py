"""Home Assistant MQTT discovery: one device per agent with sensors for each camera and door, and an image
entity per camera for its latest face crop when those are published.

Each entity's object id, which is also its unique id, is `facefleet_<device>_<camera or door>_<key>_<hash>`:
the names with any character but letters, digits, `_` and `-` made `_` (Home Assistant's discovery topics
allow no other), and the first 12 hex digits of the SHA-256 of the names as they are, so that two devices
whose names run together the same way (`lobby` with camera `main_front`, `lobby_main` with camera `front`)
never share an entity, and an entity keeps its id from one start to the next."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

SENSOR_KEYS = (
    ("person", "last person", "{{ value_json.last_person }}"),
    ("expression", "expression", "{{ value_json.expression }}"),
    ("faces", "faces in view", "{{ value_json.faces_in_view }}"),
)
"""A camera's sensors: (key, name after the camera's, value template on cameras/<camera>/state)."""
_NOT_IN_ID = re.compile(r"[^A-Za-z0-9_-]")


def object_id(device_id: str, name: str, key: str) -> str:
    """The object id (and unique id) of a device's entity `key` of camera or door `name`."""
    digest = hashlib.sha256(json.dumps([device_id, name, key]).encode()).hexdigest()[:12]
    readable = "_".join(_NOT_IN_ID.sub("_", part) for part in (device_id, name, key))
    return f"facefleet_{readable}_{digest}"


def discovery_messages(
    discovery_prefix: str,
    topic_prefix: str,
    device_id: str,
    version: str,
    cameras: list[str],
    doors: list[str],
    face_images: bool = False,
) -> list[tuple[str, dict[str, Any]]]:
    """(topic, config payload) pairs to publish retained under the discovery prefix. face_images: each
    camera's latest face crop is published (JPEG on cameras/<camera>/face)."""
    device = {
        "identifiers": [f"facefleet_{device_id}"],
        "name": f"FaceFleet {device_id}",
        "manufacturer": "FaceFleet",
        "sw_version": version,
    }
    availability = {
        "topic": f"{topic_prefix}status",
        "value_template": "{{ value_json.state }}",
        "payload_available": "online",
        "payload_not_available": "offline",
    }
    messages = []
    for camera in cameras:
        state = f"{topic_prefix}cameras/{camera}/state"
        for key, label, template in SENSOR_KEYS:
            unique = object_id(device_id, camera, key)
            messages.append(
                (
                    f"{discovery_prefix}/sensor/{unique}/config",
                    {
                        "name": f"{camera} {label}",
                        "unique_id": unique,
                        "state_topic": state,
                        "value_template": template,
                        "availability": [availability],
                        "device": device,
                    },
                )
            )
        if face_images:
            unique = object_id(device_id, camera, "face")
            messages.append(
                (
                    f"{discovery_prefix}/image/{unique}/config",
                    {
                        "name": f"{camera} face",
                        "unique_id": unique,
                        "image_topic": f"{topic_prefix}cameras/{camera}/face",
                        "content_type": "image/jpeg",
                        "availability": [availability],
                        "device": device,
                    },
                )
            )
    for door in doors:
        unique = object_id(device_id, door, "access")
        messages.append(
            (
                f"{discovery_prefix}/sensor/{unique}/config",
                {
                    "name": f"{door} access",
                    "unique_id": unique,
                    "state_topic": f"{topic_prefix}access/{door}",
                    "value_template": "{{ value_json.decision }}",
                    "json_attributes_topic": f"{topic_prefix}access/{door}",
                    "availability": [availability],
                    "device": device,
                },
            )
        )
    return messages


def former_discovery_topics(
    discovery_prefix: str, device_id: str, cameras: list[str], doors: list[str]
) -> list[str]:
    """The discovery topics agents published before object ids carried a hash (and before the agent kept
    the topics it published), for these cameras and doors: removed on the upgrade."""
    topics = [
        f"{discovery_prefix}/sensor/facefleet_{device_id}_{camera}_{key}/config"
        for camera in cameras
        for key, _, _ in SENSOR_KEYS
    ]
    topics += [f"{discovery_prefix}/image/facefleet_{device_id}_{camera}_face/config" for camera in cameras]
    topics += [f"{discovery_prefix}/sensor/facefleet_{device_id}_{door}_access/config" for door in doors]
    return topics
