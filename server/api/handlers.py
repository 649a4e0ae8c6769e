"""What the operator-facing APIs (gRPC AdminService and QueryService, the HTTP API) call: one set of handlers
built by the server (facefleet.server.app) and shared by both, with the authenticator of bearer tokens."""

from __future__ import annotations

from dataclasses import dataclass

from facefleet.server.api.audit import AuditLog
from facefleet.server.api.security import Authenticator
from facefleet.server.fleet.device_admin import DeviceAdmin
from facefleet.server.fleet.queries import QueryHandler
from facefleet.server.gallery.people import PeopleHandler
from facefleet.server.gallery.unknown import UnknownFaces
from facefleet.server.rollouts.uploads import ModelAdmin


@dataclass(frozen=True)
class OperatorHandlers:
    auth: Authenticator
    people: PeopleHandler
    unknown: UnknownFaces
    queries: QueryHandler
    models: ModelAdmin
    devices: DeviceAdmin
    audit: AuditLog
