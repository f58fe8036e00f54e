from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class PrincipalKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRINCIPAL_KIND_UNSPECIFIED: _ClassVar[PrincipalKind]
    PRINCIPAL_KIND_ORGANIZATION: _ClassVar[PrincipalKind]
    PRINCIPAL_KIND_PRACTITIONER: _ClassVar[PrincipalKind]
    PRINCIPAL_KIND_PATIENT: _ClassVar[PrincipalKind]
    PRINCIPAL_KIND_SERVICE: _ClassVar[PrincipalKind]
    PRINCIPAL_KIND_OPERATOR: _ClassVar[PrincipalKind]

class PurposeOfUse(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PURPOSE_OF_USE_UNSPECIFIED: _ClassVar[PurposeOfUse]
    PURPOSE_OF_USE_TREAT: _ClassVar[PurposeOfUse]
    PURPOSE_OF_USE_ETREAT: _ClassVar[PurposeOfUse]
    PURPOSE_OF_USE_HPAYMT: _ClassVar[PurposeOfUse]
    PURPOSE_OF_USE_HOPERAT: _ClassVar[PurposeOfUse]
    PURPOSE_OF_USE_HRESCH: _ClassVar[PurposeOfUse]
    PURPOSE_OF_USE_PATRQT: _ClassVar[PurposeOfUse]
    PURPOSE_OF_USE_BTG: _ClassVar[PurposeOfUse]
    PURPOSE_OF_USE_COC: _ClassVar[PurposeOfUse]
    PURPOSE_OF_USE_POPHLTH: _ClassVar[PurposeOfUse]
    PURPOSE_OF_USE_CLINTRCH: _ClassVar[PurposeOfUse]
    PURPOSE_OF_USE_COVAUTH: _ClassVar[PurposeOfUse]
    PURPOSE_OF_USE_PATADMIN: _ClassVar[PurposeOfUse]
    PURPOSE_OF_USE_FAMRQT: _ClassVar[PurposeOfUse]
    PURPOSE_OF_USE_PWATRNY: _ClassVar[PurposeOfUse]

class SensitivityCategory(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SENSITIVITY_CATEGORY_UNSPECIFIED: _ClassVar[SensitivityCategory]
    SENSITIVITY_CATEGORY_NORMAL: _ClassVar[SensitivityCategory]
    SENSITIVITY_CATEGORY_MENTAL_HEALTH: _ClassVar[SensitivityCategory]
    SENSITIVITY_CATEGORY_SUBSTANCE_USE: _ClassVar[SensitivityCategory]
    SENSITIVITY_CATEGORY_HIV_STI: _ClassVar[SensitivityCategory]
    SENSITIVITY_CATEGORY_REPRODUCTIVE: _ClassVar[SensitivityCategory]
    SENSITIVITY_CATEGORY_GENETIC: _ClassVar[SensitivityCategory]
    SENSITIVITY_CATEGORY_VIOLENCE_ABUSE: _ClassVar[SensitivityCategory]
    SENSITIVITY_CATEGORY_ONCOLOGY: _ClassVar[SensitivityCategory]
    SENSITIVITY_CATEGORY_SICKLE_CELL: _ClassVar[SensitivityCategory]
    SENSITIVITY_CATEGORY_TABOO: _ClassVar[SensitivityCategory]
    SENSITIVITY_CATEGORY_SEXUAL_ORIENTATION_GENDER_IDENTITY: _ClassVar[SensitivityCategory]
    SENSITIVITY_CATEGORY_PSYCHOTHERAPY_NOTE: _ClassVar[SensitivityCategory]
    SENSITIVITY_CATEGORY_ALCOHOL_USE_DISORDER: _ClassVar[SensitivityCategory]
    SENSITIVITY_CATEGORY_OPIOID_USE_DISORDER: _ClassVar[SensitivityCategory]
    SENSITIVITY_CATEGORY_RESTRICTED: _ClassVar[SensitivityCategory]
    SENSITIVITY_CATEGORY_VERY_RESTRICTED: _ClassVar[SensitivityCategory]

class ConsentAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONSENT_ACTION_UNSPECIFIED: _ClassVar[ConsentAction]
    CONSENT_ACTION_ACCESS: _ClassVar[ConsentAction]
    CONSENT_ACTION_DISCLOSE: _ClassVar[ConsentAction]
    CONSENT_ACTION_CORRECT: _ClassVar[ConsentAction]
PRINCIPAL_KIND_UNSPECIFIED: PrincipalKind
PRINCIPAL_KIND_ORGANIZATION: PrincipalKind
PRINCIPAL_KIND_PRACTITIONER: PrincipalKind
PRINCIPAL_KIND_PATIENT: PrincipalKind
PRINCIPAL_KIND_SERVICE: PrincipalKind
PRINCIPAL_KIND_OPERATOR: PrincipalKind
PURPOSE_OF_USE_UNSPECIFIED: PurposeOfUse
PURPOSE_OF_USE_TREAT: PurposeOfUse
PURPOSE_OF_USE_ETREAT: PurposeOfUse
PURPOSE_OF_USE_HPAYMT: PurposeOfUse
PURPOSE_OF_USE_HOPERAT: PurposeOfUse
PURPOSE_OF_USE_HRESCH: PurposeOfUse
PURPOSE_OF_USE_PATRQT: PurposeOfUse
PURPOSE_OF_USE_BTG: PurposeOfUse
PURPOSE_OF_USE_COC: PurposeOfUse
PURPOSE_OF_USE_POPHLTH: PurposeOfUse
PURPOSE_OF_USE_CLINTRCH: PurposeOfUse
PURPOSE_OF_USE_COVAUTH: PurposeOfUse
PURPOSE_OF_USE_PATADMIN: PurposeOfUse
PURPOSE_OF_USE_FAMRQT: PurposeOfUse
PURPOSE_OF_USE_PWATRNY: PurposeOfUse
SENSITIVITY_CATEGORY_UNSPECIFIED: SensitivityCategory
SENSITIVITY_CATEGORY_NORMAL: SensitivityCategory
SENSITIVITY_CATEGORY_MENTAL_HEALTH: SensitivityCategory
SENSITIVITY_CATEGORY_SUBSTANCE_USE: SensitivityCategory
SENSITIVITY_CATEGORY_HIV_STI: SensitivityCategory
SENSITIVITY_CATEGORY_REPRODUCTIVE: SensitivityCategory
SENSITIVITY_CATEGORY_GENETIC: SensitivityCategory
SENSITIVITY_CATEGORY_VIOLENCE_ABUSE: SensitivityCategory
SENSITIVITY_CATEGORY_ONCOLOGY: SensitivityCategory
SENSITIVITY_CATEGORY_SICKLE_CELL: SensitivityCategory
SENSITIVITY_CATEGORY_TABOO: SensitivityCategory
SENSITIVITY_CATEGORY_SEXUAL_ORIENTATION_GENDER_IDENTITY: SensitivityCategory
SENSITIVITY_CATEGORY_PSYCHOTHERAPY_NOTE: SensitivityCategory
SENSITIVITY_CATEGORY_ALCOHOL_USE_DISORDER: SensitivityCategory
SENSITIVITY_CATEGORY_OPIOID_USE_DISORDER: SensitivityCategory
SENSITIVITY_CATEGORY_RESTRICTED: SensitivityCategory
SENSITIVITY_CATEGORY_VERY_RESTRICTED: SensitivityCategory
CONSENT_ACTION_UNSPECIFIED: ConsentAction
CONSENT_ACTION_ACCESS: ConsentAction
CONSENT_ACTION_DISCLOSE: ConsentAction
CONSENT_ACTION_CORRECT: ConsentAction

class SecurityLabel(_message.Message):
    __slots__ = ("system", "code", "display")
    SYSTEM_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_FIELD_NUMBER: _ClassVar[int]
    system: str
    code: str
    display: str
    def __init__(self, system: _Optional[str] = ..., code: _Optional[str] = ..., display: _Optional[str] = ...) -> None: ...

class Period(_message.Message):
    __slots__ = ("start_ms", "end_ms")
    START_MS_FIELD_NUMBER: _ClassVar[int]
    END_MS_FIELD_NUMBER: _ClassVar[int]
    start_ms: int
    end_ms: int
    def __init__(self, start_ms: _Optional[int] = ..., end_ms: _Optional[int] = ...) -> None: ...
