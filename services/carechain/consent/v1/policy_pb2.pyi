from carechain.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ProvisionType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PROVISION_TYPE_UNSPECIFIED: _ClassVar[ProvisionType]
    PROVISION_TYPE_PERMIT: _ClassVar[ProvisionType]
    PROVISION_TYPE_DENY: _ClassVar[ProvisionType]

class ActorRole(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACTOR_ROLE_UNSPECIFIED: _ClassVar[ActorRole]
    ACTOR_ROLE_RECIPIENT: _ClassVar[ActorRole]
    ACTOR_ROLE_PRIMARY_RECIPIENT: _ClassVar[ActorRole]
    ACTOR_ROLE_AUTHOR: _ClassVar[ActorRole]
    ACTOR_ROLE_CUSTODIAN: _ClassVar[ActorRole]

class DelegateRelationship(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DELEGATE_RELATIONSHIP_UNSPECIFIED: _ClassVar[DelegateRelationship]
    DELEGATE_RELATIONSHIP_GUARDIAN: _ClassVar[DelegateRelationship]
    DELEGATE_RELATIONSHIP_PROXY: _ClassVar[DelegateRelationship]
PROVISION_TYPE_UNSPECIFIED: ProvisionType
PROVISION_TYPE_PERMIT: ProvisionType
PROVISION_TYPE_DENY: ProvisionType
ACTOR_ROLE_UNSPECIFIED: ActorRole
ACTOR_ROLE_RECIPIENT: ActorRole
ACTOR_ROLE_PRIMARY_RECIPIENT: ActorRole
ACTOR_ROLE_AUTHOR: ActorRole
ACTOR_ROLE_CUSTODIAN: ActorRole
DELEGATE_RELATIONSHIP_UNSPECIFIED: DelegateRelationship
DELEGATE_RELATIONSHIP_GUARDIAN: DelegateRelationship
DELEGATE_RELATIONSHIP_PROXY: DelegateRelationship

class ConsentActor(_message.Message):
    __slots__ = ("role", "practitioner_id", "organization_id", "specialty", "any_organization", "specialty_organization_ids")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    PRACTITIONER_ID_FIELD_NUMBER: _ClassVar[int]
    ORGANIZATION_ID_FIELD_NUMBER: _ClassVar[int]
    SPECIALTY_FIELD_NUMBER: _ClassVar[int]
    ANY_ORGANIZATION_FIELD_NUMBER: _ClassVar[int]
    SPECIALTY_ORGANIZATION_IDS_FIELD_NUMBER: _ClassVar[int]
    role: ActorRole
    practitioner_id: str
    organization_id: str
    specialty: str
    any_organization: bool
    specialty_organization_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, role: _Optional[_Union[ActorRole, str]] = ..., practitioner_id: _Optional[str] = ..., organization_id: _Optional[str] = ..., specialty: _Optional[str] = ..., any_organization: _Optional[bool] = ..., specialty_organization_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class Provision(_message.Message):
    __slots__ = ("type", "actors", "actions", "purposes", "categories", "period", "provisions", "data_period", "resource_types", "data", "codes")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    ACTORS_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    PURPOSES_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    PROVISIONS_FIELD_NUMBER: _ClassVar[int]
    DATA_PERIOD_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_TYPES_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    CODES_FIELD_NUMBER: _ClassVar[int]
    type: ProvisionType
    actors: _containers.RepeatedCompositeFieldContainer[ConsentActor]
    actions: _containers.RepeatedScalarFieldContainer[_common_pb2.ConsentAction]
    purposes: _containers.RepeatedScalarFieldContainer[_common_pb2.PurposeOfUse]
    categories: _containers.RepeatedScalarFieldContainer[_common_pb2.SensitivityCategory]
    period: _common_pb2.Period
    provisions: _containers.RepeatedCompositeFieldContainer[Provision]
    data_period: _common_pb2.Period
    resource_types: _containers.RepeatedScalarFieldContainer[str]
    data: _containers.RepeatedCompositeFieldContainer[DataReference]
    codes: _containers.RepeatedCompositeFieldContainer[FhirCoding]
    def __init__(self, type: _Optional[_Union[ProvisionType, str]] = ..., actors: _Optional[_Iterable[_Union[ConsentActor, _Mapping]]] = ..., actions: _Optional[_Iterable[_Union[_common_pb2.ConsentAction, str]]] = ..., purposes: _Optional[_Iterable[_Union[_common_pb2.PurposeOfUse, str]]] = ..., categories: _Optional[_Iterable[_Union[_common_pb2.SensitivityCategory, str]]] = ..., period: _Optional[_Union[_common_pb2.Period, _Mapping]] = ..., provisions: _Optional[_Iterable[_Union[Provision, _Mapping]]] = ..., data_period: _Optional[_Union[_common_pb2.Period, _Mapping]] = ..., resource_types: _Optional[_Iterable[str]] = ..., data: _Optional[_Iterable[_Union[DataReference, _Mapping]]] = ..., codes: _Optional[_Iterable[_Union[FhirCoding, _Mapping]]] = ...) -> None: ...

class DataReference(_message.Message):
    __slots__ = ("resource_type", "record_id")
    RESOURCE_TYPE_FIELD_NUMBER: _ClassVar[int]
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    resource_type: str
    record_id: str
    def __init__(self, resource_type: _Optional[str] = ..., record_id: _Optional[str] = ...) -> None: ...

class FhirCoding(_message.Message):
    __slots__ = ("system", "code")
    SYSTEM_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    system: str
    code: str
    def __init__(self, system: _Optional[str] = ..., code: _Optional[str] = ...) -> None: ...

class ConsentPolicyReference(_message.Message):
    __slots__ = ("authority", "uri")
    AUTHORITY_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    authority: str
    uri: str
    def __init__(self, authority: _Optional[str] = ..., uri: _Optional[str] = ...) -> None: ...

class ConsentSourceAttachment(_message.Message):
    __slots__ = ("content_type", "url", "hash", "title", "creation", "size", "language")
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    CREATION_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    content_type: str
    url: str
    hash: str
    title: str
    creation: str
    size: int
    language: str
    def __init__(self, content_type: _Optional[str] = ..., url: _Optional[str] = ..., hash: _Optional[str] = ..., title: _Optional[str] = ..., creation: _Optional[str] = ..., size: _Optional[int] = ..., language: _Optional[str] = ...) -> None: ...

class ConsentVerification(_message.Message):
    __slots__ = ("verified", "verified_with", "verification_date")
    VERIFIED_FIELD_NUMBER: _ClassVar[int]
    VERIFIED_WITH_FIELD_NUMBER: _ClassVar[int]
    VERIFICATION_DATE_FIELD_NUMBER: _ClassVar[int]
    verified: bool
    verified_with: str
    verification_date: str
    def __init__(self, verified: _Optional[bool] = ..., verified_with: _Optional[str] = ..., verification_date: _Optional[str] = ...) -> None: ...

class ConsentDocument(_message.Message):
    __slots__ = ("date_time", "policy_rule", "policies", "performers", "organizations", "source_attachment", "verifications", "categories")
    DATE_TIME_FIELD_NUMBER: _ClassVar[int]
    POLICY_RULE_FIELD_NUMBER: _ClassVar[int]
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    PERFORMERS_FIELD_NUMBER: _ClassVar[int]
    ORGANIZATIONS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_ATTACHMENT_FIELD_NUMBER: _ClassVar[int]
    VERIFICATIONS_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    date_time: str
    policy_rule: _containers.RepeatedCompositeFieldContainer[FhirCoding]
    policies: _containers.RepeatedCompositeFieldContainer[ConsentPolicyReference]
    performers: _containers.RepeatedScalarFieldContainer[str]
    organizations: _containers.RepeatedScalarFieldContainer[str]
    source_attachment: ConsentSourceAttachment
    verifications: _containers.RepeatedCompositeFieldContainer[ConsentVerification]
    categories: _containers.RepeatedCompositeFieldContainer[FhirCoding]
    def __init__(self, date_time: _Optional[str] = ..., policy_rule: _Optional[_Iterable[_Union[FhirCoding, _Mapping]]] = ..., policies: _Optional[_Iterable[_Union[ConsentPolicyReference, _Mapping]]] = ..., performers: _Optional[_Iterable[str]] = ..., organizations: _Optional[_Iterable[str]] = ..., source_attachment: _Optional[_Union[ConsentSourceAttachment, _Mapping]] = ..., verifications: _Optional[_Iterable[_Union[ConsentVerification, _Mapping]]] = ..., categories: _Optional[_Iterable[_Union[FhirCoding, _Mapping]]] = ...) -> None: ...

class ConsentPolicy(_message.Message):
    __slots__ = ("provisions", "period", "document")
    PROVISIONS_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    provisions: _containers.RepeatedCompositeFieldContainer[Provision]
    period: _common_pb2.Period
    document: ConsentDocument
    def __init__(self, provisions: _Optional[_Iterable[_Union[Provision, _Mapping]]] = ..., period: _Optional[_Union[_common_pb2.Period, _Mapping]] = ..., document: _Optional[_Union[ConsentDocument, _Mapping]] = ...) -> None: ...
