"""HTTP clients of a test server's HTTP API: httpx verifying TLS with the site CA, with a bearer token."""

from __future__ import annotations

import ssl
from typing import Any

import httpx

from tests.server.conftest import Harness


def client(harness: Harness, token: str | None = None, **kwargs: Any) -> httpx.AsyncClient:
    """A client of the harness's HTTP API; token None: the admin token, '' = none."""
    token = harness.admin_token if token is None else token
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    verify = ssl.create_default_context(cafile=str(harness.pki.tls_dir / "ca.pem"))
    return httpx.AsyncClient(base_url=harness.http_url, headers=headers, verify=verify, timeout=60, **kwargs)


def problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The response's problem detail, checked to be RFC 9457 with this status and gRPC code."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert (body["status"], body["code"]) == (status, code)
    assert body["type"] == "urn:facefleet:problem:" + code.lower().replace("_", "-")
    assert body["title"] and body["detail"]
    return body
