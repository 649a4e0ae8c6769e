"""In-process notification of new gallery revisions (and model, rollout and device changes) to every open
Watch stream.

One asyncio.Condition guards the head revision: a commit calls publish(revision) and every stream waiting in
wait_beyond() wakes at once (notify_all), so one change reaches hundreds of watchers in one pass of the
event loop. Streams then fetch the delta through a shared cache (facefleet.server.fleet.link), so 200 watchers
at the same revision cost one database read. The process's own commits call publish(); changes made by
another process reach it from the database: on SQLite by polling, on PostgreSQL by its notifications
(facefleet.server.state.postgres.notify)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable


class GalleryFanout:
    """The head revision, the streams waiting for it to move, and which devices are watching now."""

    def __init__(self, head: int, models_head: int = 0, devices_head: int = 0) -> None:
        self._head = head
        self._models_head = models_head
        self._devices_head = devices_head
        self._condition = asyncio.Condition()
        self._closed = False
        self._watching: Counter[str] = Counter()
        self._on_head: list[Callable[[int], None]] = []

    @property
    def head(self) -> int:
        return self._head

    @property
    def models_head(self) -> int:
        """The models revision (facefleet.server.state.models) streams last heard of."""
        return self._models_head

    @property
    def devices_head(self) -> int:
        """The devices revision (facefleet.server.state.devices) streams last heard of."""
        return self._devices_head

    @property
    def closed(self) -> bool:
        return self._closed

    async def publish(self, revision: int) -> None:
        """A revision was committed: wake every waiting stream (revisions published late are ignored)."""
        async with self._condition:
            if revision > self._head:
                self._head = revision
                for listener in self._on_head:
                    listener(revision)
                self._condition.notify_all()

    def on_head(self, listener: Callable[[int], None]) -> None:
        """Have listener(head) called (in the event loop) whenever the head moves."""
        self._on_head.append(listener)

    async def publish_models(self, revision: int) -> None:
        """The models or rollouts changed: wake every waiting stream to recompute its releases."""
        async with self._condition:
            if revision != self._models_head:
                self._models_head = revision
                self._condition.notify_all()

    async def publish_devices(self, revision: int) -> None:
        """A device was disabled, enabled or revoked: wake every waiting stream to check its device."""
        async with self._condition:
            if revision != self._devices_head:
                self._devices_head = revision
                self._condition.notify_all()

    async def wait_beyond(
        self, revision: int, timeout: float, models: int | None = None, devices: int | None = None
    ) -> bool:
        """Wait until the head passes `revision`, or the models revision differs from `models`, or the
        devices revision from `devices` (True), or a timeout or close() comes first (False)."""

        def moved() -> bool:
            return (
                self._head > revision
                or (models is not None and self._models_head != models)
                or (devices is not None and self._devices_head != devices)
            )

        async with self._condition:
            try:
                await asyncio.wait_for(self._condition.wait_for(lambda: moved() or self._closed), timeout)
            except asyncio.TimeoutError:
                return False
            return moved() and not self._closed

    async def close(self) -> None:
        """Server shutdown: release every waiting stream so it can end."""
        async with self._condition:
            self._closed = True
            self._condition.notify_all()

    def enter(self, device_id: str) -> None:
        self._watching[device_id] += 1

    def leave(self, device_id: str) -> None:
        self._watching[device_id] -= 1
        if self._watching[device_id] <= 0:
            del self._watching[device_id]

    def watching(self) -> frozenset[str]:
        """Devices with at least one open Watch stream."""
        return frozenset(self._watching)
