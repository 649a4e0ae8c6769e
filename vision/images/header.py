"""The width and height an encoded image declares in its header, read without decoding a pixel: so that an
image can be refused for its size before a decoder allocates it (a file of a few hundred bytes may declare
billions of pixels). JPEG, PNG, BMP, WebP, TIFF and binary or ASCII PNM (P1–P6); anything else is None."""

from __future__ import annotations

import re

Size = tuple[int, int]
"""(width, height) in pixels."""

FORMATS = "JPEG, PNG, BMP, WebP, TIFF or PNM"
_JPEG_FRAMES = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
"""Start-of-frame markers (SOF0–SOF15), which carry the frame's size; C4, C8 and CC are other segments."""
_PNM_HEADER = re.compile(rb"P[1-6](?:\s|#[^\r\n]*[\r\n])+(\d+)(?:\s|#[^\r\n]*[\r\n])+(\d+)")


def declared_size(data: bytes) -> Size | None:
    """The (width, height) data's header declares, or None when it is not one of FORMATS or its header is
    cut short."""
    try:
        if data.startswith(b"\xff\xd8"):
            return _jpeg(data)
        if data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR":
            return _be(data, 16, 4), _be(data, 20, 4)
        if data.startswith(b"BM"):
            return _bmp(data)
        if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
            return _webp(data)
        if data[:4] in (b"II*\x00", b"MM\x00*"):
            return _tiff(data)
        if (found := _PNM_HEADER.match(data[:1024])) is not None:
            return int(found.group(1)), int(found.group(2))
    except IndexError:  # a header cut short
        return None
    return None


def _be(data: bytes, at: int, size: int) -> int:
    if at + size > len(data):
        raise IndexError(at)
    return int.from_bytes(data[at : at + size], "big")


def _le(data: bytes, at: int, size: int, signed: bool = False) -> int:
    if at + size > len(data):
        raise IndexError(at)
    return int.from_bytes(data[at : at + size], "little", signed=signed)


def _jpeg(data: bytes) -> Size | None:
    at = 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:  # stray bytes before a marker: skipped, as libjpeg does
            at = data.find(b"\xff", at)
            if at < 0:
                return None
            continue
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            at += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image, or scan data before any frame header
            return None
        if marker in _JPEG_FRAMES:
            return _be(data, at + 7, 2), _be(data, at + 5, 2)
        at += 2 + _be(data, at + 2, 2)
    return None


def _bmp(data: bytes) -> Size:
    if _le(data, 14, 4) == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
        return _le(data, 18, 2), _le(data, 20, 2)
    return abs(_le(data, 18, 4, signed=True)), abs(_le(data, 22, 4, signed=True))  # negative: top-down


def _webp(data: bytes) -> Size | None:
    chunk = data[12:16]
    if chunk == b"VP8 ":  # lossy: the key frame's header after its start code
        return _le(data, 26, 2) & 0x3FFF, _le(data, 28, 2) & 0x3FFF
    if chunk == b"VP8L":  # lossless: 14-bit width - 1 and height - 1 after the signature byte
        bits = _le(data, 21, 4)
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":  # extended: the canvas, 24-bit width - 1 and height - 1
        return _le(data, 24, 3) + 1, _le(data, 27, 3) + 1
    return None


def _tiff(data: bytes) -> Size | None:
    """The first image's ImageWidth (256) and ImageLength (257) tags."""
    order = "little" if data.startswith(b"II") else "big"

    def number(at: int, size: int) -> int:
        if at + size > len(data):
            raise IndexError(at)
        return int.from_bytes(data[at : at + size], order)  # type: ignore[arg-type]

    ifd = number(4, 4)
    found: dict[int, int | None] = {}
    for entry in range(number(ifd, 2)):
        at = ifd + 2 + 12 * entry
        tag, kind, count = number(at, 2), number(at + 2, 2), number(at + 4, 4)
        if tag in (256, 257) and tag not in found:  # the first entry of a tag is the one decoders use
            found[tag] = number(at + 8, 2 if kind == 3 else 4) if kind in (3, 4) and count == 1 else None
    width, height = found.get(256), found.get(257)
    if width is None or height is None:  # missing, or of a type read otherwise: not vouched for
        return None
    return width, height
