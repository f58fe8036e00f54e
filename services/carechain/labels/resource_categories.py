"""Clinical categories of FHIR resources: what FHIR search's ``category`` parameter matches (docs/fhir.md).

A resource's categories are the codings of its ``category`` element (:data:`CATEGORY_ELEMENTS`), kept per
version in the sealed ledger metadata (``RecordMetadata.resource_categories``) as ``<system>|<code>``, the
system normalised as clinical codes are (:func:`carechain.labels.sensitivity.clinical_code`). They are not
sensitivity labels: ``laboratory`` or ``encounter-diagnosis`` say what kind of record it is, not how sensitive
it is (that is ``meta.security``, searched with ``_security``).

A search names categories as FHIR tokens: ``system|code`` (that coding), ``|code`` (a coding without a
system) or ``code`` (that code in any system).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from carechain.labels.security_labels import ACT_CODE, CARECHAIN_SENSITIVITY, CONFIDENTIALITY, category_of_label
from carechain.labels.sensitivity import (
    SENSITIVE_CATEGORIES,
    SYSTEM_ALIASES,
    canonical_system,
    categorize_code,
    categorize_text,
    clinical_code,
    concepts_at,
)

#: AllergyIntolerance.category is a code (food | medication | environment | biologic) of this value set.
ALLERGY_INTOLERANCE_CATEGORY = "http://hl7.org/fhir/allergy-intolerance-category"
#: The resource types (of those CareChain stores) with a FHIR R4 ``category`` element: a CodeableConcept or a
#: list of them, except AllergyIntolerance's (codes, of ALLERGY_INTOLERANCE_CATEGORY). Encounter.class,
#: Appointment.serviceCategory and the like are other elements and not searched as ``category``.
CATEGORY_ELEMENTS: dict[str, str] = {
    **{resource_type: "CodeableConcept" for resource_type in (
        "AdverseEvent", "CarePlan", "CareTeam", "Communication", "CommunicationRequest", "Composition",
        "Condition", "Consent", "DiagnosticReport", "DocumentReference", "Flag", "Goal",
        "MedicationAdministration", "MedicationDispense", "MedicationRequest", "MedicationStatement",
        "Observation", "Procedure", "ServiceRequest", "SupplyRequest")},
    "AllergyIntolerance": "code",
}
#: Longest category token accepted in a search (a system URI and a code).
MAX_TOKEN_LENGTH = 512
# The code systems a bare code is checked in for sensitivity (those the labeller knows codes of).
_KNOWN_SYSTEMS = frozenset(SYSTEM_ALIASES.values())
_LABEL_SYSTEMS = (ACT_CODE, CONFIDENTIALITY, CARECHAIN_SENSITIVITY)


def _category(system: Any, code: Any) -> str | None:
    if not isinstance(code, str) or not code.strip():
        return None
    if isinstance(system, str) and system.strip():
        return clinical_code(system, code)
    return f"|{code.strip()}"


def resource_categories(resource: dict[str, Any]) -> list[str]:
    """Sorted, unique ``system|code`` (``|code`` without a system) of a resource's ``category`` element."""
    resource_type = str(resource.get("resourceType", ""))
    kind = CATEGORY_ELEMENTS.get(resource_type)
    found: set[str] = set()
    if kind == "code":
        values = resource.get("category")
        for value in values if isinstance(values, list) else [values]:
            if (category := _category(ALLERGY_INTOLERANCE_CATEGORY, value)) is not None:
                found.add(category)
    elif kind is not None:
        for concept in concepts_at(resource, ["category"]):
            codings = concept.get("coding")
            for coding in codings if isinstance(codings, list) else []:
                if isinstance(coding, dict) and (category := _category(coding.get("system"),
                                                                       coding.get("code"))) is not None:
                    found.add(category)
    return sorted(found)


def category_token(token: str) -> str | None:
    """A search token in the form it is compared in (system canonical, spaces trimmed); None if malformed."""
    system, bar, code = token.strip().partition("|")
    code = code.strip() if bar else system.strip()
    if not code or "|" in code or len(token) > MAX_TOKEN_LENGTH:
        return None
    if not bar:
        return code
    return clinical_code(system, code) if system.strip() else f"|{code}"


def has_category(tokens: Iterable[str], categories: Iterable[str]) -> bool:
    """Whether a record with these categories matches one of the tokens (each as :func:`category_token` gives)."""
    kept = set(categories)
    codes = {category.partition("|")[2] for category in kept}
    return any(token in kept if "|" in token else token in codes for token in tokens)


def names_sensitive_concept(token: str) -> bool:
    """Whether a category token itself names sensitive content (a code the labeller labels, a sensitivity label
    such as v3-ActCode PSY, or a sensitive term): the withheld count of a search by it would tell what consent
    hides (records.search)."""
    system, bar, code = token.partition("|")
    code = code if bar else system
    systems = [canonical_system(system)] if bar and system else sorted(_KNOWN_SYSTEMS)
    labels = [system] if bar and system else _LABEL_SYSTEMS
    found = ({categorize_code(s, code) for s in systems} | {category_of_label(s, code) for s in labels}
             | categorize_text(code.replace("-", " ")))
    return bool(found & SENSITIVE_CATEGORIES)
