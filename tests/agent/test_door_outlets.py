"""What a door does with a decision, on the agent's real store: a grant opens first (the relay command,
sent at once), then writes its audit row and access event, and those are written even when opening fails."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest

from facefleet.agent.config import AgentConfig
from facefleet.agent.metrics import AgentMetrics
from facefleet.agent.publish.events import AgentEvent, Versions
from facefleet.agent.recognition.doors import AccessDecision
from facefleet.agent.service.doors import DoorAccess, DoorOutlets
from facefleet.agent.store.database import EmbeddingStore

GRANT = AccessDecision("front", "granted", "recognised", "identify", "eileen", 0.62, 0.2, 3)


def doors(
    store: EmbeddingStore, command: Any, emitted: list[AgentEvent], program: list[str] | None = None
) -> DoorAccess:
    door = {"name": "front", "camera": "cam", "relay_topic": "relay/front", "relay_expiry_s": 4}
    config = AgentConfig.model_validate(
        {"cameras": [{"name": "cam", "source": "0"}], "doors": [{**door, "command": program or []}]}
    )
    outlets = DoorOutlets(
        AgentMetrics(),
        store.audit,
        emitted.append,
        command,
        lambda write: write(),
        lambda: Versions("test", "test", {"embedding": "sface@2021dec"}, 1),
    )
    return DoorAccess(config, "box", lambda person_id: None, None, outlets)


def test_a_grant_sends_the_open_with_its_expiry_then_audits_and_reports(tmp_path: Path) -> None:
    sent: list[tuple[str, dict[str, Any], int]] = []
    emitted: list[AgentEvent] = []
    with EmbeddingStore(tmp_path / "agent.db") as store:
        access = doors(
            store, lambda topic, payload, expiry: sent.append((topic, payload, expiry)) or True, emitted
        )
        access.act(GRANT, "cam")
        [entry] = store.audit.entries()
    [(topic, payload, expiry)] = sent
    assert (topic, expiry, payload["action"], payload["door"]) == ("relay/front", 4, "open", "front")
    assert payload["event_id"] == entry.details["event_id"] == emitted[0].envelope.event_id
    assert (entry.decision, entry.details["relay"]) == ("granted", "sent")


@pytest.mark.parametrize("failure", ["raises", "not sent"])
def test_a_grant_whose_open_fails_is_still_audited_and_reported(tmp_path: Path, failure: str) -> None:
    def command(topic: str, payload: dict[str, Any], expiry: int) -> bool:
        if failure == "raises":
            raise RuntimeError("can't start new thread")
        return False

    emitted: list[AgentEvent] = []
    with EmbeddingStore(tmp_path / "agent.db") as store:
        access = doors(store, command, emitted)
        access.act(GRANT, "cam")
        entries = store.audit.entries()
        unsent = access.outlets.metrics.relay_unsent.labels("front")._value.get()
    assert [entry.decision for entry in entries] == ["granted"]
    assert entries[0].details["relay"] == ("failed" if failure == "raises" else "unsent")  # the row says so
    assert len(emitted) == 1
    assert unsent == (1 if failure == "not sent" else 0)


def test_a_door_program_that_fails_is_logged_with_what_it_said(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    said = "gpioset: error requesting GPIO lines: Permission denied"
    program = ["/bin/sh", "-c", f"echo 'noise on stdout'; echo '{said}' >&2; exit 1"]
    with EmbeddingStore(tmp_path / "agent.db") as store:
        access = doors(store, lambda topic, payload, expiry: True, [], program)
        with caplog.at_level(logging.ERROR, logger="facefleet.agent.service.doors"):
            access.act(GRANT, "cam")  # the program runs on a thread of its own
            deadline = time.monotonic() + 30
            while not caplog.records and time.monotonic() < deadline:
                time.sleep(0.05)
    [record] = caplog.records
    assert record.getMessage() == f"door front: action /bin/sh failed: it exited with status 1: {said}"


def test_a_decision_is_logged_naming_the_person_only_when_someone_was_recognised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    nobody = AccessDecision("front", "denied", "face not recognised", "identify", None, None, None, 3)
    with EmbeddingStore(tmp_path / "agent.db") as store:
        access = doors(store, lambda topic, payload, expiry: True, [])
        with caplog.at_level(logging.INFO, logger="facefleet.agent.service.doors"):
            access.act(nobody, "cam")
            access.act(GRANT, "cam")
    assert [record.getMessage() for record in caplog.records] == [
        "door front: denied (face not recognised)",
        "door front: granted eileen (recognised)",
    ]
