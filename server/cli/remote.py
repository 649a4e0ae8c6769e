"""The command line against a remote server: its HTTP API (`--server https://host:port`, or
FACEFLEET_SERVER) with a bearer token read from a file (`--token-file`, or FACEFLEET_TOKEN_FILE), trusting
the site CA (`--ca-file`, or FACEFLEET_CA_FILE; default: the system's trusted CAs).

A refusal comes back as an RFC 9457 problem detail whose `code` names the gRPC status of the same error; it
is raised as that domain error (facefleet.server.errors), so a remote verb fails with the same message and
exit code as it would on the server host."""

from __future__ import annotations

import os
import ssl
import stat
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from facefleet.core.errors import EXIT_UNAVAILABLE
from facefleet.core.files import read_small
from facefleet.server.config import is_loopback
from facefleet.server.errors import ServerConfigError, ServerError, error_for_status

SERVER_ENV = "FACEFLEET_SERVER"
TOKEN_FILE_ENV = "FACEFLEET_TOKEN_FILE"  # noqa: S105 - the name of a variable, not a secret
CA_FILE_ENV = "FACEFLEET_CA_FILE"
MAX_TOKEN_FILE_BYTES = 4096
CALL_DEADLINE_S = 120.0
"""Longest wait for a whole call, from connecting to the last byte of the answer (an enrolment's photos
are embedded while it waits). Uploads get longer: see upload_deadline."""
CONNECT_TIMEOUT_S = 15.0
SLOWEST_UPLOAD_BYTES_PER_S = 256 * 1024
"""The slowest link an upload is given time for (2 Mbit/s): 512 MiB, the server's default
models.max_upload_bytes, get 34 minutes on top of CALL_DEADLINE_S."""
CHECK_WITH = {
    "people": "people list",
    "devices": "devices list",
    "unknown": "unknown list",
    "models": "models list",
    "rollouts": "rollout list",
}
"""The verb that shows whether a change whose answer never came was applied, by the API path's first part."""

Segment = str | int
"""One part of an API path: a fixed word, or an id (quoted whole, so that '/' or '?' stay in it)."""


def api_path(*segments: Segment) -> str:
    """The API path of its parts, each percent-quoted whole: an id cannot end the path early, add a query or
    reach another resource. api_path("devices", "door-1", "disable") == "/devices/door-1/disable"."""
    return "".join("/" + quote(str(segment), safe="") for segment in segments)


def upload_deadline(n_bytes: int, work_s: float = 0.0) -> float:
    """The deadline of a call that uploads n_bytes and whose answer waits for work_s of server work (a
    model's conversion) besides."""
    return CALL_DEADLINE_S + n_bytes / SLOWEST_UPLOAD_BYTES_PER_S + work_s


class UnreachableError(ServerError):
    """The remote server cannot be reached, or its TLS certificate is not trusted, or no answer came in
    time."""

    status = "UNAVAILABLE"
    exit_code = EXIT_UNAVAILABLE


class NotTheApiError(UnreachableError):
    """An answer that is not the FaceFleet HTTP API's (a sign-in page of a network in the way, another
    service, a server of another version)."""


@dataclass(frozen=True)
class RemoteSettings:
    """Where the server's HTTP API is and how to call it."""

    url: str
    token: str
    ca_file: Path | None = None

    @classmethod
    def from_options(
        cls,
        server: str | None,
        token_file: Path | None,
        ca_file: Path | None,
        env: Mapping[str, str] = os.environ,
    ) -> RemoteSettings | None:
        """The settings the options (else the environment) give; None when no server is named."""
        url = server or env.get(SERVER_ENV, "")
        if not url:
            return None
        parts = urlsplit(url)
        if parts.scheme not in ("https", "http") or not parts.hostname or parts.path not in ("", "/"):
            raise ServerConfigError(
                f"--server {url!r}: give the server's HTTP API as https://host:port (its listen.http)"
            )
        if parts.scheme == "http" and not is_loopback(parts.hostname):
            raise ServerConfigError(
                f"--server {url!r}: plain http would send the token in clear text; give https://… "
                "(http only reaches a server on this machine, e.g. http://127.0.0.1:7445)"
            )
        token_path = token_file or (Path(env[TOKEN_FILE_ENV]) if env.get(TOKEN_FILE_ENV) else None)
        if token_path is None:
            raise ServerConfigError(
                f"--server needs --token-file (or {TOKEN_FILE_ENV}): a file holding an operator token from "
                "`facefleet-server tokens create NAME --role admin|query`"
            )
        ca = ca_file or (Path(env[CA_FILE_ENV]) if env.get(CA_FILE_ENV) else None)
        if ca is not None and not ca.is_file():
            problem = "a directory, not a file" if ca.is_dir() else "no such file"
            raise ServerConfigError(f"--ca-file {ca}: {problem} (the site CA is the server's tls/ca.pem)")
        return cls(url.rstrip("/"), _read_token(token_path), ca)


def _read_token(path: Path) -> str:
    try:
        info = path.stat()
    except OSError as exc:
        raise ServerConfigError(f"--token-file {path}: cannot read it ({exc.strerror})") from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ServerConfigError(f"--token-file {path}: others may read it; chmod 600 {path}")
    try:
        token = read_small(path, MAX_TOKEN_FILE_BYTES).decode("utf-8").strip()
    except OSError as exc:
        raise ServerConfigError(f"--token-file {path}: not a token file ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise ServerConfigError(f"--token-file {path}: not a token file (not UTF-8 text)") from None
    if not token or any(ch.isspace() for ch in token):
        raise ServerConfigError(f"--token-file {path}: it must hold one token (ff1.…) and nothing else")
    return token


class RemoteServer:
    """Calls on the server's HTTP API under /api; JSON in, JSON out. The environment's proxy settings
    ($HTTPS_PROXY, $HTTP_PROXY, $ALL_PROXY, .netrc) are ignored: the token goes to the server alone."""

    def __init__(self, settings: RemoteSettings, deadline_s: float = CALL_DEADLINE_S) -> None:
        self.settings = settings
        self.deadline_s = deadline_s
        verify: Any = True
        if settings.ca_file is not None:
            try:
                verify = ssl.create_default_context(cafile=settings.ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise ServerConfigError(
                    f"--ca-file {settings.ca_file}: not a PEM CA certificate ({exc})"
                ) from None
        self._client = httpx.Client(
            base_url=settings.url + "/api",
            headers={"authorization": f"Bearer {settings.token}", "accept": "application/json"},
            verify=verify,
            trust_env=False,
        )

    def close(self) -> None:
        self._client.close()

    def get(self, path: tuple[Segment, ...], params: Mapping[str, Any] | None = None) -> Any:
        return self._json(self._call("GET", path, params=_params(params)), "GET", path)

    def image(self, path: tuple[Segment, ...]) -> bytes:
        return self._call("GET", path).content

    def post(
        self, path: tuple[Segment, ...], body: Any = None, *, deadline_s: float | None = None, **kwargs: Any
    ) -> Any:
        """POST a JSON body, or with data= and files= a multipart form; deadline_s: for an upload, longer
        than CALL_DEADLINE_S (upload_deadline)."""
        return self._json(self._call("POST", path, deadline_s, json=body, **kwargs), "POST", path)

    def patch(self, path: tuple[Segment, ...], body: Any) -> Any:
        return self._json(self._call("PATCH", path, json=body), "PATCH", path)

    def delete(self, path: tuple[Segment, ...]) -> Any:
        return self._json(self._call("DELETE", path), "DELETE", path)

    def _call(
        self, method: str, path: tuple[Segment, ...], deadline_s: float | None = None, **kwargs: Any
    ) -> httpx.Response:
        """The answer, or an error; the whole call, answer included, ends within deadline_s (a server that
        answers a byte at a time cannot hold the command)."""
        seconds = deadline_s or self.deadline_s
        url = api_path(*path)
        timeout = httpx.Timeout(seconds, connect=min(CONNECT_TIMEOUT_S, seconds))
        outcome: list[httpx.Response | BaseException] = []

        def request() -> None:
            try:
                outcome.append(self._client.request(method, url, timeout=timeout, **kwargs))
            except BaseException as exc:  # handed to the waiting thread
                outcome.append(exc)

        worker = threading.Thread(target=request, name="facefleet-remote-call", daemon=True)
        worker.start()
        worker.join(seconds)
        if not outcome:  # the thread is left to the closing client and the process's end
            raise self._no_answer(method, path, f"no answer within {seconds:.0f} s")
        result = outcome[0]
        if isinstance(result, httpx.Response):
            if result.is_success:
                return result
            raise _refusal(result)
        if isinstance(result, httpx.ConnectError | httpx.ConnectTimeout | httpx.UnsupportedProtocol):
            raise UnreachableError(
                f"cannot reach {self.settings.url} ({result}); check --server, and --ca-file for its "
                "certificate"
            ) from None
        if isinstance(result, httpx.TimeoutException):
            raise self._no_answer(method, path, f"no answer within {seconds:.0f} s") from None
        if isinstance(result, httpx.HTTPError):
            raise self._no_answer(
                method, path, f"the connection failed before the answer ({result})"
            ) from None
        raise result

    def _no_answer(self, method: str, path: tuple[Segment, ...], what: str) -> UnreachableError:
        """The error of a call whose answer never came: a change may have been applied all the same."""
        where = f"{self.settings.url} ({method} {api_path(*path)})"
        if method == "GET":
            return UnreachableError(f"{where}: {what}; is the server overloaded? try again")
        verb = CHECK_WITH.get(str(path[0]), "audit list --since 1h")
        return UnreachableError(
            f"{where}: {what}; the change may have been applied: check with `facefleet-server {verb}` "
            "before you repeat it"
        )

    def _json(self, response: httpx.Response, method: str, path: tuple[Segment, ...]) -> Any:
        """The answer's JSON (None for an empty one); NotTheApiError for an answer that is not JSON."""
        if not response.content:
            return None
        kind = response.headers.get("content-type", "").split(";")[0].strip() or "no content-type"
        try:
            if kind != "application/json":
                raise ValueError(kind)
            return response.json()
        except ValueError:
            raise NotTheApiError(
                f"{self.settings.url} answered {method} {api_path(*path)} with {kind}, not the JSON of "
                "FaceFleet's HTTP API: check that --server names the server's listen.http (a sign-in page or "
                "proxy of the network may be answering instead)"
            ) from None


def _refusal(response: httpx.Response) -> ServerError:
    try:
        problem = response.json()
        code, detail = str(problem.get("code", "")), str(problem.get("detail") or problem.get("title") or "")
        extra = [
            f"{i.get('filename') or i.get('index')}: {i.get('reason')}"
            for i in problem.get("images", [])
            if str(i.get("reason")) not in detail  # the detail names most refused images already
        ]
    except (ValueError, AttributeError, TypeError):
        code, detail, extra = "", response.text[:200], []
    error = error_for_status(code)
    message = detail or f"HTTP {response.status_code}"
    return error("; ".join([message, *extra]) if extra else message)


def _params(params: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Query parameters without the empty ones."""
    if params is None:
        return None
    return {k: v for k, v in params.items() if v not in ("", None, [], ())}
