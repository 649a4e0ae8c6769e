"""The FastAPI application of the HTTP API: the routers under /api, the OpenAPI document at
/api/openapi.json, problem details for errors outside the routes too, the upload limits from the server's
configuration, and the web console (its files at /console/, its sessions at /api/session), with the
security headers on every response."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import RedirectResponse
from starlette.exceptions import HTTPException

from facefleet import __version__
from facefleet.link.checks import MAX_GROUPS
from facefleet.server.api.handlers import OperatorHandlers
from facefleet.server.api.http import audit, devices, people, queries, rollouts, session, unknown
from facefleet.server.api.http.enrolment import FIELDS, UploadEnrolment
from facefleet.server.api.http.problems import ProblemRoute, routing_problem
from facefleet.server.api.http.timing import RequestObserver, ServerTiming
from facefleet.server.api.http.uploads import UploadLimits
from facefleet.server.config import ConsoleConfig, ServerConfig
from facefleet.server.console.assets import CONSOLE_PATH, ConsoleFiles, SecurityHeaders
from facefleet.server.console.sessions import ConsoleSessions
from facefleet.server.domain.records import MAX_ENROL_IMAGES

PREFIX = "/api"
OPENAPI_PATH = f"{PREFIX}/openapi.json"


@dataclass(frozen=True)
class HttpLimits:
    """Upload limits. images: enrolment photos (each, and all of one request together); models: a model
    upload (all its files together); body_timeout_s: the time of a body read without a token, or of the
    rest of a refused request's body (s)."""

    images: UploadLimits
    models: UploadLimits
    body_timeout_s: float

    @classmethod
    def from_config(cls, config: ServerConfig) -> HttpLimits:
        image = config.gallery.max_image_bytes
        together = max(image, config.listen.max_message_bytes)
        upload = config.models.max_upload_bytes
        return cls(
            images=UploadLimits(
                image,
                together,
                MAX_ENROL_IMAGES,
                "gallery.max_image_bytes, listen.max_message_bytes",
                max_fields=MAX_GROUPS + len(FIELDS),
            ),
            models=UploadLimits(upload, upload, 2, "models.max_upload_bytes"),
            body_timeout_s=config.listen.http_body_timeout_seconds,
        )


def create_app(
    handlers: OperatorHandlers,
    limits: HttpLimits,
    console: ConsoleConfig | None = None,
    observer: RequestObserver | None = None,
) -> FastAPI:
    """The application over the server's operator handlers; the web console per `console` (default: on);
    every request told to `observer` (the server's metrics) when there is one."""
    console = console or ConsoleConfig()
    app = FastAPI(
        title="FaceFleet",
        version=__version__,
        description="The FaceFleet server's HTTP/JSON API: what AdminService and QueryService do. "
        "Authorization: Bearer <token> (role admin, or query for events and fleet status). Errors are "
        "RFC 9457 problem details (application/problem+json).",
        openapi_url=OPENAPI_PATH,
        docs_url=None,
        redoc_url=None,
    )
    app.state.handlers = handlers
    app.state.enrolment = UploadEnrolment(handlers.people)
    app.state.image_limits = limits.images
    app.state.model_limits = limits.models
    app.state.body_timeout_s = limits.body_timeout_s
    app.state.sessions = ConsoleSessions(
        idle_s=console.session_idle_minutes * 60.0,
        max_age_s=console.session_max_hours * 3600.0,
        limit=console.max_sessions,
        per_token=console.max_sessions_per_token,
        sign_ins_per_minute=console.sign_ins_per_minute,
    )
    api = APIRouter(prefix=PREFIX, route_class=ProblemRoute)
    modules = (people, unknown, queries, rollouts, devices, audit) + ((session,) if console.enabled else ())
    templates: dict[int, str] = {}
    for module in modules:
        api.include_router(module.router)
        templates.update((id(route), PREFIX + route.path) for route in module.router.routes)
    app.include_router(api)
    if console.enabled:
        app.add_api_route("/", _to_console, include_in_schema=False)
        app.add_api_route(CONSOLE_PATH, _to_console, include_in_schema=False)
        app.mount(CONSOLE_PATH, ConsoleFiles(), name="console")
    app.add_middleware(SecurityHeaders)
    app.add_middleware(ServerTiming, observer=observer, templates=templates)
    app.add_exception_handler(HTTPException, routing_problem)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


async def _to_console() -> RedirectResponse:
    return RedirectResponse(CONSOLE_PATH + "/", status_code=307)


def _openapi(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document; validation errors are documented as the 4XX problem details they are."""
    if app.openapi_schema is None:
        document = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        for operations in document.get("paths", {}).values():
            for operation in operations.values():
                operation.get("responses", {}).pop("422", None)
        for name in ("HTTPValidationError", "ValidationError"):
            document.get("components", {}).get("schemas", {}).pop(name, None)
        app.openapi_schema = document
    return app.openapi_schema
