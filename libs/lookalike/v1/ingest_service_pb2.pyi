from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from lookalike.v1 import bucket_service_pb2 as _bucket_service_pb2
from lookalike.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class IngestObjectsRequest(_message.Message):
    __slots__ = ("target", "filename", "content", "metadata", "auto_process")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    AUTO_PROCESS_FIELD_NUMBER: _ClassVar[int]
    target: _types_pb2.IngestTarget
    filename: str
    content: bytes
    metadata: _struct_pb2.Struct
    auto_process: bool
    def __init__(self, target: _Optional[_Union[_types_pb2.IngestTarget, _Mapping]] = ..., filename: _Optional[str] = ..., content: _Optional[bytes] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., auto_process: bool = ...) -> None: ...

class IngestObjectsResponse(_message.Message):
    __slots__ = ("job", "results")
    JOB_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    job: str
    results: _containers.RepeatedCompositeFieldContainer[_types_pb2.UploadResult]
    def __init__(self, job: _Optional[str] = ..., results: _Optional[_Iterable[_Union[_types_pb2.UploadResult, _Mapping]]] = ...) -> None: ...

class IngestEvent(_message.Message):
    __slots__ = ("content_id", "object_key", "target", "filename", "metadata", "job", "enqueue_time")
    CONTENT_ID_FIELD_NUMBER: _ClassVar[int]
    OBJECT_KEY_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    ENQUEUE_TIME_FIELD_NUMBER: _ClassVar[int]
    content_id: str
    object_key: str
    target: _types_pb2.IngestTarget
    filename: str
    metadata: _struct_pb2.Struct
    job: str
    enqueue_time: _timestamp_pb2.Timestamp
    def __init__(self, content_id: _Optional[str] = ..., object_key: _Optional[str] = ..., target: _Optional[_Union[_types_pb2.IngestTarget, _Mapping]] = ..., filename: _Optional[str] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., job: _Optional[str] = ..., enqueue_time: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetIngestJobRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetIngestJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: _types_pb2.Job
    def __init__(self, job: _Optional[_Union[_types_pb2.Job, _Mapping]] = ...) -> None: ...

class SyncSourceRequest(_message.Message):
    __slots__ = ("target", "source", "auto_process")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    AUTO_PROCESS_FIELD_NUMBER: _ClassVar[int]
    target: _types_pb2.IngestTarget
    source: _bucket_service_pb2.S3Source
    auto_process: bool
    def __init__(self, target: _Optional[_Union[_types_pb2.IngestTarget, _Mapping]] = ..., source: _Optional[_Union[_bucket_service_pb2.S3Source, _Mapping]] = ..., auto_process: bool = ...) -> None: ...

class SyncSourceResponse(_message.Message):
    __slots__ = ("job", "listed_count", "enqueued_count")
    JOB_FIELD_NUMBER: _ClassVar[int]
    LISTED_COUNT_FIELD_NUMBER: _ClassVar[int]
    ENQUEUED_COUNT_FIELD_NUMBER: _ClassVar[int]
    job: str
    listed_count: int
    enqueued_count: int
    def __init__(self, job: _Optional[str] = ..., listed_count: _Optional[int] = ..., enqueued_count: _Optional[int] = ...) -> None: ...

class DeleteObjectsRequest(_message.Message):
    __slots__ = ("target", "objects")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    OBJECTS_FIELD_NUMBER: _ClassVar[int]
    target: _types_pb2.IngestTarget
    objects: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, target: _Optional[_Union[_types_pb2.IngestTarget, _Mapping]] = ..., objects: _Optional[_Iterable[str]] = ...) -> None: ...

class DeleteObjectsResponse(_message.Message):
    __slots__ = ("deleted_count",)
    DELETED_COUNT_FIELD_NUMBER: _ClassVar[int]
    deleted_count: int
    def __init__(self, deleted_count: _Optional[int] = ...) -> None: ...
