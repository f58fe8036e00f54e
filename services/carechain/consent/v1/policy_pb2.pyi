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

class DelegateRelationship(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DELEGATE_RELATIONSHIP_UNSPECIFIED: _ClassVar[DelegateRelationship]
    DELEGATE_RELATIONSHIP_GUARDIAN: _ClassVar[DelegateRelationship]
    DELEGATE_RELATIONSHIP_PROXY: _ClassVar[DelegateRelationship]
PROVISION_TYPE_UNSPECIFIED: ProvisionType
PROVISION_TYPE_PERMIT: ProvisionType
PROVISION_TYPE_DENY: ProvisionType
DELEGATE_RELATIONSHIP_UNSPECIFIED: DelegateRelationship
DELEGATE_RELATIONSHIP_GUARDIAN: DelegateRelationship
DELEGATE_RELATIONSHIP_PROXY: DelegateRelationship

class ConsentActor(_message.Message):
    __slots__ = ("practitioner_id", "organization_id", "specialty", "any_organization", "specialty_organization_ids")
    PRACTITIONER_ID_FIELD_NUMBER: _ClassVar[int]
    ORGANIZATION_ID_FIELD_NUMBER: _ClassVar[int]
    SPECIALTY_FIELD_NUMBER: _ClassVar[int]
    ANY_ORGANIZATION_FIELD_NUMBER: _ClassVar[int]
    SPECIALTY_ORGANIZATION_IDS_FIELD_NUMBER: _ClassVar[int]
    practitioner_id: str
    organization_id: str
    specialty: str
    any_organization: bool
    specialty_organization_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, practitioner_id: _Optional[str] = ..., organization_id: _Optional[str] = ..., specialty: _Optional[str] = ..., any_organization: _Optional[bool] = ..., specialty_organization_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class Provision(_message.Message):
    __slots__ = ("type", "actors", "actions", "purposes", "categories", "period", "provisions", "data_period", "resource_types")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    ACTORS_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    PURPOSES_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    PROVISIONS_FIELD_NUMBER: _ClassVar[int]
    DATA_PERIOD_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_TYPES_FIELD_NUMBER: _ClassVar[int]
    type: ProvisionType
    actors: _containers.RepeatedCompositeFieldContainer[ConsentActor]
    actions: _containers.RepeatedScalarFieldContainer[_common_pb2.ConsentAction]
    purposes: _containers.RepeatedScalarFieldContainer[_common_pb2.PurposeOfUse]
    categories: _containers.RepeatedScalarFieldContainer[_common_pb2.SensitivityCategory]
    period: _common_pb2.Period
    provisions: _containers.RepeatedCompositeFieldContainer[Provision]
    data_period: _common_pb2.Period
    resource_types: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, type: _Optional[_Union[ProvisionType, str]] = ..., actors: _Optional[_Iterable[_Union[ConsentActor, _Mapping]]] = ..., actions: _Optional[_Iterable[_Union[_common_pb2.ConsentAction, str]]] = ..., purposes: _Optional[_Iterable[_Union[_common_pb2.PurposeOfUse, str]]] = ..., categories: _Optional[_Iterable[_Union[_common_pb2.SensitivityCategory, str]]] = ..., period: _Optional[_Union[_common_pb2.Period, _Mapping]] = ..., provisions: _Optional[_Iterable[_Union[Provision, _Mapping]]] = ..., data_period: _Optional[_Union[_common_pb2.Period, _Mapping]] = ..., resource_types: _Optional[_Iterable[str]] = ...) -> None: ...

class ConsentPolicy(_message.Message):
    __slots__ = ("provisions", "period")
    PROVISIONS_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    provisions: _containers.RepeatedCompositeFieldContainer[Provision]
    period: _common_pb2.Period
    def __init__(self, provisions: _Optional[_Iterable[_Union[Provision, _Mapping]]] = ..., period: _Optional[_Union[_common_pb2.Period, _Mapping]] = ...) -> None: ...
