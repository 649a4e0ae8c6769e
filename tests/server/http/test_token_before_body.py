"""A request with a JSON body is refused for its token, session or CSRF token before its body is read: a body
that is not even JSON gets 401 or 403, never the 400 that parsing it gives. The console's sign-in, which
takes no token, takes a body of at most 4 KiB."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from facefleet.server.gallery.embedder import Enroller
from tests.server.conftest import Pki, run, serving
from tests.server.http.clients import client, problem

NOT_JSON = b'{"model_id": "expression@fer2013", "target": ' + b"[0, " * 100_000
JSON = {"Content-Type": "application/json"}


def test_a_json_body_is_read_only_after_the_callers_token_is_checked(
    tmp_path: Path, pki: Pki, enroller: Enroller
) -> None:
    async def scenario() -> dict[str, Any]:
        async with serving(tmp_path, pki, enroller) as harness:
            r: dict[str, Any] = {}

            async def rollout(http: httpx.AsyncClient, **headers: str) -> httpx.Response:
                return await http.post("/api/rollouts", content=NOT_JSON, headers={**JSON, **headers})

            async with client(harness, "") as anonymous:
                r["no token"] = problem(await rollout(anonymous), 401, "UNAUTHENTICATED")
                unknown = {"Authorization": "Bearer ff1.0123456789abcdef.unknown"}
                r["unknown token"] = problem(await rollout(anonymous, **unknown), 401, "UNAUTHENTICATED")
                r["big sign-in"] = problem(
                    await anonymous.post("/api/session", json={"token": "x" * 5000}),
                    413,
                    "RESOURCE_EXHAUSTED",
                )
                signed_in = await anonymous.post("/api/session", json={"token": harness.admin_token})
                assert signed_in.status_code == 200, signed_in.text
                r["session without CSRF"] = problem(await rollout(anonymous), 403, "PERMISSION_DENIED")
            async with client(harness, harness.query_token) as dashboard:
                r["query token"] = problem(await rollout(dashboard), 403, "PERMISSION_DENIED")
            async with client(harness) as admin:
                r["admin token"] = problem(await rollout(admin), 400, "INVALID_ARGUMENT")
                r["again"] = (await admin.get("/api/fleet")).status_code  # the connection still serves
            return r

    r = run(scenario)
    assert "Authorization: Bearer <token>" in r["no token"]["detail"]
    assert "unknown or revoked token" in r["unknown token"]["detail"]
    assert "over the limit of 4096" in r["big sign-in"]["detail"]
    assert "X-CSRF-Token" in r["session without CSRF"]["detail"]
    assert "'admin'" in r["query token"]["detail"]
    assert "parsing the body" in r["admin token"]["detail"] and r["again"] == 200
