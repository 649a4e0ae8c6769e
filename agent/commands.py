"""Commands the agent takes on `cmd/<command>` over MQTT: their schema, their request ids read leniently so
that every refusal can carry one, and the memory of recently executed request ids that keeps a command
delivered twice (a client's retry, a broker's redelivery) from running twice."""

from __future__ import annotations

import json
import re
from collections import OrderedDict, deque

from pydantic import BaseModel, ConfigDict, Field, field_validator

from facefleet.agent.domain.records import check_person_id

MAX_REQUEST_ID = 128
COMMAND_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")
"""What a command's name (the topic level after `cmd/`) may be. Another name is logged and not answered: its
reply topic, `replies/<name>`, would be built from it (and one over MQTT's 65,535-byte topic limit cannot
be published at all)."""
SHOWN_NAME_CHARS = 64


class VerifyCommand(BaseModel):
    """cmd/verify: a badge reader says who is at a door."""

    model_config = ConfigDict(extra="forbid")
    door: str = Field(max_length=32)
    person_id: str = Field(min_length=1, max_length=128)
    timeout_s: float | None = Field(None, gt=0, le=300)
    request_id: str | None = Field(None, max_length=MAX_REQUEST_ID)

    @field_validator("person_id")
    @classmethod
    def _person_id(cls, value: str) -> str:
        return check_person_id(value)  # the id rule the server enrols people by


COMMAND_QUEUE_LIMIT = 1000
"""Commands waiting for the frame loop; one more is refused at once with a `busy: …` reply."""
MAX_QUEUED_REPLIES = 100
"""Replies waiting in the outbox for the broker, at most (reply_cap); more are not sent (logged), so replies
never push events out of the bounded outbox."""
REPEAT_WINDOW_S = 600.0
"""A request_id executed this recently (s) is answered as a duplicate and not executed again."""
REMEMBERED_REQUESTS = 1000
"""At most this many executed request_ids are remembered (the oldest are forgotten first)."""
CLAIMS_PER_WINDOW = 10
CLAIM_WINDOW_S = 10.0
"""A door takes at most CLAIMS_PER_WINDOW badge claims in any CLAIM_WINDOW_S seconds (one person a second
passes a door); one more is refused as busy, so a flood of claims, each ending the one before with an
access event, cannot push the door's real events out of the bounded outbox."""


def reply_cap(outbox_limit: int) -> int:
    """How many replies may wait in an outbox of `outbox_limit` messages: MAX_QUEUED_REPLIES, and no more
    than a tenth of it (at least one), so that replies never push events out of a small outbox either."""
    return max(1, min(MAX_QUEUED_REPLIES, outbox_limit // 10))


class RecentRequests:
    """The request_ids of recently executed commands (monotonic seconds), bounded in age and number, so a
    command delivered twice (a client's retry, a broker's redelivery) is executed once."""

    def __init__(self, window_s: float, limit: int) -> None:
        self._window_s = window_s
        self._limit = limit
        self._executed: OrderedDict[tuple[str, str], float] = OrderedDict()

    def age(self, key: tuple[str, str], now: float) -> float | None:
        """Seconds since `key` (command, request_id) was executed, or None when it is not remembered."""
        self._forget(now)
        executed = self._executed.get(key)
        return None if executed is None else now - executed

    def add(self, key: tuple[str, str], now: float) -> None:
        self._executed[key] = now
        self._executed.move_to_end(key)
        self._forget(now)

    def repeat(self, command: str, request_id: str | None, now: float) -> str | None:
        """Why this command is not executed again (its request_id was executed within the window), or None:
        then it is remembered as executed now. now: monotonic seconds."""
        detail = self.duplicate(command, request_id, now)
        if detail is None and request_id is not None:
            self.add((command, request_id), now)
        return detail

    def duplicate(self, command: str, request_id: str | None, now: float) -> str | None:
        """Why this command is not executed again (its request_id was executed within the window), or None;
        nothing is remembered (add() once it is executed). now: monotonic seconds."""
        if request_id is None:
            return None
        age = self.age((command, request_id), now)
        if age is None:
            return None
        return (
            f"duplicate request_id {request_id!r}: executed {age:.0f} s ago, not executed again "
            f"(request_ids are remembered for {self._window_s / 60:.0f} minutes)"
        )

    def _forget(self, now: float) -> None:
        while self._executed and (
            len(self._executed) > self._limit or next(iter(self._executed.values())) < now - self._window_s
        ):
            self._executed.popitem(last=False)


class ClaimRate:
    """Badge claims taken per door: at most `limit` in any `window_s` seconds (monotonic). Doors come from
    the config, so the memory is bounded by limit per door."""

    def __init__(self, limit: int = CLAIMS_PER_WINDOW, window_s: float = CLAIM_WINDOW_S) -> None:
        self.limit = limit
        self.window_s = window_s
        self._taken: dict[str, deque[float]] = {}

    def take(self, door: str, now: float) -> bool:
        """Count a claim at `door` now and True, or False (not counted) when `limit` were taken in the last
        window_s seconds."""
        taken = self._taken.setdefault(door, deque())
        while taken and taken[0] <= now - self.window_s:
            taken.popleft()
        if len(taken) >= self.limit:
            return False
        taken.append(now)
        return True


def request_id_of(payload: bytes) -> str | None:
    """A command's request_id when it can be read (a JSON object whose request_id is a string of at most
    MAX_REQUEST_ID characters), whatever else is wrong with the command."""
    try:
        document = json.loads(payload)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested too deep
        return None
    value = document.get("request_id") if isinstance(document, dict) else None
    return value if isinstance(value, str) and len(value) <= MAX_REQUEST_ID else None


def command_name_ok(name: str) -> bool:
    """The name matches COMMAND_NAME (lowercase letters, digits, '_' and '-', at most 32 characters)."""
    return COMMAND_NAME.fullmatch(name) is not None


def shown_name(name: str) -> str:
    """A command name as a log line shows it: repr, cut to SHOWN_NAME_CHARS characters with its length."""
    if len(name) <= SHOWN_NAME_CHARS:
        return repr(name)
    return f"{name[:SHOWN_NAME_CHARS]!r}… ({len(name)} characters)"
