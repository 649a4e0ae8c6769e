"""Home Assistant discovery: sensors for each camera and door, and an MQTT image entity per camera only
when its latest face crop is published."""

from __future__ import annotations

from facefleet.agent.publish.discovery import discovery_messages

PREFIX = "facefleet/door-box/"


def test_an_image_entity_per_camera_shows_its_latest_face_crop_when_those_are_published() -> None:
    plain = dict(discovery_messages("homeassistant", PREFIX, "door-box", "0.1", ["front", "back"], ["main"]))
    assert not [topic for topic in plain if "/image/" in topic]
    assert len(plain) == 2 * 3 + 1
    messages = dict(
        discovery_messages(
            "homeassistant", PREFIX, "door-box", "0.1", ["front", "back"], ["main"], face_images=True
        )
    )
    images = {topic: config for topic, config in messages.items() if "/image/" in topic}
    assert sorted(images) == [
        "homeassistant/image/facefleet_door-box_back_face/config",
        "homeassistant/image/facefleet_door-box_front_face/config",
    ]
    front = images["homeassistant/image/facefleet_door-box_front_face/config"]
    assert (front["image_topic"], front["content_type"]) == (PREFIX + "cameras/front/face", "image/jpeg")
    assert front["availability"][0]["topic"] == PREFIX + "status"
    assert front["device"] == plain[next(iter(plain))]["device"]  # the same device as the sensors
    assert messages.keys() - images.keys() == plain.keys()
