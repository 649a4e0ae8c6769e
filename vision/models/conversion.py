"""Converting a model file to IR for the store, in this process or in a child process with a memory and a
time limit.

A model file of a few KB can make OpenVINO build tensors of any size (a ConstantOfShape of n×n is folded
into n² floats), so a file that crosses a process boundary (a server upload) is converted in a child whose
data segment is limited (RLIMIT_DATA): the child fails, and the process that asked is unharmed. The child
also compiles the converted model once for the CPU, on one thread: an IR's constants are folded only when
it is compiled, so a model that passes here does not then take the memory of the server that re-embeds
with it or of the agents it is rolled out to.

The child is `python -m facefleet.vision.models.conversion`: the request as JSON on its standard input,
the reply as one JSON line on its standard output.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from facefleet.vision.errors import (
    ConversionLimitError,
    ModelSpecError,
    ModelStoreError,
    StorageFullError,
)
from facefleet.vision.models.onnx_fold import fold_blocked_dequantize
from facefleet.vision.runtime import ModelIO, Runtime, RuntimeSettings, TensorSpec

MAX_REPLY_BYTES = 1 << 20
"""A reply longer than this is no reply of ours."""
REPLY_ERRORS: dict[str, type[Exception]] = {
    "spec": ModelSpecError,
    "store": ModelStoreError,
    "full": StorageFullError,
}
"""A child's error kind → the exception the parent raises (a "memory" kind: ConversionLimitError)."""
CHECK_SETTINGS = RuntimeSettings(device="CPU", num_streams=1, num_threads=1)
"""How the child compiles a converted model to check it: the CPU, one stream, one thread."""


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
            readable.unlink()
            readable = source
    try:
        return runtime.convert_to_ir(
            readable, target_xml, compress_to_fp16=precision == "FP16", weights=weights
        )
    finally:
        if readable != source:
            readable.unlink(missing_ok=True)


def convert_in_child(
    source: Path, target_xml: Path, precision: str, weights: Path | None, limits: ConversionLimits
) -> ModelIO:
    """convert_source in a child process held to limits. ConversionLimitError when it needs more memory
    or time than they allow (or dies); the child's ModelSpecError, ModelStoreError or StorageFullError
    raised here as it was raised there."""
    request = {
        "source": str(source),
        "target": str(target_xml),
        "precision": precision,
        "weights": None if weights is None else str(weights),
        "memory_bytes": limits.memory_bytes,
    }
    try:
        done = subprocess.run(
            [sys.executable, "-m", __name__],
            input=json.dumps(request).encode(),
            capture_output=True,
            timeout=limits.seconds,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ConversionLimitError(
            f"{source}: converting this model took longer than {limits.seconds_setting} "
            f"({limits.seconds:g} s) allows; nothing was stored"
        ) from None
    reply = _reply(done.stdout)
    if reply is None:
        raise ConversionLimitError(f"{source}: the conversion process {_ended(done)}; nothing was stored")
    if "io" in reply:
        return ModelIO(
            inputs=tuple(TensorSpec.from_json(spec) for spec in reply["io"]["inputs"]),
            outputs=tuple(TensorSpec.from_json(spec) for spec in reply["io"]["outputs"]),
        )
    message = str(reply.get("message", ""))
    if reply.get("error") == "memory":
        raise ConversionLimitError(
            f"{source}: converting this model needs more memory than {limits.memory_setting} "
            f"({limits.memory_bytes} bytes) allows; nothing was stored. A model of a few KB "
            f"can declare tensors of any size: check the model, or raise {limits.memory_setting} for a "
            f"model you trust ({message})"
        )
    raise REPLY_ERRORS.get(str(reply.get("error")), ModelSpecError)(message)


def _reply(stdout: bytes) -> dict[str, Any] | None:
    lines = stdout[-MAX_REPLY_BYTES:].strip().splitlines()
    if not lines:
        return None
    try:
        reply = json.loads(lines[-1])
    except ValueError:
        return None
    return reply if isinstance(reply, dict) else None


def _ended(done: subprocess.CompletedProcess[bytes]) -> str:
    """How a child that gave no reply ended, with the last line it wrote to standard error."""
    if done.returncode < 0:
        try:
            how = f"was killed by {signal.Signals(-done.returncode).name}"
        except ValueError:
            how = f"was killed by signal {-done.returncode}"
        if done.returncode == -signal.SIGKILL:
            how += " (the kernel's out-of-memory killer sends it)"
    else:
        how = f"exited with status {done.returncode} and no reply"
    errors = [line for line in done.stderr.decode(errors="replace").splitlines() if line.strip()]
    return f"{how}: {errors[-1][:300]}" if errors else how


def _out_of_memory(exc: BaseException) -> bool:
    """Whether exc, or what caused it, is a failed allocation (Python's or OpenVINO's std::bad_alloc)."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, MemoryError) or "bad_alloc" in str(cause):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def _check_compiles(runtime: Runtime, source: Path, target_xml: Path) -> None:
    try:
        runtime.compile(target_xml)
    except RuntimeError as exc:
        if _out_of_memory(exc):
            raise
        raise ModelSpecError(
            f"{source}: OpenVINO cannot compile this model for the CPU: {_last_line(exc)}"
        ) from exc


def _last_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[-1][:300] if lines else type(exc).__name__


def _child(request: dict[str, Any]) -> dict[str, Any]:
    memory = int(request["memory_bytes"])
    resource.setrlimit(resource.RLIMIT_DATA, (memory, memory))
    weights = request["weights"]
    source, target = Path(request["source"]), Path(request["target"])
    runtime = Runtime(CHECK_SETTINGS)
    try:
        io = convert_source(
            runtime, source, target, str(request["precision"]), None if weights is None else Path(weights)
        )
        _check_compiles(runtime, source, target)
    except Exception as exc:
        if _out_of_memory(exc):
            return {"error": "memory", "message": _last_line(exc)}
        kind = next((k for k, cls in reversed(REPLY_ERRORS.items()) if isinstance(exc, cls)), None)
        if kind is None:
            raise
        return {"error": kind, "message": str(exc)}
    return {
        "io": {
            "inputs": [spec.to_json() for spec in io.inputs],
            "outputs": [spec.to_json() for spec in io.outputs],
        }
    }


def main() -> None:
    """The child: one request on standard input, one reply line on standard output (what OpenVINO prints
    there goes to standard error)."""
    reply_fd = os.dup(1)
    os.dup2(2, 1)
    reply = _child(json.loads(sys.stdin.buffer.read(MAX_REPLY_BYTES)))
    with os.fdopen(reply_fd, "w", encoding="utf-8") as out:
        out.write(json.dumps(reply) + "\n")


if __name__ == "__main__":
    main()
