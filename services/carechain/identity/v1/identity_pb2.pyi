from carechain.common.v1 import common_pb2 as _common_pb2
from carechain.ledger.v1 import ledger_pb2 as _ledger_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LinkPatientRequest(_message.Message):
    __slots__ = ("transaction",)
    TRANSACTION_FIELD_NUMBER: _ClassVar[int]
    transaction: _ledger_pb2.Transaction
    def __init__(self, transaction: _Optional[_Union[_ledger_pb2.Transaction, _Mapping]] = ...) -> None: ...

class UnlinkPatientRequest(_message.Message):
    __slots__ = ("transaction",)
    TRANSACTION_FIELD_NUMBER: _ClassVar[int]
    transaction: _ledger_pb2.Transaction
    def __init__(self, transaction: _Optional[_Union[_ledger_pb2.Transaction, _Mapping]] = ...) -> None: ...

class LinkPatientResponse(_message.Message):
    __slots__ = ("ledger_log_index", "rewrapped")
    LEDGER_LOG_INDEX_FIELD_NUMBER: _ClassVar[int]
    REWRAPPED_FIELD_NUMBER: _ClassVar[int]
    ledger_log_index: int
    rewrapped: int
    def __init__(self, ledger_log_index: _Optional[int] = ..., rewrapped: _Optional[int] = ...) -> None: ...

class ResolvePatientRequest(_message.Message):
    __slots__ = ("fhir_patient_id",)
    FHIR_PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    fhir_patient_id: str
    def __init__(self, fhir_patient_id: _Optional[str] = ...) -> None: ...

class ResolvePatientResponse(_message.Message):
    __slots__ = ("network_patient_id", "organization_patient_ids")
    NETWORK_PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    ORGANIZATION_PATIENT_IDS_FIELD_NUMBER: _ClassVar[int]
    network_patient_id: str
    organization_patient_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, network_patient_id: _Optional[str] = ..., organization_patient_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class DeactivatePrincipalRequest(_message.Message):
    __slots__ = ("principal_id",)
    PRINCIPAL_ID_FIELD_NUMBER: _ClassVar[int]
    principal_id: str
    def __init__(self, principal_id: _Optional[str] = ...) -> None: ...

class RotatePrincipalKeyRequest(_message.Message):
    __slots__ = ("principal_id", "public_key")
    PRINCIPAL_ID_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    principal_id: str
    public_key: bytes
    def __init__(self, principal_id: _Optional[str] = ..., public_key: _Optional[bytes] = ...) -> None: ...

class RegisterPrincipalRequest(_message.Message):
    __slots__ = ("kind", "display_name", "public_key", "organization_id", "specialty", "fhir_patient_id")
    KIND_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    ORGANIZATION_ID_FIELD_NUMBER: _ClassVar[int]
    SPECIALTY_FIELD_NUMBER: _ClassVar[int]
    FHIR_PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    kind: _common_pb2.PrincipalKind
    display_name: str
    public_key: bytes
    organization_id: str
    specialty: str
    fhir_patient_id: str
    def __init__(self, kind: _Optional[_Union[_common_pb2.PrincipalKind, str]] = ..., display_name: _Optional[str] = ..., public_key: _Optional[bytes] = ..., organization_id: _Optional[str] = ..., specialty: _Optional[str] = ..., fhir_patient_id: _Optional[str] = ...) -> None: ...

class Principal(_message.Message):
    __slots__ = ("principal_id", "kind", "display_name", "public_key", "organization_id", "specialty", "fhir_patient_id", "ledger_log_index")
    PRINCIPAL_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    ORGANIZATION_ID_FIELD_NUMBER: _ClassVar[int]
    SPECIALTY_FIELD_NUMBER: _ClassVar[int]
    FHIR_PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    LEDGER_LOG_INDEX_FIELD_NUMBER: _ClassVar[int]
    principal_id: str
    kind: _common_pb2.PrincipalKind
    display_name: str
    public_key: bytes
    organization_id: str
    specialty: str
    fhir_patient_id: str
    ledger_log_index: int
    def __init__(self, principal_id: _Optional[str] = ..., kind: _Optional[_Union[_common_pb2.PrincipalKind, str]] = ..., display_name: _Optional[str] = ..., public_key: _Optional[bytes] = ..., organization_id: _Optional[str] = ..., specialty: _Optional[str] = ..., fhir_patient_id: _Optional[str] = ..., ledger_log_index: _Optional[int] = ...) -> None: ...

class GetPrincipalRequest(_message.Message):
    __slots__ = ("principal_id",)
    PRINCIPAL_ID_FIELD_NUMBER: _ClassVar[int]
    principal_id: str
    def __init__(self, principal_id: _Optional[str] = ...) -> None: ...

class CreateChallengeRequest(_message.Message):
    __slots__ = ("principal_id",)
    PRINCIPAL_ID_FIELD_NUMBER: _ClassVar[int]
    principal_id: str
    def __init__(self, principal_id: _Optional[str] = ...) -> None: ...

class Challenge(_message.Message):
    __slots__ = ("challenge", "expires_at_ms")
    CHALLENGE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    challenge: bytes
    expires_at_ms: int
    def __init__(self, challenge: _Optional[bytes] = ..., expires_at_ms: _Optional[int] = ...) -> None: ...

class IssueTokenRequest(_message.Message):
    __slots__ = ("principal_id", "challenge", "audience", "signature")
    PRINCIPAL_ID_FIELD_NUMBER: _ClassVar[int]
    CHALLENGE_FIELD_NUMBER: _ClassVar[int]
    AUDIENCE_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    principal_id: str
    challenge: bytes
    audience: str
    signature: bytes
    def __init__(self, principal_id: _Optional[str] = ..., challenge: _Optional[bytes] = ..., audience: _Optional[str] = ..., signature: _Optional[bytes] = ...) -> None: ...

class AccessToken(_message.Message):
    __slots__ = ("token", "expires_at_ms")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    token: str
    expires_at_ms: int
    def __init__(self, token: _Optional[str] = ..., expires_at_ms: _Optional[int] = ...) -> None: ...

class GetTokenIssuerKeysRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TokenIssuerKeys(_message.Message):
    __slots__ = ("keys",)
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[IssuerKey]
    def __init__(self, keys: _Optional[_Iterable[_Union[IssuerKey, _Mapping]]] = ...) -> None: ...

class IssuerKey(_message.Message):
    __slots__ = ("key_id", "public_key")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    public_key: bytes
    def __init__(self, key_id: _Optional[str] = ..., public_key: _Optional[bytes] = ...) -> None: ...

class GenerateDataKeyRequest(_message.Message):
    __slots__ = ("patient_id", "record_id")
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    patient_id: str
    record_id: str
    def __init__(self, patient_id: _Optional[str] = ..., record_id: _Optional[str] = ...) -> None: ...

class DataKey(_message.Message):
    __slots__ = ("plaintext_key", "key_ref")
    PLAINTEXT_KEY_FIELD_NUMBER: _ClassVar[int]
    KEY_REF_FIELD_NUMBER: _ClassVar[int]
    plaintext_key: bytes
    key_ref: KeyReference
    def __init__(self, plaintext_key: _Optional[bytes] = ..., key_ref: _Optional[_Union[KeyReference, _Mapping]] = ...) -> None: ...

class KeyReference(_message.Message):
    __slots__ = ("key_name", "key_version", "record_id")
    KEY_NAME_FIELD_NUMBER: _ClassVar[int]
    KEY_VERSION_FIELD_NUMBER: _ClassVar[int]
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    key_name: str
    key_version: int
    record_id: str
    def __init__(self, key_name: _Optional[str] = ..., key_version: _Optional[int] = ..., record_id: _Optional[str] = ...) -> None: ...

class ReleaseDataKeyRequest(_message.Message):
    __slots__ = ("record_id", "decision_token")
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    DECISION_TOKEN_FIELD_NUMBER: _ClassVar[int]
    record_id: str
    decision_token: str
    def __init__(self, record_id: _Optional[str] = ..., decision_token: _Optional[str] = ...) -> None: ...

class ReleasedDataKey(_message.Message):
    __slots__ = ("plaintext_key",)
    PLAINTEXT_KEY_FIELD_NUMBER: _ClassVar[int]
    plaintext_key: bytes
    def __init__(self, plaintext_key: _Optional[bytes] = ...) -> None: ...

class BatchItemError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class GenerateDataKeysRequest(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[GenerateDataKeyRequest]
    def __init__(self, items: _Optional[_Iterable[_Union[GenerateDataKeyRequest, _Mapping]]] = ...) -> None: ...

class GenerateDataKeyResult(_message.Message):
    __slots__ = ("key", "error")
    KEY_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    key: DataKey
    error: BatchItemError
    def __init__(self, key: _Optional[_Union[DataKey, _Mapping]] = ..., error: _Optional[_Union[BatchItemError, _Mapping]] = ...) -> None: ...

class GenerateDataKeysResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[GenerateDataKeyResult]
    def __init__(self, results: _Optional[_Iterable[_Union[GenerateDataKeyResult, _Mapping]]] = ...) -> None: ...

class ReleaseDataKeysRequest(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[ReleaseDataKeyRequest]
    def __init__(self, items: _Optional[_Iterable[_Union[ReleaseDataKeyRequest, _Mapping]]] = ...) -> None: ...

class ReleaseDataKeyResult(_message.Message):
    __slots__ = ("key", "error")
    KEY_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    key: ReleasedDataKey
    error: BatchItemError
    def __init__(self, key: _Optional[_Union[ReleasedDataKey, _Mapping]] = ..., error: _Optional[_Union[BatchItemError, _Mapping]] = ...) -> None: ...

class ReleaseDataKeysResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[ReleaseDataKeyResult]
    def __init__(self, results: _Optional[_Iterable[_Union[ReleaseDataKeyResult, _Mapping]]] = ...) -> None: ...

class RotatePatientKeyRequest(_message.Message):
    __slots__ = ("patient_id",)
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    patient_id: str
    def __init__(self, patient_id: _Optional[str] = ...) -> None: ...

class RotatePatientKeyResponse(_message.Message):
    __slots__ = ("key_version", "rewrapped")
    KEY_VERSION_FIELD_NUMBER: _ClassVar[int]
    REWRAPPED_FIELD_NUMBER: _ClassVar[int]
    key_version: int
    rewrapped: int
    def __init__(self, key_version: _Optional[int] = ..., rewrapped: _Optional[int] = ...) -> None: ...

class DeleteDataKeyRequest(_message.Message):
    __slots__ = ("record_id", "patient_id")
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    record_id: str
    patient_id: str
    def __init__(self, record_id: _Optional[str] = ..., patient_id: _Optional[str] = ...) -> None: ...

class DeleteDataKeyResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RegisterClientKeysRequest(_message.Message):
    __slots__ = ("jwks",)
    JWKS_FIELD_NUMBER: _ClassVar[int]
    jwks: str
    def __init__(self, jwks: _Optional[str] = ...) -> None: ...

class ClientKeys(_message.Message):
    __slots__ = ("client_id", "key_ids")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_IDS_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    key_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, client_id: _Optional[str] = ..., key_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ExchangeClientAssertionRequest(_message.Message):
    __slots__ = ("client_assertion", "scope", "purpose_of_use", "audience")
    CLIENT_ASSERTION_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_OF_USE_FIELD_NUMBER: _ClassVar[int]
    AUDIENCE_FIELD_NUMBER: _ClassVar[int]
    client_assertion: str
    scope: str
    purpose_of_use: _common_pb2.PurposeOfUse
    audience: str
    def __init__(self, client_assertion: _Optional[str] = ..., scope: _Optional[str] = ..., purpose_of_use: _Optional[_Union[_common_pb2.PurposeOfUse, str]] = ..., audience: _Optional[str] = ...) -> None: ...

class ClientAccessToken(_message.Message):
    __slots__ = ("token", "expires_at_ms", "scope", "purpose_of_use")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_OF_USE_FIELD_NUMBER: _ClassVar[int]
    token: str
    expires_at_ms: int
    scope: str
    purpose_of_use: _common_pb2.PurposeOfUse
    def __init__(self, token: _Optional[str] = ..., expires_at_ms: _Optional[int] = ..., scope: _Optional[str] = ..., purpose_of_use: _Optional[_Union[_common_pb2.PurposeOfUse, str]] = ...) -> None: ...
