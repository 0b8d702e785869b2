from lookalike.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ListExtractorsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListExtractorsResponse(_message.Message):
    __slots__ = ("extractors",)
    EXTRACTORS_FIELD_NUMBER: _ClassVar[int]
    extractors: _containers.RepeatedCompositeFieldContainer[_types_pb2.ExtractorInfo]
    def __init__(self, extractors: _Optional[_Iterable[_Union[_types_pb2.ExtractorInfo, _Mapping]]] = ...) -> None: ...

class EncodeImagesRequest(_message.Message):
    __slots__ = ("extractors", "images")
    EXTRACTORS_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    extractors: _containers.RepeatedScalarFieldContainer[str]
    images: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, extractors: _Optional[_Iterable[str]] = ..., images: _Optional[_Iterable[bytes]] = ...) -> None: ...

class EncodeImagesResponse(_message.Message):
    __slots__ = ("images",)
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedCompositeFieldContainer[EncodedImage]
    def __init__(self, images: _Optional[_Iterable[_Union[EncodedImage, _Mapping]]] = ...) -> None: ...

class EncodedImage(_message.Message):
    __slots__ = ("vectors", "error", "width", "height")
    class VectorsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _types_pb2.Vector
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_types_pb2.Vector, _Mapping]] = ...) -> None: ...
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    vectors: _containers.MessageMap[str, _types_pb2.Vector]
    error: str
    width: int
    height: int
    def __init__(self, vectors: _Optional[_Mapping[str, _types_pb2.Vector]] = ..., error: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ...) -> None: ...

class EncodeTextRequest(_message.Message):
    __slots__ = ("extractor", "texts")
    EXTRACTOR_FIELD_NUMBER: _ClassVar[int]
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    extractor: str
    texts: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, extractor: _Optional[str] = ..., texts: _Optional[_Iterable[str]] = ...) -> None: ...

class EncodeTextResponse(_message.Message):
    __slots__ = ("vectors",)
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    vectors: _containers.RepeatedCompositeFieldContainer[_types_pb2.Vector]
    def __init__(self, vectors: _Optional[_Iterable[_Union[_types_pb2.Vector, _Mapping]]] = ...) -> None: ...
