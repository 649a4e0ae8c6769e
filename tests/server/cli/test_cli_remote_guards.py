"""What the remote command line does with ids, proxies and answers it cannot trust: an id is one path
segment or refused, the token never goes to a proxy, and an answer that is not the HTTP API's (not JSON, of
the wrong shape, holding ids that would name files outside --save, too slow to end) is a clear error."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from facefleet.core.errors import EXIT_CONFIG, EXIT_DATA, EXIT_OK, EXIT_UNAVAILABLE
from facefleet.link.checks import utc_now
from facefleet.link.events import Event
from facefleet.link.gallery import Person
from facefleet.server.cli.remote import RemoteServer, RemoteSettings, UnreachableError, api_path
from facefleet.server.errors import EXIT_NO_PERMISSION
from facefleet.server.gallery.embedder import Enroller
from tests.server.cli.test_cli import run_cli
from tests.server.cli.test_cli_guards import MARKUP_NAME
from tests.server.cli.test_cli_remote import remote, token_file
from tests.server.conftest import Pki, run, serving

Answer = Callable[[BaseHTTPRequestHandler, threading.Event], None]


@dataclass
class FakeApi:
    """A plain-HTTP server on 127.0.0.1 (the command line allows http to this machine) answering each path
    as `answers` says, and recording every request line it is sent."""

    answers: dict[str, Answer]
    requests: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def json_answer(data: object, content_type: str = "application/json") -> Answer:
    def answer(handler: BaseHTTPRequestHandler, stop: threading.Event) -> None:
        body = data if isinstance(data, bytes) else json.dumps(data).encode()
        handler.send_response(200)
        handler.send_header("content-type", content_type)
        handler.send_header("content-length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return answer


def dribble(handler: BaseHTTPRequestHandler, stop: threading.Event) -> None:
    """An answer that never ends: a byte of its status line now and then."""
    for byte in b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n" * 100:
        if stop.wait(0.2):
            return
        handler.wfile.write(bytes([byte]))
        handler.wfile.flush()


def silence(handler: BaseHTTPRequestHandler, stop: threading.Event) -> None:
    """No answer at all, until the test ends."""
    stop.wait()


@pytest.fixture
def fake_api() -> Iterator[Callable[[dict[str, Answer]], FakeApi]]:
    servers: list[tuple[ThreadingHTTPServer, FakeApi]] = []

    def start(answers: dict[str, Answer]) -> FakeApi:
        api = FakeApi(answers)

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                api.requests.append(f"{self.command} {self.path}")
                length = int(self.headers.get("content-length") or 0)
                self.rfile.read(length)
                path = self.path.split("?")[0]
                if path in api.answers:
                    api.answers[path](self, api.stop)
                else:
                    self.send_error(404)

            do_GET = do_POST = do_PATCH = do_DELETE = _answer  # noqa: N815 - http.server names them

            def log_message(self, format: str, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        api.port = server.server_address[1]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append((server, api))
        return api

    yield start
    for server, api in servers:
        api.stop.set()
        server.shutdown()
        server.server_close()


def remote_options(api: FakeApi, tmp_path: Path) -> list[str]:
    return [
        "--state-dir",
        str(tmp_path / "not-used"),
        "--server",
        api.url,
        "--token-file",
        str(token_file(tmp_path, "ff1.fake.token")),
    ]


def test_an_id_is_one_path_segment_or_refused_before_any_call(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fake_api: Callable[[dict[str, Answer]], FakeApi]
) -> None:
    assert api_path("devices", "door-1/revoke?", "disable") == "/devices/door-1%2Frevoke%3F/disable"
    assert api_path("models", "sface@2021dec", "retire") == "/models/sface%402021dec/retire"
    assert api_path("people", "..") == "/people/.."  # check_id refuses such ids before any call
    api = fake_api({})
    base = remote_options(api, tmp_path)
    for argv in (
        ("devices", "disable", "door-1/revoke?"),
        ("devices", "revoke", "../devices/door-2", "--wipe"),
        ("people", "delete", "alice/../bob"),
        ("people", "show", "alice?include_embeddings=true"),
        ("people", "update", "a#b", "--name", "x"),
        ("unknown", "dismiss", "c1/../c2", "--version", "v"),
        ("unknown", "enroll", "c1", "--version", "v", "--person-id", "p/../q"),
        ("models", "retire", "x@1/../y@2"),
    ):
        code, _, err = run_cli(capsys, *base, *argv)
        assert code == EXIT_DATA, (argv, err)
        assert "is not valid" in err, (argv, err)
    assert api.requests == []


def test_the_token_never_goes_to_a_proxy_of_the_environment(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    fake_api: Callable[[dict[str, Answer]], FakeApi],
) -> None:
    api = fake_api({"/api/devices": json_answer({"devices": []})})
    proxy = socket.create_server(("127.0.0.1", 0))
    heard: list[bytes] = []

    def listen() -> None:  # take what a client sends the proxy, and close: the call then fails at once
        while True:
            try:
                connection, _ = proxy.accept()
            except OSError:
                return
            with connection:
                connection.settimeout(5)
                try:
                    heard.append(connection.recv(65536))
                except OSError:
                    heard.append(b"")

    threading.Thread(target=listen, daemon=True).start()
    proxy_url = f"http://127.0.0.1:{proxy.getsockname()[1]}"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(name, proxy_url)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    try:
        code, out, err = run_cli(capsys, *remote_options(api, tmp_path), "devices", "list", "--json")
    finally:
        proxy.close()
    assert (code, json.loads(out) if out else None) == (0, []), err
    assert heard == []
    assert api.requests == ["GET /api/devices"]


def test_an_answer_that_is_not_the_apis_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fake_api: Callable[[dict[str, Answer]], FakeApi]
) -> None:
    api = fake_api(
        {
            "/api/people": json_answer(b"<html>Sign in to the guest network</html>", "text/html"),
            "/api/devices": json_answer({"items": []}),
            "/api/audit": json_answer(b"{not json", "application/json"),
        }
    )
    base = remote_options(api, tmp_path)
    code, out, err = run_cli(capsys, *base, "people", "list")
    assert (code, out) == (EXIT_UNAVAILABLE, "")
    assert "answered GET /people with text/html, not the JSON of FaceFleet's HTTP API" in err
    assert "Traceback" not in err
    code, out, err = run_cli(capsys, *base, "devices", "list")
    assert (code, out) == (EXIT_UNAVAILABLE, "")
    assert "lacks what FaceFleet's HTTP API returns (KeyError: 'devices')" in err
    code, _, err = run_cli(capsys, *base, "audit", "list")
    assert code == EXIT_UNAVAILABLE
    assert "answered GET /audit with application/json, not the JSON" in err


def test_snapshot_ids_from_the_server_cannot_name_files_outside_the_save_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fake_api: Callable[[dict[str, Answer]], FakeApi]
) -> None:
    cluster = {
        "cluster_id": "c1",
        "version": "v1",
        "snapshots": [{"snapshot_id": "../../planted"}],
    }
    api = fake_api(
        {
            "/api/unknown/clusters/c1": json_answer(cluster),
            "/api/snapshots/..%2F..%2Fplanted/crop": json_answer(b"\xff\xd8 not a face", "image/jpeg"),
        }
    )
    saved = tmp_path / "a" / "b" / "crops"
    code, _, err = run_cli(
        capsys, *remote_options(api, tmp_path), "unknown", "show", "c1", "--save", str(saved)
    )
    assert code == EXIT_UNAVAILABLE
    assert "the server's answer holds a bad snapshot id '../../planted' is not valid" in err
    assert not (tmp_path / "a" / "planted.jpg").exists()
    assert list(saved.iterdir()) == []
    assert api.requests == ["GET /api/unknown/clusters/c1"]


def test_a_call_ends_at_its_deadline_and_says_whether_a_change_may_have_happened(
    fake_api: Callable[[dict[str, Answer]], FakeApi],
) -> None:
    api = fake_api({"/api/people": dribble, "/api/devices/door-1/disable": silence})
    remote = RemoteServer(RemoteSettings(api.url, "ff1.fake.token"), deadline_s=1.0)
    try:
        with pytest.raises(UnreachableError) as dribbled:
            remote.get(("people",))
        assert str(dribbled.value) == (
            f"{api.url} (GET /people): no answer within 1 s; is the server overloaded? try again"
        )
        with pytest.raises(UnreachableError) as silent:
            remote.post(("devices", "door-1", "disable"), {"reason": "", "wipe": False})
        assert str(silent.value) == (
            f"{api.url} (POST /devices/door-1/disable): no answer within 1 s; the change may have been "
            "applied: check with `facefleet-server devices list` before you repeat it"
        )
    finally:
        remote.close()


def test_a_ca_file_that_is_a_directory_is_named_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token = token_file(tmp_path, "ff1.fake.token")
    server = ["--server", "https://fleet.example.org:7445", "--token-file", str(token)]
    code, _, err = run_cli(capsys, *server, "--ca-file", str(tmp_path), "people", "list")
    assert code == EXIT_CONFIG
    assert f"--ca-file {tmp_path}: a directory, not a file" in err
    code, _, err = run_cli(capsys, *server, "--ca-file", str(tmp_path / "nope.pem"), "people", "list")
    assert (code, f"--ca-file {tmp_path / 'nope.pem'}: no such file" in err) == (EXIT_CONFIG, True)


def test_a_real_server_through_the_command_line(
    tmp_path: Path,
    pki: Pki,
    enroller: Enroller,
    photo_paths: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Against a real server: a revoked-looking id changes nothing, stored markup prints as it is, a refused
    photo's reason is said once, an unknown or too weak token exits 77, and a cut event list pages."""

    async def scenario() -> None:
        async with serving(tmp_path, pki, enroller) as harness:
            await harness.registered("door-1")
            base = remote(harness, tmp_path)

            def cli(*argv: str) -> tuple[int, str, str]:
                return run_cli(capsys, *base, *argv)

            code, _, err = await asyncio.to_thread(cli, "devices", "disable", "door-1/revoke?")
            assert (code, "device id 'door-1/revoke?' is not valid" in err) == (EXIT_DATA, True)
            code, out, _ = await asyncio.to_thread(cli, "devices", "list", "--json")
            assert [(d["device_id"], d["status"]) for d in json.loads(out)] == [("door-1", "active")]

            now = utc_now()
            harness.server.state.add_person(Person("eileen", MARKUP_NAME), [], now)
            code, out, err = await asyncio.to_thread(cli, "people", "list")
            assert (code, err, MARKUP_NAME in out) == (EXIT_OK, "", True)

            code, _, err = await asyncio.to_thread(
                cli, "people", "enroll", "crowd", "--image", str(photo_paths["t1"])
            )
            assert code == EXIT_DATA
            assert err.count("faces are good enough") == 1, err

            (tmp_path / "wrong").mkdir()
            wrong = remote(harness, tmp_path / "wrong", "ff1.not.known")
            code, _, err = await asyncio.to_thread(run_cli, capsys, *wrong, "people", "list")
            assert code == EXIT_NO_PERMISSION, err
            (tmp_path / "query").mkdir()
            query_only = remote(harness, tmp_path / "query", harness.query_token)
            code, _, err = await asyncio.to_thread(run_cli, capsys, *query_only, "people", "list")
            assert (code, "needs 'admin'" in err) == (EXIT_NO_PERMISSION, True)

            events = [
                Event(
                    str(uuid.uuid4()), "door-1", now - timedelta(minutes=i), "face", "unknown", camera="hall"
                )
                for i in range(3)
            ]
            harness.server.state.add_events(events)
            code, out, err = await asyncio.to_thread(
                run_cli, capsys, *query_only, "query", "events", "--limit", "2", "--json"
            )
            assert [e["event_id"] for e in json.loads(out)] == [e.event_id for e in events[:2]]
            token = err.split("--page-token ")[1].split(",")[0]
            code, out, err = await asyncio.to_thread(
                run_cli,
                capsys,
                *query_only,
                "query",
                "events",
                "--limit",
                "2",
                "--page-token",
                token,
                "--json",
            )
            assert ([e["event_id"] for e in json.loads(out)], err) == ([events[2].event_id], "")

    run(scenario)
