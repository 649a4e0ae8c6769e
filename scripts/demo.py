"""The FaceFleet demo: a local mosquitto, an agent whose camera is a video made from the bundled real photos,
one enrolled person, and the events the agent publishes printed as they arrive. Everything stops cleanly.

Run through scripts/demo (which runs scripts/setup first).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.images import read_image  # noqa: E402
from agent.photos import sample_photo  # noqa: E402
from tests.mosquitto import Mosquitto  # noqa: E402

BIN = Path(sys.executable).parent
STATE = Path(os.environ.get("FACEFLEET_STATE_DIR", ROOT / ".state" / "agent"))


def video_from_photos(path: Path) -> Path:
    """Eileen (the astronaut) at the door, nobody, then a stranger from the group photo, then nobody."""
    astronaut, group = read_image(sample_photo("astronaut")), read_image(sample_photo("t1"))
    stranger = cv2.resize(np.ascontiguousarray(group[190:550, 380:660]), (512, 512))
    blank = np.full_like(astronaut, 40)
    frames = [blank] * 10 + [astronaut] * 30 + [blank] * 30 + [stranger] * 30 + [blank] * 30
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 15, (512, 512))
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def describe(topic: str, event: dict[str, Any]) -> str:
    if topic.endswith("events/face"):
        who = event["identity"]["name"] or event["identity"]["person_id"] or "unknown face"
        expression = event["expression"]["label"]
        return f"face    {event['event']:8} {who:14} score {event['score']:.2f}  expression {expression}"
    if "/access/" in topic:
        person = event["person_id"] or "-"
        return f"access  {event['door']:8} {event['decision']:8} {person:14} {event['reason']}"
    if topic.endswith("/status"):
        return f"status  {event['state']}"
    if topic.endswith("/state"):
        camera = topic.split("/")[-2]
        return (
            f"camera  {camera:8} {event['faces_in_view']} face(s) in view, "
            f"last person {event['last_person']}, expression {event['expression'] or '-'}"
        )
    return f"{topic}  {json.dumps(event)[:80]}"


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="facefleet-demo-") as scratch:
        work = Path(scratch)
        state = work / "agent"
        state.mkdir()
        (state / "models").symlink_to(STATE / "models", target_is_directory=True)
        broker = Mosquitto(work).start()
        print(f"mosquitto listening on 127.0.0.1:{broker.port}")
        agent = [str(BIN / "facefleet-agent"), "--state-dir", str(state)]
        photo = work / "eileen.png"
        cv2.imwrite(str(photo), read_image(sample_photo("astronaut")))
        subprocess.run(
            [*agent, "enroll", "--person-id", "eileen", "--name", "Eileen", "--group", "crew", str(photo)],
            check=True,
        )
        video = video_from_photos(work / "door.avi")
        config = work / "agent.toml"
        config.write_text(
            f'device_id = "demo-door"\n[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\n'
            f'[[cameras]]\nname = "door"\nsource = "{video}"\n'
            '[[doors]]\nname = "front"\ncamera = "door"\nallow_groups = ["crew"]\n'
        )
        printed = threading.Event()
        seen: list[str] = []

        def on_message(client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
            line = describe(message.topic, json.loads(message.payload))
            seen.append(line)
            print(line, flush=True)
            if sum(line.startswith("face    ended") for line in seen) >= 2:
                printed.set()

        watcher = paho.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
        watcher.on_connect = lambda c, u, f, r, p: c.subscribe("facefleet/demo-door/#", qos=1)
        watcher.on_message = on_message
        watcher.connect("127.0.0.1", broker.port)
        watcher.loop_start()
        service = subprocess.Popen([*agent, "--config", str(config), "run"])
        try:
            printed.wait(90)
            time.sleep(1.0)
        finally:
            service.send_signal(signal.SIGTERM)
            code = service.wait(30)
            time.sleep(0.5)
            watcher.loop_stop()
            watcher.disconnect()
            broker.stop()
        print(f"agent stopped with exit code {code}")
        return 0 if code == 0 and printed.is_set() else 1


if __name__ == "__main__":
    sys.exit(main())
