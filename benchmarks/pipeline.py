"""Vision pipeline benchmark: per-stage latency, end-to-end frames at every precision, sequential vs
asynchronous frames/s, scaling with streams and threads, and the same models run through OpenCV's DNN
module as the non-OpenVINO baseline.

`precisions`: the one-face frame (astronaut, 512×512) and the six-face frame (t1, 1280×886) end to end
(detect, align, embed, expression) at f32, at bf16 where the CPU has it, at the per-model choice an agent
makes under `inference_precision = "auto"` (the chosen defaults: targets one-face < 6 ms, six-face < 20 ms)
once SFace's INT8 variant is built in this run as `models import-defaults` builds it on site (the precisions
take turns round by round; the median of every frame and of the run's quietest round of frames).
`throughput`: at the chosen defaults, for mixed frames and one-face frames, the sequential analyze() loop
against stream() with the LATENCY hint (the agent's) and with the THROUGHPUT hint, the three taking
turns round by round: per way the median frames/s of the rounds (*_fps) and the fastest round
(*_best_round_fps); each hint against sequential on the medians (latency_hint_vs_sequential,
throughput_hint_vs_sequential), and async_vs_sequential, the better of the two, with async_hint naming it.
`int8`: the quantization guard's cosine of INT8 to f32 embeddings on held-out faces, and the lowest genuine
and highest impostor score of the photos that ship in packages (benchmarks/door_threshold.py) with f32, with
INT8, and INT8 faces against an f32 gallery.
`frame_split_chosen_defaults`: each model's inference alone on the frame's own inputs against the frame end
to end, at the chosen defaults; the difference is the Python work between the inferences and the cost of
running the models in turn.

Prints one JSON document. Every figure is measured in this run on the bundled real photos.
Usage: .venv/bin/python benchmarks/pipeline.py [--quick] [--state-dir DIR]
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import itertools
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

import cv2
import numpy as np

from facefleet.vision import detection
from facefleet.vision.alignment import align_face
from facefleet.vision.images import read_image, to_bgr8
from facefleet.vision.models.importer import DEFAULT_MODELS, import_defaults, locate_default
from facefleet.vision.models.onnx_fold import fold_blocked_dequantize
from facefleet.vision.models.quantize import int8_variants, quantize_locally
from facefleet.vision.models.store import ModelStore, StoredModel
from facefleet.vision.photos import sample_photo
from facefleet.vision.pipeline import AnalyzerSettings, FaceAnalyzer
from facefleet.vision.precision.cache import PrecisionCache
from facefleet.vision.precision.plan import PrecisionPlan
from facefleet.vision.precision.samples import sample_photos
from facefleet.vision.preprocess import embedding_input, expression_input
from facefleet.vision.quality import QualityPolicy
from facefleet.vision.runtime import Runtime, RuntimeSettings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from door_threshold import labelled_faces, scores


def median_ms(function: Callable[[], object], repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        function()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        samples.append(time.perf_counter() - start)
    return round(statistics.median(samples) * 1000, 2)


def frames_per_second(
    run: Callable[[list[np.ndarray]], object], frames: list[np.ndarray], rounds: int
) -> float:
    return compare_fps({"only": run}, frames, rounds)["only"]


def fps_rounds(
    runs: dict[str, Callable[[list[np.ndarray]], object]], frames: list[np.ndarray], rounds: int
) -> dict[str, list[float]]:
    """Frames/s of every round of each way of running, the ways interleaved round by round so that load
    from other processes on a shared machine hits them alike."""
    for run in runs.values():
        run(frames[:4])
    measured: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            run(frames)
            measured[name].append(len(frames) / (time.perf_counter() - start))
    return measured


def compare_fps(
    runs: dict[str, Callable[[list[np.ndarray]], object]], frames: list[np.ndarray], rounds: int
) -> dict[str, float]:
    """Best frames/s of each way of running over interleaved rounds (fps_rounds)."""
    return {name: round(max(values), 2) for name, values in fps_rounds(runs, frames, rounds).items()}


def stage_latency(analyzer: FaceAnalyzer, photos: dict[str, np.ndarray], repeats: int) -> dict[str, Any]:
    astronaut = photos["astronaut"]
    detections = analyzer.detect(astronaut)
    aligned = align_face(astronaut, detections[0].landmarks_xy)
    embedder = analyzer.net("embedding", (1, 3, 112, 112))
    classifier = analyzer.net("expression", (1, 64, 64, 1))
    embed_tensor = embedding_input(aligned)[None]
    expression_tensor = expression_input(astronaut, detections[0].box_xyxy)[None]
    return {
        "detect_ms_512x512": median_ms(lambda: analyzer.detect(astronaut), repeats),
        "detect_ms_1280x886": median_ms(lambda: analyzer.detect(photos["t1"]), repeats),
        "embed_ms_per_face": median_ms(lambda: embedder.infer(embed_tensor), repeats),
        "expression_ms_per_face": median_ms(lambda: classifier.infer(expression_tensor), repeats),
        "one_face_frame_ms": median_ms(lambda: analyzer.analyze(astronaut), repeats),
        "six_face_frame_ms": median_ms(lambda: analyzer.analyze(photos["t1"]), max(5, repeats // 3)),
    }


def frame_split(analyzer: FaceAnalyzer, photos: dict[str, np.ndarray], repeats: int) -> dict[str, Any]:
    """Where a frame's time goes: each model's inference alone on the frame's own inputs (medians, ms), and
    the frame end to end; what is left is the Python work (scaling, decoding, alignment, face inputs,
    quality) plus the cost of running the models in turn rather than each alone."""
    split: dict[str, Any] = {}
    for label, name in (("one_face", "astronaut"), ("six_faces", "t1")):
        frame = to_bgr8(photos[name])
        prepared = detection.prepare(frame, analyzer.settings.detector)
        detector = analyzer.net("detection", prepared.tensor.shape)
        found = detection.decode(detector.infer(prepared.tensor), prepared, analyzer.settings.detector)
        aligned = [align_face(frame, d.landmarks_xy) for d in found]
        inputs = {"detection": (detector, prepared.tensor), **analyzer.face_batches(frame, found, aligned)}
        inference = {k: median_ms(functools.partial(n.infer, x), repeats) for k, (n, x) in inputs.items()}
        whole = median_ms(functools.partial(analyzer.analyze, frame), repeats)
        split[label] = {
            "faces": len(found),
            "inference_alone_ms": inference,
            "frame_ms": whole,
            "frame_minus_inference_alone_ms": round(whole - sum(inference.values()), 2),
        }
    return split


class OpenCvPipeline:
    """The same YuNet and SFace files through cv2.dnn: detect, align, embed (OpenCV cannot run the
    mini-Xception TFLite file, so the comparison leaves expression out on both sides)."""

    def __init__(self, folded_sface: Path) -> None:
        yunet = locate_default(next(m for m in DEFAULT_MODELS if m.task == "detection"))
        assert yunet is not None
        self.detector = cv2.FaceDetectorYN.create(str(yunet[0]), "", (320, 320), 0.6, 0.3, 5000)
        self.recognizer = cv2.FaceRecognizerSF.create(str(folded_sface), "")

    def analyze(self, frame: np.ndarray) -> int:
        height, width = frame.shape[:2]
        scale = min(1.0, 640 / max(height, width))  # the same input size as the agent's detector
        resized = cv2.resize(frame, (round(width * scale), round(height * scale)))
        self.detector.setInputSize((resized.shape[1], resized.shape[0]))
        _, faces = self.detector.detect(resized)
        if faces is None:
            return 0
        for face in faces:
            row = face.copy()
            row[:14] /= scale
            self.recognizer.feature(self.recognizer.alignCrop(frame, row))
        return len(faces)


def dlib_baseline(frames: list[np.ndarray], rounds: int) -> dict[str, Any] | None:
    if importlib.util.find_spec("face_recognition") is None:
        return None
    import face_recognition  # type: ignore[import-not-found]

    def run(batch: list[np.ndarray]) -> None:
        for frame in batch:
            rgb = np.ascontiguousarray(frame[:, :, ::-1])
            face_recognition.face_encodings(rgb, face_recognition.face_locations(rgb))

    return {"frames_per_s": frames_per_second(run, frames, rounds)}


def end_to_end(
    analyzers: dict[str, FaceAnalyzer], photos: dict[str, np.ndarray], repeats: int, rounds: int
) -> dict[str, dict[str, Any]]:
    """A whole frame through analyze(), one face and six faces, for every analyzer. The analyzers take
    turns in `rounds` rounds of frames, so that load from other processes on a shared machine hits them
    alike; each runs its round's frames in a row, as an agent's frame loop does. *_ms: the median of every
    frame; *_quietest_round_ms: the lowest median of one round (the machine at its quietest moment of the
    run); runs_at: what each model ran at."""
    figures: dict[str, dict[str, Any]] = {name: {} for name in analyzers}
    per_round = max(3, repeats // rounds)
    for label, photo in (("one_face_frame_ms", photos["astronaut"]), ("six_face_frame_ms", photos["t1"])):
        for analyzer in analyzers.values():
            for _ in range(3):
                analyzer.analyze(photo)
        blocks: dict[str, list[list[float]]] = {name: [] for name in analyzers}
        for _ in range(rounds):
            for name, analyzer in analyzers.items():
                analyzer.analyze(photo)  # its models back in the caches, as in an agent's frame loop
                samples = []
                for _ in range(per_round):
                    start = time.perf_counter()
                    analyzer.analyze(photo)
                    samples.append(time.perf_counter() - start)
                blocks[name].append(samples)
        for name, runs in blocks.items():
            every = [s for block in runs for s in block]
            figures[name][label] = round(statistics.median(every) * 1000, 2)
            figures[name][label.replace("_ms", "_quietest_round_ms")] = round(
                min(statistics.median(block) for block in runs) * 1000, 2
            )
    for name, analyzer in analyzers.items():
        figures[name]["runs_at"] = analyzer.runs_at()
    return figures


def precisions(
    store: ModelStore, scratch: Path, photos: dict[str, np.ndarray], repeats: int, rounds: int
) -> tuple[dict[str, Any], dict[str, FaceAnalyzer], StoredModel]:
    """End-to-end frames at every precision; the analyzers by name and SFace's INT8 variant. The
    INT8 variant of SFace is built first, as `models import-defaults` builds it on site (the bundled photos),
    so the auto choice weighs it like an agent does."""
    f32 = Runtime(RuntimeSettings(device="CPU", inference_precision="f32"))
    analyzers = {"f32": FaceAnalyzer(f32, store)}
    if "bf16" in f32.hint_precisions():
        analyzers["bf16"] = FaceAnalyzer(Runtime(RuntimeSettings(inference_precision="bf16")), store)
    source = store.active("embedding")
    stored = int8_variants(store, source)  # --state-dir: the one import-defaults built there
    variant = stored[0] if stored else quantize_locally(f32, store, source, sample_photos()).model
    auto = Runtime(RuntimeSettings(inference_precision="auto"))
    plan = PrecisionPlan(auto, store, cache=PrecisionCache(scratch / "cache" / "precision.json"))
    analyzers["auto"] = FaceAnalyzer(auto, store, precisions=plan)
    figures: dict[str, Any] = end_to_end(analyzers, photos, repeats, rounds)
    figures["auto"]["choices"] = {
        model.manifest.task: plan.choice(model).reason
        for model in (analyzers["auto"].detector_model, analyzers["auto"].embedding_model)
        if model is not None
    }
    # INT8 SFace as its own model (activated, or rolled out with a re-embedded gallery): accuracy only
    analyzers["int8_rollout"] = analyzers["auto"].with_model(variant)
    chosen = figures["auto"]
    figures["targets"] = {
        "chosen_defaults_one_face_frame_under_6_ms": chosen["one_face_frame_ms"] < 6,
        "chosen_defaults_six_face_frame_under_20_ms": chosen["six_face_frame_ms"] < 20,
        "at_the_quietest_round": {
            "one_face_frame_under_6_ms": chosen["one_face_frame_quietest_round_ms"] < 6,
            "six_face_frame_under_20_ms": chosen["six_face_frame_quietest_round_ms"] < 20,
        },
    }
    figures["auto_vs_f32"] = {
        frame: round(figures["f32"][frame] / chosen[frame], 2)
        for frame in ("one_face_frame_ms", "six_face_frame_ms")
    }
    return figures, analyzers, variant


def int8_accuracy(analyzers: dict[str, FaceAnalyzer], variant: StoredModel) -> dict[str, Any]:
    """INT8 against f32 SFace: the guard's cosines on held-out faces, and the genuine-min and impostor-max of
    the package photos (door_threshold's identities, faces that pass the quality gate; the INT8 model was
    calibrated on two of those photos, astronaut and t1) with f32 on both sides, INT8 on both sides (its
    own gallery, after a rollout), and INT8 faces against an f32 gallery (what auto runs when it chooses
    the variant)."""
    policy = QualityPolicy()
    float_faces = labelled_faces(analyzers["f32"], policy)
    int8_faces = labelled_faces(analyzers["int8_rollout"], policy)
    keep = ("identities", "faces", "genuine_pairs", "impostor_pairs", "genuine_min", "impostor_max")
    guard = variant.manifest.extra["quantization"]["guard"]
    return {
        "model": variant.manifest.model_id,
        "cosine_to_f32_held_out": {
            "faces": guard["held_out_faces"],
            "samples": guard["held_out_samples"],
            "min": guard["cosine_min"],
            "mean": guard["cosine_mean"],
        },
        "f32_photos": {key: scores(float_faces)[key] for key in keep},
        "int8_photos": {key: scores(int8_faces)[key] for key in keep},
        "int8_against_f32_gallery": mixed_scores(int8_faces, float_faces),
    }


def mixed_scores(probes: list[tuple[str, str, Any]], gallery: list[tuple[str, str, Any]]) -> dict[str, Any]:
    """Lowest genuine and highest impostor score of each face of probes against every other face of gallery
    (the same faces in the same order, embedded by two models)."""
    assert [(i, o) for i, o, _ in probes] == [(i, o) for i, o, _ in gallery], "not the same faces"
    genuine, impostor = [], []
    for a, b in itertools.permutations(range(len(probes)), 2):
        score = float(probes[a][2].embedding @ gallery[b][2].embedding)
        (genuine if probes[a][0] == gallery[b][0] else impostor).append(score)
    return {"genuine_min": round(min(genuine), 4), "impostor_max": round(max(impostor), 4)}


# Instruction sets that decide how fast bf16 and int8 run: VNNI and BF16 on AVX-512, and AMX tiles.
SPEED_FLAGS = (
    *("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16"),
    *("amx_bf16", "amx_int8", "amx_fp16"),
)


def machine() -> dict[str, Any]:
    """The CPU's model name, cores and which of SPEED_FLAGS it reports (/proc/cpuinfo on Linux), so that
    runs on different machines can be told apart."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        info = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        info = []
    for line in info:
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            name = value.strip()
        elif key.strip() == "flags":
            flags = set(value.split())
    speed_flags = [flag for flag in SPEED_FLAGS if flag in flags]
    return {"cpu": name, "cores": os.cpu_count(), "speed_flags": speed_flags}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer repeats (for a smoke run)")
    parser.add_argument("--state-dir", type=Path, help="use the models of this state directory")
    args = parser.parse_args()
    repeats, rounds = (10, 1) if args.quick else (40, 5)

    with tempfile.TemporaryDirectory() as scratch:
        store = ModelStore(Path(scratch) / "models")  # a copy: the INT8 variant is added to it
        base = RuntimeSettings(device="CPU", inference_precision="f32")
        if args.state_dir:
            shutil.copytree(args.state_dir / "models", store.root)
        else:
            import_defaults(Runtime(base), store)
        photos = {name: read_image(sample_photo(name)) for name in ("astronaut", "t1")}
        frames = [
            photos["astronaut"],
            photos["t1"],
            np.ascontiguousarray(photos["astronaut"][:, ::-1]),
            cv2.resize(photos["t1"], None, fx=0.75, fy=0.75),
        ] * (3 if args.quick else 8)
        one_face_frames = [photos["astronaut"], np.ascontiguousarray(photos["astronaut"][:, ::-1])] * (
            6 if args.quick else 20
        )

        analyzer = FaceAnalyzer(Runtime(base), store)
        result: dict[str, Any] = {
            "machine": machine(),
            "precision": "f32",
            "latency": stage_latency(analyzer, photos, repeats),
        }
        bf16 = FaceAnalyzer(Runtime(RuntimeSettings(device="CPU", inference_precision="bf16")), store)
        result["latency_bf16_where_the_cpu_has_it"] = stage_latency(bf16, photos, repeats)

        result["precisions"], analyzers, variant = precisions(store, Path(scratch), photos, repeats, rounds)
        result["int8"] = int8_accuracy(analyzers, variant)
        chosen = analyzers["auto"]  # the agent's defaults from here on
        result["frame_split_chosen_defaults"] = frame_split(chosen, photos, repeats)

        def sequential(batch: list[np.ndarray]) -> None:
            for frame in batch:
                chosen.analyze(frame)

        def asynchronous(target: FaceAnalyzer, jobs: int) -> Callable[[list[np.ndarray]], None]:
            return lambda batch: [None for _ in target.stream(batch, jobs=jobs)]  # type: ignore[func-returns-value]

        throughput_hint = Runtime(RuntimeSettings(inference_precision="auto", performance_hint="THROUGHPUT"))
        throughput_plan = PrecisionPlan(
            throughput_hint, store, cache=PrecisionCache(Path(scratch) / "cache" / "precision.json")
        )
        throughput_analyzer = FaceAnalyzer(throughput_hint, store, precisions=throughput_plan)
        mixes = {"mixed_frames": frames, "one_face_frames": one_face_frames}
        result["throughput"] = {"precisions": "auto (the chosen defaults)", "rounds": rounds}
        for label, batch in mixes.items():
            measured = fps_rounds(
                {
                    "sequential": sequential,
                    "latency_hint": asynchronous(chosen, 4),
                    "throughput_hint": asynchronous(throughput_analyzer, 4),
                },
                batch,
                rounds,
            )
            median = {way: statistics.median(values) for way, values in measured.items()}
            figures: dict[str, Any] = {"frames": len(batch)}
            for way, key in (
                ("sequential", "sequential"),
                ("latency_hint", "async_latency_hint"),
                ("throughput_hint", "async_throughput_hint"),
            ):
                figures[f"{key}_fps"] = round(median[way], 2)
                figures[f"{key}_best_round_fps"] = round(max(measured[way]), 2)
            ratios = {
                hint: median[f"{hint.lower()}_hint"] / median["sequential"]
                for hint in ("THROUGHPUT", "LATENCY")
            }
            figures["throughput_hint_vs_sequential"] = round(ratios["THROUGHPUT"], 2)
            figures["latency_hint_vs_sequential"] = round(ratios["LATENCY"], 2)
            better = max(ratios, key=lambda hint: ratios[hint])  # THROUGHPUT on a tie
            figures["async_vs_sequential"] = round(ratios[better], 2)
            figures["async_hint"] = better
            result["throughput"][label] = figures

        scaling = []
        for streams, threads in ((1, 1), (1, 2), (2, 2)):  # threads: in total, shared by the streams
            settings = RuntimeSettings(
                **{
                    **vars(base),
                    "performance_hint": "THROUGHPUT",
                    "num_streams": streams,
                    "num_threads": threads,
                }
            )
            scaled = FaceAnalyzer(Runtime(settings), store)
            fps = frames_per_second(asynchronous(scaled, 2 * streams), frames, rounds)
            scaling.append({"streams": streams, "threads": threads, "async_fps": fps})
        result["scaling_mixed_frames"] = scaling

        faces_aligned = [align_face(photos["t1"], d.landmarks_xy) for d in analyzer.detect(photos["t1"])]
        batch_tensor = np.stack([embedding_input(a) for a in faces_aligned])
        embedding_xml = store.active("embedding").xml_path
        batched = Runtime(base).compile(embedding_xml, input_shape=(len(faces_aligned), 3, 112, 112))
        single = Runtime(base).compile(embedding_xml)

        requests = [single.request() for _ in faces_aligned]

        def parallel_requests() -> None:
            for index, request in enumerate(requests):
                request.start(batch_tensor[index : index + 1])
            for request in requests:
                request.wait()

        result["six_faces_embedding"] = {
            "batch_ms": median_ms(lambda: batched.infer(batch_tensor), repeats),
            "parallel_requests_ms": median_ms(parallel_requests, repeats),
            "sequential_requests_ms": median_ms(
                lambda: [single.infer(batch_tensor[i : i + 1]) for i in range(6)], repeats
            ),
        }

        folded = Path(scratch) / "sface_folded.onnx"
        sface = locate_default(next(m for m in DEFAULT_MODELS if m.task == "embedding"))
        assert sface is not None
        fold_blocked_dequantize(sface[0], folded)
        opencv = OpenCvPipeline(folded)
        same_work = FaceAnalyzer(Runtime(base), store, AnalyzerSettings(expressions=False))
        baseline = compare_fps(
            {
                "opencv": lambda batch: [opencv.analyze(f) for f in batch],
                "openvino": lambda batch: [same_work.analyze(f) for f in batch],
            },
            frames,
            rounds,
        )
        opencv_fps, openvino_fps = baseline["opencv"], baseline["openvino"]
        opencv_one_face = median_ms(lambda: opencv.analyze(photos["astronaut"]), repeats)
        openvino_one_face = median_ms(lambda: same_work.analyze(photos["astronaut"]), repeats)
        result["opencv_dnn_baseline"] = {
            "opencv": cv2.__version__,
            "work": "detect + align + embed, sequential, same model files and frames",
            "opencv_one_face_frame_ms": opencv_one_face,
            "openvino_one_face_frame_ms": openvino_one_face,
            "opencv_fps_mixed_frames": opencv_fps,
            "openvino_fps_mixed_frames": openvino_fps,
            "openvino_vs_opencv": round(openvino_fps / opencv_fps, 2),
        }
        result["dlib_face_recognition_baseline"] = dlib_baseline(frames, rounds) or "not installed"
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
