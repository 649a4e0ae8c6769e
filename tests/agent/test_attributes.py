"""Gender and age in the agent, with the real models on real photos: the [attributes] section, `analyze
--json`, smoothing per track, the MQTT face event and the link Event reported to the server (protobuf)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from facefleet.agent.cli.main import main
from facefleet.agent.config import AgentConfig
from facefleet.agent.fleet.reports import report_event
from facefleet.agent.publish.events import Versions, face_event, mqtt_payload
from facefleet.agent.recognition.tracking import Observation, Tracker, TrackerSettings
from facefleet.link import serde
from facefleet.link.errors import LinkError
from facefleet.link.events import AttributesResult
from facefleet.v1 import events_pb2
from facefleet.vision.models.store import ModelStore
from facefleet.vision.pipeline import AnalyzerSettings, FaceAnalyzer
from facefleet.vision.runtime import Runtime

NOW = time.time()


@pytest.fixture(scope="module")
def attribute_analyzer(runtime: Runtime, model_store: ModelStore) -> FaceAnalyzer:
    return FaceAnalyzer(runtime, model_store, AnalyzerSettings(embeddings=False, attributes=True))


def test_the_section_is_off_by_default_and_strict() -> None:
    assert AgentConfig().attributes.enabled is False
    assert AgentConfig.model_validate({"attributes": {"enabled": True}}).attributes.enabled is True
    with pytest.raises(ValueError, match="attributes"):
        AgentConfig.model_validate({"attributes": {"enabled": True, "age": True}})
    with pytest.raises(ValueError, match="attributes"):
        AgentConfig.model_validate({"attributes": {"enabled": "sometimes"}})


def test_the_example_config_names_the_section() -> None:
    import tomllib

    example = Path(__file__).parents[2] / "systemd" / "agent.example.toml"
    config = AgentConfig.model_validate(tomllib.loads(example.read_text()))
    assert config.attributes.enabled is False


def test_analyze_json_has_attributes_only_when_asked(
    model_store: ModelStore, photo_paths: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    state = str(model_store.root.parent)
    assert main(["--state-dir", state, "analyze", str(photo_paths["astronaut"]), "--json"]) == 0
    (plain,) = json.loads(capsys.readouterr().out)["images"][0]["faces"]
    assert "attributes" not in plain
    assert (
        main(["--state-dir", state, "analyze", str(photo_paths["astronaut"]), "--json", "--attributes"]) == 0
    )
    (face,) = json.loads(capsys.readouterr().out)["images"][0]["faces"]
    attributes = face["attributes"]
    assert attributes["gender"] == "female"
    assert set(attributes["probabilities"]) == {"female", "male"}
    assert sum(attributes["probabilities"].values()) == pytest.approx(1.0, abs=1e-3)
    assert 20 <= attributes["age_years"] <= 50
    assert attributes["age_band"] in ("20-29", "30-39", "40-49")


def track_of(frames: list[npt.NDArray[np.uint8]], analyzer: FaceAnalyzer) -> list:  # type: ignore[type-arg]
    tracker = Tracker(TrackerSettings(min_votes=2), min_quality=0.0)
    events = []
    for index, frame in enumerate(frames):
        faces = analyzer.analyze(frame)
        observations = [
            Observation(f.detection.box_xyxy, f.quality.score, "unknown", attributes=f.attributes)
            for f in faces
        ]
        events += tracker.update(observations, NOW + index)
    return events + tracker.finish()


def test_a_track_carries_the_mean_of_its_faces(
    astronaut: npt.NDArray[np.uint8], attribute_analyzer: FaceAnalyzer
) -> None:
    """Four frames of the astronaut, brighter and darker: the track's estimate is the mean of the four."""
    frames = [
        np.clip(astronaut.astype(np.int16) + shift, 0, 255).astype(np.uint8) for shift in (0, 25, -25, 40)
    ]
    single = [attribute_analyzer.analyze(frame)[0].attributes for frame in frames]
    assert all(a is not None for a in single)
    males = [a.probabilities["male"] for a in single if a]
    ages = [a.age_years for a in single if a]
    events = track_of(frames, attribute_analyzer)
    assert [e.kind for e in events] == ["decided", "ended"]
    decided, ended = events
    assert decided.attributes is not None and ended.attributes is not None
    assert decided.attributes.probabilities["male"] == pytest.approx(np.mean(males[:2]), abs=1e-6)
    assert ended.attributes.probabilities["male"] == pytest.approx(np.mean(males), abs=1e-6)
    assert ended.attributes.age_years == pytest.approx(np.mean(ages), abs=1e-6)
    assert ended.attributes.gender == ("male" if np.mean(males) > 0.5 else "female")


def test_the_face_event_carries_them_on_mqtt_and_to_the_server(
    astronaut: npt.NDArray[np.uint8], attribute_analyzer: FaceAnalyzer, analyzer: FaceAnalyzer
) -> None:
    (_, ended) = track_of([astronaut] * 3, attribute_analyzer)
    versions = Versions("0.1.0", "2026.4", {"attributes": "dlib-age-gender@v1"}, 3)
    event = face_event("door-1", "front", ended, None, versions, NOW + 3)
    payload = mqtt_payload(event)
    assert payload["schema"] == 1
    assert payload["attributes"] == ended.attributes.to_json()  # type: ignore[union-attr]
    assert payload["attributes"]["gender"] == "female"
    json.dumps(payload)

    reported = report_event(event, 3)
    assert reported.attributes is not None and ended.attributes is not None
    assert reported.attributes.gender == "female"
    assert reported.attributes.male_probability == pytest.approx(
        ended.attributes.probabilities["male"], abs=1e-4
    )
    assert reported.attributes.male_probability < 0.5  # the astronaut is a woman
    assert reported.attributes.age_years == pytest.approx(ended.attributes.age_years, abs=0.05)
    assert 20 <= reported.attributes.age_years <= 50
    message = serde.event_to_proto(reported)
    assert message.HasField("attributes")
    decoded = serde.event_from_proto(events_pb2.Event.FromString(message.SerializeToString()))
    assert decoded.attributes == reported.attributes
    assert decoded.attributes.age_band == ended.attributes.age_band

    # without the task: no field on MQTT, none on the wire, and an older payload (no field 17) still decodes
    (_, plain) = track_of([astronaut] * 3, analyzer)
    plain_event = face_event("door-1", "front", plain, None, versions, NOW + 3)
    assert "attributes" not in mqtt_payload(plain_event)
    old = serde.event_to_proto(report_event(plain_event, 3))
    assert not old.HasField("attributes")
    assert serde.event_from_proto(events_pb2.Event.FromString(old.SerializeToString())).attributes is None


@pytest.mark.parametrize(
    ("gender", "male", "years", "band"),
    [
        ("other", 0.5, 30, "30-39"),
        ("male", 1.5, 30, "30-39"),
        ("male", 0.9, -1, "30-39"),
        ("male", 0.9, 30, "31"),
    ],
)
def test_the_link_refuses_bad_attributes(gender: str, male: float, years: float, band: str) -> None:
    with pytest.raises(LinkError, match="attributes"):
        AttributesResult(gender, male, years, band)
