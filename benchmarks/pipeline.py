"""Vision pipeline benchmark: per-stage latency, sequential vs asynchronous frames/s, scaling with
streams and threads, and the same models run through OpenCV's DNN module as the non-OpenVINO baseline.

Prints one JSON document. Every figure is measured in this run on the bundled real photos.
Usage: .venv/bin/python benchmarks/pipeline.py [--quick] [--state-dir DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from facefleet.vision.alignment import align_face
from facefleet.vision.images import read_image
from facefleet.vision.models.importer import DEFAULT_MODELS, import_defaults, locate_default
from facefleet.vision.models.onnx_fold import fold_blocked_dequantize
from facefleet.vision.models.store import ModelStore
from facefleet.vision.photos import sample_photo
from facefleet.vision.pipeline import AnalyzerSettings, FaceAnalyzer
from facefleet.vision.preprocess import embedding_input, expression_input
from facefleet.vision.runtime import Runtime, RuntimeSettings


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


def compare_fps(
    runs: dict[str, Callable[[list[np.ndarray]], object]], frames: list[np.ndarray], rounds: int
) -> dict[str, float]:
    """Best frames/s of each way of running, the ways interleaved round by round so that load from other
    processes on a shared machine hits them alike."""
    for run in runs.values():
        run(frames[:4])
    best = dict.fromkeys(runs, 0.0)
    for _ in range(rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            run(frames)
            best[name] = max(best[name], len(frames) / (time.perf_counter() - start))
    return {name: round(value, 2) for name, value in best.items()}


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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer repeats (for a smoke run)")
    parser.add_argument("--state-dir", type=Path, help="use the models of this state directory")
    args = parser.parse_args()
    repeats, rounds = (10, 1) if args.quick else (40, 5)

    with tempfile.TemporaryDirectory() as scratch:
        root = args.state_dir / "models" if args.state_dir else Path(scratch) / "models"
        store = ModelStore(root)
        base = RuntimeSettings(device="CPU", inference_precision="f32")
        if not args.state_dir:
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
            "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
            "precision": "f32",
            "latency": stage_latency(analyzer, photos, repeats),
        }
        bf16 = FaceAnalyzer(Runtime(RuntimeSettings(device="CPU", inference_precision="bf16")), store)
        result["latency_bf16_where_the_cpu_has_it"] = stage_latency(bf16, photos, repeats)

        def sequential(batch: list[np.ndarray]) -> None:
            for frame in batch:
                analyzer.analyze(frame)

        def asynchronous(target: FaceAnalyzer, jobs: int) -> Callable[[list[np.ndarray]], None]:
            return lambda batch: [None for _ in target.stream(batch, jobs=jobs)]  # type: ignore[func-returns-value]

        throughput_analyzer = FaceAnalyzer(
            Runtime(RuntimeSettings(**{**vars(base), "performance_hint": "THROUGHPUT"})), store
        )
        mixes = {"mixed_frames": frames, "one_face_frames": one_face_frames}
        result["throughput"] = {}
        for label, batch in mixes.items():
            fps = compare_fps(
                {
                    "sequential": sequential,
                    "latency": asynchronous(analyzer, 4),
                    "throughput": asynchronous(throughput_analyzer, 4),
                },
                batch,
                rounds,
            )
            seq, latency_async, throughput_async = fps["sequential"], fps["latency"], fps["throughput"]
            best = max(latency_async, throughput_async)
            result["throughput"][label] = {
                "frames": len(batch),
                "sequential_fps": seq,
                "async_latency_hint_fps": latency_async,
                "async_throughput_hint_fps": throughput_async,
                "async_vs_sequential": round(best / seq, 2),
            }

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
        fps = compare_fps(
            {
                "opencv": lambda batch: [opencv.analyze(f) for f in batch],
                "openvino": lambda batch: [same_work.analyze(f) for f in batch],
            },
            frames,
            rounds,
        )
        opencv_fps, openvino_fps = fps["opencv"], fps["openvino"]
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
