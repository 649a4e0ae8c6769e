"""`FleetClient`: the FleetService calls for one device, with link types in and out (converted by
facefleet.link.serde), and the report batches built from the queued events. The only agent module that
touches the generated facefleet.v1 code."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import grpc

from facefleet.agent.domain.fleet import QueuedReport
from facefleet.link import serde
from facefleet.link.errors import LinkError
from facefleet.link.fleet import WATCH_END_KEY, Registration, ReportOutcome, Welcome
from facefleet.link.models import ModelStatus

# The *_pb2_grpc modules carry no annotations; the *_pb2.pyi stubs are found through mypy_path.
from facefleet.v1 import fleet_pb2, fleet_pb2_grpc
from facefleet.vision.errors import ModelStoreError

MAX_MODEL_STATUSES = 16
DEFINITIVE_DOWNLOAD_ERRORS = frozenset(
    {
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.DATA_LOSS,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.PERMISSION_DENIED,
    }
)
"""DownloadModel failures that a retry would not cure: the version is refused."""


# -- models --------------------------------------------------------------------------------------------


# -- events --------------------------------------------------------------------------------------------


# -- fleet calls ---------------------------------------------------------------------------------------


def report_to_proto(
    device_id: str, reports: Sequence[QueuedReport], health: Mapping[str, float]
) -> tuple[fleet_pb2.ReportResultsRequest, list[tuple[str, str]]]:
    """The request for the queued reports, and (event_id, reason) of those refused here: an event queued
    under another device id (device_id changed since) would make the server refuse the whole batch."""
    events, refused = [], []
    for report in reports:
        if report.event.device_id != device_id:
            refused.append(
                (report.event_id, f"queued as device {report.event.device_id!r}, not {device_id!r}")
            )
        else:
            events.append(serde.event_to_proto(report.event))
    return fleet_pb2.ReportResultsRequest(device_id=device_id, events=events, health=dict(health)), refused


class WatchStream:
    """An open Watch call: read() the next update, None when the server ended the stream."""

    def __init__(self, call: Any) -> None:
        self._call = call

    async def read(self) -> serde.WatchUpdate | None:
        while True:
            message = await self._call.read()
            if message is grpc.aio.EOF:
                return None
            update = serde.watch_update_from_proto(message)
            if update is not None:
                return update

    async def end_reason(self) -> str:
        """Why the server ended the stream (facefleet.link.fleet WATCH_END_*), "" when it did not say."""
        for key, value in await self._call.trailing_metadata() or ():
            if key == WATCH_END_KEY:
                return str(value)
        return ""

    def cancel(self) -> None:
        self._call.cancel()


class FleetClient:
    """FleetService for one device over one channel; gRPC errors surface as grpc.aio.AioRpcError."""

    def __init__(self, channel: grpc.aio.Channel, device_id: str) -> None:
        self._stub = fleet_pb2_grpc.FleetServiceStub(channel)  # type: ignore[no-untyped-call]
        self.device_id = device_id

    async def register(self, registration: Registration, timeout: float) -> Welcome:
        response = await self._stub.Register(serde.registration_to_proto(registration), timeout=timeout)
        return serde.welcome_from_proto(response)

    def watch(self, from_revision: int, gallery_id: str, models: Sequence[str]) -> WatchStream:
        request = fleet_pb2.WatchRequest(
            device_id=self.device_id,
            from_revision=from_revision,
            gallery_id=gallery_id,
            embedding_models=list(models),
        )
        return WatchStream(self._stub.Watch(request))

    async def acknowledge(self, revision: int, timeout: float) -> int:
        """Tell the server the applied revision; its current revision."""
        request = fleet_pb2.AckGalleryRequest(device_id=self.device_id, gallery_revision=revision)
        response = await self._stub.AckGallery(request, timeout=timeout)
        return int(response.gallery_revision)

    async def report(
        self, reports: Sequence[QueuedReport], health: Mapping[str, float], timeout: float
    ) -> ReportOutcome:
        """Send reports (with health figures); events that cannot even be converted count as refused."""
        request, refused = report_to_proto(self.device_id, reports, health)
        outcome = serde.outcome_from_proto(await self._stub.ReportResults(request, timeout=timeout))
        return ReportOutcome(
            outcome.stored, outcome.duplicates, (*outcome.rejected, *refused), outcome.deferred
        )

    async def download(self, model_id: str, file: str, offset: int, timeout: float) -> AsyncIterator[bytes]:
        """The bytes of one file of a published model version from offset on, chunk by chunk; a chunk that
        does not continue where the previous one ended raises LinkError."""
        request = fleet_pb2.DownloadModelRequest(
            device_id=self.device_id, model_id=model_id, file=file, offset=offset
        )
        position = offset
        try:
            async for chunk in self._stub.DownloadModel(request, timeout=timeout):
                if chunk.offset != position:
                    raise LinkError(
                        f"model {model_id} {file}: chunk at byte {chunk.offset}, expected {position}; "
                        "the download restarts"
                    )
                position += len(chunk.data)
                yield bytes(chunk.data)
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in DEFINITIVE_DOWNLOAD_ERRORS:
                raise  # the connection: retried
            raise ModelStoreError(
                f"the server refused model {model_id} {file} ({exc.code().name}: {exc.details()})"
            ) from None

    async def report_models(
        self,
        statuses: Sequence[ModelStatus],
        versions: Mapping[str, str],
        precisions: Mapping[str, str],
        timeout: float,
    ) -> None:
        """Tell the server how assigned model versions are doing, which run now and at what precision."""
        request = fleet_pb2.ReportModelStatusRequest(
            device_id=self.device_id,
            statuses=[serde.status_to_proto(s) for s in statuses[-MAX_MODEL_STATUSES:]],
            model_versions=dict(versions),
            model_precisions=dict(precisions),
        )
        await self._stub.ReportModelStatus(request, timeout=timeout)
