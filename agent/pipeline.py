"""From a BGR frame to analysed faces: detect → align → quality → embed → expression.

`FaceAnalyzer.analyze` runs one frame synchronously. `FaceAnalyzer.stream` keeps several frames in
flight with OpenVINO asynchronous requests, so inference of one frame overlaps the Python pre- and
post-processing of its neighbours; it yields results in frame order. The faces of a frame go through the
embedding and expression models as one batch.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from agent import detection
from agent.alignment import align_face
from agent.detection import DetectorSettings
from agent.faces import Detection, Expression, Face
from agent.images import to_bgr8
from agent.models.store import ModelStore, StoredModel
from agent.preprocess import embedding_input, expression_input, normalise_embeddings, softmax_if_needed
from agent.quality import assess
from agent.runtime import CompiledNet, Outputs, Request, Runtime

Frame = npt.NDArray[np.uint8]
DETECTOR_CACHE_SIZE = 8


@dataclass(frozen=True)
class AnalyzerSettings:
    """What to compute per face, YuNet settings, and jobs: frames in flight in stream() (0 = auto)."""

    detector: DetectorSettings = field(default_factory=DetectorSettings)
    embeddings: bool = True
    expressions: bool = True
    jobs: int = 0


class FaceAnalyzer:
    """The active detection, embedding and expression models of a store, compiled on one runtime."""

    def __init__(self, runtime: Runtime, store: ModelStore, settings: AnalyzerSettings | None = None) -> None:
        self.runtime = runtime
        self.settings = settings or AnalyzerSettings()
        self.detector_model = store.active("detection")
        store.check(self.detector_model)
        self.embedding_model: StoredModel | None = None
        self.expression_model: StoredModel | None = None
        self._embedder: CompiledNet | None = None
        self._classifier: CompiledNet | None = None
        if self.settings.embeddings:
            self.embedding_model = store.active("embedding")
            store.check(self.embedding_model)
            self._embedder = runtime.compile(self.embedding_model.xml_path, input_shape=(-1, 3, 112, 112))
        if self.settings.expressions:
            self.expression_model = store.active("expression")
            store.check(self.expression_model)
            self._classifier = runtime.compile(self.expression_model.xml_path, input_shape=(-1, 64, 64, 1))
        self._detectors: OrderedDict[tuple[int, ...], CompiledNet] = OrderedDict()
        self._detectors_lock = threading.Lock()

    @property
    def embedding_model_id(self) -> str | None:
        return self.embedding_model.manifest.model_id if self.embedding_model else None

    def analyze(self, frame: npt.NDArray[Any]) -> list[Face]:
        """All faces of one frame (any size, grey/BGR/BGRA, 8 or 16 bit), best detection score first."""
        frame_bgr = to_bgr8(frame)
        return self.describe(frame_bgr, self.detect(frame_bgr))

    def detect(self, frame_bgr: Frame) -> list[Detection]:
        prepared = detection.prepare(frame_bgr, self.settings.detector)
        outputs = self._detector(prepared.tensor.shape).infer(prepared.tensor)
        return detection.decode(outputs, prepared, self.settings.detector)

    def describe(self, frame_bgr: Frame, detections: list[Detection]) -> list[Face]:
        """Align each detection, assess its quality and run the embedding and expression models on all
        faces of the frame as one batch (measured faster than one request per face)."""
        aligned = [align_face(frame_bgr, det.landmarks_xy) for det in detections]
        batches = self.face_batches(frame_bgr, detections, aligned)
        results = {kind: net.infer(tensor) for kind, (net, tensor) in batches.items()}
        return self.faces(detections, aligned, results)

    def face_batches(
        self, frame_bgr: Frame, detections: list[Detection], aligned: list[Frame]
    ) -> dict[str, tuple[CompiledNet, npt.NDArray[np.float32]]]:
        """Input batches of the face models for one frame's faces: kind → (net, (N, …) tensor)."""
        if not detections:
            return {}
        batches = {}
        if self._embedder is not None:
            batches["embedding"] = (self._embedder, np.stack([embedding_input(crop) for crop in aligned]))
        if self._classifier is not None:
            tensor = np.stack([expression_input(frame_bgr, det.box_xyxy) for det in detections])
            batches["expression"] = (self._classifier, tensor)
        return batches

    def faces(
        self, detections: list[Detection], aligned: list[Frame], results: dict[str, Outputs]
    ) -> list[Face]:
        """Faces from detections, their aligned crops and the face models' batch outputs by kind."""
        embeddings = expressions = None
        if "embedding" in results:
            embeddings = normalise_embeddings(next(iter(results["embedding"].values())))
        if "expression" in results:
            expressions = softmax_if_needed(next(iter(results["expression"].values())))
        return [
            Face(
                detection=det,
                quality=assess(det, crop),
                embedding=None if embeddings is None else embeddings[i],
                expression=None if expressions is None else Expression.from_probabilities(expressions[i]),
                embedding_model=self.embedding_model_id if embeddings is not None else None,
            )
            for i, (det, crop) in enumerate(zip(detections, aligned, strict=True))
        ]

    def stream(self, frames: Iterable[npt.NDArray[Any]], jobs: int | None = None) -> Iterator[list[Face]]:
        """Analyse frames with inference in flight while Python pre/post-processes; results in input order."""
        return _Stream(self, jobs or self.settings.jobs or self._auto_jobs()).run(frames)

    def _detector(self, shape: tuple[int, ...]) -> CompiledNet:
        """The detector compiled for one input shape; a few shapes are kept, least recently used dropped."""
        with self._detectors_lock:
            net = self._detectors.get(shape)
            if net is None:
                net = self.runtime.compile(self.detector_model.xml_path, input_shape=shape)
                self._detectors[shape] = net
                while len(self._detectors) > DETECTOR_CACHE_SIZE:
                    self._detectors.popitem(last=False)
            self._detectors.move_to_end(shape)
            return net

    def _auto_jobs(self) -> int:
        """Pipeline depth: at least 2 frames, more when the device runs several requests at once."""
        optimal = self._embedder.optimal_requests if self._embedder is not None else 1
        return max(2, optimal)


@dataclass
class _FrameJob:
    """One frame on its way through the stream."""

    frame: Frame
    prepared: detection.DetectorInput
    detections: list[Detection] = field(default_factory=list)
    aligned: list[Frame] = field(default_factory=list)
    requests: dict[str, Request] = field(default_factory=dict)


class _Stream:
    """A software pipeline on one Python thread: while OpenVINO runs started requests on its own threads
    (without the GIL), Python prepares the next frame and decodes and aligns the previous one. Stages are
    first in, first out, so frames come out in input order.

    Callbacks (AsyncInferQueue) would run Python on OpenVINO's threads, which then wait for the GIL behind
    the pre/post-processing; explicit start/wait keeps the inference threads free of Python."""

    def __init__(self, analyzer: FaceAnalyzer, depth: int) -> None:
        self.analyzer = analyzer
        self.depth = max(1, depth)
        self.detecting: deque[tuple[_FrameJob, Request]] = deque()
        self.describing: deque[_FrameJob] = deque()
        self.free: dict[object, list[Request]] = {}

    def run(self, frames: Iterable[npt.NDArray[Any]]) -> Iterator[list[Face]]:
        for frame in frames:
            frame_bgr = to_bgr8(frame)
            job = _FrameJob(frame_bgr, detection.prepare(frame_bgr, self.analyzer.settings.detector))
            shape = job.prepared.tensor.shape
            request = self._take(shape, self.analyzer._detector(shape))
            request.start(job.prepared.tensor)
            self.detecting.append((job, request))
            if len(self.detecting) >= self.depth:
                yield from self._finish_detection()
        while self.detecting:
            yield from self._finish_detection()
        while self.describing:
            yield self._finish_faces()

    def _take(self, key: object, net: CompiledNet) -> Request:
        pool = self.free.setdefault(key, [])
        return pool.pop() if pool else net.request()

    def _finish_detection(self) -> Iterator[list[Face]]:
        """Wait for the oldest detection, then start the face models on its faces."""
        job, request = self.detecting.popleft()
        outputs = request.wait()
        self.free[job.prepared.tensor.shape].append(request)
        job.detections = detection.decode(outputs, job.prepared, self.analyzer.settings.detector)
        job.aligned = [align_face(job.frame, det.landmarks_xy) for det in job.detections]
        while len(self.describing) >= self.depth:
            yield self._finish_faces()
        for kind, (net, tensor) in self.analyzer.face_batches(job.frame, job.detections, job.aligned).items():
            face_request = self._take(kind, net)
            face_request.start(tensor)
            job.requests[kind] = face_request
        self.describing.append(job)

    def _finish_faces(self) -> list[Face]:
        job = self.describing.popleft()
        results = {}
        for kind, request in job.requests.items():
            results[kind] = request.wait()
            self.free.setdefault(kind, []).append(request)
        return self.analyzer.faces(job.detections, job.aligned, results)
