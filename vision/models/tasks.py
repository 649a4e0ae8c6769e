"""What each task expects of a model's inputs and outputs, checked when a model is imported."""

from __future__ import annotations

from collections.abc import Callable

from facefleet.vision.detection import OUTPUT_NAMES, OUTPUT_WIDTHS, STRIDES
from facefleet.vision.errors import ModelSpecError
from facefleet.vision.faces import EXPRESSION_LABELS
from facefleet.vision.runtime import ModelIO, TensorSpec

TASKS = ("detection", "embedding", "expression", "landmarks", "attributes")
ATTRIBUTE_INPUTS = {"gender_chip": [3, 32, 32], "age_chip": [3, 64, 64]}
"""The attributes task's inputs by name: the package's 32×32 gender and 64×64 age chips, NCHW."""
ATTRIBUTE_OUTPUTS = {"gender": (2,), "age": (81, 1)}
"""Its outputs by name and the last dimensions they may have: female/male; 81 age classes or years."""


def check_fits(task: str, io: ModelIO, source: str) -> None:
    """Raise ModelSpecError naming the model and the mismatch when io does not fit task."""
    checks: dict[str, Callable[[ModelIO], str | None]] = {
        "detection": _detection,
        "embedding": _embedding,
        "expression": _expression,
        "landmarks": _landmarks,
        "attributes": _attributes,
    }
    if task not in checks:
        raise ModelSpecError(f"unknown task '{task}'; choose one of {', '.join(TASKS)}")
    if len(io.inputs) != (len(ATTRIBUTE_INPUTS) if task == "attributes" else 1):
        raise ModelSpecError(
            f"{source}: a {task} model must have exactly "
            f"{'two inputs (gender_chip, age_chip)' if task == 'attributes' else 'one input'}, "
            f"this one has {_describe(io.inputs)}"
        )
    problem = checks[task](io)
    if problem:
        raise ModelSpecError(f"{source}: does not fit task '{task}': {problem}")


def embedding_dimension(io: ModelIO) -> int:
    """Length of the embedding vector an embedding model produces."""
    dims = [d for d in io.outputs[0].shape[1:] if d != 1]
    return dims[0] if len(dims) == 1 else -1


def _detection(io: ModelIO) -> str | None:
    shape = io.inputs[0].shape
    if len(shape) != 4 or shape[1] != 3:
        return f"input must be N×3×H×W (BGR), got {list(shape)}"
    names = {spec.name for spec in io.outputs}
    missing = [name for name in OUTPUT_NAMES if name not in names]
    if missing:
        return (
            f"outputs {', '.join(missing)} are missing (YuNet layout expected); "
            f"model outputs: {_describe(io.outputs)}"
        )
    widths = {f"{kind}_{s}": width for kind, width in OUTPUT_WIDTHS.items() for s in STRIDES}
    wrong = [
        spec
        for spec in io.outputs
        if spec.name in widths and spec.shape and spec.shape[-1] not in (-1, widths[spec.name])
    ]
    if wrong:
        return (
            f"outputs {_describe(tuple(wrong))} must end in their values per grid cell "
            f"(cls and obj 1, bbox 4, kps 10; YuNet layout expected)"
        )
    return None


def _embedding(io: ModelIO) -> str | None:
    shape = io.inputs[0].shape
    if len(shape) != 4 or list(shape[1:]) != [3, 112, 112]:
        return f"input must be N×3×112×112 (aligned RGB face), got {list(shape)}"
    if len(io.outputs) != 1:
        return f"must have one output (the embedding), got {_describe(io.outputs)}"
    dimension = embedding_dimension(io)
    if dimension < 32:
        return f"output must be an N×D embedding with D >= 32, got {list(io.outputs[0].shape)}"
    return None


def _expression(io: ModelIO) -> str | None:
    shape = io.inputs[0].shape
    if list(shape[1:]) != [64, 64, 1]:
        return f"input must be N×64×64×1 (grey face, NHWC), got {list(shape)}"
    classes = len(EXPRESSION_LABELS)
    if len(io.outputs) != 1 or io.outputs[0].shape[-1] != classes:
        return f"must have one output with {classes} class scores, got {_describe(io.outputs)}"
    return None


def _landmarks(io: ModelIO) -> str | None:
    shape = io.inputs[0].shape
    if list(shape[1:]) != [192, 192, 3]:
        return f"input must be N×192×192×3 (RGB face, NHWC), got {list(shape)}"
    if not any(spec.shape[-1] == 468 * 3 for spec in io.outputs):
        return f"one output must hold 468×3 mesh coordinates, got {_describe(io.outputs)}"
    return None


def _attributes(io: ModelIO) -> str | None:
    inputs = {spec.name: list(spec.shape[1:]) for spec in io.inputs}
    for name, shape in ATTRIBUTE_INPUTS.items():
        if inputs.get(name) != shape:
            return (
                f"input {name} must be N×{'×'.join(map(str, shape))} (RGB chip, (x - mean) / 256), "
                f"model inputs: {_describe(io.inputs)}"
            )
    outputs = {spec.name: spec.shape[-1] for spec in io.outputs}
    for name, sizes in ATTRIBUTE_OUTPUTS.items():
        if outputs.get(name) not in sizes:
            wanted = " or ".join(str(size) for size in sizes)
            return f"output {name} must be N×{wanted}, model outputs: {_describe(io.outputs)}"
    return None


def _describe(specs: tuple[TensorSpec, ...]) -> str:
    return ", ".join(f"{s.name}{list(s.shape)}" for s in specs) or "none"
