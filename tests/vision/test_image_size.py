"""Image sizes read from headers alone, for every format decode_image takes, against what OpenCV writes."""

from __future__ import annotations

import struct

import cv2
import numpy as np
import pytest

from facefleet.vision.image_size import declared_size

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
    for data in (big_endian_tiff, extended_webp, top_down_bmp, b"P2\n# made by hand\n53 37\n255\n0"):
        assert declared_size(data) == (WIDTH, HEIGHT), data[:4]


def test_what_it_cannot_read_is_none() -> None:
    ok, data = cv2.imencode(".jpg", NOISE)
    assert ok
    jpeg = data.tobytes()
    frame_header = jpeg.index(b"\xff\xc0")
    for data in (b"", b"GIF89a\x10\x00\x10\x00", b"not an image", jpeg[:frame_header], b"\x89PNG\r\n\x1a\n"):
        assert declared_size(data) is None, data[:12]
