from carechain.common.v1 import common_pb2 as _common_pb2
from carechain.consent.v1 import policy_pb2 as _policy_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AckLevel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACK_LEVEL_UNSPECIFIED: _ClassVar[AckLevel]
    ACK_LEVEL_COMMITTED: _ClassVar[AckLevel]
    ACK_LEVEL_FINAL: _ClassVar[AckLevel]

class EvidenceKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVIDENCE_KIND_UNSPECIFIED: _ClassVar[EvidenceKind]
    EVIDENCE_KIND_CONFLICTING_HEADER: _ClassVar[EvidenceKind]
ACK_LEVEL_UNSPECIFIED: AckLevel
ACK_LEVEL_COMMITTED: AckLevel
ACK_LEVEL_FINAL: AckLevel
EVIDENCE_KIND_UNSPECIFIED: EvidenceKind
EVIDENCE_KIND_CONFLICTING_HEADER: EvidenceKind

class Transaction(_message.Message):
    __slots__ = ("body", "signer_id", "signature")
    BODY_FIELD_NUMBER: _ClassVar[int]
    SIGNER_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    body: bytes
    signer_id: str
    signature: bytes
    def __init__(self, body: _Optional[bytes] = ..., signer_id: _Optional[str] = ..., signature: _Optional[bytes] = ...) -> None: ...

class TransactionBody(_message.Message):
    __slots__ = ("chain_id", "nonce", "created_at_ms", "submitter_id", "register_principal", "register_record", "grant_consent", "revoke_consent", "anchor_audit_batch", "erase_records", "key_rotation", "register_delegate", "revoke_delegate", "break_glass_access", "deactivate_principal", "rotate_principal_key", "link_patient_identity", "unlink_patient_identity")
    CHAIN_ID_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    SUBMITTER_ID_FIELD_NUMBER: _ClassVar[int]
    REGISTER_PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    REGISTER_RECORD_FIELD_NUMBER: _ClassVar[int]
    GRANT_CONSENT_FIELD_NUMBER: _ClassVar[int]
    REVOKE_CONSENT_FIELD_NUMBER: _ClassVar[int]
    ANCHOR_AUDIT_BATCH_FIELD_NUMBER: _ClassVar[int]
    ERASE_RECORDS_FIELD_NUMBER: _ClassVar[int]
    KEY_ROTATION_FIELD_NUMBER: _ClassVar[int]
    REGISTER_DELEGATE_FIELD_NUMBER: _ClassVar[int]
    REVOKE_DELEGATE_FIELD_NUMBER: _ClassVar[int]
    BREAK_GLASS_ACCESS_FIELD_NUMBER: _ClassVar[int]
    DEACTIVATE_PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    ROTATE_PRINCIPAL_KEY_FIELD_NUMBER: _ClassVar[int]
    LINK_PATIENT_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    UNLINK_PATIENT_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    chain_id: str
    nonce: bytes
    created_at_ms: int
    submitter_id: str
    register_principal: RegisterPrincipal
    register_record: RegisterRecord
    grant_consent: GrantConsent
    revoke_consent: RevokeConsent
    anchor_audit_batch: AnchorAuditBatch
    erase_records: EraseRecords
    key_rotation: KeyRotation
    register_delegate: RegisterDelegate
    revoke_delegate: RevokeDelegate
    break_glass_access: BreakGlassAccess
    deactivate_principal: DeactivatePrincipal
    rotate_principal_key: RotatePrincipalKey
    link_patient_identity: LinkPatientIdentity
    unlink_patient_identity: UnlinkPatientIdentity
    def __init__(self, chain_id: _Optional[str] = ..., nonce: _Optional[bytes] = ..., created_at_ms: _Optional[int] = ..., submitter_id: _Optional[str] = ..., register_principal: _Optional[_Union[RegisterPrincipal, _Mapping]] = ..., register_record: _Optional[_Union[RegisterRecord, _Mapping]] = ..., grant_consent: _Optional[_Union[GrantConsent, _Mapping]] = ..., revoke_consent: _Optional[_Union[RevokeConsent, _Mapping]] = ..., anchor_audit_batch: _Optional[_Union[AnchorAuditBatch, _Mapping]] = ..., erase_records: _Optional[_Union[EraseRecords, _Mapping]] = ..., key_rotation: _Optional[_Union[KeyRotation, _Mapping]] = ..., register_delegate: _Optional[_Union[RegisterDelegate, _Mapping]] = ..., revoke_delegate: _Optional[_Union[RevokeDelegate, _Mapping]] = ..., break_glass_access: _Optional[_Union[BreakGlassAccess, _Mapping]] = ..., deactivate_principal: _Optional[_Union[DeactivatePrincipal, _Mapping]] = ..., rotate_principal_key: _Optional[_Union[RotatePrincipalKey, _Mapping]] = ..., link_patient_identity: _Optional[_Union[LinkPatientIdentity, _Mapping]] = ..., unlink_patient_identity: _Optional[_Union[UnlinkPatientIdentity, _Mapping]] = ...) -> None: ...

class RegisterPrincipal(_message.Message):
    __slots__ = ("principal_id", "kind", "public_key", "organization_id", "specialty", "specialty_attested_by")
    PRINCIPAL_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    ORGANIZATION_ID_FIELD_NUMBER: _ClassVar[int]
    SPECIALTY_FIELD_NUMBER: _ClassVar[int]
    SPECIALTY_ATTESTED_BY_FIELD_NUMBER: _ClassVar[int]
    principal_id: str
    kind: _common_pb2.PrincipalKind
    public_key: bytes
    organization_id: str
    specialty: str
    specialty_attested_by: str
    def __init__(self, principal_id: _Optional[str] = ..., kind: _Optional[_Union[_common_pb2.PrincipalKind, str]] = ..., public_key: _Optional[bytes] = ..., organization_id: _Optional[str] = ..., specialty: _Optional[str] = ..., specialty_attested_by: _Optional[str] = ...) -> None: ...

class DeactivatePrincipal(_message.Message):
    __slots__ = ("principal_id",)
    PRINCIPAL_ID_FIELD_NUMBER: _ClassVar[int]
    principal_id: str
    def __init__(self, principal_id: _Optional[str] = ...) -> None: ...

class RotatePrincipalKey(_message.Message):
    __slots__ = ("principal_id", "public_key")
    PRINCIPAL_ID_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    principal_id: str
    public_key: bytes
    def __init__(self, principal_id: _Optional[str] = ..., public_key: _Optional[bytes] = ...) -> None: ...

class RegisterRecord(_message.Message):
    __slots__ = ("record_id", "patient_id", "organization_id", "author_id", "resource_type", "categories", "content_sha256", "content_size", "key_name", "key_version", "version", "data_date_ms", "sealed_metadata", "segment_bytes", "previous_log_index", "previous_content_sha256")
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    ORGANIZATION_ID_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_ID_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_TYPE_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    CONTENT_SHA256_FIELD_NUMBER: _ClassVar[int]
    CONTENT_SIZE_FIELD_NUMBER: _ClassVar[int]
    KEY_NAME_FIELD_NUMBER: _ClassVar[int]
    KEY_VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DATA_DATE_MS_FIELD_NUMBER: _ClassVar[int]
    SEALED_METADATA_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_BYTES_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_LOG_INDEX_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_CONTENT_SHA256_FIELD_NUMBER: _ClassVar[int]
    record_id: str
    patient_id: str
    organization_id: str
    author_id: str
    resource_type: str
    categories: _containers.RepeatedScalarFieldContainer[_common_pb2.SensitivityCategory]
    content_sha256: str
    content_size: int
    key_name: str
    key_version: int
    version: int
    data_date_ms: int
    sealed_metadata: SealedData
    segment_bytes: int
    previous_log_index: int
    previous_content_sha256: str
    def __init__(self, record_id: _Optional[str] = ..., patient_id: _Optional[str] = ..., organization_id: _Optional[str] = ..., author_id: _Optional[str] = ..., resource_type: _Optional[str] = ..., categories: _Optional[_Iterable[_Union[_common_pb2.SensitivityCategory, str]]] = ..., content_sha256: _Optional[str] = ..., content_size: _Optional[int] = ..., key_name: _Optional[str] = ..., key_version: _Optional[int] = ..., version: _Optional[int] = ..., data_date_ms: _Optional[int] = ..., sealed_metadata: _Optional[_Union[SealedData, _Mapping]] = ..., segment_bytes: _Optional[int] = ..., previous_log_index: _Optional[int] = ..., previous_content_sha256: _Optional[str] = ...) -> None: ...

class RecordMetadata(_message.Message):
    __slots__ = ("resource_type", "categories", "data_date_ms", "author_id", "codes", "version_categories", "resource_categories")
    RESOURCE_TYPE_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    DATA_DATE_MS_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_ID_FIELD_NUMBER: _ClassVar[int]
    CODES_FIELD_NUMBER: _ClassVar[int]
    VERSION_CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    resource_type: str
    categories: _containers.RepeatedScalarFieldContainer[_common_pb2.SensitivityCategory]
    data_date_ms: int
    author_id: str
    codes: _containers.RepeatedScalarFieldContainer[str]
    version_categories: _containers.RepeatedScalarFieldContainer[_common_pb2.SensitivityCategory]
    resource_categories: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, resource_type: _Optional[str] = ..., categories: _Optional[_Iterable[_Union[_common_pb2.SensitivityCategory, str]]] = ..., data_date_ms: _Optional[int] = ..., author_id: _Optional[str] = ..., codes: _Optional[_Iterable[str]] = ..., version_categories: _Optional[_Iterable[_Union[_common_pb2.SensitivityCategory, str]]] = ..., resource_categories: _Optional[_Iterable[str]] = ...) -> None: ...

class SealedData(_message.Message):
    __slots__ = ("key_name", "wrapped_key", "ciphertext")
    KEY_NAME_FIELD_NUMBER: _ClassVar[int]
    WRAPPED_KEY_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    key_name: str
    wrapped_key: str
    ciphertext: bytes
    def __init__(self, key_name: _Optional[str] = ..., wrapped_key: _Optional[str] = ..., ciphertext: _Optional[bytes] = ...) -> None: ...

class GrantConsent(_message.Message):
    __slots__ = ("consent_id", "patient_id", "policy", "sealed_policy", "policy_attestation", "patient_jws")
    CONSENT_ID_FIELD_NUMBER: _ClassVar[int]
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    SEALED_POLICY_FIELD_NUMBER: _ClassVar[int]
    POLICY_ATTESTATION_FIELD_NUMBER: _ClassVar[int]
    PATIENT_JWS_FIELD_NUMBER: _ClassVar[int]
    consent_id: str
    patient_id: str
    policy: _policy_pb2.ConsentPolicy
    sealed_policy: SealedData
    policy_attestation: bytes
    patient_jws: bytes
    def __init__(self, consent_id: _Optional[str] = ..., patient_id: _Optional[str] = ..., policy: _Optional[_Union[_policy_pb2.ConsentPolicy, _Mapping]] = ..., sealed_policy: _Optional[_Union[SealedData, _Mapping]] = ..., policy_attestation: _Optional[bytes] = ..., patient_jws: _Optional[bytes] = ...) -> None: ...

class RevokeConsent(_message.Message):
    __slots__ = ("consent_id", "patient_id", "patient_jws", "revocation_json")
    CONSENT_ID_FIELD_NUMBER: _ClassVar[int]
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    PATIENT_JWS_FIELD_NUMBER: _ClassVar[int]
    REVOCATION_JSON_FIELD_NUMBER: _ClassVar[int]
    consent_id: str
    patient_id: str
    patient_jws: bytes
    revocation_json: bytes
    def __init__(self, consent_id: _Optional[str] = ..., patient_id: _Optional[str] = ..., patient_jws: _Optional[bytes] = ..., revocation_json: _Optional[bytes] = ...) -> None: ...

class RegisterDelegate(_message.Message):
    __slots__ = ("patient_id", "delegate_id", "relationship", "period")
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    DELEGATE_ID_FIELD_NUMBER: _ClassVar[int]
    RELATIONSHIP_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    patient_id: str
    delegate_id: str
    relationship: _policy_pb2.DelegateRelationship
    period: _common_pb2.Period
    def __init__(self, patient_id: _Optional[str] = ..., delegate_id: _Optional[str] = ..., relationship: _Optional[_Union[_policy_pb2.DelegateRelationship, str]] = ..., period: _Optional[_Union[_common_pb2.Period, _Mapping]] = ...) -> None: ...

class RevokeDelegate(_message.Message):
    __slots__ = ("patient_id", "delegate_id")
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    DELEGATE_ID_FIELD_NUMBER: _ClassVar[int]
    patient_id: str
    delegate_id: str
    def __init__(self, patient_id: _Optional[str] = ..., delegate_id: _Optional[str] = ...) -> None: ...

class BreakGlassAccess(_message.Message):
    __slots__ = ("actor_id", "patient_id", "started_at_ms", "expires_at_ms")
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    actor_id: str
    patient_id: str
    started_at_ms: int
    expires_at_ms: int
    def __init__(self, actor_id: _Optional[str] = ..., patient_id: _Optional[str] = ..., started_at_ms: _Optional[int] = ..., expires_at_ms: _Optional[int] = ...) -> None: ...

class AnchorAuditBatch(_message.Message):
    __slots__ = ("batch_number", "first_sequence", "last_sequence", "merkle_root")
    BATCH_NUMBER_FIELD_NUMBER: _ClassVar[int]
    FIRST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    MERKLE_ROOT_FIELD_NUMBER: _ClassVar[int]
    batch_number: int
    first_sequence: int
    last_sequence: int
    merkle_root: bytes
    def __init__(self, batch_number: _Optional[int] = ..., first_sequence: _Optional[int] = ..., last_sequence: _Optional[int] = ..., merkle_root: _Optional[bytes] = ...) -> None: ...

class EraseRecords(_message.Message):
    __slots__ = ("patient_id", "record_ids", "requested_by")
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    RECORD_IDS_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_BY_FIELD_NUMBER: _ClassVar[int]
    patient_id: str
    record_ids: _containers.RepeatedScalarFieldContainer[str]
    requested_by: str
    def __init__(self, patient_id: _Optional[str] = ..., record_ids: _Optional[_Iterable[str]] = ..., requested_by: _Optional[str] = ...) -> None: ...

class KeyRotation(_message.Message):
    __slots__ = ("patient_id", "key_version")
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_VERSION_FIELD_NUMBER: _ClassVar[int]
    patient_id: str
    key_version: int
    def __init__(self, patient_id: _Optional[str] = ..., key_version: _Optional[int] = ...) -> None: ...

class LinkPatientIdentity(_message.Message):
    __slots__ = ("network_patient_id", "linked_patient_id", "organization_id", "attestation_nonce", "attestation")
    NETWORK_PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    LINKED_PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    ORGANIZATION_ID_FIELD_NUMBER: _ClassVar[int]
    ATTESTATION_NONCE_FIELD_NUMBER: _ClassVar[int]
    ATTESTATION_FIELD_NUMBER: _ClassVar[int]
    network_patient_id: str
    linked_patient_id: str
    organization_id: str
    attestation_nonce: bytes
    attestation: bytes
    def __init__(self, network_patient_id: _Optional[str] = ..., linked_patient_id: _Optional[str] = ..., organization_id: _Optional[str] = ..., attestation_nonce: _Optional[bytes] = ..., attestation: _Optional[bytes] = ...) -> None: ...

class UnlinkPatientIdentity(_message.Message):
    __slots__ = ("network_patient_id", "linked_patient_id")
    NETWORK_PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    LINKED_PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    network_patient_id: str
    linked_patient_id: str
    def __init__(self, network_patient_id: _Optional[str] = ..., linked_patient_id: _Optional[str] = ...) -> None: ...

class SubmitTransactionRequest(_message.Message):
    __slots__ = ("transaction", "ack")
    TRANSACTION_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    transaction: Transaction
    ack: AckLevel
    def __init__(self, transaction: _Optional[_Union[Transaction, _Mapping]] = ..., ack: _Optional[_Union[AckLevel, str]] = ...) -> None: ...

class SubmitTransactionsRequest(_message.Message):
    __slots__ = ("transactions", "ack")
    TRANSACTIONS_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    transactions: _containers.RepeatedCompositeFieldContainer[Transaction]
    ack: AckLevel
    def __init__(self, transactions: _Optional[_Iterable[_Union[Transaction, _Mapping]]] = ..., ack: _Optional[_Union[AckLevel, str]] = ...) -> None: ...

class SubmitTransactionsResponse(_message.Message):
    __slots__ = ("verdicts",)
    VERDICTS_FIELD_NUMBER: _ClassVar[int]
    verdicts: _containers.RepeatedCompositeFieldContainer[TransactionVerdict]
    def __init__(self, verdicts: _Optional[_Iterable[_Union[TransactionVerdict, _Mapping]]] = ...) -> None: ...

class TransactionVerdict(_message.Message):
    __slots__ = ("response", "code", "message")
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    response: SubmitTransactionResponse
    code: int
    message: str
    def __init__(self, response: _Optional[_Union[SubmitTransactionResponse, _Mapping]] = ..., code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class SubmitTransactionResponse(_message.Message):
    __slots__ = ("transaction_hash", "height", "index", "log_index", "valid", "reason", "final")
    TRANSACTION_HASH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    LOG_INDEX_FIELD_NUMBER: _ClassVar[int]
    VALID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    transaction_hash: str
    height: int
    index: int
    log_index: int
    valid: bool
    reason: str
    final: bool
    def __init__(self, transaction_hash: _Optional[str] = ..., height: _Optional[int] = ..., index: _Optional[int] = ..., log_index: _Optional[int] = ..., valid: _Optional[bool] = ..., reason: _Optional[str] = ..., final: _Optional[bool] = ...) -> None: ...

class BlockHeader(_message.Message):
    __slots__ = ("chain_id", "height", "previous_header_hash", "transactions_root", "results_hash", "log_size", "log_root", "timestamp_ms")
    CHAIN_ID_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_HEADER_HASH_FIELD_NUMBER: _ClassVar[int]
    TRANSACTIONS_ROOT_FIELD_NUMBER: _ClassVar[int]
    RESULTS_HASH_FIELD_NUMBER: _ClassVar[int]
    LOG_SIZE_FIELD_NUMBER: _ClassVar[int]
    LOG_ROOT_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    chain_id: str
    height: int
    previous_header_hash: bytes
    transactions_root: bytes
    results_hash: bytes
    log_size: int
    log_root: bytes
    timestamp_ms: int
    def __init__(self, chain_id: _Optional[str] = ..., height: _Optional[int] = ..., previous_header_hash: _Optional[bytes] = ..., transactions_root: _Optional[bytes] = ..., results_hash: _Optional[bytes] = ..., log_size: _Optional[int] = ..., log_root: _Optional[bytes] = ..., timestamp_ms: _Optional[int] = ...) -> None: ...

class TransactionResult(_message.Message):
    __slots__ = ("valid", "reason")
    VALID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    valid: bool
    reason: str
    def __init__(self, valid: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class ValidatorSignature(_message.Message):
    __slots__ = ("validator_id", "signature")
    VALIDATOR_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    validator_id: str
    signature: bytes
    def __init__(self, validator_id: _Optional[str] = ..., signature: _Optional[bytes] = ...) -> None: ...

class Block(_message.Message):
    __slots__ = ("header", "transactions", "results", "signatures", "certificate")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    TRANSACTIONS_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    SIGNATURES_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    header: bytes
    transactions: _containers.RepeatedCompositeFieldContainer[Transaction]
    results: _containers.RepeatedCompositeFieldContainer[TransactionResult]
    signatures: _containers.RepeatedCompositeFieldContainer[ValidatorSignature]
    certificate: QuorumCertificate
    def __init__(self, header: _Optional[bytes] = ..., transactions: _Optional[_Iterable[_Union[Transaction, _Mapping]]] = ..., results: _Optional[_Iterable[_Union[TransactionResult, _Mapping]]] = ..., signatures: _Optional[_Iterable[_Union[ValidatorSignature, _Mapping]]] = ..., certificate: _Optional[_Union[QuorumCertificate, _Mapping]] = ...) -> None: ...

class QuorumCertificate(_message.Message):
    __slots__ = ("height", "header_hash", "signatures")
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    HEADER_HASH_FIELD_NUMBER: _ClassVar[int]
    SIGNATURES_FIELD_NUMBER: _ClassVar[int]
    height: int
    header_hash: bytes
    signatures: _containers.RepeatedCompositeFieldContainer[ValidatorSignature]
    def __init__(self, height: _Optional[int] = ..., header_hash: _Optional[bytes] = ..., signatures: _Optional[_Iterable[_Union[ValidatorSignature, _Mapping]]] = ...) -> None: ...

class HeaderVote(_message.Message):
    __slots__ = ("header", "signature")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    header: bytes
    signature: ValidatorSignature
    def __init__(self, header: _Optional[bytes] = ..., signature: _Optional[_Union[ValidatorSignature, _Mapping]] = ...) -> None: ...

class Evidence(_message.Message):
    __slots__ = ("kind", "height", "validator_id", "vote", "expected_header_hash", "reporter_id", "observed_at_ms")
    KIND_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    VALIDATOR_ID_FIELD_NUMBER: _ClassVar[int]
    VOTE_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_HEADER_HASH_FIELD_NUMBER: _ClassVar[int]
    REPORTER_ID_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    kind: EvidenceKind
    height: int
    validator_id: str
    vote: HeaderVote
    expected_header_hash: bytes
    reporter_id: str
    observed_at_ms: int
    def __init__(self, kind: _Optional[_Union[EvidenceKind, str]] = ..., height: _Optional[int] = ..., validator_id: _Optional[str] = ..., vote: _Optional[_Union[HeaderVote, _Mapping]] = ..., expected_header_hash: _Optional[bytes] = ..., reporter_id: _Optional[str] = ..., observed_at_ms: _Optional[int] = ...) -> None: ...

class GetChainHeadRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ChainHead(_message.Message):
    __slots__ = ("header", "header_hash", "final_height", "validator_id")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    HEADER_HASH_FIELD_NUMBER: _ClassVar[int]
    FINAL_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    VALIDATOR_ID_FIELD_NUMBER: _ClassVar[int]
    header: BlockHeader
    header_hash: bytes
    final_height: int
    validator_id: str
    def __init__(self, header: _Optional[_Union[BlockHeader, _Mapping]] = ..., header_hash: _Optional[bytes] = ..., final_height: _Optional[int] = ..., validator_id: _Optional[str] = ...) -> None: ...

class GetBlockRequest(_message.Message):
    __slots__ = ("height",)
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    height: int
    def __init__(self, height: _Optional[int] = ...) -> None: ...

class ListTransactionsRequest(_message.Message):
    __slots__ = ("from_log_index", "limit", "page_token")
    FROM_LOG_INDEX_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    from_log_index: int
    limit: int
    page_token: str
    def __init__(self, from_log_index: _Optional[int] = ..., limit: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class LoggedTransaction(_message.Message):
    __slots__ = ("log_index", "height", "transaction", "result")
    LOG_INDEX_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    TRANSACTION_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    log_index: int
    height: int
    transaction: Transaction
    result: TransactionResult
    def __init__(self, log_index: _Optional[int] = ..., height: _Optional[int] = ..., transaction: _Optional[_Union[Transaction, _Mapping]] = ..., result: _Optional[_Union[TransactionResult, _Mapping]] = ...) -> None: ...

class ListTransactionsResponse(_message.Message):
    __slots__ = ("transactions", "log_size", "next_page_token")
    TRANSACTIONS_FIELD_NUMBER: _ClassVar[int]
    LOG_SIZE_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    transactions: _containers.RepeatedCompositeFieldContainer[LoggedTransaction]
    log_size: int
    next_page_token: str
    def __init__(self, transactions: _Optional[_Iterable[_Union[LoggedTransaction, _Mapping]]] = ..., log_size: _Optional[int] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetRecordEntryRequest(_message.Message):
    __slots__ = ("record_id", "version")
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    record_id: str
    version: int
    def __init__(self, record_id: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class RecordEntry(_message.Message):
    __slots__ = ("record", "log_index", "erased", "latest_version", "erased_log_index", "erased_at_ms", "registered_at_ms", "last_updated_ms")
    RECORD_FIELD_NUMBER: _ClassVar[int]
    LOG_INDEX_FIELD_NUMBER: _ClassVar[int]
    ERASED_FIELD_NUMBER: _ClassVar[int]
    LATEST_VERSION_FIELD_NUMBER: _ClassVar[int]
    ERASED_LOG_INDEX_FIELD_NUMBER: _ClassVar[int]
    ERASED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    LAST_UPDATED_MS_FIELD_NUMBER: _ClassVar[int]
    record: RegisterRecord
    log_index: int
    erased: bool
    latest_version: int
    erased_log_index: int
    erased_at_ms: int
    registered_at_ms: int
    last_updated_ms: int
    def __init__(self, record: _Optional[_Union[RegisterRecord, _Mapping]] = ..., log_index: _Optional[int] = ..., erased: _Optional[bool] = ..., latest_version: _Optional[int] = ..., erased_log_index: _Optional[int] = ..., erased_at_ms: _Optional[int] = ..., registered_at_ms: _Optional[int] = ..., last_updated_ms: _Optional[int] = ...) -> None: ...

class ListPatientRecordsRequest(_message.Message):
    __slots__ = ("patient_id", "page_size", "page_token", "from_log_index")
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    FROM_LOG_INDEX_FIELD_NUMBER: _ClassVar[int]
    patient_id: str
    page_size: int
    page_token: str
    from_log_index: int
    def __init__(self, patient_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., from_log_index: _Optional[int] = ...) -> None: ...

class ListPatientRecordsResponse(_message.Message):
    __slots__ = ("entries", "next_page_token")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[RecordEntry]
    next_page_token: str
    def __init__(self, entries: _Optional[_Iterable[_Union[RecordEntry, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetInclusionProofRequest(_message.Message):
    __slots__ = ("log_index", "tree_size")
    LOG_INDEX_FIELD_NUMBER: _ClassVar[int]
    TREE_SIZE_FIELD_NUMBER: _ClassVar[int]
    log_index: int
    tree_size: int
    def __init__(self, log_index: _Optional[int] = ..., tree_size: _Optional[int] = ...) -> None: ...

class InclusionProof(_message.Message):
    __slots__ = ("log_index", "tree_size", "hashes", "root", "leaf")
    LOG_INDEX_FIELD_NUMBER: _ClassVar[int]
    TREE_SIZE_FIELD_NUMBER: _ClassVar[int]
    HASHES_FIELD_NUMBER: _ClassVar[int]
    ROOT_FIELD_NUMBER: _ClassVar[int]
    LEAF_FIELD_NUMBER: _ClassVar[int]
    log_index: int
    tree_size: int
    hashes: _containers.RepeatedScalarFieldContainer[bytes]
    root: bytes
    leaf: bytes
    def __init__(self, log_index: _Optional[int] = ..., tree_size: _Optional[int] = ..., hashes: _Optional[_Iterable[bytes]] = ..., root: _Optional[bytes] = ..., leaf: _Optional[bytes] = ...) -> None: ...

class GetConsistencyProofRequest(_message.Message):
    __slots__ = ("first_size", "second_size")
    FIRST_SIZE_FIELD_NUMBER: _ClassVar[int]
    SECOND_SIZE_FIELD_NUMBER: _ClassVar[int]
    first_size: int
    second_size: int
    def __init__(self, first_size: _Optional[int] = ..., second_size: _Optional[int] = ...) -> None: ...

class ConsistencyProof(_message.Message):
    __slots__ = ("first_size", "second_size", "hashes", "first_root", "second_root")
    FIRST_SIZE_FIELD_NUMBER: _ClassVar[int]
    SECOND_SIZE_FIELD_NUMBER: _ClassVar[int]
    HASHES_FIELD_NUMBER: _ClassVar[int]
    FIRST_ROOT_FIELD_NUMBER: _ClassVar[int]
    SECOND_ROOT_FIELD_NUMBER: _ClassVar[int]
    first_size: int
    second_size: int
    hashes: _containers.RepeatedScalarFieldContainer[bytes]
    first_root: bytes
    second_root: bytes
    def __init__(self, first_size: _Optional[int] = ..., second_size: _Optional[int] = ..., hashes: _Optional[_Iterable[bytes]] = ..., first_root: _Optional[bytes] = ..., second_root: _Optional[bytes] = ...) -> None: ...

class VerifyChainRequest(_message.Message):
    __slots__ = ("trusted_checkpoint",)
    TRUSTED_CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    trusted_checkpoint: Checkpoint
    def __init__(self, trusted_checkpoint: _Optional[_Union[Checkpoint, _Mapping]] = ...) -> None: ...

class VerifyChainResponse(_message.Message):
    __slots__ = ("ok", "blocks_checked", "first_bad_height", "problem", "final_height", "evidence_count", "from_height")
    OK_FIELD_NUMBER: _ClassVar[int]
    BLOCKS_CHECKED_FIELD_NUMBER: _ClassVar[int]
    FIRST_BAD_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    PROBLEM_FIELD_NUMBER: _ClassVar[int]
    FINAL_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_COUNT_FIELD_NUMBER: _ClassVar[int]
    FROM_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    blocks_checked: int
    first_bad_height: int
    problem: str
    final_height: int
    evidence_count: int
    from_height: int
    def __init__(self, ok: _Optional[bool] = ..., blocks_checked: _Optional[int] = ..., first_bad_height: _Optional[int] = ..., problem: _Optional[str] = ..., final_height: _Optional[int] = ..., evidence_count: _Optional[int] = ..., from_height: _Optional[int] = ...) -> None: ...

class GetCheckpointRequest(_message.Message):
    __slots__ = ("height",)
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    height: int
    def __init__(self, height: _Optional[int] = ...) -> None: ...

class Checkpoint(_message.Message):
    __slots__ = ("chain_id", "height", "tree_size", "root", "timestamp_ms", "header", "certificate")
    CHAIN_ID_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    TREE_SIZE_FIELD_NUMBER: _ClassVar[int]
    ROOT_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    chain_id: str
    height: int
    tree_size: int
    root: bytes
    timestamp_ms: int
    header: bytes
    certificate: QuorumCertificate
    def __init__(self, chain_id: _Optional[str] = ..., height: _Optional[int] = ..., tree_size: _Optional[int] = ..., root: _Optional[bytes] = ..., timestamp_ms: _Optional[int] = ..., header: _Optional[bytes] = ..., certificate: _Optional[_Union[QuorumCertificate, _Mapping]] = ...) -> None: ...

class GetEvidenceRequest(_message.Message):
    __slots__ = ("from_height", "page_size", "page_token")
    FROM_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    from_height: int
    page_size: int
    page_token: str
    def __init__(self, from_height: _Optional[int] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class GetEvidenceResponse(_message.Message):
    __slots__ = ("evidence", "next_page_token")
    EVIDENCE_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    evidence: _containers.RepeatedCompositeFieldContainer[Evidence]
    next_page_token: str
    def __init__(self, evidence: _Optional[_Iterable[_Union[Evidence, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class WatchBlocksRequest(_message.Message):
    __slots__ = ("from_height", "heartbeat_ms")
    FROM_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_MS_FIELD_NUMBER: _ClassVar[int]
    from_height: int
    heartbeat_ms: int
    def __init__(self, from_height: _Optional[int] = ..., heartbeat_ms: _Optional[int] = ...) -> None: ...

class WatchBlocksResponse(_message.Message):
    __slots__ = ("blocks", "final_height")
    BLOCKS_FIELD_NUMBER: _ClassVar[int]
    FINAL_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    blocks: _containers.RepeatedCompositeFieldContainer[Block]
    final_height: int
    def __init__(self, blocks: _Optional[_Iterable[_Union[Block, _Mapping]]] = ..., final_height: _Optional[int] = ...) -> None: ...
