import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Embedding(_message.Message):
    __slots__ = ("model_id", "dim", "vector", "quality", "source")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    dim: int
    vector: bytes
    quality: float
    source: str
    def __init__(self, model_id: _Optional[str] = ..., dim: _Optional[int] = ..., vector: _Optional[bytes] = ..., quality: _Optional[float] = ..., source: _Optional[str] = ...) -> None: ...

class Person(_message.Message):
    __slots__ = ("person_id", "display_name", "groups", "metadata_json", "embeddings", "created_at", "updated_at", "revision")
    PERSON_ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    METADATA_JSON_FIELD_NUMBER: _ClassVar[int]
    EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    person_id: str
    display_name: str
    groups: _containers.RepeatedScalarFieldContainer[str]
    metadata_json: str
    embeddings: _containers.RepeatedCompositeFieldContainer[Embedding]
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    revision: int
    def __init__(self, person_id: _Optional[str] = ..., display_name: _Optional[str] = ..., groups: _Optional[_Iterable[str]] = ..., metadata_json: _Optional[str] = ..., embeddings: _Optional[_Iterable[_Union[Embedding, _Mapping]]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., revision: _Optional[int] = ...) -> None: ...

class GalleryDelta(_message.Message):
    __slots__ = ("from_revision", "to_revision", "snapshot", "upserts", "deletes", "more_parts", "gallery_id")
    FROM_REVISION_FIELD_NUMBER: _ClassVar[int]
    TO_REVISION_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    UPSERTS_FIELD_NUMBER: _ClassVar[int]
    DELETES_FIELD_NUMBER: _ClassVar[int]
    MORE_PARTS_FIELD_NUMBER: _ClassVar[int]
    GALLERY_ID_FIELD_NUMBER: _ClassVar[int]
    from_revision: int
    to_revision: int
    snapshot: bool
    upserts: _containers.RepeatedCompositeFieldContainer[Person]
    deletes: _containers.RepeatedScalarFieldContainer[str]
    more_parts: bool
    gallery_id: str
    def __init__(self, from_revision: _Optional[int] = ..., to_revision: _Optional[int] = ..., snapshot: _Optional[bool] = ..., upserts: _Optional[_Iterable[_Union[Person, _Mapping]]] = ..., deletes: _Optional[_Iterable[str]] = ..., more_parts: _Optional[bool] = ..., gallery_id: _Optional[str] = ...) -> None: ...
