"""An INT8 variant built by the server (`models quantize --in-place`, NNCF on real photos) and rolled out to a
real agent that has no quantizer of its own: the agent keeps its float SFace, its id and its gallery, measures
the variant in its measuring child, reports what won, keeps recognising the enrolled person, and goes back to
the float model alone when the rollout is rolled back."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from facefleet.agent.service.loop import AgentService
from facefleet.core.errors import EXIT_OK
from facefleet.server.gallery.embedder import Enroller
from facefleet.v1 import query_pb2
from facefleet.vision.models.store import ModelStore
from tests.server.cli.test_cli import run_cli
from tests.server.cli.test_cli_remote import remote
from tests.server.conftest import Harness, Pki, run, serving
from tests.server.fleet.test_agent_sync import until
from tests.server.rollouts.test_fleet_rollout import (
    ACTIVE,
    EMBEDDING_OLD,
    agent_state,
    cli,
    door_agent,
    face_events,
    statuses,
    until_async,
)
from tests.variants import store_variant_copy
from tests.videos import write_video
from tests.vision.models.test_quantize import photo_folder

pytestmark = pytest.mark.slow  # a quantization, an agent measuring precisions in its child, two switches

VARIANT = "sface@2021dec-int8"


async def precisions(harness: Harness) -> dict[str, str]:
    """What door-1's models run at, as fleet status shows it."""
    reply = await harness.query().FleetStatus(query_pb2.FleetStatusRequest(), metadata=harness.query_md)
    return dict(next(a for a in reply.agents if a.device_id == "door-1").model_precisions)


def test_a_variant_rolled_out_in_place_runs_under_the_float_model_and_goes_on_rollback(
    tmp_path: Path,
    pki: Pki,
    enroller: Enroller,
    model_store: ModelStore,
    astronaut: npt.NDArray[np.uint8],
    astronaut_jpeg: bytes,
    photo_paths: dict[str, Path],
) -> None:
    blank = np.full_like(astronaut, 40)
    video = write_video(tmp_path / "door.avi", [astronaut] * 8 + [blank] * 14, fps=8)  # visits end
    state = agent_state(tmp_path, model_store, "door-1")
    photos = photo_folder(tmp_path / "photos", photo_paths)
    shutil.copytree(model_store.root, tmp_path / "state" / "models")  # the server's float models

    async def scenario() -> dict[str, Any]:
        async with (
            serving(tmp_path, pki, enroller, fleet={"poll_seconds": 0.1}) as harness,
            door_agent(harness, pki, state, video, astronaut_jpeg) as service,
        ):
            quantize = ("models", "quantize", EMBEDDING_OLD, "--photos", str(photos), "--samples", "60")
            assert await cli(harness, *quantize, "--in-place") == 0
            assert await cli(harness, "rollout", "start", VARIANT, "--all") == 0
            delivered = await until_async(
                lambda: statuses(harness),
                lambda found: found.get("door-1", {}).get("embedding", ("", 0, ""))[:2] == (VARIANT, ACTIVE),
                timeout=240,
                what="the variant reported active",
            )
            runs_at = service.analyzer.runs_at()["embedding"]
            reported = await until_async(
                lambda: precisions(harness), lambda found: found.get("embedding") == runs_at, timeout=30
            )
            seen = len(face_events(harness))
            await until(
                lambda: any(e.person_id == "eileen" for e in face_events(harness)[seen:]),
                timeout=120,
                what="eileen recognised after the variant arrived",
            )
            after = face_events(harness)[seen:]
            stored = [m.manifest.model_id for m in ModelStore(state / "models").models()]

            rollout_id = harness.server.state.models.list_rollouts()[0].rollout_id
            assert await cli(harness, "rollout", "rollback", str(rollout_id)) == 0
            await until(
                lambda: VARIANT not in [m.manifest.model_id for m in ModelStore(state / "models").models()],
                timeout=240,
                what="the variant withdrawn",
            )
            withdrawn = await until_async(
                lambda: statuses(harness),
                lambda found: found["door-1"]["embedding"][:2] == (EMBEDDING_OLD, ACTIVE),
                timeout=120,
                what="the float model reported active again",
            )
            return {
                "reason": delivered["door-1"]["embedding"][2],
                "runs_at": runs_at,
                "reported": reported,
                "after": after,
                "stored": stored,
                "withdrawn": withdrawn["door-1"]["embedding"][2],
                "runs_at_after_rollback": service.analyzer.runs_at()["embedding"],
                "service": service,
            }

    found = run(scenario)
    service: AgentService = found["service"]
    # the float model stays the agent's model, with its gallery: nothing was re-embedded or switched away
    assert service.model_id == EMBEDDING_OLD and service.model_mismatches == 0
    assert ModelStore(state / "models").active("embedding").manifest.model_id == EMBEDDING_OLD
    assert VARIANT in found["stored"]
    # what the agent measured decides; its status, its analyzer and the fleet view agree
    if found["reason"].startswith(f"runs in {EMBEDDING_OLD}'s place"):
        assert found["runs_at"] == f"int8 ({VARIANT})"
    else:
        assert found["reason"].startswith(f"stored; {EMBEDDING_OLD} runs at {found['runs_at']}")
    assert found["reported"]["embedding"] == found["runs_at"]
    assert all(e.model_versions["embedding"] == EMBEDDING_OLD for e in found["after"])
    assert any(e.person_id == "eileen" and e.decision == "match" for e in found["after"])
    assert f"{VARIANT} withdrawn" in found["withdrawn"]
    assert not found["runs_at_after_rollback"].startswith("int8")


def test_an_in_place_variant_shows_and_starts_through_a_remote_server(
    tmp_path: Path,
    pki: Pki,
    enroller: Enroller,
    model_store: ModelStore,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An operator without the server's state directory sees what the variant is for and what its rollout
    did, through the HTTP API."""
    shutil.copytree(model_store.root, tmp_path / "state" / "models")

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        async with serving(tmp_path, pki, enroller) as harness:
            server = harness.server
            variant = store_variant_copy(server.models, server.models.active("embedding"), in_place=True)
            await asyncio.to_thread(server.catalog.record, variant)
            base = remote(harness, tmp_path)
            code, out, err = await asyncio.to_thread(run_cli, capsys, *base, "models", "list", "--json")
            assert code == EXIT_OK, err
            listed = next(m for m in json.loads(out) if m["model_id"] == VARIANT)
            start = ("rollout", "start", VARIANT, "--all", "--json")
            code, out, err = await asyncio.to_thread(run_cli, capsys, *base, *start)
            assert code == EXIT_OK, err
            return listed, json.loads(out)

    listed, started = run(scenario)
    assert listed["runs_in_place_of"] == EMBEDDING_OLD
    assert (started["state"], started["runs_in_place_of"], started["reembedded"]) == (
        "active",
        EMBEDDING_OLD,
        [],
    )
