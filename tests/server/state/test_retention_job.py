"""The hourly retention job (FleetServer.expire) on a real SQLite state: events, face snapshots and audit
entries expire each on its own, so one that fails is logged by name and leaves the others to run."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from facefleet.link.checks import utc_now
from facefleet.server.app import Expired, FleetServer
from facefleet.server.config import ServerConfig
from facefleet.server.domain.audit import AuditEntry
from facefleet.server.errors import StateError
from facefleet.server.paths import ServerPaths
from facefleet.server.state.sqlite.state import SqliteState
from tests.server.state.test_state import make_event


def test_a_failing_expiry_is_logged_and_the_others_still_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    config = ServerConfig.model_validate(
        {"metrics": {"listen": ""}, "retention": {"events_days": 10, "snapshots_days": 10, "audit_days": 10}}
    )
    paths = ServerPaths.from_config(tmp_path / "state", config)
    state = SqliteState(paths.database)
    server = FleetServer(config, paths, state=state)
    try:
        old = utc_now() - timedelta(days=30)
        state.add_events([make_event(1, old)])
        for day in range(3):
            state.add_audit(AuditEntry(old + timedelta(days=day), "ops", "people.enrol", f"p{day}"))

        def unreachable(before: datetime) -> int:
            raise StateError("state database server.db: disk I/O error")

        def broken(before: datetime) -> int:
            raise RuntimeError("a bug")

        monkeypatch.setattr(state, "expire_events", unreachable)
        monkeypatch.setattr(state.snapshots, "expire_snapshots", broken)
        with caplog.at_level(logging.ERROR):
            assert server.expire() == Expired(events=0, snapshots=0, audit=3)
        assert "retention of events failed: state database server.db: disk I/O error" in caplog.messages
        assert "retention of face snapshots failed: a bug" in caplog.messages
        monkeypatch.undo()
        assert server.expire() == Expired(events=1, snapshots=0, audit=0)
    finally:
        state.close()
