"""What agents newer than this server send that it does not know (a task, a precision, an enum value added
by a later release): left out of what is stored, and logged once per agent and value, naming the fix."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from facefleet import __version__

log = logging.getLogger(__name__)
MAX_REMEMBERED = 10_000
"""Most (device, value) pairs remembered as logged; beyond it the memory starts afresh."""


class NewerAgentLog:
    """Logs each value an agent sent that this server ignored, once per agent and value."""

    def __init__(self) -> None:
        self._logged: set[tuple[str, str]] = set()

    def ignored(self, device_id: str, notes: Iterable[str], what: str = "ignored") -> None:
        """Log the notes (facefleet.link.serde.Notes) of one call of device_id not logged for it before."""
        for note in notes:
            key = (device_id, note)
            if key in self._logged:
                continue
            if len(self._logged) >= MAX_REMEMBERED:
                self._logged.clear()
            self._logged.add(key)
            log.warning(
                "device %s sent %s, which this server (version %s) does not know: %s. The agent is newer "
                "than the server: upgrade the server to take it",
                device_id,
                note,
                __version__,
                what,
                extra={"device_id": device_id},
            )
