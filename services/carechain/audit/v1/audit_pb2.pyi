from carechain.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AuditAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AUDIT_ACTION_UNSPECIFIED: _ClassVar[AuditAction]
    AUDIT_ACTION_READ: _ClassVar[AuditAction]
    AUDIT_ACTION_WRITE: _ClassVar[AuditAction]
    AUDIT_ACTION_GRANT_CONSENT: _ClassVar[AuditAction]
    AUDIT_ACTION_REVOKE_CONSENT: _ClassVar[AuditAction]
    AUDIT_ACTION_DECIDE: _ClassVar[AuditAction]
    AUDIT_ACTION_RELEASE_KEY: _ClassVar[AuditAction]
    AUDIT_ACTION_REGISTER: _ClassVar[AuditAction]

class AuditOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AUDIT_OUTCOME_UNSPECIFIED: _ClassVar[AuditOutcome]
    AUDIT_OUTCOME_SUCCESS: _ClassVar[AuditOutcome]
    AUDIT_OUTCOME_DENIED: _ClassVar[AuditOutcome]
    AUDIT_OUTCOME_FAILED: _ClassVar[AuditOutcome]
AUDIT_ACTION_UNSPECIFIED: AuditAction
AUDIT_ACTION_READ: AuditAction
AUDIT_ACTION_WRITE: AuditAction
AUDIT_ACTION_GRANT_CONSENT: AuditAction
AUDIT_ACTION_REVOKE_CONSENT: AuditAction
AUDIT_ACTION_DECIDE: AuditAction
AUDIT_ACTION_RELEASE_KEY: AuditAction
AUDIT_ACTION_REGISTER: AuditAction
AUDIT_OUTCOME_UNSPECIFIED: AuditOutcome
AUDIT_OUTCOME_SUCCESS: AuditOutcome
AUDIT_OUTCOME_DENIED: AuditOutcome
AUDIT_OUTCOME_FAILED: AuditOutcome

class AuditEvent(_message.Message):
    __slots__ = ("event_id", "time_ms", "service", "actor_id", "organization_id", "patient_id", "record_id", "action", "purpose", "outcome", "reason", "trace_id")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    TIME_MS_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    ORGANIZATION_ID_FIELD_NUMBER: _ClassVar[int]
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    time_ms: int
    service: str
    actor_id: str
    organization_id: str
    patient_id: str
    record_id: str
    action: AuditAction
    purpose: _common_pb2.PurposeOfUse
    outcome: AuditOutcome
    reason: str
    trace_id: str
    def __init__(self, event_id: _Optional[str] = ..., time_ms: _Optional[int] = ..., service: _Optional[str] = ..., actor_id: _Optional[str] = ..., organization_id: _Optional[str] = ..., patient_id: _Optional[str] = ..., record_id: _Optional[str] = ..., action: _Optional[_Union[AuditAction, str]] = ..., purpose: _Optional[_Union[_common_pb2.PurposeOfUse, str]] = ..., outcome: _Optional[_Union[AuditOutcome, str]] = ..., reason: _Optional[str] = ..., trace_id: _Optional[str] = ...) -> None: ...

class RecordEventRequest(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: AuditEvent
    def __init__(self, event: _Optional[_Union[AuditEvent, _Mapping]] = ...) -> None: ...

class AuditReceipt(_message.Message):
    __slots__ = ("sequence", "event_hash")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    EVENT_HASH_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    event_hash: bytes
    def __init__(self, sequence: _Optional[int] = ..., event_hash: _Optional[bytes] = ...) -> None: ...

class GetAccessHistoryRequest(_message.Message):
    __slots__ = ("patient_id", "since_ms", "until_ms")
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    SINCE_MS_FIELD_NUMBER: _ClassVar[int]
    UNTIL_MS_FIELD_NUMBER: _ClassVar[int]
    patient_id: str
    since_ms: int
    until_ms: int
    def __init__(self, patient_id: _Optional[str] = ..., since_ms: _Optional[int] = ..., until_ms: _Optional[int] = ...) -> None: ...

class StoredAuditEvent(_message.Message):
    __slots__ = ("event", "sequence", "event_hash")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    EVENT_HASH_FIELD_NUMBER: _ClassVar[int]
    event: AuditEvent
    sequence: int
    event_hash: bytes
    def __init__(self, event: _Optional[_Union[AuditEvent, _Mapping]] = ..., sequence: _Optional[int] = ..., event_hash: _Optional[bytes] = ...) -> None: ...

class GetAccessHistoryResponse(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[StoredAuditEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[StoredAuditEvent, _Mapping]]] = ...) -> None: ...

class VerifyAuditChainRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class VerifyAuditChainResponse(_message.Message):
    __slots__ = ("ok", "events_checked", "first_bad_sequence", "problem")
    OK_FIELD_NUMBER: _ClassVar[int]
    EVENTS_CHECKED_FIELD_NUMBER: _ClassVar[int]
    FIRST_BAD_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    PROBLEM_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    events_checked: int
    first_bad_sequence: int
    problem: str
    def __init__(self, ok: _Optional[bool] = ..., events_checked: _Optional[int] = ..., first_bad_sequence: _Optional[int] = ..., problem: _Optional[str] = ...) -> None: ...
