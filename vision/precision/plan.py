"""What each model runs at: [runtime] precision.<task> (a per-task override) wins over [runtime]
inference_precision (a global override unless "auto"); under "auto" a model takes the choice cached for it
(its files) on this device and OpenVINO version, or is measured (when allowed), or runs at f32 until it
is.

A long-running process measures in a child process (measure_in_child): measuring compiles every candidate
of a model at once (SFace's f32, bf16 and INT8 add some 240 MB), and the allocator does not give all of that
back, so an agent that measured in its own process ran some 70 MB heavier for its whole life. The child
writes the cache, which the process then reads. Where no child can be started the process measures itself;
a child that dies (a candidate that crashes the runtime) leaves its models at f32 with the reason."""

from __future__ import annotations

import logging
import multiprocessing
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

from facefleet.core.errors import FaceFleetError
from facefleet.vision.detection import DetectorSettings
from facefleet.vision.errors import ModelSpecError, ModelStoreError
from facefleet.vision.models.quantize import DEFAULT_THRESHOLD, find_model, int8_variants
from facefleet.vision.models.store import ModelStore, StoredModel, check_model
from facefleet.vision.precision.cache import PrecisionCache
from facefleet.vision.precision.choice import Choice
from facefleet.vision.precision.probes import PROBES, TUNED_TASKS
from facefleet.vision.precision.samples import TuningSamples, tuning_samples
from facefleet.vision.precision.tuner import Timer, candidates, median_ms, tune
from facefleet.vision.runtime import Precision, PrecisionSetting, Runtime, RuntimeSettings

log = logging.getLogger(__name__)
TUNE_HINT = "run `facefleet-agent models tune` or start the agent to measure"


@dataclass(frozen=True)
class PrecisionSettings:
    """default: [runtime] inference_precision ("auto", or f32/f16/bf16 for every model); tasks: [runtime]
    precision, task → setting, each overriding the default for its task."""

    default: PrecisionSetting = "auto"
    tasks: Mapping[str, PrecisionSetting] = field(default_factory=dict)


@dataclass(frozen=True)
class Compilation:
    """How to compile a model: the IR (the model's, or its INT8 variant's) and the precision hint."""

    xml_path: Path
    precision: Precision
    choice: Choice


class PrecisionPlan:
    """Resolves the precision of each model on one runtime; measure: measure models that have no cached
    choice (the agent service) or leave them at f32 (listings, one-off commands). detector: the site's
    [detector] settings, whose frame geometry the samples are prepared at (their faces are found at the
    default thresholds, see samples.sample_detector). thresholds: model id → the cosine thresholds its
    decisions are taken at (matching, doors), which an embedding candidate's guard checks. timer, photos: the
    latency seam and the photos of the measurements (default: median wall time, the bundled photos).
    measure_in_child: measure in a child process (with the default timer; only with a cache, which carries
    the choices back). excluded: INT8 variants (model ids) left out of the candidates."""

    def __init__(
        self,
        runtime: Runtime,
        store: ModelStore,
        settings: PrecisionSettings | None = None,
        cache: PrecisionCache | None = None,
        *,
        measure: bool = True,
        thresholds: Callable[[str], Sequence[float]] = lambda model_id: (DEFAULT_THRESHOLD,),
        detector: DetectorSettings | None = None,
        timer: Timer = median_ms,
        photos: list[Path] | None = None,
        measure_in_child: bool = False,
        excluded: frozenset[str] = frozenset(),
    ) -> None:
        self.runtime = runtime
        self.store = store
        self.settings = settings or PrecisionSettings(runtime.settings.inference_precision)
        self.cache = cache
        self.measure = measure
        self.thresholds = thresholds
        self.detector = detector
        self.timer = timer
        self.photos = photos
        self.measure_in_child = measure_in_child and cache is not None
        self.excluded = excluded
        self._samples: TuningSamples | None = None
        self._not_measured: dict[tuple[str, tuple[tuple[str, str], ...]], str] = {}
        """(model id, files) → why measuring it failed (not tried again by this plan)."""
        self._resolved: dict[tuple[str, tuple[tuple[str, str], ...]], Choice] = {}
        """(model id, its files' sha256 by name) → its choice."""
        self._lock = threading.RLock()

    def renewed(self, model: StoredModel, excluded: frozenset[str] = frozenset()) -> PrecisionPlan:
        """A plan with the same settings and choices but model's, which it resolves anew from what the store
        holds now (an INT8 variant delivered or withdrawn since), leaving the variants excluded (model ids)
        out of its candidates; this plan keeps answering for the models that run."""
        renewed = PrecisionPlan(
            self.runtime,
            self.store,
            self.settings,
            self.cache,
            measure=self.measure,
            thresholds=self.thresholds,
            detector=self.detector,
            timer=self.timer,
            photos=self.photos,
            measure_in_child=self.measure_in_child,
            excluded=excluded,
        )
        with self._lock:
            renewed._samples = self._samples
            renewed._resolved = {k: c for k, c in self._resolved.items() if k != _identity(model)}
            renewed._not_measured = {k: r for k, r in self._not_measured.items() if k != _identity(model)}
        return renewed

    def measured_setting(self, task: str) -> PrecisionSetting | None:
        """The override that decides task's precision without a measurement ([runtime] precision.<task>,
        then inference_precision), or None under "auto"."""
        override = self.settings.tasks.get(task, "auto")
        if override != "auto":
            return override
        return self.settings.default if self.settings.default != "auto" else None

    def choice(self, model: StoredModel) -> Choice:
        """What model runs at (resolved once per plan; logged at INFO when first resolved). A resolved
        model's choice is returned without waiting for a measurement another thread is making (the frame
        loop asks for the running models' while a rollout's new model is measured)."""
        known = self._resolved.get(_identity(model))
        if known is not None:
            return known
        with self._lock:
            known = self._resolved.get(_identity(model))
            if known is None:
                known = self._resolve(model)
                self._resolved[_identity(model)] = known
                log.info(
                    "precision: %s %s runs at %s on %s (%s): %s",
                    known.task,
                    known.model_id,
                    known.label,
                    self.runtime.device,
                    known.source,
                    known.reason,
                )
            return known

    def prepare(self, models: Sequence[StoredModel]) -> None:
        """Resolve what each of models runs at, measuring those that need it together (in one child
        process when measure_in_child: its start and the sample faces are paid once)."""
        with self._lock:
            pending = [m for m in models if self._settled(m) is None] if self.measure else []
            if self.measure_in_child and pending:
                self._measure_in_child(pending)
            for model in models:
                self.choice(model)

    def compilation(self, model: StoredModel) -> Compilation:
        """The IR and hint to compile model with: its INT8 variant's when chosen and its files are intact
        (checked against their sha256), else the float model at f32 until the next measurement."""
        choice = self.choice(model)
        if choice.variant is None:
            return Compilation(model.xml_path, choice.precision, choice)
        try:
            variant = find_model(self.store, choice.variant)
            check_model(variant)
            if dict(choice.variant_files) != variant.manifest.files:
                raise ModelStoreError(f"model {choice.variant} is not the one measured (other files)")
        except ModelStoreError as exc:
            log.warning("precision: %s runs at f32 instead of %s: %s", choice.model_id, choice.label, exc)
            fallback = Choice(
                choice.task, choice.model_id, "f32", "default", f"f32: its INT8 variant cannot run ({exc})"
            )
            with self._lock:
                self._resolved[_identity(model)] = fallback
            return Compilation(model.xml_path, "f32", fallback)
        return Compilation(variant.xml_path, choice.precision, choice)

    def tune(self, model: StoredModel) -> Choice:
        """Measure model now (whatever is cached), cache and return the auto choice; the overrides still
        decide what it runs at (choice())."""
        task = model.manifest.task
        if task not in TUNED_TASKS:
            raise ModelSpecError(
                f"{model.manifest.model_id}: {task} models have no accuracy guard to tune with"
            )
        with self._lock:
            probe = PROBES[task](
                self.runtime, self._tuning_samples(), self.thresholds(model.manifest.model_id)
            )
            measured = tune(probe, self.store, model, self.timer, self.excluded)
            if self.cache is not None:
                device, version = self.runtime.device_name, self.runtime.version
                guarded_at, variants = self._guarded_at(model), self._variants(model)
                self.cache.put(measured, model.manifest, device, version, guarded_at, variants)
            self._resolved.pop(_identity(model), None)
            return measured

    def cached(self, model: StoredModel) -> Choice | None:
        """The auto choice cached for model (its files) on this device and OpenVINO version, if any (and
        usable)."""
        if self.cache is None:
            return None
        device, version = self.runtime.device_name, self.runtime.version
        found = self.cache.get(
            model.manifest, device, version, self._guarded_at(model), self._variants(model)
        )
        if found is not None and found.variant is not None:
            try:
                variant = find_model(self.store, found.variant)
            except ModelStoreError:
                return None  # the INT8 variant it chose is gone: measure again
            if dict(found.variant_files) != variant.manifest.files:
                return None  # another model under the variant's id: measure again
        return found

    def _guarded_at(self, model: StoredModel) -> tuple[float, ...]:
        """The decision thresholds an embedding model's guard checks (none for other tasks)."""
        if model.manifest.task != "embedding":
            return ()
        return tuple(sorted(set(self.thresholds(model.manifest.model_id))))

    def _variants(self, model: StoredModel) -> dict[str, dict[str, str]]:
        """The INT8 variants the store holds of model (its candidates besides the precision hints): model id
        → its files' sha256 by name."""
        variants = int8_variants(self.store, model, self.excluded)
        return {v.manifest.model_id: dict(v.manifest.files) for v in variants}

    def _resolve(self, model: StoredModel) -> Choice:
        settled = self._settled(model)
        if settled is not None:
            return settled
        task, model_id = model.manifest.task, model.manifest.model_id
        if not self.measure:
            return Choice(task, model_id, "f32", "default", f"f32 until measured: {TUNE_HINT}")
        if self.measure_in_child:
            self._measure_in_child([model])
            return self._settled(model) or Choice(
                task, model_id, "f32", "default", "f32: the measuring process cached no choice"
            )
        try:
            return self.tune(model)
        except (FaceFleetError, RuntimeError) as exc:
            log.warning("precision of %s %s not measured (%s); it runs at f32", task, model_id, exc)
            return Choice(task, model_id, "f32", "default", f"f32: not measured ({exc})")

    def needs_measuring(self, model: StoredModel) -> bool:
        """Whether model's choice would be measured now: under "auto", with candidates besides f32, no choice
        cached for the thresholds its guard checks and the variants the store holds now, and no measurement
        of it failed in this plan."""
        with self._lock:
            return self._settled(model) is None

    def _settled(self, model: StoredModel) -> Choice | None:
        """model's choice when no measurement is needed for it: an override, a task without a guard, a
        cached choice, a single candidate, or a measurement that failed; None: it needs measuring."""
        task, model_id = model.manifest.task, model.manifest.model_id
        override = self.settings.tasks.get(task, "auto")
        if override != "auto":
            return Choice(
                task, model_id, override, "task override", f"[runtime] precision.{task} = {override!r}"
            )
        if self.settings.default != "auto":
            reason = f"[runtime] inference_precision = {self.settings.default!r}"
            return Choice(task, model_id, self.settings.default, "override", reason)
        if task not in TUNED_TASKS:
            return Choice(
                task, model_id, "f32", "default", f"f32: {task} models have no accuracy guard to tune"
            )
        cached = self.cached(model)
        if cached is not None:
            return cached
        if [c.label for c in candidates(self.runtime, self.store, model, self.excluded)] == ["f32"]:
            reason = f"f32: the only candidate on {self.runtime.device} (no bf16/f16 hint, no INT8 variant)"
            return Choice(task, model_id, "f32", "auto", reason)
        failed = self._not_measured.get(_identity(model))
        if failed is not None:
            return Choice(task, model_id, "f32", "default", f"f32: not measured ({failed})")
        return None

    def _measure_in_child(self, models: Sequence[StoredModel]) -> None:
        """Measure models in a child process that writes the cache (in this one when the child cannot
        start or dies); a model that could not be measured is recorded with the reason (it runs at f32)."""
        assert self.cache is not None
        request = MeasureRequest(
            self.runtime.settings,
            self.store.root,
            self.cache.path,
            tuple(_ref(m) for m in models),
            {m.manifest.model_id: tuple(self.thresholds(m.manifest.model_id)) for m in models},
            self.detector,
            self.photos,
            tuple(sorted(self.excluded)),
        )
        try:
            with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as child:
                failures = child.submit(measure_requested, request).result()
        except BrokenProcessPool as exc:  # a model that kills its process must not kill this one too
            log.error("precision: the measuring process died (%s); those models run at f32", exc)
            failures = {_ref(m): f"the measuring process died ({exc})" for m in models}
        except Exception as exc:  # no child could be started: measured here instead
            log.warning("precision: measuring in a child process failed (%r); measuring here", exc)
            failures = self._tune_each(models)
        for model in models:
            reason = failures.get(_ref(model))
            if reason is not None:
                log.warning("precision of %s not measured (%s); it runs at f32", _ref(model), reason)
                self._not_measured[_identity(model)] = reason

    def _tune_each(self, models: Sequence[StoredModel]) -> dict[str, str]:
        """Measure and cache models in this process; 'task/name/version' → why one could not be."""
        failures = {}
        for model in models:
            try:
                self.tune(model)
            except (FaceFleetError, RuntimeError) as exc:
                failures[_ref(model)] = str(exc)
        return failures

    def _tuning_samples(self) -> TuningSamples:
        if self._samples is None:
            self._samples = tuning_samples(
                self.runtime, self.store.active("detection"), self.photos, self.detector
            )
        return self._samples


@dataclass(frozen=True)
class MeasureRequest:
    """What a child process measures: the models ('task/name/version') of the store at store_root, on a
    runtime of these settings, each embedding model guarded at its thresholds (model id → cosines), without
    the INT8 variants excluded (model ids)."""

    runtime: RuntimeSettings
    store_root: Path
    cache_path: Path
    models: tuple[str, ...]
    thresholds: Mapping[str, tuple[float, ...]]
    detector: DetectorSettings | None
    photos: list[Path] | None
    excluded: tuple[str, ...] = ()


def measure_requested(request: MeasureRequest) -> dict[str, str]:
    """In the child process: measure and cache each requested model; 'task/name/version' → why it could
    not be."""
    store = ModelStore(request.store_root)
    plan = PrecisionPlan(
        Runtime(request.runtime),
        store,
        cache=PrecisionCache(request.cache_path),
        thresholds=lambda model_id: request.thresholds.get(model_id, (DEFAULT_THRESHOLD,)),
        detector=request.detector,
        photos=request.photos,
        excluded=frozenset(request.excluded),
    )
    return plan._tune_each([store.get(*ref.split("/")) for ref in request.models])


def _ref(model: StoredModel) -> str:
    return f"{model.manifest.task}/{model.manifest.name}/{model.manifest.version}"


def _identity(model: StoredModel) -> tuple[str, tuple[tuple[str, str], ...]]:
    """A model's id and files: a model re-imported under the same id with other files is another model."""
    return model.manifest.model_id, tuple(sorted(model.manifest.files.items()))
