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
    AUDIT_ACTION_REVIEW: _ClassVar[AuditAction]
    AUDIT_ACTION_DISCLOSE: _ClassVar[AuditAction]
    AUDIT_ACTION_LEDGER_CHECKPOINT: _ClassVar[AuditAction]
    AUDIT_ACTION_ANCHOR_BATCH: _ClassVar[AuditAction]
    AUDIT_ACTION_SEARCH: _ClassVar[AuditAction]
    AUDIT_ACTION_ERASE: _ClassVar[AuditAction]

class AuditOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AUDIT_OUTCOME_UNSPECIFIED: _ClassVar[AuditOutcome]
    AUDIT_OUTCOME_SUCCESS: _ClassVar[AuditOutcome]
    AUDIT_OUTCOME_DENIED: _ClassVar[AuditOutcome]
    AUDIT_OUTCOME_FAILED: _ClassVar[AuditOutcome]
    AUDIT_OUTCOME_ATTEMPTED: _ClassVar[AuditOutcome]

class ReviewStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REVIEW_STATUS_UNSPECIFIED: _ClassVar[ReviewStatus]
    REVIEW_STATUS_OPEN: _ClassVar[ReviewStatus]
    REVIEW_STATUS_RESOLVED: _ClassVar[ReviewStatus]
AUDIT_ACTION_UNSPECIFIED: AuditAction
AUDIT_ACTION_READ: AuditAction
AUDIT_ACTION_WRITE: AuditAction
AUDIT_ACTION_GRANT_CONSENT: AuditAction
AUDIT_ACTION_REVOKE_CONSENT: AuditAction
AUDIT_ACTION_DECIDE: AuditAction
AUDIT_ACTION_RELEASE_KEY: AuditAction
AUDIT_ACTION_REGISTER: AuditAction
AUDIT_ACTION_REVIEW: AuditAction
AUDIT_ACTION_DISCLOSE: AuditAction
AUDIT_ACTION_LEDGER_CHECKPOINT: AuditAction
AUDIT_ACTION_ANCHOR_BATCH: AuditAction
AUDIT_ACTION_SEARCH: AuditAction
AUDIT_ACTION_ERASE: AuditAction
AUDIT_OUTCOME_UNSPECIFIED: AuditOutcome
AUDIT_OUTCOME_SUCCESS: AuditOutcome
AUDIT_OUTCOME_DENIED: AuditOutcome
AUDIT_OUTCOME_FAILED: AuditOutcome
AUDIT_OUTCOME_ATTEMPTED: AuditOutcome
REVIEW_STATUS_UNSPECIFIED: ReviewStatus
REVIEW_STATUS_OPEN: ReviewStatus
REVIEW_STATUS_RESOLVED: ReviewStatus

class AuditEvent(_message.Message):
    __slots__ = ("event_id", "time_ms", "service", "actor_id", "organization_id", "patient_id", "record_id", "action", "purpose", "outcome", "reason", "trace_id", "alert", "resource_type", "categories", "consent_id", "record_version", "ledger_checkpoint")
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
    ALERT_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_TYPE_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    CONSENT_ID_FIELD_NUMBER: _ClassVar[int]
    RECORD_VERSION_FIELD_NUMBER: _ClassVar[int]
    LEDGER_CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
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
    alert: bool
    resource_type: str
    categories: _containers.RepeatedScalarFieldContainer[_common_pb2.SensitivityCategory]
    consent_id: str
    record_version: int
    ledger_checkpoint: bytes
    def __init__(self, event_id: _Optional[str] = ..., time_ms: _Optional[int] = ..., service: _Optional[str] = ..., actor_id: _Optional[str] = ..., organization_id: _Optional[str] = ..., patient_id: _Optional[str] = ..., record_id: _Optional[str] = ..., action: _Optional[_Union[AuditAction, str]] = ..., purpose: _Optional[_Union[_common_pb2.PurposeOfUse, str]] = ..., outcome: _Optional[_Union[AuditOutcome, str]] = ..., reason: _Optional[str] = ..., trace_id: _Optional[str] = ..., alert: _Optional[bool] = ..., resource_type: _Optional[str] = ..., categories: _Optional[_Iterable[_Union[_common_pb2.SensitivityCategory, str]]] = ..., consent_id: _Optional[str] = ..., record_version: _Optional[int] = ..., ledger_checkpoint: _Optional[bytes] = ...) -> None: ...

class RecordEventRequest(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: AuditEvent
    def __init__(self, event: _Optional[_Union[AuditEvent, _Mapping]] = ...) -> None: ...

class RecordEventsRequest(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[AuditEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[AuditEvent, _Mapping]]] = ...) -> None: ...

class EventRefusal(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class RecordEventResult(_message.Message):
    __slots__ = ("receipt", "refusal")
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    REFUSAL_FIELD_NUMBER: _ClassVar[int]
    receipt: AuditReceipt
    refusal: EventRefusal
    def __init__(self, receipt: _Optional[_Union[AuditReceipt, _Mapping]] = ..., refusal: _Optional[_Union[EventRefusal, _Mapping]] = ...) -> None: ...

class RecordEventsResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[RecordEventResult]
    def __init__(self, results: _Optional[_Iterable[_Union[RecordEventResult, _Mapping]]] = ...) -> None: ...

class AuditReceipt(_message.Message):
    __slots__ = ("sequence", "event_hash")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    EVENT_HASH_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    event_hash: bytes
    def __init__(self, sequence: _Optional[int] = ..., event_hash: _Optional[bytes] = ...) -> None: ...

class GetAccessHistoryRequest(_message.Message):
    __slots__ = ("patient_id", "since_ms", "until_ms", "page_size", "page_token")
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    SINCE_MS_FIELD_NUMBER: _ClassVar[int]
    UNTIL_MS_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    patient_id: str
    since_ms: int
    until_ms: int
    page_size: int
    page_token: str
    def __init__(self, patient_id: _Optional[str] = ..., since_ms: _Optional[int] = ..., until_ms: _Optional[int] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class StoredAuditEvent(_message.Message):
    __slots__ = ("event", "sequence", "event_hash")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    EVENT_HASH_FIELD_NUMBER: _ClassVar[int]
    event: AuditEvent
    sequence: int
    event_hash: bytes
    def __init__(self, event: _Optional[_Union[AuditEvent, _Mapping]] = ..., sequence: _Optional[int] = ..., event_hash: _Optional[bytes] = ...) -> None: ...

class StoredAuditEventBatch(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[StoredAuditEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[StoredAuditEvent, _Mapping]]] = ...) -> None: ...

class GetAccessHistoryResponse(_message.Message):
    __slots__ = ("events", "disclosures", "since_ms", "until_ms", "next_page_token")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    DISCLOSURES_FIELD_NUMBER: _ClassVar[int]
    SINCE_MS_FIELD_NUMBER: _ClassVar[int]
    UNTIL_MS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[StoredAuditEvent]
    disclosures: _containers.RepeatedCompositeFieldContainer[Disclosure]
    since_ms: int
    until_ms: int
    next_page_token: str
    def __init__(self, events: _Optional[_Iterable[_Union[StoredAuditEvent, _Mapping]]] = ..., disclosures: _Optional[_Iterable[_Union[Disclosure, _Mapping]]] = ..., since_ms: _Optional[int] = ..., until_ms: _Optional[int] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class Disclosure(_message.Message):
    __slots__ = ("time_ms", "recipient_id", "recipient_organization_id", "record_id", "resource_type", "categories", "purpose", "action", "outcome", "description", "sequence", "alert", "recipient_name", "recipient_organization_name")
    TIME_MS_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_ID_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_ORGANIZATION_ID_FIELD_NUMBER: _ClassVar[int]
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_TYPE_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    ALERT_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_NAME_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_ORGANIZATION_NAME_FIELD_NUMBER: _ClassVar[int]
    time_ms: int
    recipient_id: str
    recipient_organization_id: str
    record_id: str
    resource_type: str
    categories: _containers.RepeatedScalarFieldContainer[_common_pb2.SensitivityCategory]
    purpose: _common_pb2.PurposeOfUse
    action: AuditAction
    outcome: AuditOutcome
    description: str
    sequence: int
    alert: bool
    recipient_name: str
    recipient_organization_name: str
    def __init__(self, time_ms: _Optional[int] = ..., recipient_id: _Optional[str] = ..., recipient_organization_id: _Optional[str] = ..., record_id: _Optional[str] = ..., resource_type: _Optional[str] = ..., categories: _Optional[_Iterable[_Union[_common_pb2.SensitivityCategory, str]]] = ..., purpose: _Optional[_Union[_common_pb2.PurposeOfUse, str]] = ..., action: _Optional[_Union[AuditAction, str]] = ..., outcome: _Optional[_Union[AuditOutcome, str]] = ..., description: _Optional[str] = ..., sequence: _Optional[int] = ..., alert: _Optional[bool] = ..., recipient_name: _Optional[str] = ..., recipient_organization_name: _Optional[str] = ...) -> None: ...

class VerifyAuditChainRequest(_message.Message):
    __slots__ = ("check_ledger", "from_checkpoint")
    CHECK_LEDGER_FIELD_NUMBER: _ClassVar[int]
    FROM_CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    check_ledger: bool
    from_checkpoint: AuditChainCheckpoint
    def __init__(self, check_ledger: _Optional[bool] = ..., from_checkpoint: _Optional[_Union[AuditChainCheckpoint, _Mapping]] = ...) -> None: ...

class AuditChainCheckpoint(_message.Message):
    __slots__ = ("sequence", "event_hash", "batch_number", "anchors_checked")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    EVENT_HASH_FIELD_NUMBER: _ClassVar[int]
    BATCH_NUMBER_FIELD_NUMBER: _ClassVar[int]
    ANCHORS_CHECKED_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    event_hash: bytes
    batch_number: int
    anchors_checked: bool
    def __init__(self, sequence: _Optional[int] = ..., event_hash: _Optional[bytes] = ..., batch_number: _Optional[int] = ..., anchors_checked: _Optional[bool] = ...) -> None: ...

class VerifyAuditChainResponse(_message.Message):
    __slots__ = ("ok", "events_checked", "first_bad_sequence", "problem", "batches_checked", "batches_anchored", "anchors_checked", "checkpoints_checked", "checkpoint")
    OK_FIELD_NUMBER: _ClassVar[int]
    EVENTS_CHECKED_FIELD_NUMBER: _ClassVar[int]
    FIRST_BAD_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    PROBLEM_FIELD_NUMBER: _ClassVar[int]
    BATCHES_CHECKED_FIELD_NUMBER: _ClassVar[int]
    BATCHES_ANCHORED_FIELD_NUMBER: _ClassVar[int]
    ANCHORS_CHECKED_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINTS_CHECKED_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    events_checked: int
    first_bad_sequence: int
    problem: str
    batches_checked: int
    batches_anchored: int
    anchors_checked: int
    checkpoints_checked: int
    checkpoint: AuditChainCheckpoint
    def __init__(self, ok: _Optional[bool] = ..., events_checked: _Optional[int] = ..., first_bad_sequence: _Optional[int] = ..., problem: _Optional[str] = ..., batches_checked: _Optional[int] = ..., batches_anchored: _Optional[int] = ..., anchors_checked: _Optional[int] = ..., checkpoints_checked: _Optional[int] = ..., checkpoint: _Optional[_Union[AuditChainCheckpoint, _Mapping]] = ...) -> None: ...

class StreamEventsRequest(_message.Message):
    __slots__ = ("after_sequence", "service", "outcome", "patient_id", "actor_id", "alerts_only", "replay_only")
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    ALERTS_ONLY_FIELD_NUMBER: _ClassVar[int]
    REPLAY_ONLY_FIELD_NUMBER: _ClassVar[int]
    after_sequence: int
    service: str
    outcome: AuditOutcome
    patient_id: str
    actor_id: str
    alerts_only: bool
    replay_only: bool
    def __init__(self, after_sequence: _Optional[int] = ..., service: _Optional[str] = ..., outcome: _Optional[_Union[AuditOutcome, str]] = ..., patient_id: _Optional[str] = ..., actor_id: _Optional[str] = ..., alerts_only: _Optional[bool] = ..., replay_only: _Optional[bool] = ...) -> None: ...

class ExportFhirBundleRequest(_message.Message):
    __slots__ = ("patient_id", "since_ms", "until_ms", "page_size", "page_token")
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    SINCE_MS_FIELD_NUMBER: _ClassVar[int]
    UNTIL_MS_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    patient_id: str
    since_ms: int
    until_ms: int
    page_size: int
    page_token: str
    def __init__(self, patient_id: _Optional[str] = ..., since_ms: _Optional[int] = ..., until_ms: _Optional[int] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ExportFhirBundleResponse(_message.Message):
    __slots__ = ("bundle_json", "count", "next_page_token")
    BUNDLE_JSON_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    bundle_json: bytes
    count: int
    next_page_token: str
    def __init__(self, bundle_json: _Optional[bytes] = ..., count: _Optional[int] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetEventProofRequest(_message.Message):
    __slots__ = ("sequence",)
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    def __init__(self, sequence: _Optional[int] = ...) -> None: ...

class EventProof(_message.Message):
    __slots__ = ("sequence", "event_hash", "batch_number", "first_sequence", "last_sequence", "leaf_index", "tree_size", "audit_path", "batch_root", "anchored", "anchor_log_index")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    EVENT_HASH_FIELD_NUMBER: _ClassVar[int]
    BATCH_NUMBER_FIELD_NUMBER: _ClassVar[int]
    FIRST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    LEAF_INDEX_FIELD_NUMBER: _ClassVar[int]
    TREE_SIZE_FIELD_NUMBER: _ClassVar[int]
    AUDIT_PATH_FIELD_NUMBER: _ClassVar[int]
    BATCH_ROOT_FIELD_NUMBER: _ClassVar[int]
    ANCHORED_FIELD_NUMBER: _ClassVar[int]
    ANCHOR_LOG_INDEX_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    event_hash: bytes
    batch_number: int
    first_sequence: int
    last_sequence: int
    leaf_index: int
    tree_size: int
    audit_path: _containers.RepeatedScalarFieldContainer[bytes]
    batch_root: bytes
    anchored: bool
    anchor_log_index: int
    def __init__(self, sequence: _Optional[int] = ..., event_hash: _Optional[bytes] = ..., batch_number: _Optional[int] = ..., first_sequence: _Optional[int] = ..., last_sequence: _Optional[int] = ..., leaf_index: _Optional[int] = ..., tree_size: _Optional[int] = ..., audit_path: _Optional[_Iterable[bytes]] = ..., batch_root: _Optional[bytes] = ..., anchored: _Optional[bool] = ..., anchor_log_index: _Optional[int] = ...) -> None: ...

class Notification(_message.Message):
    __slots__ = ("notification_id", "patient_id", "time_ms", "event", "message")
    NOTIFICATION_ID_FIELD_NUMBER: _ClassVar[int]
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    TIME_MS_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    notification_id: str
    patient_id: str
    time_ms: int
    event: StoredAuditEvent
    message: str
    def __init__(self, notification_id: _Optional[str] = ..., patient_id: _Optional[str] = ..., time_ms: _Optional[int] = ..., event: _Optional[_Union[StoredAuditEvent, _Mapping]] = ..., message: _Optional[str] = ...) -> None: ...

class ListNotificationsRequest(_message.Message):
    __slots__ = ("patient_id", "page_size", "page_token")
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    patient_id: str
    page_size: int
    page_token: str
    def __init__(self, patient_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListNotificationsResponse(_message.Message):
    __slots__ = ("notifications", "next_page_token")
    NOTIFICATIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    notifications: _containers.RepeatedCompositeFieldContainer[Notification]
    next_page_token: str
    def __init__(self, notifications: _Optional[_Iterable[_Union[Notification, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ReviewItem(_message.Message):
    __slots__ = ("item_id", "event", "status", "created_ms", "reviewer_id", "note", "resolved_ms", "resolution_sequence")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CREATED_MS_FIELD_NUMBER: _ClassVar[int]
    REVIEWER_ID_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    RESOLVED_MS_FIELD_NUMBER: _ClassVar[int]
    RESOLUTION_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    event: StoredAuditEvent
    status: ReviewStatus
    created_ms: int
    reviewer_id: str
    note: str
    resolved_ms: int
    resolution_sequence: int
    def __init__(self, item_id: _Optional[str] = ..., event: _Optional[_Union[StoredAuditEvent, _Mapping]] = ..., status: _Optional[_Union[ReviewStatus, str]] = ..., created_ms: _Optional[int] = ..., reviewer_id: _Optional[str] = ..., note: _Optional[str] = ..., resolved_ms: _Optional[int] = ..., resolution_sequence: _Optional[int] = ...) -> None: ...

class ListReviewItemsRequest(_message.Message):
    __slots__ = ("status", "page_size", "page_token")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    status: ReviewStatus
    page_size: int
    page_token: str
    def __init__(self, status: _Optional[_Union[ReviewStatus, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListReviewItemsResponse(_message.Message):
    __slots__ = ("items", "next_page_token")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[ReviewItem]
    next_page_token: str
    def __init__(self, items: _Optional[_Iterable[_Union[ReviewItem, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ResolveReviewItemRequest(_message.Message):
    __slots__ = ("item_id", "note")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    note: str
    def __init__(self, item_id: _Optional[str] = ..., note: _Optional[str] = ...) -> None: ...
