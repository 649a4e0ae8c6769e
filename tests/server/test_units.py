"""Pure pieces without a server: fanout, delta splitting, tokens and identities, certificates."""

from __future__ import annotations

import asyncio
import os
import stat
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from facefleet.link.fleet import Registration
from facefleet.link.gallery import Embedding, GalleryDelta, Person
from facefleet.server.api import certs
from facefleet.server.api.security import Authenticator, certificate_identity, new_token
from facefleet.server.domain.devices import CertificateRefusedError
from facefleet.server.errors import (
    InvalidArgumentError,
    PermissionDeniedError,
    ServerConfigError,
    UnauthenticatedError,
)
from facefleet.server.fleet.link import FleetHandler, FleetSettings, only_models, split_delta
from facefleet.server.state.fanout import GalleryFanout
from facefleet.server.state.sql.events import segments
from facefleet.server.state.sqlite.state import SqliteState
from tests.server.conftest import Pki

NOW = datetime(2026, 5, 1, tzinfo=timezone.utc)


def test_one_publish_wakes_every_waiting_watcher() -> None:
    async def scenario() -> tuple[list[bool], bool, bool]:
        fanout = GalleryFanout(head=4)
        waiters = [asyncio.create_task(fanout.wait_beyond(4, timeout=30)) for _ in range(200)]
        await asyncio.sleep(0)
        await fanout.publish(5)
        woken = await asyncio.gather(*waiters)
        stale = await fanout.wait_beyond(5, timeout=0.01)
        already = await fanout.wait_beyond(3, timeout=30)
        return woken, stale, already

    woken, stale, already = asyncio.run(scenario())
    assert woken == [True] * 200
    assert stale is False  # nothing newer than 5: the wait times out
    assert already is True  # a watcher behind the head does not wait at all


def test_close_releases_waiters_and_older_publishes_are_ignored() -> None:
    async def scenario() -> tuple[bool, int]:
        fanout = GalleryFanout(head=7)
        await fanout.publish(6)
        waiter = asyncio.create_task(fanout.wait_beyond(7, timeout=30))
        await asyncio.sleep(0)
        await fanout.close()
        return await waiter, fanout.head

    assert asyncio.run(scenario()) == (False, 7)


def test_watching_counts_streams_per_device() -> None:
    fanout = GalleryFanout(0)
    fanout.enter("a")
    fanout.enter("a")
    fanout.enter("b")
    fanout.leave("a")
    fanout.leave("b")
    assert fanout.watching() == frozenset({"a"})


def people(count: int, dim: int = 128) -> tuple[Person, ...]:
    embeddings = (Embedding("m@1", np.ones(dim, np.float32)), Embedding("n@1", np.ones(64, np.float32)))
    return tuple(Person(f"p{i:03d}", embeddings=embeddings) for i in range(count))


@pytest.mark.parametrize(
    ("count", "max_bytes", "parts"),
    [(0, 1000, 1), (1, 10, 1), (10, 10**6, 1), (10, 1500, 10), (10, 2500, 5)],
)
def test_split_delta_keeps_every_person_once_and_deletes_last(count: int, max_bytes: int, parts: int) -> None:
    delta = GalleryDelta(2, 5, False, people(count), ("gone",), "g")
    split = split_delta(delta, max_bytes)
    assert len(split) == parts
    assert [p.person_id for part in split for p in part.upserts] == [p.person_id for p in delta.upserts]
    assert [part.more_parts for part in split] == [True] * (parts - 1) + [False]
    assert [part.deletes for part in split] == [()] * (parts - 1) + [("gone",)]
    assert all((part.from_revision, part.to_revision) == (2, 5) for part in split)


H, D = 3600, 86400


@pytest.mark.parametrize(
    ("lo", "hi", "expected"),
    [
        (0, 0, []),
        (10, 20, [("events", 10, 20)]),
        (0, H, [("hour", 0, H)]),
        (5, 2 * H + 5, [("events", 5, H), ("hour", H, 2 * H), ("events", 2 * H, 2 * H + 5)]),
        (D - H - 1, 3 * D + H + 1, [("events", D - H - 1, D - H), ("hour", D - H, D), ("day", D, 3 * D),
                                    ("hour", 3 * D, 3 * D + H), ("events", 3 * D + H, 3 * D + H + 1)]),
    ],
)  # fmt: skip
def test_aggregate_ranges_use_the_coarsest_rollup_that_fits(lo: int, hi: int, expected: list[object]) -> None:
    assert segments(lo, hi, [(D, "day"), (H, "hour")]) == expected


def test_only_models_drops_other_embeddings() -> None:
    delta = GalleryDelta(0, 1, True, people(2))
    assert only_models(delta, None) is delta
    kept = only_models(delta, frozenset({"n@1"}))
    assert [[e.model_id for e in p.embeddings] for p in kept.upserts] == [["n@1"], ["n@1"]]


@pytest.fixture
def auth(tmp_path: Path) -> tuple[Authenticator, dict[str, str], SqliteState]:
    state = SqliteState(tmp_path / "server.db")
    tokens = {}
    for name, role in (("ops", "admin"), ("grafana", "query")):
        token, record = new_token(name, role, NOW)  # type: ignore[arg-type]
        state.add_token(record)
        tokens[role] = token
    return Authenticator(state, cache_seconds=0), tokens, state


def test_tokens_are_stored_as_salted_hashes_only(
    auth: tuple[Authenticator, dict[str, str], SqliteState],
) -> None:
    _, tokens, state = auth
    raw = (state.path).read_bytes() + Path(f"{state.path}-wal").read_bytes()
    for token in tokens.values():
        secret = token.split(".")[2]
        assert secret.encode() not in raw
    records = state.list_tokens()
    assert len({r.salt for r in records}) == 2
    assert all(len(r.digest) == 32 for r in records)


@pytest.mark.parametrize(
    ("role_of_token", "need", "error"),
    [
        ("admin", "admin", None),
        ("admin", "query", None),
        ("query", "query", None),
        ("query", "admin", PermissionDeniedError),
    ],
)
def test_roles_grant_services(
    auth: tuple[Authenticator, dict[str, str], SqliteState], role_of_token: str, need: str, error: type | None
) -> None:
    authenticator, tokens, _ = auth
    metadata = [("authorization", f"Bearer {tokens[role_of_token]}")]
    if error is None:
        assert authenticator.operator(metadata, need).role == role_of_token  # type: ignore[arg-type]
    else:
        with pytest.raises(error):
            authenticator.operator(metadata, need)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "header",
    ["", "Bearer", "Bearer ff1", "Bearer ff1.abc", "Bearer ff2.a.b", "Token x", "Bearer " + "x" * 300],
)
def test_malformed_authorization_is_unauthenticated(
    auth: tuple[Authenticator, dict[str, str], SqliteState], header: str
) -> None:
    authenticator, _, _ = auth
    with pytest.raises(UnauthenticatedError):
        authenticator.operator([("authorization", header)] if header else [], "query")


def test_revocation_waits_for_the_cache(auth: tuple[Authenticator, dict[str, str], SqliteState]) -> None:
    _, tokens, state = auth
    clock = [100.0]
    cached = Authenticator(state, cache_seconds=10, clock=lambda: clock[0])
    metadata = [("authorization", f"Bearer {tokens['query']}")]
    cached.operator(metadata, "query")
    state.revoke_token("grafana")
    cached.operator(metadata, "query")  # still cached
    clock[0] += 11
    with pytest.raises(UnauthenticatedError):
        cached.operator(metadata, "query")


def test_made_up_token_ids_cost_one_read_a_second_and_a_new_token_works_within_one(
    auth: tuple[Authenticator, dict[str, str], SqliteState], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Thousands of unknown token ids within a second read the tokens once, and the valid token goes on
    working; a token created meanwhile (through another replica, or the CLI) works a second later."""
    _, tokens, state = auth
    clock = [100.0]
    authenticator = Authenticator(state, cache_seconds=60, clock=lambda: clock[0])
    valid = [("authorization", f"Bearer {tokens['query']}")]
    reads: list[float] = []
    list_tokens = state.list_tokens
    monkeypatch.setattr(state, "list_tokens", lambda: reads.append(clock[0]) or list_tokens())
    assert authenticator.operator(valid, "query").name == "grafana"
    for n in range(10_000):
        with pytest.raises(UnauthenticatedError):
            authenticator.operator([("authorization", f"Bearer ff1.made-up-{n}.secret")], "query")
    assert authenticator.operator(valid, "query").name == "grafana"
    assert reads == [100.0]

    token, record = new_token("ci", "admin", NOW)
    state.add_token(record)
    with pytest.raises(UnauthenticatedError):
        authenticator.operator([("authorization", f"Bearer {token}")], "admin")  # read at 100 s
    clock[0] += 1
    assert authenticator.operator([("authorization", f"Bearer {token}")], "admin").name == "ci"
    assert reads == [100.0, 101.0]


@pytest.mark.parametrize(
    ("context", "claimed", "expected"),
    [
        ({"transport_security_type": [b"ssl"], "x509_common_name": [b"door-1"]}, "", "door-1"),
        ({"transport_security_type": [b"ssl"], "x509_common_name": [b"door-1"]}, "door-1", "door-1"),
        (
            {
                "transport_security_type": [b"ssl"],
                "x509_common_name": [b"cn-name"],
                "x509_subject_alternative_name": [b"urn:facefleet:device:door-9", b"localhost"],
            },
            "",
            "door-9",
        ),
        (
            {"transport_security_type": [b"ssl"], "x509_common_name": [b"door-1"]},
            "door-2",
            PermissionDeniedError,
        ),
        ({"transport_security_type": [b"ssl"]}, "door-1", UnauthenticatedError),
        ({}, "door-1", UnauthenticatedError),
        (
            {
                "transport_security_type": [b"ssl"],
                "x509_subject_alternative_name": [b"urn:facefleet:device:a", b"urn:facefleet:device:b"],
            },
            "",
            PermissionDeniedError,
        ),
    ],
)
def test_device_identity_comes_from_the_certificate(
    auth: tuple[Authenticator, dict[str, str], SqliteState],
    context: dict[str, list[bytes]],
    claimed: str,
    expected: object,
) -> None:
    authenticator, _, _ = auth
    if isinstance(expected, str):
        assert authenticator.device(context, claimed) == expected
    else:
        with pytest.raises(expected):  # type: ignore[call-overload]
            authenticator.device(context, claimed)


@pytest.fixture
def short_lived(tmp_path: Path, pki: Pki) -> tuple[certs.Issued, dict[str, list[bytes]]]:
    """A device certificate, and the auth context of a TLS connection that presented it."""
    issued = certs.issue_device(pki.tls_dir, "door-7", out_dir=tmp_path, days=1)
    assert issued.not_after is not None
    context = {
        "transport_security_type": [b"ssl"],
        "x509_subject_alternative_name": [b"urn:facefleet:device:door-7"],
        "x509_pem_cert": [issued.cert.read_bytes()],
    }
    return issued, context


def test_a_certificate_past_its_expiry_is_refused_on_a_connection_made_before(
    tmp_path: Path, short_lived: tuple[certs.Issued, dict[str, list[bytes]]]
) -> None:
    issued, context = short_lived
    assert issued.not_after is not None
    now = [issued.not_after]  # its last valid second (RFC 5280: notAfter included)
    authenticator = Authenticator(SqliteState(tmp_path / "s.db"), wall_clock=lambda: now[0])
    assert authenticator.device(context, "") == "door-7"  # TLS admitted it; so does the server
    now[0] = issued.not_after + timedelta(seconds=1)
    with pytest.raises(
        CertificateRefusedError, match=rf"certificate {issued.serial} .* expired at .*certs renew door-7"
    ):
        authenticator.device(context, "")


def test_an_open_watch_stream_ends_once_its_certificate_expires(
    tmp_path: Path, short_lived: tuple[certs.Issued, dict[str, list[bytes]]]
) -> None:
    issued, context = short_lived
    assert issued.not_after is not None
    now = [issued.not_after - timedelta(seconds=5)]
    state = SqliteState(tmp_path / "s.db")
    authenticator = Authenticator(state, wall_clock=lambda: now[0])
    settings = FleetSettings(heartbeat_seconds=0.05)

    async def scenario() -> list[str]:
        handler = FleetHandler(state, GalleryFanout(state.head_revision()), settings, lambda: ())
        device = authenticator.device(context, "")
        await handler.register(Registration(device))
        updates = handler.watch(device, 0, "", (), admitted=lambda: authenticator.device(context, ""))
        seen = [type(await anext(updates)).__name__]
        seen.append(type(await asyncio.wait_for(anext(updates), 5)).__name__)
        now[0] = issued.not_after + timedelta(hours=1)
        try:
            while True:
                seen.append(type(await asyncio.wait_for(anext(updates), 5)).__name__)
        except CertificateRefusedError:
            seen.append("refused")
        return seen

    assert asyncio.run(scenario()) == ["GalleryDelta", "Heartbeat", "refused"]


def test_insecure_development_takes_the_device_from_the_request(tmp_path: Path) -> None:
    authenticator = Authenticator(SqliteState(tmp_path / "s.db"), insecure=True)
    assert authenticator.device({}, "door-3") == "door-3"
    with pytest.raises(InvalidArgumentError, match="device_id is required"):
        authenticator.device({}, "")
    assert certificate_identity({}) is None


def test_device_certificates_name_the_device_and_serve_only_clients(pki: Pki) -> None:
    issued = pki.device("door-1")
    cert = x509.load_pem_x509_certificate(issued.cert.read_bytes())
    ca = x509.load_pem_x509_certificate(pki.ca)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "door-1"
    uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert uris.get_values_for_type(x509.UniformResourceIdentifier) == ["urn:facefleet:device:door-1"]
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    cert.verify_directly_issued_by(ca)
    assert stat.S_IMODE(os.stat(issued.key).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(pki.tls_dir / "ca.key").st_mode) == 0o600
    server = x509.load_pem_x509_certificate((pki.tls_dir / "server.pem").read_bytes())
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]


def test_certs_init_refuses_to_replace_a_ca_and_issue_needs_one(tmp_path: Path, pki: Pki) -> None:
    with pytest.raises(ServerConfigError, match="a CA already exists"):
        certs.init_ca(pki.tls_dir, server_names=[])
    with pytest.raises(ServerConfigError, match="run `facefleet-server certs init` first"):
        certs.issue_device(tmp_path, "door-1")
