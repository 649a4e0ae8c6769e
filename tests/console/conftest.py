"""Web console fixtures: the whole system running for real, and Debian's Chromium driven by Playwright.

`server` (one per module): a real server (TLS on port 0, real SQLite) on an event loop of its own thread,
with an HTTP client holding the admin token for setting things up and checking the server's side. `fleet`
(one per module, on that server): a real agent (OpenVINO, AgentService on a thread) whose one camera loops a
video file that the tests swap to show a person, a stranger or nobody, and real mosquitto with a subscriber
to the agent's events.

`browser` (one per module): Chromium from apt (`/usr/bin/chromium`, never a Playwright download), headless,
trusting exactly the server's key (its SPKI pin); Playwright's own request client (page.request) trusts the
site CA. `consoles` (one per test) opens fresh browser contexts on /console/; every console error, uncaught
page error and Content-Security-Policy violation in them fails the test, unless the test said it expects it.

Playwright's sync API runs in the test's thread, which has no event loop of its own (the server's loop runs
on another thread), so tests are plain sync functions as everywhere else here."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import re
import shutil
import ssl
import threading
import time
from collections.abc import Callable, Coroutine, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np
import numpy.typing as npt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Locator,
    Page,
    Response,
    expect,
    sync_playwright,
)

from facefleet.agent.config import AgentConfig
from facefleet.agent.service.loop import AgentService
from facefleet.server.gallery.embedder import Enroller
from facefleet.vision.models.store import ModelStore
from tests.agent.conftest import Subscriber
from tests.agent.test_service import stranger
from tests.mosquitto import Mosquitto
from tests.server import conftest as server_fixtures
from tests.server.conftest import Harness, Pki, serving
from tests.videos import write_video

# The server fixtures this folder needs, shared with tests/server (a conftest sees only its own folder's).
pki = server_fixtures.pki
enroller = server_fixtures.enroller
model_irs = server_fixtures.model_irs
fer_tflite = server_fixtures.fer_tflite
sface_onnx = server_fixtures.sface_onnx

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]
OUTPUT = REPO / "test-output" / "console"
"""Screenshots of the console's pages (and of any page open when a test failed); ignored by git."""
CHROMIUM = shutil.which("chromium")
DEVICE = "door-1"
CAMERA = "door"
DOOR = "front"
PREFIX = f"facefleet/{DEVICE}/"
FPS = 8
NAV = ("Fleet", "Activity", "People", "Unknown faces", "Rollouts", "Doors")
ADMIN_ONLY = ("People", "Unknown faces", "Rollouts")


def until(check: Callable[[], T], timeout: float = 30.0, what: str = "condition", every: float = 0.2) -> T:
    """Poll `check` until it returns something truthy; the timeout only guards against a hung test."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout} s")
        time.sleep(every)


class ServerLoop:
    """An asyncio event loop on a thread of its own, for the server; the test's thread hands it coroutines."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="server-loop", daemon=True)
        self.thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 120.0) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        async def cancel_the_rest() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.loop.shutdown_asyncgens()

        with contextlib.suppress(Exception):
            self.run(cancel_the_rest(), timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
        self.loop.close()


def clip(face: npt.NDArray[np.uint8] | None, like: npt.NDArray[np.uint8]) -> list[npt.NDArray[np.uint8]]:
    """One second of `face`, then two of nothing: each loop is a new visit, since the agent's tracker ends a
    track (and reports its snapshot) after 10 frames without the face. Or three seconds of nothing."""
    blank = np.full_like(like, 40)
    return [face if face is not None else blank] * FPS + [blank] * (2 * FPS)


@dataclass
class Server:
    """A running server and the admin's HTTP client of its API (for setting up and checking)."""

    harness: Harness
    loop: ServerLoop
    api: httpx.Client

    @property
    def url(self) -> str:
        return self.harness.http_url

    def get(self, path: str, **params: Any) -> Any:
        """The admin's GET of an API path, as JSON."""
        response = self.api.get(path, params=params)
        assert response.status_code == 200, response.text
        return response.json()

    def agent_row(self) -> dict[str, Any] | None:
        return next((a for a in self.get("/api/fleet")["agents"] if a["device_id"] == DEVICE), None)

    def events(self, **params: Any) -> list[dict[str, Any]]:
        return list(self.get("/api/events", page_size=1000, **params)["events"])


@dataclass
class Fleet(Server):
    """The server with an agent and a broker; `show` changes what the agent's camera sees."""

    agent: AgentService
    watcher: Subscriber
    video: Path
    faces: dict[str, npt.NDArray[np.uint8]]

    def show(self, who: str | None) -> None:
        """From the video's next loop on, the camera sees `who` (a key of faces), or nobody. The camera
        reopens its file at each loop, so the video is swapped under it by a rename."""
        face = None if who is None else self.faces[who]
        like = face if face is not None else next(iter(self.faces.values()))
        swapped = write_video(self.video.with_name("next.avi"), clip(face, like), fps=FPS)
        os.replace(swapped, self.video)

    def face_events_on_mqtt(self) -> list[dict[str, Any]]:
        return [p for p in self.watcher.on(PREFIX + "events/face") if isinstance(p, dict)]


def spki_pin(certificate: Path) -> str:
    """base64(sha256(SubjectPublicKeyInfo)) of a PEM certificate, as Chromium's
    --ignore-certificate-errors-spki-list wants it: that one key is trusted, no other certificate error is
    ignored."""
    cert = x509.load_pem_x509_certificate(certificate.read_bytes())
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def agent_settings(harness: Harness, video: Path, broker: Mosquitto) -> AgentConfig:
    """door-1 reporting to the harness's server what its camera sees, publishing on the broker, with a
    door for the group "staff" on that camera."""
    return AgentConfig.model_validate(
        {
            "device_id": DEVICE,
            "mqtt": {"host": "127.0.0.1", "port": broker.port, "reconnect_max_s": 1},
            "service": {"status_interval_s": 1},
            "server": harness.agent_server_section(DEVICE, reconnect_max_s=1),
            "cameras": [{"name": CAMERA, "source": str(video), "max_fps": FPS, "loop": True}],
            "doors": [{"name": DOOR, "camera": CAMERA, "allow_groups": ["staff"], "min_frames": 3}],
        }
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, pki: Pki, enroller: Enroller) -> Iterator[Server]:
    """The server (TLS, real SQLite) on its own thread's event loop."""
    root = tmp_path_factory.mktemp("console-server")
    loop = ServerLoop()
    with contextlib.ExitStack() as stack:
        stack.callback(loop.close)
        serve = serving(root, pki, enroller, gallery={"heartbeat_seconds": 1}, fleet={"poll_seconds": 0.5})
        harness = loop.run(serve.__aenter__())
        stack.callback(lambda: loop.run(serve.__aexit__(None, None, None)))
        verify = ssl.create_default_context(cafile=str(pki.tls_dir / "ca.pem"))
        admin = {"Authorization": f"Bearer {harness.admin_token}"}
        api = stack.enter_context(
            httpx.Client(base_url=harness.http_url, headers=admin, verify=verify, timeout=60)
        )
        yield Server(harness, loop, api)


@pytest.fixture(scope="module")
def fleet(
    server: Server,
    tmp_path_factory: pytest.TempPathFactory,
    pki: Pki,
    model_store: ModelStore,
    model_cache: Path,
    astronaut: npt.NDArray[np.uint8],
    group_photo: npt.NDArray[np.uint8],
) -> Iterator[Fleet]:
    """The server with door-1 running (AgentService on a thread) and mosquitto; the camera sees nobody."""
    root = tmp_path_factory.mktemp("console-agent")
    state = root / "agent-state"
    shutil.copytree(model_store.root, state / "models")  # its own copy: rollouts change what is active
    (state / "cache").symlink_to(model_cache, target_is_directory=True)
    faces = {"astronaut": np.ascontiguousarray(astronaut[:, ::-1]), "stranger": stranger(group_photo)}
    video = write_video(root / "door.avi", clip(None, faces["astronaut"]), fps=FPS)
    (root / "mqtt").mkdir()
    broker = Mosquitto(root / "mqtt").start()
    with contextlib.ExitStack() as stack:
        stack.callback(broker.stop)
        watcher = Subscriber(broker.port, PREFIX + "events/#", client_id="console-watcher")
        stack.callback(watcher.close)
        agent = AgentService(agent_settings(server.harness, video, broker), state)
        runner = threading.Thread(target=agent.run, name="agent")
        runner.start()
        stack.callback(runner.join, 30)
        stack.callback(agent.stop_event.set)
        running = Fleet(server.harness, server.loop, server.api, agent, watcher, video, faces)
        until(
            lambda: (row := running.agent_row()) is not None and row["online"] and row["watching"],
            timeout=60,
            what="the agent online on the server",
        )
        yield running


@pytest.fixture(scope="module")
def browser(pki: Pki) -> Iterator[Browser]:
    """Headless Chromium from apt. Playwright's driver (Node) gets the site CA for page.request."""
    assert CHROMIUM, "chromium (the Debian package) is installed by scripts/setup"
    for stale in OUTPUT.glob("failed-*.png"):  # of an earlier run; the pages' own are overwritten
        stale.unlink()
    before = os.environ.get("NODE_EXTRA_CA_CERTS")
    os.environ["NODE_EXTRA_CA_CERTS"] = str(pki.tls_dir / "ca.pem")
    try:
        playwright = sync_playwright().start()
    finally:
        if before is None:
            del os.environ["NODE_EXTRA_CA_CERTS"]
        else:
            os.environ["NODE_EXTRA_CA_CERTS"] = before
    try:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",  # the tests run as root
                "--disable-dev-shm-usage",  # containers often have a tiny /dev/shm
                f"--ignore-certificate-errors-spki-list={spki_pin(pki.tls_dir / 'server.pem')}",
            ],
        )
        yield chromium
        chromium.close()
    finally:
        playwright.stop()


CSP_REPORTER = """
document.addEventListener('securitypolicyviolation', (e) => {
  const where = `${e.sourceFile}:${e.lineNumber}`;
  window.__facefleetCsp(`${e.effectiveDirective} blocked ${e.blockedURI || 'inline'} at ${where}`);
});
"""


@dataclass
class Console:
    """One browser context (its own cookies and storage) with one page on the console."""

    context: BrowserContext
    page: Page
    base: str
    problems: list[str]
    expected: list[re.Pattern[str]]

    def open(self, path: str = "/console/") -> Response:
        """Load the console; it shows the sign-in form, or the pages when the session cookie is good. On a
        load without a session the console's probe GET /api/session is answered 401, which the browser
        logs as an error: expected there."""
        with self.expecting(r"status of 401 .*/api/session\)$"):
            response = self.page.goto(self.base + path)
            assert response is not None and response.ok, response
            expect(self.page.get_by_label("Token").or_(self.sign_out_control())).to_be_visible()
            self.page.evaluate("0")  # a round trip, so that the probe's console message has arrived
        return response

    def sign_in(self, token: str) -> None:
        self.page.get_by_label("Token").fill(token)
        self.page.get_by_role("button", name="Sign in").click()
        expect(self.sign_out_control()).to_be_visible()

    def sign_out_control(self) -> Locator:
        return self.page.get_by_role("banner").get_by_role("button", name="Sign out")

    def nav(self) -> Locator:
        return self.page.get_by_role("navigation")

    def nav_link(self, name: str) -> Locator:
        return self.nav().get_by_role("link", name=name, exact=True)

    def go(self, name: str) -> None:
        """Follow a navigation link, and wait until the page is that page (its heading)."""
        self.nav_link(name).click()
        expect(self.page.get_by_role("heading", name=name, exact=True).first).to_be_visible()

    def screenshot(self, name: str) -> Path:
        OUTPUT.mkdir(parents=True, exist_ok=True)
        path = OUTPUT / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def session(self) -> dict[str, Any]:
        """GET /api/session with this context's cookie (the CSRF token is in it)."""
        response = self.page.request.get(self.base + "/api/session")
        assert response.status == 200, response.text()
        body: dict[str, Any] = response.json()
        return body

    def csrf(self) -> str:
        return str(self.session()["csrf_token"])

    @contextlib.contextmanager
    def expecting(self, pattern: str) -> Iterator[None]:
        """Browser console errors matching `pattern` are expected within the block (e.g. the browser's own
        'Failed to load resource … 401' after a refused sign-in)."""
        compiled = re.compile(pattern)
        self.expected.append(compiled)
        try:
            yield
        finally:
            self.expected.remove(compiled)

    def _problem(self, text: str) -> None:
        if not any(p.search(text) for p in self.expected):
            self.problems.append(text)


class Consoles:
    """The browser contexts of one test; what went wrong in any of them is checked after the test."""

    def __init__(self, browser: Browser, server: Server) -> None:
        self.browser = browser
        self.server = server
        self.opened: list[Console] = []

    def new(self) -> Console:
        context = self.browser.new_context(viewport={"width": 1280, "height": 800})
        context.set_default_timeout(15_000)
        console = Console(context, context.new_page(), self.server.url, [], [])
        context.expose_function("__facefleetCsp", lambda text: console.problems.append(f"CSP: {text}"))
        context.add_init_script(CSP_REPORTER)
        console.page.on("console", lambda message: self._console_message(console, message))
        console.page.on("pageerror", lambda error: console.problems.append(f"page error: {error}"))
        self.opened.append(console)
        return console

    def signed_in(self, token: str) -> Console:
        console = self.new()
        console.open()
        console.sign_in(token)
        return console

    @staticmethod
    def _console_message(console: Console, message: ConsoleMessage) -> None:
        if message.type in ("error", "assert"):
            where = message.location.get("url", "")
            console._problem(f"console {message.type}: {message.text} ({where})")
        elif "Content Security Policy" in message.text or "Content-Security-Policy" in message.text:
            console.problems.append(f"console {message.type}: {message.text}")

    def problems(self) -> list[str]:
        return [p for console in self.opened for p in console.problems]

    def screenshots(self, name: str) -> list[Path]:
        shots = []
        for number, console in enumerate(self.opened, 1):
            with contextlib.suppress(Exception):
                OUTPUT.mkdir(parents=True, exist_ok=True)
                path = OUTPUT / f"failed-{name}-{number}.png"
                console.page.screenshot(path=str(path), full_page=True)
                shots.append(path)
        return shots

    def close(self) -> None:
        for console in self.opened:
            with contextlib.suppress(Exception):
                console.context.close()


@pytest.fixture
def consoles(browser: Browser, server: Server) -> Iterator[Consoles]:
    opened = Consoles(browser, server)
    try:
        yield opened
    finally:
        opened.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    """A test that leaves console errors, page errors or CSP violations in its browser fails; a test that
    fails anyway gets them in its report, with screenshots of its pages."""
    opened = getattr(item, "funcargs", {}).get("consoles")
    if not isinstance(opened, Consoles):
        return (yield)
    try:
        result = yield
    except BaseException:
        shots = opened.screenshots(re.sub(r"\W+", "-", item.name))
        found = opened.problems()
        text = "\n".join([*found, *(f"screenshot: {s}" for s in shots)])
        if text:
            item.add_report_section("call", "browser", text)
        raise
    found = opened.problems()
    if found:
        shots = opened.screenshots(re.sub(r"\W+", "-", item.name))
        raise AssertionError(
            "the browser reported problems:\n"
            + "\n".join(found)
            + "".join(f"\nscreenshot: {s}" for s in shots)
        )
    return result


def person_by_name(server: Server, name: str) -> dict[str, Any] | None:
    people = server.get("/api/people")["people"]
    return next((p for p in people if p["display_name"] == name), None)
