import datetime

from facefleet.v1 import events_pb2 as _events_pb2
from facefleet.v1 import gallery_pb2 as _gallery_pb2
from facefleet.v1 import models_pb2 as _models_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RegisterRequest(_message.Message):
    __slots__ = ("device_id", "agent_version", "model_versions", "capabilities", "gallery_revision", "gallery_id", "hostname", "model_statuses", "groups", "model_precisions")
    class ModelVersionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class ModelPrecisionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    GALLERY_REVISION_FIELD_NUMBER: _ClassVar[int]
    GALLERY_ID_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_STATUSES_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    MODEL_PRECISIONS_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    agent_version: str
    model_versions: _containers.ScalarMap[str, str]
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    gallery_revision: int
    gallery_id: str
    hostname: str
    model_statuses: _containers.RepeatedCompositeFieldContainer[_models_pb2.ModelStatus]
    groups: _containers.RepeatedScalarFieldContainer[str]
    model_precisions: _containers.ScalarMap[str, str]
    def __init__(self, device_id: _Optional[str] = ..., agent_version: _Optional[str] = ..., model_versions: _Optional[_Mapping[str, str]] = ..., capabilities: _Optional[_Iterable[str]] = ..., gallery_revision: _Optional[int] = ..., gallery_id: _Optional[str] = ..., hostname: _Optional[str] = ..., model_statuses: _Optional[_Iterable[_Union[_models_pb2.ModelStatus, _Mapping]]] = ..., groups: _Optional[_Iterable[str]] = ..., model_precisions: _Optional[_Mapping[str, str]] = ...) -> None: ...

class RegisterResponse(_message.Message):
    __slots__ = ("gallery_revision", "gallery_id", "embedding_models", "max_report_events", "heartbeat_seconds", "server_time", "cluster_threshold", "server_version")
    GALLERY_REVISION_FIELD_NUMBER: _ClassVar[int]
    GALLERY_ID_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_MODELS_FIELD_NUMBER: _ClassVar[int]
    MAX_REPORT_EVENTS_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SERVER_TIME_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    gallery_revision: int
    gallery_id: str
    embedding_models: _containers.RepeatedScalarFieldContainer[str]
    max_report_events: int
    heartbeat_seconds: int
    server_time: _timestamp_pb2.Timestamp
    cluster_threshold: float
    server_version: str
    def __init__(self, gallery_revision: _Optional[int] = ..., gallery_id: _Optional[str] = ..., embedding_models: _Optional[_Iterable[str]] = ..., max_report_events: _Optional[int] = ..., heartbeat_seconds: _Optional[int] = ..., server_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., cluster_threshold: _Optional[float] = ..., server_version: _Optional[str] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("device_id", "from_revision", "gallery_id", "embedding_models")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_REVISION_FIELD_NUMBER: _ClassVar[int]
    GALLERY_ID_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_MODELS_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    from_revision: int
    gallery_id: str
    embedding_models: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, device_id: _Optional[str] = ..., from_revision: _Optional[int] = ..., gallery_id: _Optional[str] = ..., embedding_models: _Optional[_Iterable[str]] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("gallery_revision", "server_time")
    GALLERY_REVISION_FIELD_NUMBER: _ClassVar[int]
    SERVER_TIME_FIELD_NUMBER: _ClassVar[int]
    gallery_revision: int
    server_time: _timestamp_pb2.Timestamp
    def __init__(self, gallery_revision: _Optional[int] = ..., server_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class WatchResponse(_message.Message):
    __slots__ = ("gallery", "heartbeat", "models")
    GALLERY_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    gallery: _gallery_pb2.GalleryDelta
    heartbeat: Heartbeat
    models: _models_pb2.ModelAssignment
    def __init__(self, gallery: _Optional[_Union[_gallery_pb2.GalleryDelta, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., models: _Optional[_Union[_models_pb2.ModelAssignment, _Mapping]] = ...) -> None: ...

class AckGalleryRequest(_message.Message):
    __slots__ = ("device_id", "gallery_revision")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    GALLERY_REVISION_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    gallery_revision: int
    def __init__(self, device_id: _Optional[str] = ..., gallery_revision: _Optional[int] = ...) -> None: ...

class AckGalleryResponse(_message.Message):
    __slots__ = ("gallery_revision",)
    GALLERY_REVISION_FIELD_NUMBER: _ClassVar[int]
    gallery_revision: int
    def __init__(self, gallery_revision: _Optional[int] = ...) -> None: ...

class ReportResultsRequest(_message.Message):
    __slots__ = ("device_id", "events", "health")
    class HealthEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    events: _containers.RepeatedCompositeFieldContainer[_events_pb2.Event]
    health: _containers.ScalarMap[str, float]
    def __init__(self, device_id: _Optional[str] = ..., events: _Optional[_Iterable[_Union[_events_pb2.Event, _Mapping]]] = ..., health: _Optional[_Mapping[str, float]] = ...) -> None: ...

class EventRejection(_message.Message):
    __slots__ = ("event_id", "reason")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    reason: str
    def __init__(self, event_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ReportResultsResponse(_message.Message):
    __slots__ = ("rejected", "stored", "duplicates", "deferred")
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    STORED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    DEFERRED_FIELD_NUMBER: _ClassVar[int]
    rejected: _containers.RepeatedCompositeFieldContainer[EventRejection]
    stored: int
    duplicates: int
    deferred: _containers.RepeatedCompositeFieldContainer[EventRejection]
    def __init__(self, rejected: _Optional[_Iterable[_Union[EventRejection, _Mapping]]] = ..., stored: _Optional[int] = ..., duplicates: _Optional[int] = ..., deferred: _Optional[_Iterable[_Union[EventRejection, _Mapping]]] = ...) -> None: ...

class DownloadModelRequest(_message.Message):
    __slots__ = ("device_id", "model_id", "file", "offset")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    model_id: str
    file: str
    offset: int
    def __init__(self, device_id: _Optional[str] = ..., model_id: _Optional[str] = ..., file: _Optional[str] = ..., offset: _Optional[int] = ...) -> None: ...

class ModelChunk(_message.Message):
    __slots__ = ("data", "offset", "size")
    DATA_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    offset: int
    size: int
    def __init__(self, data: _Optional[bytes] = ..., offset: _Optional[int] = ..., size: _Optional[int] = ...) -> None: ...

class ReportModelStatusRequest(_message.Message):
    __slots__ = ("device_id", "statuses", "model_versions", "model_precisions")
    class ModelVersionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class ModelPrecisionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    STATUSES_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    MODEL_PRECISIONS_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    statuses: _containers.RepeatedCompositeFieldContainer[_models_pb2.ModelStatus]
    model_versions: _containers.ScalarMap[str, str]
    model_precisions: _containers.ScalarMap[str, str]
    def __init__(self, device_id: _Optional[str] = ..., statuses: _Optional[_Iterable[_Union[_models_pb2.ModelStatus, _Mapping]]] = ..., model_versions: _Optional[_Mapping[str, str]] = ..., model_precisions: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ReportModelStatusResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
