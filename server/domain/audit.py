"""The admin audit log's types: one entry per change an operator (or the server itself) made or tried, the
listing filter and its paging cursor."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from facefleet.link.checks import check_utc
from facefleet.link.errors import LinkError
from facefleet.server.domain.paging import NOT_ISSUED, PageSeal, encode_token, timed_cursor
from facefleet.server.domain.queries import time_range
from facefleet.server.errors import InvalidArgumentError, ServerError

LOCAL = "local"
"""Who changed the state directory through the facefleet-server command line."""
SERVER = "server"
"""Who: the server itself (e.g. a rollout stopped by its failure budget)."""
OK = "ok"
MAX_WHO_CHARS = 64
MAX_ACTION_CHARS = 64
MAX_TARGET_CHARS = 256
MAX_DETAIL_CHARS = 512


@dataclass(frozen=True)
class AuditEntry:
    """One change: when (UTC), who (a token name, "local" or "server"), what ("people.enrol" and its target,
    e.g. the person id), and the outcome ("ok" or the refusal's gRPC status name, with its message in
    detail). Target and detail are cut to their limits rather than refused: an entry is never lost to
    the length of an error message. entry_id is 0 until stored."""

    time: datetime
    who: str
    action: str
    target: str = ""
    outcome: str = OK
    detail: str = ""
    entry_id: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "time", check_utc("audit time", self.time))
        for name, value, limit in (
            ("who", self.who, MAX_WHO_CHARS),
            ("action", self.action, MAX_ACTION_CHARS),
        ):
            if not value or len(value) > limit:
                raise InvalidArgumentError(f"audit {name} {value[:80]!r}: give 1–{limit} characters")
        if not self.outcome or len(self.outcome) > MAX_ACTION_CHARS:
            raise InvalidArgumentError(
                f"audit outcome {self.outcome[:80]!r}: give 1–{MAX_ACTION_CHARS} characters"
            )
        object.__setattr__(self, "target", _cut(self.target, MAX_TARGET_CHARS))
        object.__setattr__(self, "detail", _cut(self.detail, MAX_DETAIL_CHARS))

    @classmethod
    def of(
        cls, time: datetime, who: str, action: str, target: str, error: BaseException | None, detail: str = ""
    ) -> AuditEntry:
        """The entry of a change that succeeded (error None) or was refused with `error`."""
        if error is None:
            return cls(time, who, action, target, OK, detail)
        return cls(time, who, action, target, *outcome_of(error))


def outcome_of(error: BaseException) -> tuple[str, str]:
    """(outcome, detail) of a refusal: the gRPC status the servicers answer it with, and its message
    (INTERNAL without details for an unexpected error, as the servicers answer)."""
    if isinstance(error, ServerError):
        return error.status, str(error)
    if isinstance(error, LinkError):
        return "INVALID_ARGUMENT", str(error)
    return "INTERNAL", type(error).__name__


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class AuditFilter:
    """Entries in [since, until) by `who` (empty: anyone) whose action starts with `action` (empty: any)."""

    since: datetime
    until: datetime
    who: str = ""
    action: str = ""

    def __post_init__(self) -> None:
        since, until = time_range("audit", ("since", self.since), ("until", self.until))
        object.__setattr__(self, "since", since)
        object.__setattr__(self, "until", until)
        if len(self.who) > MAX_WHO_CHARS or len(self.action) > MAX_ACTION_CHARS:
            raise InvalidArgumentError(
                f"audit who and action filters: at most {MAX_WHO_CHARS} and {MAX_ACTION_CHARS} characters"
            )

    def scope(self) -> tuple[object, ...]:
        """What a page token of entries with this filter is bound to: every field but the time range
        (facefleet.server.domain.paging)."""
        return (self.who, self.action)


@dataclass(frozen=True)
class AuditCursor:
    """Where a page of entries (newest first) ended: the last entry's time and id, and the seal of its token
    (facefleet.server.domain.paging)."""

    time_us: int
    entry_id: int
    seal: str = ""

    def encode(self) -> str:
        return encode_token("a", self.seal, self.time_us, self.entry_id)

    @classmethod
    def decode(cls, token: str) -> AuditCursor:
        time_us, entry, seal = timed_cursor(token, "a")
        try:
            entry_id = int(entry)
            if entry_id not in range(2**63) or entry != str(entry_id):
                raise ValueError(entry)
        except ValueError:
            raise InvalidArgumentError(NOT_ISSUED) from None
        return cls(time_us, entry_id, seal)

    def sealed(self, key: PageSeal, flt: AuditFilter) -> AuditCursor:
        """This cursor with the seal of its listing with `flt`."""
        return replace(self, seal=key.seal("a", (self.time_us, self.entry_id), flt.scope()))

    def check(self, key: PageSeal, flt: AuditFilter) -> None:
        """InvalidArgumentError (NOT_ISSUED) unless this server sealed the cursor for a listing with `flt`."""
        key.check("a", (self.time_us, self.entry_id), flt.scope(), self.seal)


@dataclass(frozen=True)
class AuditPage:
    """Entries newest first; next_cursor is None on the last page."""

    entries: tuple[AuditEntry, ...]
    next_cursor: AuditCursor | None
