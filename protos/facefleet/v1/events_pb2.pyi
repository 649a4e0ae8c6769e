import datetime

from facefleet.v1 import gallery_pb2 as _gallery_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EventKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_KIND_UNSPECIFIED: _ClassVar[EventKind]
    EVENT_KIND_FACE: _ClassVar[EventKind]
    EVENT_KIND_ACCESS: _ClassVar[EventKind]

class Decision(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DECISION_UNSPECIFIED: _ClassVar[Decision]
    DECISION_MATCH: _ClassVar[Decision]
    DECISION_UNKNOWN: _ClassVar[Decision]
    DECISION_AMBIGUOUS: _ClassVar[Decision]
    DECISION_UNDECIDED: _ClassVar[Decision]
    DECISION_GRANTED: _ClassVar[Decision]
    DECISION_DENIED: _ClassVar[Decision]
EVENT_KIND_UNSPECIFIED: EventKind
EVENT_KIND_FACE: EventKind
EVENT_KIND_ACCESS: EventKind
DECISION_UNSPECIFIED: Decision
DECISION_MATCH: Decision
DECISION_UNKNOWN: Decision
DECISION_AMBIGUOUS: Decision
DECISION_UNDECIDED: Decision
DECISION_GRANTED: Decision
DECISION_DENIED: Decision

class Expression(_message.Message):
    __slots__ = ("label", "probabilities")
    class ProbabilitiesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    LABEL_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    label: str
    probabilities: _containers.ScalarMap[str, float]
    def __init__(self, label: _Optional[str] = ..., probabilities: _Optional[_Mapping[str, float]] = ...) -> None: ...

class FaceAttributes(_message.Message):
    __slots__ = ("gender", "male_probability", "age_years", "age_band")
    GENDER_FIELD_NUMBER: _ClassVar[int]
    MALE_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    AGE_YEARS_FIELD_NUMBER: _ClassVar[int]
    AGE_BAND_FIELD_NUMBER: _ClassVar[int]
    gender: str
    male_probability: float
    age_years: float
    age_band: str
    def __init__(self, gender: _Optional[str] = ..., male_probability: _Optional[float] = ..., age_years: _Optional[float] = ..., age_band: _Optional[str] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("event_id", "device_id", "time", "camera", "kind", "person_id", "decision", "score", "margin", "expression", "quality", "model_versions", "gallery_revision", "door", "reason", "snapshot", "attributes")
    class ModelVersionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    CAMERA_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PERSON_ID_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    MARGIN_FIELD_NUMBER: _ClassVar[int]
    EXPRESSION_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    GALLERY_REVISION_FIELD_NUMBER: _ClassVar[int]
    DOOR_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    device_id: str
    time: _timestamp_pb2.Timestamp
    camera: str
    kind: EventKind
    person_id: str
    decision: Decision
    score: float
    margin: float
    expression: Expression
    quality: float
    model_versions: _containers.ScalarMap[str, str]
    gallery_revision: int
    door: str
    reason: str
    snapshot: FaceSnapshot
    attributes: FaceAttributes
    def __init__(self, event_id: _Optional[str] = ..., device_id: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., camera: _Optional[str] = ..., kind: _Optional[_Union[EventKind, str]] = ..., person_id: _Optional[str] = ..., decision: _Optional[_Union[Decision, str]] = ..., score: _Optional[float] = ..., margin: _Optional[float] = ..., expression: _Optional[_Union[Expression, _Mapping]] = ..., quality: _Optional[float] = ..., model_versions: _Optional[_Mapping[str, str]] = ..., gallery_revision: _Optional[int] = ..., door: _Optional[str] = ..., reason: _Optional[str] = ..., snapshot: _Optional[_Union[FaceSnapshot, _Mapping]] = ..., attributes: _Optional[_Union[FaceAttributes, _Mapping]] = ...) -> None: ...

class FaceSnapshot(_message.Message):
    __slots__ = ("crop_jpeg", "context_jpeg", "embedding")
    CROP_JPEG_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_JPEG_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    crop_jpeg: bytes
    context_jpeg: bytes
    embedding: _gallery_pb2.Embedding
    def __init__(self, crop_jpeg: _Optional[bytes] = ..., context_jpeg: _Optional[bytes] = ..., embedding: _Optional[_Union[_gallery_pb2.Embedding, _Mapping]] = ...) -> None: ...
