"""From a BGR frame to analysed faces: detect → align → quality → embed → expression.

`FaceAnalyzer.analyze` runs one frame synchronously. `FaceAnalyzer.stream` keeps several frames and
faces in flight with OpenVINO asynchronous requests while Python decodes and aligns on another thread,
so both cores stay busy; it yields results in frame order.
"""

from __future__ import annotations

import queue
import threading
from collections import OrderedDict
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
from agent.runtime import AsyncQueue, CompiledNet, Outputs, Runtime

Frame = npt.NDArray[np.uint8]
DETECTOR_CACHE_SIZE = 8


@dataclass(frozen=True)
class AnalyzerSettings:
    """What to compute per face; detector settings for YuNet; jobs: async requests per model (0 = auto)."""

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
        for model in (self.detector_model,):
            store.check(model)
        self.embedding_model: StoredModel | None = None
        self.expression_model: StoredModel | None = None
        self._embedder: CompiledNet | None = None
        self._classifier: CompiledNet | None = None
        if self.settings.embeddings:
            self.embedding_model = store.active("embedding")
            store.check(self.embedding_model)
            self._embedder = runtime.compile(self.embedding_model.xml_path)
        if self.settings.expressions:
            self.expression_model = store.active("expression")
            store.check(self.expression_model)
            self._classifier = runtime.compile(self.expression_model.xml_path)
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
        """Align each detection, assess its quality and run the embedding and expression models on it."""
        faces = []
        for det in detections:
            aligned = align_face(frame_bgr, det.landmarks_xy)
            embedding = expression = None
            if self._embedder is not None:
                raw = self._embedder.infer(embedding_input(aligned)[None])
                embedding = normalise_embeddings(next(iter(raw.values())))[0]
            if self._classifier is not None:
                raw = self._classifier.infer(expression_input(frame_bgr, det.box_xyxy)[None])
                expression = Expression.from_probabilities(softmax_if_needed(next(iter(raw.values())))[0])
            faces.append(self._face(det, aligned, embedding, expression))
        return faces

    def stream(self, frames: Iterable[npt.NDArray[Any]], jobs: int | None = None) -> Iterator[list[Face]]:
        """Analyse frames with inference in flight while Python pre/post-processes; results in input order."""
        return _Stream(self, jobs or self.settings.jobs or self._auto_jobs()).run(frames)

    def _face(
        self,
        det: Detection,
        aligned: Frame,
        embedding: npt.NDArray[np.float32] | None,
        expression: Expression | None,
    ) -> Face:
        return Face(
            detection=det,
            quality=assess(det, aligned),
            embedding=embedding,
            expression=expression,
            embedding_model=self.embedding_model_id if embedding is not None else None,
        )

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
        return max(2, self._detector((1, 3, 32, 32)).optimal_requests)


@dataclass
class _FrameJob:
    """One frame on its way through the stream, filled in as its inferences finish."""

    index: int
    frame: Frame
    prepared: detection.DetectorInput | None = None
    detections: list[Detection] = field(default_factory=list)
    aligned: list[Frame] = field(default_factory=list)
    embeddings: dict[int, npt.NDArray[np.float32]] = field(default_factory=dict)
    expressions: dict[int, Expression] = field(default_factory=dict)
    pending: int = 0


@dataclass(frozen=True)
class _Event:
    """A finished inference: of which model (kind), for which frame job and face."""

    kind: str
    job: _FrameJob
    face_index: int
    outputs: Outputs


class _Stream:
    """Three overlapping stages: a feeder thread prepares frames and starts detection; a post-processing
    thread decodes, aligns and starts the face models; the caller's thread yields finished frames in order.
    OpenVINO callbacks only queue events, so no Python work runs on inference threads."""

    def __init__(self, analyzer: FaceAnalyzer, jobs: int) -> None:
        self.analyzer = analyzer
        self.jobs = jobs
        self.events: queue.Queue[_Event | None] = queue.Queue()
        self.finished: queue.Queue[_FrameJob | BaseException | None] = queue.Queue()
        self.in_flight = threading.Semaphore(2 * jobs)
        self.detector_queues: dict[tuple[int, ...], AsyncQueue] = {}
        self.embed_queue = self._face_queue(analyzer._embedder, "embedding")
        self.expression_queue = self._face_queue(analyzer._classifier, "expression")
        self.stop = threading.Event()

    def run(self, frames: Iterable[npt.NDArray[Any]]) -> Iterator[list[Face]]:
        feeder = threading.Thread(target=self._feed, args=(frames,), name="facefleet-feed", daemon=True)
        post = threading.Thread(target=self._post, name="facefleet-post", daemon=True)
        feeder.start()
        post.start()
        ready: dict[int, _FrameJob] = {}
        next_index = 0
        try:
            while (item := self.finished.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                ready[item.index] = item
                while next_index in ready:
                    job = ready.pop(next_index)
                    next_index += 1
                    self.in_flight.release()
                    yield self._faces(job)
        finally:
            self.stop.set()
            feeder.join()
            post.join()

    def _feed(self, frames: Iterable[npt.NDArray[Any]]) -> None:
        try:
            for index, frame in enumerate(frames):
                while not self.in_flight.acquire(timeout=0.1):
                    if self.stop.is_set():
                        return
                if self.stop.is_set():
                    return
                job = _FrameJob(index=index, frame=to_bgr8(frame))
                job.prepared = detection.prepare(job.frame, self.analyzer.settings.detector)
                self._detector_queue(job.prepared.tensor.shape).submit(job.prepared.tensor, job)
            for detector_queue in self.detector_queues.values():
                detector_queue.wait_all()
        except BaseException as exc:
            self.finished.put(exc)
        finally:
            self.events.put(None)

    def _post(self) -> None:
        try:
            while (event := self.events.get()) is not None:
                if event.kind == "detection":
                    self._start_faces(event.job, event.outputs)
                else:
                    self._face_result(event)
            self._drain_faces()
        except BaseException as exc:
            self.finished.put(exc)
        self.finished.put(None)

    def _drain_faces(self) -> None:
        """After the last frame: wait for the face models and handle what they still report."""
        for face_queue in (self.embed_queue, self.expression_queue):
            if face_queue is not None:
                face_queue.wait_all()
        while not self.events.empty():
            event = self.events.get()
            if event is not None:
                self._face_result(event)

    def _start_faces(self, job: _FrameJob, outputs: Outputs) -> None:
        assert job.prepared is not None
        job.detections = detection.decode(outputs, job.prepared, self.analyzer.settings.detector)
        job.aligned = [align_face(job.frame, det.landmarks_xy) for det in job.detections]
        face_queues = [q for q in (self.embed_queue, self.expression_queue) if q is not None]
        job.pending = len(job.detections) * len(face_queues)
        if job.pending == 0:
            self.finished.put(job)
            return
        for face_index, (det, aligned) in enumerate(zip(job.detections, job.aligned, strict=True)):
            if self.embed_queue is not None:
                self.embed_queue.submit(embedding_input(aligned)[None], (job, face_index))
            if self.expression_queue is not None:
                self.expression_queue.submit(
                    expression_input(job.frame, det.box_xyxy)[None], (job, face_index)
                )

    def _face_result(self, event: _Event) -> None:
        raw = next(iter(event.outputs.values()))
        job = event.job
        if event.kind == "embedding":
            job.embeddings[event.face_index] = normalise_embeddings(raw)[0]
        else:
            job.expressions[event.face_index] = Expression.from_probabilities(softmax_if_needed(raw)[0])
        job.pending -= 1
        if job.pending == 0:
            self.finished.put(job)

    def _faces(self, job: _FrameJob) -> list[Face]:
        return [
            self.analyzer._face(det, aligned, job.embeddings.get(i), job.expressions.get(i))
            for i, (det, aligned) in enumerate(zip(job.detections, job.aligned, strict=True))
        ]

    def _detector_queue(self, shape: tuple[int, ...]) -> AsyncQueue:
        detector_queue = self.detector_queues.get(shape)
        if detector_queue is None:
            net = self.analyzer._detector(shape)
            detector_queue = net.async_queue(self.jobs, self._on_detection)
            self.detector_queues[shape] = detector_queue
        return detector_queue

    def _face_queue(self, net: CompiledNet | None, kind: str) -> AsyncQueue | None:
        if net is None:
            return None

        def on_done(outputs: Outputs, userdata: Any) -> None:
            job, face_index = userdata
            self.events.put(_Event(kind, job, face_index, outputs))

        return net.async_queue(self.jobs, on_done)

    def _on_detection(self, outputs: Outputs, job: Any) -> None:
        self.events.put(_Event("detection", job, -1, outputs))
