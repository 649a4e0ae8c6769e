"""The link's protobuf conversions, written once for both sides: `*_to_proto` builds the facefleet.v1
message of a link type, `*_from_proto` reads one back into a validated link type, raising LinkError that
names the field. The only module of the link that imports the generated code."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone

import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp

from facefleet.link.errors import LinkError
from facefleet.link.events import AttributesResult, Decision, Event, EventKind, ExpressionResult, FaceSnapshot
from facefleet.link.fleet import Heartbeat, Registration, ReportOutcome, Welcome
from facefleet.link.gallery import Embedding, GalleryDelta, Person
from facefleet.link.models import (
    MAX_STATUSES,
    Activation,
    ModelAssignment,
    ModelFile,
    ModelRelease,
    ModelStatus,
    UnsupportedRelease,
    known_model_precisions,
    known_model_versions,
)
from facefleet.v1 import events_pb2, fleet_pb2, gallery_pb2, models_pb2
from facefleet.vision.models.tasks import TASKS

Notes = tuple[str, ...]
"""What a decoder left out because this side does not know it (a newer peer's task, precision or enum
value), one note each, e.g. "model_precisions['pose']: task 'pose'": for the caller to log."""

WatchUpdate = GalleryDelta | Heartbeat | ModelAssignment
"""What a Watch stream carries."""

KINDS: dict[events_pb2.EventKind, EventKind] = {
    events_pb2.EVENT_KIND_FACE: "face",
    events_pb2.EVENT_KIND_ACCESS: "access",
}
KIND_VALUES = {kind: value for value, kind in KINDS.items()}
DECISIONS: dict[events_pb2.Decision, Decision] = {
    events_pb2.DECISION_MATCH: "match",
    events_pb2.DECISION_UNKNOWN: "unknown",
    events_pb2.DECISION_AMBIGUOUS: "ambiguous",
    events_pb2.DECISION_UNDECIDED: "undecided",
    events_pb2.DECISION_GRANTED: "granted",
    events_pb2.DECISION_DENIED: "denied",
}
DECISION_VALUES = {decision: value for value, decision in DECISIONS.items()}
ACTIVATIONS: dict[models_pb2.ModelActivation, Activation] = {
    models_pb2.MODEL_ACTIVATION_DOWNLOADING: "downloading",
    models_pb2.MODEL_ACTIVATION_VERIFYING: "verifying",
    models_pb2.MODEL_ACTIVATION_ACTIVE: "active",
    models_pb2.MODEL_ACTIVATION_FAILED: "failed",
}
ACTIVATION_VALUES = {name: value for value, name in ACTIVATIONS.items()}


# -- time --------------------------------------------------------------------------------------------


def timestamp(moment: datetime | None) -> Timestamp:
    """A UTC Timestamp (a naive time is local); None gives the unset (zero) Timestamp. Computed from the
    difference to the epoch: Timestamp.FromDatetime took most of the time of a fleet status of 2,000
    agents (three times each)."""
    if moment is None:
        return Timestamp()
    since = (moment if moment.tzinfo is not None else moment.astimezone(timezone.utc)) - _EPOCH
    return Timestamp(seconds=since.days * 86_400 + since.seconds, nanos=since.microseconds * 1000)


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def from_timestamp(stamp: Timestamp, name: str) -> datetime:
    """A timezone-aware UTC datetime; a missing (zero) or out-of-range Timestamp is a LinkError."""
    if stamp.seconds == 0 and stamp.nanos == 0:
        raise LinkError(f"{name} is missing")
    try:
        moment: datetime = stamp.ToDatetime(tzinfo=timezone.utc)
        return moment
    except (ValueError, OverflowError):
        raise LinkError(f"{name} is out of range") from None


def _optional_time(stamp: Timestamp, name: str) -> datetime | None:
    return from_timestamp(stamp, name) if stamp.seconds or stamp.nanos else None


# -- gallery -----------------------------------------------------------------------------------------


def embedding_to_proto(embedding: Embedding, *, with_vector: bool = True) -> gallery_pb2.Embedding:
    """vector: D float32 little-endian bytes (left empty in listings without vectors)."""
    return gallery_pb2.Embedding(
        model_id=embedding.model_id,
        dim=embedding.dim,
        vector=embedding.vector.astype("<f4").tobytes() if with_vector else b"",
        quality=embedding.quality,
        source=embedding.source,
    )


def embedding_from_proto(message: gallery_pb2.Embedding, name: str) -> Embedding:
    """An embedding; `name` (e.g. 'embeddings[2]') prefixes every error."""
    if message.dim == 0 or len(message.vector) != 4 * message.dim:
        raise LinkError(
            f"{name}: vector has {len(message.vector)} bytes, but dim {message.dim} needs {4 * message.dim} "
            "(float32 little-endian)"
        )
    vector = np.frombuffer(message.vector, dtype="<f4").astype(np.float32)
    try:
        return Embedding(message.model_id, vector, float(message.quality), message.source or "client")
    except LinkError as exc:
        raise LinkError(f"{name}: {exc}") from None


def person_to_proto(person: Person, *, with_vectors: bool = True) -> gallery_pb2.Person:
    return gallery_pb2.Person(
        person_id=person.person_id,
        display_name=person.display_name,
        groups=person.groups,
        metadata_json=person.metadata_json,
        embeddings=[embedding_to_proto(e, with_vector=with_vectors) for e in person.embeddings],
        created_at=timestamp(person.created_at),
        updated_at=timestamp(person.updated_at),
        revision=person.revision,
    )


def person_from_proto(message: gallery_pb2.Person) -> Person:
    name = f"person {message.person_id[:80]!r}"
    try:
        return Person(
            person_id=message.person_id,
            display_name=message.display_name,
            groups=tuple(message.groups),
            metadata_json=message.metadata_json,
            embeddings=tuple(
                embedding_from_proto(e, f"embeddings[{i}] ({e.model_id or 'no model id'})")
                for i, e in enumerate(message.embeddings)
            ),
            created_at=_optional_time(message.created_at, "created_at"),
            updated_at=_optional_time(message.updated_at, "updated_at"),
            revision=message.revision,
        )
    except LinkError as exc:
        raise LinkError(f"{name}: {exc}") from None


def delta_to_proto(delta: GalleryDelta) -> gallery_pb2.GalleryDelta:
    return gallery_pb2.GalleryDelta(
        from_revision=delta.from_revision,
        to_revision=delta.to_revision,
        snapshot=delta.snapshot,
        upserts=[person_to_proto(p) for p in delta.upserts],
        deletes=delta.deletes,
        more_parts=delta.more_parts,
        gallery_id=delta.gallery_id,
    )


def delta_from_proto(message: gallery_pb2.GalleryDelta) -> GalleryDelta:
    return GalleryDelta(
        from_revision=message.from_revision,
        to_revision=message.to_revision,
        snapshot=message.snapshot,
        upserts=tuple(person_from_proto(p) for p in message.upserts),
        deletes=tuple(message.deletes),
        gallery_id=message.gallery_id,
        more_parts=message.more_parts,
    )


# -- the watch stream --------------------------------------------------------------------------------


def watch_update_to_proto(update: WatchUpdate) -> fleet_pb2.WatchResponse:
    if isinstance(update, GalleryDelta):
        return fleet_pb2.WatchResponse(gallery=delta_to_proto(update))
    if isinstance(update, ModelAssignment):
        return fleet_pb2.WatchResponse(models=assignment_to_proto(update))
    return fleet_pb2.WatchResponse(
        heartbeat=fleet_pb2.Heartbeat(
            gallery_revision=update.gallery_revision, server_time=timestamp(update.server_time)
        )
    )


def watch_update_from_proto(message: fleet_pb2.WatchResponse) -> WatchUpdate | None:
    """A Watch message; None for an update kind this side does not know yet (a later v1 addition)."""
    kind = message.WhichOneof("update")
    if kind == "gallery":
        return delta_from_proto(message.gallery)
    if kind == "heartbeat":
        beat = message.heartbeat
        return Heartbeat(beat.gallery_revision, _optional_time(beat.server_time, "heartbeat server_time"))
    if kind == "models":
        return assignment_from_proto(message.models)
    return None


# -- events ------------------------------------------------------------------------------------------


def event_to_proto(event: Event) -> events_pb2.Event:
    message = events_pb2.Event(
        event_id=event.event_id,
        device_id=event.device_id,
        time=timestamp(event.time),
        camera=event.camera,
        kind=KIND_VALUES[event.kind],
        person_id=event.person_id,
        decision=DECISION_VALUES[event.decision],
        score=event.score,
        margin=event.margin,
        quality=event.quality,
        model_versions=dict(event.model_versions),
        gallery_revision=event.gallery_revision,
        door=event.door,
        reason=event.reason,
    )
    if event.expression is not None:
        message.expression.label = event.expression.label
        message.expression.probabilities.update(event.expression.probabilities)
    if event.attributes is not None:
        message.attributes.gender = event.attributes.gender
        message.attributes.male_probability = event.attributes.male_probability
        message.attributes.age_years = event.attributes.age_years
        message.attributes.age_band = event.attributes.age_band
    if event.snapshot is not None:
        message.snapshot.crop_jpeg = event.snapshot.crop_jpeg
        message.snapshot.context_jpeg = event.snapshot.context_jpeg
        message.snapshot.embedding.CopyFrom(embedding_to_proto(event.snapshot.embedding))
    return message


def newer_event_values(message: events_pb2.Event) -> str | None:
    """The kind or decision of an event that this side does not know (a newer agent's), e.g. 'kind 3'; None
    when it knows both (or one is missing: a malformed event, refused by event_from_proto)."""
    unknown = [
        f"{name} {value}"
        for name, value, known in (
            ("kind", message.kind, KINDS),
            ("decision", message.decision, DECISIONS),
        )
        if value != 0 and value not in known
    ]
    return " and ".join(unknown) or None


def event_from_proto(message: events_pb2.Event, default_device: str = "") -> Event:
    """An event; one without a device_id is default_device's (the reporting device)."""
    if message.kind not in KINDS:
        raise LinkError("kind must be EVENT_KIND_FACE or EVENT_KIND_ACCESS")
    if message.decision not in DECISIONS:
        raise LinkError("decision is missing or unknown")
    expression = None
    if message.HasField("expression"):
        expression = ExpressionResult(message.expression.label, dict(message.expression.probabilities))
    attributes = None
    if message.HasField("attributes"):
        attributes = AttributesResult(
            message.attributes.gender,
            round(message.attributes.male_probability, 4),
            round(message.attributes.age_years, 1),
            message.attributes.age_band,
        )
    snapshot = None
    if message.HasField("snapshot"):
        snapshot = FaceSnapshot(
            message.snapshot.crop_jpeg,
            message.snapshot.context_jpeg,
            embedding_from_proto(message.snapshot.embedding, "snapshot.embedding"),
        )
    return Event(
        event_id=message.event_id,
        device_id=message.device_id or default_device,
        time=from_timestamp(message.time, "time"),
        kind=KINDS[message.kind],
        decision=DECISIONS[message.decision],
        camera=message.camera,
        person_id=message.person_id,
        score=message.score,
        margin=message.margin,
        expression=expression,
        quality=message.quality,
        model_versions=dict(message.model_versions),
        gallery_revision=message.gallery_revision,
        door=message.door,
        reason=message.reason,
        snapshot=snapshot,
        attributes=attributes,
    )


# -- the session -------------------------------------------------------------------------------------


def registration_to_proto(registration: Registration) -> fleet_pb2.RegisterRequest:
    return fleet_pb2.RegisterRequest(
        device_id=registration.device_id,
        agent_version=registration.agent_version,
        model_versions=dict(registration.model_versions),
        capabilities=registration.capabilities,
        gallery_revision=registration.gallery_revision,
        gallery_id=registration.gallery_id,
        hostname=registration.hostname,
        model_statuses=[status_to_proto(s) for s in registration.model_statuses],
        groups=registration.groups,
        model_precisions=dict(registration.model_precisions),
    )


def registration_from_proto(request: fleet_pb2.RegisterRequest, device_id: str) -> tuple[Registration, Notes]:
    """The registration of device_id (the authenticated device, whatever the request names), without the
    model statuses, versions and precisions of tasks, states or precisions this side does not know (a newer
    agent's): those are left out, each with a note."""
    statuses, ignored = statuses_from_proto(request.model_statuses, "model_statuses")
    versions, unknown_versions = known_model_versions(dict(request.model_versions))
    precisions, unknown_precisions = known_model_precisions(dict(request.model_precisions))
    registration = Registration(
        device_id=device_id,
        agent_version=request.agent_version,
        hostname=request.hostname,
        model_versions=versions,
        capabilities=tuple(request.capabilities),
        gallery_revision=request.gallery_revision,
        gallery_id=request.gallery_id,
        model_statuses=statuses,
        groups=tuple(request.groups),
        model_precisions=precisions,
    )
    return registration, (*ignored, *unknown_versions, *unknown_precisions)


def welcome_to_proto(welcome: Welcome) -> fleet_pb2.RegisterResponse:
    return fleet_pb2.RegisterResponse(
        gallery_revision=welcome.gallery_revision,
        gallery_id=welcome.gallery_id,
        embedding_models=welcome.embedding_models,
        max_report_events=welcome.max_report_events,
        heartbeat_seconds=welcome.heartbeat_seconds,
        server_time=timestamp(welcome.server_time),
        cluster_threshold=welcome.cluster_threshold,
        server_version=welcome.server_version,
    )


def welcome_from_proto(message: fleet_pb2.RegisterResponse) -> Welcome:
    return Welcome(
        gallery_revision=message.gallery_revision,
        gallery_id=message.gallery_id,
        embedding_models=tuple(message.embedding_models),
        max_report_events=message.max_report_events,
        heartbeat_seconds=message.heartbeat_seconds,
        server_time=_optional_time(message.server_time, "server_time"),
        cluster_threshold=message.cluster_threshold if message.HasField("cluster_threshold") else None,
        server_version=message.server_version,
    )


def outcome_to_proto(outcome: ReportOutcome) -> fleet_pb2.ReportResultsResponse:
    return fleet_pb2.ReportResultsResponse(
        rejected=[fleet_pb2.EventRejection(event_id=i, reason=r) for i, r in outcome.rejected],
        stored=outcome.stored,
        duplicates=outcome.duplicates,
        deferred=[fleet_pb2.EventRejection(event_id=i, reason=r) for i, r in outcome.deferred],
    )


def outcome_from_proto(message: fleet_pb2.ReportResultsResponse) -> ReportOutcome:
    return ReportOutcome(
        stored=message.stored,
        duplicates=message.duplicates,
        rejected=tuple((r.event_id, r.reason) for r in message.rejected),
        deferred=tuple((r.event_id, r.reason) for r in message.deferred),
    )


# -- model versions ----------------------------------------------------------------------------------


def release_to_proto(release: ModelRelease) -> models_pb2.ModelRelease:
    return models_pb2.ModelRelease(
        task=release.task,
        model_id=release.model_id,
        files=[models_pb2.ModelFile(name=f.name, size=f.size, sha256=f.sha256) for f in release.files],
        manifest_json=release.manifest_json,
        rollout_id=release.rollout_id,
    )


def release_from_proto(message: models_pb2.ModelRelease) -> ModelRelease:
    return ModelRelease(
        message.task,
        message.model_id,
        tuple(ModelFile(f.name, f.size, f.sha256) for f in message.files),
        message.manifest_json,
        message.rollout_id,
    )


def assignment_to_proto(assignment: ModelAssignment) -> models_pb2.ModelAssignment:
    return models_pb2.ModelAssignment(releases=[release_to_proto(r) for r in assignment.releases])


def assignment_from_proto(message: models_pb2.ModelAssignment) -> ModelAssignment:
    """The releases of tasks this side knows; those of other tasks (added by a later release) go to
    `unsupported`, each decoded on its own, so that one never costs the others or the Watch stream."""
    releases, unsupported = [], []
    for r in message.releases:
        if r.task in TASKS:
            releases.append(release_from_proto(r))
        else:
            unsupported.append(UnsupportedRelease(r.task[:40], r.model_id[:128], r.rollout_id))
    return ModelAssignment(tuple(releases), tuple(unsupported))


def status_to_proto(status: ModelStatus) -> models_pb2.ModelStatus:
    return models_pb2.ModelStatus(
        task=status.task,
        model_id=status.model_id,
        rollout_id=status.rollout_id,
        state=ACTIVATION_VALUES[status.state],
        reason=status.reason,
        time=timestamp(status.time),
        retrying=status.state == "failed" and not status.final,
    )


def status_from_proto(message: models_pb2.ModelStatus, name: str) -> ModelStatus:
    if message.state not in ACTIVATIONS:
        raise LinkError(f"{name}: state is missing or unknown")
    if message.task not in TASKS:
        raise LinkError(f"{name}: task {message.task[:40]!r} is not one of {', '.join(TASKS)}")
    try:
        return ModelStatus(
            task=message.task,
            model_id=message.model_id,
            rollout_id=message.rollout_id,
            state=ACTIVATIONS[message.state],
            reason=message.reason,
            time=_optional_time(message.time, f"{name}.time"),
            final=not message.retrying,
        )
    except LinkError as exc:
        raise LinkError(f"{name}: {exc}") from None


def statuses_from_proto(
    messages: Sequence[models_pb2.ModelStatus], field: str
) -> tuple[tuple[ModelStatus, ...], Notes]:
    """The statuses, without those of a state or task this side does not know (a newer agent's), each left
    out with a note; a status without a state is malformed (LinkError)."""
    if len(messages) > MAX_STATUSES:
        raise LinkError(f"{field}: {len(messages)} statuses; the limit is {MAX_STATUSES}")
    statuses, notes = [], []
    for i, m in enumerate(messages):
        name = f"{field}[{i}]"
        if m.state != 0 and m.state not in ACTIVATIONS:
            notes.append(f"{name}: state {m.state} ({m.model_id[:80]})")
        elif m.task not in TASKS and m.state != 0:
            notes.append(f"{name}: task {m.task[:40]!r} ({m.model_id[:80]})")
        else:
            statuses.append(status_from_proto(m, name))
    return tuple(statuses), tuple(notes)
