"""Home Assistant discovery: sensors for each camera and door, an MQTT image entity per camera only when its
latest face crop is published, and object ids Home Assistant accepts, unique to each device's entity and the
same from one start to the next."""

from __future__ import annotations

import re

from facefleet.agent.publish.discovery import discovery_messages, object_id

PREFIX = "facefleet/door-box/"
HOME_ASSISTANT_TOPIC = re.compile(
    r"homeassistant/(?P<component>\w+)/(?:(?P<node_id>[a-zA-Z0-9_-]+)/)?(?P<object_id>[a-zA-Z0-9_-]+)/config"
)
"""The discovery topics Home Assistant's MQTT integration subscribes to and accepts (its discovery module's
pattern); a topic it does not match is ignored, and no entity appears."""


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
    front_topic = f"homeassistant/image/{object_id('door-box', 'front', 'face')}/config"
    back_topic = f"homeassistant/image/{object_id('door-box', 'back', 'face')}/config"
    assert sorted(images) == sorted([front_topic, back_topic])
    front = images[front_topic]
    assert (front["image_topic"], front["content_type"]) == (PREFIX + "cameras/front/face", "image/jpeg")
    assert front["availability"][0]["topic"] == PREFIX + "status"
    assert front["device"] == plain[next(iter(plain))]["device"]  # the same device as the sensors
    assert messages.keys() - images.keys() == plain.keys()


def test_a_device_id_with_dots_colons_and_at_signs_gets_topics_home_assistant_accepts() -> None:
    device = "door.box@site:1"
    messages = discovery_messages(
        "homeassistant", "facefleet/door.box@site:1/", device, "0.1", ["front"], ["main"], face_images=True
    )
    for topic, config in messages:
        match = HOME_ASSISTANT_TOPIC.fullmatch(topic)
        assert match is not None, topic
        assert match["object_id"] == config["unique_id"]
        assert match["object_id"].startswith("facefleet_door_box_site_1_")
    assert messages[0][1]["device"]["identifiers"] == [f"facefleet_{device}"]


def test_devices_whose_names_run_together_never_share_an_entity() -> None:
    lobby = discovery_messages("homeassistant", "p/", "lobby", "0.1", ["main_front"], [])
    lobby_main = discovery_messages("homeassistant", "p/", "lobby_main", "0.1", ["front"], [])
    assert len(lobby) == len(lobby_main) == 3
    assert not {topic for topic, _ in lobby} & {topic for topic, _ in lobby_main}
    assert not {c["unique_id"] for _, c in lobby} & {c["unique_id"] for _, c in lobby_main}


def test_an_entitys_id_is_the_same_from_one_start_to_the_next() -> None:
    """Home Assistant keeps an entity's history and settings by its unique id: the id must never move."""
    assert object_id("door-box", "front", "person") == "facefleet_door-box_front_person_59d632b97a3f"
