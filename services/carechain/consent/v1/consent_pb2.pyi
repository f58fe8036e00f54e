from carechain.common.v1 import common_pb2 as _common_pb2
from carechain.consent.v1 import policy_pb2 as _policy_pb2
from carechain.ledger.v1 import ledger_pb2 as _ledger_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ConsentStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONSENT_STATUS_UNSPECIFIED: _ClassVar[ConsentStatus]
    CONSENT_STATUS_ACTIVE: _ClassVar[ConsentStatus]
    CONSENT_STATUS_REVOKED: _ClassVar[ConsentStatus]

class DecisionEffect(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DECISION_EFFECT_UNSPECIFIED: _ClassVar[DecisionEffect]
    DECISION_EFFECT_PERMIT: _ClassVar[DecisionEffect]
    DECISION_EFFECT_DENY: _ClassVar[DecisionEffect]

class DelegationStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DELEGATION_STATUS_UNSPECIFIED: _ClassVar[DelegationStatus]
    DELEGATION_STATUS_ACTIVE: _ClassVar[DelegationStatus]
    DELEGATION_STATUS_REVOKED: _ClassVar[DelegationStatus]
CONSENT_STATUS_UNSPECIFIED: ConsentStatus
CONSENT_STATUS_ACTIVE: ConsentStatus
CONSENT_STATUS_REVOKED: ConsentStatus
DECISION_EFFECT_UNSPECIFIED: DecisionEffect
DECISION_EFFECT_PERMIT: DecisionEffect
DECISION_EFFECT_DENY: DecisionEffect
DELEGATION_STATUS_UNSPECIFIED: DelegationStatus
DELEGATION_STATUS_ACTIVE: DelegationStatus
DELEGATION_STATUS_REVOKED: DelegationStatus

class SealPolicyRequest(_message.Message):
    __slots__ = ("patient_id", "consent_id", "policy")
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    CONSENT_ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    patient_id: str
    consent_id: str
    policy: _policy_pb2.ConsentPolicy
    def __init__(self, patient_id: _Optional[str] = ..., consent_id: _Optional[str] = ..., policy: _Optional[_Union[_policy_pb2.ConsentPolicy, _Mapping]] = ...) -> None: ...

class SealPolicyResponse(_message.Message):
    __slots__ = ("sealed_policy", "policy_attestation")
    SEALED_POLICY_FIELD_NUMBER: _ClassVar[int]
    POLICY_ATTESTATION_FIELD_NUMBER: _ClassVar[int]
    sealed_policy: _ledger_pb2.SealedData
    policy_attestation: bytes
    def __init__(self, sealed_policy: _Optional[_Union[_ledger_pb2.SealedData, _Mapping]] = ..., policy_attestation: _Optional[bytes] = ...) -> None: ...

class GrantConsentRequest(_message.Message):
    __slots__ = ("transaction",)
    TRANSACTION_FIELD_NUMBER: _ClassVar[int]
    transaction: _ledger_pb2.Transaction
    def __init__(self, transaction: _Optional[_Union[_ledger_pb2.Transaction, _Mapping]] = ...) -> None: ...

class RevokeConsentRequest(_message.Message):
    __slots__ = ("transaction",)
    TRANSACTION_FIELD_NUMBER: _ClassVar[int]
    transaction: _ledger_pb2.Transaction
    def __init__(self, transaction: _Optional[_Union[_ledger_pb2.Transaction, _Mapping]] = ...) -> None: ...

class ConsentRecord(_message.Message):
    __slots__ = ("consent_id", "patient_id", "policy", "status", "granted_log_index", "revoked_log_index", "granted_at_ms", "granted_by")
    CONSENT_ID_FIELD_NUMBER: _ClassVar[int]
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    GRANTED_LOG_INDEX_FIELD_NUMBER: _ClassVar[int]
    REVOKED_LOG_INDEX_FIELD_NUMBER: _ClassVar[int]
    GRANTED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    GRANTED_BY_FIELD_NUMBER: _ClassVar[int]
    consent_id: str
    patient_id: str
    policy: _policy_pb2.ConsentPolicy
    status: ConsentStatus
    granted_log_index: int
    revoked_log_index: int
    granted_at_ms: int
    granted_by: str
    def __init__(self, consent_id: _Optional[str] = ..., patient_id: _Optional[str] = ..., policy: _Optional[_Union[_policy_pb2.ConsentPolicy, _Mapping]] = ..., status: _Optional[_Union[ConsentStatus, str]] = ..., granted_log_index: _Optional[int] = ..., revoked_log_index: _Optional[int] = ..., granted_at_ms: _Optional[int] = ..., granted_by: _Optional[str] = ...) -> None: ...

class ListConsentsRequest(_message.Message):
    __slots__ = ("patient_id",)
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    patient_id: str
    def __init__(self, patient_id: _Optional[str] = ...) -> None: ...

class ListConsentsResponse(_message.Message):
    __slots__ = ("consents",)
    CONSENTS_FIELD_NUMBER: _ClassVar[int]
    consents: _containers.RepeatedCompositeFieldContainer[ConsentRecord]
    def __init__(self, consents: _Optional[_Iterable[_Union[ConsentRecord, _Mapping]]] = ...) -> None: ...

class DecideRequest(_message.Message):
    __slots__ = ("actor_id", "record_id", "purpose", "action", "break_glass", "break_glass_reason")
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    BREAK_GLASS_FIELD_NUMBER: _ClassVar[int]
    BREAK_GLASS_REASON_FIELD_NUMBER: _ClassVar[int]
    actor_id: str
    record_id: str
    purpose: _common_pb2.PurposeOfUse
    action: _common_pb2.ConsentAction
    break_glass: bool
    break_glass_reason: str
    def __init__(self, actor_id: _Optional[str] = ..., record_id: _Optional[str] = ..., purpose: _Optional[_Union[_common_pb2.PurposeOfUse, str]] = ..., action: _Optional[_Union[_common_pb2.ConsentAction, str]] = ..., break_glass: _Optional[bool] = ..., break_glass_reason: _Optional[str] = ...) -> None: ...

class Decision(_message.Message):
    __slots__ = ("effect", "reason", "consent_id", "provision_path", "decision_token", "expires_at_ms", "patient_id", "decision_id", "break_glass", "break_glass_expires_at_ms", "record_version", "network_patient_id", "record_erased")
    EFFECT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CONSENT_ID_FIELD_NUMBER: _ClassVar[int]
    PROVISION_PATH_FIELD_NUMBER: _ClassVar[int]
    DECISION_TOKEN_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    BREAK_GLASS_FIELD_NUMBER: _ClassVar[int]
    BREAK_GLASS_EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    RECORD_VERSION_FIELD_NUMBER: _ClassVar[int]
    NETWORK_PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    RECORD_ERASED_FIELD_NUMBER: _ClassVar[int]
    effect: DecisionEffect
    reason: str
    consent_id: str
    provision_path: str
    decision_token: str
    expires_at_ms: int
    patient_id: str
    decision_id: str
    break_glass: bool
    break_glass_expires_at_ms: int
    record_version: int
    network_patient_id: str
    record_erased: bool
    def __init__(self, effect: _Optional[_Union[DecisionEffect, str]] = ..., reason: _Optional[str] = ..., consent_id: _Optional[str] = ..., provision_path: _Optional[str] = ..., decision_token: _Optional[str] = ..., expires_at_ms: _Optional[int] = ..., patient_id: _Optional[str] = ..., decision_id: _Optional[str] = ..., break_glass: _Optional[bool] = ..., break_glass_expires_at_ms: _Optional[int] = ..., record_version: _Optional[int] = ..., network_patient_id: _Optional[str] = ..., record_erased: _Optional[bool] = ...) -> None: ...

class DecideManyRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[DecideRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[DecideRequest, _Mapping]]] = ...) -> None: ...

class DecideError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class DecideResult(_message.Message):
    __slots__ = ("decision", "error")
    DECISION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    decision: Decision
    error: DecideError
    def __init__(self, decision: _Optional[_Union[Decision, _Mapping]] = ..., error: _Optional[_Union[DecideError, _Mapping]] = ...) -> None: ...

class DecideManyResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[DecideResult]
    def __init__(self, results: _Optional[_Iterable[_Union[DecideResult, _Mapping]]] = ...) -> None: ...

class CheckDecisionRequest(_message.Message):
    __slots__ = ("decision_token",)
    DECISION_TOKEN_FIELD_NUMBER: _ClassVar[int]
    decision_token: str
    def __init__(self, decision_token: _Optional[str] = ...) -> None: ...

class CheckDecisionResponse(_message.Message):
    __slots__ = ("permitted", "reason")
    PERMITTED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    permitted: bool
    reason: str
    def __init__(self, permitted: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class CheckDecisionsRequest(_message.Message):
    __slots__ = ("decision_tokens",)
    DECISION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    decision_tokens: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, decision_tokens: _Optional[_Iterable[str]] = ...) -> None: ...

class CheckDecisionsResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[CheckDecisionResponse]
    def __init__(self, results: _Optional[_Iterable[_Union[CheckDecisionResponse, _Mapping]]] = ...) -> None: ...

class ExportConsentRequest(_message.Message):
    __slots__ = ("consent_id",)
    CONSENT_ID_FIELD_NUMBER: _ClassVar[int]
    consent_id: str
    def __init__(self, consent_id: _Optional[str] = ...) -> None: ...

class ExportConsentResponse(_message.Message):
    __slots__ = ("consent_json",)
    CONSENT_JSON_FIELD_NUMBER: _ClassVar[int]
    consent_json: str
    def __init__(self, consent_json: _Optional[str] = ...) -> None: ...

class RegisterDelegateRequest(_message.Message):
    __slots__ = ("transaction",)
    TRANSACTION_FIELD_NUMBER: _ClassVar[int]
    transaction: _ledger_pb2.Transaction
    def __init__(self, transaction: _Optional[_Union[_ledger_pb2.Transaction, _Mapping]] = ...) -> None: ...

class RevokeDelegateRequest(_message.Message):
    __slots__ = ("transaction",)
    TRANSACTION_FIELD_NUMBER: _ClassVar[int]
    transaction: _ledger_pb2.Transaction
    def __init__(self, transaction: _Optional[_Union[_ledger_pb2.Transaction, _Mapping]] = ...) -> None: ...

class Delegation(_message.Message):
    __slots__ = ("patient_id", "delegate_id", "relationship", "period", "status", "registered_log_index", "revoked_log_index")
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    DELEGATE_ID_FIELD_NUMBER: _ClassVar[int]
    RELATIONSHIP_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_LOG_INDEX_FIELD_NUMBER: _ClassVar[int]
    REVOKED_LOG_INDEX_FIELD_NUMBER: _ClassVar[int]
    patient_id: str
    delegate_id: str
    relationship: _policy_pb2.DelegateRelationship
    period: _common_pb2.Period
    status: DelegationStatus
    registered_log_index: int
    revoked_log_index: int
    def __init__(self, patient_id: _Optional[str] = ..., delegate_id: _Optional[str] = ..., relationship: _Optional[_Union[_policy_pb2.DelegateRelationship, str]] = ..., period: _Optional[_Union[_common_pb2.Period, _Mapping]] = ..., status: _Optional[_Union[DelegationStatus, str]] = ..., registered_log_index: _Optional[int] = ..., revoked_log_index: _Optional[int] = ...) -> None: ...

class ListDelegatesRequest(_message.Message):
    __slots__ = ("patient_id",)
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    patient_id: str
    def __init__(self, patient_id: _Optional[str] = ...) -> None: ...

class ListDelegatesResponse(_message.Message):
    __slots__ = ("delegations",)
    DELEGATIONS_FIELD_NUMBER: _ClassVar[int]
    delegations: _containers.RepeatedCompositeFieldContainer[Delegation]
    def __init__(self, delegations: _Optional[_Iterable[_Union[Delegation, _Mapping]]] = ...) -> None: ...

class SubmitFhirConsentRequest(_message.Message):
    __slots__ = ("consent_json", "consent_jws", "caller_id")
    CONSENT_JSON_FIELD_NUMBER: _ClassVar[int]
    CONSENT_JWS_FIELD_NUMBER: _ClassVar[int]
    CALLER_ID_FIELD_NUMBER: _ClassVar[int]
    consent_json: bytes
    consent_jws: str
    caller_id: str
    def __init__(self, consent_json: _Optional[bytes] = ..., consent_jws: _Optional[str] = ..., caller_id: _Optional[str] = ...) -> None: ...
