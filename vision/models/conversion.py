"""Converting a model file to IR for the store, in this process or in a child process with a memory and a
time limit.

A model file of a few KB can make OpenVINO build tensors of any size (a ConstantOfShape of n×n is folded
into n² floats), so a file that crosses a process boundary (a server upload, `models import` on an agent)
is converted in a child (vision.models.conversion_child) whose data segment is limited (RLIMIT_DATA): the
child fails, and the process that asked is unharmed. In the child the converted model must also fit its
task and pass Runtime.rehearse: no control flow, constant output sizes, and one inference on zeros, at the
shapes the server and the agents use, within the same limits. A model that passes does not then take the
memory of the server that re-embeds with it or of the agents it is rolled out to.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from facefleet.vision.errors import (
    ConversionLimitError,
    ModelSpecError,
    ModelStoreError,
    StorageFullError,
)
from facefleet.vision.models.onnx_fold import fold_blocked_dequantize
from facefleet.vision.models.tasks import check_fits
from facefleet.vision.runtime import ModelIO, Runtime, RuntimeSettings, TensorSpec

CHILD_MODULE = "facefleet.vision.models.conversion_child"
MAX_REPLY_BYTES = 1 << 20
"""The most of the child's standard output and error that is read back."""
OUT_OF_MEMORY_SIGNS = (
    "bad_alloc",
    "Failed to allocate",
    "Arena alloc failed",
    "Unable to allocate",
    "Cannot allocate memory",
    "MemoryError",
)
"""How OpenVINO, protobuf, NumPy and Python say that an allocation failed."""
REPLY_ERRORS: dict[str, type[Exception]] = {
    "spec": ModelSpecError,
    "store": ModelStoreError,
    "full": StorageFullError,
    "memory": ConversionLimitError,
}
"""A child's error kind → the exception the parent raises."""
CHECK_SETTINGS = RuntimeSettings(device="CPU", num_streams=1, num_threads=1)
"""How the child compiles and runs a converted model to check it: the CPU, one stream, one thread."""


@dataclass(frozen=True)
class ConversionLimits:
    """What a model's conversion may take: memory_bytes of data segment (heap and anonymous mappings,
    thread stacks included) and seconds of wall time; the settings named in messages when one is hit."""

    memory_bytes: int
    seconds: float
    memory_setting: str = "memory_bytes"
    seconds_setting: str = "seconds"


def convert_source(
    runtime: Runtime, source: Path, target_xml: Path, precision: str, weights: Path | None
) -> ModelIO:
    """Convert source (ONNX, TFLite, or an IR's .xml with its weights) to target_xml and its .bin, FP16
    weights when precision is "FP16"; an ONNX with block-quantised weights is folded first, beside
    target_xml, and the folded copy removed."""
    readable = source
    if source.suffix.lower() == ".onnx":
        readable = target_xml.parent / "folded.onnx"
        if fold_blocked_dequantize(source, readable) == 0:
            readable = source
    try:
        return runtime.convert_to_ir(
            readable, target_xml, compress_to_fp16=precision == "FP16", weights=weights
        )
    finally:
        if readable != source:
            readable.unlink(missing_ok=True)


def convert_in_child(
    source: Path,
    target_xml: Path,
    task: str,
    precision: str,
    weights: Path | None,
    limits: ConversionLimits,
) -> ModelIO:
    """convert_source, the task check and Runtime.rehearse in a child process held to limits.
    ConversionLimitError when it needs more memory or time than they allow (or is killed); the child's
    ModelSpecError, ModelStoreError or StorageFullError raised here as it was raised there."""
    request = {
        "source": str(source.resolve()),
        "target": str(target_xml.resolve()),
        "task": task,
        "precision": precision,
        "weights": None if weights is None else str(weights.resolve()),
        "memory_bytes": limits.memory_bytes,
        "cpu_seconds": max(1, int(limits.seconds) + 1),
    }
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            done = subprocess.run(
                [sys.executable, "-I", "-m", CHILD_MODULE],
                input=json.dumps(request).encode(),
                stdout=out,
                stderr=err,
                timeout=limits.seconds,
                cwd=target_xml.parent,
                env=child_environment(),
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise ConversionLimitError(
                f"{source}: converting this model took longer than {limits.seconds_setting} "
                f"({limits.seconds:g} s) allows; nothing was stored"
            ) from None
        reply, errors = _tail(out), _tail(err)
    answer = _reply(reply)
    if answer is None:
        raise _without_reply(source, done.returncode, errors, limits)
    if "io" in answer:
        return ModelIO(
            inputs=tuple(TensorSpec.from_json(spec) for spec in answer["io"]["inputs"]),
            outputs=tuple(TensorSpec.from_json(spec) for spec in answer["io"]["outputs"]),
        )
    message = str(answer.get("message", ""))
    kind = str(answer.get("error"))
    if kind == "memory":
        raise _needs_memory(source, limits, message)
    raise REPLY_ERRORS.get(kind, ModelSpecError)(message)


def child_environment() -> dict[str, str]:
    """The child's environment: this one's search paths and locale, one malloc arena (each arena counts
    against the memory limit), nothing else."""
    kept = ("PATH", "LD_LIBRARY_PATH", "LANG", "LC_ALL", "TMPDIR")
    environment = {name: os.environ[name] for name in kept if name in os.environ}
    environment["MALLOC_ARENA_MAX"] = "1"
    return environment


def out_of_memory(exc: BaseException | str) -> bool:
    """Whether an exception (or anything that caused it) or a message says an allocation failed."""
    if isinstance(exc, str):
        return any(sign in exc for sign in OUT_OF_MEMORY_SIGNS)
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, MemoryError) or out_of_memory(str(cause)):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def run_request(request: dict[str, Any]) -> dict[str, Any]:
    """The child's work: convert, check the task, rehearse; the reply (io, or an error kind and message)."""
    source, target = Path(request["source"]), Path(request["target"])
    weights = request["weights"]
    runtime = Runtime(CHECK_SETTINGS)
    try:
        io = convert_source(
            runtime, source, target, str(request["precision"]), None if weights is None else Path(weights)
        )
        check_fits(str(request["task"]), io, str(source))
        runtime.rehearse(target, str(source))
    except Exception as exc:
        if out_of_memory(exc):
            return {"error": "memory", "message": _last_line(exc)}
        kind = next((k for k, cls in reversed(REPLY_ERRORS.items()) if isinstance(exc, cls)), None)
        if kind is None:
            return {
                "error": "spec",
                "message": f"{source}: OpenVINO cannot use this model: {_last_line(exc)}",
            }
        return {"error": kind, "message": str(exc)}
    return {
        "io": {
            "inputs": [spec.to_json() for spec in io.inputs],
            "outputs": [spec.to_json() for spec in io.outputs],
        }
    }


def _needs_memory(source: Path, limits: ConversionLimits, said: str) -> ConversionLimitError:
    return ConversionLimitError(
        f"{source}: converting and trying this model needs more memory than {limits.memory_setting} "
        f"({limits.memory_bytes} bytes) allows; nothing was stored. A model of a few KB can declare "
        f"tensors of any size: check the model, or raise {limits.memory_setting} for a model you trust "
        f"({said.removeprefix(f'{source}: ')})"
    )


def _without_reply(source: Path, status: int, errors: bytes, limits: ConversionLimits) -> Exception:
    """The error of a child that ended without a reply, by how it ended and what it wrote last."""
    lines = [line for line in errors.decode(errors="replace").splitlines() if line.strip()]
    last = lines[-1][:300] if lines else ""
    if status == -signal.SIGXCPU:
        return ConversionLimitError(
            f"{source}: converting this model used more CPU time than {limits.seconds_setting} "
            f"({limits.seconds:g} s) allows; nothing was stored"
        )
    if status == -signal.SIGKILL or out_of_memory(last):
        return _needs_memory(source, limits, last or "killed by SIGKILL")
    if status < 0:
        try:
            how = f"was killed by {signal.Signals(-status).name}"
        except ValueError:
            how = f"was killed by signal {-status}"
    else:
        how = f"exited with status {status}"
    return ModelSpecError(
        f"{source}: the conversion process {how} without a reply{f': {last}' if last else ''}; nothing was "
        "stored"
    )


def _tail(handle: BinaryIO) -> bytes:
    """The last MAX_REPLY_BYTES written to a temporary file."""
    size = handle.seek(0, 2)
    handle.seek(max(0, size - MAX_REPLY_BYTES))
    return handle.read()


def _reply(stdout: bytes) -> dict[str, Any] | None:
    lines = stdout.strip().splitlines()
    if not lines:
        return None
    try:
        reply = json.loads(lines[-1])
    except ValueError:
        return None
    return reply if isinstance(reply, dict) else None


def _last_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[-1][:300] if lines else type(exc).__name__
