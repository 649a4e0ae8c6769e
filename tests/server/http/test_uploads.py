"""The multipart reader on its own: parts come out as the body streams in, a file over its limit is refused
after reading little more than the limit (not the whole body), and malformed bodies are refused naming why."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from starlette.requests import Request

from facefleet.server.api.http.uploads import FileChunk, FileStart, FormField, Part, UploadLimits, multipart
from facefleet.server.errors import InvalidArgumentError, ResourceExhaustedError

LIMITS = UploadLimits(
    max_file_bytes=1000, max_total_bytes=1500, max_files=2, setting="test.max", max_fields=3
)
CHUNK = 256


def body(*parts: tuple[str, str | None, bytes], end: bool = True) -> bytes:
    """A multipart body of (name, filename or None, content) parts, boundary "b0undary"."""
    out = b""
    for name, filename, content in parts:
        disposition = f'form-data; name="{name}"' + (
            f'; filename="{filename}"' if filename is not None else ""
        )
        out += f"--b0undary\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + content + b"\r\n"
    return out + (b"--b0undary--\r\n" if end else b"")


class Streamed:
    """An ASGI request whose body arrives in CHUNK-byte messages; counts how many were read."""

    def __init__(self, data: bytes, content_type: str = "multipart/form-data; boundary=b0undary") -> None:
        self.chunks = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)] or [b""]
        self.read = 0
        scope = {"type": "http", "method": "POST", "headers": [(b"content-type", content_type.encode())]}
        self.request = Request(scope, self.receive)

    async def receive(self) -> dict[str, Any]:
        chunk = self.chunks[self.read]
        self.read += 1
        return {"type": "http.request", "body": chunk, "more_body": self.read < len(self.chunks)}


def parts_of(streamed: Streamed) -> list[Part]:
    async def collect() -> list[Part]:
        return [part async for part in multipart(streamed.request, LIMITS)]

    return asyncio.run(collect())


def test_fields_and_files_come_out_in_order() -> None:
    data = bytes(range(256)) * 3
    parts = parts_of(Streamed(body(("person_id", None, "zoë".encode()), ("images", "a.jpg", data))))
    assert parts[:2] == [FormField("person_id", "zoë"), FileStart("images", "a.jpg")]
    assert b"".join(p.data for p in parts[2:] if isinstance(p, FileChunk)) == data


def test_a_file_over_its_limit_is_refused_without_reading_the_rest() -> None:
    streamed = Streamed(body(("images", "big.jpg", bytes(100_000))))
    with pytest.raises(
        ResourceExhaustedError,
        match=r"file 'big.jpg' is over the limit of 1000 bytes \(the server's test.max\)",
    ):
        parts_of(streamed)
    assert streamed.read <= 1000 // CHUNK + 2 < len(streamed.chunks)


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [
        (
            body(("images", "a.jpg", bytes(800)), ("images", "b.jpg", bytes(800))),
            ResourceExhaustedError,
            "together",
        ),
        (
            body(*[("images", f"{i}.jpg", b"x") for i in range(3)]),
            ResourceExhaustedError,
            "more than 2 files",
        ),
        (body(*[("f", None, b"x")] * 4), ResourceExhaustedError, "more than 3 form fields"),
        (body(("f", None, bytes(70_000))), ResourceExhaustedError, "form field 'f' is over"),
        (body(("images", "a\x01.jpg", b"x")), InvalidArgumentError, "is not valid"),
        (body(("images", "../a.jpg", b"x")), InvalidArgumentError, "has path parts"),
        (body(("images", "", b"x")), InvalidArgumentError, "is not valid"),
        (body(("f", None, b"\xff\xfe")), InvalidArgumentError, "is not UTF-8"),
        (
            body(("images", "a.jpg", b"x"), end=False),
            InvalidArgumentError,
            "ended before its closing boundary",
        ),
        (
            b"--b0undary\r\nContent-Type: text/plain\r\n\r\nx\r\n--b0undary--\r\n",
            InvalidArgumentError,
            "name=",
        ),
        (b"no boundary here at all", InvalidArgumentError, "malformed"),
    ],
)
def test_bodies_past_a_limit_or_malformed_are_refused(
    data: bytes, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        parts_of(Streamed(data))


def test_a_body_that_is_not_multipart_is_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="multipart/form-data"):
        parts_of(Streamed(b'{"person_id": "x"}', content_type="application/json"))
