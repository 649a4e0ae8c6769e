"""From a BGR frame to analysed faces: detect → align → quality → embed → expression.

`FaceAnalyzer.analyze` runs one frame synchronously. `FramePipeline` keeps several frames in flight with
OpenVINO asynchronous requests, so inference of one frame overlaps the Python pre- and post-processing of
its neighbours (and the caller's work on finished frames); frames are pushed in and come out in order.
`FaceAnalyzer.stream` runs an iterable of frames through it. The faces of a frame go through the
embedding and expression models as one batch.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

import numpy as np
import numpy.typing as npt

from facefleet.vision import detection
from facefleet.vision.alignment import align_face
from facefleet.vision.attributes import CHIP_INPUTS, Attributes, face_inputs
from facefleet.vision.detection import DetectorSettings
from facefleet.vision.errors import ModelStoreError
from facefleet.vision.faces import Detection, Expression, Face
from facefleet.vision.images import to_bgr8
from facefleet.vision.models.store import ModelStore, StoredModel, check_model
from facefleet.vision.precision.plan import PrecisionPlan
from facefleet.vision.preprocess import (
    embedding_input,
    expression_input,
    normalise_embeddings,
    softmax_if_needed,
)
from facefleet.vision.quality import assess
from facefleet.vision.runtime import CompiledNet, Outputs, Request, Runtime

Frame = npt.NDArray[np.uint8]
NET_CACHE_SIZE = 24
DYNAMIC_BATCH = -1
"""The batch dimension of a model compiled for any number of faces."""
ANY_BATCH = ("embedding", "expression", "attributes")
"""The face models compiled once for any number of faces, when their graph allows it (see net())."""
T = TypeVar("T")
Observe = Callable[[str, str, float], None]
"""observe(task, model_id, seconds): one frame's inference time of one model."""
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _SharedNets:
    """What an analyzer hands its clone (with_model): its compiled models of the tasks that keep their
    model, by (kind, input shape), and whether each such kind takes a batch of any size."""

    nets: list[tuple[tuple[str, tuple[int, ...]], CompiledNet]]
    batch_any: dict[str, bool]


@dataclass(frozen=True)
class AnalyzerSettings:
    """What to compute per face, YuNet settings, and jobs: frames in flight in stream() (0 = auto)."""

    detector: DetectorSettings = field(default_factory=DetectorSettings)
    embeddings: bool = True
    expressions: bool = True
    attributes: bool = False
    jobs: int = 0


class FaceAnalyzer:
    """The active detection, embedding and expression models of a store, compiled on one runtime."""

    def __init__(
        self,
        runtime: Runtime,
        store: ModelStore | None,
        settings: AnalyzerSettings | None = None,
        *,
        models: Mapping[str, StoredModel] | None = None,
        precisions: PrecisionPlan | None = None,
        _shared: _SharedNets | None = None,
    ) -> None:
        """The store's active models, or those given in models (task → model) instead. Every model's files
        are checked against its manifest first (ModelIntegrityError). precisions: what each model is
        compiled at (and which IR, for an INT8 variant); None: the runtime's default precision. _shared:
        models already compiled by the analyzer this one is cloned from (with_model), used as they are."""
        self.runtime = runtime
        self.precisions = precisions
        self.settings = settings or AnalyzerSettings()
        chosen = dict(models or {})
        wanted = ("detection",) + ("embedding",) * self.settings.embeddings
        wanted += ("expression",) * self.settings.expressions
        wanted += ("attributes",) * self.settings.attributes
        for task in wanted:
            if task not in chosen:
                if store is None:
                    raise ModelStoreError(f"no {task} model was given to the analyzer")
                chosen[task] = store.active(task)
            check_model(chosen[task])
        self.detector_model = chosen["detection"]
        self.embedding_model = chosen.get("embedding") if self.settings.embeddings else None
        self.expression_model = chosen.get("expression") if self.settings.expressions else None
        self.attributes_model = chosen.get("attributes") if self.settings.attributes else None
        if precisions is not None:  # measure what has no choice yet now, not at the first frame
            precisions.prepare(list(chosen.values()))
        self._nets: OrderedDict[tuple[str, tuple[int, ...]], CompiledNet] = OrderedDict()
        self._nets_lock = threading.Lock()
        self._batch_any: dict[str, bool] = {}
        """kind → whether its model was compiled for any batch size (decided at its first compile)."""
        if _shared is not None:
            self._nets.update(_shared.nets)
            self._batch_any.update(_shared.batch_any)
        for kind, shape in (
            ("embedding", (1, 3, 112, 112)),
            ("expression", (1, 64, 64, 1)),
            ("attributes", (1,)),
        ):
            if self._model(kind) is not None:
                self.net(kind, shape)  # compile the single-face shapes up front

    def with_model(self, model: StoredModel, precisions: PrecisionPlan | None = None) -> FaceAnalyzer:
        """A new analyzer that runs `model` for its task and shares the compiled models of the other tasks;
        precisions: the plan it resolves precisions with (default: this analyzer's).

        The new model is compiled here, for every input shape this analyzer has compiled its predecessor
        for, so the first frames after a switch do not wait for a compilation."""
        task = model.manifest.task
        if task not in ("detection", "embedding", "expression", "attributes"):
            raise ValueError(f"the analyzer runs no {task} model")
        current = {"detection": self.detector_model, "embedding": self.embedding_model}
        current["expression"] = self.expression_model
        current["attributes"] = self.attributes_model
        models = {kind: m for kind, m in current.items() if m is not None}
        models[task] = model
        settings = replace(
            self.settings,
            embeddings=self.settings.embeddings or task == "embedding",
            expressions=self.settings.expressions or task == "expression",
            attributes=self.settings.attributes or task == "attributes",
        )
        with self._nets_lock:
            shared = _SharedNets(
                [(key, net) for key, net in self._nets.items() if key[0] != task],
                {kind: any_batch for kind, any_batch in self._batch_any.items() if kind != task},
            )
            # a batch of any size is asked for as one face: the new model may fix its batch
            shapes = [(1, *k[1:]) if k[0] == DYNAMIC_BATCH else k for kind, k in self._nets if kind == task]
        clone = FaceAnalyzer(
            self.runtime,
            None,
            settings,
            models=models,
            precisions=precisions or self.precisions,
            _shared=shared,
        )
        for shape in shapes:
            clone.net(task, shape)
        return clone

    @property
    def embedding_model_id(self) -> str | None:
        return self.embedding_model.manifest.model_id if self.embedding_model else None

    def runs_at(self) -> dict[str, str]:
        """task → what its model runs at on the device: the inference precision ('f32', 'bf16', 'f16'), or
        'int8 (<model id>)' when an INT8 variant runs in the float model's place."""
        models = (self.detector_model, self.embedding_model, self.expression_model, self.attributes_model)
        return {
            model.manifest.task: (
                self.precisions.choice(model).label
                if self.precisions is not None
                else self.runtime.default_precision()
            )
            for model in models
            if model is not None
        }

    def analyze(self, frame: npt.NDArray[Any]) -> list[Face]:
        """All faces of one frame (any size, grey/BGR/BGRA, 8 or 16 bit), best detection score first."""
        frame_bgr = to_bgr8(frame)
        return self.describe(frame_bgr, self.detect(frame_bgr))

    def detect(self, frame_bgr: Frame) -> list[Detection]:
        prepared = detection.prepare(frame_bgr, self.settings.detector)
        outputs = self.net("detection", prepared.tensor.shape).infer(prepared.tensor)
        return detection.decode(outputs, prepared, self.settings.detector)

    def describe(self, frame_bgr: Frame, detections: list[Detection]) -> list[Face]:
        """Align each detection, assess its quality and run the embedding and expression models on all
        faces of the frame as one batch (measured faster than one request per face)."""
        aligned = [align_face(frame_bgr, det.landmarks_xy) for det in detections]
        batches = self.face_batches(frame_bgr, detections, aligned)
        results = {kind: net.infer(tensor) for kind, (net, tensor) in batches.items()}
        return self.faces(detections, aligned, results, self.attributes_of(frame_bgr, detections))

    def attributes_of(self, frame_bgr: Frame, detections: list[Detection]) -> list[Attributes] | None:
        """Gender and age of each face (None when the attributes task is off): the package's chips from
        YuNet's landmarks, both models in one synchronous request for the frame's faces."""
        if self.attributes_model is None or not detections:
            return None
        inputs = face_inputs(frame_bgr, [d.landmarks_xy for d in detections])
        outputs = self.net("attributes", (len(detections),)).infer_inputs(inputs)
        return [
            Attributes.from_outputs(outputs["gender"][i], outputs["age"][i]) for i in range(len(detections))
        ]

    def face_batches(
        self, frame_bgr: Frame, detections: list[Detection], aligned: list[Frame]
    ) -> dict[str, tuple[CompiledNet, npt.NDArray[np.float32]]]:
        """Input batches of the face models for one frame's faces: kind → (net, (N, …) tensor)."""
        if not detections:
            return {}
        batches = {}
        if self.embedding_model is not None:
            tensor = np.stack([embedding_input(crop) for crop in aligned])
            batches["embedding"] = (self.net("embedding", tensor.shape), tensor)
        if self.expression_model is not None:
            tensor = np.stack([expression_input(frame_bgr, det.box_xyxy) for det in detections])
            batches["expression"] = (self.net("expression", tensor.shape), tensor)
        return batches

    def faces(
        self,
        detections: list[Detection],
        aligned: list[Frame],
        results: dict[str, Outputs],
        attributes: list[Attributes] | None = None,
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
                attributes=None if attributes is None else attributes[i],
            )
            for i, (det, crop) in enumerate(zip(detections, aligned, strict=True))
        ]

    def stream(self, frames: Iterable[npt.NDArray[Any]], jobs: int | None = None) -> Iterator[list[Face]]:
        """Analyse frames with inference in flight while Python pre/post-processes; results in input order."""
        pipeline: FramePipeline[None] = FramePipeline(self, jobs or self.settings.jobs or self._auto_jobs())
        for frame in frames:
            for _, faces in pipeline.submit(None, frame):
                yield faces
        while pipeline.in_flight:  # a failed frame raises; the frames after it come from the next drain
            for _, faces in pipeline.drain():
                yield faces

    def net(self, kind: str, shape: tuple[int, ...]) -> CompiledNet:
        """A model compiled for an input shape (a frame size, a batch of N faces).

        The embedding, expression and attributes models are compiled once for any number of faces (a
        dynamic batch): on the CPU as fast as a static batch, with the same outputs, where each static
        batch size holds its own copy of the weights and buffers (about 100 MB for SFace at 1 and 6 faces,
        6 MB more per face count for mini-Xception) and costs a compilation in the frame loop the first
        time that many faces are seen (0.2–0.4 s for the attributes model). A model whose graph fixes its
        batch keeps static shapes. The expression model
        always runs on one stream (LATENCY): OpenVINO 2026.4's CPU plugin computed wrong expression scores
        with a dynamic batch under the THROUGHPUT hint. The other models keep static shapes (a frame size
        is a camera's). The most recently used shapes are kept."""
        with self._nets_lock:
            if self._batch_any.get(kind):
                shape = (DYNAMIC_BATCH, *shape[1:])
            key = (kind, tuple(shape))
            net = self._nets.get(key)
            if net is None:
                net, key = self._compile(kind, key[1])
                self._nets[key] = net
                while len(self._nets) > NET_CACHE_SIZE:
                    self._nets.popitem(last=False)
            self._nets.move_to_end(key)
            return net

    def _compile(self, kind: str, shape: tuple[int, ...]) -> tuple[CompiledNet, tuple[str, tuple[int, ...]]]:
        """The model of `kind` compiled for `shape` (or for any batch size, see net()), with its cache key."""
        model = self._model(kind)
        if model is None:
            raise ValueError(f"no {kind} model is loaded")
        xml, precision = model.xml_path, None
        if self.precisions is not None:
            compilation = self.precisions.compilation(model)
            xml, precision = compilation.xml_path, compilation.precision

        def compiled(batch_shape: tuple[int, ...]) -> CompiledNet:
            if kind == "attributes":  # two inputs, a batch of batch_shape[0] faces
                batch = batch_shape[0]
                shapes = {name: (batch, 3, size, size) for name, size in CHIP_INPUTS.items()}
                return self.runtime.compile(xml, input_shapes=shapes, precision=precision)
            if kind == "detection":
                return detection.compile_detector(self.runtime, xml, batch_shape, precision)
            return self.runtime.compile(
                xml, input_shape=batch_shape, single_stream=kind == "expression", precision=precision
            )

        if kind in ANY_BATCH and kind not in self._batch_any:
            any_batch = (DYNAMIC_BATCH, *shape[1:])
            try:
                net = compiled(any_batch)
            except RuntimeError as exc:  # e.g. a Reshape in the graph that fixes the batch
                log.info("%s keeps static batch sizes: %s", model.manifest.model_id, str(exc).splitlines()[0])
                self._batch_any[kind] = False
            else:
                self._batch_any[kind] = True
                return net, (kind, any_batch)
        # The expression model runs one request at a time: OpenVINO 2026.4's CPU plugin returned wrong
        # expression scores for concurrent requests on several streams (THROUGHPUT hint).
        return compiled(shape), (kind, shape)

    def _model(self, kind: str) -> StoredModel | None:
        return {
            "detection": self.detector_model,
            "embedding": self.embedding_model,
            "attributes": self.attributes_model,
        }.get(kind, self.expression_model)

    def _auto_jobs(self) -> int:
        """Pipeline depth: at least 2 frames, more when the device runs several requests at once."""
        optimal = self.net("embedding", (1, 3, 112, 112)).optimal_requests if self.embedding_model else 1
        return max(2, optimal)


@dataclass
class _FrameJob(Generic[T]):
    """One frame on its way through the pipeline, with the caller's tag; error: why it failed (it then goes
    on through the stages, in its place, and comes out as that error)."""

    tag: T
    frame: Frame
    prepared: detection.DetectorInput
    detections: list[Detection] = field(default_factory=list)
    aligned: list[Frame] = field(default_factory=list)
    requests: dict[str, list[Request]] = field(default_factory=dict)
    error: Exception | None = None


class FramePipeline(Generic[T]):
    """A software pipeline on one Python thread: while OpenVINO runs started requests on its own threads
    (without the GIL), Python prepares the next frame and decodes and aligns the previous one. Stages are
    first in, first out, so frames come out in submission order.

    Push-style: submit(tag, frame) starts a frame and returns the (tag, faces) of the frames completed
    meanwhile; poll() completes, without blocking, the frames whose requests have finished; drain()
    completes every frame in flight. depth: frames held by each stage (detection, face models), so at most
    2·depth - 1 frames are in flight after a submit. A pipeline runs one analyzer: to change models, drain
    it and start another.

    A frame that fails (its inference, decoding or face models raise) does not take others with it: its
    exception is raised once, by the call that would have returned it, after the frames before it were
    returned (by an earlier call); the frames after it stay in the pipeline and come out, in order, from the
    next calls (in_flight counts them). A frame submit() cannot read raises there and is not taken.

    observe(task, model_id, seconds), if given, receives each frame's inference time per model: OpenVINO's
    time from the start of the request to its completion (the parts of a split batch: the longest), which
    includes waiting behind requests of other frames running at the same time on the device, and excludes
    the Python work around it; attributes, which run synchronously, are timed by the wall clock.

    Callbacks (AsyncInferQueue) would run Python on OpenVINO's threads, which then wait for the GIL behind
    the pre/post-processing; explicit start/wait keeps the inference threads free of Python."""

    def __init__(self, analyzer: FaceAnalyzer, depth: int, observe: Observe | None = None) -> None:
        self.analyzer = analyzer
        self.depth = max(1, depth)
        self.observe = observe
        self.detecting: deque[tuple[_FrameJob[T], Request]] = deque()
        self.describing: deque[_FrameJob[T]] = deque()
        self.completed: deque[tuple[T, list[Face] | Exception]] = deque()
        """Frames through both stages, oldest first, not yet returned: their faces, or why they failed."""
        self.free: OrderedDict[CompiledNet, list[Request]] = OrderedDict()
        """Idle requests by compiled model, the most recently used last (at most NET_CACHE_SIZE models, so
        that a long-lived pipeline does not keep the models of frame sizes long gone)."""

    @property
    def in_flight(self) -> int:
        """Frames submitted and not yet returned (or raised)."""
        return len(self.detecting) + len(self.describing) + len(self.completed)

    def submit(self, tag: T, frame: npt.NDArray[Any]) -> list[tuple[T, list[Face]]]:
        """Start one frame; the frames completed meanwhile, oldest first."""
        frame_bgr = to_bgr8(frame)
        job = _FrameJob(tag, frame_bgr, detection.prepare(frame_bgr, self.analyzer.settings.detector))
        request = self._take(self.analyzer.net("detection", job.prepared.tensor.shape))
        try:
            request.start(job.prepared.tensor)  # copied into the request: decode needs only its shape
        except BaseException:
            self._release(request)
            raise
        job.prepared = replace(job.prepared, tensor=np.broadcast_to(np.float32(0), job.prepared.tensor.shape))
        self.detecting.append((job, request))
        if len(self.detecting) >= self.depth:
            self._finish_detection()
        return self._deliver()

    def poll(self) -> list[tuple[T, list[Face]]]:
        """The frames that can be completed without waiting for a request, oldest first."""
        while True:
            if self.describing and all(r.done() for rs in self.describing[0].requests.values() for r in rs):
                self._finish_faces()
            elif self.detecting and len(self.describing) < self.depth and self.detecting[0][1].done():
                self._finish_detection()
            else:
                return self._deliver()

    def drain(self) -> list[tuple[T, list[Face]]]:
        """Every frame in flight, completed, oldest first (up to a failed frame: see the class)."""
        while self.detecting:
            self._finish_detection()
        while self.describing:
            self._finish_faces()
        return self._deliver()

    def _deliver(self) -> list[tuple[T, list[Face]]]:
        """The completed frames up to the first failed one; that one's exception when it is the oldest."""
        done: list[tuple[T, list[Face]]] = []
        while self.completed:
            tag, result = self.completed[0]
            if isinstance(result, Exception):
                if done:
                    break  # raised by the next call, after the frames before it
                self.completed.popleft()
                raise result
            self.completed.popleft()
            done.append((tag, result))
        return done

    def _take(self, net: CompiledNet) -> Request:
        """A free request of this compiled model, or a new one."""
        pool = self.free.setdefault(net, [])
        return pool.pop() if pool else net.request()

    def _release(self, request: Request) -> None:
        self.free.setdefault(request.net, []).append(request)
        self.free.move_to_end(request.net)
        while len(self.free) > NET_CACHE_SIZE:
            self.free.popitem(last=False)

    def _observe(self, kind: str, requests: list[Request]) -> None:
        model = self.analyzer._model(kind)
        if self.observe is not None and model is not None and requests:
            seconds = max(request.latency_s() for request in requests)
            self.observe(kind, model.manifest.model_id, seconds)

    def _finish_detection(self) -> None:
        """Wait for the oldest detection, then start the face models on its faces (completing the oldest
        frames first while the face stage is full). The job leaves the detection stage only once it is in
        the face stage, its detection request back in the pool; a failure marks it (job.error)."""
        job, request = self.detecting[0]
        try:
            outputs = request.wait()
            self._observe("detection", [request])
            job.detections = detection.decode(outputs, job.prepared, self.analyzer.settings.detector)
            job.aligned = [align_face(job.frame, det.landmarks_xy) for det in job.detections]
        except Exception as exc:
            job.error = exc
        while len(self.describing) >= self.depth:
            self._finish_faces()
        if job.error is None:
            try:
                self._start_faces(job)
            except Exception as exc:
                job.error = exc  # the requests it started stay in job.requests, for _finish_faces
        self.detecting.popleft()
        self._release(request)
        self.describing.append(job)

    def _start_faces(self, job: _FrameJob[T]) -> None:
        """Start the face models on the job's faces, each started request recorded in job.requests."""
        for kind, (net, tensor) in self.analyzer.face_batches(job.frame, job.detections, job.aligned).items():
            # with several inference streams, split the batch so that every stream works on it
            parts = np.array_split(tensor, min(len(tensor), net.optimal_requests))
            started: list[Request] = []
            job.requests[kind] = started
            for part in parts:
                face_request = self._take(self.analyzer.net(kind, part.shape))
                try:
                    face_request.start(part)
                except BaseException:
                    self._release(face_request)
                    raise
                started.append(face_request)

    def _finish_faces(self) -> None:
        """Complete the oldest frame of the face stage into self.completed: its faces, or its error. Its
        requests go back to the pool as it leaves the stage (after a failure, once none is running)."""
        job = self.describing[0]
        result: list[Face] | Exception
        if job.error is not None:
            result = job.error
        else:
            try:
                result = self._faces_of(job)
            except Exception as exc:
                result = exc
        requests = [request for started in job.requests.values() for request in started]
        if isinstance(result, Exception):
            for request in requests:  # a request is started again only once it has finished
                with contextlib.suppress(Exception):
                    request.wait()
        self.describing.popleft()
        for request in requests:
            self._release(request)
        self.completed.append((job.tag, result))

    def _faces_of(self, job: _FrameJob[T]) -> list[Face]:
        results: dict[str, Outputs] = {}
        for kind, requests in job.requests.items():
            parts = [request.wait() for request in requests]
            self._observe(kind, requests)
            results[kind] = {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
        started = time.perf_counter()
        attributes = self.analyzer.attributes_of(job.frame, job.detections)
        if attributes is not None and self.observe is not None and self.analyzer.attributes_model is not None:
            model_id = self.analyzer.attributes_model.manifest.model_id
            self.observe("attributes", model_id, time.perf_counter() - started)
        return self.analyzer.faces(job.detections, job.aligned, results, attributes)
