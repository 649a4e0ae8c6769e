"""Unknown faces: the snapshots agents report of faces nobody enrolled, grouped into clusters of the same
unseen person (facefleet.server.domain.snapshots), and what operators do with them: enrol a cluster (or
chosen snapshots) as a new person or add it to an existing one, dismiss, delete.

An enrolment takes each snapshot's embedding as it is (the model the agent matched with) and its aligned crop
as an enrolment crop, kept for re-embedding with future models; models the server enrols with that the
snapshots lack are computed from those crops. It is one gallery revision, marked on the snapshots in the same
transaction, so the agents recognise the person at their next frame; a snapshot another operator enrolled
meanwhile (through this replica or another) fails that transaction, so no face is enrolled twice.

Clustering runs on a thread of its own, one computation at a time, so the threads that serve ingest and
queries never wait for it; its result is kept until the snapshots under review change (a key read from the
database, so a change through any replica counts). An action on a cluster names the version that was listed
(UnknownCluster.version): a cluster that gained or lost snapshots since is refused, nothing changed. When the
server stops (close()), listings waiting for the thread are refused and the one under way ends before the
state closes."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TypeVar, cast

import cv2
import numpy as np
import numpy.typing as npt

from facefleet.link.checks import MAX_EMBEDDINGS_PER_PERSON, check_id, utc_now
from facefleet.link.gallery import Embedding, Person
from facefleet.server.domain.queries import page_size
from facefleet.server.domain.records import Crop
from facefleet.server.domain.snapshots import (
    ImageKind,
    Snapshot,
    SnapshotCursor,
    SnapshotFilter,
    SnapshotPage,
    UnknownCluster,
    cluster_unknown,
)
from facefleet.server.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
)
from facefleet.server.gallery.embedder import Enroller
from facefleet.server.gallery.people import PeopleHandler
from facefleet.server.state.interface import State
from facefleet.vision.images.header import declared_size

CROP_SIZE = 112
Frame = npt.NDArray[np.uint8]
MAX_SNAPSHOTS_PER_ACTION = 1000
STOPPING = (
    "the server is stopping and clusters no more unknown faces; list them again through another replica or "
    "once it has restarted"
)
T = TypeVar("T")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UnknownSettings:
    """threshold: cosine similarity at which a snapshot joins a cluster (the agents' matching threshold);
    window: how far back clusters look; max_snapshots: how many of the newest unknown snapshots are
    clustered; retain_crops: whether an enrolled person keeps the snapshots' aligned crops ([gallery]
    retain_crops, as for photos)."""

    threshold: float = 0.363
    window: timedelta = timedelta(days=30)
    max_snapshots: int = 50_000
    retain_crops: bool = True


@dataclass(frozen=True)
class UnknownEnrolment:
    """Enrol the snapshots of a cluster (at cluster_version, as listed), or chosen snapshots, as person_id: a
    new person (existing False; display_name and groups apply) or more samples of an enrolled one (existing
    True)."""

    person_id: str
    cluster_id: str = ""
    cluster_version: str = ""
    snapshot_ids: tuple[str, ...] = ()
    display_name: str = ""
    groups: tuple[str, ...] = ()
    existing: bool = False


@dataclass(frozen=True)
class UnknownEnrolled:
    """The person as stored, and the snapshots enrolled."""

    person: Person
    snapshot_ids: tuple[str, ...]


class UnknownFaces:
    """Unknown-face review. enroller: the server's image enroller, or FailedPreconditionError when it has no
    models (then only the snapshots' own embeddings are stored)."""

    def __init__(
        self,
        state: State,
        people: PeopleHandler,
        enroller: Callable[[], Enroller],
        settings: UnknownSettings,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.state = state
        self.people = people
        self.enroller = enroller
        self.settings = settings
        self.clock = clock
        self._clustering = ThreadPoolExecutor(1, thread_name_prefix="unknown-clusters")
        self._closed = False
        self._clustered: tuple[tuple[object, ...], list[UnknownCluster]] | None = None
        self._renders: dict[Callable[[list[UnknownCluster]], object], object] = {}

    async def clusters(self) -> list[UnknownCluster]:
        """Clusters of unknown snapshots under review, newest first: on the clustering thread, after those
        asked for before; computed again only when the snapshots under review changed."""
        since = self.clock() - self.settings.window
        return list(await self._on_clustering_thread(self._clusters, since))

    async def rendered(self, render: Callable[[list[UnknownCluster]], T]) -> T:
        """render(clusters) on the clustering thread, kept with the clusters: a listing of tens of thousands
        of clusters is encoded once per change, not on the event loop at every request."""
        since = self.clock() - self.settings.window
        return cast(T, await self._on_clustering_thread(self._rendered, since, render))

    async def close(self) -> None:
        """Refuse listings from now on and cancel those waiting for the clustering thread (UnavailableError
        to their callers), then wait, off the event loop, for the clustering under way to end: it may be
        reading the state, which closes next."""
        self._closed = True
        self._clustering.shutdown(wait=False, cancel_futures=True)
        await asyncio.to_thread(self._clustering.shutdown)

    async def _on_clustering_thread(self, work: Callable[..., T], *args: object) -> T:
        """work(*args) on the clustering thread, after the work asked for before; UnavailableError once
        close() was called, also for work it cancelled while waiting."""
        if self._closed:
            raise UnavailableError(STOPPING)
        future = self._clustering.submit(work, *args)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._closed and future.cancelled() and not (task is not None and task.cancelling()):
                raise UnavailableError(STOPPING) from None
            raise

    def _rendered(self, since: datetime, render: Callable[[list[UnknownCluster]], object]) -> object:
        clusters = self._clusters(since)
        if render not in self._renders:
            self._renders[render] = render(clusters)
        return self._renders[render]

    def _clusters(self, since: datetime) -> list[UnknownCluster]:
        """On the clustering thread. The key is read before the snapshots, so a snapshot that arrives in
        between makes the next call compute again rather than miss it."""
        settings = self.settings
        key = (self.state.snapshots.review_key(since), settings.threshold, settings.max_snapshots)
        if self._clustered is not None and self._clustered[0] == key:
            return self._clustered[1]
        began = time.perf_counter()
        snapshots = self.state.snapshots.unknown_snapshots(since, settings.max_snapshots)
        clusters = cluster_unknown(snapshots, settings.threshold)
        log.info(
            "clustered %d unknown snapshots into %d clusters in %.2f s",
            len(snapshots),
            len(clusters),
            time.perf_counter() - began,
        )
        self._clustered = (key, clusters)
        self._renders = {}
        return clusters

    async def cluster(self, cluster_id: str) -> UnknownCluster:
        check_id("cluster id", cluster_id)
        for cluster in await self.clusters():
            if cluster.cluster_id == cluster_id:
                return cluster
        raise NotFoundError(
            f"no unknown-face cluster {cluster_id!r} under review: it was enrolled, dismissed or expired, or "
            "its first snapshot was; list the clusters again"
        )

    async def snapshots(self, flt: SnapshotFilter, page_token: str, size: int) -> SnapshotPage:
        """A page of snapshots, its next cursor sealed for this filter (facefleet.server.domain.paging)."""
        after = SnapshotCursor.decode(page_token) if page_token else None
        limit = page_size(size)

        def read() -> SnapshotPage:
            key = self.state.page_seal()
            if after is not None:
                after.check(key, flt)
            page = self.state.snapshots.list_snapshots(flt, after, limit)
            return replace(page, next_cursor=page.next_cursor and page.next_cursor.sealed(key, flt))

        return await asyncio.to_thread(read)

    async def image(self, snapshot_id: str, kind: ImageKind) -> bytes:
        check_id("snapshot id", snapshot_id)
        data = await asyncio.to_thread(self.state.snapshots.image, snapshot_id, kind)
        if not data:
            raise NotFoundError(f"snapshot {snapshot_id!r} has no {kind} image")
        return data

    async def enrol(self, request: UnknownEnrolment) -> UnknownEnrolled:
        """Enrol the snapshots (one gallery revision); they leave the review."""
        snapshots = await self._chosen(request.cluster_id, request.cluster_version, request.snapshot_ids)
        if len(snapshots) > MAX_EMBEDDINGS_PER_PERSON:  # an embedding each at least: refused before decoding
            raise InvalidArgumentError(
                f"{len(snapshots)} snapshots give {len(snapshots)} embeddings or more, over the limit of "
                f"{MAX_EMBEDDINGS_PER_PERSON} per person; choose fewer snapshots"
            )
        crops, quality, images = await asyncio.to_thread(self._crops, snapshots)
        embeddings = [
            Embedding(s.model_id, s.vector, min(max(s.quality, 0.0), 1.0), f"snapshot:{s.event_id}")
            for s in snapshots
        ]
        try:
            enroller = await asyncio.to_thread(self.enroller)
        except FailedPreconditionError:
            enroller = None
        if enroller is not None:
            have = {s.model_id for s in snapshots}
            sources = [(images[c.source], quality[c.source], c.source) for c in crops]
            embeddings += await asyncio.to_thread(enroller.embed_crops, sources, have)
        if len(embeddings) > MAX_EMBEDDINGS_PER_PERSON:
            raise InvalidArgumentError(
                f"{len(snapshots)} snapshots give {len(embeddings)} embeddings, over the limit of "
                f"{MAX_EMBEDDINGS_PER_PERSON} per person; choose fewer snapshots"
            )
        if request.existing:
            known = await asyncio.to_thread(self.state.get_person, request.person_id, with_vectors=False)
            person = Person(
                known.person_id, known.display_name, known.groups, known.metadata_json, tuple(embeddings)
            )
        else:
            person = Person(request.person_id, request.display_name, request.groups, "{}", tuple(embeddings))
        ids = tuple(s.event_id for s in snapshots)
        kept = crops if self.settings.retain_crops else ()
        stored = await self.people.enrol_embedded(
            person, kept, append=True if request.existing else None, snapshots=ids
        )
        return UnknownEnrolled(stored, ids)

    async def dismiss(self, cluster_id: str, snapshot_ids: Sequence[str], version: str = "") -> int:
        """Take snapshots, or a cluster at the version listed, out of the review (kept until retention); how
        many."""
        snapshots = await self._chosen(cluster_id, version, tuple(snapshot_ids))
        ids = [s.event_id for s in snapshots]
        return await asyncio.to_thread(self.state.snapshots.set_status, ids, "dismissed")

    async def delete(self, cluster_id: str, snapshot_ids: Sequence[str], version: str = "") -> int:
        """Delete snapshots, or a cluster's at the version listed, and their images now; how many."""
        snapshots = await self._chosen(cluster_id, version, tuple(snapshot_ids))
        return await asyncio.to_thread(self.state.snapshots.delete_snapshots, [s.event_id for s in snapshots])

    async def _chosen(self, cluster_id: str, version: str, snapshot_ids: tuple[str, ...]) -> list[Snapshot]:
        """The snapshots of the cluster, if it still holds those of the version listed, or those chosen."""
        if bool(cluster_id) == bool(snapshot_ids):
            raise InvalidArgumentError("give either a cluster id or snapshot ids")
        if len(snapshot_ids) > MAX_SNAPSHOTS_PER_ACTION:
            raise InvalidArgumentError(f"at most {MAX_SNAPSHOTS_PER_ACTION} snapshot ids at a time")
        if cluster_id:
            if not version:
                raise InvalidArgumentError(
                    f"give the version of cluster {cluster_id!r} as it was listed, so that only the faces "
                    "shown are taken"
                )
            cluster = await self.cluster(cluster_id)
            if cluster.version != version:
                raise FailedPreconditionError(
                    f"unknown-face cluster {cluster_id!r} changed since version {version!r} was listed: "
                    f"faces joined or left it (it now holds {cluster.count}); nothing was done: list the "
                    "clusters again and check its faces"
                )
            return list(cluster.snapshots)
        for snapshot_id in snapshot_ids:
            check_id("snapshot id", snapshot_id)
        return await asyncio.to_thread(self.state.snapshots.get_snapshots, list(dict.fromkeys(snapshot_ids)))

    def _crops(self, snapshots: Sequence[Snapshot]) -> tuple[list[Crop], dict[str, float], dict[str, Frame]]:
        """The snapshots' aligned crops as enrolment crops, with quality and decoded image by source; a crop
        that does not decode to a 112×112 colour face is left out (its embedding still counts)."""
        crops: list[Crop] = []
        quality: dict[str, float] = {}
        images: dict[str, Frame] = {}
        for snapshot in snapshots:
            data = self.state.snapshots.image(snapshot.event_id, "crop")
            if declared_size(data) != (CROP_SIZE, CROP_SIZE):  # checked before a pixel is decoded
                continue
            image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
            if image is None or image.shape != (CROP_SIZE, CROP_SIZE, 3):
                continue
            source = f"snapshot:{snapshot.event_id}"
            crops.append(Crop("jpeg", data, source))
            quality[source] = min(max(snapshot.quality, 0.0), 1.0)
            images[source] = np.asarray(image, dtype=np.uint8)
        return crops, quality, images
