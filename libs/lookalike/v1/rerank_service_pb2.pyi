from lookalike.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RerankRequest(_message.Message):
    __slots__ = ("query_image", "candidates", "limit")
    QUERY_IMAGE_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    query_image: bytes
    candidates: _containers.RepeatedCompositeFieldContainer[RerankCandidate]
    limit: int
    def __init__(self, query_image: _Optional[bytes] = ..., candidates: _Optional[_Iterable[_Union[RerankCandidate, _Mapping]]] = ..., limit: _Optional[int] = ...) -> None: ...

class RerankCandidate(_message.Message):
    __slots__ = ("id", "object", "score")
    ID_FIELD_NUMBER: _ClassVar[int]
    OBJECT_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    id: str
    object: str
    score: float
    def __init__(self, id: _Optional[str] = ..., object: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class RerankResponse(_message.Message):
    __slots__ = ("candidates",)
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    candidates: _containers.RepeatedCompositeFieldContainer[RerankedCandidate]
    def __init__(self, candidates: _Optional[_Iterable[_Union[RerankedCandidate, _Mapping]]] = ...) -> None: ...

class RerankedCandidate(_message.Message):
    __slots__ = ("id", "score", "inlier_count", "box")
    ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    INLIER_COUNT_FIELD_NUMBER: _ClassVar[int]
    BOX_FIELD_NUMBER: _ClassVar[int]
    id: str
    score: float
    inlier_count: int
    box: _types_pb2.BoundingBox
    def __init__(self, id: _Optional[str] = ..., score: _Optional[float] = ..., inlier_count: _Optional[int] = ..., box: _Optional[_Union[_types_pb2.BoundingBox, _Mapping]] = ...) -> None: ...
