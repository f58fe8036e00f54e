"""HL7 v3 security labels for CareChain sensitivity categories: the one mapping every export uses.

A record's categories (``carechain.common.v1.SensitivityCategory``) are written
out as FHIR security labels (``meta.security``, ``Consent.provision.securityLabel``,
``AuditEvent.entity.securityLabel``) with :func:`security_labels`, and labels
that arrive on a resource or a Consent are read back with :func:`category_of_label`.

- sensitivity labels are HL7 v3 ActCode codes (``_ActInformationSensitivityPolicy``:
  PSY, PSYTHPN, ETH, ETHUD, OPIOIDUD, HIV, STD, SEX, GDIS, SDV, SCA, TBOO);
  the two categories HL7 has no code for (oncology, sexual orientation and
  gender identity) use the one CareChain code system :data:`CARECHAIN_SENSITIVITY`;
- the confidentiality of a labelled resource is HL7 v3-Confidentiality N, R or V
  (:func:`confidentiality`): V for psychotherapy notes and substance use
  (42 CFR Part 2), R for every other sensitive category.

docs/sensitivity.md has the table.
"""

from __future__ import annotations

from collections.abc import Iterable

from carechain.common.v1 import common_pb2

Category = common_pb2.SensitivityCategory

ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
# For the categories HL7 v3 has no code for; the CareChain category names are read here too.
CARECHAIN_SENSITIVITY = "https://carechain.dev/fhir/CodeSystem/sensitivity"

# The same code systems under their OID forms (HL7 OIDs 2.16.840.1.113883.5.4 and .5.25).
_SYSTEM_ALIASES = {
    "urn:oid:2.16.840.1.113883.5.4": ACT_CODE,
    "2.16.840.1.113883.5.4": ACT_CODE,
    "http://hl7.org/fhir/v3/ActCode": ACT_CODE,
    "urn:oid:2.16.840.1.113883.5.25": CONFIDENTIALITY,
    "2.16.840.1.113883.5.25": CONFIDENTIALITY,
    "http://hl7.org/fhir/v3/Confidentiality": CONFIDENTIALITY,
    "urn:carechain:sensitivity": CARECHAIN_SENSITIVITY,
}

# Category -> the labels written for it, (system, code, display). The first is its own label.
CATEGORY_LABELS: dict[int, tuple[tuple[str, str, str], ...]] = {
    Category.SENSITIVITY_CATEGORY_NORMAL: ((CONFIDENTIALITY, "N", "normal"),),
    Category.SENSITIVITY_CATEGORY_MENTAL_HEALTH: ((ACT_CODE, "PSY", "psychiatry disorder information sensitivity"),),
    Category.SENSITIVITY_CATEGORY_PSYCHOTHERAPY_NOTE: (
        (ACT_CODE, "PSYTHPN", "psychotherapy note information sensitivity"),),
    Category.SENSITIVITY_CATEGORY_SUBSTANCE_USE: ((ACT_CODE, "ETH", "substance abuse information sensitivity"),),
    Category.SENSITIVITY_CATEGORY_ALCOHOL_USE_DISORDER: (
        (ACT_CODE, "ETHUD", "alcohol use disorder information sensitivity"),),
    Category.SENSITIVITY_CATEGORY_OPIOID_USE_DISORDER: (
        (ACT_CODE, "OPIOIDUD", "opioid use disorder information sensitivity"),),
    Category.SENSITIVITY_CATEGORY_HIV_STI: (
        (ACT_CODE, "HIV", "HIV/AIDS information sensitivity"),
        (ACT_CODE, "STD", "sexually transmitted disease information sensitivity"),
    ),
    Category.SENSITIVITY_CATEGORY_REPRODUCTIVE: (
        (ACT_CODE, "SEX", "sexuality and reproductive health information sensitivity"),),
    Category.SENSITIVITY_CATEGORY_GENETIC: ((ACT_CODE, "GDIS", "genetic disease information sensitivity"),),
    Category.SENSITIVITY_CATEGORY_VIOLENCE_ABUSE: (
        (ACT_CODE, "SDV", "sexual assault, abuse, or domestic violence information sensitivity"),),
    Category.SENSITIVITY_CATEGORY_SICKLE_CELL: ((ACT_CODE, "SCA", "sickle cell anemia information sensitivity"),),
    Category.SENSITIVITY_CATEGORY_TABOO: ((ACT_CODE, "TBOO", "taboo"),),
    Category.SENSITIVITY_CATEGORY_ONCOLOGY: ((CARECHAIN_SENSITIVITY, "ONCOLOGY", "oncology information sensitivity"),),
    Category.SENSITIVITY_CATEGORY_SEXUAL_ORIENTATION_GENDER_IDENTITY: (
        (CARECHAIN_SENSITIVITY, "SOGI", "sexual orientation and gender identity information sensitivity"),),
    Category.SENSITIVITY_CATEGORY_RESTRICTED: ((CONFIDENTIALITY, "R", "restricted"),),
    Category.SENSITIVITY_CATEGORY_VERY_RESTRICTED: ((CONFIDENTIALITY, "V", "very restricted"),),
}

# Sub-categories and the parent every one of them comes with (HL7 ETH > ETHUD, OPIOIDUD; PSY > PSYTHPN).
PARENT_CATEGORY: dict[int, int] = {
    Category.SENSITIVITY_CATEGORY_PSYCHOTHERAPY_NOTE: Category.SENSITIVITY_CATEGORY_MENTAL_HEALTH,
    Category.SENSITIVITY_CATEGORY_ALCOHOL_USE_DISORDER: Category.SENSITIVITY_CATEGORY_SUBSTANCE_USE,
    Category.SENSITIVITY_CATEGORY_OPIOID_USE_DISORDER: Category.SENSITIVITY_CATEGORY_SUBSTANCE_USE,
}

# Categories whose records are very restricted (V): psychotherapy notes and 42 CFR Part 2 substance use.
VERY_RESTRICTED = frozenset({
    Category.SENSITIVITY_CATEGORY_PSYCHOTHERAPY_NOTE,
    Category.SENSITIVITY_CATEGORY_SUBSTANCE_USE,
    Category.SENSITIVITY_CATEGORY_ALCOHOL_USE_DISORDER,
    Category.SENSITIVITY_CATEGORY_OPIOID_USE_DISORDER,
    Category.SENSITIVITY_CATEGORY_VERY_RESTRICTED,
})

# Labels read on input: every label written, HL7 synonyms and parents, and every category by its CareChain name.
LABEL_CATEGORIES: dict[tuple[str, str], int] = {
    **{(system, code): category for category, labels in CATEGORY_LABELS.items() for system, code, _ in labels},
    (ACT_CODE, "SUD"): Category.SENSITIVITY_CATEGORY_SUBSTANCE_USE,
    (ACT_CODE, "BH"): Category.SENSITIVITY_CATEGORY_MENTAL_HEALTH,
    (ACT_CODE, "MH"): Category.SENSITIVITY_CATEGORY_MENTAL_HEALTH,
    (ACT_CODE, "SICKLE"): Category.SENSITIVITY_CATEGORY_SICKLE_CELL,
    (ACT_CODE, "PREGNANT"): Category.SENSITIVITY_CATEGORY_REPRODUCTIVE,
    (ACT_CODE, "SEXASLT"): Category.SENSITIVITY_CATEGORY_VIOLENCE_ABUSE,
    (ACT_CODE, "MST"): Category.SENSITIVITY_CATEGORY_VIOLENCE_ABUSE,
    (ACT_CODE, "VIO"): Category.SENSITIVITY_CATEGORY_VIOLENCE_ABUSE,
    (ACT_CODE, "DVD"): Category.SENSITIVITY_CATEGORY_MENTAL_HEALTH,
    (ACT_CODE, "COGN"): Category.SENSITIVITY_CATEGORY_MENTAL_HEALTH,
    (ACT_CODE, "EMOTDIS"): Category.SENSITIVITY_CATEGORY_MENTAL_HEALTH,
    (ACT_CODE, "SPI"): Category.SENSITIVITY_CATEGORY_RESTRICTED,
    (ACT_CODE, "_ActInformationSensitivityPolicy"): Category.SENSITIVITY_CATEGORY_RESTRICTED,
    **{
        (CARECHAIN_SENSITIVITY, Category.Name(value).removeprefix("SENSITIVITY_CATEGORY_")): value
        for value in Category.values()
        if value != Category.SENSITIVITY_CATEGORY_UNSPECIFIED
    },
}
# Confidentiality codes that carry no restriction (L low, U unrestricted, M moderate, N normal).
UNRESTRICTED_CONFIDENTIALITY = frozenset({"U", "L", "M", "N"})


def canonical_system(system: object) -> str:
    """The canonical URI of a security-label code system given under any of its URI or OID forms."""
    stripped = system.strip() if isinstance(system, str) else ""
    for candidate in (stripped, stripped.rstrip("/"), stripped.replace("https://", "http://", 1).rstrip("/")):
        if candidate in _SYSTEM_ALIASES:
            return _SYSTEM_ALIASES[candidate]
        if candidate in (ACT_CODE, CONFIDENTIALITY, CARECHAIN_SENSITIVITY):
            return candidate
    return stripped


def category_of_label(system: object, code: object) -> int | None:
    """The category a security label stands for, or None when CareChain does not map it."""
    if not isinstance(code, str):
        return None
    return LABEL_CATEGORIES.get((canonical_system(system), code.strip()))


def security_labels(categories: Iterable[int], *, with_confidentiality: bool = False) -> list[dict[str, str]]:
    """FHIR Codings for categories: each category's labels, then (optionally) the confidentiality code.

    Confidentiality categories (RESTRICTED, VERY_RESTRICTED, NORMAL) are folded into the
    one confidentiality code when it is asked for, so it is never written twice.
    """
    wanted = sorted(set(categories))
    labels: list[dict[str, str]] = []
    for category in wanted:
        for system, code, display in CATEGORY_LABELS.get(category, ()):
            if with_confidentiality and system == CONFIDENTIALITY:
                continue
            labels.append({"system": system, "code": code, "display": display})
    if with_confidentiality:
        code = confidentiality(wanted)
        display = {"N": "normal", "R": "restricted", "V": "very restricted"}[code]
        labels.append({"system": CONFIDENTIALITY, "code": code, "display": display})
    return labels


def confidentiality(categories: Iterable[int]) -> str:
    """HL7 v3-Confidentiality of a record with these categories: N, R (sensitive) or V (Part 2, psychotherapy)."""
    found = set(categories) - {Category.SENSITIVITY_CATEGORY_UNSPECIFIED, Category.SENSITIVITY_CATEGORY_NORMAL}
    if found & VERY_RESTRICTED:
        return "V"
    return "R" if found else "N"


def security_label_messages(categories: Iterable[int]) -> list[common_pb2.SecurityLabel]:
    """The record's meta.security as proto messages: category labels, then the confidentiality code."""
    return [common_pb2.SecurityLabel(**label) for label in security_labels(categories, with_confidentiality=True)]
