from carechain.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PutRecordRequest(_message.Message):
    __slots__ = ("patient_id", "resource_json")
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_JSON_FIELD_NUMBER: _ClassVar[int]
    patient_id: str
    resource_json: bytes
    def __init__(self, patient_id: _Optional[str] = ..., resource_json: _Optional[bytes] = ...) -> None: ...

class PutRecordResponse(_message.Message):
    __slots__ = ("record_id", "version", "categories", "content_sha256", "ledger_log_index")
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    CONTENT_SHA256_FIELD_NUMBER: _ClassVar[int]
    LEDGER_LOG_INDEX_FIELD_NUMBER: _ClassVar[int]
    record_id: str
    version: int
    categories: _containers.RepeatedScalarFieldContainer[_common_pb2.SensitivityCategory]
    content_sha256: str
    ledger_log_index: int
    def __init__(self, record_id: _Optional[str] = ..., version: _Optional[int] = ..., categories: _Optional[_Iterable[_Union[_common_pb2.SensitivityCategory, str]]] = ..., content_sha256: _Optional[str] = ..., ledger_log_index: _Optional[int] = ...) -> None: ...

class GetRecordRequest(_message.Message):
    __slots__ = ("record_id", "purpose", "break_glass", "break_glass_reason")
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    BREAK_GLASS_FIELD_NUMBER: _ClassVar[int]
    BREAK_GLASS_REASON_FIELD_NUMBER: _ClassVar[int]
    record_id: str
    purpose: _common_pb2.PurposeOfUse
    break_glass: bool
    break_glass_reason: str
    def __init__(self, record_id: _Optional[str] = ..., purpose: _Optional[_Union[_common_pb2.PurposeOfUse, str]] = ..., break_glass: _Optional[bool] = ..., break_glass_reason: _Optional[str] = ...) -> None: ...

class GetRecordResponse(_message.Message):
    __slots__ = ("record_id", "resource_json", "categories", "patient_id", "resource_type", "decision_id", "break_glass", "break_glass_expires_at_ms")
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_JSON_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_TYPE_FIELD_NUMBER: _ClassVar[int]
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    BREAK_GLASS_FIELD_NUMBER: _ClassVar[int]
    BREAK_GLASS_EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    record_id: str
    resource_json: bytes
    categories: _containers.RepeatedScalarFieldContainer[_common_pb2.SensitivityCategory]
    patient_id: str
    resource_type: str
    decision_id: str
    break_glass: bool
    break_glass_expires_at_ms: int
    def __init__(self, record_id: _Optional[str] = ..., resource_json: _Optional[bytes] = ..., categories: _Optional[_Iterable[_Union[_common_pb2.SensitivityCategory, str]]] = ..., patient_id: _Optional[str] = ..., resource_type: _Optional[str] = ..., decision_id: _Optional[str] = ..., break_glass: _Optional[bool] = ..., break_glass_expires_at_ms: _Optional[int] = ...) -> None: ...
