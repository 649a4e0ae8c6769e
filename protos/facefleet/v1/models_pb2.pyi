import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ModelActivation(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_ACTIVATION_UNSPECIFIED: _ClassVar[ModelActivation]
    MODEL_ACTIVATION_DOWNLOADING: _ClassVar[ModelActivation]
    MODEL_ACTIVATION_VERIFYING: _ClassVar[ModelActivation]
    MODEL_ACTIVATION_ACTIVE: _ClassVar[ModelActivation]
    MODEL_ACTIVATION_FAILED: _ClassVar[ModelActivation]
MODEL_ACTIVATION_UNSPECIFIED: ModelActivation
MODEL_ACTIVATION_DOWNLOADING: ModelActivation
MODEL_ACTIVATION_VERIFYING: ModelActivation
MODEL_ACTIVATION_ACTIVE: ModelActivation
MODEL_ACTIVATION_FAILED: ModelActivation

class ModelFile(_message.Message):
    __slots__ = ("name", "size", "sha256")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    name: str
    size: int
    sha256: str
    def __init__(self, name: _Optional[str] = ..., size: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class ModelRelease(_message.Message):
    __slots__ = ("task", "model_id", "files", "manifest_json", "rollout_id")
    TASK_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_JSON_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_ID_FIELD_NUMBER: _ClassVar[int]
    task: str
    model_id: str
    files: _containers.RepeatedCompositeFieldContainer[ModelFile]
    manifest_json: str
    rollout_id: int
    def __init__(self, task: _Optional[str] = ..., model_id: _Optional[str] = ..., files: _Optional[_Iterable[_Union[ModelFile, _Mapping]]] = ..., manifest_json: _Optional[str] = ..., rollout_id: _Optional[int] = ...) -> None: ...

class ModelAssignment(_message.Message):
    __slots__ = ("releases",)
    RELEASES_FIELD_NUMBER: _ClassVar[int]
    releases: _containers.RepeatedCompositeFieldContainer[ModelRelease]
    def __init__(self, releases: _Optional[_Iterable[_Union[ModelRelease, _Mapping]]] = ...) -> None: ...

class ModelStatus(_message.Message):
    __slots__ = ("task", "model_id", "rollout_id", "state", "reason", "time", "retrying")
    TASK_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    RETRYING_FIELD_NUMBER: _ClassVar[int]
    task: str
    model_id: str
    rollout_id: int
    state: ModelActivation
    reason: str
    time: _timestamp_pb2.Timestamp
    retrying: bool
    def __init__(self, task: _Optional[str] = ..., model_id: _Optional[str] = ..., rollout_id: _Optional[int] = ..., state: _Optional[_Union[ModelActivation, str]] = ..., reason: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., retrying: _Optional[bool] = ...) -> None: ...
