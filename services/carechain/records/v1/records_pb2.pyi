from carechain.common.v1 import common_pb2 as _common_pb2
from carechain.identity.v1 import identity_pb2 as _identity_pb2
from carechain.ledger.v1 import ledger_pb2 as _ledger_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
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
    __slots__ = ("record_id", "version", "categories", "content_sha256", "ledger_log_index", "security_labels", "patient_id")
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    CONTENT_SHA256_FIELD_NUMBER: _ClassVar[int]
    LEDGER_LOG_INDEX_FIELD_NUMBER: _ClassVar[int]
    SECURITY_LABELS_FIELD_NUMBER: _ClassVar[int]
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    record_id: str
    version: int
    categories: _containers.RepeatedScalarFieldContainer[_common_pb2.SensitivityCategory]
    content_sha256: str
    ledger_log_index: int
    security_labels: _containers.RepeatedCompositeFieldContainer[_common_pb2.SecurityLabel]
    patient_id: str
    def __init__(self, record_id: _Optional[str] = ..., version: _Optional[int] = ..., categories: _Optional[_Iterable[_Union[_common_pb2.SensitivityCategory, str]]] = ..., content_sha256: _Optional[str] = ..., ledger_log_index: _Optional[int] = ..., security_labels: _Optional[_Iterable[_Union[_common_pb2.SecurityLabel, _Mapping]]] = ..., patient_id: _Optional[str] = ...) -> None: ...

class GetRecordRequest(_message.Message):
    __slots__ = ("record_id", "purpose", "break_glass", "break_glass_reason", "action", "version", "provenance")
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    BREAK_GLASS_FIELD_NUMBER: _ClassVar[int]
    BREAK_GLASS_REASON_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    record_id: str
    purpose: _common_pb2.PurposeOfUse
    break_glass: bool
    break_glass_reason: str
    action: _common_pb2.ConsentAction
    version: int
    provenance: bool
    def __init__(self, record_id: _Optional[str] = ..., purpose: _Optional[_Union[_common_pb2.PurposeOfUse, str]] = ..., break_glass: _Optional[bool] = ..., break_glass_reason: _Optional[str] = ..., action: _Optional[_Union[_common_pb2.ConsentAction, str]] = ..., version: _Optional[int] = ..., provenance: _Optional[bool] = ...) -> None: ...

class GetRecordResponse(_message.Message):
    __slots__ = ("record_id", "resource_json", "categories", "security_labels", "patient_id", "resource_type", "decision_id", "break_glass", "break_glass_expires_at_ms", "redisclosure_notice", "labelled_resource_json", "attachment_size", "record_version", "versioned_resource_json", "provenance_json")
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_JSON_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    SECURITY_LABELS_FIELD_NUMBER: _ClassVar[int]
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_TYPE_FIELD_NUMBER: _ClassVar[int]
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    BREAK_GLASS_FIELD_NUMBER: _ClassVar[int]
    BREAK_GLASS_EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    REDISCLOSURE_NOTICE_FIELD_NUMBER: _ClassVar[int]
    LABELLED_RESOURCE_JSON_FIELD_NUMBER: _ClassVar[int]
    ATTACHMENT_SIZE_FIELD_NUMBER: _ClassVar[int]
    RECORD_VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSIONED_RESOURCE_JSON_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_JSON_FIELD_NUMBER: _ClassVar[int]
    record_id: str
    resource_json: bytes
    categories: _containers.RepeatedScalarFieldContainer[_common_pb2.SensitivityCategory]
    security_labels: _containers.RepeatedCompositeFieldContainer[_common_pb2.SecurityLabel]
    patient_id: str
    resource_type: str
    decision_id: str
    break_glass: bool
    break_glass_expires_at_ms: int
    redisclosure_notice: str
    labelled_resource_json: bytes
    attachment_size: int
    record_version: RecordVersion
    versioned_resource_json: bytes
    provenance_json: bytes
    def __init__(self, record_id: _Optional[str] = ..., resource_json: _Optional[bytes] = ..., categories: _Optional[_Iterable[_Union[_common_pb2.SensitivityCategory, str]]] = ..., security_labels: _Optional[_Iterable[_Union[_common_pb2.SecurityLabel, _Mapping]]] = ..., patient_id: _Optional[str] = ..., resource_type: _Optional[str] = ..., decision_id: _Optional[str] = ..., break_glass: _Optional[bool] = ..., break_glass_expires_at_ms: _Optional[int] = ..., redisclosure_notice: _Optional[str] = ..., labelled_resource_json: _Optional[bytes] = ..., attachment_size: _Optional[int] = ..., record_version: _Optional[_Union[RecordVersion, _Mapping]] = ..., versioned_resource_json: _Optional[bytes] = ..., provenance_json: _Optional[bytes] = ...) -> None: ...

class ReconcileRequest(_message.Message):
    __slots__ = ("dry_run",)
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    dry_run: bool
    def __init__(self, dry_run: _Optional[bool] = ...) -> None: ...

class ReconcileReport(_message.Message):
    __slots__ = ("cutoff_ms", "ledger_records", "orphan_blobs", "orphan_data_keys", "stale_uploads", "abandoned_writes", "unconfirmed_commits", "dry_run", "erased_leftovers")
    CUTOFF_MS_FIELD_NUMBER: _ClassVar[int]
    LEDGER_RECORDS_FIELD_NUMBER: _ClassVar[int]
    ORPHAN_BLOBS_FIELD_NUMBER: _ClassVar[int]
    ORPHAN_DATA_KEYS_FIELD_NUMBER: _ClassVar[int]
    STALE_UPLOADS_FIELD_NUMBER: _ClassVar[int]
    ABANDONED_WRITES_FIELD_NUMBER: _ClassVar[int]
    UNCONFIRMED_COMMITS_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    ERASED_LEFTOVERS_FIELD_NUMBER: _ClassVar[int]
    cutoff_ms: int
    ledger_records: int
    orphan_blobs: int
    orphan_data_keys: int
    stale_uploads: int
    abandoned_writes: int
    unconfirmed_commits: int
    dry_run: bool
    erased_leftovers: int
    def __init__(self, cutoff_ms: _Optional[int] = ..., ledger_records: _Optional[int] = ..., orphan_blobs: _Optional[int] = ..., orphan_data_keys: _Optional[int] = ..., stale_uploads: _Optional[int] = ..., abandoned_writes: _Optional[int] = ..., unconfirmed_commits: _Optional[int] = ..., dry_run: _Optional[bool] = ..., erased_leftovers: _Optional[int] = ...) -> None: ...

class ImportBundleRequest(_message.Message):
    __slots__ = ("bundle_json", "patient_ids")
    BUNDLE_JSON_FIELD_NUMBER: _ClassVar[int]
    PATIENT_IDS_FIELD_NUMBER: _ClassVar[int]
    bundle_json: bytes
    patient_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, bundle_json: _Optional[bytes] = ..., patient_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ImportResult(_message.Message):
    __slots__ = ("index", "client_ref", "code", "message", "record_id", "categories", "content_sha256", "ledger_log_index")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    CLIENT_REF_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    CONTENT_SHA256_FIELD_NUMBER: _ClassVar[int]
    LEDGER_LOG_INDEX_FIELD_NUMBER: _ClassVar[int]
    index: int
    client_ref: str
    code: int
    message: str
    record_id: str
    categories: _containers.RepeatedScalarFieldContainer[_common_pb2.SensitivityCategory]
    content_sha256: str
    ledger_log_index: int
    def __init__(self, index: _Optional[int] = ..., client_ref: _Optional[str] = ..., code: _Optional[int] = ..., message: _Optional[str] = ..., record_id: _Optional[str] = ..., categories: _Optional[_Iterable[_Union[_common_pb2.SensitivityCategory, str]]] = ..., content_sha256: _Optional[str] = ..., ledger_log_index: _Optional[int] = ...) -> None: ...

class ImportBundleResponse(_message.Message):
    __slots__ = ("response_bundle_json", "results", "committed", "failed")
    RESPONSE_BUNDLE_JSON_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    response_bundle_json: bytes
    results: _containers.RepeatedCompositeFieldContainer[ImportResult]
    committed: int
    failed: int
    def __init__(self, response_bundle_json: _Optional[bytes] = ..., results: _Optional[_Iterable[_Union[ImportResult, _Mapping]]] = ..., committed: _Optional[int] = ..., failed: _Optional[int] = ...) -> None: ...

class ImportRecordsRequest(_message.Message):
    __slots__ = ("patient_id", "resource_json", "client_ref")
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_JSON_FIELD_NUMBER: _ClassVar[int]
    CLIENT_REF_FIELD_NUMBER: _ClassVar[int]
    patient_id: str
    resource_json: bytes
    client_ref: str
    def __init__(self, patient_id: _Optional[str] = ..., resource_json: _Optional[bytes] = ..., client_ref: _Optional[str] = ...) -> None: ...

class PutRecordStreamRequest(_message.Message):
    __slots__ = ("header", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: LargeRecordHeader
    data: bytes
    def __init__(self, header: _Optional[_Union[LargeRecordHeader, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class LargeRecordHeader(_message.Message):
    __slots__ = ("patient_id", "resource_json", "attachment_size")
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_JSON_FIELD_NUMBER: _ClassVar[int]
    ATTACHMENT_SIZE_FIELD_NUMBER: _ClassVar[int]
    patient_id: str
    resource_json: bytes
    attachment_size: int
    def __init__(self, patient_id: _Optional[str] = ..., resource_json: _Optional[bytes] = ..., attachment_size: _Optional[int] = ...) -> None: ...

class GetRecordStreamResponse(_message.Message):
    __slots__ = ("header", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: GetRecordResponse
    data: bytes
    def __init__(self, header: _Optional[_Union[GetRecordResponse, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class UpdateRecordRequest(_message.Message):
    __slots__ = ("record_id", "resource_json", "if_version")
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_JSON_FIELD_NUMBER: _ClassVar[int]
    IF_VERSION_FIELD_NUMBER: _ClassVar[int]
    record_id: str
    resource_json: bytes
    if_version: int
    def __init__(self, record_id: _Optional[str] = ..., resource_json: _Optional[bytes] = ..., if_version: _Optional[int] = ...) -> None: ...

class RecordVersion(_message.Message):
    __slots__ = ("record_id", "version", "ledger_log_index", "last_updated_ms", "author_organization_id", "author_practitioner_id", "content_sha256")
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LEDGER_LOG_INDEX_FIELD_NUMBER: _ClassVar[int]
    LAST_UPDATED_MS_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_ORGANIZATION_ID_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_PRACTITIONER_ID_FIELD_NUMBER: _ClassVar[int]
    CONTENT_SHA256_FIELD_NUMBER: _ClassVar[int]
    record_id: str
    version: int
    ledger_log_index: int
    last_updated_ms: int
    author_organization_id: str
    author_practitioner_id: str
    content_sha256: str
    def __init__(self, record_id: _Optional[str] = ..., version: _Optional[int] = ..., ledger_log_index: _Optional[int] = ..., last_updated_ms: _Optional[int] = ..., author_organization_id: _Optional[str] = ..., author_practitioner_id: _Optional[str] = ..., content_sha256: _Optional[str] = ...) -> None: ...

class ListRecordVersionsRequest(_message.Message):
    __slots__ = ("record_id", "purpose", "page_size", "page_token")
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    record_id: str
    purpose: _common_pb2.PurposeOfUse
    page_size: int
    page_token: str
    def __init__(self, record_id: _Optional[str] = ..., purpose: _Optional[_Union[_common_pb2.PurposeOfUse, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListRecordVersionsResponse(_message.Message):
    __slots__ = ("versions", "next_page_token")
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedCompositeFieldContainer[RecordVersion]
    next_page_token: str
    def __init__(self, versions: _Optional[_Iterable[_Union[RecordVersion, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class SearchRecordsRequest(_message.Message):
    __slots__ = ("patient_id", "purpose", "resource_types", "categories", "date_from_ms", "date_to_ms", "author_organization_id", "updated_since_ms", "page_size", "page_token", "updated_before_ms", "resource_categories")
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_TYPES_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    DATE_FROM_MS_FIELD_NUMBER: _ClassVar[int]
    DATE_TO_MS_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_ORGANIZATION_ID_FIELD_NUMBER: _ClassVar[int]
    UPDATED_SINCE_MS_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    UPDATED_BEFORE_MS_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    patient_id: str
    purpose: _common_pb2.PurposeOfUse
    resource_types: _containers.RepeatedScalarFieldContainer[str]
    categories: _containers.RepeatedScalarFieldContainer[_common_pb2.SensitivityCategory]
    date_from_ms: int
    date_to_ms: int
    author_organization_id: str
    updated_since_ms: int
    page_size: int
    page_token: str
    updated_before_ms: int
    resource_categories: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, patient_id: _Optional[str] = ..., purpose: _Optional[_Union[_common_pb2.PurposeOfUse, str]] = ..., resource_types: _Optional[_Iterable[str]] = ..., categories: _Optional[_Iterable[_Union[_common_pb2.SensitivityCategory, str]]] = ..., date_from_ms: _Optional[int] = ..., date_to_ms: _Optional[int] = ..., author_organization_id: _Optional[str] = ..., updated_since_ms: _Optional[int] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., updated_before_ms: _Optional[int] = ..., resource_categories: _Optional[_Iterable[str]] = ...) -> None: ...

class RecordSummary(_message.Message):
    __slots__ = ("record_id", "resource_type", "version", "data_date_ms", "author_organization_id", "last_updated_ms", "categories", "security_labels", "ledger_log_index", "large", "resource_categories")
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_TYPE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DATA_DATE_MS_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_ORGANIZATION_ID_FIELD_NUMBER: _ClassVar[int]
    LAST_UPDATED_MS_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    SECURITY_LABELS_FIELD_NUMBER: _ClassVar[int]
    LEDGER_LOG_INDEX_FIELD_NUMBER: _ClassVar[int]
    LARGE_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    record_id: str
    resource_type: str
    version: int
    data_date_ms: int
    author_organization_id: str
    last_updated_ms: int
    categories: _containers.RepeatedScalarFieldContainer[_common_pb2.SensitivityCategory]
    security_labels: _containers.RepeatedCompositeFieldContainer[_common_pb2.SecurityLabel]
    ledger_log_index: int
    large: bool
    resource_categories: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, record_id: _Optional[str] = ..., resource_type: _Optional[str] = ..., version: _Optional[int] = ..., data_date_ms: _Optional[int] = ..., author_organization_id: _Optional[str] = ..., last_updated_ms: _Optional[int] = ..., categories: _Optional[_Iterable[_Union[_common_pb2.SensitivityCategory, str]]] = ..., security_labels: _Optional[_Iterable[_Union[_common_pb2.SecurityLabel, _Mapping]]] = ..., ledger_log_index: _Optional[int] = ..., large: _Optional[bool] = ..., resource_categories: _Optional[_Iterable[str]] = ...) -> None: ...

class SearchRecordsResponse(_message.Message):
    __slots__ = ("records", "withheld", "next_page_token")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    WITHHELD_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[RecordSummary]
    withheld: int
    next_page_token: str
    def __init__(self, records: _Optional[_Iterable[_Union[RecordSummary, _Mapping]]] = ..., withheld: _Optional[int] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class PatientSummaryRequest(_message.Message):
    __slots__ = ("patient_id", "purpose", "resource_types", "since_ms", "break_glass", "break_glass_reason")
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_TYPES_FIELD_NUMBER: _ClassVar[int]
    SINCE_MS_FIELD_NUMBER: _ClassVar[int]
    BREAK_GLASS_FIELD_NUMBER: _ClassVar[int]
    BREAK_GLASS_REASON_FIELD_NUMBER: _ClassVar[int]
    patient_id: str
    purpose: _common_pb2.PurposeOfUse
    resource_types: _containers.RepeatedScalarFieldContainer[str]
    since_ms: int
    break_glass: bool
    break_glass_reason: str
    def __init__(self, patient_id: _Optional[str] = ..., purpose: _Optional[_Union[_common_pb2.PurposeOfUse, str]] = ..., resource_types: _Optional[_Iterable[str]] = ..., since_ms: _Optional[int] = ..., break_glass: _Optional[bool] = ..., break_glass_reason: _Optional[str] = ...) -> None: ...

class PatientSummaryEnd(_message.Message):
    __slots__ = ("returned", "withheld", "large_records")
    RETURNED_FIELD_NUMBER: _ClassVar[int]
    WITHHELD_FIELD_NUMBER: _ClassVar[int]
    LARGE_RECORDS_FIELD_NUMBER: _ClassVar[int]
    returned: int
    withheld: int
    large_records: int
    def __init__(self, returned: _Optional[int] = ..., withheld: _Optional[int] = ..., large_records: _Optional[int] = ...) -> None: ...

class PatientSummaryResponse(_message.Message):
    __slots__ = ("record", "end")
    RECORD_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    record: GetRecordResponse
    end: PatientSummaryEnd
    def __init__(self, record: _Optional[_Union[GetRecordResponse, _Mapping]] = ..., end: _Optional[_Union[PatientSummaryEnd, _Mapping]] = ...) -> None: ...

class PatientSummaryBundle(_message.Message):
    __slots__ = ("bundle_json", "end")
    BUNDLE_JSON_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    bundle_json: bytes
    end: PatientSummaryEnd
    def __init__(self, bundle_json: _Optional[bytes] = ..., end: _Optional[_Union[PatientSummaryEnd, _Mapping]] = ...) -> None: ...

class EraseRecordsRequest(_message.Message):
    __slots__ = ("patient_id", "record_ids", "all", "reason")
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    RECORD_IDS_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    patient_id: str
    record_ids: _containers.RepeatedScalarFieldContainer[str]
    all: bool
    reason: str
    def __init__(self, patient_id: _Optional[str] = ..., record_ids: _Optional[_Iterable[str]] = ..., all: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class ErasureReceipt(_message.Message):
    __slots__ = ("patient_id", "record_ids", "erased_count", "log_index", "erased_at_ms", "erased_on", "checkpoint", "inclusion_proof")
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    RECORD_IDS_FIELD_NUMBER: _ClassVar[int]
    ERASED_COUNT_FIELD_NUMBER: _ClassVar[int]
    LOG_INDEX_FIELD_NUMBER: _ClassVar[int]
    ERASED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    ERASED_ON_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    INCLUSION_PROOF_FIELD_NUMBER: _ClassVar[int]
    patient_id: str
    record_ids: _containers.RepeatedScalarFieldContainer[str]
    erased_count: int
    log_index: int
    erased_at_ms: int
    erased_on: str
    checkpoint: _ledger_pb2.Checkpoint
    inclusion_proof: _ledger_pb2.InclusionProof
    def __init__(self, patient_id: _Optional[str] = ..., record_ids: _Optional[_Iterable[str]] = ..., erased_count: _Optional[int] = ..., log_index: _Optional[int] = ..., erased_at_ms: _Optional[int] = ..., erased_on: _Optional[str] = ..., checkpoint: _Optional[_Union[_ledger_pb2.Checkpoint, _Mapping]] = ..., inclusion_proof: _Optional[_Union[_ledger_pb2.InclusionProof, _Mapping]] = ...) -> None: ...

class SubmitConsentRequest(_message.Message):
    __slots__ = ("consent_json", "consent_jws")
    CONSENT_JSON_FIELD_NUMBER: _ClassVar[int]
    CONSENT_JWS_FIELD_NUMBER: _ClassVar[int]
    consent_json: bytes
    consent_jws: str
    def __init__(self, consent_json: _Optional[bytes] = ..., consent_jws: _Optional[str] = ...) -> None: ...

class PatientConsent(_message.Message):
    __slots__ = ("consent_id", "consent_json")
    CONSENT_ID_FIELD_NUMBER: _ClassVar[int]
    CONSENT_JSON_FIELD_NUMBER: _ClassVar[int]
    consent_id: str
    consent_json: str
    def __init__(self, consent_id: _Optional[str] = ..., consent_json: _Optional[str] = ...) -> None: ...

class ListPatientConsentsRequest(_message.Message):
    __slots__ = ("patient_id",)
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    patient_id: str
    def __init__(self, patient_id: _Optional[str] = ...) -> None: ...

class ListPatientConsentsResponse(_message.Message):
    __slots__ = ("consents",)
    CONSENTS_FIELD_NUMBER: _ClassVar[int]
    consents: _containers.RepeatedCompositeFieldContainer[PatientConsent]
    def __init__(self, consents: _Optional[_Iterable[_Union[PatientConsent, _Mapping]]] = ...) -> None: ...

class ExportAccessHistoryRequest(_message.Message):
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

class ExportAccessHistoryResponse(_message.Message):
    __slots__ = ("bundle_json", "next_page_token")
    BUNDLE_JSON_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    bundle_json: str
    next_page_token: str
    def __init__(self, bundle_json: _Optional[str] = ..., next_page_token: _Optional[str] = ...) -> None: ...
