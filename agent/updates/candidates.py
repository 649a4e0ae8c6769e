"""The analyzers a model switch hands to the frame loop, built and checked off the frame loop: one that runs a
new version (task fit, compilation, smoke inference), and one whose float model was measured again because
the INT8 variants stored for it changed."""

from __future__ import annotations

from pathlib import Path

from facefleet.agent.updates.smoke import smoke_test
from facefleet.core.errors import FaceFleetError
from facefleet.vision.errors import ModelSpecError
from facefleet.vision.models.store import StoredModel, check_model
from facefleet.vision.models.tasks import check_fits
from facefleet.vision.pipeline import FaceAnalyzer
from facefleet.vision.precision.choice import Choice


def running_models(analyzer: FaceAnalyzer) -> dict[str, StoredModel | None]:
    """task → the model analyzer runs for it (the tasks a rollout may change)."""
    return {
        "detection": analyzer.detector_model,
        "embedding": analyzer.embedding_model,
        "expression": analyzer.expression_model,
    }


def running_model(analyzer: FaceAnalyzer, task: str) -> StoredModel:
    model = running_models(analyzer).get(task)
    if model is None:
        raise ModelSpecError(f"this agent runs no {task} model")
    return model


def with_version(analyzer: FaceAnalyzer, model: StoredModel, smoke_photo: Path | None) -> FaceAnalyzer:
    """Files, task fit, compilation and a smoke inference; the analyzer that runs model in its task."""
    check_model(model)
    task = model.manifest.task
    device = analyzer.runtime.settings.device
    try:
        io = analyzer.runtime.describe(model.xml_path)
    except Exception as exc:
        raise ModelSpecError(f"model {model.manifest.model_id} cannot be read: {reason(exc)}") from None
    check_fits(task, io, f"model {model.manifest.model_id}")
    try:
        candidate = analyzer.with_model(model)
    except FaceFleetError:
        raise
    except Exception as exc:
        raise ModelSpecError(
            f"model {model.manifest.model_id} does not compile on {device}: {reason(exc)}"
        ) from None
    smoke_test(candidate, task, smoke_photo)
    return candidate


def measured_setting(analyzer: FaceAnalyzer, task: str) -> str | None:
    """What pins task's precision on this agent (an override, or 'f32' without a precision plan), or None
    when it is measured ("auto")."""
    plan = analyzer.precisions
    return plan.measured_setting(task) if plan is not None else "f32"


def remeasured(analyzer: FaceAnalyzer, task: str, smoke_photo: Path | None) -> tuple[FaceAnalyzer, Choice]:
    """An analyzer whose model of task is measured again with what the store holds now (the agent measures
    in its child process), smoke-tested, and that model's new choice."""
    candidate, choice = _measured_again(analyzer, running_model(analyzer, task), frozenset())
    smoke_test(candidate, task, smoke_photo)
    return candidate, choice


def with_variant(
    analyzer: FaceAnalyzer,
    float_model: StoredModel,
    variant: StoredModel,
    excluded: frozenset[str],
    smoke_photo: Path | None,
) -> tuple[FaceAnalyzer, Choice]:
    """An analyzer that runs float_model (the running one, or a stored version to switch to) measured again
    with variant stored and the variants excluded (model ids) left out of the candidates, smoke-tested, and
    float_model's new choice. ModelSpecError when the variant was not measured or its guard refused it."""
    check_model(variant)
    check_model(float_model)
    task, model_id = variant.manifest.task, variant.manifest.model_id
    candidate, choice = _measured_again(analyzer, float_model, excluded)
    measured = next((m for m in choice.measurements if m.variant == model_id), None)
    if measured is None:
        raise ModelSpecError(f"model {model_id} was not measured on this device: {choice.reason}")
    if not measured.guard.passed:
        raise ModelSpecError(
            f"model {model_id} is refused by the accuracy guard on this device at its thresholds: "
            f"{measured.guard.summary}"
        )
    smoke_test(candidate, task, smoke_photo)
    return candidate, choice


def _measured_again(
    analyzer: FaceAnalyzer, float_model: StoredModel, excluded: frozenset[str]
) -> tuple[FaceAnalyzer, Choice]:
    plan = analyzer.precisions
    if plan is None:
        raise ModelSpecError(
            f"this agent does not measure the precision of its {float_model.manifest.task} model"
        )
    renewed = plan.renewed(float_model, excluded)
    try:
        candidate = analyzer.with_model(float_model, renewed)
    except FaceFleetError:
        raise
    except Exception as exc:
        raise ModelSpecError(
            f"model {float_model.manifest.model_id} does not compile: {reason(exc)}"
        ) from None
    return candidate, renewed.choice(float_model)


def reason(exc: BaseException) -> str:
    """An exception's first line, for a status reason."""
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:500]
