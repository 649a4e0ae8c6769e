"""The one module that talks to OpenVINO: devices, compilation, synchronous and asynchronous inference
requests, and conversion of ONNX/TFLite/IR files to IR for the model store."""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import shutil
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import openvino as ov
import openvino.opset13 as ops
from openvino.preprocess import PrePostProcessor

from facefleet.vision import compiled_cache
from facefleet.vision.errors import (
    DeviceError,
    ModelSpecError,
    ModelStoreError,
    QuantizerMissingError,
    StorageFullError,
)

log = logging.getLogger(__name__)

PerformanceHint = Literal["LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT"]
Precision = Literal["f32", "f16", "bf16"]
PrecisionSetting = Literal["auto", "f32", "f16", "bf16"]
"""A configured precision: "auto" leaves it to the per-model choice (f32 for a model compiled without one)."""
HINT_CAPABILITIES: dict[str, Precision] = {"BF16": "bf16", "FP16": "f16"}
"""OPTIMIZATION_CAPABILITIES entries → the inference precision hint they make worth trying."""
Outputs = dict[str, npt.NDArray[np.float32]]
Input = npt.NDArray[np.float32] | npt.NDArray[np.uint8]
"""An input tensor: float, or a uint8 image for a model compiled with image_input."""
VIRTUAL_DEVICES = ("AUTO", "HETERO", "MULTI", "BATCH")
CONTROL_FLOW = ("Loop", "TensorIterator", "If")
"""Operations that can run a model's body any number of times."""
SIZE_INPUTS: dict[str, tuple[int, ...]] = {
    "Broadcast": (1,),
    "Tile": (1,),
    "Range": (0, 1, 2),
    "Pad": (1, 2),
    "Interpolate": (1, 2, 3),
    "RandomUniform": (0,),
    "Eye": (0, 1, 3),
}
"""Operation → the inputs that set how large its output is; rehearse() wants them constant."""
REHEARSAL_SPATIAL = 640
"""The size rehearse() gives an input dimension left open beyond the batch (YuNet's own 640×640)."""
MIN_FREE_BYTES = 1 << 20
"""A failed model write with less free space than this on its disk is reported as a full disk."""


@dataclass(frozen=True)
class JoinedOutputs:
    """Outputs a compiled model hands over joined, so a frame's results cross into Python as a few arrays.

    score_pairs: output pairs (a, b), each read as (1, cells, 1) and scored inside the model as
    sqrt(clip(a, 0, 1) · clip(b, 0, 1)), all concatenated along axis 1 into the output `score`;
    concatenated: (name, width, parts), the parts each read as (1, cells, width) and concatenated along
    axis 1 into the output name. The model's other outputs are dropped.
    """

    score_pairs: tuple[tuple[str, str], ...]
    concatenated: tuple[tuple[str, int, tuple[str, ...]], ...]


@dataclass(frozen=True)
class RuntimeSettings:
    """How models are compiled.

    device: OpenVINO device string (CPU, GPU, NPU, AUTO, HETERO:GPU,CPU, MULTI:…);
    fallback_to_cpu: use CPU (with a warning) when the device is missing instead of failing;
    num_streams / num_threads: None lets OpenVINO choose from the performance hint;
    inference_precision: the hint of models compiled without their own ("auto": f32).
    """

    device: str = "CPU"
    fallback_to_cpu: bool = False
    performance_hint: PerformanceHint = "LATENCY"
    inference_precision: PrecisionSetting = "auto"
    cache_dir: Path | None = None
    num_streams: int | None = None
    num_threads: int | None = None


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output: name, shape (-1 for a dynamic dimension) and element type."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TensorSpec:
        return cls(
            name=str(data["name"]), shape=tuple(int(d) for d in data["shape"]), dtype=str(data["dtype"])
        )


@dataclass(frozen=True)
class ModelIO:
    """The inputs and outputs of a model, in model order."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


class Runtime:
    """An OpenVINO Core bound to one resolved device and compile configuration."""

    def __init__(self, settings: RuntimeSettings | None = None) -> None:
        self.settings = settings or RuntimeSettings()
        self._core = ov.Core()
        if self.settings.cache_dir is not None:
            try:
                self.settings.cache_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ModelStoreError(
                    f"compiled-model cache {self.settings.cache_dir}: cannot create {exc.filename} "
                    f"({exc.strerror}); make the state directory writable for this user (under systemd with "
                    "a state_dir outside StateDirectory=: ReadWritePaths= it), choose another with state_dir "
                    "or --state-dir, or set runtime.model_cache = false"
                ) from None
            self.sweep_compiled_cache()
        self.device = self._resolve_device(self.settings.device)

    @property
    def version(self) -> str:
        return str(ov.get_version())

    def sweep_compiled_cache(self) -> list[Path]:
        """Remove the compiled blobs of models no longer stored or of another OpenVINO version (none without
        a cache_dir); the paths removed."""
        if self.settings.cache_dir is None:
            return []
        return compiled_cache.sweep(self.settings.cache_dir, self.version)

    def available_devices(self) -> list[str]:
        return list(self._core.available_devices)

    def device_properties(self, device: str) -> dict[str, str]:
        """Readable properties of one physical device, as strings."""
        result: dict[str, str] = {}
        supported = self._core.get_property(device, "SUPPORTED_PROPERTIES")
        for key, mode in dict(supported).items():
            if key in ("SUPPORTED_PROPERTIES", "CACHING_PROPERTIES") or str(mode) == "WO":
                continue
            try:
                result[key] = str(self._core.get_property(device, key))
            except (RuntimeError, TypeError):
                continue  # a property this binding cannot express; not worth failing the listing
        return result

    @functools.cached_property
    def device_name(self) -> str:
        """The device and the hardware behind it, e.g. 'CPU (Intel(R) Xeon(R) …)': what a measurement on
        this device holds for."""
        if self.device.split(":")[0].upper() in VIRTUAL_DEVICES:
            return self.device
        try:
            return f"{self.device} ({self._core.get_property(self.device, 'FULL_DEVICE_NAME')})"
        except (RuntimeError, TypeError):
            return self.device

    def hint_precisions(self) -> list[Precision]:
        """The inference precision hints worth measuring on this device: f32 always, bf16/f16 where its
        OPTIMIZATION_CAPABILITIES has BF16/FP16 and it takes the hint (virtual devices: f32 only)."""
        if not self._takes_precision_hint():
            return ["f32"]
        try:
            capabilities = {str(c) for c in self._core.get_property(self.device, "OPTIMIZATION_CAPABILITIES")}
        except (RuntimeError, TypeError):
            return ["f32"]
        return ["f32", *(hint for name, hint in HINT_CAPABILITIES.items() if name in capabilities)]

    def compile(
        self,
        model_xml: Path,
        input_shape: Sequence[int] | None = None,
        single_stream: bool = False,
        input_shapes: Mapping[str, Sequence[int]] | None = None,
        precision: Precision | None = None,
        image_input: bool = False,
        joined: JoinedOutputs | None = None,
    ) -> CompiledNet:
        """Compile an IR file for this runtime's device; input_shape reshapes the single input first
        (input_shapes: several inputs by name); single_stream: never run two requests of this model at the
        same time; precision: this model's inference precision hint (default: the settings'). image_input:
        the single (N, C, H, W) float input takes an (N, H, W, C) uint8 image instead, input_shape being
        that image's, and converts it inside the compiled model (a quarter of the bytes to copy in). joined:
        the outputs handed over joined (JoinedOutputs)."""
        model = self._core.read_model(str(model_xml))
        if input_shape is not None:
            if image_input:
                n, h, w, c = input_shape
                input_shape = (n, c, h, w)
            model.reshape({model.inputs[0].get_any_name(): ov.PartialShape(list(input_shape))})
        if input_shapes:
            model.reshape({name: ov.PartialShape(list(shape)) for name, shape in input_shapes.items()})
        if image_input:
            steps = PrePostProcessor(model)
            steps.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
            steps.input().model().set_layout(ov.Layout("NCHW"))
            model = steps.build()
        if joined is not None:
            _join_outputs(model, joined, model_xml)
        config = self._compile_config(precision)
        if self.settings.cache_dir is not None:
            config["CACHE_DIR"] = str(
                compiled_cache.folder_for(self.settings.cache_dir, model_xml, self.version)
            )
        if single_stream and "PERFORMANCE_HINT" in config:
            config["PERFORMANCE_HINT"] = "LATENCY"
            config.pop("NUM_STREAMS", None)
        compiled = self._core.compile_model(model, self.device, config)
        return CompiledNet(compiled)

    def describe(self, model_path: Path) -> ModelIO:
        """Inputs and outputs of an ONNX, TFLite or IR file, without compiling it."""
        model = self._core.read_model(str(model_path))
        return _model_io(model)

    def convert_to_ir(
        self, source: Path, target_xml: Path, compress_to_fp16: bool = True, weights: Path | None = None
    ) -> ModelIO:
        """Convert an ONNX or TFLite file to IR (target_xml and its .bin), weights in FP16 if asked. An IR
        (source NAME.xml, weights: its .bin, default NAME.bin beside it) is read and saved again the same way:
        OpenVINO's converter does not take IR, its reader does."""
        try:
            if source.suffix.lower() == ".xml":
                weights = weights or source.with_suffix(".bin")
                model = self._core.read_model(str(source), str(weights))
            else:
                with _usage_reports_declined():
                    model = ov.convert_model(str(source))
        except Exception as exc:
            what = "read this IR" if source.suffix.lower() == ".xml" else "convert this model"
            raise ModelSpecError(f"{source}: OpenVINO cannot {what}: {_first_line(exc)}") from exc
        try:
            ov.save_model(model, str(target_xml), compress_to_fp16=compress_to_fp16)
        except (RuntimeError, OSError) as exc:  # OpenVINO reports a failed write as an iostream error
            free = shutil.disk_usage(target_xml.parent).free
            if free < MIN_FREE_BYTES or (isinstance(exc, OSError) and exc.errno == errno.ENOSPC):
                raise StorageFullError(
                    f"{target_xml}: cannot write the converted model, the disk is full ({free} bytes free)"
                ) from exc
            message = f"{target_xml}: cannot write the converted model ({_first_line(exc)})"
            raise ModelStoreError(message) from exc
        return _model_io(model)

    def rehearse(self, model_xml: Path, source: str, spatial: int = REHEARSAL_SPATIAL) -> None:
        """Run an IR once on zeros, compiled for this runtime's device, to learn whether it fits in memory
        and time before anyone relies on it; its input dimensions left open become 1 (the first) or
        `spatial`. ModelSpecError (naming source) for a model that could run without bound on some input:
        control flow (Loop, TensorIterator, If), or an operation whose output size comes from a tensor
        computed at run time rather than a constant (a Broadcast to the input's shape times 20000, say).
        Failures to compile or run raise as OpenVINO raised them (std::bad_alloc and the like)."""
        model = self._core.read_model(str(model_xml))
        for op in model.get_ordered_ops():
            kind = op.get_type_name()
            if kind in CONTROL_FLOW:
                raise ModelSpecError(
                    f"{source}: uses control flow ({kind} {op.get_friendly_name()!r}), which no face model "
                    "needs and which can run without end; export the model without it"
                )
            for index in SIZE_INPUTS.get(kind, ()):
                if index < op.get_input_size() and not _constant(op.input_value(index).get_node()):
                    raise ModelSpecError(
                        f"{source}: {kind} {op.get_friendly_name()!r} takes its output size from a tensor "
                        "computed at run time, so its memory has no bound a model check can see; export the "
                        "model with constant sizes (static shapes)"
                    )
        shapes = {
            port.get_any_name(): ov.PartialShape(
                [
                    dim.get_length() if dim.is_static else 1 if axis == 0 else spatial
                    for axis, dim in enumerate(port.get_partial_shape())
                ]
            )
            for port in model.inputs
        }
        model.reshape(shapes)
        compiled = self._core.compile_model(model, self.device, self._compile_config())
        zeros = {
            port.get_any_name(): np.zeros(
                [dim.get_length() for dim in port.get_partial_shape()], port.get_element_type().to_dtype()
            )
            for port in model.inputs
        }
        compiled.create_infer_request().infer(zeros)

    def merge_to_ir(
        self, sources: Mapping[str, Path], target_xml: Path, compress_to_fp16: bool = True
    ) -> ModelIO:
        """Several single-input, single-output ONNX/TFLite models side by side in one IR: for each
        name → source, an input `<name>_chip` and an output `<name>` (e.g. the attributes task's gender and
        age models, which the model store keeps as one model)."""
        params: list[Any] = []
        results: list[Any] = []
        for name, source in sources.items():
            try:
                with _usage_reports_declined():
                    model = ov.convert_model(str(source))
            except Exception as exc:
                raise ModelSpecError(
                    f"{source}: OpenVINO cannot convert this model: {_first_line(exc)}"
                ) from exc
            if len(model.inputs) != 1 or len(model.outputs) != 1:
                raise ModelSpecError(f"{source}: needs one input and one output to be merged")
            model.inputs[0].get_tensor().set_names({f"{name}_chip"})
            model.outputs[0].get_tensor().set_names({name})
            params.extend(model.get_parameters())
            results.extend(model.get_results())
        merged = ov.Model(results, params, "+".join(sources))
        try:
            ov.save_model(merged, str(target_xml), compress_to_fp16=compress_to_fp16)
        except (RuntimeError, OSError) as exc:
            raise ModelStoreError(
                f"{target_xml}: cannot write the merged model ({_first_line(exc)})"
            ) from exc
        return _model_io(merged)

    def quantize_to_ir(
        self,
        source_xml: Path,
        target_xml: Path,
        calibration: Sequence[npt.NDArray[np.float32]],
        keep_first_convolution: bool = True,
        asymmetric_activations: bool = False,
    ) -> tuple[ModelIO, list[str]]:
        """NNCF post-training INT8 quantization of an IR with one input: calibration holds input tensors
        (batch 1 each, all used); keep_first_convolution leaves the first convolution in float;
        asymmetric_activations: NNCF's MIXED preset instead of PERFORMANCE (symmetric everywhere). Saves
        target_xml (and its .bin) and returns its IO and the names of the operations kept in float.

        NNCF is the optional `quantize` extra and is imported here only, when a model is quantized (NNCF
        needs the openvino.Model, which only this module may hold); the agent's runtime never imports it."""
        try:
            import nncf  # the optional extra, see above
        except ImportError:
            raise QuantizerMissingError(
                "quantization needs NNCF, the optional extra: pip install 'facefleet[quantize]'"
            ) from None
        model = self._core.read_model(str(source_xml))
        if len(model.inputs) != 1:
            raise ModelSpecError(f"{source_xml}: only models with one input can be quantized")
        kept: list[str] = []
        if keep_first_convolution:
            convolutions = [
                op.get_friendly_name()
                for op in model.get_ordered_ops()
                if op.get_type_name() in ("Convolution", "GroupConvolution")
            ]
            kept = convolutions[:1]
        ignored = nncf.IgnoredScope(names=kept) if kept else None
        nncf_log = logging.getLogger("nncf")  # NNCF logs its INFO lines to stdout, where --json goes
        level = nncf_log.level
        nncf_log.setLevel(logging.WARNING)
        try:
            with _usage_reports_declined(), contextlib.redirect_stdout(sys.stderr):
                quantized = nncf.quantize(
                    model,
                    nncf.Dataset(list(calibration)),
                    subset_size=len(calibration),
                    ignored_scope=ignored,
                    preset=nncf.QuantizationPreset.MIXED if asymmetric_activations else None,
                )
        except Exception as exc:
            message = f"{source_xml}: NNCF cannot quantize this model: {_first_line(exc)}"
            raise ModelSpecError(message) from exc
        finally:
            nncf_log.setLevel(level)
        try:
            ov.save_model(quantized, str(target_xml))
        except (RuntimeError, OSError) as exc:
            raise ModelStoreError(
                f"{target_xml}: cannot write the quantized model ({_first_line(exc)})"
            ) from exc
        return _model_io(quantized), kept

    def default_precision(self) -> Precision:
        """The hint of a model compiled without its own: the configured one, f32 for "auto"."""
        setting = self.settings.inference_precision
        return "f32" if setting == "auto" else setting

    def _supported_properties(self) -> set[str]:
        physical = self.device.split(":")[0].split(".")[0]
        if physical in VIRTUAL_DEVICES:
            return set()
        return set(self._core.get_property(self.device, "SUPPORTED_PROPERTIES"))

    def _takes_precision_hint(self) -> bool:
        return "INFERENCE_PRECISION_HINT" in self._supported_properties()

    def _compile_config(self, precision: Precision | None = None) -> dict[str, Any]:
        config: dict[str, Any] = {"PERFORMANCE_HINT": self.settings.performance_hint}
        supported = self._supported_properties()
        if "INFERENCE_PRECISION_HINT" in supported:
            config["INFERENCE_PRECISION_HINT"] = precision or self.default_precision()
        if self.settings.num_streams is not None and "NUM_STREAMS" in supported:
            config["NUM_STREAMS"] = self.settings.num_streams
        if self.settings.num_threads is not None and "INFERENCE_NUM_THREADS" in supported:
            config["INFERENCE_NUM_THREADS"] = self.settings.num_threads
        return config

    def _resolve_device(self, device: str) -> str:
        requested = requested_devices(device)
        if requested and all(self._present(name) for name in requested):
            return device  # without listing every device: that loads every plugin (GPU, NPU: ~19 MB RSS)
        available = self.available_devices()
        missing = [name for name in requested if not _is_available(name, available)]
        if not missing:
            return device
        message = (
            f"OpenVINO device {', '.join(missing)} is not available (runtime {ov.get_version()}); "
            f"available devices: {', '.join(available) or 'none'}"
        )
        if self.settings.fallback_to_cpu and _is_available("CPU", available):
            log.warning("%s; falling back to CPU as runtime.fallback_to_cpu allows", message)
            return "CPU"
        raise DeviceError(f"{message}. Set runtime.device to one of them or runtime.fallback_to_cpu = true.")

    def _present(self, name: str) -> bool:
        """Whether a physical device ('CPU', 'GPU.1') answers, loading only its own plugin."""
        try:
            self._core.get_property(name, "FULL_DEVICE_NAME")
        except RuntimeError:
            return False
        return True


@contextlib.contextmanager
def _usage_reports_declined() -> Iterator[None]:
    """OpenVINO's converter sends usage statistics from a forked child process unless it runs under CI (its
    only switch besides a consent file in the user's home). FaceFleet runs offline, and forking next to
    running gRPC threads crashes the child, so conversions run with that switch on."""
    previous = os.environ.get("CI")
    os.environ["CI"] = "true"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("CI", None)
        else:
            os.environ["CI"] = previous


def requested_devices(device: str) -> list[str]:
    """Physical devices named by a device string: 'HETERO:GPU,CPU' → ['GPU', 'CPU'], 'AUTO' → []."""
    device = device.strip()
    if not device:
        raise DeviceError("runtime.device is empty; use e.g. CPU, GPU, NPU or AUTO")
    head, _, tail = device.partition(":")
    if head.upper() in VIRTUAL_DEVICES:
        return [name.strip() for name in tail.split(",") if name.strip()]
    return [device]


def _is_available(name: str, available: Sequence[str]) -> bool:
    return any(dev == name or dev.split(".")[0] == name for dev in available)


class CompiledNet:
    """A compiled model with one input: synchronous calls and an asynchronous request queue."""

    def __init__(self, compiled: Any) -> None:
        self._compiled = compiled
        self.input_name: str = compiled.inputs[0].get_any_name()
        self._request = compiled.create_infer_request()
        self._lock = threading.Lock()
        self._output_names = [_names(port) for port in compiled.outputs]

    @functools.cached_property
    def optimal_requests(self) -> int:
        """Requests the device runs at once (1 with the LATENCY hint, the stream count with THROUGHPUT)."""
        return int(self._compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))

    @functools.cached_property
    def inference_precision(self) -> str:
        """The precision the device runs this model at (OpenVINO's element type name: f32, bf16, f16), or
        '' where the device does not say."""
        try:
            value = self._compiled.get_property("INFERENCE_PRECISION_HINT")
        except (RuntimeError, TypeError):
            return ""
        return str(value.get_type_name()) if hasattr(value, "get_type_name") else str(value)

    def infer(self, tensor: Input) -> Outputs:
        """Run one synchronous inference; outputs by every name of each output port (copied)."""
        with self._lock:
            self._request.infer({0: tensor})
            return self._collect(self._request)

    def infer_inputs(self, tensors: Mapping[str, npt.NDArray[np.float32]]) -> Outputs:
        """Run one synchronous inference of a model with several inputs, given by name."""
        with self._lock:
            self._request.infer(dict(tensors))
            return self._collect(self._request)

    def request(self) -> Request:
        """A new request for start()/wait() asynchronous use; the caller owns it (not thread-safe)."""
        return Request(self, self._compiled.create_infer_request())

    def _collect(self, request: Any) -> Outputs:
        result: Outputs = {}
        for index, names in enumerate(self._output_names):
            data = np.array(request.get_output_tensor(index).data, dtype=np.float32, copy=True)
            for name in names:
                result[name] = data
        return result


class Request:
    """One asynchronous inference request: start() returns at once, wait() blocks without the GIL."""

    def __init__(self, net: CompiledNet, raw: Any) -> None:
        self.net = net
        self._raw = raw

    def start(self, tensor: Input) -> None:
        self._raw.start_async({0: tensor})

    def done(self) -> bool:
        """True when the started inference has finished (does not block)."""
        return bool(self._raw.wait_for(0))

    def wait(self) -> Outputs:
        """Block until the inference finishes; its outputs, copied."""
        self._raw.wait()
        return self.net._collect(self._raw)

    def latency_s(self) -> float:
        """OpenVINO's time from the start of the finished inference to its completion (s)."""
        return float(self._raw.latency) / 1000.0


def _join_outputs(model: Any, joined: JoinedOutputs, model_xml: Path) -> None:
    """Replace model's outputs (in place) by the joined ones of JoinedOutputs."""
    producers = {
        name: result.input_value(0)
        for result in model.get_results()
        for name in result.get_output_tensor(0).get_names()
    }

    def rows(name: str, width: int) -> Any:
        """Output name as (1, cells, width)."""
        try:
            producer = producers[name]
        except KeyError:
            raise ModelSpecError(
                f"{model_xml}: no output '{name}' to join; the model has {sorted(producers)}"
            ) from None
        return ops.reshape(producer, ops.constant(np.array([1, -1, width], dtype=np.int64)), False)

    try:
        nodes: dict[str, Any] = {}
        if joined.score_pairs:
            scores = [
                ops.sqrt(ops.multiply(ops.clamp(rows(a, 1), 0.0, 1.0), ops.clamp(rows(b, 1), 0.0, 1.0)))
                for a, b in joined.score_pairs
            ]
            nodes["score"] = ops.concat(scores, 1)
        for name, width, parts in joined.concatenated:
            nodes[name] = ops.concat([rows(part, width) for part in parts], 1)
    except RuntimeError as exc:  # shapes that cannot be read as rows of that width
        raise ModelSpecError(
            f"{model_xml}: its outputs cannot be joined as this task needs: {_first_line(exc)}"
        ) from exc
    for result in list(model.get_results()):
        model.remove_result(result)
    for name, node in nodes.items():
        node.output(0).get_tensor().set_names({name})
    model.add_results([ops.result(node) for node in nodes.values()])


def _constant(node: Any) -> bool:
    """Whether node is a Constant, or a Convert of one (FP16 compression puts Converts in between)."""
    while node.get_type_name() == "Convert":
        node = node.input_value(0).get_node()
    return bool(node.get_type_name() == "Constant")


def _names(port: Any) -> list[str]:
    names = sorted(port.get_names())
    return names or [str(port.get_index())]


def _model_io(model: Any) -> ModelIO:
    def spec(port: Any) -> TensorSpec:
        shape = tuple(-1 if dim.is_dynamic else dim.get_length() for dim in port.get_partial_shape())
        names = _names(port)
        return TensorSpec(name=names[0], shape=shape, dtype=str(port.get_element_type().get_type_name()))

    return ModelIO(inputs=tuple(spec(p) for p in model.inputs), outputs=tuple(spec(p) for p in model.outputs))


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__
