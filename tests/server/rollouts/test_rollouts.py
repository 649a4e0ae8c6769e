"""Rollout logic without I/O: coverage by target and state, deterministic percent buckets, the desired
releases of one agent (including rollbacks to the version it ran before), the allowed state changes, and
the failure budget that stops a rollout by itself."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from facefleet.link.errors import LinkError
from facefleet.link.models import ModelFile, ModelRelease, ModelStatus
from facefleet.server.domain.models import (
    DeviceRollout,
    FailureAction,
    MaxFailures,
    PublishedModel,
    Rollout,
    RolloutState,
    Target,
)
from facefleet.server.errors import FailedPreconditionError, InvalidArgumentError
from facefleet.server.rollouts import plan as rollouts
from facefleet.server.rollouts.plan import bucket, covers, desired_releases

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)
DEVICES = [f"box-{i:03d}" for i in range(400)]


def model(model_id: str, task: str = "expression") -> PublishedModel:
    return PublishedModel(
        model_id=model_id,
        task=task,
        precision="FP32",
        licence="MIT",
        files=(ModelFile("model.bin", 10, "a" * 64), ModelFile("model.xml", 5, "b" * 64)),
        manifest_json=f'{{"task": "{task}"}}',
        published_at=NOW,
    )


def rollout(
    rollout_id: int,
    model_id: str,
    target: Target | None = None,
    state: RolloutState = "active",
    task: str = "expression",
) -> Rollout:
    return Rollout(rollout_id, task, model_id, target or Target("all"), state, NOW, NOW)


def row(rollout_id: int, device_id: str, previous: str = "mini-xception@fer2013") -> DeviceRollout:
    return DeviceRollout(rollout_id, device_id, previous, "assigned", "", NOW)


CATALOGUE = {m.model_id: m for m in (model("mini-xception@fer2013"), model("mini-xception@fer2013-fp32"))}
NEW = "mini-xception@fer2013-fp32"


def test_a_percent_bucket_is_fixed_per_rollout_and_device_and_spread_evenly() -> None:
    assert bucket(7, "door-1") == bucket(7, "door-1")
    counts = [sum(bucket(7, d) < p for d in DEVICES) for p in (10, 50)]
    assert 20 <= counts[0] <= 60 and 160 <= counts[1] <= 240
    assert [bucket(7, d) for d in DEVICES[:20]] != [bucket(8, d) for d in DEVICES[:20]]


def test_widening_a_percent_rollout_keeps_the_agents_it_already_covered() -> None:
    narrow = rollout(3, NEW, Target("percent", percent=10))
    wide = rollouts.resumed(narrow, NOW, percent=50)
    first = {d for d in DEVICES if covers(narrow, d, (), announced=False)}
    second = {d for d in DEVICES if covers(wide, d, (), announced=False)}
    assert first and first < second and len(second) > 2 * len(first)


@pytest.mark.parametrize(
    ("target", "state", "groups", "announced", "expected"),
    [
        (Target("all"), "active", (), False, True),
        (Target("all"), "preparing", (), True, False),
        (Target("all"), "rolled_back", (), True, False),
        (Target("all"), "paused", (), False, False),
        (Target("all"), "paused", (), True, True),
        (Target("group", group="lobby"), "active", ("lobby", "east"), False, True),
        (Target("group", group="lobby"), "active", ("east",), False, False),
        (Target("group", group="lobby"), "active", (), False, False),
        (Target("percent", percent=100), "active", (), False, True),
    ],
)
def test_coverage_by_target_and_state(
    target: Target, state: RolloutState, groups: tuple[str, ...], announced: bool, expected: bool
) -> None:
    assert covers(rollout(1, NEW, target, state), "door-1", groups, announced=announced) is expected


def test_no_rollout_means_no_release() -> None:
    assert desired_releases("door-1", (), [], {}, CATALOGUE) == ()


def test_the_newest_covering_rollout_of_each_task_wins_and_others_stay_untouched() -> None:
    embedding = model("sface@2021dec-fp32", "embedding")
    catalogue = {**CATALOGUE, embedding.model_id: embedding}
    old = rollout(1, "mini-xception@fer2013")
    new = rollout(2, NEW, Target("group", group="lobby"))
    emb = rollout(3, embedding.model_id, task="embedding")
    lobby = desired_releases("door-1", ("lobby",), [old, new, emb], {}, catalogue)
    assert [(r.task, r.model_id, r.rollout_id) for r in lobby] == [
        ("embedding", "sface@2021dec-fp32", 3),
        ("expression", NEW, 2),
    ]
    assert lobby[1].files == CATALOGUE[NEW].files and lobby[1].manifest_json == CATALOGUE[NEW].manifest_json
    elsewhere = desired_releases("door-2", ("east",), [old, new, emb], {}, catalogue)
    assert [(r.model_id, r.rollout_id) for r in elsewhere] == [
        ("sface@2021dec-fp32", 3),
        ("mini-xception@fer2013", 1),
    ]


def test_a_paused_rollout_keeps_its_agents_and_takes_no_new_ones() -> None:
    paused = rollouts.paused(rollout(4, NEW), NOW)
    announced = {4: row(4, "door-1")}
    assert [r.model_id for r in desired_releases("door-1", (), [paused], announced, CATALOGUE)] == [NEW]
    assert desired_releases("door-2", (), [paused], {}, CATALOGUE) == ()
    resumed = rollouts.resumed(paused, NOW)
    assert [r.model_id for r in desired_releases("door-2", (), [resumed], {}, CATALOGUE)] == [NEW]


def test_a_rollback_returns_announced_agents_to_their_previous_version() -> None:
    back = rollouts.rolled_back(rollout(5, NEW), NOW)
    previous = "mini-xception@fer2013"
    [release] = desired_releases("door-1", (), [back], {5: row(5, "door-1", previous)}, CATALOGUE)
    assert (release.model_id, release.rollout_id, release.files) == (previous, 0, CATALOGUE[previous].files)
    unpublished = {5: row(5, "door-1", "mini-xception@site-tuned")}
    assert desired_releases("door-1", (), [back], unpublished, CATALOGUE) == (
        ModelRelease("expression", "mini-xception@site-tuned"),
    )
    assert desired_releases("door-2", (), [back], {}, CATALOGUE) == ()
    assert desired_releases("door-1", (), [back], {5: row(5, "door-1", "")}, CATALOGUE) == ()


V1, V2, V3 = "mini-xception@v1", "mini-xception@v2", "mini-xception@v3"
CHAIN = {m.model_id: m for m in (model(V1), model(V2), model(V3))}


def test_a_refused_rollout_never_decides_the_version_and_does_not_shadow_a_rollback() -> None:
    """R1 moved door-1 v1 → v2; door-1 refused R2's v3 (a tampered file) and keeps v2. Rolling R1 back
    returns door-1 to v1 although R2 is still active; door-2, which took v3, stays on it."""
    r1, r2 = rollout(1, V2), rollout(2, V3)
    refused = replace(row(2, "door-1", V2), state="failed", reason="model.bin: sha256 differs")
    announced = {1: row(1, "door-1", V1), 2: refused}
    [before] = desired_releases("door-1", (), [r1, r2], announced, CHAIN)
    assert before.model_id == V2  # R1's version, not the refused v3
    back = rollouts.rolled_back(r1, NOW)
    [release] = desired_releases("door-1", (), [back, r2], announced, CHAIN)
    assert (release.model_id, release.rollout_id) == (V1, 0)
    took_it = {2: replace(row(2, "door-2", V2), state="active")}
    assert [r.model_id for r in desired_releases("door-2", (), [back, r2], took_it, CHAIN)] == [V3]
    retrying = {2: replace(row(2, "door-3", V2), state="retrying", reason="no space left")}
    assert [r.model_id for r in desired_releases("door-3", (), [back, r2], retrying, CHAIN)] == [V3]


@pytest.mark.parametrize("order", [(2, 1), (1, 2)])
def test_chained_rollbacks_return_agents_to_the_version_before_the_first(order: tuple[int, int]) -> None:
    """R1 moved door-1 v1 → v2, R2 v2 → v3; whichever is rolled back first, both rolled back means v1."""
    states = {1: rollout(1, V2), 2: rollout(2, V3)}
    announced = {1: row(1, "door-1", V1), 2: row(2, "door-1", V2)}
    first, second = order
    states[first] = rollouts.rolled_back(states[first], NOW)
    [halfway] = desired_releases("door-1", (), list(states.values()), announced, CHAIN)
    assert halfway.model_id == (V2 if first == 2 else V3)
    states[second] = rollouts.rolled_back(states[second], NOW)
    [release] = desired_releases("door-1", (), list(states.values()), announced, CHAIN)
    assert (release.model_id, release.rollout_id, release.files) == (V1, 0, CHAIN[V1].files)


def test_a_chain_of_rollbacks_that_loops_ends_at_the_version_before_it() -> None:
    """v1 → v2 (R1), v2 → v1 (R2), v1 → v2 (R3), all rolled back: the agent started on v1."""
    back = [rollouts.rolled_back(rollout(i, m), NOW) for i, m in ((1, V2), (2, V1), (3, V2))]
    announced = {1: row(1, "door-1", V1), 2: row(2, "door-1", V2), 3: row(3, "door-1", V1)}
    [release] = desired_releases("door-1", (), back, announced, CHAIN)
    assert release.model_id == V1
    other_device = {3: row(3, "door-2", V1)}  # only R3 was announced to it
    [alone] = desired_releases("door-2", (), back, other_device, CHAIN)
    assert alone.model_id == V1


def test_a_retired_or_unknown_model_is_never_released() -> None:
    assert desired_releases("door-1", (), [rollout(1, "mini-xception@gone")], {}, CATALOGUE) == ()


@pytest.mark.parametrize(
    ("change", "state", "error"),
    [
        (lambda r: rollouts.paused(r, NOW), "active", None),
        (lambda r: rollouts.paused(r, NOW), "paused", FailedPreconditionError),
        (lambda r: rollouts.paused(r, NOW), "preparing", FailedPreconditionError),
        (lambda r: rollouts.resumed(r, NOW), "paused", None),
        (lambda r: rollouts.resumed(r, NOW), "active", FailedPreconditionError),
        (lambda r: rollouts.resumed(r, NOW), "rolled_back", FailedPreconditionError),
        (lambda r: rollouts.resumed(r, NOW, percent=5), "active", InvalidArgumentError),
        (lambda r: rollouts.resumed(r, NOW, percent=60), "active", None),
        (lambda r: rollouts.rolled_back(r, NOW), "paused", None),
        (lambda r: rollouts.rolled_back(r, NOW), "preparing", None),
        (lambda r: rollouts.rolled_back(r, NOW), "rolled_back", FailedPreconditionError),
        (lambda r: rollouts.activated(r, NOW), "preparing", None),
        (lambda r: rollouts.activated(r, NOW), "active", FailedPreconditionError),
    ],
)
def test_state_changes(change: object, state: RolloutState, error: type[Exception] | None) -> None:
    start = rollout(9, NEW, Target("percent", percent=10), state)
    apply = change  # a table of callables
    assert callable(apply)
    if error is None:
        assert apply(start).state in ("active", "paused", "rolled_back")
    else:
        with pytest.raises(error, match="rollout 9"):
            apply(start)


@pytest.mark.parametrize(
    ("state", "silent_s", "expected"),
    [
        ("preparing", 121, "rolled_back"),
        ("preparing", 119, "preparing"),
        ("preparing", 0, "preparing"),
        ("active", 3600, "active"),
        ("paused", 3600, "paused"),
        ("rolled_back", 3600, "rolled_back"),
    ],
)
def test_a_preparing_rollout_without_progress_is_given_up(
    state: RolloutState, silent_s: int, expected: RolloutState
) -> None:
    bound = timedelta(seconds=120)
    start = rollout(9, NEW, state=state, task="embedding")
    now = NOW + timedelta(seconds=silent_s)
    assert rollouts.stalled(start, now, bound) is (expected != state)
    after = rollouts.given_up(start, now, bound)
    assert after.state == expected
    if expected == state:
        assert after == start
    else:
        assert after.updated_at == now
        assert "no progress since 2026-11-23T12:00:00+00:00" in after.reason
        assert "start the rollout again" in after.reason


def test_only_percent_rollouts_can_be_widened() -> None:
    with pytest.raises(InvalidArgumentError, match="not a percentage"):
        rollouts.resumed(rollout(2, NEW, Target("all")), NOW, percent=50)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "percent", "percent": 0}, "1–100"),
        ({"kind": "percent", "percent": 101}, "1–100"),
        ({"kind": "group", "group": "two words"}, "not valid"),
        ({"kind": "all", "group": "lobby"}, "only when"),
        ({"kind": "everyone"}, "must be one of"),
    ],
)
def test_bad_targets_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(LinkError, match=message):
        Target(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"task": "Faces!"}, "not a task name"),
        ({"model_id": "no-version"}, "name>@<version"),
        ({"reason": "x" * 513}, "limit is 512"),
        ({"state": "assigned"}, "state must be"),
    ],
)
def test_bad_model_statuses_are_refused(kwargs: dict[str, object], message: str) -> None:
    good = ModelStatus("expression", NEW, 1, "failed", "sha256 differs")
    with pytest.raises(LinkError, match=message):
        replace(good, **kwargs)  # type: ignore[arg-type]


def test_a_status_reason_is_kept_on_one_line() -> None:
    assert ModelStatus("expression", NEW, 1, "failed", "compile\nfailed").reason == "compile failed"


# -- failure budget ----------------------------------------------------------------------------------


def devices(*states: str) -> list[DeviceRollout]:
    """Rows of rollout 9 on door-1, door-2, … in these states; refusals say which door refused."""
    return [
        DeviceRollout(9, f"door-{i}", "mini-xception@fer2013", state, f"reason {i}", NOW)  # type: ignore[arg-type]
        for i, state in enumerate(states, 1)
    ]


@pytest.mark.parametrize(
    ("budget", "states", "stops"),
    [
        (MaxFailures(count=2), ("failed", "failed", "active", "active"), False),
        (MaxFailures(count=2), ("failed", "failed", "failed", "active"), True),
        (MaxFailures(count=0), ("failed",), True),
        (MaxFailures(count=0), ("active", "assigned"), False),
        (MaxFailures(count=1), ("failed", "retrying", "retrying", "retrying"), False),
        (MaxFailures(percent=25), ("failed", "active", "active", "active"), False),
        (MaxFailures(percent=25), ("failed", "failed", "active", "active"), True),
        (MaxFailures(percent=25), ("failed", "retrying", "retrying", "active"), False),
        (MaxFailures(percent=0), ("active",) * 10, False),
        (MaxFailures(percent=0), ("failed", *("active",) * 99), True),
        (MaxFailures(percent=100), ("failed",) * 3, False),
        (None, ("failed",) * 3, False),
    ],
)
def test_a_rollout_stops_once_refusals_pass_its_budget_as_a_count_or_a_percent(
    budget: MaxFailures | None, states: tuple[str, ...], stops: bool
) -> None:
    start = replace(rollout(9, NEW), max_failures=budget)
    after = rollouts.stopped(start, devices(*states), NOW + timedelta(seconds=1))
    assert after.state == ("paused" if stops else "active")
    assert (after == start) is not stops


def test_the_reason_of_a_stopped_rollout_counts_and_names_the_refusals() -> None:
    start = replace(rollout(9, NEW), max_failures=MaxFailures(count=2))
    after = rollouts.stopped(start, devices("failed", "active", "failed", "retrying", "failed"), NOW)
    assert after.reason == (
        "stopped: 3 of 5 agents refused it (limit 2): door-1: reason 1; door-3: reason 3; door-5: reason 5"
    )
    many = rollouts.stopped(
        replace(start, max_failures=MaxFailures(percent=10)), devices(*("failed",) * 5, "active"), NOW
    )
    assert many.reason.startswith("stopped: 5 of 6 agents refused it (limit 10 %): door-1: reason 1;")
    assert many.reason.endswith("door-3: reason 3; and 2 more")


@pytest.mark.parametrize(
    ("on_failures", "state", "expected"),
    [
        ("pause", "active", "paused"),
        ("pause", "paused", "paused"),
        ("pause", "rolled_back", "rolled_back"),
        ("rollback", "active", "rolled_back"),
        ("rollback", "paused", "rolled_back"),
        ("rollback", "rolled_back", "rolled_back"),
    ],
)
def test_past_its_budget_a_rollout_pauses_or_rolls_back_as_chosen(
    on_failures: FailureAction, state: RolloutState, expected: RolloutState
) -> None:
    start = replace(rollout(9, NEW, state=state), max_failures=MaxFailures(count=0), on_failures=on_failures)
    later = NOW + timedelta(seconds=5)
    after = rollouts.stopped(start, devices("failed", "active"), later)
    assert after.state == expected
    if expected == state:
        assert after == start  # nothing left to stop: no new reason, no new time
    else:
        assert after.updated_at == later and after.reason.startswith("stopped: 1 of 2 agents refused it")


def test_resuming_a_stopped_rollout_clears_its_reason() -> None:
    start = replace(rollout(9, NEW), max_failures=MaxFailures(count=0))
    stopped = rollouts.stopped(start, devices("failed"), NOW)
    assert stopped.reason and rollouts.resumed(stopped, NOW).reason == ""
    assert rollouts.paused(start, NOW).reason == ""  # an operator's pause gives none


@pytest.mark.parametrize(
    ("text", "expected", "error"),
    [
        ("2", MaxFailures(count=2), None),
        ("0", MaxFailures(count=0), None),
        ("20%", MaxFailures(percent=20), None),
        ("20 %", MaxFailures(percent=20), None),
        ("-1", None, "max_failures.count must be 0–1000000, got -1"),
        ("101%", None, "max_failures.percent must be 0–100, got 101"),
        ("-5%", None, "max_failures.percent must be 0–100, got -5"),
        ("two", None, "neither a count nor a percent"),
        ("", None, "neither a count nor a percent"),
    ],
)
def test_a_failure_budget_is_parsed_as_a_count_or_a_percent(
    text: str, expected: MaxFailures | None, error: str | None
) -> None:
    if error is None:
        assert MaxFailures.parse(text) == expected
        return
    with pytest.raises(InvalidArgumentError, match=re.escape(error)):
        MaxFailures.parse(text)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "give a count"),
        ({"count": 1, "percent": 10}, "not both"),
        ({"count": -1}, "max_failures.count must be 0–1000000"),
        ({"percent": 101}, "max_failures.percent must be 0–100"),
    ],
)
def test_bad_failure_budgets_are_refused(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=re.escape(message)):
        MaxFailures(**kwargs)
    with pytest.raises(InvalidArgumentError, match="on_failures must be one of pause, rollback"):
        replace(rollout(9, NEW), on_failures="retry")  # type: ignore[arg-type]
