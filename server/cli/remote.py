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
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from facefleet.core.errors import EXIT_UNAVAILABLE
from facefleet.server.config import is_loopback
from facefleet.server.errors import ServerConfigError, ServerError, error_for_status

SERVER_ENV = "FACEFLEET_SERVER"
TOKEN_FILE_ENV = "FACEFLEET_TOKEN_FILE"  # noqa: S105 - the name of a variable, not a secret
CA_FILE_ENV = "FACEFLEET_CA_FILE"
MAX_TOKEN_FILE_BYTES = 4096
TIMEOUT_S = 60.0
"""Longest wait for one answer (an enrolment or a model upload is converted while the call waits)."""


class UnreachableError(ServerError):
    """The remote server cannot be reached, or its TLS certificate is not trusted."""

    status = "UNAVAILABLE"
    exit_code = EXIT_UNAVAILABLE


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
            raise ServerConfigError(f"--ca-file {ca}: no such file (the site CA is the server's tls/ca.pem)")
        return cls(url.rstrip("/"), _read_token(token_path), ca)


def _read_token(path: Path) -> str:
    try:
        info = path.stat()
        if info.st_size > MAX_TOKEN_FILE_BYTES:
            raise ServerConfigError(f"--token-file {path}: {info.st_size} bytes is not a token file")
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ServerConfigError(f"--token-file {path}: cannot read it ({exc})") from None
    if not token or any(ch.isspace() for ch in token):
        raise ServerConfigError(f"--token-file {path}: it must hold one token (ff1.…) and nothing else")
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ServerConfigError(f"--token-file {path}: others may read it; chmod 600 {path}")
    return token


class RemoteServer:
    """Calls on the server's HTTP API under /api; JSON in, JSON out."""

    def __init__(self, settings: RemoteSettings) -> None:
        self.settings = settings
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
            timeout=TIMEOUT_S,
        )

    def close(self) -> None:
        self._client.close()

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        return self._json(self._call("GET", path, params=_params(params)))

    def image(self, path: str) -> bytes:
        return self._call("GET", path).content

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        return self._json(self._call("POST", path, json=body, **kwargs))

    def patch(self, path: str, body: Any) -> Any:
        return self._json(self._call("PATCH", path, json=body))

    def delete(self, path: str) -> Any:
        return self._json(self._call("DELETE", path))

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise UnreachableError(
                f"cannot reach {self.settings.url} ({exc}); check --server, and --ca-file for its certificate"
            ) from None
        if response.is_success:
            return response
        raise _refusal(response)

    @staticmethod
    def _json(response: httpx.Response) -> Any:
        return response.json() if response.content else None


def _refusal(response: httpx.Response) -> ServerError:
    try:
        problem = response.json()
        code, detail = str(problem.get("code", "")), str(problem.get("detail") or problem.get("title") or "")
        extra = [
            f"{i.get('filename') or i.get('index')}: {i.get('reason')}" for i in problem.get("images", [])
        ]
    except (ValueError, AttributeError):
        code, detail, extra = "", response.text[:200], []
    error = error_for_status(code)
    message = detail or f"HTTP {response.status_code}"
    return error("; ".join([message, *extra]) if extra else message)


def _params(params: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Query parameters without the empty ones."""
    if params is None:
        return None
    return {k: v for k, v in params.items() if v not in ("", None, [], ())}
