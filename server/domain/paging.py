"""Page tokens: where a page of a listing ended, bound to the filter it was listed with and sealed by the
server that issued it.

A token is `kind|seal|position` (the position: the last row's time and id, or a person id) in unpadded
URL-safe base64. The seal is an HMAC-SHA256, cut to 128 bits, of the kind, the position and the filter's
scope, keyed with the state's page-token key: a random secret kept in the state's meta table, made by the
first server that opens the state (facefleet.server.state.sql.meta.page_seal). A secret in the state rather
than one per process: every replica on one PostgreSQL database reads the same key, so each accepts the
tokens the others issued, and a restart keeps it, so a dashboard paging through a listing goes on where it
was; a state restored from a backup keeps the key the backup holds. A token used with another filter, or
altered, has the wrong seal, and one that is not a token at all does not parse: both are INVALID_ARGUMENT
(NOT_ISSUED), with the fix.

A filter's scope is every field of it but its time range (e.g. EventFilter.scope): a range relative to now
moves between the pages of one listing (HTTP's default end, ListAudit's unset until, the command line's
`--since 24h`), and the position already bounds a continuation on the side of the end; a start that moved on
leaves out only what left the window. Lists whose order does not change the listing (device ids, cameras)
are compared as sets."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Sequence

from facefleet.server.errors import InvalidArgumentError

NOT_ISSUED = (
    "page_token is not one this server issued for this listing, or not for the same filter, or it was "
    "altered: start again without page_token; pass next_page_token unchanged, with the same filter"
)
MAX_PAGE_TOKEN_CHARS = 512
"""Longest page token this server issues: a kind, a seal, a time and an id of at most MAX_LABEL_CHARS."""
SEAL_BYTES = 16
_SEAL = re.compile(r"[A-Za-z0-9_-]{22}")
"""A seal as tokens carry it: SEAL_BYTES in unpadded URL-safe base64."""
INT64 = range(-(2**63), 2**63)


class PageSeal:
    """Seals and checks page tokens with a state's page-token key."""

    def __init__(self, key: str) -> None:
        if not key:
            raise ValueError("a page-token key is not empty")
        self._key = key.encode()

    def seal(self, kind: str, position: Sequence[object], scope: Sequence[object]) -> str:
        """The seal of a position of a listing (`kind`) with a filter of this scope."""
        message = json.dumps([kind, list(position), list(scope)], separators=(",", ":"))  # ASCII: \u escapes
        digest = hmac.new(self._key, message.encode(), hashlib.sha256).digest()[:SEAL_BYTES]
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def check(self, kind: str, position: Sequence[object], scope: Sequence[object], seal: str) -> None:
        """InvalidArgumentError (NOT_ISSUED) unless `seal` is the seal of this position with this scope."""
        if not hmac.compare_digest(self.seal(kind, position, scope), seal):
            raise InvalidArgumentError(NOT_ISSUED)


def as_set(values: Iterable[str]) -> list[str]:
    """A filter list whose order and repeats do not change the listing, as a scope compares it."""
    return sorted(set(values))


def encode_token(kind: str, seal: str, *position: object) -> str:
    text = "|".join((kind, seal, *(str(p) for p in position)))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_token(token: str, kind: str, parts: int) -> tuple[str, list[str]]:
    """(seal, the `parts` parts of the position) of a token of this kind, the last part as it is (an id may
    hold '|'); InvalidArgumentError (NOT_ISSUED) when it is not one: too long, not base64 of UTF-8 text,
    another kind, no seal, fewer parts or an empty last part. Whether the seal is right is for PageSeal."""
    try:
        if len(token) > MAX_PAGE_TOKEN_CHARS:
            raise ValueError("too long")
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        found, seal, *position = text.split("|", parts + 1)
        if found != kind or not _SEAL.fullmatch(seal) or len(position) != parts or not position[-1]:
            raise ValueError(found)
    except (ValueError, binascii.Error):
        raise InvalidArgumentError(NOT_ISSUED) from None
    return seal, position


def timed_cursor(token: str, kind: str) -> tuple[int, str, str]:
    """(time in µs, id, seal) of a page token `kind|seal|time|id`; InvalidArgumentError (NOT_ISSUED) when it
    is not one this server issued: another kind, no id, or a time no stored row can have (outside 64-bit
    integers)."""
    seal, (micros, row_id) = decode_token(token, kind, 2)
    try:
        time_us = int(micros)
        if time_us not in INT64 or micros != str(time_us):
            raise ValueError(micros)
    except ValueError:
        raise InvalidArgumentError(NOT_ISSUED) from None
    return time_us, row_id, seal
