"""When this device's client certificates ([server] and [mqtt] cert_file) are valid: what `check-config`
refuses (expired, or not valid yet), what `run` warns of (it runs on: doors decide offline), the status
warning from EXPIRY_WARNING_S before expiry and the expiry metric.

The dates are read from the PEM file's first certificate with a small DER reader instead of a crypto library:
`cryptography` would cost an agent that only speaks MQTT about 12 MB of memory."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from facefleet.agent.domain.clock import CLOCK_FIX

EXPIRY_WARNING_S = 30 * 86400
"""From this long before its expiry, a certificate is warned of (the status's warnings)."""
MAX_CERTIFICATE_FILE_BYTES = 1024 * 1024

_PEM_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]+)-----END CERTIFICATE-----")
_UTC_TIME, _GENERALIZED_TIME, _SEQUENCE, _VERSION = 0x17, 0x18, 0x30, 0xA0


@dataclass(frozen=True)
class Validity:
    """A certificate's validity period (Unix seconds): notBefore and notAfter."""

    not_before: float
    not_after: float

    def seconds_left(self, now: float) -> float:
        """Seconds until notAfter (negative once expired)."""
        return self.not_after - now


def read_validity(path: Path) -> Validity | None:
    """The validity period of the first certificate in a PEM file; None when the file cannot be read or
    holds no certificate (the config's checks and the TLS connection say why)."""
    try:
        with path.open("rb") as file:
            pem = file.read(MAX_CERTIFICATE_FILE_BYTES)
    except OSError:
        return None
    return validity_of(pem)


def validity_of(pem: bytes) -> Validity | None:
    """The validity period of the first certificate in PEM text; None without one that parses."""
    found = _PEM_CERTIFICATE.search(pem)
    if found is None:
        return None
    try:
        return _validity(base64.b64decode(b"".join(found.group(1).split()), validate=True))
    except (ValueError, IndexError, binascii.Error):
        return None


def date_problem(key: str, path: Path, validity: Validity, now: float, device: str) -> str | None:
    """What is wrong with a client certificate at `now` (Unix seconds) and the fix: expired, or not valid
    yet (most often this box's clock); None while it is valid. key: the config key naming the file, e.g.
    'server.cert_file'; device: this device's id, for the renew command."""
    if now >= validity.not_after:
        return (
            f"{key} {path}: the certificate expired at {utc(validity.not_after)} and is refused: install "
            f"the renewed certificate and key from `facefleet-server certs renew {device}` on the server "
            f"host (this box's clock reads {utc(now)}; if that is wrong, {CLOCK_FIX})"
        )
    if now < validity.not_before:
        return (
            f"{key} {path}: the certificate is valid only from {utc(validity.not_before)} but this box's "
            f"clock reads {utc(now)}, so it is refused: {CLOCK_FIX}, or install one valid now from "
            f"`facefleet-server certs renew {device}` on the server host"
        )
    return None


def expiry_warning(key: str, path: Path, validity: Validity, now: float, device: str) -> str | None:
    """date_problem, or, from EXPIRY_WARNING_S before expiry, when the certificate expires and the fix;
    None otherwise."""
    problem = date_problem(key, path, validity, now, device)
    if problem is not None or validity.seconds_left(now) > EXPIRY_WARNING_S:
        return problem
    days = validity.seconds_left(now) / 86400
    return (
        f"{key} {path}: the certificate expires at {utc(validity.not_after)}, in {days:.1f} days, and is "
        f"refused from then on: install the renewed certificate and key from "
        f"`facefleet-server certs renew {device}` on the server host before then"
    )


def utc(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _validity(der: bytes) -> Validity:
    """Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL, serialNumber,
    signature, issuer, validity SEQUENCE { notBefore, notAfter }, … }, … } (RFC 5280)."""
    _, certificate, _ = _element(der, 0, _SEQUENCE)
    _, at, _ = _element(der, certificate, _SEQUENCE)  # tbsCertificate
    if der[at] == _VERSION:
        at = _element(der, at)[2]
    for _ in ("serialNumber", "signature", "issuer"):
        at = _element(der, at)[2]
    _, at, _ = _element(der, at, _SEQUENCE)
    tag, start, end = _element(der, at)
    not_before = _time(tag, der[start:end])
    tag, start, end = _element(der, end)
    return Validity(not_before, _time(tag, der[start:end]))


def _element(der: bytes, at: int, tag: int | None = None) -> tuple[int, int, int]:
    """The DER element at `at`: (its tag, where its content starts, where it ends)."""
    found, length, at = der[at], der[at + 1], at + 2
    if tag is not None and found != tag:
        raise ValueError(f"tag {found:#x} where {tag:#x} was expected")
    if length & 0x80:
        octets = length & 0x7F
        if not 1 <= octets <= 4:
            raise ValueError("unsupported length")
        length, at = int.from_bytes(der[at : at + octets], "big"), at + octets
    if at + length > len(der):
        raise ValueError("truncated")
    return found, at, at + length


def _time(tag: int, text: bytes) -> float:
    """UTCTime (YYMMDDHHMMSSZ, years 1950–2049) or GeneralizedTime (YYYYMMDDHHMMSSZ), as Unix seconds."""
    if tag == _UTC_TIME:
        year = int(text[:2])
        text = (b"19" if year >= 50 else b"20") + text
    elif tag != _GENERALIZED_TIME:
        raise ValueError(f"tag {tag:#x} is not a time")
    moment = datetime.strptime(text.decode("ascii"), "%Y%m%d%H%M%SZ")
    return moment.replace(tzinfo=timezone.utc).timestamp()
