"""Who is calling: the device behind a client certificate, or the operator behind a bearer token.

Devices: the agents' listener requires a client certificate signed by the site CA (checked by TLS). The
device id is the certificate's "urn:facefleet:device:<id>" URI SAN, else its subject CN; a request that
names another device fails with PERMISSION_DENIED, a call without a verified certificate with
UNAUTHENTICATED. Only with `insecure_development = true` is the device id taken from the request. Every call
is then admitted by the device registry (facefleet.server.fleet.devices): a disabled or revoked device, or a
certificate serial the server revoked or never issued to that device, is refused. So is a certificate past its
expiry: TLS checks that only when a connection is made, and an agent's connection may stay open for weeks.

Operators: "authorization: Bearer ff1.<token_id>.<secret>". The state keeps the token id, the role, a random
salt and sha256(salt ‖ secret), never the secret: tokens are 256-bit random, so a fast hash is enough and
costs microseconds per call. Roles: "admin" may call AdminService and QueryService, "query" only QueryService.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509

from facefleet.link.checks import check_id, utc_now
from facefleet.server.api.certs import DEVICE_URI_PREFIX, serial_text
from facefleet.server.domain.devices import CertificateRefusedError
from facefleet.server.domain.records import Role, TokenRecord
from facefleet.server.errors import InvalidArgumentError, PermissionDeniedError, UnauthenticatedError
from facefleet.server.fleet.devices import DeviceRegistry
from facefleet.server.state.interface import State

TOKEN_PREFIX = "ff1"  # noqa: S105 - the token format's version tag, not a secret
MAX_TOKEN_CHARS = 256
MISS_READ_S = 1.0
"""Least time between two reads of the tokens that an unknown token id sets off (s)."""
GRANTS: dict[Role, frozenset[Role]] = {"admin": frozenset({"admin", "query"}), "query": frozenset({"query"})}


def new_token(name: str, role: Role, now: datetime) -> tuple[str, TokenRecord]:
    """A fresh token: (the text to hand to the operator once, the record to store)."""
    if not name or len(name) > 64 or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise InvalidArgumentError(f"token name {name[:80]!r}: use 1–64 letters, digits, '-', '_' or '.'")
    token_id, secret, salt = secrets.token_hex(8), secrets.token_urlsafe(32), secrets.token_bytes(16)
    record = TokenRecord(token_id, name, role, salt, _digest(salt, secret), now)
    return f"{TOKEN_PREFIX}.{token_id}.{secret}", record


def _digest(salt: bytes, secret: str) -> bytes:
    return hashlib.sha256(salt + secret.encode("utf-8")).digest()


@dataclass(frozen=True)
class Operator:
    """An authenticated operator or dashboard."""

    name: str
    role: Role


@dataclass(frozen=True)
class _Presented:
    """What admission needs of a client certificate: its serial (lower-case hex) and its expiry (UTC)."""

    serial: str
    not_after: datetime


class Authenticator:
    """Checks device identities and operator tokens. Pure logic: servicers hand in the call's auth context
    and metadata, so this is testable without gRPC."""

    def __init__(
        self,
        state: State,
        *,
        devices: DeviceRegistry | None = None,
        insecure: bool = False,
        cache_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.state = state
        self.devices = devices or DeviceRegistry(state)
        self.insecure = insecure
        self.cache_seconds = cache_seconds
        self._clock = clock
        self._wall_clock = wall_clock
        self._tokens: dict[str, TokenRecord] = {}
        """Every stored token by id, read whole (a site has a few dozen): a token id the state does not
        hold costs no query of its own."""
        self._read_at = -math.inf
        self._miss_read_at = -math.inf
        self._presented: dict[bytes, _Presented] = {}

    def device(self, auth_context: Mapping[str, Iterable[bytes]], claimed: str) -> str:
        """The calling device's id, once admitted; `claimed` is the device_id the request names ('' =
        none)."""
        identity = self._identity(auth_context, claimed)
        presented = None if self.insecure else self._certificate(auth_context)
        if presented is not None and presented.not_after < self._wall_clock():
            raise CertificateRefusedError(
                f"certificate {presented.serial} of device {identity!r} expired at "
                f"{presented.not_after.isoformat()}; install a new one from "
                f"`facefleet-server certs renew {identity}`"
            )
        self.devices.admit(identity, None if presented is None else presented.serial)
        return identity

    def _identity(self, auth_context: Mapping[str, Iterable[bytes]], claimed: str) -> str:
        if self.insecure:
            if not claimed:
                raise InvalidArgumentError(
                    "device_id is required (insecure development mode takes it from requests)"
                )
            return check_id("device_id", claimed)
        identity = certificate_identity(auth_context)
        if identity is None:
            raise UnauthenticatedError(
                "FleetService needs a client certificate signed by this server's CA: connect to the agents' "
                "listener with the device's certificate (`facefleet-server certs issue DEVICE`)"
            )
        if claimed and claimed != identity:
            raise PermissionDeniedError(
                f"this connection is authenticated as device {identity!r} and cannot act as {claimed[:80]!r}"
            )
        return identity

    def _certificate(self, auth_context: Mapping[str, Iterable[bytes]]) -> _Presented | None:
        """The serial and expiry of the call's client certificate (parsed once per certificate)."""
        pems = list(auth_context.get("x509_pem_cert", []))
        if not pems:
            return None
        presented = self._presented.get(pems[0])
        if presented is None:
            try:
                cert = x509.load_pem_x509_certificate(pems[0])
            except ValueError:
                raise UnauthenticatedError("the client certificate cannot be read") from None
            presented = _Presented(serial_text(cert.serial_number), cert.not_valid_after_utc)
            if len(self._presented) > 10_000:
                self._presented.clear()
            self._presented[pems[0]] = presented
        return presented

    def operator(self, metadata: Iterable[tuple[str, str | bytes]], need: Role) -> Operator:
        """The operator behind the call's bearer token, if its role grants `need`."""
        values = [v for k, v in metadata if k.lower() == "authorization"]
        if not values:
            raise UnauthenticatedError("missing 'authorization: Bearer <token>' metadata")
        value = values[0] if isinstance(values[0], str) else values[0].decode("latin-1")
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "bearer" or not token or len(token) > MAX_TOKEN_CHARS:
            raise UnauthenticatedError("authorization metadata must be 'Bearer <token>'")
        record = self._lookup(token.strip())
        if record is None:
            raise UnauthenticatedError(
                "unknown or revoked token; create one with `facefleet-server tokens create NAME --role ROLE`"
            )
        if need not in GRANTS[record.role]:
            raise PermissionDeniedError(
                f"token {record.name!r} has role {record.role!r}; this call needs {need!r}"
            )
        return Operator(record.name, record.role)

    def forget_tokens(self) -> None:
        """Look every token up again on its next use (a token was revoked through another replica)."""
        self._read_at = -math.inf

    def _lookup(self, token: str) -> TokenRecord | None:
        prefix, _, rest = token.partition(".")
        token_id, _, secret = rest.partition(".")
        if prefix != TOKEN_PREFIX or not token_id or not secret:
            return None
        record = self._record(token_id)
        if record is None or not hmac.compare_digest(record.digest, _digest(record.salt, secret)):
            return None
        return record

    def _record(self, token_id: str) -> TokenRecord | None:
        """The stored token with this id. The tokens are read again once they are cache_seconds old, and
        on a miss at most once per MISS_READ_S: a token just created elsewhere works within a second, and
        made-up ids (whatever their number) cost at most that one read."""
        now = self._clock()
        if now - self._read_at > self.cache_seconds:
            self._read(now)
        record = self._tokens.get(token_id)
        if record is None and now - max(self._read_at, self._miss_read_at) >= MISS_READ_S:
            self._miss_read_at = now
            self._read(now)
            record = self._tokens.get(token_id)
        return record

    def _read(self, now: float) -> None:
        self._tokens = {record.token_id: record for record in self.state.list_tokens()}
        self._read_at = now


def certificate_identity(auth_context: Mapping[str, Iterable[bytes]]) -> str | None:
    """The device id of a verified client certificate, or None when the call has none."""
    if b"ssl" not in list(auth_context.get("transport_security_type", [])):
        return None
    uris = {
        value.decode("utf-8", "replace")[len(DEVICE_URI_PREFIX) :]
        for key in ("x509_subject_alternative_name", "peer_uri")
        for value in auth_context.get(key, [])
        if value.startswith(DEVICE_URI_PREFIX.encode())
    }
    if len(uris) > 1:
        raise PermissionDeniedError(f"client certificate names several devices ({', '.join(sorted(uris))})")
    if uris:
        return check_id("device id in the client certificate", uris.pop())
    names = [value.decode("utf-8", "replace") for value in auth_context.get("x509_common_name", [])]
    return check_id("device id in the client certificate", names[0]) if names else None
