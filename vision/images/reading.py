"""Reading images and normalising frames to 8-bit BGR, with clear errors for files that are not usable."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from facefleet.core.errors import EXIT_NO_INPUT
from facefleet.vision.errors import ImageError
from facefleet.vision.images.header import FORMATS, declared_size

MAX_FILE_BYTES = 64 * 1024 * 1024
MAX_PIXELS = 100_000_000
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm"})
# Not IMREAD_UNCHANGED: it skips the EXIF Orientation tag, which leaves portrait phone photos on their side.
# These flags keep 16-bit and grey pixels and let OpenCV turn the image upright; they drop alpha, as
# to_bgr8 would.
_DECODE_FLAGS = cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR


class NoImagesError(ImageError):
    """The files and folders given hold no image file at all."""

    exit_code = EXIT_NO_INPUT


class ImageMissingError(ImageError):
    """An image file that does not exist."""

    exit_code = EXIT_NO_INPUT


def to_bgr8(image: npt.NDArray[np.generic], name: str = "frame") -> npt.NDArray[np.uint8]:
    """Any grey, grey+alpha, BGR or BGRA image of 8 or 16 bits (or float 0–1) as (H, W, 3) uint8 BGR."""
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (2, 3, 4)):
        raise ImageError(f"{name}: unsupported image shape {image.shape}; expected H×W, H×W×3 or H×W×4")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ImageError(f"{name}: image is empty ({image.shape[1]}×{image.shape[0]} pixels)")
    pixels = _to_uint8(image, name)
    if pixels.ndim == 2:
        converted = cv2.cvtColor(pixels, cv2.COLOR_GRAY2BGR)
    elif pixels.shape[2] == 2:
        converted = cv2.cvtColor(np.ascontiguousarray(pixels[:, :, 0]), cv2.COLOR_GRAY2BGR)
    elif pixels.shape[2] == 4:
        converted = cv2.cvtColor(pixels, cv2.COLOR_BGRA2BGR)
    else:
        converted = pixels
    return np.ascontiguousarray(converted, dtype=np.uint8)


def read_image(path: Path | str, max_pixels: int = MAX_PIXELS) -> npt.NDArray[np.uint8]:
    """Read an image file as (H, W, 3) uint8 BGR, turned upright as its EXIF Orientation tag says, or raise
    ImageError naming the file and the problem."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ImageMissingError(f"{path}: no such file") from None
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror})") from None
    if not path.is_file():
        raise ImageError(f"{path}: not a regular file")
    if size == 0:
        raise ImageError(f"{path}: file is empty")
    if size > MAX_FILE_BYTES:
        raise ImageError(
            f"{path}: file is {size / 2**20:.0f} MiB, over the {MAX_FILE_BYTES // 2**20} MiB limit"
        )
    try:
        with path.open("rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)  # no more: the file may have grown since its size was seen
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc})") from None
    if len(data) > MAX_FILE_BYTES:
        raise ImageError(f"{path}: file grew over the {MAX_FILE_BYTES // 2**20} MiB limit while it was read")
    return decode_image(data, str(path), max_pixels)


def decode_image(data: bytes, what: str, max_pixels: int = MAX_PIXELS) -> npt.NDArray[np.uint8]:
    """Encoded image bytes (JPEG, PNG, BMP, WebP, TIFF or PNM) → (H, W, 3) uint8 BGR, turned upright as its
    EXIF Orientation tag says; ImageError naming `what` when unreadable or over max_pixels. The size is
    checked on the header before anything is decoded: a small file may declare billions of pixels."""
    declared = declared_size(data)
    if declared is None:
        raise ImageError(
            f"{what}: not a readable image (its header is cut short or damaged, or it is not a {FORMATS} "
            "image)"
        )
    width, height = declared
    if width * height > max_pixels:
        raise ImageError(
            f"{what}: image is {width}×{height} pixels, over the {max_pixels / 1e6:.0f} MP limit; "
            "downscale it first"
        )
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), _DECODE_FLAGS)
    if image is None:
        raise ImageError(f"{what}: not a readable image (corrupt, truncated or an unsupported format)")
    if image.shape[0] * image.shape[1] > max_pixels:  # a header that understated the size
        raise ImageError(
            f"{what}: image is {image.shape[1]}×{image.shape[0]} pixels, "
            f"over the {max_pixels / 1e6:.0f} MP limit; downscale it first"
        )
    return to_bgr8(image, what)


def list_images(path: Path) -> list[Path]:
    """The image files in a folder (sorted, by suffix), or [path] for a single file."""
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    return [path]


def image_files(entries: Sequence[Path]) -> list[Path]:
    """The image files of every entry, file or folder (see list_images), in order; NoImagesError naming the
    entries and the suffixes read when there is none at all."""
    paths = [path for entry in entries for path in list_images(entry)]
    if not paths:
        raise NoImagesError(
            f"{', '.join(map(str, entries))}: no image files here (files read: "
            f"{' '.join(sorted(IMAGE_SUFFIXES))}); give image files or folders that hold some"
        )
    return paths


def _to_uint8(image: npt.NDArray[np.generic], name: str) -> npt.NDArray[np.uint8]:
    if image.dtype == np.uint8:
        return np.asarray(image, dtype=np.uint8)
    if image.dtype == np.uint16:
        return (np.asarray(image, dtype=np.uint16) >> 8).astype(np.uint8)
    if np.issubdtype(image.dtype, np.floating):
        if not np.all(np.isfinite(image)):
            raise ImageError(f"{name}: image holds NaN or infinite values")
        return np.clip(np.asarray(image, dtype=np.float64) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    raise ImageError(
        f"{name}: unsupported pixel type {image.dtype}; expected 8- or 16-bit integers or float 0–1"
    )
