"""facefleet-server end to end: help, certificates, tokens, queries, and `serve` as a real process that
talks sd_notify, answers health checks and stops cleanly on SIGTERM with exit code 0."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from facefleet.core.errors import EXIT_CONFIG, EXIT_DATA, EXIT_OK
from facefleet.link.checks import utc_now
from facefleet.link.events import AttributesResult, Event, ExpressionResult
from facefleet.link.fleet import Registration
from facefleet.link.gallery import Person
from facefleet.server.cli.main import main
from facefleet.server.state.sqlite.state import SqliteState
from tests.server.conftest import Pki


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_certs_and_tokens(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = ["--state-dir", str(tmp_path)]
    assert run_cli(capsys, *state, "certs", "init", "--server-name", "fleet.local")[0] == EXIT_OK
    assert (tmp_path / "tls" / "ca.pem").is_file()
    code, _, err = run_cli(capsys, *state, "certs", "init")
    assert code == EXIT_CONFIG
    assert "a CA already exists" in err
    code, out, _ = run_cli(capsys, *state, "certs", "issue", "door-7", "--json")
    assert code == EXIT_OK
    issued = json.loads(out)
    assert issued["door-7"] == {
        "cert": str(tmp_path / "tls" / "devices" / "door-7.pem"),
        "key": str(tmp_path / "tls" / "devices" / "door-7.key"),
    }
    assert issued["ca"] == {"cert": str(tmp_path / "tls" / "ca.pem")}
    assert (tmp_path / "tls" / "devices" / "door-7.key").is_file()
    code, _, err = run_cli(capsys, *state, "certs", "issue", "bad id")
    assert code != EXIT_OK
    assert "is not valid" in err
    code, out, _ = run_cli(capsys, *state, "tokens", "create", "grafana", "--role", "query", "--json")
    created = json.loads(out)
    assert (code, created["role"], created["token"].count(".")) == (EXIT_OK, "query", 2)
    code, out, _ = run_cli(capsys, *state, "tokens", "list", "--json")
    assert [t["name"] for t in json.loads(out)] == ["grafana"]
    assert created["token"].split(".")[2] not in out
    assert run_cli(capsys, *state, "tokens", "revoke", "grafana")[0] == EXIT_OK
    code, _, err = run_cli(capsys, *state, "tokens", "revoke", "grafana")
    assert code == 66
    assert "no token named 'grafana'" in err


def test_check_config_names_the_bad_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "server.toml"
    config.write_text('[listen]\nagents = "[::]:7443"\nmax_mesage_bytes = 5\n[gallery]\nlog_revisions = 0\n')
    code, _, err = run_cli(capsys, "check-config", str(config))
    assert code == EXIT_CONFIG
    assert "unknown key 'listen.max_mesage_bytes'" in err
    assert "'gallery.log_revisions'" in err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[listen]\nagents = "127.0.0.1:70000"\n',
            "'listen.agents': address '127.0.0.1:70000' must",
        ),
        ('[listen]\noperators = "7444"\n', "'listen.operators': address '7444' must look like"),
        ('[listen]\nhttp = "localhost"\n', "'listen.http': address 'localhost' must look like"),
        (
            'insecure_development = true\n[listen]\nagents = "127.0.0.1:0"\n',
            "listen.operators must be a loopback address such as '127.0.0.1:0', not '[::]:7444'",
        ),
        (
            '[tls]\nca_cert = "/nonexistent/ca.pem"\n',
            "CA certificate (tls.ca_cert) /nonexistent/ca.pem does not",
        ),
        (
            '[tls]\nserver_key = "{tmp}/server.toml"\n',
            "server key (tls.server_key) {tmp}/server.toml is not a PEM",
        ),
        ('[tls]\nserver_key = "server.toml"\n', "'tls.server_key': 'server.toml' is a relative path"),
        ('[tls]\nca_cert = "/dev/zero"\n', "(tls.ca_cert) /dev/zero: cannot read (not a regular file)"),
        ('state_dir = "state"\n', "'state_dir': 'state' is a relative path"),
        ('[runtime]\ndevice = "BOGUS"\n', "'runtime.device': 'BOGUS' is not an OpenVINO device name"),
        ('[models]\ndir = "models"\n', "'models.dir': 'models' is a relative path, which would be read from"),
    ],
)
def test_check_config_refuses_addresses_it_cannot_listen_on_and_missing_tls_files(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    text: str,
    expected: str,
) -> None:
    """An address gRPC would read otherwise ('7444' is not a port, 70000 wraps to 4464) stops the load, as
    do listeners open beyond this machine in insecure development mode, [tls] files that are not PEM, and
    relative paths (read from the working directory, which is / under systemd) even where they exist."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "state").mkdir()
    (tmp_path / "models").mkdir()
    config = tmp_path / "server.toml"
    config.write_text(text.format(tmp=tmp_path))
    code, _, err = run_cli(capsys, "check-config", str(config))
    assert (code, expected.format(tmp=tmp_path) in err) == (EXIT_CONFIG, True), err


def test_check_config_refuses_a_server_key_other_users_can_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], pki: Pki
) -> None:
    key = tmp_path / "server.key"
    key.write_bytes((pki.tls_dir / "server.key").read_bytes())
    key.chmod(0o644)
    config = tmp_path / "server.toml"
    config.write_text(f'[tls]\nserver_key = "{key}"\n')
    code, _, err = run_cli(capsys, "check-config", str(config))
    assert code == EXIT_CONFIG, err
    assert f"tls.server_key {key}: mode 0644" in err and f"chmod 600 {key}" in err
    key.chmod(0o600)
    assert run_cli(capsys, "check-config", str(config))[0] == EXIT_OK


def server_files_that_do_not_work(tmp_path: Path, pki: Pki, fault: str) -> dict[str, Path]:
    """[tls] files from the test PKI with one fault: a key of another certificate, an encrypted key, the
    chain file in the wrong order (CA first)."""
    from cryptography.hazmat.primitives import serialization

    files = {"ca_cert": pki.tls_dir / "ca.pem", "server_cert": pki.tls_dir / "server.pem"}
    key = tmp_path / "server.key"
    files["server_key"] = key
    if fault == "wrong key":
        key.write_bytes((pki.foreign_dir / "server.key").read_bytes())
    elif fault == "encrypted key":
        private = serialization.load_pem_private_key((pki.tls_dir / "server.key").read_bytes(), None)
        key.write_bytes(
            private.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(b"secret"),
            )
        )
    else:
        key.write_bytes((pki.tls_dir / "server.key").read_bytes())
        files["server_cert"] = tmp_path / "chain.pem"
        files["server_cert"].write_bytes(
            (pki.tls_dir / "ca.pem").read_bytes() + (pki.tls_dir / "server.pem").read_bytes()
        )
    key.chmod(0o600)
    return files


TLS_FAULTS = {
    "wrong key": "server key (tls.server_key) {server_key} does not belong to the server certificate",
    "encrypted key": "server key (tls.server_key) {server_key} is encrypted",
    "chain order": "(tls.server_cert) {server_cert}: its certificates are in the wrong order",
}


@pytest.mark.parametrize("fault", TLS_FAULTS)
def test_check_config_refuses_server_tls_files_that_do_not_work_together(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], pki: Pki, fault: str
) -> None:
    files = server_files_that_do_not_work(tmp_path, pki, fault)
    config = tmp_path / "server.toml"
    config.write_text("[tls]\n" + "".join(f'{key} = "{path}"\n' for key, path in files.items()))
    code, _, err = run_cli(capsys, "check-config", str(config))
    assert code == EXIT_CONFIG
    assert TLS_FAULTS[fault].format(**files) in " ".join(err.split()), err


def test_check_config_checks_the_default_tls_files_of_the_state_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], pki: Pki
) -> None:
    state = tmp_path / "state"
    config = tmp_path / "server.toml"
    config.write_text(f'state_dir = "{state}"\n')
    assert run_cli(capsys, "check-config", str(config))[0] == EXIT_OK  # none yet: `certs init` makes them
    assert run_cli(capsys, "--state-dir", str(state), "certs", "init")[0] == EXIT_OK
    assert run_cli(capsys, "check-config", str(config))[0] == EXIT_OK
    (state / "tls" / "server.key").write_bytes((pki.tls_dir / "server.key").read_bytes())
    code, _, err = run_cli(capsys, "check-config", str(config))
    assert code == EXIT_CONFIG
    assert f"server key (tls.server_key) {state / 'tls' / 'server.key'} does not belong" in " ".join(
        err.split()
    )


def test_check_config_accepts_loopback_insecure_listeners_and_port_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "server.toml"
    config.write_text(
        'insecure_development = true\n[listen]\nagents = "127.0.0.1:0"\noperators = "[::1]:7444"\n'
        'http = "localhost:7445"\n'
    )
    assert run_cli(capsys, "check-config", str(config))[0] == EXIT_OK


ESTIMATES = (
    AttributesResult("female", 0.0312, 34.2, "30-39"),
    AttributesResult("male", 0.5, 12.5, "13-19"),
    None,
    AttributesResult("female", 0.5, 61.0, "60+"),
    AttributesResult("female", 0.2, 36.0, "30-39"),
)
"""The attributes of the five face events of test_queries_print_what_was_reported (one without)."""


def test_queries_print_what_was_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    state = SqliteState(tmp_path / "server.db")
    now = utc_now()
    state.register_agent(Registration("door-1", "0.3.0"), now)
    state.add_person(Person("alice"), [], now)
    events = [
        Event(
            str(uuid.uuid4()),
            "door-1",
            now - timedelta(minutes=i),
            "face",
            "unknown" if i % 2 else "match",
            person_id="" if i % 2 else "alice",
            expression=ExpressionResult("happy" if i < 3 else "sad"),
            camera="porch" if i == 1 else "hall",
            attributes=ESTIMATES[i],
        )
        for i in range(5)
    ]
    doors = [
        Event(str(uuid.uuid4()), "door-1", now - timedelta(minutes=i), "access", decision, person_id="alice",
              camera="hall", door=door)
        for i, (decision, door) in enumerate((("granted", "main"), ("denied", "side")))
    ]  # fmt: skip
    state.add_events(events + doors)
    state.close()
    base = ["--state-dir", str(tmp_path)]
    code, out, _ = run_cli(capsys, *base, "query", "events", "--since", "1h", "--decision", "match", "--json")
    assert code == EXIT_OK
    assert sorted(e["event_id"] for e in json.loads(out)) == sorted(
        e.event_id for e in events if e.decision == "match"
    )
    code, out, _ = run_cli(capsys, *base, "query", "expressions", "--json")
    assert {r["label"]: r["count"] for r in json.loads(out) if not r["device_id"]} == {"happy": 3, "sad": 2}
    code, out, _ = run_cli(capsys, *base, "query", "unknown-rate", "--json")
    assert json.loads(out)["total"] == {"device_id": "", "face_events": 5, "unknown_events": 2, "rate": 0.4}
    code, out, _ = run_cli(capsys, *base, "query", "counts", "--interval", "1d", "--json")
    assert sum(r["count"] for r in json.loads(out)) == 7
    code, out, _ = run_cli(capsys, *base, "query", "events", "--camera", "porch", "--json")
    assert [e["event_id"] for e in json.loads(out)] == [events[1].event_id]
    code, out, _ = run_cli(capsys, *base, "query", "events", "--door", "main", "--door", "side", "--json")
    assert sorted(e["event_id"] for e in json.loads(out)) == sorted(e.event_id for e in doors)
    code, out, _ = run_cli(capsys, *base, "query", "counts", "--interval", "1d", "--door", "main", "--json")
    assert sum(r["count"] for r in json.loads(out)) == 1
    code, out, _ = run_cli(capsys, *base, "query", "access", "--door", "side", "--json")
    assert json.loads(out) == [{"device_id": "door-1", "door": "side", "granted": 0, "denied": 1}]
    code, out, _ = run_cli(capsys, *base, "query", "unknown-rate", "--camera", "porch", "--json")
    assert json.loads(out)["total"] == {"device_id": "", "face_events": 1, "unknown_events": 1, "rate": 1.0}
    code, _, err = run_cli(capsys, *base, "query", "events", "--camera", "")
    assert code == EXIT_DATA
    assert "filter cameras: '' is not a camera name" in err
    code, out, _ = run_cli(capsys, *base, "query", "attributes", "--json")
    bands = dict.fromkeys(("0-12", "13-19", "20-29", "30-39", "40-49", "50-59", "60+"), 0)
    assert (code, json.loads(out)) == (
        EXIT_OK,
        {
            "total": {
                "device_id": "",
                "face_events": 5,
                "estimated": 4,
                "genders": {"female": 3, "male": 1},
                "age_bands": {**bands, "13-19": 1, "30-39": 2, "60+": 1},
                "gender_age_bands": [
                    {"gender": "female", "age_band": "30-39", "count": 2},
                    {"gender": "female", "age_band": "60+", "count": 1},
                    {"gender": "male", "age_band": "13-19", "count": 1},
                ],
            },
            "per_device": [],
        },
    )
    code, out, _ = run_cli(
        capsys, *base, "query", "attributes", "--per-device", "--decision", "unknown", "--json"
    )
    found = json.loads(out)
    assert [r["device_id"] for r in found["per_device"]] == ["door-1"]
    assert (found["total"]["face_events"], found["total"]["genders"]) == (2, {"female": 1, "male": 1})
    monkeypatch.setenv("COLUMNS", "120")
    code, out, _ = run_cli(capsys, *base, "query", "attributes", "--per-device", "--camera", "hall")
    assert code == EXIT_OK
    lines = [line for line in out.splitlines() if "(all)" in line or "door-1" in line]
    assert [re.findall(r"\d+|\(all\)|door-1", line) for line in lines] == [
        ["(all)", "4", "3", "3", "0", "0", "0", "0", "2", "0", "0", "1"],
        ["door-1", "4", "3", "3", "0", "0", "0", "0", "2", "0", "0", "1"],
    ]  # device, face events, estimated, female, male, then each age band
    monkeypatch.setenv("COLUMNS", "60")  # too narrow for the table: a block per row
    code, out, _ = run_cli(capsys, *base, "query", "attributes", "--camera", "hall")
    assert out.splitlines() == [
        "(all): 4 face events, 3 estimated",
        "  female 3, male 0",
        "  0-12: 0, 13-19: 0, 20-29: 0, 30-39: 2, 40-49: 0, 50-59: 0, 60+: 1",
    ]
    with pytest.raises(SystemExit) as usage:  # like the other aggregates: no person filter
        run_cli(capsys, *base, "query", "attributes", "--person", "alice")
    assert usage.value.code == 2 and "unrecognized arguments: --person" in capsys.readouterr().err
    code, out, _ = run_cli(capsys, *base, "query", "events", "--camera", "porch", "--json")
    assert json.loads(out)[0]["attributes"] == {
        "gender": "male",
        "male_probability": 0.5,
        "age_years": 12.5,
        "age_band": "13-19",
    }
    code, out, _ = run_cli(capsys, *base, "query", "fleet", "--json")
    (agent,) = json.loads(out)["agents"]
    assert (agent["device_id"], agent["agent_version"], agent["online"], agent["revision_lag"]) == (
        "door-1",
        "0.3.0",
        True,
        1,
    )
    code, out, _ = run_cli(capsys, *base, "query", "fleet")
    assert "door-1" in out
    assert "gallery revision 1" in out


def serve_process(tmp_path: Path, pki: Pki, notify_path: Path, **tls: str) -> subprocess.Popen[str]:
    config = tmp_path / "server.toml"
    paths = {
        "ca_cert": pki.tls_dir / "ca.pem",
        "server_cert": pki.tls_dir / "server.pem",
        "server_key": pki.tls_dir / "server.key",
        **tls,
    }
    config.write_text(
        '[listen]\nagents = "127.0.0.1:0"\noperators = "127.0.0.1:0"\nhttp = "127.0.0.1:0"\n'
        "grace_seconds = 2\n[tls]\n" + "".join(f'{key} = "{value}"\n' for key, value in paths.items())
    )
    env = {**os.environ, "NOTIFY_SOCKET": str(notify_path)}
    command = [
        sys.executable,
        "-m",
        "facefleet.server.cli",
        "--config",
        str(config),
        "--state-dir",
        str(tmp_path / "s"),
        "serve",
    ]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_serve_notifies_systemd_answers_health_and_stops_on_sigterm(tmp_path: Path, pki: Pki) -> None:
    notify_path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(str(notify_path))
        receiver.settimeout(60)
        process = serve_process(tmp_path, pki, notify_path)
        try:
            ready = receiver.recv(4096).decode()
            assert ready.startswith("READY=1\nSTATUS=serving")
            operators = int(re.search(r"operators on port (\d+)", ready)[1])  # type: ignore[index]
            with grpc.secure_channel(
                f"localhost:{operators}", grpc.ssl_channel_credentials(pki.ca)
            ) as channel:
                health = health_pb2_grpc.HealthStub(channel)
                for service in ("", "facefleet.v1.FleetService", "facefleet.v1.QueryService"):
                    reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
                    assert reply.status == health_pb2.HealthCheckResponse.SERVING
            process.send_signal(signal.SIGTERM)
            assert receiver.recv(4096).decode().startswith("STOPPING=1")
            assert process.wait(timeout=60) == EXIT_OK
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def test_serve_without_tls_files_exits_78_naming_the_file(tmp_path: Path, pki: Pki) -> None:
    process = serve_process(tmp_path, pki, tmp_path / "absent.sock", server_key=str(tmp_path / "nope.key"))
    output, _ = process.communicate(timeout=60)
    assert process.returncode == EXIT_CONFIG
    assert f"server key (tls.server_key) {tmp_path / 'nope.key'} does not exist" in output
    assert "facefleet-server certs init" in output


def test_serve_with_a_key_of_another_certificate_exits_78_naming_it(tmp_path: Path, pki: Pki) -> None:
    files = server_files_that_do_not_work(tmp_path, pki, "wrong key")
    process = serve_process(tmp_path, pki, tmp_path / "absent.sock", server_key=str(files["server_key"]))
    output, _ = process.communicate(timeout=60)
    assert process.returncode == EXIT_CONFIG, output
    assert TLS_FAULTS["wrong key"].format(**files) in " ".join(output.split())
    assert "cannot listen" not in output


def test_serve_reloads_its_certificate_on_sighup_and_goes_on_serving(tmp_path: Path, pki: Pki) -> None:
    """SIGHUP (the unit's ExecReload=) rereads the TLS files; the process goes on, and stops on SIGTERM."""
    from facefleet.server.api import certs
    from tests.server.test_tls_reload import presented

    own = Pki(tmp_path / "tls", pki.foreign_dir)
    certs.init_ca(own.tls_dir, server_names=["localhost"])
    files = {key: str(own.tls_dir / name) for key, name in TLS_NAMES.items()}
    notify_path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(str(notify_path))
        receiver.settimeout(60)
        process = serve_process(tmp_path, pki, notify_path, **files)
        try:
            ready = receiver.recv(4096).decode()
            operators = int(re.search(r"operators on port (\d+)", ready)[1])  # type: ignore[index]
            renewed = certs.issue_server(own.tls_dir, ["localhost"])
            process.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 30
            while presented(operators, own) != int(renewed.serial, 16):
                assert process.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
            process.send_signal(signal.SIGTERM)
            output, _ = process.communicate(timeout=60)
            assert process.returncode == EXIT_OK
            assert "SIGHUP: reloaded the TLS files" in output
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


TLS_NAMES = {"ca_cert": "ca.pem", "server_cert": "server.pem", "server_key": "server.key"}
