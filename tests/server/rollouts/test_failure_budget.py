"""A rollout's failure budget on real SQLite and on a real server: the refusal that passes it pauses (or rolls
back) the rollout in the transaction that records it, with the reason, for good; over gRPC, watching agents
get their new assignment at once and AdminService shows the budget and the reason."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import grpc
import pytest

from facefleet.link.fleet import Registration
from facefleet.link.models import ModelFile, ModelStatus
from facefleet.server.api.wire import admin as admin_wire
from facefleet.server.domain.audit import AuditFilter
from facefleet.server.domain.models import MaxFailures, PublishedModel, Rollout, Target
from facefleet.server.errors import InvalidArgumentError
from facefleet.server.gallery.embedder import Enroller
from facefleet.server.rollouts.catalogue import ModelCatalog
from facefleet.server.rollouts.distribution import ModelDistribution
from facefleet.server.rollouts.files import CHUNK_BYTES, ModelFiles
from facefleet.server.state.sqlite.state import SqliteState
from facefleet.v1 import admin_pb2, fleet_pb2, models_pb2
from facefleet.vision.models.store import ModelStore
from tests.server.conftest import Pki, run, serving
from tests.server.rollouts.test_model_admin import (
    NEW,
    OLD,
    SLOW_POLL,
    failure,
    ir_files,
    next_models,
    publish,
    quiet,
    upload,
    watching,
)

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)
DOORS = ("door-1", "door-2", "door-3", "door-4")


def published(model_id: str) -> PublishedModel:
    return PublishedModel(
        model_id=model_id,
        task="expression",
        precision="FP32",
        licence="MIT",
        files=(ModelFile("model.bin", 10, "a" * 64), ModelFile("model.xml", 5, "b" * 64)),
        manifest_json='{"task": "expression"}',
        published_at=NOW,
    )


def refused(rollout_id: int, reason: str = "model.bin: sha256 differs", *, final: bool = True) -> ModelStatus:
    return ModelStatus("expression", NEW, rollout_id, "failed", reason, NOW, final)


class Reporting:
    """The server's status path (ModelDistribution.report) on a state database, counting the times it
    told the Watch streams that rollouts changed."""

    def __init__(self, path: Path, tmp_path: Path) -> None:
        self.state = SqliteState(path)
        self.changes = 0
        catalog = ModelCatalog(self.state.models, ModelStore(tmp_path / "models"))
        self.distribution = ModelDistribution(
            self.state, catalog, ModelFiles(CHUNK_BYTES), clock=lambda: NOW, changed=self._changed
        )

    async def _changed(self) -> None:
        self.changes += 1

    def report(self, device_id: str, status: ModelStatus) -> Rollout:
        asyncio.run(self.distribution.report(device_id, [status], {}, {}))
        return self.state.models.get_rollout(status.rollout_id)


@pytest.mark.parametrize(
    ("max_failures", "stopping_door"),
    [(MaxFailures(count=1), "door-3"), (MaxFailures(percent=50), "door-4")],
)
def test_the_refusal_that_passes_the_budget_pauses_the_rollout_in_the_same_call_for_good(
    tmp_path: Path, max_failures: MaxFailures, stopping_door: str
) -> None:
    path = tmp_path / "server.db"
    server = Reporting(path, tmp_path)
    models = server.state.models
    models.add_model(published(NEW))
    rollout = models.add_rollout(NEW, Target("all"), "active", NOW, max_failures=max_failures)
    rid = rollout.rollout_id
    for door in DOORS:
        models.announce(door, [(rid, OLD)], NOW)
    revision = models.models_revision()

    reports = [
        ("door-1", refused(rid, "model.bin: sha256 differs")),
        ("door-2", refused(rid, "compile failed", final=False)),  # retrying: not a refusal
        ("door-3", refused(rid, "smoke inference: NaN")),
        ("door-4", refused(rid, "out of memory")),
    ]
    for door, report in reports:
        state = server.report(door, report).state
        assert state == ("paused" if door == stopping_door else "active"), door
        if door == stopping_door:
            break
        assert (models.models_revision(), server.changes) == (revision, 0)
    assert (models.models_revision() > revision, server.changes) == (True, 1)
    stopped = models.get_rollout(rid)
    # count 1: door-3 makes 2 refusals; 50 %: door-3 makes 2 of 4 (not more), door-4 3 of 4
    expected = (
        "stopped: 2 of 4 agents refused it (limit 1): door-1: model.bin: sha256 differs; "
        "door-3: smoke inference: NaN"
        if max_failures.count is not None
        else "stopped: 3 of 4 agents refused it (limit 50 %): door-1: model.bin: sha256 differs; "
        "door-3: smoke inference: NaN; door-4: out of memory"
    )
    assert stopped.reason == expected
    assert (stopped.max_failures, stopped.on_failures, stopped.updated_at) == (max_failures, "pause", NOW)

    # a later refusal leaves the paused rollout as it is
    later = server.report("door-2", refused(rid, "compile failed"))
    assert (later, server.changes) == (stopped, 1)
    server.state.close()

    reopened = SqliteState(path)
    assert reopened.models.get_rollout(rid) == stopped
    assert reopened.models.list_rollouts() == [stopped]
    # the stop is in the admin audit log once, as done by the server, with the reason
    audit = reopened.list_audit(AuditFilter(NOW - timedelta(days=1), NOW + timedelta(days=1)), None, 10)
    assert [(e.time, e.who, e.action, e.target, e.outcome, e.detail) for e in audit.entries] == [
        (NOW, "server", "rollouts.pause", str(rid), "ok", expected)
    ]
    reopened.close()


def test_past_the_budget_a_rollback_rollout_is_rolled_back_and_a_failed_stop_stores_nothing(
    tmp_path: Path,
) -> None:
    server = Reporting(tmp_path / "server.db", tmp_path)
    models = server.state.models
    models.add_model(published(NEW))
    budget = MaxFailures(count=0)
    rid = models.add_rollout(
        NEW, Target("all"), "active", NOW, max_failures=budget, on_failures="rollback"
    ).rollout_id
    unlimited = models.add_rollout(NEW, Target("all"), "active", NOW).rollout_id
    for door in DOORS[:2]:
        models.announce(door, [(rid, OLD), (unlimited, OLD)], NOW)

    # the status and the rollout change are one transaction: a stop that fails leaves both as they were
    def broken(rollout: Rollout, devices: Any) -> Rollout:
        raise RuntimeError("disk I/O error")

    with pytest.raises(RuntimeError):
        models.set_agent_models("door-1", NOW, statuses=[refused(rid)], stop=broken)
    assert [d.state for d in models.rollout_devices(rid)] == ["assigned", "assigned"]

    assert server.report("door-1", refused(unlimited)).state == "active"  # no budget, no limit
    rolled = server.report("door-1", refused(rid))
    assert (rolled.state, rolled.on_failures, server.changes) == ("rolled_back", "rollback", 1)
    assert rolled.reason == "stopped: 1 of 2 agents refused it (limit 0): door-1: model.bin: sha256 differs"


def test_a_refusal_from_an_agent_the_rollout_never_reached_spends_none_of_its_budget(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A rollout for group canary with no refusal to spare: lobby-7, outside the group and never sent it,
    reports a refusal and the rollout stays active (its status is kept, for no rollout); canary-1, in the
    group but not yet recorded as sent it (its stream broke), counts and stops it."""
    server = Reporting(tmp_path / "server.db", tmp_path)
    models = server.state.models
    models.add_model(published(NEW))
    rid = models.add_rollout(
        NEW, Target("group", group="canary"), "active", NOW, max_failures=MaxFailures(count=0)
    ).rollout_id
    for device, groups in (("canary-1", ["canary"]), ("lobby-7", [])):
        server.state.register_agent(Registration(device, groups=tuple(groups)), NOW)
        models.set_agent_models(device, NOW, groups=groups)

    with caplog.at_level("WARNING"):
        assert server.report("lobby-7", refused(rid, "forged")).state == "active"
    assert "lobby-7 reported failed for rollout 1, which was never sent to it" in caplog.text
    assert [d.device_id for d in models.rollout_devices(rid)] == []
    kept = models.agent_models(("lobby-7",))["lobby-7"]
    assert [(s.model_id, s.rollout_id, s.state) for s in kept.statuses] == [(NEW, 0, "failed")]
    assert server.changes == 0

    stopped = server.report("canary-1", refused(rid, "out of memory"))
    assert (stopped.state, server.changes) == ("paused", 1)
    assert [d.device_id for d in models.rollout_devices(rid)] == ["canary-1"]


# -- over gRPC ---------------------------------------------------------------------------------------


def status(rollout_id: int, reason: str, *, retrying: bool = False) -> models_pb2.ModelStatus:
    return models_pb2.ModelStatus(
        task="expression",
        model_id=NEW,
        rollout_id=rollout_id,
        state=models_pb2.MODEL_ACTIVATION_FAILED,
        reason=reason,
        retrying=retrying,
    )


async def soon(stream: Any) -> list[tuple[str, int, int]]:
    """The stream's next assignment within 5 s in all (heartbeats in between do not extend it): long
    before the server's next poll."""
    return await asyncio.wait_for(next_models(stream), 5)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("on_failures", "last_via"), [("pause", "report"), ("rollback", "report"), ("pause", "register")]
)
def test_a_rollout_stops_itself_after_one_refusal_too_many_and_agents_hear_at_once(
    tmp_path: Path,
    pki: Pki,
    enroller: Enroller,
    model_irs: dict[str, Path],
    on_failures: str,
    last_via: str,
) -> None:
    """door-1 refuses (1 of the 1 tolerated), lobby fails for now (retrying: not counted), door-2 refuses:
    one too many, in a status report or in the statuses it brings when it registers again. The server polls
    only every minute, so the watching agents hear of it from the report itself."""
    action = {"pause": admin_pb2.FAILURE_ACTION_PAUSE, "rollback": admin_pb2.FAILURE_ACTION_ROLLBACK}

    async def scenario() -> None:
        async with serving(tmp_path, pki, enroller, **SLOW_POLL) as harness:
            admin, md = harness.admin(), harness.admin_md
            fp16 = admin_pb2.MODEL_PRECISION_FP16
            await publish(harness, upload(ir_files(model_irs[OLD]), version="fer2013", precision=fp16))
            await publish(harness, upload(ir_files(model_irs[NEW])))
            devices = ("door-1", "lobby", "door-2")
            streams = {d: await watching(harness, d, ()) for d in devices}
            started = await admin.StartRollout(
                admin_pb2.StartRolloutRequest(
                    model_id=NEW,
                    target=admin_pb2.RolloutTarget(all=True),
                    max_failures=admin_pb2.MaxFailures(count=1),
                    on_failures=action[on_failures],  # type: ignore[arg-type]
                ),
                metadata=md,
            )
            rollout = started.rollout
            assert (rollout.max_failures.count, rollout.on_failures, rollout.reason) == (
                1,
                action[on_failures],
                "",
            )
            assert not rollout.max_failures.HasField("percent")
            for stream in streams.values():
                assert await next_models(stream) == [(NEW, rollout.rollout_id, 2)]

            async def report(
                device: str, reason: str, *, retrying: bool = False, via: str = "report"
            ) -> admin_pb2.Rollout:
                statuses = [status(rollout.rollout_id, reason, retrying=retrying)]
                if via == "register":
                    await harness.fleet(device).Register(
                        fleet_pb2.RegisterRequest(device_id=device, model_statuses=statuses)
                    )
                else:
                    await harness.fleet(device).ReportModelStatus(
                        fleet_pb2.ReportModelStatusRequest(device_id=device, statuses=statuses)
                    )
                request = admin_pb2.GetRolloutRequest(rollout_id=rollout.rollout_id)
                return (await admin.GetRollout(request, metadata=md)).rollout

            assert (
                await report("door-1", "model.bin: sha256 differs")
            ).state == admin_pb2.ROLLOUT_STATE_ACTIVE
            assert (
                await report("lobby", "compile failed", retrying=True)
            ).state == admin_pb2.ROLLOUT_STATE_ACTIVE
            for stream in streams.values():
                await quiet(stream)  # within the budget: nothing changes for anyone
            stopped = await report("door-2", "smoke inference: output is NaN", via=last_via)

            expected = "stopped: 2 of 3 agents refused it (limit 1): door-1: model.bin: sha256 differs; "
            expected += "door-2: smoke inference: output is NaN"
            assert stopped.reason == expected
            if on_failures == "pause":
                assert stopped.state == admin_pb2.ROLLOUT_STATE_PAUSED
                # the refusing agents are no longer told to run it; lobby keeps trying the version
                assert await soon(streams["door-1"]) == []
                assert await soon(streams["door-2"]) == []
                await quiet(streams["lobby"])
            else:
                assert stopped.state == admin_pb2.ROLLOUT_STATE_ROLLED_BACK
                for stream in streams.values():
                    assert await soon(stream) == [(OLD, 0, 2)]
            listed = (await admin.ListRollouts(admin_pb2.ListRolloutsRequest(), metadata=md)).rollouts
            assert [(r.rollout_id, r.reason) for r in listed] == [(rollout.rollout_id, expected)]
            for stream in streams.values():
                stream.cancel()

    run(scenario)


def test_bad_failure_budgets_are_refused_naming_the_field(
    tmp_path: Path, pki: Pki, enroller: Enroller
) -> None:
    target = admin_pb2.RolloutTarget(all=True)
    bad: list[dict[str, Any]] = [
        {"max_failures": admin_pb2.MaxFailures(percent=101)},
        {"max_failures": admin_pb2.MaxFailures(count=1, percent=10)},
        {"max_failures": admin_pb2.MaxFailures()},
        {"max_failures": admin_pb2.MaxFailures(count=1), "on_failures": 7},
    ]

    async def scenario() -> list[tuple[grpc.StatusCode, str]]:
        async with serving(tmp_path, pki, enroller) as harness:
            admin = harness.admin()
            return [
                await failure(
                    admin.StartRollout(
                        admin_pb2.StartRolloutRequest(model_id=NEW, target=target, **fields),
                        metadata=harness.admin_md,
                    )
                )
                for fields in bad
            ]

    refusals = run(scenario)
    assert {code for code, _ in refusals} == {grpc.StatusCode.INVALID_ARGUMENT}
    assert [details for _, details in refusals] == [
        "max_failures.percent must be 0–100, got 101",
        "max_failures: give a count or a percent, not both",
        "max_failures: give a count (e.g. 2) or a percent (e.g. 20 %)",
        "on_failures 7 is not a known FailureAction; use PAUSE or ROLLBACK",
    ]


@pytest.mark.parametrize(
    "budget",
    [None, MaxFailures(count=0), MaxFailures(count=3), MaxFailures(percent=0), MaxFailures(percent=25)],
)
def test_a_failure_budget_and_reason_round_trip_on_the_wire(budget: MaxFailures | None) -> None:
    rollout = Rollout(
        4, "expression", NEW, Target("all"), "paused", NOW, NOW + timedelta(seconds=1), "stopped: …", budget
    )
    message = admin_wire.rollout_to_proto(rollout)
    assert (message.reason, message.on_failures) == ("stopped: …", admin_pb2.FAILURE_ACTION_PAUSE)
    assert message.HasField("max_failures") is (budget is not None)
    request = admin_pb2.StartRolloutRequest(
        model_id=NEW, target=admin_pb2.RolloutTarget(all=True), on_failures=admin_pb2.FAILURE_ACTION_ROLLBACK
    )
    if budget is not None:
        assert admin_wire.max_failures_from_proto(message.max_failures) == budget
        request.max_failures.CopyFrom(message.max_failures)
    start = admin_wire.start_rollout_from_proto(request)
    assert (start.max_failures, start.on_failures) == (budget, "rollback")
    request.max_failures.CopyFrom(admin_pb2.MaxFailures(percent=150))
    with pytest.raises(InvalidArgumentError, match=re.escape("max_failures.percent must be 0–100, got 150")):
        admin_wire.start_rollout_from_proto(request)
