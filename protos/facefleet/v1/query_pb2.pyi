import datetime

from facefleet.v1 import devices_pb2 as _devices_pb2
from facefleet.v1 import events_pb2 as _events_pb2
from facefleet.v1 import models_pb2 as _models_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EventFilter(_message.Message):
    __slots__ = ("start", "end", "device_ids", "person_ids", "decisions", "kinds", "cameras", "doors")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    DEVICE_IDS_FIELD_NUMBER: _ClassVar[int]
    PERSON_IDS_FIELD_NUMBER: _ClassVar[int]
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    CAMERAS_FIELD_NUMBER: _ClassVar[int]
    DOORS_FIELD_NUMBER: _ClassVar[int]
    start: _timestamp_pb2.Timestamp
    end: _timestamp_pb2.Timestamp
    device_ids: _containers.RepeatedScalarFieldContainer[str]
    person_ids: _containers.RepeatedScalarFieldContainer[str]
    decisions: _containers.RepeatedScalarFieldContainer[_events_pb2.Decision]
    kinds: _containers.RepeatedScalarFieldContainer[_events_pb2.EventKind]
    cameras: _containers.RepeatedScalarFieldContainer[str]
    doors: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., device_ids: _Optional[_Iterable[str]] = ..., person_ids: _Optional[_Iterable[str]] = ..., decisions: _Optional[_Iterable[_Union[_events_pb2.Decision, str]]] = ..., kinds: _Optional[_Iterable[_Union[_events_pb2.EventKind, str]]] = ..., cameras: _Optional[_Iterable[str]] = ..., doors: _Optional[_Iterable[str]] = ...) -> None: ...

class ListEventsRequest(_message.Message):
    __slots__ = ("filter", "page_size", "page_token")
    FILTER_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    filter: EventFilter
    page_size: int
    page_token: str
    def __init__(self, filter: _Optional[_Union[EventFilter, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListEventsResponse(_message.Message):
    __slots__ = ("events", "next_page_token")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[_events_pb2.Event]
    next_page_token: str
    def __init__(self, events: _Optional[_Iterable[_Union[_events_pb2.Event, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CountEventsRequest(_message.Message):
    __slots__ = ("filter", "interval_seconds")
    FILTER_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    filter: EventFilter
    interval_seconds: int
    def __init__(self, filter: _Optional[_Union[EventFilter, _Mapping]] = ..., interval_seconds: _Optional[int] = ...) -> None: ...

class IntervalCount(_message.Message):
    __slots__ = ("start", "device_id", "count")
    START_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    start: _timestamp_pb2.Timestamp
    device_id: str
    count: int
    def __init__(self, start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., device_id: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class CountEventsResponse(_message.Message):
    __slots__ = ("counts",)
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    counts: _containers.RepeatedCompositeFieldContainer[IntervalCount]
    def __init__(self, counts: _Optional[_Iterable[_Union[IntervalCount, _Mapping]]] = ...) -> None: ...

class ExpressionDistributionRequest(_message.Message):
    __slots__ = ("filter", "per_device")
    FILTER_FIELD_NUMBER: _ClassVar[int]
    PER_DEVICE_FIELD_NUMBER: _ClassVar[int]
    filter: EventFilter
    per_device: bool
    def __init__(self, filter: _Optional[_Union[EventFilter, _Mapping]] = ..., per_device: _Optional[bool] = ...) -> None: ...

class ExpressionCount(_message.Message):
    __slots__ = ("device_id", "label", "count")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    label: str
    count: int
    def __init__(self, device_id: _Optional[str] = ..., label: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class ExpressionDistributionResponse(_message.Message):
    __slots__ = ("counts",)
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    counts: _containers.RepeatedCompositeFieldContainer[ExpressionCount]
    def __init__(self, counts: _Optional[_Iterable[_Union[ExpressionCount, _Mapping]]] = ...) -> None: ...

class UnknownFaceRateRequest(_message.Message):
    __slots__ = ("filter",)
    FILTER_FIELD_NUMBER: _ClassVar[int]
    filter: EventFilter
    def __init__(self, filter: _Optional[_Union[EventFilter, _Mapping]] = ...) -> None: ...

class UnknownFaceRate(_message.Message):
    __slots__ = ("device_id", "face_events", "unknown_events", "rate")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    FACE_EVENTS_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_EVENTS_FIELD_NUMBER: _ClassVar[int]
    RATE_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    face_events: int
    unknown_events: int
    rate: float
    def __init__(self, device_id: _Optional[str] = ..., face_events: _Optional[int] = ..., unknown_events: _Optional[int] = ..., rate: _Optional[float] = ...) -> None: ...

class UnknownFaceRateResponse(_message.Message):
    __slots__ = ("total", "per_device")
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    PER_DEVICE_FIELD_NUMBER: _ClassVar[int]
    total: UnknownFaceRate
    per_device: _containers.RepeatedCompositeFieldContainer[UnknownFaceRate]
    def __init__(self, total: _Optional[_Union[UnknownFaceRate, _Mapping]] = ..., per_device: _Optional[_Iterable[_Union[UnknownFaceRate, _Mapping]]] = ...) -> None: ...

class AccessSummaryRequest(_message.Message):
    __slots__ = ("filter",)
    FILTER_FIELD_NUMBER: _ClassVar[int]
    filter: EventFilter
    def __init__(self, filter: _Optional[_Union[EventFilter, _Mapping]] = ...) -> None: ...

class DoorAccess(_message.Message):
    __slots__ = ("device_id", "door", "granted", "denied")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    DOOR_FIELD_NUMBER: _ClassVar[int]
    GRANTED_FIELD_NUMBER: _ClassVar[int]
    DENIED_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    door: str
    granted: int
    denied: int
    def __init__(self, device_id: _Optional[str] = ..., door: _Optional[str] = ..., granted: _Optional[int] = ..., denied: _Optional[int] = ...) -> None: ...

class AccessSummaryResponse(_message.Message):
    __slots__ = ("doors",)
    DOORS_FIELD_NUMBER: _ClassVar[int]
    doors: _containers.RepeatedCompositeFieldContainer[DoorAccess]
    def __init__(self, doors: _Optional[_Iterable[_Union[DoorAccess, _Mapping]]] = ...) -> None: ...

class AttributeDistributionRequest(_message.Message):
    __slots__ = ("filter", "per_device")
    FILTER_FIELD_NUMBER: _ClassVar[int]
    PER_DEVICE_FIELD_NUMBER: _ClassVar[int]
    filter: EventFilter
    per_device: bool
    def __init__(self, filter: _Optional[_Union[EventFilter, _Mapping]] = ..., per_device: _Optional[bool] = ...) -> None: ...

class LabelCount(_message.Message):
    __slots__ = ("label", "count")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    label: str
    count: int
    def __init__(self, label: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class AttributeCount(_message.Message):
    __slots__ = ("gender", "age_band", "count")
    GENDER_FIELD_NUMBER: _ClassVar[int]
    AGE_BAND_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    gender: str
    age_band: str
    count: int
    def __init__(self, gender: _Optional[str] = ..., age_band: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class AttributeCounts(_message.Message):
    __slots__ = ("device_id", "face_events", "estimated", "genders", "age_bands", "gender_age_bands")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    FACE_EVENTS_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_FIELD_NUMBER: _ClassVar[int]
    GENDERS_FIELD_NUMBER: _ClassVar[int]
    AGE_BANDS_FIELD_NUMBER: _ClassVar[int]
    GENDER_AGE_BANDS_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    face_events: int
    estimated: int
    genders: _containers.RepeatedCompositeFieldContainer[LabelCount]
    age_bands: _containers.RepeatedCompositeFieldContainer[LabelCount]
    gender_age_bands: _containers.RepeatedCompositeFieldContainer[AttributeCount]
    def __init__(self, device_id: _Optional[str] = ..., face_events: _Optional[int] = ..., estimated: _Optional[int] = ..., genders: _Optional[_Iterable[_Union[LabelCount, _Mapping]]] = ..., age_bands: _Optional[_Iterable[_Union[LabelCount, _Mapping]]] = ..., gender_age_bands: _Optional[_Iterable[_Union[AttributeCount, _Mapping]]] = ...) -> None: ...

class AttributeDistributionResponse(_message.Message):
    __slots__ = ("total", "per_device")
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    PER_DEVICE_FIELD_NUMBER: _ClassVar[int]
    total: AttributeCounts
    per_device: _containers.RepeatedCompositeFieldContainer[AttributeCounts]
    def __init__(self, total: _Optional[_Union[AttributeCounts, _Mapping]] = ..., per_device: _Optional[_Iterable[_Union[AttributeCounts, _Mapping]]] = ...) -> None: ...

class FleetStatusRequest(_message.Message):
    __slots__ = ("device_ids",)
    DEVICE_IDS_FIELD_NUMBER: _ClassVar[int]
    device_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, device_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class AgentStatus(_message.Message):
    __slots__ = ("device_id", "online", "watching", "last_seen", "registered_at", "agent_version", "hostname", "model_versions", "capabilities", "gallery_revision", "revision_lag", "health", "model_statuses", "groups", "device_status", "certificate_expires", "model_precisions")
    class ModelVersionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class HealthEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class ModelPrecisionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    ONLINE_FIELD_NUMBER: _ClassVar[int]
    WATCHING_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_AT_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    GALLERY_REVISION_FIELD_NUMBER: _ClassVar[int]
    REVISION_LAG_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    MODEL_STATUSES_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_STATUS_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_EXPIRES_FIELD_NUMBER: _ClassVar[int]
    MODEL_PRECISIONS_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    online: bool
    watching: bool
    last_seen: _timestamp_pb2.Timestamp
    registered_at: _timestamp_pb2.Timestamp
    agent_version: str
    hostname: str
    model_versions: _containers.ScalarMap[str, str]
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    gallery_revision: int
    revision_lag: int
    health: _containers.ScalarMap[str, float]
    model_statuses: _containers.RepeatedCompositeFieldContainer[_models_pb2.ModelStatus]
    groups: _containers.RepeatedScalarFieldContainer[str]
    device_status: _devices_pb2.DeviceStatus
    certificate_expires: _timestamp_pb2.Timestamp
    model_precisions: _containers.ScalarMap[str, str]
    def __init__(self, device_id: _Optional[str] = ..., online: _Optional[bool] = ..., watching: _Optional[bool] = ..., last_seen: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., registered_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., agent_version: _Optional[str] = ..., hostname: _Optional[str] = ..., model_versions: _Optional[_Mapping[str, str]] = ..., capabilities: _Optional[_Iterable[str]] = ..., gallery_revision: _Optional[int] = ..., revision_lag: _Optional[int] = ..., health: _Optional[_Mapping[str, float]] = ..., model_statuses: _Optional[_Iterable[_Union[_models_pb2.ModelStatus, _Mapping]]] = ..., groups: _Optional[_Iterable[str]] = ..., device_status: _Optional[_Union[_devices_pb2.DeviceStatus, str]] = ..., certificate_expires: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., model_precisions: _Optional[_Mapping[str, str]] = ...) -> None: ...

class FleetStatusResponse(_message.Message):
    __slots__ = ("agents", "gallery_revision", "server_time")
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    GALLERY_REVISION_FIELD_NUMBER: _ClassVar[int]
    SERVER_TIME_FIELD_NUMBER: _ClassVar[int]
    agents: _containers.RepeatedCompositeFieldContainer[AgentStatus]
    gallery_revision: int
    server_time: _timestamp_pb2.Timestamp
    def __init__(self, agents: _Optional[_Iterable[_Union[AgentStatus, _Mapping]]] = ..., gallery_revision: _Optional[int] = ..., server_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
