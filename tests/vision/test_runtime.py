"""The OpenVINO runtime wrapper: device resolution and compile settings."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from facefleet.vision.detection import JOINED_OUTPUTS, STRIDES
from facefleet.vision.errors import DeviceError, ModelSpecError
from facefleet.vision.models.store import ModelStore
from facefleet.vision.runtime import JoinedOutputs, Runtime, RuntimeSettings, requested_devices


@pytest.mark.parametrize(
    ("device", "expected"),
    [
        ("CPU", ["CPU"]),
        ("GPU.1", ["GPU.1"]),
        ("AUTO", []),
        ("AUTO:GPU,CPU", ["GPU", "CPU"]),
        ("HETERO:NPU,CPU", ["NPU", "CPU"]),
        ("MULTI:GPU, CPU", ["GPU", "CPU"]),
    ],
)
def test_requested_devices(device: str, expected: list[str]) -> None:
    assert requested_devices(device) == expected


def test_empty_device_is_an_error() -> None:
    with pytest.raises(DeviceError, match="empty"):
        requested_devices("  ")


def test_missing_device_lists_the_available_ones() -> None:
    with pytest.raises(DeviceError) as info:
        Runtime(RuntimeSettings(device="MYRIAD"))
    message = str(info.value)
    assert "MYRIAD is not available" in message and "CPU" in message and "fallback_to_cpu" in message


def test_missing_device_in_hetero_is_named() -> None:
    with pytest.raises(DeviceError, match="NPU is not available"):
        Runtime(RuntimeSettings(device="HETERO:NPU,CPU"))


def test_fallback_to_cpu_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        runtime = Runtime(RuntimeSettings(device="GPU.7", fallback_to_cpu=True))
    assert runtime.device == "CPU"
    assert "falling back to CPU" in caplog.text


def test_auto_device_runs_a_model(model_store: ModelStore) -> None:
    runtime = Runtime(RuntimeSettings(device="AUTO"))
    net = runtime.compile(model_store.active("expression").xml_path)
    outputs = net.infer(np.zeros((1, 64, 64, 1), np.float32))
    assert next(iter(outputs.values())).shape == (1, 7)


def test_precision_and_threads_reach_the_compiled_model(model_store: ModelStore, tmp_path: object) -> None:
    runtime = Runtime(
        RuntimeSettings(
            inference_precision="f32", num_threads=1, num_streams=1, performance_hint="THROUGHPUT"
        )
    )
    net = runtime.compile(model_store.active("expression").xml_path)
    compiled = net._compiled
    assert str(compiled.get_property("INFERENCE_PRECISION_HINT")) in ("f32", "<Type: 'float32'>")
    assert int(compiled.get_property("INFERENCE_NUM_THREADS")) == 1
    assert int(compiled.get_property("NUM_STREAMS")) == 1


def test_requests_in_flight_together_give_the_synchronous_results(
    model_store: ModelStore, runtime: Runtime
) -> None:
    net = runtime.compile(model_store.active("expression").xml_path)
    inputs = [np.full((1, 64, 64, 1), v, np.float32) for v in np.linspace(-1, 1, 6)]
    requests = [net.request() for _ in inputs]
    for request, tensor in zip(requests, inputs, strict=True):
        request.start(tensor)
    results = [request.wait() for request in requests]
    assert all(request.done() for request in requests)
    for result, tensor in zip(results, inputs, strict=True):
        np.testing.assert_allclose(
            next(iter(result.values())), next(iter(net.infer(tensor).values())), atol=1e-6
        )
    assert len({round(float(next(iter(r.values()))[0, 3]), 5) for r in results}) > 1


def test_an_image_input_gives_the_float_inputs_outputs(
    runtime: Runtime, model_store: ModelStore, group_photo: np.ndarray
) -> None:
    """The detector compiled to take the uint8 (1, H, W, 3) image converts it inside the model: the same
    outputs as the (1, 3, H, W) float input it replaces, on a real photo."""
    xml = model_store.active("detection").xml_path
    image = np.ascontiguousarray(group_photo[:448, :640][None])
    as_image = runtime.compile(xml, input_shape=image.shape, image_input=True)
    as_float = runtime.compile(xml, input_shape=(1, 3, 448, 640))
    converted = as_image.infer(image)
    expected = as_float.infer(np.ascontiguousarray(image.transpose(0, 3, 1, 2), dtype=np.float32))
    assert converted.keys() == expected.keys()
    for name, values in expected.items():
        np.testing.assert_allclose(converted[name], values, rtol=1e-5, atol=1e-5)


def test_joined_outputs_score_and_concatenate_inside_the_model(
    runtime: Runtime, model_store: ModelStore, group_photo: np.ndarray
) -> None:
    """The detector compiled with its joined outputs hands over, on a real photo, the geometric mean of
    its class and objectness scores and its boxes and landmarks, each concatenated over the three grids."""
    xml = model_store.active("detection").xml_path
    image = np.ascontiguousarray(group_photo[:448, :640][None])
    joined = runtime.compile(xml, input_shape=image.shape, image_input=True, joined=JOINED_OUTPUTS)
    raw = runtime.compile(xml, input_shape=image.shape, image_input=True).infer(image)
    outputs = joined.infer(image)
    assert set(outputs) == {"score", "bbox", "kps"}
    cells = sum((448 // s) * (640 // s) for s in STRIDES)
    expected_score = np.concatenate(
        [np.sqrt(np.clip(raw[f"cls_{s}"], 0, 1) * np.clip(raw[f"obj_{s}"], 0, 1)) for s in STRIDES], axis=1
    )
    assert outputs["score"].shape == (1, cells, 1) and (outputs["score"] > 0.6).sum() >= 6
    np.testing.assert_allclose(outputs["score"], expected_score, rtol=1e-5, atol=1e-6)
    for kind in ("bbox", "kps"):
        expected = np.concatenate([raw[f"{kind}_{s}"] for s in STRIDES], axis=1)
        np.testing.assert_allclose(outputs[kind], expected, rtol=1e-5, atol=1e-5)


def test_joining_an_output_the_model_lacks_names_it(runtime: Runtime, model_store: ModelStore) -> None:
    xml = model_store.active("detection").xml_path
    wrong = JoinedOutputs(score_pairs=(("cls_8", "obj_64"),), concatenated=())
    with pytest.raises(ModelSpecError, match=r"no output 'obj_64' to join; the model has .*cls_16"):
        runtime.compile(xml, input_shape=(1, 64, 64, 3), image_input=True, joined=wrong)


def test_outputs_that_cannot_be_read_as_rows_of_their_width_are_refused(
    runtime: Runtime, model_store: ModelStore
) -> None:
    """A stride-8 grid of 8×8 cells has 64·10 landmark values: rows of 7 do not fit, and the error says so."""
    xml = model_store.active("detection").xml_path
    wrong = JoinedOutputs(score_pairs=(), concatenated=(("kps", 7, ("kps_8",)),))
    with pytest.raises(ModelSpecError, match="outputs cannot be joined as this task needs"):
        runtime.compile(xml, input_shape=(1, 64, 64, 3), image_input=True, joined=wrong)
