"""Reading images: every bad file gives a clear error naming it, every odd but valid one a BGR frame."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from facefleet.vision.errors import ImageError
from facefleet.vision.images import (
    NoImagesError,
    decode_image,
    image_files,
    list_images,
    read_image,
    to_bgr8,
)
from facefleet.vision.images.reading import MAX_FILE_BYTES
from facefleet.vision.pipeline import FaceAnalyzer


def write(path: Path, image: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), image)
    return path


def exif_orientation(orientation: int) -> bytes:
    """An EXIF block (big-endian TIFF header, one IFD) with only the Orientation tag (0x0112, a SHORT)."""
    return b"MM\x00*" + struct.pack(">IHHHIHHI", 8, 1, 0x0112, 3, 1, orientation, 0, 0)


def jpeg_with_orientation(image: np.ndarray, orientation: int) -> bytes:
    """A JPEG of `image` with an EXIF APP1 segment right after the start-of-image marker."""
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    payload = b"Exif\x00\x00" + exif_orientation(orientation)
    segment = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    return encoded[:2].tobytes() + segment + encoded[2:].tobytes()


def png_with_orientation(image: np.ndarray, orientation: int) -> bytes:
    """A PNG of `image` with an eXIf chunk right after the IHDR chunk (8-byte signature, 25-byte IHDR)."""
    ok, encoded = cv2.imencode(".png", image)
    assert ok
    data = exif_orientation(orientation)
    chunk = struct.pack(">I", len(data)) + b"eXIf" + data + struct.pack(">I", zlib.crc32(b"eXIf" + data))
    return encoded[:33].tobytes() + chunk + encoded[33:].tobytes()


# How a camera stores an upright image (H, W, C) for each EXIF orientation: the inverse of what the tag asks a
# reader to do (2: mirror, 3: turn 180°, 4: flip, 5: transpose, 6: turn 90° clockwise, 7: transverse, 8: turn
# 90° anticlockwise).
STORED_AS: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    1: lambda im: im,
    2: lambda im: im[:, ::-1],
    3: lambda im: im[::-1, ::-1],
    4: lambda im: im[::-1],
    5: lambda im: im.transpose(1, 0, 2),
    6: lambda im: np.rot90(im, 1),
    7: lambda im: np.rot90(im, 2).transpose(1, 0, 2),
    8: lambda im: np.rot90(im, -1),
}


@pytest.mark.parametrize("orientation", sorted(STORED_AS))
def test_jpeg_exif_orientation_turns_the_photo_upright_and_its_face_is_found(
    tmp_path: Path, astronaut: np.ndarray, analyzer: FaceAnalyzer, orientation: int
) -> None:
    upright = np.ascontiguousarray(astronaut[:, 60:460])  # 512 × 400: portrait, so a turn changes the shape
    stored = np.ascontiguousarray(STORED_AS[orientation](upright))
    path = tmp_path / "phone.jpg"
    path.write_bytes(jpeg_with_orientation(stored, orientation))
    frame = read_image(path)
    assert frame.shape == upright.shape
    assert np.abs(frame.astype(int) - upright).mean() < 4  # JPEG noise; a wrong turn or mirror is ~90
    (expected,) = analyzer.analyze(upright)
    (face,) = analyzer.analyze(frame)
    assert np.abs(face.detection.box_xyxy - expected.detection.box_xyxy).max() < 6


def test_png_exif_orientation_keeps_16_bit_and_alpha_handling(tmp_path: Path, astronaut: np.ndarray) -> None:
    upright = cv2.cvtColor(astronaut[:, 60:460], cv2.COLOR_BGR2BGRA).astype(np.uint16) * 257
    path = tmp_path / "scan.png"
    path.write_bytes(png_with_orientation(np.ascontiguousarray(STORED_AS[6](upright)), 6))
    frame = read_image(path)
    assert frame.shape == (512, 400, 3) and frame.dtype == np.uint8
    assert np.array_equal(frame, astronaut[:, 60:460])


def test_missing_empty_and_non_image_files_name_the_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    for path, message in [
        (tmp_path / "nope.jpg", "no such file"),
        (empty, "empty"),
        (text, "not a readable image"),
        (tmp_path, "not a regular file"),
    ]:
        with pytest.raises(ImageError, match=message) as info:
            read_image(path)
        assert str(path) in str(info.value)
        assert info.value.exit_code == (66 if path.name == "nope.jpg" else 65)  # a missing file: no input


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_files_are_an_error_naming_the_file(
    tmp_path: Path, astronaut: np.ndarray, suffix: str
) -> None:
    path = write(tmp_path / f"a{suffix}", astronaut)
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(ImageError, match=f"a{suffix}: not a readable image"):
        read_image(path)


@pytest.mark.parametrize(
    "convert",
    [
        lambda im: cv2.cvtColor(im, cv2.COLOR_BGR2GRAY),
        lambda im: cv2.cvtColor(im, cv2.COLOR_BGR2BGRA),
        lambda im: im.astype(np.uint16) * 257,
        lambda im: cv2.cvtColor(im, cv2.COLOR_BGR2GRAY).astype(np.uint16) * 257,
    ],
    ids=["grey", "bgra", "16-bit", "16-bit grey"],
)
def test_grey_alpha_and_16_bit_files_become_8_bit_bgr(
    tmp_path: Path, astronaut: np.ndarray, convert: object
) -> None:
    path = write(tmp_path / "x.png", convert(astronaut))  # type: ignore[operator]
    frame = read_image(path)
    assert frame.shape == astronaut.shape and frame.dtype == np.uint8
    grey = cv2.cvtColor(astronaut, cv2.COLOR_BGR2GRAY).astype(int)
    assert np.abs(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY).astype(int) - grey).mean() < 2


def bomb(suffix: str, width: int, height: int) -> bytes:
    """A 16×16 image whose header says width×height: a few hundred bytes that would decode to gigabytes."""
    ok, data = cv2.imencode(suffix, np.full((16, 16, 3), 128, np.uint8))
    assert ok
    raw = bytearray(data.tobytes())
    if suffix == ".jpg":
        at = raw.index(b"\xff\xc0")
        raw[at + 5 : at + 9] = struct.pack(">HH", height, width)
    else:
        raw[16:24] = struct.pack(">II", width, height)  # PNG's IHDR
    return bytes(raw)


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_an_image_declaring_too_many_pixels_is_refused_before_it_is_decoded(
    tmp_path: Path, suffix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / f"bomb{suffix}"
    path.write_bytes(bomb(suffix, 20_000, 20_000))
    assert path.stat().st_size < 1000
    decoded: list[int] = []
    monkeypatch.setattr(cv2, "imdecode", lambda data, flags: decoded.append(len(data)))
    with pytest.raises(ImageError, match=r"bomb\.\w+: image is 20000×20000 pixels, over the 100 MP limit"):
        read_image(path)
    assert decoded == []
    with pytest.raises(ImageError, match="20000×20000 pixels, over the 100 MP limit"):
        decode_image(path.read_bytes(), "upload")
    assert decoded == []


def test_a_file_growing_after_its_size_was_checked_is_read_no_further_than_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "growing.jpg"
    path.write_bytes(b"\xff\xd8" + bytes(1000))
    is_file = Path.is_file

    def grow_then_check(self: Path) -> bool:  # read_image asks between its size check and the read
        if self == path:
            with path.open("ab") as file:
                file.truncate(MAX_FILE_BYTES + 4096)  # sparse: no disk space taken
        return is_file(self)

    monkeypatch.setattr(Path, "is_file", grow_then_check)
    with pytest.raises(ImageError, match=r"growing\.jpg: file grew over the 64 MiB limit while it was read"):
        read_image(path)


def test_an_image_of_an_unreadable_format_names_the_formats_read(tmp_path: Path) -> None:
    path = tmp_path / "anim.gif"
    path.write_bytes(b"GIF89a\x10\x00\x10\x00" + bytes(40))
    with pytest.raises(
        ImageError, match=r"anim\.gif: not a readable image .* not a JPEG, PNG, BMP, WebP, TIFF or PNM image"
    ):
        read_image(path)


def test_pixel_limit_is_a_clear_error(tmp_path: Path) -> None:
    path = write(tmp_path / "big.png", np.zeros((300, 400, 3), np.uint8))
    with pytest.raises(ImageError, match="over the 0 MP limit"):
        read_image(path, max_pixels=100_000)


@pytest.mark.parametrize(
    ("array", "error"),
    [
        (np.zeros((1, 1), np.uint8), None),
        (np.zeros((4, 4, 1), np.uint8), None),
        (np.zeros((4, 4, 2), np.uint8), None),
        (np.ones((4, 4, 3), np.float32), None),
        (np.zeros((0, 4, 3), np.uint8), "empty"),
        (np.zeros((4, 4, 5), np.uint8), "unsupported image shape"),
        (np.zeros((4,), np.uint8), "unsupported image shape"),
        (np.zeros((4, 4, 3), np.int64), "unsupported pixel type"),
        (np.full((4, 4, 3), np.nan, np.float32), "NaN"),
    ],
)
def test_to_bgr8(array: np.ndarray, error: str | None) -> None:
    if error:
        with pytest.raises(ImageError, match=error):
            to_bgr8(array)
    else:
        frame = to_bgr8(array)
        assert frame.shape == (*array.shape[:2], 3) and frame.dtype == np.uint8


def test_list_images_filters_a_folder_by_suffix(tmp_path: Path) -> None:
    for name in ("b.jpg", "a.PNG", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in list_images(tmp_path)] == ["a.PNG", "b.jpg"]
    assert list_images(tmp_path / "b.jpg") == [tmp_path / "b.jpg"]


def test_image_files_of_entries_without_images_is_an_error_naming_them(tmp_path: Path) -> None:
    empty, notes = tmp_path / "empty", tmp_path / "notes"
    empty.mkdir()
    notes.mkdir()
    (notes / "readme.txt").write_text("x")
    (notes / "a.jpg").mkdir()  # a folder, not an image
    with pytest.raises(NoImagesError, match="no image files") as info:
        image_files([empty, notes])
    assert info.value.exit_code == 66
    assert f"{empty}, {notes}" in str(info.value) and ".jpg" in str(info.value) and ".png" in str(info.value)
    (notes / "b.png").write_bytes(b"x")
    assert image_files([empty, notes, tmp_path / "c.jpg"]) == [notes / "b.png", tmp_path / "c.jpg"]
