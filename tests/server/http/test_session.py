"""The web console's sessions over HTTPS: sign-in sets an HttpOnly, Secure, SameSite=Strict cookie that
works in place of the bearer token; every change made with it needs the session's CSRF token and this
server's origin; the role of the token still decides; sign-out and a revoked token end the session; every
response carries the security headers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from http.cookies import SimpleCookie
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from starlette.requests import Request

from facefleet.link.checks import utc_now
from facefleet.server.api.http.auth import CSRF_HEADER, SESSION_COOKIE, admin_operator, admin_recheck
from facefleet.server.api.security import Authenticator, Operator, new_token
from facefleet.server.config import ConsoleConfig
from facefleet.server.console.assets import API_CSP, CONSOLE_CSP
from facefleet.server.console.sessions import ConsoleSessions, SessionsFullError, SignInsTooFrequentError
from facefleet.server.errors import UnauthenticatedError
from facefleet.server.gallery.embedder import Enroller
from facefleet.server.state.sqlite.state import SqliteState
from tests.server.conftest import Pki, run, serving
from tests.server.http.clients import client, problem


async def sign_in(http: httpx.AsyncClient, token: str) -> tuple[dict[str, Any], str]:
    """Sign a client without a bearer token in with `token`: (the session's body, Set-Cookie)."""
    response = await http.post("/api/session", json={"token": token})
    assert response.status_code == 200, response.text
    return response.json(), response.headers["set-cookie"]


def test_a_session_cookie_stands_in_for_the_token_and_changes_need_its_csrf_token(
    tmp_path: Path, pki: Pki, enroller: Enroller
) -> None:
    async def scenario() -> dict[str, Any]:
        async with serving(tmp_path, pki, enroller, tokens={"cache_seconds": 0}) as harness:
            async with client(harness, "") as http:
                body, set_cookie = await sign_in(http, harness.admin_token)
                csrf = {CSRF_HEADER: body["csrf_token"]}
                origin = {"Origin": harness.http_url}
                r: dict[str, Any] = {"body": body, "set_cookie": set_cookie}
                r["again"] = (await http.get("/api/session")).json()
                r["fleet"] = (await http.get("/api/fleet")).status_code
                r["no_csrf"] = problem(await http.delete("/api/people/nobody"), 403, "PERMISSION_DENIED")
                r["wrong_csrf"] = problem(
                    await http.delete("/api/people/nobody", headers={CSRF_HEADER: "x" * 43}),
                    403,
                    "PERMISSION_DENIED",
                )
                r["other_origin"] = problem(
                    await http.delete(
                        "/api/people/nobody", headers={**csrf, "Origin": "https://attacker.example"}
                    ),
                    403,
                    "PERMISSION_DENIED",
                )
                r["with_csrf"] = problem(
                    await http.delete("/api/people/nobody", headers={**csrf, **origin}), 404, "NOT_FOUND"
                )
                r["sign_out_without_csrf"] = problem(
                    await http.delete("/api/session"), 403, "PERMISSION_DENIED"
                )
                signed_out = await http.delete("/api/session", headers=csrf)
                r["signed_out"] = (signed_out.status_code, signed_out.headers["set-cookie"])
                http.cookies.set(SESSION_COOKIE, SimpleCookie(set_cookie)[SESSION_COOKIE].value)
                r["after"] = problem(await http.get("/api/fleet"), 401, "UNAUTHENTICATED")

            async with client(harness, "") as query:
                await sign_in(query, harness.query_token)
                r["query_csrf"] = (await query.get("/api/session")).json()["csrf_token"]
                r["query_reads"] = (await query.get("/api/events")).status_code
                r["query_people"] = problem(await query.get("/api/people"), 403, "PERMISSION_DENIED")
                r["query_change"] = problem(
                    await query.delete("/api/people/nobody", headers={CSRF_HEADER: r["query_csrf"]}),
                    403,
                    "PERMISSION_DENIED",
                )
                harness.server.state.revoke_token("dashboard")
                r["revoked"] = problem(await query.get("/api/events"), 401, "UNAUTHENTICATED")
            async with client(harness, "") as anonymous:
                r["bad_token"] = problem(
                    await anonymous.post("/api/session", json={"token": "ff1.abc.def"}),
                    401,
                    "UNAUTHENTICATED",
                )
                r["bad_token_cookie"] = anonymous.cookies.get(SESSION_COOKIE)
                r["long_token"] = problem(
                    await anonymous.post("/api/session", json={"token": "x" * 300}), 400, "INVALID_ARGUMENT"
                )
                r["anonymous"] = problem(await anonymous.get("/api/session"), 401, "UNAUTHENTICATED")
            async with client(harness) as admin:
                audit = (await admin.get("/api/audit", params={"action_prefix": "console."})).json()
                r["audit"] = [(e["who"], e["action"]) for e in audit["entries"]]
            return r

    r = run(scenario)
    body = r["body"]
    assert (body["operator"], body["role"]) == ("admin", "admin")
    assert len(body["csrf_token"]) >= 40
    assert "ff1." not in str(body) and "ff1." not in r["set_cookie"]
    cookie = SimpleCookie(r["set_cookie"])[SESSION_COOKIE]
    assert cookie["httponly"] and cookie["secure"]
    assert (cookie["samesite"].lower(), cookie["path"]) == ("strict", "/")
    assert r["again"]["csrf_token"] == body["csrf_token"]
    assert r["fleet"] == 200
    assert CSRF_HEADER in r["no_csrf"]["detail"] and CSRF_HEADER in r["wrong_csrf"]["detail"]
    assert "attacker.example" in r["other_origin"]["detail"]
    assert "nobody" in r["with_csrf"]["detail"]
    assert r["signed_out"][0] == 204 and 'facefleet_session=""' in r["signed_out"][1]
    assert r["query_csrf"] != body["csrf_token"]
    assert r["query_reads"] == 200
    assert "'admin'" in r["query_people"]["detail"] and "'admin'" in r["query_change"]["detail"]
    assert r["bad_token_cookie"] is None
    assert "tokens create" in r["bad_token"]["detail"]
    assert "token" in r["long_token"]["detail"]
    assert ("admin", "console.sign-in") in r["audit"] and ("admin", "console.sign-out") in r["audit"]
    assert ("dashboard", "console.sign-in") in r["audit"]


def test_the_console_is_served_with_a_strict_policy_and_the_api_with_none(
    tmp_path: Path, pki: Pki, enroller: Enroller
) -> None:
    async def scenario() -> dict[str, Any]:
        async with serving(tmp_path, pki, enroller) as harness, client(harness, "") as http:
            root = await http.get("/")
            page = await http.get("/console/")
            cached = await http.get("/console/", headers={"If-None-Match": page.headers["etag"]})
            api = await http.get("/api/fleet")
            return {
                "root": (root.status_code, root.headers["location"]),
                "page": (page.status_code, page.headers, page.text),
                "cached": cached.status_code,
                "api": api.headers,
                "outside": (await http.get("/console/../api/fleet")).status_code,
                "missing": (await http.get("/console/nothing-here.js")).status_code,
            }

    r = run(scenario)
    assert r["root"] == (307, "/console/")
    status, headers, text = r["page"]
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert headers["content-security-policy"] == CONSOLE_CSP
    assert "'unsafe-inline'" not in CONSOLE_CSP and "'unsafe-eval'" not in CONSOLE_CSP
    assert "frame-ancestors 'none'" in CONSOLE_CSP
    assert headers["cache-control"] == "no-cache" and r["cached"] == 304
    assert '<script type="module"' in text and "<script>" not in text and "style=" not in text
    assert r["api"]["content-security-policy"] == API_CSP
    assert r["api"]["cache-control"] == "no-store"
    for name, value in (("x-content-type-options", "nosniff"), ("x-frame-options", "DENY")):
        assert headers[name] == value and r["api"][name] == value
    assert r["outside"] == 401  # normalised to /api/fleet, which needs a token: no file outside static/
    assert r["missing"] == 404


def test_the_console_can_be_turned_off(tmp_path: Path, pki: Pki, enroller: Enroller) -> None:
    async def scenario() -> tuple[int, int, int]:
        async with serving(tmp_path, pki, enroller, console={"enabled": False}) as harness:
            async with client(harness, "") as http:
                page = await http.get("/console/")
                session = await http.post("/api/session", json={"token": harness.admin_token})
            async with client(harness) as admin:
                return page.status_code, session.status_code, (await admin.get("/api/fleet")).status_code

    assert run(scenario) == (404, 404, 200)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_sessions_end_when_idle_when_old_or_when_their_token_has_too_many() -> None:
    clock = Clock()
    sessions = ConsoleSessions(idle_s=60, max_age_s=300, limit=2, clock=clock)
    first, session = sessions.start("token-1")
    assert sessions.find(first) == session and sessions.find("") is None and sessions.find("x" * 65) is None
    clock.now += 59
    assert sessions.find(first) == session  # used: the idle time starts again
    clock.now += 59
    assert sessions.find(first) == session
    clock.now += 60
    assert sessions.find(first) is None  # idle for 60 s
    kept, _ = sessions.start("token-2")
    for _ in range(5):
        clock.now += 50
        assert sessions.find(kept) is not None
    clock.now += 50
    assert sessions.find(kept) is None  # 300 s after sign-in, used or not
    a, _ = sessions.start("a")
    b, _ = sessions.start("b")
    with pytest.raises(SessionsFullError, match=r"most sessions \(2, \[console\] max_sessions\)"):
        sessions.start("c")  # full, and every session is another operator's: none of theirs ends
    assert sessions.find(a) is not None and sessions.find(b) is not None
    a2, _ = sessions.start("a")  # a's own least recently used session makes room
    assert (sessions.find(a), len(sessions)) == (None, 2)
    assert sessions.find(a2) is not None and sessions.find(b) is not None
    sessions.end(a2)
    assert sessions.find(a2) is None
    c, _ = sessions.start("c")
    assert not sessions.find(c).csrf_matches(None)  # type: ignore[union-attr]


def test_one_tokens_sessions_end_its_own_oldest_and_its_sign_ins_are_limited() -> None:
    clock = Clock()
    sessions = ConsoleSessions(
        idle_s=600, max_age_s=3600, limit=5, clock=clock, per_token=2, sign_ins_per_minute=3
    )
    admin, _ = sessions.start("admin-token")
    mine = []
    for _ in range(3):
        mine.append(sessions.start("query-token")[0])
        clock.now += 1
    assert sessions.find(mine[0]) is None  # the token's own least recently used session ended
    assert sessions.find(mine[1]) is not None and sessions.find(mine[2]) is not None
    with pytest.raises(
        SignInsTooFrequentError, match=r"3 times in the last minute.*again in 57 s"
    ) as refused:
        sessions.start("query-token")
    assert refused.value.retry_after_s == pytest.approx(57.0)
    sessions.start("admin-token")  # another token's limit is its own
    clock.now += 58
    for _ in range(3):
        sessions.start("query-token")
        clock.now += 20
    assert sessions.find(admin) is not None  # however often another token signs in
    assert len(sessions) == 4  # two of each token


def test_sign_ins_past_the_limit_are_429_and_leave_other_sessions(
    tmp_path: Path, pki: Pki, enroller: Enroller
) -> None:
    async def scenario() -> dict[str, Any]:
        console = {"sign_ins_per_minute": 3, "max_sessions_per_token": 2, "max_sessions": 3}
        async with serving(tmp_path, pki, enroller, console=console) as harness:
            r: dict[str, Any] = {}
            async with client(harness, "") as admin:
                await sign_in(admin, harness.admin_token)
                async with client(harness, "") as query:
                    for _ in range(3):
                        await sign_in(query, harness.query_token)
                    refused = await query.post("/api/session", json={"token": harness.query_token})
                    r["refused"] = (problem(refused, 429, "RESOURCE_EXHAUSTED"), refused.headers)
                r["admin_still"] = (await admin.get("/api/session")).status_code
            async with client(harness) as bearer:
                audit = (await bearer.get("/api/audit", params={"action_prefix": "console."})).json()
                r["audit"] = [(e["who"], e["action"]) for e in audit["entries"]]
            return r

    r = run(scenario)
    body, headers = r["refused"]
    assert "signed in 3 times in the last minute" in body["detail"]
    assert 1 <= int(headers["retry-after"]) <= 60
    assert r["admin_still"] == 200  # the query token's sign-ins did not end the admin's session
    assert r["audit"].count(("dashboard", "console.sign-in")) == 3  # the refused one is not audited


def test_a_clock_set_back_does_not_lock_a_token_out() -> None:
    clock = Clock()
    sessions = ConsoleSessions(idle_s=600, max_age_s=3600, limit=50, clock=clock, sign_ins_per_minute=2)
    sessions.start("t")
    sessions.start("t")
    clock.now -= 3600  # NTP steps the clock back an hour
    sessions.start("t")  # the sign-ins "from the future" are forgotten
    sessions.start("t")
    with pytest.raises(SignInsTooFrequentError) as refused:
        sessions.start("t")  # the limit holds again, counted from the clock as it now reads
    assert 0 < refused.value.retry_after_s <= 60


def test_a_token_may_not_hold_more_sessions_than_the_console() -> None:
    with pytest.raises(
        ValidationError, match=r"max_sessions_per_token \(30\) must not exceed max_sessions \(20\)"
    ):
        ConsoleConfig(max_sessions=20, max_sessions_per_token=30)


def test_a_long_upload_over_a_session_is_checked_again_by_its_token_not_by_the_sessions_idle_time(
    tmp_path: Path,
) -> None:
    """An upload that outlives the session's idle time is still published; one whose token was revoked
    meanwhile is not (the check at its end)."""
    state = SqliteState(tmp_path / "server.db")
    token, record = new_token("ops", "admin", utc_now())
    state.add_token(record)
    clock = [0.0]
    sessions = ConsoleSessions(idle_s=3600, max_age_s=12 * 3600, limit=10, clock=lambda: clock[0])
    session_id, session = sessions.start(token)
    handlers = SimpleNamespace(auth=Authenticator(state, cache_seconds=0))
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/api/models",
        "scheme": "https",
        "app": SimpleNamespace(state=SimpleNamespace(sessions=sessions, handlers=handlers)),
        "headers": [
            (b"cookie", f"{SESSION_COOKIE}={session_id}".encode()),
            (CSRF_HEADER.lower().encode(), session.csrf_token.encode()),
            (b"host", b"fleet.example:7445"),
        ],
    }
    request = Request(scope)

    async def upload_admitted() -> Callable[[], Operator]:
        assert (await admin_operator(request, None)).name == "ops"  # when the upload starts
        return await admin_recheck(request, None)

    recheck = asyncio.run(upload_admitted())
    clock[0] = 3601.0  # a large model over a slow link, no other request meanwhile
    assert recheck().name == "ops"
    state.revoke_token("ops")
    with pytest.raises(UnauthenticatedError):
        recheck()
