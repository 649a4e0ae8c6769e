"""Measure a model's candidate precisions on the runtime's device and choose the fastest that passes its
task's accuracy guard against the f32 outputs of the same float model.

Candidates: every inference precision hint the device supports (Runtime.hint_precisions: f32, and bf16/f16
where its OPTIMIZATION_CAPABILITIES has them) and every INT8 variant the store holds of this very model
(manifest extra.quantized_from, written by `models quantize`), compiled at the f32 hint. A chosen variant
runs in the float model's place under the float model's id: an embedding variant's embeddings are matched
against the gallery the float model embedded, which its guard checks (probes.EmbeddingProbe).
"""

from __future__ import annotations

import functools
import logging
import statistics
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace

from facefleet.vision.errors import ModelStoreError
from facefleet.vision.models.quantize import int8_variants
from facefleet.vision.models.store import ModelStore, StoredModel, check_model
from facefleet.vision.precision.choice import Choice, Measurement
from facefleet.vision.precision.guards import REFERENCE
from facefleet.vision.precision.probes import Probe
from facefleet.vision.runtime import Precision, Runtime

log = logging.getLogger(__name__)
Timer = Callable[[str, Callable[[], None]], float]
"""(candidate label, one inference of the timing input) → latency in ms of one round; the seam tests
inject."""
ROUNDS = 4
"""Timing rounds; the candidates take turns in each, and a candidate's latency is its best round, so that
load from other processes during one round does not decide the choice."""
RUNS_PER_ROUND = 7
WARMUP_RUNS = 3
MIN_SPEEDUP = 1.1
"""A candidate other than f32 must be at least this much faster than f32 to be chosen over it (f32 is
reproducible; a smaller gain is within the noise of a shared machine)."""


@dataclass(frozen=True)
class Candidate:
    """A way to run a model: label, hint, the model compiled (the float one or its INT8 variant)."""

    label: str
    precision: Precision
    model: StoredModel


def median_ms(label: str, run: Callable[[], None]) -> float:
    """Median wall time of RUNS_PER_ROUND runs after WARMUP_RUNS, in ms."""
    for _ in range(WARMUP_RUNS):
        run()
    times = []
    for _ in range(RUNS_PER_ROUND):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def candidates(
    runtime: Runtime, store: ModelStore | None, model: StoredModel, excluded: Collection[str] = ()
) -> list[Candidate]:
    """The hints of the device, then the store's INT8 variants of model (but those excluded, by id)."""
    found = [Candidate(hint, hint, model) for hint in runtime.hint_precisions()]
    variants = int8_variants(store, model, excluded) if store is not None else []
    found.extend(Candidate("int8", "f32", variant) for variant in variants)
    return found


def measure(
    probe: Probe, model: StoredModel, found: Sequence[Candidate], timer: Timer = median_ms
) -> list[Measurement]:
    """Guard each candidate, then time them in ROUNDS interleaved rounds (best round each); the f32 float
    model is the reference (its guard passes by definition)."""
    reference = probe.compile(model.xml_path, "f32")
    compiled = []
    for candidate in found:
        is_reference = candidate.model is model and candidate.precision == "f32"
        if candidate.model is not model:
            try:
                check_model(candidate.model)
            except ModelStoreError as exc:  # a damaged variant is left out, the others still compete
                log.warning("precision: %s is not measured: %s", candidate.model.manifest.model_id, exc)
                continue
        nets = reference if is_reference else probe.compile(candidate.model.xml_path, candidate.precision)
        compiled.append((candidate, nets, REFERENCE if is_reference else probe.guard(reference, nets)))
    best = [float("inf")] * len(compiled)
    for _ in range(ROUNDS):
        for index, (candidate, nets, _guard) in enumerate(compiled):
            best[index] = min(best[index], timer(candidate.label, functools.partial(probe.run_once, nets)))
    return [
        Measurement(
            candidate.label,
            candidate.precision,
            None if candidate.model is model else candidate.model.manifest.model_id,
            round(milliseconds, 3),
            guard,
        )
        for (candidate, _nets, guard), milliseconds in zip(compiled, best, strict=True)
    ]


def choose(task: str, model_id: str, measurements: Sequence[Measurement]) -> Choice:
    """The fastest candidate whose guard passed, with the reason in one line."""
    passing = [m for m in measurements if m.guard.passed]
    fastest = min(passing, key=lambda m: m.median_ms)
    reference = next(m for m in measurements if m.label == "f32" and m.variant is None)
    speed = reference.median_ms / fastest.median_ms if fastest.median_ms > 0 else 1.0
    what = fastest.label if fastest.variant is None else f"{fastest.label} ({fastest.variant})"
    best = fastest if speed >= MIN_SPEEDUP else reference
    if fastest is reference:
        parts = [f"measured: f32 is the fastest ({reference.median_ms:.2f} ms)"]
    elif best is reference:
        parts = [
            f"measured: {what} passes the guard but is only {speed:.2f}× f32 ({fastest.median_ms:.2f} vs "
            f"{reference.median_ms:.2f} ms, less than {MIN_SPEEDUP}×): f32 kept"
        ]
    else:
        parts = [
            f"measured: {what} is the fastest that passes the guard ({fastest.median_ms:.2f} ms, "
            f"{speed:.2f}× f32's {reference.median_ms:.2f} ms)"
        ]
    for m in measurements:
        if not m.guard.passed:
            parts.append(f"{m.label} refused by the guard: {m.guard.summary}")
    return Choice(
        task=task,
        model_id=model_id,
        precision=best.precision,
        source="auto",
        reason="; ".join(parts),
        variant=best.variant,
        measurements=tuple(measurements),
    )


def tune(
    probe: Probe,
    store: ModelStore | None,
    model: StoredModel,
    timer: Timer = median_ms,
    excluded: Collection[str] = (),
) -> Choice:
    """Measure model's candidates on the probe's runtime (but the INT8 variants excluded, by id) and
    choose."""
    found = candidates(probe.runtime, store, model, excluded)
    measurements = measure(probe, model, found, timer)
    choice = choose(model.manifest.task, model.manifest.model_id, measurements)
    variant = next((c.model for c in found if c.model.manifest.model_id == choice.variant), None)
    if variant is None:
        return choice
    return replace(choice, variant_files=tuple(sorted(variant.manifest.files.items())))
