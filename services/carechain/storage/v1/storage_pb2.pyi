from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PutBlobRequest(_message.Message):
    __slots__ = ("metadata", "chunk")
    METADATA_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    metadata: PutBlobMetadata
    chunk: bytes
    def __init__(self, metadata: _Optional[_Union[PutBlobMetadata, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class PutBlobMetadata(_message.Message):
    __slots__ = ("expected_sha256",)
    EXPECTED_SHA256_FIELD_NUMBER: _ClassVar[int]
    expected_sha256: str
    def __init__(self, expected_sha256: _Optional[str] = ...) -> None: ...

class BlobRef(_message.Message):
    __slots__ = ("sha256", "size")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    size: int
    def __init__(self, sha256: _Optional[str] = ..., size: _Optional[int] = ...) -> None: ...

class GetBlobRequest(_message.Message):
    __slots__ = ("sha256",)
    SHA256_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    def __init__(self, sha256: _Optional[str] = ...) -> None: ...

class StatBlobRequest(_message.Message):
    __slots__ = ("sha256",)
    SHA256_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    def __init__(self, sha256: _Optional[str] = ...) -> None: ...

class BlobChunk(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class ListBlobsRequest(_message.Message):
    __slots__ = ("written_before_ms", "page_token", "page_size")
    WRITTEN_BEFORE_MS_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    written_before_ms: int
    page_token: str
    page_size: int
    def __init__(self, written_before_ms: _Optional[int] = ..., page_token: _Optional[str] = ..., page_size: _Optional[int] = ...) -> None: ...

class StoredBlob(_message.Message):
    __slots__ = ("sha256", "size", "written_ms")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    WRITTEN_MS_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    size: int
    written_ms: int
    def __init__(self, sha256: _Optional[str] = ..., size: _Optional[int] = ..., written_ms: _Optional[int] = ...) -> None: ...

class ListBlobsResponse(_message.Message):
    __slots__ = ("blobs", "next_page_token")
    BLOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    blobs: _containers.RepeatedCompositeFieldContainer[StoredBlob]
    next_page_token: str
    def __init__(self, blobs: _Optional[_Iterable[_Union[StoredBlob, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteBlobRequest(_message.Message):
    __slots__ = ("sha256", "written_before_ms")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    WRITTEN_BEFORE_MS_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    written_before_ms: int
    def __init__(self, sha256: _Optional[str] = ..., written_before_ms: _Optional[int] = ...) -> None: ...

class DeleteBlobResponse(_message.Message):
    __slots__ = ("size",)
    SIZE_FIELD_NUMBER: _ClassVar[int]
    size: int
    def __init__(self, size: _Optional[int] = ...) -> None: ...

class PruneIncomingRequest(_message.Message):
    __slots__ = ("created_before_ms",)
    CREATED_BEFORE_MS_FIELD_NUMBER: _ClassVar[int]
    created_before_ms: int
    def __init__(self, created_before_ms: _Optional[int] = ...) -> None: ...

class PruneIncomingResponse(_message.Message):
    __slots__ = ("removed",)
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    removed: int
    def __init__(self, removed: _Optional[int] = ...) -> None: ...

class BatchItemError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class PutBlobsItem(_message.Message):
    __slots__ = ("data", "expected_sha256")
    DATA_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_SHA256_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    expected_sha256: str
    def __init__(self, data: _Optional[bytes] = ..., expected_sha256: _Optional[str] = ...) -> None: ...

class PutBlobsRequest(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[PutBlobsItem]
    def __init__(self, items: _Optional[_Iterable[_Union[PutBlobsItem, _Mapping]]] = ...) -> None: ...

class PutBlobResult(_message.Message):
    __slots__ = ("ref", "error")
    REF_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ref: BlobRef
    error: BatchItemError
    def __init__(self, ref: _Optional[_Union[BlobRef, _Mapping]] = ..., error: _Optional[_Union[BatchItemError, _Mapping]] = ...) -> None: ...

class PutBlobsResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[PutBlobResult]
    def __init__(self, results: _Optional[_Iterable[_Union[PutBlobResult, _Mapping]]] = ...) -> None: ...

class GetBlobsRequest(_message.Message):
    __slots__ = ("sha256",)
    SHA256_FIELD_NUMBER: _ClassVar[int]
    sha256: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, sha256: _Optional[_Iterable[str]] = ...) -> None: ...

class GetBlobResult(_message.Message):
    __slots__ = ("data", "error")
    DATA_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    error: BatchItemError
    def __init__(self, data: _Optional[bytes] = ..., error: _Optional[_Union[BatchItemError, _Mapping]] = ...) -> None: ...

class GetBlobsResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[GetBlobResult]
    def __init__(self, results: _Optional[_Iterable[_Union[GetBlobResult, _Mapping]]] = ...) -> None: ...
