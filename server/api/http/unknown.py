"""/api/unknown and /api/snapshots: the face snapshots agents report, the clusters of unknown faces under
review, their JPEG images, and what operators do with them (enrol as a new or existing person, dismiss,
delete), by cluster or by chosen snapshots. An action on a cluster gives the version it was listed or shown
at (`?version=`): if faces joined or left it since, it is refused with 409 and nothing changes. Face images
are personal data: everything needs an admin token."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from facefleet.link.checks import check_id, utc_now
from facefleet.link.events import Decision
from facefleet.server.api.handlers import OperatorHandlers
from facefleet.server.api.http.audited import audited
from facefleet.server.api.http.auth import AdminOperator, Handlers
from facefleet.server.api.http.params import InRange
from facefleet.server.api.http.people import JPEG, PersonOut
from facefleet.server.api.http.problems import ERROR_RESPONSES, ProblemRoute
from facefleet.server.api.security import Operator
from facefleet.server.domain.queries import EPOCH
from facefleet.server.domain.snapshots import (
    ImageKind,
    Snapshot,
    SnapshotFilter,
    SnapshotStatus,
    UnknownCluster,
)
from facefleet.server.gallery.unknown import MAX_SNAPSHOTS_PER_ACTION, UnknownEnrolment

router = APIRouter(tags=["unknown faces"], route_class=ProblemRoute, responses=ERROR_RESPONSES)
ClusterId = Annotated[str, Path(description="The id of the cluster's first snapshot")]
SnapshotId = Annotated[str, Path(description="The event id of the snapshot")]
ClusterVersion = Annotated[
    str,
    Query(
        description="The cluster's version as listed or shown: if faces joined or left it since, the action "
        "is refused (409) and nothing changes"
    ),
]


class SnapshotOut(BaseModel):
    snapshot_id: str = Field(description="The id of the face event it belongs to")
    device_id: str
    camera: str
    time: datetime
    decision: str
    person_id: str = Field(description="Who the agent matched, or who it was enrolled as")
    quality: float
    model_id: str = Field(description="The embedding model of its embedding")
    status: SnapshotStatus
    crop_bytes: int
    context_bytes: int = Field(description="0: the agent sent no context view")

    @classmethod
    def of(cls, s: Snapshot) -> SnapshotOut:
        return cls(
            snapshot_id=s.event_id,
            device_id=s.device_id,
            camera=s.camera,
            time=s.time,
            decision=s.decision,
            person_id=s.person_id,
            quality=s.quality,
            model_id=s.model_id,
            status=s.status,
            crop_bytes=s.crop_bytes,
            context_bytes=s.context_bytes,
        )


class ClusterSummary(BaseModel):
    cluster_id: str
    model_id: str
    count: int
    first_seen: datetime
    last_seen: datetime
    devices: list[str]
    cameras: list[str] = Field(description="device/camera")
    best_snapshot_id: str = Field(description="The snapshot of the highest quality, the one to show")
    version: str = Field(
        description="Changes whenever faces join or leave the cluster; give it to enrol, dismiss or delete it"
    )

    @classmethod
    def of(cls, c: UnknownCluster) -> ClusterSummary:
        return cls(
            cluster_id=c.cluster_id,
            version=c.version,
            model_id=c.model_id,
            count=c.count,
            first_seen=c.first_seen,
            last_seen=c.last_seen,
            devices=list(c.devices),
            cameras=list(c.cameras),
            best_snapshot_id=c.best.event_id,
        )


class Clusters(BaseModel):
    clusters: list[ClusterSummary] = Field(description="Newest first")


class ClusterOut(ClusterSummary):
    snapshots: list[SnapshotOut] = Field(description="Newest first")


class SnapshotPage(BaseModel):
    snapshots: list[SnapshotOut] = Field(description="Newest first")
    next_page_token: str = Field(description="Empty on the last page")


class PersonFields(BaseModel):
    """Who the snapshots are: a new person (existing false), or more samples of an enrolled one."""

    model_config = ConfigDict(extra="forbid")

    person_id: str
    display_name: str = ""
    groups: list[str] = []
    existing: bool = False


class SnapshotsEnrolment(PersonFields):
    snapshot_ids: list[str] = Field(max_length=MAX_SNAPSHOTS_PER_ACTION)


class SnapshotIds(BaseModel):
    model_config = ConfigDict(extra="forbid")

    snapshot_ids: list[str] = Field(max_length=MAX_SNAPSHOTS_PER_ACTION)


class Enrolled(BaseModel):
    person: PersonOut
    snapshot_ids: list[str]
    revision: int


class Counted(BaseModel):
    count: int = Field(description="How many snapshots changed")


@router.get(
    "/unknown/clusters",
    summary="Clusters of unknown faces under review",
    response_model=Clusters,
)
async def clusters(operator: AdminOperator, handlers: Handlers) -> Response:
    return Response(await handlers.unknown.rendered(_clusters_json), media_type="application/json")


def _clusters_json(clusters: list[UnknownCluster]) -> bytes:
    """The listing's body, made once per clustering (tens of thousands of clusters are megabytes)."""
    return Clusters(clusters=[ClusterSummary.of(c) for c in clusters]).model_dump_json().encode()


@router.get(
    "/unknown/clusters/{cluster_id}", summary="One cluster with its snapshots", response_model=ClusterOut
)
async def cluster(cluster_id: ClusterId, operator: AdminOperator, handlers: Handlers) -> ClusterOut:
    found = await handlers.unknown.cluster(cluster_id)
    return ClusterOut(
        **ClusterSummary.of(found).model_dump(), snapshots=[SnapshotOut.of(s) for s in found.snapshots]
    )


@router.post(
    "/unknown/clusters/{cluster_id}/enrol",
    summary="Enrol a cluster's snapshots as a person",
    status_code=201,
    response_model=Enrolled,
)
async def enrol_cluster(
    cluster_id: ClusterId,
    person: PersonFields,
    operator: AdminOperator,
    handlers: Handlers,
    version: ClusterVersion = "",
) -> Enrolled:
    return await _enrol(handlers, operator, person, cluster_id, (), version)


@router.post("/unknown/clusters/{cluster_id}/dismiss", summary="Take a cluster out of the review")
async def dismiss_cluster(
    cluster_id: ClusterId, operator: AdminOperator, handlers: Handlers, version: ClusterVersion = ""
) -> Counted:
    async with audited(handlers, operator, "unknown.dismiss", cluster_id):
        return Counted(count=await handlers.unknown.dismiss(cluster_id, (), version))


@router.delete("/unknown/clusters/{cluster_id}", summary="Delete a cluster's snapshots and images now")
async def delete_cluster(
    cluster_id: ClusterId, operator: AdminOperator, handlers: Handlers, version: ClusterVersion = ""
) -> Counted:
    async with audited(handlers, operator, "unknown.delete", cluster_id):
        return Counted(count=await handlers.unknown.delete(cluster_id, (), version))


@router.get("/snapshots", summary="Face snapshots, newest first", response_model=SnapshotPage)
async def snapshots(
    operator: AdminOperator,
    handlers: Handlers,
    since: Annotated[datetime | None, Query(description="At or after (ISO 8601 with zone)"), InRange] = None,
    until: Annotated[datetime | None, Query(description="Before (default: now)"), InRange] = None,
    device_id: str = "",
    camera: str = "",
    decision: Decision | None = None,
    status: SnapshotStatus | None = None,
    page_size: Annotated[int, Query(description="1–1000; 0 means 100")] = 0,
    page_token: str = "",
) -> SnapshotPage:
    flt = SnapshotFilter(
        since=since or EPOCH,
        until=until or utc_now() + timedelta(microseconds=1),
        device_id=device_id,
        camera=camera,
        decision=decision or "",
        status=status or "",
    )
    page = await handlers.unknown.snapshots(flt, page_token, page_size)
    return SnapshotPage(
        snapshots=[SnapshotOut.of(s) for s in page.snapshots],
        next_page_token=page.next_cursor.encode() if page.next_cursor else "",
    )


@router.get(
    "/snapshots/{snapshot_id}/{kind}",
    summary="A snapshot's aligned face crop or its context view, as JPEG",
    response_class=Response,
    responses={200: {"content": {JPEG: {}}, "description": "The image"}},
)
async def image(
    snapshot_id: SnapshotId, kind: Literal["crop", "context"], operator: AdminOperator, handlers: Handlers
) -> Response:
    which: ImageKind = kind
    return Response(await handlers.unknown.image(snapshot_id, which), media_type=JPEG)


@router.post(
    "/snapshots/enrol", summary="Enrol chosen snapshots as a person", status_code=201, response_model=Enrolled
)
async def enrol_snapshots(body: SnapshotsEnrolment, operator: AdminOperator, handlers: Handlers) -> Enrolled:
    return await _enrol(handlers, operator, body, "", tuple(body.snapshot_ids))


@router.post("/snapshots/dismiss", summary="Take chosen snapshots out of the review")
async def dismiss_snapshots(body: SnapshotIds, operator: AdminOperator, handlers: Handlers) -> Counted:
    async with audited(handlers, operator, "unknown.dismiss", ",".join(body.snapshot_ids)):
        return Counted(count=await handlers.unknown.dismiss("", body.snapshot_ids))


@router.post("/snapshots/delete", summary="Delete chosen snapshots and their images now")
async def delete_snapshots(body: SnapshotIds, operator: AdminOperator, handlers: Handlers) -> Counted:
    async with audited(handlers, operator, "unknown.delete", ",".join(body.snapshot_ids)):
        return Counted(count=await handlers.unknown.delete("", body.snapshot_ids))


async def _enrol(
    handlers: OperatorHandlers,
    operator: Operator,
    person: PersonFields,
    cluster_id: str,
    snapshot_ids: tuple[str, ...],
    version: str = "",
) -> Enrolled:
    async with audited(handlers, operator, "unknown.enrol", person.person_id):
        check_id("person_id", person.person_id)
        request = UnknownEnrolment(
            person_id=person.person_id,
            cluster_id=cluster_id,
            cluster_version=version,
            snapshot_ids=snapshot_ids,
            display_name=person.display_name,
            groups=tuple(person.groups),
            existing=person.existing,
        )
        enrolled = await handlers.unknown.enrol(request)
    return Enrolled(
        person=PersonOut.of(enrolled.person),
        snapshot_ids=list(enrolled.snapshot_ids),
        revision=enrolled.person.revision,
    )
