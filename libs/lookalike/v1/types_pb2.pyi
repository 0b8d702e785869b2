from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class VectorType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VECTOR_TYPE_UNSPECIFIED: _ClassVar[VectorType]
    VECTOR_TYPE_FLOAT: _ClassVar[VectorType]
    VECTOR_TYPE_BINARY: _ClassVar[VectorType]

class Metric(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    METRIC_UNSPECIFIED: _ClassVar[Metric]
    METRIC_COSINE: _ClassVar[Metric]
    METRIC_INNER_PRODUCT: _ClassVar[Metric]
    METRIC_L2: _ClassVar[Metric]
    METRIC_HAMMING: _ClassVar[Metric]

class IndexType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INDEX_TYPE_UNSPECIFIED: _ClassVar[IndexType]
    INDEX_TYPE_HNSW: _ClassVar[IndexType]
    INDEX_TYPE_IVF_PQ: _ClassVar[IndexType]
    INDEX_TYPE_FLAT: _ClassVar[IndexType]
VECTOR_TYPE_UNSPECIFIED: VectorType
VECTOR_TYPE_FLOAT: VectorType
VECTOR_TYPE_BINARY: VectorType
METRIC_UNSPECIFIED: Metric
METRIC_COSINE: Metric
METRIC_INNER_PRODUCT: Metric
METRIC_L2: Metric
METRIC_HAMMING: Metric
INDEX_TYPE_UNSPECIFIED: IndexType
INDEX_TYPE_HNSW: IndexType
INDEX_TYPE_IVF_PQ: IndexType
INDEX_TYPE_FLAT: IndexType

class Filter(_message.Message):
    __slots__ = ("condition", "all_of", "any_of", "negation")
    CONDITION_FIELD_NUMBER: _ClassVar[int]
    ALL_OF_FIELD_NUMBER: _ClassVar[int]
    ANY_OF_FIELD_NUMBER: _ClassVar[int]
    NEGATION_FIELD_NUMBER: _ClassVar[int]
    condition: FieldCondition
    all_of: FilterGroup
    any_of: FilterGroup
    negation: Filter
    def __init__(self, condition: _Optional[_Union[FieldCondition, _Mapping]] = ..., all_of: _Optional[_Union[FilterGroup, _Mapping]] = ..., any_of: _Optional[_Union[FilterGroup, _Mapping]] = ..., negation: _Optional[_Union[Filter, _Mapping]] = ...) -> None: ...

class FilterGroup(_message.Message):
    __slots__ = ("filters",)
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    filters: _containers.RepeatedCompositeFieldContainer[Filter]
    def __init__(self, filters: _Optional[_Iterable[_Union[Filter, _Mapping]]] = ...) -> None: ...

class FieldCondition(_message.Message):
    __slots__ = ("field", "operator", "value", "values")
    class Operator(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        OPERATOR_UNSPECIFIED: _ClassVar[FieldCondition.Operator]
        OPERATOR_EQ: _ClassVar[FieldCondition.Operator]
        OPERATOR_NE: _ClassVar[FieldCondition.Operator]
        OPERATOR_LT: _ClassVar[FieldCondition.Operator]
        OPERATOR_LE: _ClassVar[FieldCondition.Operator]
        OPERATOR_GT: _ClassVar[FieldCondition.Operator]
        OPERATOR_GE: _ClassVar[FieldCondition.Operator]
        OPERATOR_IN: _ClassVar[FieldCondition.Operator]
        OPERATOR_NOT_IN: _ClassVar[FieldCondition.Operator]
        OPERATOR_CONTAINS: _ClassVar[FieldCondition.Operator]
    OPERATOR_UNSPECIFIED: FieldCondition.Operator
    OPERATOR_EQ: FieldCondition.Operator
    OPERATOR_NE: FieldCondition.Operator
    OPERATOR_LT: FieldCondition.Operator
    OPERATOR_LE: FieldCondition.Operator
    OPERATOR_GT: FieldCondition.Operator
    OPERATOR_GE: FieldCondition.Operator
    OPERATOR_IN: FieldCondition.Operator
    OPERATOR_NOT_IN: FieldCondition.Operator
    OPERATOR_CONTAINS: FieldCondition.Operator
    FIELD_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    field: str
    operator: FieldCondition.Operator
    value: ScalarValue
    values: _containers.RepeatedCompositeFieldContainer[ScalarValue]
    def __init__(self, field: _Optional[str] = ..., operator: _Optional[_Union[FieldCondition.Operator, str]] = ..., value: _Optional[_Union[ScalarValue, _Mapping]] = ..., values: _Optional[_Iterable[_Union[ScalarValue, _Mapping]]] = ...) -> None: ...

class ScalarValue(_message.Message):
    __slots__ = ("string_value", "int_value", "double_value", "bool_value")
    STRING_VALUE_FIELD_NUMBER: _ClassVar[int]
    INT_VALUE_FIELD_NUMBER: _ClassVar[int]
    DOUBLE_VALUE_FIELD_NUMBER: _ClassVar[int]
    BOOL_VALUE_FIELD_NUMBER: _ClassVar[int]
    string_value: str
    int_value: int
    double_value: float
    bool_value: bool
    def __init__(self, string_value: _Optional[str] = ..., int_value: _Optional[int] = ..., double_value: _Optional[float] = ..., bool_value: bool = ...) -> None: ...

class BoundingBox(_message.Message):
    __slots__ = ("x_min", "y_min", "x_max", "y_max")
    X_MIN_FIELD_NUMBER: _ClassVar[int]
    Y_MIN_FIELD_NUMBER: _ClassVar[int]
    X_MAX_FIELD_NUMBER: _ClassVar[int]
    Y_MAX_FIELD_NUMBER: _ClassVar[int]
    x_min: float
    y_min: float
    x_max: float
    y_max: float
    def __init__(self, x_min: _Optional[float] = ..., y_min: _Optional[float] = ..., x_max: _Optional[float] = ..., y_max: _Optional[float] = ...) -> None: ...

class Vector(_message.Message):
    __slots__ = ("values", "binary")
    VALUES_FIELD_NUMBER: _ClassVar[int]
    BINARY_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    binary: bytes
    def __init__(self, values: _Optional[_Iterable[float]] = ..., binary: _Optional[bytes] = ...) -> None: ...

class ExtractorInfo(_message.Message):
    __slots__ = ("name", "dimension", "vector_type", "metric", "supports_text", "description")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    VECTOR_TYPE_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    SUPPORTS_TEXT_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    dimension: int
    vector_type: VectorType
    metric: Metric
    supports_text: bool
    description: str
    def __init__(self, name: _Optional[str] = ..., dimension: _Optional[int] = ..., vector_type: _Optional[_Union[VectorType, str]] = ..., metric: _Optional[_Union[Metric, str]] = ..., supports_text: bool = ..., description: _Optional[str] = ...) -> None: ...

class MetadataField(_message.Message):
    __slots__ = ("name", "type")
    class Type(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        TYPE_UNSPECIFIED: _ClassVar[MetadataField.Type]
        TYPE_STRING: _ClassVar[MetadataField.Type]
        TYPE_INT64: _ClassVar[MetadataField.Type]
        TYPE_DOUBLE: _ClassVar[MetadataField.Type]
        TYPE_BOOL: _ClassVar[MetadataField.Type]
    TYPE_UNSPECIFIED: MetadataField.Type
    TYPE_STRING: MetadataField.Type
    TYPE_INT64: MetadataField.Type
    TYPE_DOUBLE: MetadataField.Type
    TYPE_BOOL: MetadataField.Type
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: MetadataField.Type
    def __init__(self, name: _Optional[str] = ..., type: _Optional[_Union[MetadataField.Type, str]] = ...) -> None: ...

class IndexSpec(_message.Message):
    __slots__ = ("type", "hnsw", "ivf_pq")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    HNSW_FIELD_NUMBER: _ClassVar[int]
    IVF_PQ_FIELD_NUMBER: _ClassVar[int]
    type: IndexType
    hnsw: HnswParams
    ivf_pq: IvfPqParams
    def __init__(self, type: _Optional[_Union[IndexType, str]] = ..., hnsw: _Optional[_Union[HnswParams, _Mapping]] = ..., ivf_pq: _Optional[_Union[IvfPqParams, _Mapping]] = ...) -> None: ...

class HnswParams(_message.Message):
    __slots__ = ("m", "ef_construction", "ef")
    M_FIELD_NUMBER: _ClassVar[int]
    EF_CONSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    EF_FIELD_NUMBER: _ClassVar[int]
    m: int
    ef_construction: int
    ef: int
    def __init__(self, m: _Optional[int] = ..., ef_construction: _Optional[int] = ..., ef: _Optional[int] = ...) -> None: ...

class IvfPqParams(_message.Message):
    __slots__ = ("nlist", "m", "nbits", "nprobe")
    NLIST_FIELD_NUMBER: _ClassVar[int]
    M_FIELD_NUMBER: _ClassVar[int]
    NBITS_FIELD_NUMBER: _ClassVar[int]
    NPROBE_FIELD_NUMBER: _ClassVar[int]
    nlist: int
    m: int
    nbits: int
    nprobe: int
    def __init__(self, nlist: _Optional[int] = ..., m: _Optional[int] = ..., nbits: _Optional[int] = ..., nprobe: _Optional[int] = ...) -> None: ...

class IngestTarget(_message.Message):
    __slots__ = ("bucket", "collection", "feature_extractors")
    BUCKET_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    FEATURE_EXTRACTORS_FIELD_NUMBER: _ClassVar[int]
    bucket: str
    collection: str
    feature_extractors: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, bucket: _Optional[str] = ..., collection: _Optional[str] = ..., feature_extractors: _Optional[_Iterable[str]] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("name", "state", "queued", "indexed", "failed", "failures", "done")
    class State(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATE_UNSPECIFIED: _ClassVar[Job.State]
        STATE_RUNNING: _ClassVar[Job.State]
        STATE_SUCCEEDED: _ClassVar[Job.State]
        STATE_FAILED: _ClassVar[Job.State]
    STATE_UNSPECIFIED: Job.State
    STATE_RUNNING: Job.State
    STATE_SUCCEEDED: Job.State
    STATE_FAILED: Job.State
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    INDEXED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    name: str
    state: Job.State
    queued: int
    indexed: int
    failed: int
    failures: _containers.RepeatedCompositeFieldContainer[JobFailure]
    done: bool
    def __init__(self, name: _Optional[str] = ..., state: _Optional[_Union[Job.State, str]] = ..., queued: _Optional[int] = ..., indexed: _Optional[int] = ..., failed: _Optional[int] = ..., failures: _Optional[_Iterable[_Union[JobFailure, _Mapping]]] = ..., done: bool = ...) -> None: ...

class JobFailure(_message.Message):
    __slots__ = ("content_id", "filename", "reason")
    CONTENT_ID_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    content_id: str
    filename: str
    reason: str
    def __init__(self, content_id: _Optional[str] = ..., filename: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class UploadResult(_message.Message):
    __slots__ = ("filename", "object", "content_id", "error")
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    OBJECT_FIELD_NUMBER: _ClassVar[int]
    CONTENT_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    filename: str
    object: str
    content_id: str
    error: str
    def __init__(self, filename: _Optional[str] = ..., object: _Optional[str] = ..., content_id: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...
