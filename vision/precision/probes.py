"""How each task's model is compiled, timed and guarded in a precision measurement: the same input
shapes the pipeline compiles (one face; the photo frames for detection), fed with the tuning samples."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import numpy.typing as npt

from facefleet.vision import detection
from facefleet.vision.alignment import ALIGNED_SIZE, align_face
from facefleet.vision.attributes import CHIP_INPUTS, age_years, face_inputs
from facefleet.vision.errors import ImageError
from facefleet.vision.faces import Detection
from facefleet.vision.models.quantize import DEFAULT_THRESHOLD, GuardLimits, compare_embeddings
from facefleet.vision.precision import guards
from facefleet.vision.precision.guards import GuardResult
from facefleet.vision.precision.samples import FoundFace, TuningSamples
from facefleet.vision.preprocess import embedding_input, expression_input, softmax_if_needed
from facefleet.vision.runtime import CompiledNet, Precision, Runtime

Nets = dict[tuple[int, ...], CompiledNet]
"""A model compiled for each input shape a probe needs (detection: one per frame size)."""
EMBEDDING_SHAPE = (1, 3, ALIGNED_SIZE, ALIGNED_SIZE)
EXPRESSION_SHAPE = (1, 64, 64, 1)
TUNED_TASKS = ("detection", "embedding", "expression", "attributes")
"""Tasks with a guard; others (the face mesh) run at the default precision."""


class Probe:
    """One task's measurement: compile() a model at a precision hint, run_once() its timing input (one face,
    or the largest photo frame for detection), guard() a candidate's outputs against the reference's.
    Samples without faces measure nothing: run_once() and guard() raise ImageError."""

    def __init__(
        self,
        runtime: Runtime,
        samples: TuningSamples,
        thresholds: Sequence[float] = (DEFAULT_THRESHOLD,),
    ) -> None:
        self.runtime = runtime
        self.samples = samples
        self.thresholds = tuple(thresholds)
        """The cosine thresholds an embedding model's decisions are taken at (matching, doors)."""

    def compile(self, xml: Path, precision: Precision) -> Nets:
        raise NotImplementedError

    def run_once(self, nets: Nets) -> None:
        raise NotImplementedError

    def guard(self, reference: Nets, candidate: Nets) -> GuardResult:
        raise NotImplementedError


class DetectionProbe(Probe):
    def compile(self, xml: Path, precision: Precision) -> Nets:
        shapes = {tuple(frame.tensor.shape) for frame in self.samples.frames}
        return {shape: detection.compile_detector(self.runtime, xml, shape, precision) for shape in shapes}

    def run_once(self, nets: Nets) -> None:
        _faces(self.samples)  # nothing to guard with: the measurement is refused as a whole
        frame = max(self.samples.frames, key=lambda f: f.tensor.size)
        nets[tuple(frame.tensor.shape)].infer(frame.tensor)

    def guard(self, reference: Nets, candidate: Nets) -> GuardResult:
        _faces(self.samples)  # frames without faces would pass any candidate
        settings = self.samples.detector

        def detect(nets: Nets, frame: detection.DetectorInput) -> list[Detection]:
            return detection.decode(nets[tuple(frame.tensor.shape)].infer(frame.tensor), frame, settings)

        frames = self.samples.frames
        return guards.detections(
            [detect(reference, f) for f in frames],
            [detect(candidate, f) for f in frames],
            [f.scale for f in frames],
        )


class EmbeddingProbe(Probe):
    """The quantizer's guard with every found face held out (nothing is calibrated here), at every
    threshold in use: a candidate runs in the float model's place against the gallery the float model
    embedded, so no pair may change its decision whichever of the two embedded its enrolled face."""

    def compile(self, xml: Path, precision: Precision) -> Nets:
        net = self.runtime.compile(xml, input_shape=EMBEDDING_SHAPE, single_stream=True, precision=precision)
        return {EMBEDDING_SHAPE: net}

    def run_once(self, nets: Nets) -> None:
        face = _faces(self.samples)[0]
        crop = align_face(face.frame, face.detection.landmarks_xy)
        nets[EMBEDDING_SHAPE].infer(embedding_input(crop)[None])

    def guard(self, reference: Nets, candidate: Nets) -> GuardResult:
        faces = [face.sample() for face in _faces(self.samples)]
        limits = GuardLimits()
        rng = np.random.default_rng(0)  # the same variants for every candidate
        agreement = compare_embeddings(
            reference[EMBEDDING_SHAPE], candidate[EMBEDDING_SHAPE], faces, faces, rng, self.thresholds, limits
        )
        summary = (
            f"cosine to f32 on {agreement.held_out_samples} samples of {agreement.held_out_faces} faces: "
            f"min {agreement.cosine_min:.4f} (limit {limits.min_cosine}), mean {agreement.cosine_mean:.4f} "
            f"(limit {limits.mean_cosine}); decisions at {', '.join(map(str, self.thresholds))} changed on "
            f"{agreement.decision_changes} of {agreement.genuine_pairs + agreement.impostor_pairs} pairs"
        )
        return GuardResult(agreement.passed, summary, asdict(agreement))


class ExpressionProbe(Probe):
    def compile(self, xml: Path, precision: Precision) -> Nets:
        net = self.runtime.compile(xml, input_shape=EXPRESSION_SHAPE, single_stream=True, precision=precision)
        return {EXPRESSION_SHAPE: net}

    def run_once(self, nets: Nets) -> None:
        face = _faces(self.samples)[0]
        nets[EXPRESSION_SHAPE].infer(expression_input(face.frame, face.detection.box_xyxy)[None])

    def guard(self, reference: Nets, candidate: Nets) -> GuardResult:
        inputs = [expression_input(f.frame, f.detection.box_xyxy)[None] for f in _faces(self.samples)]

        def probabilities(nets: Nets) -> npt.NDArray[np.float32]:
            raw = [next(iter(nets[EXPRESSION_SHAPE].infer(t).values())).reshape(1, -1) for t in inputs]
            return softmax_if_needed(np.concatenate(raw))

        return guards.classification(probabilities(reference), probabilities(candidate), "expression")


class AttributesProbe(Probe):
    """Gender probabilities as classification, age as years (class expectation or regressed value)."""

    def compile(self, xml: Path, precision: Precision) -> Nets:
        shapes = {name: (1, 3, size, size) for name, size in CHIP_INPUTS.items()}
        return {(1,): self.runtime.compile(xml, input_shapes=shapes, precision=precision)}

    def run_once(self, nets: Nets) -> None:
        nets[(1,)].infer_inputs(self._inputs()[0])

    def guard(self, reference: Nets, candidate: Nets) -> GuardResult:
        inputs = self._inputs()
        ref = [reference[(1,)].infer_inputs(i) for i in inputs]
        cand = [candidate[(1,)].infer_inputs(i) for i in inputs]

        def gender(outputs: list[dict[str, npt.NDArray[np.float32]]]) -> npt.NDArray[np.float32]:
            return softmax_if_needed(np.concatenate([o["gender"].reshape(1, -1) for o in outputs]))

        return guards.combined(
            [
                guards.classification(gender(ref), gender(cand), "gender"),
                guards.years([age_years(o["age"]) for o in ref], [age_years(o["age"]) for o in cand]),
            ]
        )

    def _inputs(self) -> list[dict[str, npt.NDArray[np.float32]]]:
        return [face_inputs(face.frame, [face.detection.landmarks_xy]) for face in _faces(self.samples)]


PROBES: dict[str, Callable[[Runtime, TuningSamples, Sequence[float]], Probe]] = {
    "detection": DetectionProbe,
    "embedding": EmbeddingProbe,
    "expression": ExpressionProbe,
    "attributes": AttributesProbe,
}


def _faces(samples: TuningSamples) -> tuple[FoundFace, ...]:
    """The faces of the samples, or ImageError: no faces, nothing to measure a model on."""
    if not samples.faces:
        raise ImageError(
            f"the {len(samples.frames)} sample frames gave no faces at the default detector thresholds, so "
            "there is nothing to measure this model's precision on: check that `facefleet-agent analyze "
            "<photo>` finds faces in them with the active detection model (`python -m "
            "facefleet.vision.photos` lists the bundled photos)"
        )
    return samples.faces
