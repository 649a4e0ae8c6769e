"""The validity dates read from a PEM certificate without a crypto library, checked against cryptography's
reading of real certificates from the site CA, and the warnings made of them."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509

from facefleet.agent.publish.certificates import (
    EXPIRY_WARNING_S,
    Validity,
    expiry_warning,
    read_validity,
    validity_of,
)
from facefleet.server.api import certs


@pytest.mark.parametrize(
    ("days", "back"),
    [(825, 0), (1, 3), (20_000, 0)],  # UTCTime; in the past; GeneralizedTime (after 2049)
    ids=["usual", "expired", "after-2049"],
)
def test_the_dates_are_those_cryptography_reads(tmp_path: Path, days: int, back: int) -> None:
    certs.init_ca(tmp_path, server_names=["127.0.0.1"])
    not_before = datetime.now(timezone.utc) - timedelta(days=back)
    issued = certs.issue_device(tmp_path, "door-1", days=days, not_before=not_before)
    expected = x509.load_pem_x509_certificate(issued.cert.read_bytes())
    assert read_validity(issued.cert) == Validity(
        expected.not_valid_before_utc.timestamp(), expected.not_valid_after_utc.timestamp()
    )
    # the CA's own certificate, and a certificate after its key in the same file
    assert read_validity(tmp_path / "ca.pem") is not None
    both = issued.key.read_bytes() + issued.cert.read_bytes()
    assert validity_of(both) == read_validity(issued.cert)


def test_what_holds_no_certificate_has_no_dates(tmp_path: Path) -> None:
    certs.init_ca(tmp_path, server_names=["127.0.0.1"])
    pem = (tmp_path / "ca.pem").read_bytes()
    assert read_validity(tmp_path / "missing.pem") is None
    assert read_validity(tmp_path / "ca.key") is None
    assert validity_of(b"garbage") is None
    cut = pem.replace(pem[60:400], b"")  # a certificate cut short
    assert validity_of(cut) is None


def test_a_certificate_is_warned_of_from_30_days_before_its_expiry() -> None:
    validity = Validity(not_before=0.0, not_after=100 * 86400.0)
    path = Path("/etc/facefleet-agent/device.pem")
    now = validity.not_after - EXPIRY_WARNING_S
    assert expiry_warning("mqtt.cert_file", path, validity, now - 1, "door-1") is None
    soon = expiry_warning("mqtt.cert_file", path, validity, now + 86400, "door-1")
    assert soon == (
        "mqtt.cert_file /etc/facefleet-agent/device.pem: the certificate expires at 1970-04-11T00:00:00Z, in "
        "29.0 days, and is refused from then on: install the renewed certificate and key from "
        "`facefleet-server certs renew door-1` on the server host before then"
    )
    expired = expiry_warning("mqtt.cert_file", path, validity, validity.not_after, "door-1")
    assert expired is not None and "the certificate expired at 1970-04-11T00:00:00Z" in expired
