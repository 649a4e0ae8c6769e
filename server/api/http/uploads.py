"""Request bodies within their size limits, checked while they stream in: a multipart upload (form fields and
files, each file refused with RESOURCE_EXHAUSTED as soon as it passes its limit, before the rest is read) and
JSON bodies (refused past `MAX_JSON_BYTES`). A declared Content-Length over the limit is refused before any
byte is read. File names must be bare names: one with path parts is INVALID_ARGUMENT. The rest of a refused
request's body is drained (`Body`), within reason and within a time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request
from starlette.types import Message

from facefleet.server.errors import InvalidArgumentError, ResourceExhaustedError

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

MAX_JSON_BYTES = 1024 * 1024
"""Largest JSON request body (a person's fields, a rollout, a list of snapshot ids)."""
MAX_FILE_NAME_CHARS = 255
MAX_HEADER_BYTES = 8 * 1024
"""Largest header line of one multipart part."""
PART_OVERHEAD_BYTES = 16 * 1024
"""Room for boundaries and part headers in a body's size limit."""
DRAIN_BYTES = 64 * 1024 * 1024
"""Most bytes of a refused request's body read and dropped so that its client reads the refusal; a client
with more still to send finds the connection closed."""


@dataclass(frozen=True)
class UploadLimits:
    """Limits of one kind of upload. setting: the configuration key(s) to name in a refusal."""

    max_file_bytes: int
    max_total_bytes: int
    max_files: int
    setting: str
    max_fields: int = 32
    max_field_bytes: int = 64 * 1024

    @property
    def max_body_bytes(self) -> int:
        return (
            self.max_total_bytes
            + self.max_fields * self.max_field_bytes
            + (self.max_files + self.max_fields) * PART_OVERHEAD_BYTES
        )


@dataclass(frozen=True)
class FormField:
    name: str
    value: str


@dataclass(frozen=True)
class FileStart:
    """A file begins; its bytes follow as FileChunk parts until the next FormField or FileStart."""

    name: str
    filename: str


@dataclass(frozen=True)
class FileChunk:
    data: bytes


Part = FormField | FileStart | FileChunk


def check_file_name(name: str) -> str:
    """A bare file name as a client sent it; INVALID_ARGUMENT for paths, '.', '..' or control characters."""
    if "/" in name or "\\" in name or name in (".", ".."):
        raise InvalidArgumentError(
            f"file name {name[:80]!r} has path parts; send the bare file name, e.g. 'photo.jpg'"
        )
    if not name or len(name) > MAX_FILE_NAME_CHARS or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise InvalidArgumentError(
            f"file name {name[:80]!r} is not valid: give 1–{MAX_FILE_NAME_CHARS} printable characters"
        )
    return name


async def multipart(request: Request, limits: UploadLimits) -> AsyncIterator[Part]:
    """The parts of a multipart/form-data body in order, read as it arrives and never held whole."""
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or not options.get(b"boundary"):
        raise InvalidArgumentError(
            "send the upload as multipart/form-data (curl -F), not "
            f"{content_type.decode('latin-1')[:80] or 'a body without a content type'}"
        )
    body_limit = limits.max_body_bytes
    _check_declared_length(request, body_limit, limits.setting)
    reader = _PartReader(limits)
    parser = MultipartParser(options[b"boundary"], reader.callbacks())
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > body_limit:
            raise _too_large(f"the upload is over {body_limit} bytes", limits.setting)
        try:
            parser.write(chunk)
        except FormParserError as exc:
            raise InvalidArgumentError(f"the multipart body is malformed: {exc}") from None
        for part in reader.take():
            yield part
    parser.finalize()
    for part in reader.take():
        yield part
    if not reader.ended:
        raise InvalidArgumentError("the multipart body ended before its closing boundary")


class BodyTimeoutError(Exception):
    """A request body that was not all in within its time."""


class Body:
    """A request's body as it is read: refused (RESOURCE_EXHAUSTED) past `limit` bytes when given,
    BodyTimeoutError when it is not all in within `within_s` seconds when given, and drained after a
    refusal so that the client, still sending, reads the answer instead of a reset connection. `request`
    reads through it."""

    def __init__(self, request: Request, limit: int | None = None, within_s: float | None = None) -> None:
        self._receive = request.receive
        self._declared = request.headers.get("content-length", "")
        self.limit = limit
        self.within_s = within_s
        self._due = None if within_s is None else asyncio.get_running_loop().time() + within_s
        self.received = 0
        self.finished = False
        self.request = Request(request.scope, self.receive)

    def check_declared(self) -> None:
        """Refuse a body whose declared Content-Length is over the limit, before reading it."""
        if self.limit is not None:
            _check_declared_length(self.request, self.limit, "")

    async def receive(self) -> Message:
        if self._due is None:
            message = await self._receive()
        else:
            try:
                message = await asyncio.wait_for(
                    self._receive(), self._due - asyncio.get_running_loop().time()
                )
            except asyncio.TimeoutError:
                raise BodyTimeoutError(
                    f"the request body was not all in within {self.within_s:g} s (the server's "
                    "listen.http_body_timeout_seconds)"
                ) from None
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            self.finished = not message.get("more_body", False)
            if self.limit is not None and self.received > self.limit:
                raise _too_large(f"the request body is over {self.limit} bytes", "")
        else:
            self.finished = True
        return message

    async def drain(self, within_s: float, budget: int = DRAIN_BYTES) -> bool:
        """Read and drop the rest of the body, unless more than `budget` bytes of it are still to come, for
        at most `within_s` seconds (and within the body's own time). Whether it was all read: when not, the
        connection cannot carry another request."""
        if self.finished:
            return True
        if self._due is not None:
            within_s = min(within_s, self._due - asyncio.get_running_loop().time())
        try:
            await asyncio.wait_for(self._drop(budget), within_s)
        except asyncio.TimeoutError:
            return False
        return self.finished

    async def _drop(self, budget: int) -> None:
        left = int(self._declared) - self.received if self._declared.isdigit() else 0
        drained = 0
        while not self.finished and left <= budget and drained <= budget:
            message = await self._receive()
            if message["type"] != "http.request":
                break
            drained += len(message.get("body", b""))
            self.finished = not message.get("more_body", False)


def _check_declared_length(request: Request, limit: int, setting: str) -> None:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(f"the request body is {declared} bytes, over the limit of {limit}", setting)


def _too_large(what: str, setting: str) -> ResourceExhaustedError:
    fix = f" (the server's {setting})" if setting else ""
    return ResourceExhaustedError(f"{what}{fix}; nothing was stored")


@dataclass
class _PartReader:
    """python-multipart's callbacks: collects the parts of each written chunk and checks every limit."""

    limits: UploadLimits
    parts: list[Part] = field(default_factory=list)
    ended: bool = False
    _header_name: bytearray = field(default_factory=bytearray)
    _header_value: bytearray = field(default_factory=bytearray)
    _disposition: bytes = b""
    _field: str | None = None
    _value: bytearray = field(default_factory=bytearray)
    _filename: str = ""
    _file_bytes: int = 0
    _total_bytes: int = 0
    _files: int = 0
    _fields: int = 0

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_end": self.on_end,
        }

    def take(self) -> list[Part]:
        parts, self.parts = self.parts, []
        return parts

    def on_part_begin(self) -> None:
        self._disposition = b""
        self._field = None
        self._filename = ""

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]
        self._check_header()

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]
        self._check_header()

    def _check_header(self) -> None:
        if len(self._header_name) + len(self._header_value) > MAX_HEADER_BYTES:
            raise InvalidArgumentError(f"a multipart part header is over {MAX_HEADER_BYTES} bytes")

    def on_header_end(self) -> None:
        if bytes(self._header_name).lower() == b"content-disposition":
            self._disposition = bytes(self._header_value)
        self._header_name.clear()
        self._header_value.clear()

    def on_headers_finished(self) -> None:
        kind, options = parse_options_header(self._disposition)
        name = _text(options.get(b"name", b""), "a part name")
        if kind != b"form-data" or not name:
            raise InvalidArgumentError("every multipart part needs 'Content-Disposition: form-data; name=…'")
        limits = self.limits
        if b"filename" in options:
            self._files += 1
            if self._files > limits.max_files:
                raise _too_large(f"more than {limits.max_files} files in one upload", "")
            filename = _text(options[b"filename"], "a file name")
            if b"\\" in self._disposition:  # a Windows path, which the parser would cut to its last part
                raise InvalidArgumentError(f"file name {filename[:80]!r} has path parts; send the bare name")
            self._filename = check_file_name(filename)
            self._file_bytes = 0
            self.parts.append(FileStart(name, self._filename))
            return
        self._fields += 1
        if self._fields > limits.max_fields:
            raise _too_large(f"more than {limits.max_fields} form fields", "")
        self._field = name
        self._value = bytearray()

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        size = end - start
        limits = self.limits
        if self._field is not None:
            if len(self._value) + size > limits.max_field_bytes:
                raise _too_large(f"form field {self._field!r} is over {limits.max_field_bytes} bytes", "")
            self._value += data[start:end]
            return
        self._file_bytes += size
        self._total_bytes += size
        if self._file_bytes > limits.max_file_bytes:
            raise _too_large(
                f"file {self._filename!r} is over the limit of {limits.max_file_bytes} bytes", limits.setting
            )
        if self._total_bytes > limits.max_total_bytes:
            raise _too_large(
                f"the files are over the limit of {limits.max_total_bytes} bytes together", limits.setting
            )
        self.parts.append(FileChunk(bytes(data[start:end])))

    def on_part_end(self) -> None:
        if self._field is not None:
            self.parts.append(FormField(self._field, _text(bytes(self._value), f"field {self._field!r}")))
            self._field = None

    def on_end(self) -> None:
        self.ended = True


def _text(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidArgumentError(f"{what} is not UTF-8 text") from None
