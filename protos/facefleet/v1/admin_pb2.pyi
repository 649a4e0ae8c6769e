from facefleet.v1 import gallery_pb2 as _gallery_pb2
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
ON_EXISTING_FAIL: OnExisting
ON_EXISTING_REPLACE: OnExisting
ON_EXISTING_APPEND: OnExisting

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
