from google.protobuf import timestamp_pb2 as _timestamp_pb2
from lookalike.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Collection(_message.Message):
    __slots__ = ("name", "display_name", "feature_extractors", "index", "create_time", "image_count", "metadata_fields")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    FEATURE_EXTRACTORS_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    IMAGE_COUNT_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    display_name: str
    feature_extractors: _containers.RepeatedCompositeFieldContainer[_types_pb2.ExtractorInfo]
    index: _types_pb2.IndexSpec
    create_time: _timestamp_pb2.Timestamp
    image_count: int
    metadata_fields: _containers.RepeatedCompositeFieldContainer[_types_pb2.MetadataField]
    def __init__(self, name: _Optional[str] = ..., display_name: _Optional[str] = ..., feature_extractors: _Optional[_Iterable[_Union[_types_pb2.ExtractorInfo, _Mapping]]] = ..., index: _Optional[_Union[_types_pb2.IndexSpec, _Mapping]] = ..., create_time: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., image_count: _Optional[int] = ..., metadata_fields: _Optional[_Iterable[_Union[_types_pb2.MetadataField, _Mapping]]] = ...) -> None: ...

class CreateCollectionRequest(_message.Message):
    __slots__ = ("parent", "collection_id", "display_name", "feature_extractors", "index", "metadata_fields")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    FEATURE_EXTRACTORS_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELDS_FIELD_NUMBER: _ClassVar[int]
    parent: str
    collection_id: str
    display_name: str
    feature_extractors: _containers.RepeatedScalarFieldContainer[str]
    index: _types_pb2.IndexSpec
    metadata_fields: _containers.RepeatedCompositeFieldContainer[_types_pb2.MetadataField]
    def __init__(self, parent: _Optional[str] = ..., collection_id: _Optional[str] = ..., display_name: _Optional[str] = ..., feature_extractors: _Optional[_Iterable[str]] = ..., index: _Optional[_Union[_types_pb2.IndexSpec, _Mapping]] = ..., metadata_fields: _Optional[_Iterable[_Union[_types_pb2.MetadataField, _Mapping]]] = ...) -> None: ...

class CreateCollectionResponse(_message.Message):
    __slots__ = ("collection",)
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    collection: Collection
    def __init__(self, collection: _Optional[_Union[Collection, _Mapping]] = ...) -> None: ...

class GetCollectionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetCollectionResponse(_message.Message):
    __slots__ = ("collection",)
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    collection: Collection
    def __init__(self, collection: _Optional[_Union[Collection, _Mapping]] = ...) -> None: ...

class ListCollectionsRequest(_message.Message):
    __slots__ = ("parent",)
    PARENT_FIELD_NUMBER: _ClassVar[int]
    parent: str
    def __init__(self, parent: _Optional[str] = ...) -> None: ...

class ListCollectionsResponse(_message.Message):
    __slots__ = ("collections",)
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    collections: _containers.RepeatedCompositeFieldContainer[Collection]
    def __init__(self, collections: _Optional[_Iterable[_Union[Collection, _Mapping]]] = ...) -> None: ...

class DeleteCollectionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteCollectionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListFeatureExtractorsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListFeatureExtractorsResponse(_message.Message):
    __slots__ = ("feature_extractors",)
    FEATURE_EXTRACTORS_FIELD_NUMBER: _ClassVar[int]
    feature_extractors: _containers.RepeatedCompositeFieldContainer[_types_pb2.ExtractorInfo]
    def __init__(self, feature_extractors: _Optional[_Iterable[_Union[_types_pb2.ExtractorInfo, _Mapping]]] = ...) -> None: ...

class GetDuplicateReportRequest(_message.Message):
    __slots__ = ("name", "max_hamming_distance")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MAX_HAMMING_DISTANCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    max_hamming_distance: int
    def __init__(self, name: _Optional[str] = ..., max_hamming_distance: _Optional[int] = ...) -> None: ...

class GetDuplicateReportResponse(_message.Message):
    __slots__ = ("groups", "image_count")
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_COUNT_FIELD_NUMBER: _ClassVar[int]
    groups: _containers.RepeatedCompositeFieldContainer[DuplicateGroup]
    image_count: int
    def __init__(self, groups: _Optional[_Iterable[_Union[DuplicateGroup, _Mapping]]] = ..., image_count: _Optional[int] = ...) -> None: ...

class DuplicateGroup(_message.Message):
    __slots__ = ("objects", "filenames", "max_distance")
    OBJECTS_FIELD_NUMBER: _ClassVar[int]
    FILENAMES_FIELD_NUMBER: _ClassVar[int]
    MAX_DISTANCE_FIELD_NUMBER: _ClassVar[int]
    objects: _containers.RepeatedScalarFieldContainer[str]
    filenames: _containers.RepeatedScalarFieldContainer[str]
    max_distance: int
    def __init__(self, objects: _Optional[_Iterable[str]] = ..., filenames: _Optional[_Iterable[str]] = ..., max_distance: _Optional[int] = ...) -> None: ...
