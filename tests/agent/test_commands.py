"""Commands on cmd/<command>: their names, request ids read leniently, the bounded memory of executed ones,
and the claims a door takes."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from facefleet.agent.commands import (
    MAX_REQUEST_ID,
    ClaimRate,
    RecentRequests,
    VerifyCommand,
    command_name_ok,
    reply_cap,
    request_id_of,
    shown_name,
)


@pytest.mark.parametrize(
    ("payload", "request_id"),
    [
        (json.dumps({"request_id": "r1", "door": 7}).encode(), "r1"),  # other fields wrong: still read
        (b"{not json", None),
        (json.dumps({"request_id": 5}).encode(), None),
        (json.dumps({"request_id": "x" * (MAX_REQUEST_ID + 1)}).encode(), None),
        (json.dumps(["request_id", "r1"]).encode(), None),
        (b"[" * 100_000, None),  # nested too deep for the parser
        (b"", None),
    ],
)
def test_a_request_id_is_read_whatever_else_is_wrong(payload: bytes, request_id: str | None) -> None:
    assert request_id_of(payload) == request_id


def test_a_request_id_runs_once_within_the_window_and_memory_is_bounded() -> None:
    recent = RecentRequests(window_s=600.0, limit=3)
    assert recent.repeat("verify", "r1", 0.0) is None  # executed now
    detail = recent.repeat("verify", "r1", 30.0)
    assert detail is not None and "duplicate request_id 'r1': executed 30 s ago" in detail
    assert recent.repeat("other", "r1", 31.0) is None  # another command's ids are its own
    assert recent.repeat("verify", None, 32.0) is None  # no id: nothing to compare
    assert recent.repeat("verify", None, 33.0) is None
    assert recent.repeat("verify", "r1", 601.0) is None  # past the window: runs again
    for name in ("a", "b", "c"):
        recent.repeat("verify", name, 602.0)
    assert recent.age(("verify", "r1"), 603.0) is None  # the oldest forgotten past the limit
    assert recent.repeat("verify", "c", 603.0) is not None


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("verify", True),
        ("open_door-2", True),
        ("x" * 32, True),
        ("x" * 33, False),
        ("", False),
        ("Verify", False),
        ("2fa", False),
        ("verify/now", False),
        ("verify\n", False),
        ("vérifier", False),
    ],
)
def test_a_command_name_is_short_and_plain(name: str, ok: bool) -> None:
    assert command_name_ok(name) is ok


def test_a_long_name_is_shown_cut() -> None:
    assert shown_name("verify") == "'verify'"
    assert shown_name("x" * 65_000) == f"{'x' * 64!r}… (65000 characters)"


def test_a_door_takes_a_bounded_number_of_claims_in_any_window() -> None:
    rate = ClaimRate(limit=3, window_s=10.0)
    assert [rate.take("front", t) for t in (0.0, 1.0, 2.0, 3.0, 9.9)] == [True, True, True, False, False]
    assert rate.take("back", 3.0)  # each door counts its own
    assert rate.take("front", 10.0)  # the claim at 0.0 left the window; refused ones never counted
    assert not rate.take("front", 10.5)
    assert [rate.take("front", t) for t in (11.0, 12.0, 12.5)] == [True, True, False]


def test_a_duplicate_is_found_without_being_remembered() -> None:
    recent = RecentRequests(window_s=600.0, limit=10)
    assert recent.duplicate("verify", "r1", 0.0) is None
    assert recent.duplicate("verify", "r1", 1.0) is None  # not executed yet: nothing remembered
    recent.add(("verify", "r1"), 2.0)
    assert (recent.duplicate("verify", "r1", 3.0) or "").startswith("duplicate request_id 'r1'")


@pytest.mark.parametrize("person_id", ["", "eileen c", "-eileen", "x" * 129, "eileen\n", "eileen/2"])
def test_a_claim_names_a_person_by_the_id_rule(person_id: str) -> None:
    with pytest.raises(ValidationError, match="person_id"):
        VerifyCommand.model_validate({"door": "front", "person_id": person_id})
    assert VerifyCommand.model_validate({"door": "front", "person_id": "e.c_1:x@y-z"}).person_id


@pytest.mark.parametrize(("outbox_limit", "cap"), [(10_000, 100), (1000, 100), (50, 5), (9, 1), (1, 1)])
def test_replies_take_at_most_a_tenth_of_the_outbox(outbox_limit: int, cap: int) -> None:
    assert reply_cap(outbox_limit) == cap
