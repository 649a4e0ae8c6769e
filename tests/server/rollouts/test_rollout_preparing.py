"""A rollout preparing an embedding model's gallery never outlives the process preparing it: a live preparer
shows progress and keeps it; one killed with -9 (no clean-up runs) leaves it preparing only until the server
starts or polls, or `rollout list`/`show` look, once it has shown no progress for longer than the bound;
`rollout rollback` ends it at once and a preparer still running then stops."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from facefleet.link.gallery import Embedding, Person
from facefleet.server.app import rollout_embedding_models
from facefleet.server.config import ServerConfig
from facefleet.server.domain.models import Target
from facefleet.server.domain.records import Crop
from facefleet.server.errors import FailedPreconditionError
from facefleet.server.gallery.embedder import Enroller
from facefleet.server.paths import ServerPaths
from facefleet.server.rollouts.catalogue import ModelCatalog
from facefleet.server.rollouts.control import PREPARING_STALE_SECONDS, RolloutControl
from facefleet.server.state.sqlite.state import SqliteState
from facefleet.v1 import fleet_pb2
from facefleet.vision.models.store import ModelStore
from facefleet.vision.runtime import Runtime
from tests.server.cli.test_cli import run_cli
from tests.server.conftest import Pki, encode, run, serving

OLD = "sface@2021dec"
NEW = "sface@2021dec-fp32"
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)
REPO = Path(__file__).resolve().parents[3]


class FakeTime:
    """A clock and a sleep that moves it; `during_sleep` runs after each step (another process acting)."""

    def __init__(self) -> None:
        self.now = NOW
        self.slept = 0.0
        self.during_sleep = lambda: None

    def clock(self) -> datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
        self.slept += seconds
        self.during_sleep()


def published_state(state_dir: Path, runtime: Runtime, model_irs: dict[str, Path]) -> SqliteState:
    """The state directory of a server with the new embedding model published."""
    state = SqliteState(state_dir / "server.db")
    catalog = ModelCatalog(state.models, ModelStore(state_dir / "models"), runtime)
    catalog.publish(model_irs[NEW], "embedding", "sface", "2021dec-fp32", "FP32")
    return state


def control(state: SqliteState, state_dir: Path, time_: FakeTime, runtime: Runtime | None) -> RolloutControl:
    catalog = ModelCatalog(state.models, ModelStore(state_dir / "models"), runtime)
    return RolloutControl(
        state, catalog, runtime=runtime, settle_seconds=300, clock=time_.clock, sleep=time_.sleep
    )


def test_a_live_preparer_keeps_its_rollout_through_a_settle_wait_longer_than_the_bound(
    tmp_path: Path, runtime: Runtime, model_irs: dict[str, Path], astronaut: npt.NDArray[np.uint8]
) -> None:
    state = published_state(tmp_path, runtime, model_irs)
    crop = Crop("png", encode(cv2.resize(astronaut, (112, 112)), ".png"), "image:0")
    state.add_person(Person("eileen", embeddings=(Embedding(OLD, np.ones(128, np.float32)),)), [crop], NOW)
    time_ = FakeTime()
    watcher = control(state, tmp_path, time_, None)  # e.g. `rollout list` in another process
    expired = []
    time_.during_sleep = lambda: expired.extend(watcher.expire_stalled())

    started = control(state, tmp_path, time_, runtime).start(NEW, Target("all"))

    assert time_.slept == 300 > PREPARING_STALE_SECONDS
    assert (started.rollout.state, started.reembedded, expired) == ("active", ("eileen",), [])
    state.close()


def test_rolling_back_a_preparing_rollout_stops_its_preparer(
    tmp_path: Path, runtime: Runtime, model_irs: dict[str, Path]
) -> None:
    state = published_state(tmp_path, runtime, model_irs)
    time_ = FakeTime()
    operator = control(state, tmp_path, time_, None)
    time_.during_sleep = lambda: None if time_.slept > 5 else operator.rollback(1)

    with pytest.raises(FailedPreconditionError, match="rollout 1 was rolled back while its gallery"):
        control(state, tmp_path, time_, runtime).start(NEW, Target("all"))

    rollout = state.models.get_rollout(1)
    assert (rollout.state, rollout.reason, time_.slept) == ("rolled_back", "", 5)
    assert rollout_embedding_models(state.models) == ()
    state.close()


def test_a_preparer_that_fails_rolls_its_rollout_back_with_the_reason(
    tmp_path: Path, runtime: Runtime, model_irs: dict[str, Path]
) -> None:
    state = published_state(tmp_path, runtime, model_irs)
    time_ = FakeTime()

    def interrupted() -> None:
        raise KeyboardInterrupt

    time_.during_sleep = interrupted
    with pytest.raises(KeyboardInterrupt):
        control(state, tmp_path, time_, runtime).start(NEW, Target("all"))
    rollout = state.models.get_rollout(1)
    assert (rollout.state, rollout.reason) == (
        "rolled_back",
        "preparing its gallery failed: KeyboardInterrupt",
    )
    state.close()


@pytest.mark.slow
def test_a_rollout_whose_preparer_was_killed_is_rolled_back_once_it_shows_no_progress(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], runtime: Runtime, model_irs: dict[str, Path]
) -> None:
    state_dir = tmp_path / "state"
    published_state(state_dir, runtime, model_irs).close()
    config = tmp_path / "server.toml"
    config.write_text("[fleet]\npoll_seconds = 30\n")  # the preparer then waits 61 s to settle
    base = ["--config", str(config), "--state-dir", str(state_dir)]
    preparer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from facefleet.server.cli import main; sys.exit(main(sys.argv[1:]))",
            *base,
            "rollout",
            "start",
            NEW,
            "--all",
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120  # guards a hung test only
        while preparing(state_dir) != ["preparing"]:
            assert preparer.poll() is None and time.monotonic() < deadline, "the preparer never started"
            time.sleep(0.05)
    finally:
        preparer.kill()  # SIGKILL: no except, no finally
        preparer.wait()
    assert preparing(state_dir) == ["preparing"], "nothing cleaned up after the kill"

    code, out, _ = run_cli(capsys, *base, "rollout", "list", "--json")
    assert (code, [r["state"] for r in json.loads(out)]) == (0, ["preparing"])  # it may still be alive
    with sqlite3.connect(state_dir / "server.db") as conn:  # as if the operator looked 10 minutes later
        conn.execute("UPDATE rollouts SET updated_us = updated_us - 600000000")
    code, out, _ = run_cli(capsys, *base, "rollout", "list", "--json")
    [listed] = json.loads(out)
    assert (code, listed["state"]) == (0, "rolled_back")
    assert "showed no progress since" in listed["reason"] and "start the rollout again" in listed["reason"]
    code, out, _ = run_cli(capsys, *base, "rollout", "show", "1")
    assert (code, "rolled back because its gallery was being prepared" in out) == (0, True)


def preparing(state_dir: Path) -> list[str]:
    with sqlite3.connect(state_dir / "server.db") as conn:
        return [row[0] for row in conn.execute("SELECT state FROM rollouts")]


def test_the_server_rolls_back_abandoned_preparing_rollouts_when_it_starts_and_polls(
    tmp_path: Path, pki: Pki, enroller: Enroller, runtime: Runtime, model_irs: dict[str, Path]
) -> None:
    state_dir = tmp_path / "state"
    assert ServerPaths.from_config(state_dir, ServerConfig()).database == state_dir / "server.db"
    state = published_state(state_dir, runtime, model_irs)
    long_ago = datetime.now(timezone.utc) - timedelta(minutes=10)
    abandoned = state.models.add_rollout(NEW, Target("all"), "preparing", long_ago)
    state.close()

    async def scenario() -> None:
        async with serving(tmp_path, pki, enroller, fleet={"poll_seconds": 0.1}) as harness:
            models = harness.server.state.models
            rolled = models.get_rollout(abandoned.rollout_id)
            assert (rolled.state, "showed no progress" in rolled.reason) == ("rolled_back", True)
            stub = await harness.registered("door-1")
            welcome = await stub.Register(fleet_pb2.RegisterRequest(device_id="door-1"))
            assert NEW not in welcome.embedding_models

            # a preparer killed while this server runs: its rollout goes at the next poll after the bound
            recent = models.add_rollout(NEW, Target("all"), "preparing", datetime.now(timezone.utc))
            await harness.server.refresh()
            assert models.get_rollout(recent.rollout_id).state == "preparing"
            assert (
                NEW in (await stub.Register(fleet_pb2.RegisterRequest(device_id="door-1"))).embedding_models
            )
            with sqlite3.connect(state_dir / "server.db") as conn:
                conn.execute(
                    "UPDATE rollouts SET updated_us = updated_us - 600000000 WHERE state = 'preparing'"
                )
            await harness.server.refresh()
            assert models.get_rollout(recent.rollout_id).state == "rolled_back"
            assert (
                NEW
                not in (await stub.Register(fleet_pb2.RegisterRequest(device_id="door-1"))).embedding_models
            )

    run(scenario)
