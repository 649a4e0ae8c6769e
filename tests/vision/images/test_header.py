"""Image sizes read from headers alone, for every format decode_image takes, against what OpenCV writes."""

from __future__ import annotations

import struct

import cv2
import numpy as np
import pytest

from facefleet.vision.images.header import declared_size

WIDTH, HEIGHT = 53, 37
NOISE = np.random.default_rng(0).integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    ("suffix", "pixels", "params"),
    [
        (".jpg", NOISE, []),
        (".jpg", NOISE, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
        (".png", NOISE, []),
        (".png", NOISE[:, :, 0].astype(np.uint16) * 257, []),
        (".bmp", NOISE, []),
        (".webp", NOISE, [cv2.IMWRITE_WEBP_QUALITY, 80]),  # lossy: VP8
        (".webp", NOISE, [cv2.IMWRITE_WEBP_QUALITY, 101]),  # lossless: VP8L
        (".tiff", NOISE, []),
        (".ppm", NOISE, []),
        (".pgm", NOISE[:, :, 0], []),
        (".pbm", NOISE[:, :, 0], []),
    ],
    ids=[
        "jpeg",
        "progressive-jpeg",
        "png",
        "16-bit-png",
        "bmp",
        "webp-lossy",
        "webp-lossless",
        "tiff",
        "ppm",
        "pgm",
        "pbm",
    ],
)
def test_the_size_of_every_format_opencv_writes(suffix: str, pixels: np.ndarray, params: list[int]) -> None:
    ok, data = cv2.imencode(suffix, pixels, params)
    assert ok
    assert declared_size(data.tobytes()) == (WIDTH, HEIGHT)


def test_hand_made_headers() -> None:
    big_endian_tiff = b"MM\x00*" + struct.pack(">IH", 8, 2)
    big_endian_tiff += struct.pack(">HHIHH", 256, 3, 1, WIDTH, 0) + struct.pack(">HHII", 257, 4, 1, HEIGHT)
    extended_webp = b"RIFF\x00\x00\x00\x00WEBPVP8X" + bytes(8) + (WIDTH - 1).to_bytes(3, "little")
    extended_webp += (HEIGHT - 1).to_bytes(3, "little")
    top_down_bmp = b"BM" + bytes(12) + struct.pack("<Iii", 40, WIDTH, -HEIGHT)
    ok, data = cv2.imencode(".jpg", NOISE)
    assert ok
    jpeg = data.tobytes()
    table = jpeg.index(b"\xff\xdb")
    stray_bytes_jpeg = jpeg[:table] + b"\x00\x00" + jpeg[table:]  # libjpeg skips them, with a warning
    assert cv2.imdecode(np.frombuffer(stray_bytes_jpeg, np.uint8), cv2.IMREAD_COLOR).shape[:2] == (
        HEIGHT,
        WIDTH,
    )
    for data in (
        big_endian_tiff,
        extended_webp,
        top_down_bmp,
        b"P2\n# made by hand\n53 37\n255\n0",
        b"P2\r# a comment ended by a carriage return\r53 37\r255\r0",
        stray_bytes_jpeg,
    ):
        assert declared_size(data) == (WIDTH, HEIGHT), data[:4]


def tiff(*entries: tuple[int, int, int, int]) -> bytes:
    """A little-endian TIFF header with these (tag, type, count, value) entries in its first directory."""
    data = b"II*\x00" + struct.pack("<IH", 8, len(entries))
    return data + b"".join(struct.pack("<HHII", *entry) for entry in entries)


def test_a_tiff_tag_counts_by_its_first_entry_as_decoders_read_it() -> None:
    """A later entry of the same tag cannot make a large image look small; an entry of another type than
    SHORT or LONG is not vouched for."""
    short, long_, signed = 3, 4, 9
    repeated = tiff((256, short, 1, 64), (257, short, 1, 64), (256, short, 1, 8), (257, short, 1, 8))
    assert declared_size(repeated) == (64, 64)
    assert declared_size(tiff((256, long_, 1, 20_000), (257, short, 1, 20_000))) == (20_000, 20_000)
    assert declared_size(tiff((256, signed, 1, 64), (257, short, 1, 64), (256, short, 1, 8))) is None


def test_what_it_cannot_read_is_none() -> None:
    ok, data = cv2.imencode(".jpg", NOISE)
    assert ok
    jpeg = data.tobytes()
    frame_header = jpeg.index(b"\xff\xc0")
    for data in (b"", b"GIF89a\x10\x00\x10\x00", b"not an image", jpeg[:frame_header], b"\x89PNG\r\n\x1a\n"):
        assert declared_size(data) is None, data[:12]
