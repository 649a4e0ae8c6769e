"""The agent's config file and the files it names: `check-config` and `run` refuse a missing or garbage PEM
file, an unreadable password file and a device id outside the link's id rule with exit 78 naming the key."""

from __future__ import annotations

import grp
import os
import re
import resource
import shutil
import socket
import stat
import subprocess
import sys
import typing
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from facefleet.agent.cli.main import main
from facefleet.agent.config import AgentConfig, CameraConfig, DoorConfig, load_config, write_threshold
from facefleet.agent.service.wiring import mqtt_settings, sync_settings
from facefleet.core.config import group_users
from facefleet.core.errors import EXIT_CONFIG, EXIT_OK, ConfigError
from facefleet.server.api import certs
from facefleet.vision.models.store import ModelStore

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

GARBAGE = "this is not a certificate\n"
README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A site CA (ca.pem), a device certificate (devices/door-1.pem) and its key (devices/door-1.key)."""
    tls_dir = tmp_path_factory.mktemp("tls")
    certs.init_ca(tls_dir, server_names=["127.0.0.1"])
    certs.issue_device(tls_dir, "door-1")
    return tls_dir


def check_config(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str) -> tuple[int, str]:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    code = main(["check-config", str(path)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def mqtt_tls(ca_file: Path, cert_file: Path | None = None, key_file: Path | None = None) -> str:
    lines = ["[mqtt]", "tls = true", f'ca_file = "{ca_file}"']
    lines += [f'cert_file = "{cert_file}"'] if cert_file else []
    lines += [f'key_file = "{key_file}"'] if key_file else []
    return "\n".join(lines) + "\n"


def server_tls(ca_file: Path, cert_file: Path, key_file: Path) -> str:
    return (
        f'[server]\nenabled = true\naddress = "127.0.0.1:7443"\n'
        f'ca_file = "{ca_file}"\ncert_file = "{cert_file}"\nkey_file = "{key_file}"\n'
    )


def test_check_config_accepts_real_pem_files(
    tls: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    device = tls / "devices"
    text = mqtt_tls(tls / "ca.pem", device / "door-1.pem", device / "door-1.key")
    text += server_tls(tls / "ca.pem", device / "door-1.pem", device / "door-1.key")
    code, output = check_config(tmp_path, capsys, 'device_id = "door-1"\n' + text)
    assert (code, output.strip()) == (EXIT_OK, f"{tmp_path / 'agent.toml'}: ok")


@pytest.mark.parametrize(
    ("section", "key", "content", "message"),
    [
        ("mqtt", "ca_file", None, "no such file"),
        ("mqtt", "ca_file", GARBAGE, "not a PEM certificate"),
        ("mqtt", "ca_file", "", "not a PEM certificate"),
        ("mqtt", "cert_file", GARBAGE, "not a PEM certificate"),
        ("mqtt", "key_file", GARBAGE, "not a PEM private key"),
        ("server", "ca_file", None, "no such file"),
        ("server", "ca_file", GARBAGE, "not a PEM certificate"),
        ("server", "cert_file", GARBAGE, "not a PEM certificate"),
        ("server", "key_file", GARBAGE, "not a PEM private key"),
    ],
)
def test_check_config_refuses_a_missing_or_garbage_pem_file(
    tls: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    section: str,
    key: str,
    content: str | None,
    message: str,
) -> None:
    files = {
        "ca_file": tls / "ca.pem",
        "cert_file": tls / "devices/door-1.pem",
        "key_file": tls / "devices/door-1.key",
    }
    bad = tmp_path / "bad.pem"
    if content is not None:
        bad.write_text(content)
    files[key] = bad
    text = (mqtt_tls if section == "mqtt" else server_tls)(
        files["ca_file"], files["cert_file"], files["key_file"]
    )
    code, output = check_config(tmp_path, capsys, text)
    assert code == EXIT_CONFIG
    assert f"{section}.{key} {bad}: {message}" in output
    assert "Traceback" not in output


def test_check_config_refuses_a_key_that_does_not_match_the_certificate(
    tls: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = mqtt_tls(tls / "ca.pem", tls / "devices/door-1.pem", tls / "ca.key")
    code, output = check_config(tmp_path, capsys, text)
    assert code == EXIT_CONFIG and "mqtt.key_file" in output and "does not match" in output


def dated_device(tls: Path, out_dir: Path, days_from_now: float, days: int = 1) -> certs.Issued:
    """A certificate for door-1 valid `days` days from `days_from_now` days from now (negative: past)."""
    not_before = datetime.now(timezone.utc) + timedelta(days=days_from_now)
    return certs.issue_device(tls, "door-1", out_dir=out_dir, days=days, not_before=not_before)


@pytest.mark.parametrize("section", ["mqtt", "server"])
@pytest.mark.parametrize(
    ("days_from_now", "message"),
    [
        (
            -3,
            "the certificate expired at {not_after} and is refused: install the renewed certificate and "
            "key from `facefleet-server certs renew door-1` on the server host",
        ),
        (2, "the certificate is valid only from {not_before} but this box's clock reads"),
    ],
    ids=["expired", "not-yet-valid"],
)
def test_check_config_refuses_a_client_certificate_out_of_its_dates_which_run_only_warns_of(
    tls: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    section: str,
    days_from_now: int,
    message: str,
) -> None:
    device = dated_device(tls, tmp_path / "device", days_from_now)
    text = (mqtt_tls if section == "mqtt" else server_tls)(tls / "ca.pem", device.cert, device.key)
    code, output = check_config(tmp_path, capsys, 'device_id = "door-1"\n' + text)
    assert code == EXIT_CONFIG
    assert device.not_before is not None and device.not_after is not None
    dates = {
        "not_before": device.not_before.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "not_after": device.not_after.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    assert f"{section}.cert_file {device.cert}: {message.format(**dates)}" in output
    assert "set the clock (NTP" in output
    # `run` reads the same files and goes on (doors decide offline), saying why the link is refused
    config = load_config(tmp_path / "agent.toml")
    if section == "mqtt":
        settings: Any = mqtt_settings(config, "facefleet/door-1/", "door-1")
    else:
        settings = sync_settings(config, "door-1", "sface@2021dec", {}, {})
    assert settings.cert_file == device.cert
    (logged,) = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert logged.startswith(f"{section}.cert_file {device.cert}: ") and "the agent runs on" in logged


def test_check_config_accepts_a_client_certificate_that_expires_soon(
    tls: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    device = dated_device(tls, tmp_path / "device", -1, days=2)  # a day left: warned of by the status only
    text = mqtt_tls(tls / "ca.pem", device.cert, device.key)
    text += server_tls(tls / "ca.pem", device.cert, device.key)
    code, output = check_config(tmp_path, capsys, 'device_id = "door-1"\n' + text)
    assert code == EXIT_OK, output


def test_check_config_refuses_a_missing_password_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "mqtt-password"
    code, output = check_config(tmp_path, capsys, f'[mqtt]\nusername = "door"\npassword_file = "{missing}"\n')
    assert code == EXIT_CONFIG and f"mqtt.password_file {missing}: no such file" in output


def test_files_of_a_disabled_section_are_not_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.pem"
    text = f'[mqtt]\nenabled = false\ntls = true\nca_file = "{missing}"\n'
    text += f'[server]\nca_file = "{missing}"\n'
    code, output = check_config(tmp_path, capsys, text)
    assert code == EXIT_OK, output


@pytest.mark.parametrize("device_id", ["door/1", "a#b", "x+y", "-door", "a b"])
def test_check_config_refuses_a_device_id_outside_the_id_rule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], device_id: str
) -> None:
    code, output = check_config(tmp_path, capsys, f'device_id = "{device_id}"\n')
    assert code == EXIT_CONFIG and "'device_id'" in output and "letters, digits" in output


@pytest.mark.parametrize("device_id", ["", "door-1", "lobby.east:2@site"])
def test_check_config_accepts_device_ids_of_the_id_rule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], device_id: str
) -> None:
    code, output = check_config(tmp_path, capsys, f'device_id = "{device_id}"\n')
    assert code == EXIT_OK, output


@pytest.mark.slow
@pytest.mark.parametrize("content", [None, GARBAGE], ids=["missing", "garbage"])
def test_run_exits_78_naming_a_missing_or_garbage_ca_file(
    model_store: ModelStore, model_cache: Path, tmp_path: Path, content: str | None
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "models").symlink_to(model_store.root, target_is_directory=True)
    (state / "cache").symlink_to(model_cache, target_is_directory=True)
    ca_file = tmp_path / "ca.pem"
    if content is not None:
        ca_file.write_text(content)
    config = tmp_path / "agent.toml"
    config.write_text(
        f'device_id = "door-1"\n[mqtt]\nhost = "127.0.0.1"\ntls = true\nca_file = "{ca_file}"\n'
    )
    script = Path(sys.executable).with_name("facefleet-agent")
    result = subprocess.run(
        [str(script), "--config", str(config), "--state-dir", str(state), "run"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == EXIT_CONFIG, result.stderr
    assert f"mqtt.ca_file {ca_file}: " in result.stderr and "Traceback" not in result.stderr


def test_an_empty_device_id_takes_the_host_name_only_when_it_is_a_valid_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = AgentConfig()
    monkeypatch.setattr(socket, "gethostname", lambda: "door-box.local")
    assert config.device() == "door-box.local"
    monkeypatch.setattr(socket, "gethostname", lambda: "door box")
    with pytest.raises(ConfigError, match=r"host name 'door box' is not a valid id.*set device_id"):
        config.check_files()
    assert AgentConfig(device_id="front-door").device() == "front-door"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "[matching.thresholds]\n'sface@2021dec' = 7.0\n",
            "'matching.thresholds': sface@2021dec = 7.0",
        ),
        ("[matching.door_thresholds]\n'sface@2021dec' = -5.0\n", "'matching.door_thresholds':"),
        (
            "[matching.door_thresholds]\nsface = 0.5\n",
            "model id 'sface' is not valid: expected '<name>@<version>'",
        ),
        ('[mqtt]\nprefix = "site/#/"\n', "'mqtt.prefix': 'site/#/' is not a topic prefix"),
        ('[mqtt]\nprefix = "site/door-1"\n', "'site/door-1' must end with '/', e.g. 'site/door-1/'"),
        ('[mqtt]\ndiscovery_prefix = "home+assistant"\n', "'mqtt.discovery_prefix':"),
        ('[mqtt]\ndiscovery_prefix = "homeassistant/"\n', "give the prefix without the trailing '/'"),
        (
            '[[cameras]]\nname = "front"\nsource = "0"\n[[doors]]\nname = "front"\ncamera = "front"\n'
            'relay_topic = "relay//front"\n',
            "'doors.0.relay_topic': 'relay//front' is not a topic under the MQTT prefix",
        ),
    ],
)
def test_check_config_refuses_thresholds_outside_a_cosine_and_topics_mqtt_cannot_publish_to(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str
) -> None:
    """Caught when the file loads, naming the key: not at the first decision or the first publish (paho
    raises on a wildcard topic in the thread that sends the outbox)."""
    code, output = check_config(tmp_path, capsys, text)
    assert (code, expected in output) == (EXIT_CONFIG, True), output


@pytest.mark.parametrize(
    ("key", "text"),
    [
        ("prefix", '[mqtt]\nprefix = "site\\u007f/"\n'),
        ("prefix", '[mqtt]\nprefix = "caf\\u0085/"\n'),
        ("prefix", '[mqtt]\nprefix = "a\\ufffe/"\n'),
        ("prefix", '[mqtt]\nprefix = "a\\U0001ffff/"\n'),
        ("discovery_prefix", '[mqtt]\ndiscovery_prefix = "ha\\ufdd0"\n'),
        (
            "relay_topic",
            '[[cameras]]\nname = "front"\nsource = "0"\n[[doors]]\nname = "front"\ncamera = "front"\n'
            'relay_topic = "relay/fr\\u0085ont"\n',
        ),
    ],
)
def test_check_config_refuses_topics_with_characters_a_broker_refuses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], key: str, text: str
) -> None:
    """mosquitto refuses DEL, C1 controls and non-characters: with one in the prefix the last will never
    connects, in a relay topic each grant drops the connection."""
    code, output = check_config(tmp_path, capsys, text)
    assert code == EXIT_CONFIG, output
    assert f".{key}'" in output and "MQTT brokers refuse control characters" in output


@pytest.mark.parametrize("key", ["ca_file", "cert_file", "key_file"])
def test_check_config_refuses_tls_files_while_tls_is_off(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], key: str
) -> None:
    """Otherwise the files are ignored and the broker password goes out in clear text."""
    text = f'[mqtt]\nusername = "door"\n{key} = "{tmp_path / "x.pem"}"\n'
    code, output = check_config(tmp_path, capsys, text)
    assert code == EXIT_CONFIG, output
    assert f"mqtt.{key} is set but mqtt.tls is false" in output and f"remove {key}" in output
    assert "door" not in output  # the section's values are not dumped


@pytest.mark.parametrize(
    ("key", "line"),
    [
        ("state_dir", 'state_dir = "state"'),
        ("mqtt.ca_file", '[mqtt]\ntls = true\nca_file = "ca.pem"'),
        ("mqtt.password_file", '[mqtt]\npassword_file = "secrets/pw"'),
        ("server.cert_file", '[server]\ncert_file = "./device.pem"'),
        ("server.key_file", '[server]\nkey_file = "keys/device.key"'),
        ("models.smoke_photo", '[models]\nsmoke_photo = "face.jpg"'),
    ],
)
def test_check_config_refuses_a_relative_path_even_where_it_exists(
    tls: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    key: str,
    line: str,
) -> None:
    """Read from the working directory, a relative path passes by hand and fails under systemd (cwd /)."""
    for name in ("state", "secrets", "keys"):
        (tmp_path / name).mkdir()
    shutil.copy(tls / "ca.pem", tmp_path / "ca.pem")
    for name in ("secrets/pw", "device.pem", "keys/device.key", "face.jpg"):
        (tmp_path / name).write_text("x")
    monkeypatch.chdir(tmp_path)
    code, output = check_config(tmp_path, capsys, line + "\n")
    assert code == EXIT_CONFIG, output
    assert f"'{key}': " in output and "is a relative path" in output and "give an absolute path" in output


def test_a_credential_may_be_a_bare_name_read_from_the_credentials_directory(
    tls: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "mqtt-password").write_text("secret\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    code, output = check_config(
        tmp_path, capsys, '[mqtt]\nusername = "door"\npassword_file = "mqtt-password"\n'
    )
    assert code == EXIT_OK, output
    assert load_config(tmp_path / "agent.toml").mqtt.password() == "secret"


DOOR = '[[cameras]]\nname = "c"\nsource = "0"\n[[doors]]\nname = "d"\ncamera = "c"\n'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[runtime]\ndevice = "BOGUS"\n',
            "'runtime.device': 'BOGUS' is not an OpenVINO device name: use CPU",
        ),
        ('[runtime]\ndevice = ""\n', "'runtime.device': '' is not an OpenVINO device name"),
        ('[runtime]\ndevice = "cpu"\n', "(upper case;"),
        ('[runtime]\ndevice = "HETERO:"\n', "'runtime.device': 'HETERO:' is not"),
        ('[runtime]\ndevice = "MULTI:GPU,BOGUS"\n', "'runtime.device': 'MULTI:GPU,BOGUS' is not"),
        (
            "[quality]\nmin_face_px = 1e12\n",
            "'quality.min_face_px': Input should be less than or equal to 4096",
        ),
        ("[quality]\nmin_sharpness = inf\n", "'quality.min_sharpness': Input should be less than or equal"),
        (DOOR + 'allow_people = ["a b"]\n', "'doors.0.allow_people': person id 'a b' is not valid"),
        (DOOR + 'allow_people = [""]\n', "'doors.0.allow_people': person id '' is not valid"),
        (DOOR + 'allow_groups = ["staff", ""]\n', "'doors.0.allow_groups': group '' is not valid"),
        (DOOR + 'command = [""]\n', "'doors.0.command': the program '' must be an absolute path or a name"),
        (DOOR + 'command = ["./open-door.sh"]\n', "the program './open-door.sh' must be an absolute path"),
        ('[mqtt]\nhost = "tcp://broker:1883"\n', "'mqtt.host': 'tcp://broker:1883' is not a host name"),
        ('[mqtt]\nhost = "broker:1883"\n', "'mqtt.host': 'broker:1883' is not a host name or address"),
        ('[mqtt]\nhost = "broker example"\n', "'mqtt.host': 'broker example' is not a host name"),
        ('[mqtt]\nhost = "[broker]"\n', "'mqtt.host': '[broker]' is not a host name"),
        (
            '[[cameras]]\nname = "c"\nsource = "clips/door.mp4"\n',
            "'cameras.0.source': 'clips/door.mp4' is a relative path, which would be read from the working",
        ),
        (
            '[mqtt]\nusername = "d"\npassword_file = "/dev/zero"\n',
            "mqtt.password_file /dev/zero: cannot read (not a regular file)",
        ),
        ('[models]\nsmoke_photo = "/dev/zero"\n', "models.smoke_photo /dev/zero: cannot read (not a regular"),
        (
            '[models]\nsmoke_photo = "/nonexistent/face.jpg"\n',
            "models.smoke_photo /nonexistent/face.jpg: no such",
        ),
    ],
)
def test_check_config_refuses_values_run_can_never_use(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str
) -> None:
    """A device name OpenVINO cannot parse, a quality minimum no face reaches, door ids outside the id rule,
    an empty or relative door program, a URL as the broker host, a missing smoke photo."""
    code, output = check_config(tmp_path, capsys, text)
    assert (code, expected in output) == (EXIT_CONFIG, True), output


@pytest.mark.parametrize(
    "text",
    [
        *(
            f'[runtime]\ndevice = "{device}"\n'
            for device in (
                "CPU",
                "GPU",
                "GPU.1",
                "NPU",
                "MYRIAD",
                "AUTO",
                "AUTO:GPU,CPU",
                "AUTO:-CPU",
                "HETERO:GPU,CPU",
                "MULTI:GPU.0,GPU.1",
                "BATCH:GPU(4)",
            )
        ),
        '[mqtt]\nhost = "broker.example"\n',
        '[mqtt]\nhost = "192.0.2.7"\n',
        '[mqtt]\nhost = "::1"\n',
        '[mqtt]\nhost = "[::1]"\n',
        '[[cameras]]\nname = "c"\nsource = "rtsp://camera.example/stream"\n',
        '[[cameras]]\nname = "c"\nsource = "/dev/video0"\n',
        DOOR + 'allow_people = ["alice", "bob.smith@site"]\nallow_groups = ["staff"]\n',
        DOOR + 'command = ["gpioset", "gpiochip0", "17=1"]\n',
        DOOR + 'command = ["/usr/local/bin/open-door"]\n',
    ],
)
def test_check_config_accepts_the_forms_run_can_use(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str
) -> None:
    code, output = check_config(tmp_path, capsys, text)
    assert code == EXIT_OK, output


@pytest.mark.parametrize("mode", [0o644, 0o604, 0o660, 0o666])
@pytest.mark.parametrize("section", ["mqtt", "server"])
def test_check_config_refuses_a_key_other_users_can_read_or_change(
    tls: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], section: str, mode: int
) -> None:
    key = tmp_path / "device.key"
    shutil.copy(tls / "devices/door-1.key", key)
    key.chmod(mode)
    device = tls / "devices"
    text = (mqtt_tls if section == "mqtt" else server_tls)(tls / "ca.pem", device / "door-1.pem", key)
    code, output = check_config(tmp_path, capsys, 'device_id = "door-1"\n' + text)
    assert code == EXIT_CONFIG, output
    assert f"{section}.key_file {key}: mode {mode:04o}" in output and f"chmod 600 {key}" in output


def test_check_config_refuses_a_password_file_other_users_can_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    password = tmp_path / "mqtt-password"
    password.write_text("secret\n")
    password.chmod(0o644)
    text = f'[mqtt]\nusername = "door"\npassword_file = "{password}"\n'
    code, output = check_config(tmp_path, capsys, text)
    assert code == EXIT_CONFIG, output
    assert f"mqtt.password_file {password}: mode 0644" in output and "chmod 600" in output
    password.chmod(0o640)  # root-owned in the service's group
    assert check_config(tmp_path, capsys, text)[0] == EXIT_OK

    groups = {group.gr_gid: group_users(group.gr_gid) for group in grp.getgrall()}
    own = next(gid for gid, users in groups.items() if len(users) == 1)  # a service user's group
    os.chown(password, 0, own)
    assert check_config(tmp_path, capsys, text)[0] == EXIT_OK
    shared = next(gid for gid, users in groups.items() if len(users) > 1)  # e.g. nogroup, users
    os.chown(password, 0, shared)
    code, output = check_config(tmp_path, capsys, text)
    assert code == EXIT_CONFIG, output
    readers = groups[shared]
    assert f"lets the {len(readers)} users of its group ({', '.join(readers[:5])}" in output


def test_secrets_in_the_credentials_directory_are_systemds_and_not_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "mqtt-password").write_text("secret\n")
    (credentials / "mqtt-password").chmod(0o644)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    code, output = check_config(tmp_path, capsys, '[mqtt]\nusername = "d"\npassword_file = "mqtt-password"\n')
    assert code == EXIT_OK, output


def test_a_rule_across_keys_is_told_by_its_message_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without an empty key or a dump of the whole file's values."""
    text = '[mqtt]\nhost = "broker.example"\n[[doors]]\nname = "front"\ncamera = "cam0"\n'
    code, output = check_config(tmp_path, capsys, text)
    assert code == EXIT_CONFIG, output
    assert "door 'front' watches camera 'cam0', which is not configured" in output
    assert "'':" not in output and "broker.example" not in output and "Value error" not in output


def test_check_config_accepts_cosine_thresholds_per_model_and_plain_topics(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = "[matching.thresholds]\n'sface@2021dec' = 0.4\n"
    text += "[matching.door_thresholds]\n'sface@2021dec-int8' = 0.51\n"
    text += '[mqtt]\nprefix = "site/door-1/"\ndiscovery_prefix = "ha"\n'
    code, output = check_config(tmp_path, capsys, text)
    assert code == EXIT_OK, output


def test_decision_thresholds_are_the_matching_one_then_each_doors(tmp_path: Path) -> None:
    """What a faster precision of an embedding model must not change: the agent's matching threshold for
    the model and every door's (each once)."""
    path = tmp_path / "agent.toml"
    text = "[matching.thresholds]\n'sface@2021dec' = 0.4\n"
    text += '[[cameras]]\nname = "front"\nsource = "0"\n'
    for door, own in (("front", ""), ("lab", "threshold = 0.55\n"), ("store", "threshold = 0.55\n")):
        text += f'[[doors]]\nname = "{door}"\ncamera = "front"\n{own}'
    path.write_text(text)
    config = load_config(path)
    assert config.decision_thresholds("sface@2021dec") == (0.4, 0.5, 0.55)
    assert config.decision_thresholds("arcface@r1") == (0.363, 0.5, 0.55)
    assert AgentConfig().decision_thresholds("sface@2021dec") == (0.363,)


def model_keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    """Every key of a config model, sections as 'section.key', tables of arrays as 'doors.key'."""
    keys: set[str] = set()
    for name, field in model.model_fields.items():
        kind = field.annotation
        inner = typing.get_args(kind)[0] if typing.get_origin(kind) is list else kind
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            keys |= model_keys(inner, f"{prefix}{name}.")
        else:
            keys.add(prefix + name)
    return keys


def test_the_readmes_config_block_lists_every_key_with_its_default() -> None:
    block = README.read_text(encoding="utf-8").split("```toml", 1)[1].split("```", 1)[0]
    section, listed = "", set()
    for line in block.splitlines():
        stripped = line.strip().lstrip("# ")
        if stripped.startswith("["):
            name = stripped.split("]")[0].strip("[]")
            listed.add(name)  # a table of values such as [matching.thresholds]
            section = name.split(".")[0] + "."
        for part in stripped.split(" / "):  # '# cert_file = "…" / key_file = "…"'
            if re.match(r"^\w+ = ", part):
                listed.add(section + part.split(" ", 1)[0])
    assert sorted(model_keys(AgentConfig) - listed) == []
    documented = AgentConfig.model_validate(tomllib.loads(block))
    defaults = AgentConfig()
    for name in AgentConfig.model_fields.keys() - {"cameras", "doors"}:
        assert getattr(documented, name) == getattr(defaults, name), name
    # a camera or door has no default for the keys it must name; every other value shown is the default
    [camera], [door] = documented.cameras, documented.doors
    assert camera == CameraConfig(name=camera.name, source=camera.source)
    assert door == DoorConfig(name=door.name, camera=door.camera)


def test_a_config_path_that_never_ends_or_is_a_folder_is_refused_without_reading_it_whole(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def at_most_2_gib() -> None:  # read whole, /dev/zero would take all memory: MemoryError instead
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    command = [sys.executable, "-m", "facefleet.agent.cli", "check-config", "/dev/zero"]
    done = subprocess.run(command, preexec_fn=at_most_2_gib, capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout) == (EXIT_CONFIG, "")
    assert done.stderr == "facefleet-agent: error: config file /dev/zero is larger than 1024 KiB\n"
    assert main(["check-config", str(tmp_path)]) == EXIT_CONFIG
    assert "is a directory; give the path of the TOML file" in capsys.readouterr().err


def test_a_threshold_written_into_the_config_keeps_its_mode_owner_and_link(tmp_path: Path) -> None:
    real = tmp_path / "etc" / "agent.toml"
    real.parent.mkdir()
    real.write_text('device_id = "door-1"\n')
    real.chmod(0o640)
    os.chown(real, 0, 1)  # root:daemon, read by the service's group
    link = tmp_path / "agent.toml"
    link.symlink_to(real)

    write_threshold(link, "sface@2021dec", 0.41)

    assert link.is_symlink() and link.resolve() == real
    found = real.stat()
    assert (stat.S_IMODE(found.st_mode), found.st_uid, found.st_gid) == (0o640, 0, 1)
    assert load_config(real).matching.thresholds == {"sface@2021dec": pytest.approx(0.41)}
    assert load_config(real).device_id == "door-1"
    assert [p.name for p in real.parent.iterdir()] == ["agent.toml"]  # nothing left beside it


def test_an_ipv6_broker_in_brackets_and_a_camera_under_home_are_taken_as_the_connection_needs_them(
    tmp_path: Path,
) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('[mqtt]\nhost = "[::1]"\n[[cameras]]\nname = "c"\nsource = "~/clips/door.mp4"\n')
    config = load_config(path)
    assert config.mqtt.host == "::1"  # paho resolves "[::1]" as a host name, and fails
    assert config.cameras[0].source == str(Path.home() / "clips/door.mp4")
