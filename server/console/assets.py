"""The web console's files and the security headers of every HTTP response.

The console is static: HTML, CSS and JavaScript modules in `static/` beside this module, served at
/console/ with ETags and `Cache-Control: no-cache` (a browser checks for a newer file on every load, and a
304 costs no body). It reaches the server only through /api with its session cookie.

Every response carries a Content-Security-Policy: the console's allows its own scripts, styles, images and
API calls and nothing else (no inline script or style, no eval, no framing); the API's allows nothing,
since JSON and images are never documents. API responses are `Cache-Control: no-store` unless a route says
otherwise: they carry people's faces and names, which a browser must not keep on disk after sign-out."""

from __future__ import annotations

from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

STATIC_DIR = Path(__file__).resolve().parent / "static"
CONSOLE_PATH = "/console"
CONSOLE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; font-src 'self'; manifest-src 'self'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'"
)
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"
API_CACHE_CONTROL = "no-store"
"""API responses (faces, names, events) are not kept by browsers or proxies."""
COMMON_HEADERS = (
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
    ("permissions-policy", "camera=(), microphone=(), geolocation=(), payment=(), usb=()"),
)


class ConsoleFiles(StaticFiles):
    """The console's files; index.html for /console/, revalidated on every load."""

    def __init__(self, directory: Path = STATIC_DIR) -> None:
        super().__init__(directory=directory, html=True, check_dir=False)

    def file_response(self, *args: Any, **kwargs: Any) -> Any:
        response = super().file_response(*args, **kwargs)
        response.headers["cache-control"] = "no-cache"
        return response


class SecurityHeaders:
    """ASGI middleware: the console's or the API's Content-Security-Policy, and the common hardening
    headers, on every HTTP response; no-store on the API's."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = str(scope.get("path", ""))
        console = path == "/" or path == CONSOLE_PATH or path.startswith(CONSOLE_PATH + "/")
        policy = CONSOLE_CSP if console else API_CSP

        async def send_with_headers(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["content-security-policy"] = policy
                for name, value in COMMON_HEADERS:
                    headers.setdefault(name, value)
                if not console:
                    headers.setdefault("cache-control", API_CACHE_CONTROL)
            await send(message)

        await self.app(scope, receive, send_with_headers)
