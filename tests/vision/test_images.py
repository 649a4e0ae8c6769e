"""Reading images: every bad file gives a clear error naming it, every odd but valid one a BGR frame."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from facefleet.vision.errors import ImageError
from facefleet.vision.images import list_images, read_image, to_bgr8


def write(path: Path, image: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), image)
    return path


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
