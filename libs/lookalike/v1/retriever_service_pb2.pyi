from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from lookalike.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class QueryInput(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    QUERY_INPUT_UNSPECIFIED: _ClassVar[QueryInput]
    QUERY_INPUT_AUTO: _ClassVar[QueryInput]
    QUERY_INPUT_IMAGE: _ClassVar[QueryInput]
    QUERY_INPUT_TEXT: _ClassVar[QueryInput]
QUERY_INPUT_UNSPECIFIED: QueryInput
QUERY_INPUT_AUTO: QueryInput
QUERY_INPUT_IMAGE: QueryInput
QUERY_INPUT_TEXT: QueryInput

class Retriever(_message.Message):
    __slots__ = ("name", "display_name", "stages", "create_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    STAGES_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    display_name: str
    stages: _containers.RepeatedCompositeFieldContainer[Stage]
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., display_name: _Optional[str] = ..., stages: _Optional[_Iterable[_Union[Stage, _Mapping]]] = ..., create_time: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Stage(_message.Message):
    __slots__ = ("feature_search", "filter", "rerank", "fuse", "dedup")
    FEATURE_SEARCH_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    RERANK_FIELD_NUMBER: _ClassVar[int]
    FUSE_FIELD_NUMBER: _ClassVar[int]
    DEDUP_FIELD_NUMBER: _ClassVar[int]
    feature_search: FeatureSearchStage
    filter: FilterStage
    rerank: RerankStage
    fuse: FuseStage
    dedup: DedupStage
    def __init__(self, feature_search: _Optional[_Union[FeatureSearchStage, _Mapping]] = ..., filter: _Optional[_Union[FilterStage, _Mapping]] = ..., rerank: _Optional[_Union[RerankStage, _Mapping]] = ..., fuse: _Optional[_Union[FuseStage, _Mapping]] = ..., dedup: _Optional[_Union[DedupStage, _Mapping]] = ...) -> None: ...

class FeatureSearchStage(_message.Message):
    __slots__ = ("collection", "feature_extractor", "limit", "filter", "input", "search_params")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    FEATURE_EXTRACTOR_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    SEARCH_PARAMS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    feature_extractor: str
    limit: int
    filter: _types_pb2.Filter
    input: QueryInput
    search_params: _types_pb2.IndexSpec
    def __init__(self, collection: _Optional[str] = ..., feature_extractor: _Optional[str] = ..., limit: _Optional[int] = ..., filter: _Optional[_Union[_types_pb2.Filter, _Mapping]] = ..., input: _Optional[_Union[QueryInput, str]] = ..., search_params: _Optional[_Union[_types_pb2.IndexSpec, _Mapping]] = ...) -> None: ...

class FilterStage(_message.Message):
    __slots__ = ("filter",)
    FILTER_FIELD_NUMBER: _ClassVar[int]
    filter: _types_pb2.Filter
    def __init__(self, filter: _Optional[_Union[_types_pb2.Filter, _Mapping]] = ...) -> None: ...

class RerankStage(_message.Message):
    __slots__ = ("limit",)
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    limit: int
    def __init__(self, limit: _Optional[int] = ...) -> None: ...

class FuseStage(_message.Message):
    __slots__ = ("k", "limit", "weights")
    K_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    k: int
    limit: int
    weights: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, k: _Optional[int] = ..., limit: _Optional[int] = ..., weights: _Optional[_Iterable[float]] = ...) -> None: ...

class DedupStage(_message.Message):
    __slots__ = ("max_hamming_distance", "collapse")
    MAX_HAMMING_DISTANCE_FIELD_NUMBER: _ClassVar[int]
    COLLAPSE_FIELD_NUMBER: _ClassVar[int]
    max_hamming_distance: int
    collapse: bool
    def __init__(self, max_hamming_distance: _Optional[int] = ..., collapse: bool = ...) -> None: ...

class CreateRetrieverRequest(_message.Message):
    __slots__ = ("parent", "retriever_id", "retriever")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    RETRIEVER_ID_FIELD_NUMBER: _ClassVar[int]
    RETRIEVER_FIELD_NUMBER: _ClassVar[int]
    parent: str
    retriever_id: str
    retriever: Retriever
    def __init__(self, parent: _Optional[str] = ..., retriever_id: _Optional[str] = ..., retriever: _Optional[_Union[Retriever, _Mapping]] = ...) -> None: ...

class CreateRetrieverResponse(_message.Message):
    __slots__ = ("retriever",)
    RETRIEVER_FIELD_NUMBER: _ClassVar[int]
    retriever: Retriever
    def __init__(self, retriever: _Optional[_Union[Retriever, _Mapping]] = ...) -> None: ...

class GetRetrieverRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetRetrieverResponse(_message.Message):
    __slots__ = ("retriever",)
    RETRIEVER_FIELD_NUMBER: _ClassVar[int]
    retriever: Retriever
    def __init__(self, retriever: _Optional[_Union[Retriever, _Mapping]] = ...) -> None: ...

class ListRetrieversRequest(_message.Message):
    __slots__ = ("parent",)
    PARENT_FIELD_NUMBER: _ClassVar[int]
    parent: str
    def __init__(self, parent: _Optional[str] = ...) -> None: ...

class ListRetrieversResponse(_message.Message):
    __slots__ = ("retrievers",)
    RETRIEVERS_FIELD_NUMBER: _ClassVar[int]
    retrievers: _containers.RepeatedCompositeFieldContainer[Retriever]
    def __init__(self, retrievers: _Optional[_Iterable[_Union[Retriever, _Mapping]]] = ...) -> None: ...

class DeleteRetrieverRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteRetrieverResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Query(_message.Message):
    __slots__ = ("image", "image_url", "text")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_URL_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    image_url: str
    text: str
    def __init__(self, image: _Optional[bytes] = ..., image_url: _Optional[str] = ..., text: _Optional[str] = ...) -> None: ...

class ExecuteRetrieverRequest(_message.Message):
    __slots__ = ("name", "query", "filter", "limit")
    NAME_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    name: str
    query: Query
    filter: _types_pb2.Filter
    limit: int
    def __init__(self, name: _Optional[str] = ..., query: _Optional[_Union[Query, _Mapping]] = ..., filter: _Optional[_Union[_types_pb2.Filter, _Mapping]] = ..., limit: _Optional[int] = ...) -> None: ...

class ExecuteRetrieverResponse(_message.Message):
    __slots__ = ("documents", "stage_timings")
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    STAGE_TIMINGS_FIELD_NUMBER: _ClassVar[int]
    documents: _containers.RepeatedCompositeFieldContainer[Document]
    stage_timings: _containers.RepeatedCompositeFieldContainer[StageTiming]
    def __init__(self, documents: _Optional[_Iterable[_Union[Document, _Mapping]]] = ..., stage_timings: _Optional[_Iterable[_Union[StageTiming, _Mapping]]] = ...) -> None: ...

class Document(_message.Message):
    __slots__ = ("object", "content_id", "score", "preview_url", "box", "inlier_count", "filename", "metadata", "stage_scores", "duplicate_of", "duplicates")
    class StageScoresEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    OBJECT_FIELD_NUMBER: _ClassVar[int]
    CONTENT_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_URL_FIELD_NUMBER: _ClassVar[int]
    BOX_FIELD_NUMBER: _ClassVar[int]
    INLIER_COUNT_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    STAGE_SCORES_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_OF_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    object: str
    content_id: str
    score: float
    preview_url: str
    box: _types_pb2.BoundingBox
    inlier_count: int
    filename: str
    metadata: _struct_pb2.Struct
    stage_scores: _containers.ScalarMap[str, float]
    duplicate_of: str
    duplicates: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, object: _Optional[str] = ..., content_id: _Optional[str] = ..., score: _Optional[float] = ..., preview_url: _Optional[str] = ..., box: _Optional[_Union[_types_pb2.BoundingBox, _Mapping]] = ..., inlier_count: _Optional[int] = ..., filename: _Optional[str] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., stage_scores: _Optional[_Mapping[str, float]] = ..., duplicate_of: _Optional[str] = ..., duplicates: _Optional[_Iterable[str]] = ...) -> None: ...

class StageTiming(_message.Message):
    __slots__ = ("stage", "milliseconds", "output_count")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    MILLISECONDS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_COUNT_FIELD_NUMBER: _ClassVar[int]
    stage: str
    milliseconds: float
    output_count: int
    def __init__(self, stage: _Optional[str] = ..., milliseconds: _Optional[float] = ..., output_count: _Optional[int] = ...) -> None: ...
