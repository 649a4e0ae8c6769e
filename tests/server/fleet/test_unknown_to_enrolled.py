"""From an unknown face to a recognised person, across the whole system: a real agent (OpenVINO on a video
made from a photo of someone nobody enrolled, real mosquitto) reports the stranger's snapshot to a real
server; the operator's command line lists the cluster through the server's HTTP API and enrols it; the agent
then publishes `events/face` decided as that person the next time the face appears."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from facefleet.agent.service.loop import AgentService
from facefleet.core.errors import EXIT_OK
from facefleet.server.gallery.embedder import Enroller
from facefleet.vision.models.store import ModelStore
from tests.agent.conftest import Subscriber
from tests.agent.test_service import stranger
from tests.mosquitto import Mosquitto
from tests.server.cli.test_cli import run_cli
from tests.server.cli.test_cli_remote import remote
from tests.server.conftest import Pki, run, serving
from tests.server.fleet.test_agent_sync import agent_config, until
from tests.videos import write_video

PREFIX = "facefleet/door-1/"


@pytest.mark.slow
def test_a_stranger_seen_by_an_agent_is_enrolled_from_its_cluster_and_then_recognised(
    tmp_path: Path,
    pki: Pki,
    enroller: Enroller,
    model_store: ModelStore,
    model_cache: Path,
    group_photo: npt.NDArray[np.uint8],
    capsys: pytest.CaptureFixture[str],
) -> None:
    state = tmp_path / "agent-state"
    state.mkdir()
    (state / "models").symlink_to(model_store.root, target_is_directory=True)
    (state / "cache").symlink_to(model_cache, target_is_directory=True)
    face = stranger(group_photo)
    blank = np.full_like(face, 40)
    video = write_video(tmp_path / "door.avi", [face] * 8 + [blank] * 16, fps=8)
    (tmp_path / "mqtt").mkdir()
    broker = Mosquitto(tmp_path / "mqtt").start()
    watcher = Subscriber(broker.port, PREFIX + "events/face", client_id="test-watcher")

    async def scenario() -> tuple[list[Any], dict[str, Any]]:
        async with serving(tmp_path, pki, enroller) as harness:
            mqtt = {"host": "127.0.0.1", "port": broker.port, "reconnect_max_s": 1}
            config = agent_config(harness, video, mqtt=mqtt)
            service = await asyncio.to_thread(AgentService, config, state)
            runner = threading.Thread(target=service.run)
            runner.start()
            base = remote(harness, tmp_path)

            def clusters() -> list[Any]:
                code, out, err = run_cli(capsys, *base, "unknown", "list", "--json")
                assert code == EXIT_OK, err
                return list(json.loads(out))

            try:
                found: list[Any] = []
                for _ in range(180):  # the command line blocks: run it off the server's event loop
                    found = await asyncio.to_thread(clusters)
                    if found:
                        break
                    await asyncio.sleep(0.5)
                assert found, "no cluster on the server within 90 s"
                for _ in range(5):  # the face comes back every 3 s: a sighting may join between the two
                    code, _, err = await asyncio.to_thread(
                        run_cli,
                        capsys,
                        *base,
                        "unknown",
                        "enroll",
                        found[0]["cluster_id"],
                        "--version",
                        found[0]["version"],
                        "--person-id",
                        "visitor-1",
                    )
                    if code == EXIT_OK or "changed since" not in err:
                        break
                    found = await asyncio.to_thread(clusters)
                assert code == EXIT_OK, err
                decided = await until(
                    lambda: [
                        p
                        for p in watcher.on(PREFIX + "events/face")
                        if isinstance(p, dict) and p["identity"]["person_id"] == "visitor-1"
                    ],
                    timeout=60,
                    what="the agent deciding the face is visitor-1",
                )
            finally:
                service.stop_event.set()
                await asyncio.to_thread(runner.join, 30)
            return found, decided[0]

    try:
        found, decided = run(scenario)
    finally:
        watcher.close()
        broker.stop()
    assert len(found) == 1  # one stranger, one cluster, however many times the video looped
    assert found[0]["devices"] == ["door-1"]
    assert found[0]["cameras"] == ["door-1/door"]
    assert decided["identity"]["status"] == "match"
    assert decided["camera"] == "door"
    unknown_before = [
        p
        for p in watcher.on(PREFIX + "events/face")
        if isinstance(p, dict) and p["identity"]["status"] == "unknown"
    ]
    assert unknown_before and any(p["snapshot_id"] for p in unknown_before)
