"""SQLite tables of model versions: the catalogue, rollouts, per-device rollout rows, agents' groups and
latest model statuses. A companion of facefleet.server.state.sqlite.state.SqliteState: it shares its
connections and transactions (its `models` attribute), and SCHEMA is its migration 2 (idempotent: IF NOT
EXISTS), SCHEMA_3 and SCHEMA_4 its migrations 3 and 4."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import cast

from facefleet.link.models import Activation, ModelFile, ModelStatus
from facefleet.server.domain.models import (
    AgentModels,
    DeviceRollout,
    DeviceState,
    FailureAction,
    MaxFailures,
    PublishedModel,
    Rollout,
    RolloutState,
    Target,
    TargetKind,
)
from facefleet.server.domain.queries import from_us, to_us
from facefleet.server.errors import AlreadyExistsError, FailedPreconditionError, NotFoundError
from facefleet.server.state.models import ModelState, Stop
from facefleet.server.state.sql.meta import Connection, Transactions, bump, counter

_REVISION_KEY = "models_revision"
_MODEL_COLUMNS = "model_id, task, precision, licence, files_json, manifest_json, published_us, retired_us"
_ROLLOUT_COLUMNS = (
    "rollout_id, task, model_id, target_kind, target_group, target_percent, state, created_us, updated_us, "
    "reason, max_failures_count, max_failures_percent, on_failures"
)
_DEVICE_COLUMNS = "rollout_id, device_id, previous_model_id, state, reason, updated_us"


class SqlModelState(ModelState):
    """Model versions and rollouts in the server's SQLite database, in SqliteState's transactions."""

    def __init__(self, core: Transactions) -> None:
        self._core = core

    def models_revision(self) -> int:
        with self._core.connection() as conn:
            return counter(conn, _REVISION_KEY)

    # -- catalogue -----------------------------------------------------------------------------------

    def add_model(self, model: PublishedModel) -> PublishedModel:
        with self._core.write() as conn:
            existing = _model(conn, model.model_id)
            if existing is not None:
                if existing.task == model.task and existing.files == model.files:
                    return existing
                raise AlreadyExistsError(
                    f"model {model.model_id} is already published ({existing.task}) with other files; "
                    "publish this one under another --version"
                )
            conn.execute(
                f"INSERT INTO models ({_MODEL_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, NULL)",  # noqa: S608
                (
                    model.model_id,
                    model.task,
                    model.precision,
                    model.licence,
                    json.dumps([[f.name, f.size, f.sha256] for f in model.files]),
                    model.manifest_json,
                    to_us(model.published_at),
                ),
            )
            bump(conn, _REVISION_KEY)
            return _require_model(conn, model.model_id)

    def get_model(self, model_id: str) -> PublishedModel:
        with self._core.connection() as conn:
            return _require_model(conn, model_id)

    def list_models(self) -> list[PublishedModel]:
        with self._core.connection() as conn:
            rows = conn.execute(
                f"SELECT {_MODEL_COLUMNS} FROM models ORDER BY task, model_id"  # noqa: S608
            ).fetchall()
        return [_model_from_row(row) for row in rows]

    def retire_model(self, model_id: str, now: datetime) -> PublishedModel:
        with self._core.write() as conn:
            model = _require_model(conn, model_id)
            using = [
                f"{row[0]} ({row[1]})"
                for row in conn.execute(
                    "SELECT rollout_id, state FROM rollouts WHERE model_id = ? AND state != 'rolled_back' "
                    "ORDER BY rollout_id",
                    (model_id,),
                )
            ]
            if using:
                raise FailedPreconditionError(
                    f"model {model_id} is used by rollout {', '.join(using)}; roll it back before retiring "
                    "the model (`facefleet-server rollout rollback ID`)"
                )
            if model.retired:
                return model
            conn.execute("UPDATE models SET retired_us = ? WHERE model_id = ?", (to_us(now), model_id))
            bump(conn, _REVISION_KEY)
            return _require_model(conn, model_id)

    # -- rollouts ------------------------------------------------------------------------------------

    def add_rollout(
        self,
        model_id: str,
        target: Target,
        state: RolloutState,
        now: datetime,
        *,
        max_failures: MaxFailures | None = None,
        on_failures: FailureAction = "pause",
    ) -> Rollout:
        with self._core.write() as conn:
            model = _require_model(conn, model_id)
            if model.retired:
                raise FailedPreconditionError(
                    f"model {model_id} is retired and cannot be rolled out; publish a new version"
                )
            cursor = conn.execute(
                "INSERT INTO rollouts (task, model_id, target_kind, target_group, target_percent, state, "
                "created_us, updated_us, max_failures_count, max_failures_percent, on_failures) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING rollout_id",
                (
                    model.task,
                    model_id,
                    target.kind,
                    target.group,
                    target.percent,
                    state,
                    to_us(now),
                    to_us(now),
                    max_failures.count if max_failures else None,
                    max_failures.percent if max_failures else None,
                    on_failures,
                ),
            )
            bump(conn, _REVISION_KEY)
            return _require_rollout(conn, int(cursor.fetchone()[0]))

    def get_rollout(self, rollout_id: int) -> Rollout:
        with self._core.connection() as conn:
            return _require_rollout(conn, rollout_id)

    def list_rollouts(self) -> list[Rollout]:
        with self._core.connection() as conn:
            rows = conn.execute(
                f"SELECT {_ROLLOUT_COLUMNS} FROM rollouts ORDER BY rollout_id DESC"  # noqa: S608
            ).fetchall()
        return [_rollout_from_row(row) for row in rows]

    def change_rollout(self, rollout_id: int, change: Callable[[Rollout], Rollout]) -> Rollout:
        with self._core.write() as conn:
            _update_rollout(conn, change(_require_rollout(conn, rollout_id)))
            bump(conn, _REVISION_KEY)
            return _require_rollout(conn, rollout_id)

    def touch_rollout(self, rollout_id: int, now: datetime) -> bool:
        with self._core.write() as conn:
            cursor = conn.execute(
                "UPDATE rollouts SET updated_us = CASE WHEN updated_us > ? THEN updated_us ELSE ? END "
                "WHERE rollout_id = ? AND state = 'preparing'",
                (to_us(now), to_us(now), rollout_id),
            )
            return cursor.rowcount == 1

    def device_rollouts(self, device_id: str) -> dict[int, DeviceRollout]:
        with self._core.connection() as conn:
            rows = conn.execute(
                f"SELECT {_DEVICE_COLUMNS} FROM rollout_devices WHERE device_id = ?",  # noqa: S608
                (device_id,),
            ).fetchall()
        return {int(row[0]): _device_from_row(row) for row in rows}

    def rollout_devices(self, rollout_id: int) -> list[DeviceRollout]:
        with self._core.connection() as conn:
            _require_rollout(conn, rollout_id)
            rows = conn.execute(
                f"SELECT {_DEVICE_COLUMNS} FROM rollout_devices WHERE rollout_id = ? "  # noqa: S608
                "ORDER BY device_id",
                (rollout_id,),
            ).fetchall()
        return [_device_from_row(row) for row in rows]

    def rollout_state_counts(self, rollout_ids: Sequence[int]) -> dict[int, dict[DeviceState, int]]:
        counts: dict[int, dict[DeviceState, int]] = {int(rollout_id): {} for rollout_id in rollout_ids}
        if not counts:
            return counts
        marks = ", ".join("?" * len(counts))
        with self._core.connection() as conn:
            rows = conn.execute(
                f"SELECT rollout_id, state, COUNT(*) FROM rollout_devices WHERE rollout_id IN ({marks}) "  # noqa: S608
                "GROUP BY rollout_id, state",
                tuple(counts),
            ).fetchall()
        for rollout_id, state, count in rows:
            counts[int(rollout_id)][cast(DeviceState, state)] = int(count)
        return counts

    def announce(self, device_id: str, announced: Sequence[tuple[int, str]], now: datetime) -> None:
        if not announced:
            return
        with self._core.write() as conn:
            conn.executemany(
                "INSERT INTO rollout_devices (rollout_id, device_id, previous_model_id, state, reason, "
                "updated_us) VALUES (?, ?, ?, 'assigned', '', ?) ON CONFLICT DO NOTHING",
                [(rollout_id, device_id, previous, to_us(now)) for rollout_id, previous in announced],
            )

    # -- agents --------------------------------------------------------------------------------------

    def set_agent_models(
        self,
        device_id: str,
        now: datetime,
        *,
        statuses: Sequence[ModelStatus] = (),
        groups: Sequence[str] | None = None,
        model_versions: Mapping[str, str] | None = None,
        model_precisions: Mapping[str, str] | None = None,
        stop: Stop | None = None,
    ) -> list[Rollout]:
        refused: set[int] = set()
        with self._core.write() as conn:
            if groups is not None:
                conn.execute("DELETE FROM agent_groups WHERE device_id = ?", (device_id,))
                conn.executemany(
                    "INSERT INTO agent_groups (device_id, group_name) VALUES (?, ?)",
                    [(device_id, g) for g in groups],
                )
            for s in statuses:
                time_us = to_us(s.time or now)
                conn.execute(
                    "INSERT INTO agent_model_statuses (device_id, task, model_id, rollout_id, state, reason, "
                    "time_us) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (device_id, task) DO UPDATE SET "
                    "model_id = excluded.model_id, rollout_id = excluded.rollout_id, state = excluded.state, "
                    "reason = excluded.reason, time_us = excluded.time_us",
                    (device_id, s.task, s.model_id, s.rollout_id, s.state, s.reason, time_us),
                )
                if s.rollout_id:
                    device_state = "retrying" if s.state == "failed" and not s.final else s.state
                    cursor = conn.execute(
                        "UPDATE rollout_devices SET state = ?, reason = ?, updated_us = ? "
                        "WHERE rollout_id = ? AND device_id = ?",
                        (device_state, s.reason, to_us(now), s.rollout_id, device_id),
                    )
                    if device_state == "failed" and cursor.rowcount == 1:
                        refused.add(s.rollout_id)
            for column, given in (
                ("model_versions_json", model_versions),
                ("model_precisions_json", model_precisions),
            ):
                if given:
                    row = conn.execute(
                        f"SELECT {column} FROM agents WHERE device_id = ?",  # noqa: S608 (a fixed name)
                        (device_id,),
                    ).fetchone()
                    if row is not None:
                        merged = {**json.loads(row[0]), **given}
                        conn.execute(
                            f"UPDATE agents SET {column} = ? WHERE device_id = ?",  # noqa: S608
                            (json.dumps(merged, sort_keys=True), device_id),
                        )
            return _stop_refused(conn, sorted(refused), stop) if stop is not None else []

    def agent_models(self, device_ids: Sequence[str] = ()) -> dict[str, AgentModels]:
        with self._core.read() as conn:
            groups: dict[str, list[str]] = {}
            statuses: dict[str, list[ModelStatus]] = {}
            for device_id, group in _rows(conn, "device_id, group_name", "agent_groups", device_ids):
                groups.setdefault(device_id, []).append(group)
            columns = "device_id, task, model_id, rollout_id, state, reason, time_us"
            for row in _rows(conn, columns, "agent_model_statuses", device_ids):
                statuses.setdefault(row[0], []).append(
                    ModelStatus(
                        row[1], row[2], int(row[3]), cast(Activation, row[4]), row[5], from_us(int(row[6]))
                    )
                )
        return {
            device_id: AgentModels(
                device_id, tuple(groups.get(device_id, ())), tuple(statuses.get(device_id, ()))
            )
            for device_id in sorted({*groups, *statuses})
        }

    def people_without_model(self, model_id: str) -> list[str]:
        with self._core.connection() as conn:
            return [
                row[0]
                for row in conn.execute(
                    "SELECT person_id FROM people WHERE person_id NOT IN "
                    "(SELECT person_id FROM embeddings WHERE model_id = ?) ORDER BY person_id",
                    (model_id,),
                )
            ]


def _rows(conn: Connection, columns: str, table: str, device_ids: Sequence[str]) -> Iterator[tuple[str, ...]]:
    """Rows of an agent table, for some devices or all, sorted by device id then the second column."""
    order = columns.split(", ")[1]
    if not device_ids:
        yield from conn.execute(f"SELECT {columns} FROM {table} ORDER BY device_id, {order}").fetchall()  # noqa: S608
        return
    marks = ", ".join("?" * len(device_ids))
    yield from conn.execute(
        f"SELECT {columns} FROM {table} WHERE device_id IN ({marks}) ORDER BY device_id, {order}",  # noqa: S608
        list(device_ids),
    ).fetchall()


def _stop_refused(conn: Connection, rollout_ids: Sequence[int], stop: Stop) -> list[Rollout]:
    """Apply `stop` to each refused rollout with its device rows; store and return the changed ones."""
    changed = []
    for rollout_id in rollout_ids:
        rollout = _require_rollout(conn, rollout_id)
        devices = [
            _device_from_row(row)
            for row in conn.execute(
                f"SELECT {_DEVICE_COLUMNS} FROM rollout_devices WHERE rollout_id = ? "  # noqa: S608
                "ORDER BY device_id",
                (rollout_id,),
            )
        ]
        new = stop(rollout, devices)
        if new != rollout:
            _update_rollout(conn, new)
            changed.append(_require_rollout(conn, rollout_id))
    if changed:
        bump(conn, _REVISION_KEY)
    return changed


def _update_rollout(conn: Connection, new: Rollout) -> None:
    """Store what a change may alter: target, state, updated_at and reason (not its budget)."""
    conn.execute(
        "UPDATE rollouts SET target_kind = ?, target_group = ?, target_percent = ?, state = ?, "
        "updated_us = ?, reason = ? WHERE rollout_id = ?",
        (
            new.target.kind,
            new.target.group,
            new.target.percent,
            new.state,
            to_us(new.updated_at),
            new.reason,
            new.rollout_id,
        ),
    )


def _model(conn: Connection, model_id: str) -> PublishedModel | None:
    row = conn.execute(
        f"SELECT {_MODEL_COLUMNS} FROM models WHERE model_id = ?",  # noqa: S608
        (model_id,),
    ).fetchone()
    return _model_from_row(row) if row else None


def _require_model(conn: Connection, model_id: str) -> PublishedModel:
    model = _model(conn, model_id)
    if model is None:
        raise NotFoundError(
            f"model {model_id} is not published; `facefleet-server models list` shows the published ones"
        )
    return model


def _model_from_row(row: tuple[object, ...]) -> PublishedModel:
    model_id, task, precision, licence, files_json, manifest_json, published_us, retired_us = row
    return PublishedModel(
        model_id=str(model_id),
        task=str(task),
        precision=str(precision),
        licence=str(licence),
        files=tuple(ModelFile(str(n), int(s), str(h)) for n, s, h in json.loads(str(files_json))),
        manifest_json=str(manifest_json),
        published_at=from_us(int(str(published_us))),
        retired_at=None if retired_us is None else from_us(int(str(retired_us))),
    )


def _require_rollout(conn: Connection, rollout_id: int) -> Rollout:
    row = conn.execute(
        f"SELECT {_ROLLOUT_COLUMNS} FROM rollouts WHERE rollout_id = ?",  # noqa: S608
        (rollout_id,),
    ).fetchone()
    if row is None:
        raise NotFoundError(f"no rollout {rollout_id}; `facefleet-server rollout list` shows them")
    return _rollout_from_row(row)


def _rollout_from_row(row: tuple[object, ...]) -> Rollout:
    rollout_id, task, model_id, kind, group, percent, state, created_us, updated_us, reason = row[:10]
    count, budget_percent, on_failures = row[10:]
    budget = (
        None
        if count is None and budget_percent is None
        else MaxFailures(
            None if count is None else int(str(count)),
            None if budget_percent is None else int(str(budget_percent)),
        )
    )
    return Rollout(
        rollout_id=int(str(rollout_id)),
        task=str(task),
        model_id=str(model_id),
        target=Target(cast(TargetKind, kind), str(group), int(str(percent))),
        state=cast(RolloutState, state),
        created_at=from_us(int(str(created_us))),
        updated_at=from_us(int(str(updated_us))),
        reason=str(reason),
        max_failures=budget,
        on_failures=cast(FailureAction, on_failures),
    )


def _device_from_row(row: tuple[object, ...]) -> DeviceRollout:
    rollout_id, device_id, previous, state, reason, updated_us = row
    return DeviceRollout(
        rollout_id=int(str(rollout_id)),
        device_id=str(device_id),
        previous_model_id=str(previous),
        state=cast(DeviceState, state),
        reason=str(reason),
        updated_at=from_us(int(str(updated_us))),
    )
