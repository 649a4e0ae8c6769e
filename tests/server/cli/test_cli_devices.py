"""`facefleet-server certs issue|renew` record each certificate's serial; `devices list|disable|enable|revoke`
change which devices the server admits, each change in the admin audit log."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from facefleet.core.errors import EXIT_CONFIG, EXIT_DATA, EXIT_NO_INPUT, EXIT_OK
from facefleet.server.api import certs
from tests.server.cli.test_cli import run_cli


def listed(capsys: pytest.CaptureFixture[str], state: list[str]) -> dict[str, dict[str, Any]]:
    code, out, _ = run_cli(capsys, *state, "devices", "list", "--json")
    assert code == EXIT_OK
    return {device["device_id"]: device for device in json.loads(out)}


def serial_of(path: Path) -> str:
    return f"{x509.load_pem_x509_certificate(path.read_bytes()).serial_number:x}"


def test_certificates_are_recorded_and_devices_change_status(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = ["--state-dir", str(tmp_path)]
    assert run_cli(capsys, *state, "certs", "init")[0] == EXIT_OK
    code, out, _ = run_cli(capsys, *state, "devices", "list")
    assert (code, "no devices yet") == (EXIT_OK, out.split(";")[0])

    code, out, _ = run_cli(capsys, *state, "certs", "issue", "door-7", "--json")
    assert code == EXIT_OK
    first = serial_of(Path(json.loads(out)["door-7"]["cert"]))
    device = listed(capsys, state)["door-7"]
    assert (device["status"], [c["serial"] for c in device["certificates"]]) == ("active", [first])
    assert device["certificate_expires"] == device["certificates"][0]["not_after"]

    code, out, _ = run_cli(capsys, *state, "certs", "renew", "door-7", "--out", str(tmp_path / "renewed"))
    assert code == EXIT_OK
    second = serial_of(tmp_path / "renewed" / "door-7.pem")
    assert f"certificate {second}" in out
    certificates = listed(capsys, state)["door-7"]["certificates"]
    assert [(c["serial"], c["revoked_at"]) for c in certificates] == [(first, None), (second, None)]

    code, _, err = run_cli(capsys, *state, "certs", "renew", "nobody")
    assert code == EXIT_NO_INPUT
    assert "certs issue nobody" in err

    code, out, _ = run_cli(capsys, *state, "devices", "disable", "door-7", "--reason", "moved")
    assert (code, "device door-7 is now disabled") == (EXIT_OK, out.split(" (")[0])
    assert "(running servers refuse it within fleet.poll_seconds)" in " ".join(out.split())
    assert listed(capsys, state)["door-7"]["reason"] == "moved"
    code, out, _ = run_cli(capsys, *state, "devices", "enable", "door-7")
    assert (code, "device door-7 is now active") == (EXIT_OK, out.split(" (")[0])
    assert "(running servers accept it again within fleet.poll_seconds)" in " ".join(out.split())
    assert listed(capsys, state)["door-7"]["status"] == "active"

    code, out, _ = run_cli(capsys, *state, "devices", "revoke", "door-7", "--wipe", "--reason", "stolen")
    assert code == EXIT_OK
    assert "told to erase its gallery" in out
    device = listed(capsys, state)["door-7"]
    assert (device["status"], device["wipe"], device["changed_by"]) == ("revoked", True, "local")
    assert all(c["revoked_reason"] == "device revoked" for c in device["certificates"])
    code, out, _ = run_cli(capsys, *state, "devices", "list")
    assert "revoked (wipe)" in out and "stolen" in out

    code, _, err = run_cli(capsys, *state, "devices", "enable", "door-7")
    assert code == EXIT_DATA
    assert "certs issue door-7" in err
    assert run_cli(capsys, *state, "certs", "renew", "door-7")[0] == EXIT_DATA
    assert run_cli(capsys, *state, "devices", "disable", "nobody")[0] == EXIT_NO_INPUT

    assert run_cli(capsys, *state, "certs", "issue", "door-7")[0] == EXIT_OK
    device = listed(capsys, state)["door-7"]
    assert (device["status"], device["wipe"]) == ("active", False)
    assert [c["revoked_at"] is None for c in device["certificates"]] == [False, False, True]

    code, out, _ = run_cli(capsys, *state, "audit", "list", "--action", "devices", "--json")
    assert [(e["action"], e["target"], e["outcome"]) for e in json.loads(out)] == [
        ("devices.issue", "door-7", "ok"),
        ("devices.disable", "nobody", "NOT_FOUND"),
        ("devices.renew", "door-7", "FAILED_PRECONDITION"),
        ("devices.enable", "door-7", "INVALID_ARGUMENT"),
        ("devices.revoke", "door-7", "ok"),
        ("devices.enable", "door-7", "ok"),
        ("devices.disable", "door-7", "ok"),
        ("devices.renew", "nobody", "NOT_FOUND"),
        ("devices.renew", "door-7", "ok"),
        ("devices.issue", "door-7", "ok"),
    ]


def sans(path: Path) -> list[str]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(name.value) for name in alt]


def test_certs_server_keeps_the_names_of_the_current_certificate_and_refuses_to_drop_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = ["--state-dir", str(tmp_path)]
    names = ["--server-name", "fleet.example.org", "--server-name", "10.0.0.5"]
    code, out, _ = run_cli(capsys, *state, "certs", "init", *names)
    assert code == EXIT_OK
    assert "server certificate for fleet.example.org, 10.0.0.5" in " ".join(out.split())
    server = tmp_path / "tls" / "server.pem"
    first = serial_of(server)

    code, out, _ = run_cli(capsys, *state, "certs", "server")  # a renewal: same names, new certificate
    assert code == EXIT_OK
    assert (sans(server), serial_of(server) != first) == (["fleet.example.org", "10.0.0.5"], True)
    assert "for fleet.example.org, 10.0.0.5 (the current certificate's)" in " ".join(out.split())

    renewed = serial_of(server)
    code, _, err = run_cli(capsys, *state, "certs", "server", "--server-name", "fleet.example.org")
    assert code == EXIT_DATA
    assert "would drop 10.0.0.5" in " ".join(err.split())
    assert "--server-name fleet.example.org --server-name 10.0.0.5`" in " ".join(err.split())
    assert serial_of(server) == renewed  # nothing written

    extra = ["--server-name", "fleet.example.org", "--server-name", "10.0.0.5", "--server-name", "fleet2.lan"]
    assert run_cli(capsys, *state, "certs", "server", *extra)[0] == EXIT_OK
    assert sans(server) == ["fleet.example.org", "10.0.0.5", "fleet2.lan"]
    code, out, _ = run_cli(capsys, *state, "certs", "server", "--server-name", "new.lan", "--force", "--json")
    assert (code, json.loads(out)["names"], sans(server)) == (EXIT_OK, ["new.lan"], ["new.lan"])


@pytest.mark.skipif(os.geteuid() != 0, reason="hands the TLS files to another user, as root does on a site")
def test_certs_server_renewed_by_root_keeps_the_owner_group_and_mode_of_the_files_it_replaces(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = ["--state-dir", str(tmp_path)]
    assert run_cli(capsys, *state, "certs", "init", "--server-name", "fleet.example.org")[0] == EXIT_OK
    tls = tmp_path / "tls"
    service = 65534  # the service's user and group (nobody, nogroup)
    for name, mode in (("server.key", 0o640), ("server.pem", 0o644)):
        os.chown(tls / name, service, service)
        os.chmod(tls / name, mode)
    first = serial_of(tls / "server.pem")
    assert run_cli(capsys, *state, "certs", "server")[0] == EXIT_OK
    assert serial_of(tls / "server.pem") != first
    for name, mode in (("server.key", 0o640), ("server.pem", 0o644)):
        now = (tls / name).stat()
        assert (now.st_uid, now.st_gid, stat.S_IMODE(now.st_mode)) == (service, service, mode), name
    os.chmod(tls / "server.key", 0o664)  # group write and world read are never carried over to a key
    assert run_cli(capsys, *state, "certs", "server")[0] == EXIT_OK
    assert stat.S_IMODE((tls / "server.key").stat().st_mode) == 0o640


def test_certs_server_writes_the_configured_tls_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    elsewhere = tmp_path / "etc"
    config = tmp_path / "server.toml"
    config.write_text(
        f'state_dir = "{tmp_path / "state"}"\n[tls]\nserver_cert = "{elsewhere / "fleet.pem"}"\n'
        f'server_key = "{elsewhere / "fleet.key"}"\n'
    )
    base = ["--config", str(config)]
    assert run_cli(capsys, *base, "certs", "init", "--server-name", "fleet.lan")[0] == EXIT_OK
    assert sans(elsewhere / "fleet.pem") == ["fleet.lan"]
    first = serial_of(elsewhere / "fleet.pem")
    code, out, _ = run_cli(capsys, *base, "certs", "server", "--json")
    assert code == EXIT_OK
    written = json.loads(out)
    assert written["server"] == {"cert": str(elsewhere / "fleet.pem"), "key": str(elsewhere / "fleet.key")}
    assert (written["names"], serial_of(elsewhere / "fleet.pem") != first) == (["fleet.lan"], True)
    assert (elsewhere / "fleet.key").stat().st_mode & 0o777 == 0o600
    assert not (tmp_path / "state" / "tls" / "server.pem").exists()


def test_a_certificate_does_not_outlive_the_ca_that_signs_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = ["--state-dir", str(tmp_path)]
    assert run_cli(capsys, *state, "certs", "init")[0] == EXIT_OK
    ca = x509.load_pem_x509_certificate((tmp_path / "tls" / "ca.pem").read_bytes())
    code, out, _ = run_cli(capsys, *state, "certs", "issue", "door-1", "--days", "5000")
    assert code == EXIT_OK
    device = x509.load_pem_x509_certificate((tmp_path / "tls" / "devices" / "door-1.pem").read_bytes())
    assert device.not_valid_after_utc == ca.not_valid_after_utc
    assert f"valid until {ca.not_valid_after_utc:%Y-%m-%d} (cut to the CA's own expiry" in " ".join(
        out.split()
    )
    code, out, _ = run_cli(capsys, *state, "certs", "server", "--days", "5000", "--json")
    assert (code, json.loads(out)["capped_by_ca"]) == (EXIT_OK, True)
    server = x509.load_pem_x509_certificate((tmp_path / "tls" / "server.pem").read_bytes())
    assert server.not_valid_after_utc == ca.not_valid_after_utc
    code, out, _ = run_cli(capsys, *state, "certs", "issue", "door-2")  # 825 days: within the CA's life
    assert "cut to" not in out


def test_a_ca_bundle_signs_with_the_ca_of_ca_key_wherever_it_is_in_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """While a site moves to a new CA, ca.pem holds both (README: "Replacing the site CA"), in any order."""
    state = ["--state-dir", str(tmp_path / "state")]
    tls = tmp_path / "state" / "tls"
    assert run_cli(capsys, *state, "certs", "init")[0] == EXIT_OK
    certs.init_ca(tmp_path / "next", server_names=["localhost"], organisation="FaceFleet 2035")
    new_ca = x509.load_pem_x509_certificate((tmp_path / "next" / "ca.pem").read_bytes())
    (tls / "ca.pem").write_bytes((tls / "ca.pem").read_bytes() + (tmp_path / "next" / "ca.pem").read_bytes())
    (tls / "ca.key").write_bytes((tmp_path / "next" / "ca.key").read_bytes())
    assert run_cli(capsys, *state, "certs", "issue", "door-1")[0] == EXIT_OK
    device = x509.load_pem_x509_certificate((tls / "devices" / "door-1.pem").read_bytes())
    device.verify_directly_issued_by(new_ca)
    assert run_cli(capsys, *state, "certs", "server")[0] == EXIT_OK
    x509.load_pem_x509_certificate((tls / "server.pem").read_bytes()).verify_directly_issued_by(new_ca)

    certs.init_ca(tmp_path / "other", server_names=["localhost"])
    (tls / "ca.key").write_bytes((tmp_path / "other" / "ca.key").read_bytes())
    code, _, err = run_cli(capsys, *state, "certs", "issue", "door-2")
    assert code == EXIT_CONFIG
    fault = f"{tls / 'ca.key'} belongs to none of the 2 certificates in {tls / 'ca.pem'}"
    assert fault in " ".join(err.split())
