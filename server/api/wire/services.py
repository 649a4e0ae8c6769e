"""The generated service base classes the servicers extend, and their registration on a grpc.aio server."""

from __future__ import annotations

import grpc

from facefleet.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    fleet_pb2,
    fleet_pb2_grpc,
    query_pb2,
    query_pb2_grpc,
)

FleetServicerBase = fleet_pb2_grpc.FleetServiceServicer
AdminServicerBase = admin_pb2_grpc.AdminServiceServicer
QueryServicerBase = query_pb2_grpc.QueryServiceServicer


def add_fleet_servicer(servicer: FleetServicerBase, server: grpc.aio.Server) -> None:
    fleet_pb2_grpc.add_FleetServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]


def add_admin_servicer(servicer: AdminServicerBase, server: grpc.aio.Server) -> None:
    admin_pb2_grpc.add_AdminServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]


def add_query_servicer(servicer: QueryServicerBase, server: grpc.aio.Server) -> None:
    query_pb2_grpc.add_QueryServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]


SERVICE_NAMES = tuple(
    module.DESCRIPTOR.services_by_name[name].full_name
    for module, name in (
        (fleet_pb2, "FleetService"),
        (admin_pb2, "AdminService"),
        (query_pb2, "QueryService"),
    )
)
OPERATOR_SERVICE_NAMES = SERVICE_NAMES[1:]
"""The services that take operators' bearer tokens (AdminService, QueryService)."""
