"""Rollout logic, free of I/O: which agents a rollout covers, which model versions one agent should run,
and the allowed state changes of a rollout.

Coverage: a rollout in `preparing` (an embedding model whose gallery is being completed) or `rolled_back`
covers nobody; a `paused` one still covers the agents it was already announced to (they keep the new version)
and no new ones; an `active` one covers its target. A percent target is deterministic per rollout and device
(`bucket`), so widening 10 → 50 % keeps the first 10 % and adds to them.

Desired releases, per task: the newest covering rollout's version, leaving out any rollout the agent refused
(its version never decides that agent's: a refused v3 must not shadow the rollback of the rollout before it);
else, when a rolled-back rollout had been announced to the agent, the version the agent ran before it (its
files when the catalogue still has it, otherwise none: "activate your own stored copy"). When that version is
itself one a rolled-back rollout announced to the agent brought (v1 → v2 by R1, v2 → v3 by R2, both rolled
back), the chain is followed back to v1, each rollout once. Tasks with nothing desired are left out.

Failure budget: a rollout with max_failures stops itself once more of the agents it was announced to refused
it (device rows 'failed'; 'retrying' ones are still trying) than the budget tolerates: `stopped` pauses it,
or rolls it back when its on_failures says so, with a reason naming the refusals.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from facefleet.link.checks import MAX_REASON_CHARS
from facefleet.link.models import ModelRelease
from facefleet.server.domain.models import DeviceRollout, PublishedModel, Rollout, Target
from facefleet.server.errors import FailedPreconditionError, InvalidArgumentError


def bucket(rollout_id: int, device_id: str) -> int:
    """The device's place 0–99 in a rollout's percent order."""
    return int(hashlib.sha256(f"{rollout_id}:{device_id}".encode()).hexdigest()[:8], 16) % 100


def covers(rollout: Rollout, device_id: str, groups: Collection[str], *, announced: bool) -> bool:
    """Whether the rollout wants this device on its version now."""
    if rollout.state == "paused":
        return announced
    if rollout.state != "active":
        return False
    target = rollout.target
    if target.kind == "all":
        return True
    if target.kind == "group":
        return target.group in groups
    return bucket(rollout.rollout_id, device_id) < target.percent


def desired_releases(
    device_id: str,
    groups: Collection[str],
    rollouts: Sequence[Rollout],
    announced: Mapping[int, DeviceRollout],
    catalogue: Mapping[str, PublishedModel],
) -> tuple[ModelRelease, ...]:
    """The releases one device should run, sorted by task. announced: this device's rows by rollout id;
    catalogue: published models by id (retired ones left out)."""
    newest_first = sorted(rollouts, key=lambda r: r.rollout_id, reverse=True)
    releases: dict[str, ModelRelease] = {}
    for rollout in newest_first:
        if rollout.task in releases:
            continue
        model = catalogue.get(rollout.model_id)
        row = announced.get(rollout.rollout_id)
        refused = row is not None and row.state == "failed"
        if (
            model is not None
            and not refused
            and covers(rollout, device_id, groups, announced=row is not None)
        ):
            releases[rollout.task] = _release(rollout.task, model, rollout.rollout_id)
    rolled_back = [r for r in newest_first if r.state == "rolled_back" and r.rollout_id in announced]
    for rollout in rolled_back:
        if rollout.task in releases:
            continue
        before = _version_before(rollout, rolled_back, announced)
        if before:
            previous = catalogue.get(before)
            releases[rollout.task] = (
                _release(rollout.task, previous, 0)
                if previous is not None and previous.task == rollout.task
                else ModelRelease(rollout.task, before)
            )
    return tuple(releases[task] for task in sorted(releases))


def _version_before(
    rollout: Rollout, rolled_back: Sequence[Rollout], announced: Mapping[int, DeviceRollout]
) -> str:
    """The version the device ran before `rollout`, following the chain back through rolled-back rollouts
    (newest first, each at most once) while that version is itself one a rolled-back rollout brought;
    '' when the device reported none."""
    seen = {rollout.rollout_id}
    version = announced[rollout.rollout_id].previous_model_id
    if version == rollout.model_id:
        return ""
    while version:
        earlier = next(
            (
                r
                for r in rolled_back
                if r.model_id == version and r.task == rollout.task and r.rollout_id not in seen
            ),
            None,
        )
        if earlier is None:
            return version
        seen.add(earlier.rollout_id)
        version = announced[earlier.rollout_id].previous_model_id
    return ""


def _release(task: str, model: PublishedModel, rollout_id: int) -> ModelRelease:
    return ModelRelease(task, model.model_id, model.files, model.manifest_json, rollout_id)


# -- state changes -----------------------------------------------------------------------------------


def paused(rollout: Rollout, now: datetime, reason: str = "") -> Rollout:
    if rollout.state != "active":
        raise FailedPreconditionError(
            f"rollout {rollout.rollout_id} is {rollout.state.replace('_', ' ')}; only an active rollout "
            "can be paused"
        )
    return replace(rollout, state="paused", updated_at=now, reason=reason)


def resumed(rollout: Rollout, now: datetime, percent: int | None = None) -> Rollout:
    """Resume a paused rollout and/or widen a percent rollout."""
    if rollout.state not in ("active", "paused"):
        raise FailedPreconditionError(
            f"rollout {rollout.rollout_id} is {rollout.state.replace('_', ' ')}; only a paused or active "
            "rollout can be resumed; start a new rollout instead"
        )
    target = rollout.target
    if percent is not None:
        if target.kind != "percent":
            raise InvalidArgumentError(
                f"rollout {rollout.rollout_id} targets {target.describe()}, not a percentage; "
                "--percent applies only to percent rollouts"
            )
        if percent < target.percent:
            raise InvalidArgumentError(
                f"rollout {rollout.rollout_id} already covers {target.percent} %; it can only be widened "
                f"(got {percent} %); pause or roll it back to narrow it"
            )
        target = Target("percent", percent=percent)
    elif rollout.state == "active":
        raise FailedPreconditionError(
            f"rollout {rollout.rollout_id} is already active; give --percent to widen it"
        )
    return replace(rollout, state="active", target=target, updated_at=now, reason="")


def rolled_back(rollout: Rollout, now: datetime, reason: str = "") -> Rollout:
    if rollout.state == "rolled_back":
        raise FailedPreconditionError(f"rollout {rollout.rollout_id} is already rolled back")
    return replace(rollout, state="rolled_back", updated_at=now, reason=reason)


SHOWN_REFUSALS = 3
"""Most refusals a stopped rollout's reason quotes (its counts are complete)."""


def stopped(rollout: Rollout, devices: Sequence[DeviceRollout], now: datetime) -> Rollout:
    """The rollout paused (or rolled back, as its on_failures says) with the reason, when more of the
    agents it was announced to (devices: its rows) refused it than its max_failures tolerates; otherwise
    unchanged: no budget, within it, or nothing left to stop (a paused rollout can still be rolled back)."""
    budget = rollout.max_failures
    refused = [d for d in devices if d.state == "failed"]
    if budget is None or not budget.exceeded(len(refused), len(devices)):
        return rollout
    quoted = "; ".join(f"{d.device_id}: {d.reason or 'no reason given'}" for d in refused[:SHOWN_REFUSALS])
    more = f"; and {len(refused) - SHOWN_REFUSALS} more" if len(refused) > SHOWN_REFUSALS else ""
    reason = (
        f"stopped: {len(refused)} of {len(devices)} agents refused it (limit {budget.describe()}): "
        f"{quoted}{more}"
    )[:MAX_REASON_CHARS]
    if rollout.on_failures == "rollback" and rollout.state in ("active", "paused"):
        return rolled_back(rollout, now, reason)
    if rollout.on_failures == "pause" and rollout.state == "active":
        return paused(rollout, now, reason)
    return rollout


def stalled(rollout: Rollout, now: datetime, bound: timedelta) -> bool:
    """A preparing rollout whose preparing process showed no progress for longer than bound: it is gone."""
    return rollout.state == "preparing" and now - rollout.updated_at > bound


def given_up(rollout: Rollout, now: datetime, bound: timedelta) -> Rollout:
    """A stalled rollout rolled back, saying why; any other unchanged (its preparer moved meanwhile)."""
    if not stalled(rollout, now, bound):
        return rollout
    since = rollout.updated_at.isoformat(timespec="seconds")
    return rolled_back(
        rollout,
        now,
        f"its gallery was being prepared, but the preparing process showed no progress since {since} "
        f"(more than {bound.total_seconds():.0f} s; killed?); start the rollout again",
    )


def activated(rollout: Rollout, now: datetime) -> Rollout:
    """An embedding rollout whose gallery is complete."""
    if rollout.state != "preparing":
        raise FailedPreconditionError(
            f"rollout {rollout.rollout_id} is {rollout.state.replace('_', ' ')}, not preparing"
        )
    return replace(rollout, state="active", updated_at=now)
