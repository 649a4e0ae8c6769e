"""An event's MQTT message and its report for the server go into the store in one transaction: a failure
of either write (a full disk, a damaged table) leaves neither, so the MQTT side and the server never see
different sets of events."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest

from facefleet.agent.domain.records import StoreError
from facefleet.agent.store.database import EmbeddingStore
from facefleet.agent.store.reports import prepare_report
from facefleet.link.events import Event


def event() -> Event:
    return Event(str(uuid.uuid4()), "door-box", datetime.now(timezone.utc), "access", "granted", door="front")


def test_an_event_is_queued_for_mqtt_and_the_server_together(tmp_path: Path) -> None:
    with EmbeddingStore(tmp_path / "agent.db") as store:
        queued = event()
        store.queue_event("access/front", '{"schema": 1}', prepare_report(queued, 3))
        [message] = store.outbox.pending()
        [report] = store.reports.pending()
    assert (message.topic, message.payload) == ("access/front", '{"schema": 1}')
    assert (report.event.event_id, report.gallery_revision) == (queued.event_id, 3)


@pytest.mark.parametrize("failing", ["reports", "outbox"])
def test_when_one_write_fails_neither_is_kept(tmp_path: Path, failing: str) -> None:
    with EmbeddingStore(tmp_path / "agent.db") as store:
        with store.connection.write() as conn:  # the table refuses rows, as a full disk would
            conn.execute(
                f"CREATE TRIGGER refuse BEFORE INSERT ON {failing} "
                "BEGIN SELECT RAISE(ABORT, 'disk full'); END"
            )
        with pytest.raises(StoreError, match="disk full"):
            store.queue_event("access/front", "{}", prepare_report(event()))
        counts = (store.outbox.count(), store.reports.count())
    assert counts == (0, 0)
