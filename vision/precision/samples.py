"""Real inputs for precision measurements: the sample photos that ship in installed packages (and their
mirror images), and the faces the float detector finds in them at the default thresholds."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt

from facefleet.vision import detection
from facefleet.vision.detection import DetectorInput, DetectorSettings
from facefleet.vision.faces import Detection
from facefleet.vision.images import read_image
from facefleet.vision.models.quantize import FaceSample
from facefleet.vision.models.store import StoredModel, check_model
from facefleet.vision.photos import SAMPLE_PHOTOS, sample_photo
from facefleet.vision.runtime import CompiledNet, Runtime

Frame = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class FoundFace:
    """One face the float detector found: the frame (BGR) it is in and its detection (frame px)."""

    frame: Frame
    detection: Detection
    origin: str

    def sample(self) -> FaceSample:
        """The face as the quantizer's guard takes it."""
        return FaceSample(self.frame, self.detection.landmarks_xy.astype(np.float32), self.origin)


@dataclass(frozen=True)
class TuningSamples:
    """frames: prepared detector inputs of every photo and its mirror image; faces: found in them;
    detector: the settings they were prepared and found with (sample_detector)."""

    detector: DetectorSettings
    frames: tuple[DetectorInput, ...]
    faces: tuple[FoundFace, ...]


def sample_photos() -> list[Path]:
    """The bundled sample photos (astronaut: one face, t1: six); ImageError says what to install."""
    return [sample_photo(name) for name in SAMPLE_PHOTOS]


def sample_detector(site: DetectorSettings | None = None) -> DetectorSettings:
    """The settings the samples are found with: the site's frame geometry (long_side, upscale), so the
    detector is measured at the input scale it runs at, and the default thresholds and face limit: the
    samples measure the models, whatever faces a site chooses to keep (a score_threshold of 0.95 finds
    none in the bundled photos)."""
    defaults = DetectorSettings()
    if site is None:
        return defaults
    return replace(defaults, long_side=site.long_side, upscale=site.upscale)


def tuning_samples(
    runtime: Runtime,
    detector: StoredModel,
    photos: Sequence[Path] | None = None,
    settings: DetectorSettings | None = None,
) -> TuningSamples:
    """Frames and faces of the photos (default: the bundled ones), found with detector run at f32.

    settings: the site's [detector] settings; only their frame geometry is used (sample_detector). The
    samples may have no faces (photos without any): the probes then refuse to measure (ImageError)."""
    settings = sample_detector(settings)
    check_model(detector)
    nets: dict[tuple[int, ...], CompiledNet] = {}
    frames: list[DetectorInput] = []
    faces: list[FoundFace] = []
    for path in photos if photos is not None else sample_photos():
        photo = read_image(path)
        for mirrored, frame in ((False, photo), (True, np.ascontiguousarray(photo[:, ::-1]))):
            prepared = detection.prepare(frame, settings)
            shape = tuple(prepared.tensor.shape)
            if shape not in nets:
                nets[shape] = detection.compile_detector(runtime, detector.xml_path, shape, "f32")
            frames.append(prepared)
            found = detection.decode(nets[shape].infer(prepared.tensor), prepared, settings)
            for index, face in enumerate(found):
                origin = f"{path.name}{' (mirrored)' if mirrored else ''} face {index + 1}"
                faces.append(FoundFace(frame, face, origin))
    return TuningSamples(settings, tuple(frames), tuple(faces))
