import datetime

from facefleet.v1 import devices_pb2 as _devices_pb2
from facefleet.v1 import gallery_pb2 as _gallery_pb2
from facefleet.v1 import models_pb2 as _models_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class OnExisting(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ON_EXISTING_FAIL: _ClassVar[OnExisting]
    ON_EXISTING_REPLACE: _ClassVar[OnExisting]
    ON_EXISTING_APPEND: _ClassVar[OnExisting]

class ModelPrecision(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_PRECISION_UNSPECIFIED: _ClassVar[ModelPrecision]
    MODEL_PRECISION_FP16: _ClassVar[ModelPrecision]
    MODEL_PRECISION_FP32: _ClassVar[ModelPrecision]

class RolloutState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROLLOUT_STATE_UNSPECIFIED: _ClassVar[RolloutState]
    ROLLOUT_STATE_PREPARING: _ClassVar[RolloutState]
    ROLLOUT_STATE_ACTIVE: _ClassVar[RolloutState]
    ROLLOUT_STATE_PAUSED: _ClassVar[RolloutState]
    ROLLOUT_STATE_ROLLED_BACK: _ClassVar[RolloutState]

class FailureAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FAILURE_ACTION_UNSPECIFIED: _ClassVar[FailureAction]
    FAILURE_ACTION_PAUSE: _ClassVar[FailureAction]
    FAILURE_ACTION_ROLLBACK: _ClassVar[FailureAction]

class RolloutDeviceState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROLLOUT_DEVICE_STATE_UNSPECIFIED: _ClassVar[RolloutDeviceState]
    ROLLOUT_DEVICE_STATE_ASSIGNED: _ClassVar[RolloutDeviceState]
    ROLLOUT_DEVICE_STATE_DOWNLOADING: _ClassVar[RolloutDeviceState]
    ROLLOUT_DEVICE_STATE_VERIFYING: _ClassVar[RolloutDeviceState]
    ROLLOUT_DEVICE_STATE_ACTIVE: _ClassVar[RolloutDeviceState]
    ROLLOUT_DEVICE_STATE_FAILED: _ClassVar[RolloutDeviceState]
    ROLLOUT_DEVICE_STATE_RETRYING: _ClassVar[RolloutDeviceState]

class RolloutAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROLLOUT_ACTION_UNSPECIFIED: _ClassVar[RolloutAction]
    ROLLOUT_ACTION_PAUSE: _ClassVar[RolloutAction]
    ROLLOUT_ACTION_RESUME: _ClassVar[RolloutAction]
    ROLLOUT_ACTION_ROLLBACK: _ClassVar[RolloutAction]

class DeviceAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DEVICE_ACTION_UNSPECIFIED: _ClassVar[DeviceAction]
    DEVICE_ACTION_DISABLE: _ClassVar[DeviceAction]
    DEVICE_ACTION_ENABLE: _ClassVar[DeviceAction]
    DEVICE_ACTION_REVOKE: _ClassVar[DeviceAction]
ON_EXISTING_FAIL: OnExisting
ON_EXISTING_REPLACE: OnExisting
ON_EXISTING_APPEND: OnExisting
MODEL_PRECISION_UNSPECIFIED: ModelPrecision
MODEL_PRECISION_FP16: ModelPrecision
MODEL_PRECISION_FP32: ModelPrecision
ROLLOUT_STATE_UNSPECIFIED: RolloutState
ROLLOUT_STATE_PREPARING: RolloutState
ROLLOUT_STATE_ACTIVE: RolloutState
ROLLOUT_STATE_PAUSED: RolloutState
ROLLOUT_STATE_ROLLED_BACK: RolloutState
FAILURE_ACTION_UNSPECIFIED: FailureAction
FAILURE_ACTION_PAUSE: FailureAction
FAILURE_ACTION_ROLLBACK: FailureAction
ROLLOUT_DEVICE_STATE_UNSPECIFIED: RolloutDeviceState
ROLLOUT_DEVICE_STATE_ASSIGNED: RolloutDeviceState
ROLLOUT_DEVICE_STATE_DOWNLOADING: RolloutDeviceState
ROLLOUT_DEVICE_STATE_VERIFYING: RolloutDeviceState
ROLLOUT_DEVICE_STATE_ACTIVE: RolloutDeviceState
ROLLOUT_DEVICE_STATE_FAILED: RolloutDeviceState
ROLLOUT_DEVICE_STATE_RETRYING: RolloutDeviceState
ROLLOUT_ACTION_UNSPECIFIED: RolloutAction
ROLLOUT_ACTION_PAUSE: RolloutAction
ROLLOUT_ACTION_RESUME: RolloutAction
ROLLOUT_ACTION_ROLLBACK: RolloutAction
DEVICE_ACTION_UNSPECIFIED: DeviceAction
DEVICE_ACTION_DISABLE: DeviceAction
DEVICE_ACTION_ENABLE: DeviceAction
DEVICE_ACTION_REVOKE: DeviceAction

class EnrollPersonRequest(_message.Message):
    __slots__ = ("person_id", "display_name", "groups", "metadata_json", "images", "embeddings", "on_existing")
    PERSON_ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    METADATA_JSON_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    ON_EXISTING_FIELD_NUMBER: _ClassVar[int]
    person_id: str
    display_name: str
    groups: _containers.RepeatedScalarFieldContainer[str]
    metadata_json: str
    images: _containers.RepeatedScalarFieldContainer[bytes]
    embeddings: _containers.RepeatedCompositeFieldContainer[_gallery_pb2.Embedding]
    on_existing: OnExisting
    def __init__(self, person_id: _Optional[str] = ..., display_name: _Optional[str] = ..., groups: _Optional[_Iterable[str]] = ..., metadata_json: _Optional[str] = ..., images: _Optional[_Iterable[bytes]] = ..., embeddings: _Optional[_Iterable[_Union[_gallery_pb2.Embedding, _Mapping]]] = ..., on_existing: _Optional[_Union[OnExisting, str]] = ...) -> None: ...

class EnrolledFace(_message.Message):
    __slots__ = ("image_index", "box_xyxy", "quality", "model_ids")
    IMAGE_INDEX_FIELD_NUMBER: _ClassVar[int]
    BOX_XYXY_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    MODEL_IDS_FIELD_NUMBER: _ClassVar[int]
    image_index: int
    box_xyxy: _containers.RepeatedScalarFieldContainer[float]
    quality: float
    model_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, image_index: _Optional[int] = ..., box_xyxy: _Optional[_Iterable[float]] = ..., quality: _Optional[float] = ..., model_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class EnrollPersonResponse(_message.Message):
    __slots__ = ("person", "faces", "revision")
    PERSON_FIELD_NUMBER: _ClassVar[int]
    FACES_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    person: _gallery_pb2.Person
    faces: _containers.RepeatedCompositeFieldContainer[EnrolledFace]
    revision: int
    def __init__(self, person: _Optional[_Union[_gallery_pb2.Person, _Mapping]] = ..., faces: _Optional[_Iterable[_Union[EnrolledFace, _Mapping]]] = ..., revision: _Optional[int] = ...) -> None: ...

class GroupList(_message.Message):
    __slots__ = ("groups",)
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    groups: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, groups: _Optional[_Iterable[str]] = ...) -> None: ...

class UpdatePersonRequest(_message.Message):
    __slots__ = ("person_id", "display_name", "groups", "metadata_json")
    PERSON_ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    METADATA_JSON_FIELD_NUMBER: _ClassVar[int]
    person_id: str
    display_name: str
    groups: GroupList
    metadata_json: str
    def __init__(self, person_id: _Optional[str] = ..., display_name: _Optional[str] = ..., groups: _Optional[_Union[GroupList, _Mapping]] = ..., metadata_json: _Optional[str] = ...) -> None: ...

class UpdatePersonResponse(_message.Message):
    __slots__ = ("person", "revision")
    PERSON_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    person: _gallery_pb2.Person
    revision: int
    def __init__(self, person: _Optional[_Union[_gallery_pb2.Person, _Mapping]] = ..., revision: _Optional[int] = ...) -> None: ...

class DeletePersonRequest(_message.Message):
    __slots__ = ("person_id",)
    PERSON_ID_FIELD_NUMBER: _ClassVar[int]
    person_id: str
    def __init__(self, person_id: _Optional[str] = ...) -> None: ...

class DeletePersonResponse(_message.Message):
    __slots__ = ("revision",)
    REVISION_FIELD_NUMBER: _ClassVar[int]
    revision: int
    def __init__(self, revision: _Optional[int] = ...) -> None: ...

class GetPersonRequest(_message.Message):
    __slots__ = ("person_id", "include_embeddings")
    PERSON_ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    person_id: str
    include_embeddings: bool
    def __init__(self, person_id: _Optional[str] = ..., include_embeddings: _Optional[bool] = ...) -> None: ...

class GetPersonResponse(_message.Message):
    __slots__ = ("person", "stored_crops")
    PERSON_FIELD_NUMBER: _ClassVar[int]
    STORED_CROPS_FIELD_NUMBER: _ClassVar[int]
    person: _gallery_pb2.Person
    stored_crops: int
    def __init__(self, person: _Optional[_Union[_gallery_pb2.Person, _Mapping]] = ..., stored_crops: _Optional[int] = ...) -> None: ...

class ListPeopleRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "group")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    group: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., group: _Optional[str] = ...) -> None: ...

class ListPeopleResponse(_message.Message):
    __slots__ = ("people", "next_page_token", "gallery_revision")
    PEOPLE_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    GALLERY_REVISION_FIELD_NUMBER: _ClassVar[int]
    people: _containers.RepeatedCompositeFieldContainer[_gallery_pb2.Person]
    next_page_token: str
    gallery_revision: int
    def __init__(self, people: _Optional[_Iterable[_Union[_gallery_pb2.Person, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., gallery_revision: _Optional[int] = ...) -> None: ...

class PublishModelHeader(_message.Message):
    __slots__ = ("task", "name", "version", "precision", "licence", "files")
    TASK_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    LICENCE_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    task: str
    name: str
    version: str
    precision: ModelPrecision
    licence: str
    files: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, task: _Optional[str] = ..., name: _Optional[str] = ..., version: _Optional[str] = ..., precision: _Optional[_Union[ModelPrecision, str]] = ..., licence: _Optional[str] = ..., files: _Optional[_Iterable[str]] = ...) -> None: ...

class ModelUploadChunk(_message.Message):
    __slots__ = ("file", "data")
    FILE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    file: str
    data: bytes
    def __init__(self, file: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...

class PublishModelRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: PublishModelHeader
    chunk: ModelUploadChunk
    def __init__(self, header: _Optional[_Union[PublishModelHeader, _Mapping]] = ..., chunk: _Optional[_Union[ModelUploadChunk, _Mapping]] = ...) -> None: ...

class PublishedModel(_message.Message):
    __slots__ = ("model_id", "task", "files", "precision", "licence", "published_at", "retired_at", "runs_in_place_of")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    LICENCE_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_AT_FIELD_NUMBER: _ClassVar[int]
    RETIRED_AT_FIELD_NUMBER: _ClassVar[int]
    RUNS_IN_PLACE_OF_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    task: str
    files: _containers.RepeatedCompositeFieldContainer[_models_pb2.ModelFile]
    precision: ModelPrecision
    licence: str
    published_at: _timestamp_pb2.Timestamp
    retired_at: _timestamp_pb2.Timestamp
    runs_in_place_of: str
    def __init__(self, model_id: _Optional[str] = ..., task: _Optional[str] = ..., files: _Optional[_Iterable[_Union[_models_pb2.ModelFile, _Mapping]]] = ..., precision: _Optional[_Union[ModelPrecision, str]] = ..., licence: _Optional[str] = ..., published_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., retired_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., runs_in_place_of: _Optional[str] = ...) -> None: ...

class PublishModelResponse(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: PublishedModel
    def __init__(self, model: _Optional[_Union[PublishedModel, _Mapping]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: str
    def __init__(self, task: _Optional[str] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[PublishedModel]
    def __init__(self, models: _Optional[_Iterable[_Union[PublishedModel, _Mapping]]] = ...) -> None: ...

class RetireModelRequest(_message.Message):
    __slots__ = ("model_id",)
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    def __init__(self, model_id: _Optional[str] = ...) -> None: ...

class RetireModelResponse(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: PublishedModel
    def __init__(self, model: _Optional[_Union[PublishedModel, _Mapping]] = ...) -> None: ...

class RolloutTarget(_message.Message):
    __slots__ = ("all", "group", "percent")
    ALL_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    PERCENT_FIELD_NUMBER: _ClassVar[int]
    all: bool
    group: str
    percent: int
    def __init__(self, all: _Optional[bool] = ..., group: _Optional[str] = ..., percent: _Optional[int] = ...) -> None: ...

class MaxFailures(_message.Message):
    __slots__ = ("count", "percent")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    PERCENT_FIELD_NUMBER: _ClassVar[int]
    count: int
    percent: int
    def __init__(self, count: _Optional[int] = ..., percent: _Optional[int] = ...) -> None: ...

class Rollout(_message.Message):
    __slots__ = ("rollout_id", "task", "model_id", "target", "state", "created_at", "updated_at", "max_failures", "on_failures", "reason")
    ROLLOUT_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    MAX_FAILURES_FIELD_NUMBER: _ClassVar[int]
    ON_FAILURES_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    rollout_id: int
    task: str
    model_id: str
    target: RolloutTarget
    state: RolloutState
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    max_failures: MaxFailures
    on_failures: FailureAction
    reason: str
    def __init__(self, rollout_id: _Optional[int] = ..., task: _Optional[str] = ..., model_id: _Optional[str] = ..., target: _Optional[_Union[RolloutTarget, _Mapping]] = ..., state: _Optional[_Union[RolloutState, str]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., max_failures: _Optional[_Union[MaxFailures, _Mapping]] = ..., on_failures: _Optional[_Union[FailureAction, str]] = ..., reason: _Optional[str] = ...) -> None: ...

class RolloutDevice(_message.Message):
    __slots__ = ("device_id", "state", "previous_model_id", "reason", "updated_at")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    state: RolloutDeviceState
    previous_model_id: str
    reason: str
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, device_id: _Optional[str] = ..., state: _Optional[_Union[RolloutDeviceState, str]] = ..., previous_model_id: _Optional[str] = ..., reason: _Optional[str] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class StartRolloutRequest(_message.Message):
    __slots__ = ("model_id", "target", "max_failures", "on_failures")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    MAX_FAILURES_FIELD_NUMBER: _ClassVar[int]
    ON_FAILURES_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    target: RolloutTarget
    max_failures: MaxFailures
    on_failures: FailureAction
    def __init__(self, model_id: _Optional[str] = ..., target: _Optional[_Union[RolloutTarget, _Mapping]] = ..., max_failures: _Optional[_Union[MaxFailures, _Mapping]] = ..., on_failures: _Optional[_Union[FailureAction, str]] = ...) -> None: ...

class StartRolloutResponse(_message.Message):
    __slots__ = ("rollout", "reembedded_count", "reembedded", "without_crops_count", "without_crops", "runs_in_place_of")
    ROLLOUT_FIELD_NUMBER: _ClassVar[int]
    REEMBEDDED_COUNT_FIELD_NUMBER: _ClassVar[int]
    REEMBEDDED_FIELD_NUMBER: _ClassVar[int]
    WITHOUT_CROPS_COUNT_FIELD_NUMBER: _ClassVar[int]
    WITHOUT_CROPS_FIELD_NUMBER: _ClassVar[int]
    RUNS_IN_PLACE_OF_FIELD_NUMBER: _ClassVar[int]
    rollout: Rollout
    reembedded_count: int
    reembedded: _containers.RepeatedScalarFieldContainer[str]
    without_crops_count: int
    without_crops: _containers.RepeatedScalarFieldContainer[str]
    runs_in_place_of: str
    def __init__(self, rollout: _Optional[_Union[Rollout, _Mapping]] = ..., reembedded_count: _Optional[int] = ..., reembedded: _Optional[_Iterable[str]] = ..., without_crops_count: _Optional[int] = ..., without_crops: _Optional[_Iterable[str]] = ..., runs_in_place_of: _Optional[str] = ...) -> None: ...

class ChangeRolloutRequest(_message.Message):
    __slots__ = ("rollout_id", "action", "percent")
    ROLLOUT_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    PERCENT_FIELD_NUMBER: _ClassVar[int]
    rollout_id: int
    action: RolloutAction
    percent: int
    def __init__(self, rollout_id: _Optional[int] = ..., action: _Optional[_Union[RolloutAction, str]] = ..., percent: _Optional[int] = ...) -> None: ...

class ChangeRolloutResponse(_message.Message):
    __slots__ = ("rollout",)
    ROLLOUT_FIELD_NUMBER: _ClassVar[int]
    rollout: Rollout
    def __init__(self, rollout: _Optional[_Union[Rollout, _Mapping]] = ...) -> None: ...

class ListRolloutsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListRolloutsResponse(_message.Message):
    __slots__ = ("rollouts",)
    ROLLOUTS_FIELD_NUMBER: _ClassVar[int]
    rollouts: _containers.RepeatedCompositeFieldContainer[Rollout]
    def __init__(self, rollouts: _Optional[_Iterable[_Union[Rollout, _Mapping]]] = ...) -> None: ...

class GetRolloutRequest(_message.Message):
    __slots__ = ("rollout_id",)
    ROLLOUT_ID_FIELD_NUMBER: _ClassVar[int]
    rollout_id: int
    def __init__(self, rollout_id: _Optional[int] = ...) -> None: ...

class GetRolloutResponse(_message.Message):
    __slots__ = ("rollout", "devices")
    ROLLOUT_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    rollout: Rollout
    devices: _containers.RepeatedCompositeFieldContainer[RolloutDevice]
    def __init__(self, rollout: _Optional[_Union[Rollout, _Mapping]] = ..., devices: _Optional[_Iterable[_Union[RolloutDevice, _Mapping]]] = ...) -> None: ...

class AuditEntry(_message.Message):
    __slots__ = ("time", "who", "action", "target", "outcome", "detail")
    TIME_FIELD_NUMBER: _ClassVar[int]
    WHO_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    time: _timestamp_pb2.Timestamp
    who: str
    action: str
    target: str
    outcome: str
    detail: str
    def __init__(self, time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., who: _Optional[str] = ..., action: _Optional[str] = ..., target: _Optional[str] = ..., outcome: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class ListAuditRequest(_message.Message):
    __slots__ = ("since", "until", "who", "action_prefix", "page_size", "page_token")
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    WHO_FIELD_NUMBER: _ClassVar[int]
    ACTION_PREFIX_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    since: _timestamp_pb2.Timestamp
    until: _timestamp_pb2.Timestamp
    who: str
    action_prefix: str
    page_size: int
    page_token: str
    def __init__(self, since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., who: _Optional[str] = ..., action_prefix: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListAuditResponse(_message.Message):
    __slots__ = ("entries", "next_page_token")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[AuditEntry]
    next_page_token: str
    def __init__(self, entries: _Optional[_Iterable[_Union[AuditEntry, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListDevicesRequest(_message.Message):
    __slots__ = ("device_ids",)
    DEVICE_IDS_FIELD_NUMBER: _ClassVar[int]
    device_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, device_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ListDevicesResponse(_message.Message):
    __slots__ = ("devices",)
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    devices: _containers.RepeatedCompositeFieldContainer[_devices_pb2.Device]
    def __init__(self, devices: _Optional[_Iterable[_Union[_devices_pb2.Device, _Mapping]]] = ...) -> None: ...

class ChangeDeviceRequest(_message.Message):
    __slots__ = ("device_id", "action", "reason", "wipe")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    WIPE_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    action: DeviceAction
    reason: str
    wipe: bool
    def __init__(self, device_id: _Optional[str] = ..., action: _Optional[_Union[DeviceAction, str]] = ..., reason: _Optional[str] = ..., wipe: _Optional[bool] = ...) -> None: ...

class ChangeDeviceResponse(_message.Message):
    __slots__ = ("device",)
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    device: _devices_pb2.Device
    def __init__(self, device: _Optional[_Union[_devices_pb2.Device, _Mapping]] = ...) -> None: ...
