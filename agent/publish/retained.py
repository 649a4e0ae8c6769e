"""What the agent keeps retained on the broker besides its status: Home Assistant discovery configs, each
camera's state and latest face crop.

The broker keeps a retained message until an empty retained message replaces it, so the agent remembers in
its store every topic it publishes retained (before publishing), and after each connect removes those its
config no longer has: a camera or door taken out, a prefix changed, discovery turned off, face crops no
longer published. A topic is forgotten once the broker has acknowledged its removal. A camera's state is
published again after each connect, so that a change made while the broker was away reaches it, and a
person erased from the gallery is named by no retained state or face crop.

Every method runs on the frame loop's thread.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Container, Iterable
from typing import Any

from facefleet.agent.publish.mqtt import MqttLink
from facefleet.agent.store.retained import RetainedTopics

NO_ONE = "none"
"""A camera state's last_person before anyone is recognised (and once that person is erased)."""


class RetainedMessages:
    """The discovery configs and retained topics of this run; those of earlier runs no longer wanted are
    removed.

    discovery: (topic, config) pairs to publish after each connect; topics: the other full topics this run
    publishes retained (cameras' states and face crops); former: topics agents published before they kept
    a record of them, removed when the store has none yet (the upgrade)."""

    def __init__(
        self,
        link: MqttLink,
        store: RetainedTopics,
        discovery: list[tuple[str, dict[str, Any]]],
        topics: Iterable[str],
        former: Iterable[str] = (),
    ) -> None:
        self._link = link
        self._store = store
        self._discovery = discovery
        self._wanted = {topic for topic, _ in discovery} | set(topics)
        self._former = set(former)
        self.stale: set[str] = set()
        """Topics published retained before and no longer wanted, removed after each connect until the
        broker has acknowledged a removal."""
        self._removing: dict[str, Callable[[], bool]] = {}  # topic → whether its removal was acknowledged

    def start(self) -> None:
        """Before the first connect: find the topics no longer wanted, and remember this run's
        (StoreError: nothing is remembered, nothing removed)."""
        remembered = self._store.topics()
        self.stale = (remembered or self._former) - self._wanted
        self._store.remember(self._wanted - remembered)

    def announce(self) -> None:
        """After a connect: remove the stale topics and publish the discovery configs."""
        self._removing = {}
        for topic in sorted(self.stale):
            acknowledged = self._link.clear_retained(topic)
            if acknowledged is not None:
                self._removing[topic] = acknowledged
        for topic, config in self._discovery:
            self._link.publish_retained(topic, config)

    def settle(self) -> None:
        """Forget the topics whose removal the broker has acknowledged (StoreError: they stay remembered,
        and are removed again at the next start)."""
        removed = [topic for topic, acknowledged in self._removing.items() if acknowledged()]
        if not removed:
            return
        for topic in removed:
            del self._removing[topic]
            self.stale.discard(topic)
        self._store.forget(removed)


class CameraStates:
    """Each camera's retained `cameras/<camera>/state` (faces in view, last person, expression) and who its
    retained face crop shows. A state is published when it changes and again after each connect."""

    def __init__(self, link: MqttLink, cameras: Collection[str]) -> None:
        self._link = link
        self._current: dict[str, dict[str, Any]] = {
            camera: {"faces_in_view": 0, "last_person": NO_ONE, "expression": None} for camera in cameras
        }
        self._published: dict[str, dict[str, Any]] = {}  # camera → its state as published on this connection
        self._face_of: dict[str, str] = {}  # camera → the enrolled person its retained face crop shows
        self._crops_to_remove: set[str] = set()  # cameras whose crop shows an erased person
        self._crop_removals: dict[str, Callable[[], bool]] = {}  # camera → its removal acknowledged yet?

    def update(self, camera: str, faces_in_view: int, person_id: str | None, expression: str | None) -> None:
        """A frame of `camera`: its faces, the first person recognised (None: nobody), the expression of its
        best face; the last person stays until another is recognised."""
        last = person_id or self._current[camera]["last_person"]
        state = {"faces_in_view": faces_in_view, "last_person": last, "expression": expression}
        self._current[camera] = state
        self._publish(camera)
        if self._crops_to_remove:
            self._remove_crops()

    def face_published(self, camera: str, person_id: str | None) -> None:
        """A face crop of `person_id` (None: nobody enrolled) now is `camera`'s retained crop."""
        if person_id is None:
            self._face_of.pop(camera, None)
        else:
            self._face_of[camera] = person_id
        self._crops_to_remove.discard(camera)
        self._crop_removals.pop(camera, None)

    def forget_people(self, enrolled: Container[str]) -> None:
        """After a gallery change: a person no longer enrolled (erased) is no camera's last person, and a
        retained face crop of theirs is removed."""
        for camera, state in self._current.items():
            if state["last_person"] != NO_ONE and state["last_person"] not in enrolled:
                self._current[camera] = {**state, "last_person": NO_ONE}
                self._publish(camera)
        for camera, person_id in list(self._face_of.items()):
            if person_id not in enrolled:
                del self._face_of[camera]
                self._crops_to_remove.add(camera)
        self._remove_crops()

    def republish(self) -> None:
        """After a connect: every camera's state, whatever was published before, and the removal of crops
        of erased people that could not be removed while the broker was away."""
        self._published = {}
        self._crop_removals = {}  # sent on the connection before: sent again
        for camera in self._current:
            self._publish(camera)
        self._remove_crops()

    def _publish(self, camera: str) -> None:
        state = self._current[camera]
        if self._published.get(camera) == state:
            return
        if self._link.publish_retained(self._link.topic(f"cameras/{camera}/state"), state):
            self._published[camera] = state

    def _remove_crops(self) -> None:
        """Send the removal of each crop to remove once per connection; a crop is done with once the broker
        has acknowledged its removal (one the client accepted may still be lost with its connection)."""
        for camera in sorted(self._crops_to_remove):
            acknowledged = self._crop_removals.get(camera)
            if acknowledged is None:
                sent = self._link.clear_retained(self._link.topic(f"cameras/{camera}/face"))
                if sent is not None:
                    self._crop_removals[camera] = sent
            elif acknowledged():
                self._crops_to_remove.discard(camera)
                del self._crop_removals[camera]
