from google.protobuf import struct_pb2 as _struct_pb2
from lookalike.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EnsureIndexRequest(_message.Message):
    __slots__ = ("collection", "extractor", "index", "metadata_fields")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    EXTRACTOR_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELDS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    extractor: _types_pb2.ExtractorInfo
    index: _types_pb2.IndexSpec
    metadata_fields: _containers.RepeatedCompositeFieldContainer[_types_pb2.MetadataField]
    def __init__(self, collection: _Optional[str] = ..., extractor: _Optional[_Union[_types_pb2.ExtractorInfo, _Mapping]] = ..., index: _Optional[_Union[_types_pb2.IndexSpec, _Mapping]] = ..., metadata_fields: _Optional[_Iterable[_Union[_types_pb2.MetadataField, _Mapping]]] = ...) -> None: ...

class EnsureIndexResponse(_message.Message):
    __slots__ = ("created",)
    CREATED_FIELD_NUMBER: _ClassVar[int]
    created: bool
    def __init__(self, created: bool = ...) -> None: ...

class DropIndexRequest(_message.Message):
    __slots__ = ("collection", "extractors")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    EXTRACTORS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    extractors: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, collection: _Optional[str] = ..., extractors: _Optional[_Iterable[str]] = ...) -> None: ...

class DropIndexResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class VectorRecord(_message.Message):
    __slots__ = ("id", "vector", "object", "filename", "metadata")
    ID_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    OBJECT_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    id: str
    vector: _types_pb2.Vector
    object: str
    filename: str
    metadata: _struct_pb2.Struct
    def __init__(self, id: _Optional[str] = ..., vector: _Optional[_Union[_types_pb2.Vector, _Mapping]] = ..., object: _Optional[str] = ..., filename: _Optional[str] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class UpsertVectorsRequest(_message.Message):
    __slots__ = ("collection", "extractor", "records")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    EXTRACTOR_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    extractor: str
    records: _containers.RepeatedCompositeFieldContainer[VectorRecord]
    def __init__(self, collection: _Optional[str] = ..., extractor: _Optional[str] = ..., records: _Optional[_Iterable[_Union[VectorRecord, _Mapping]]] = ...) -> None: ...

class UpsertVectorsResponse(_message.Message):
    __slots__ = ("upserted_count",)
    UPSERTED_COUNT_FIELD_NUMBER: _ClassVar[int]
    upserted_count: int
    def __init__(self, upserted_count: _Optional[int] = ...) -> None: ...

class DeleteVectorsRequest(_message.Message):
    __slots__ = ("collection", "extractors", "ids")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    EXTRACTORS_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    extractors: _containers.RepeatedScalarFieldContainer[str]
    ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, collection: _Optional[str] = ..., extractors: _Optional[_Iterable[str]] = ..., ids: _Optional[_Iterable[str]] = ...) -> None: ...

class DeleteVectorsResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetVectorsRequest(_message.Message):
    __slots__ = ("collection", "extractor", "ids")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    EXTRACTOR_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    extractor: str
    ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, collection: _Optional[str] = ..., extractor: _Optional[str] = ..., ids: _Optional[_Iterable[str]] = ...) -> None: ...

class GetVectorsResponse(_message.Message):
    __slots__ = ("records",)
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[VectorRecord]
    def __init__(self, records: _Optional[_Iterable[_Union[VectorRecord, _Mapping]]] = ...) -> None: ...

class CountVectorsRequest(_message.Message):
    __slots__ = ("collection", "extractor")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    EXTRACTOR_FIELD_NUMBER: _ClassVar[int]
    collection: str
    extractor: str
    def __init__(self, collection: _Optional[str] = ..., extractor: _Optional[str] = ...) -> None: ...

class CountVectorsResponse(_message.Message):
    __slots__ = ("count",)
    COUNT_FIELD_NUMBER: _ClassVar[int]
    count: int
    def __init__(self, count: _Optional[int] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("collection", "extractor", "vector", "limit", "filter", "search_params")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    EXTRACTOR_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    SEARCH_PARAMS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    extractor: str
    vector: _types_pb2.Vector
    limit: int
    filter: _types_pb2.Filter
    search_params: _types_pb2.IndexSpec
    def __init__(self, collection: _Optional[str] = ..., extractor: _Optional[str] = ..., vector: _Optional[_Union[_types_pb2.Vector, _Mapping]] = ..., limit: _Optional[int] = ..., filter: _Optional[_Union[_types_pb2.Filter, _Mapping]] = ..., search_params: _Optional[_Union[_types_pb2.IndexSpec, _Mapping]] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("hits",)
    HITS_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[SearchHit]
    def __init__(self, hits: _Optional[_Iterable[_Union[SearchHit, _Mapping]]] = ...) -> None: ...

class SearchHit(_message.Message):
    __slots__ = ("id", "score", "object", "filename", "metadata", "distance")
    ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    OBJECT_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_FIELD_NUMBER: _ClassVar[int]
    id: str
    score: float
    object: str
    filename: str
    metadata: _struct_pb2.Struct
    distance: float
    def __init__(self, id: _Optional[str] = ..., score: _Optional[float] = ..., object: _Optional[str] = ..., filename: _Optional[str] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., distance: _Optional[float] = ...) -> None: ...
