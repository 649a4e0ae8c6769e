"""Home Assistant MQTT discovery: one device per agent with sensors for each camera and door, and an image
entity per camera for its latest face crop when those are published."""

from __future__ import annotations

from typing import Any


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
        for key, label, template in (
            ("person", "last person", "{{ value_json.last_person }}"),
            ("expression", "expression", "{{ value_json.expression }}"),
            ("faces", "faces in view", "{{ value_json.faces_in_view }}"),
        ):
            unique = f"facefleet_{device_id}_{camera}_{key}"
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
            unique = f"facefleet_{device_id}_{camera}_face"
            messages.append(
                (
                    face_image_topic(discovery_prefix, device_id, camera),
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
        unique = f"facefleet_{device_id}_{door}_access"
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


def face_image_topic(discovery_prefix: str, device_id: str, camera: str) -> str:
    """The discovery topic of a camera's face image entity."""
    return f"{discovery_prefix}/image/facefleet_{device_id}_{camera}_face/config"
