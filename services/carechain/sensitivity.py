"""Sensitivity labelling: which clinical codes make a record sensitive.

A record's categories are the union of the categories of every coded concept in
it (any FHIR Coding: ``{"system": ..., "code": ...}``), or NORMAL when none
matches. Categories follow the HL7 v3 ActCode sensitivity privacy policies
(PSY, SUD/ETH, HIV/STD, SDV, GDIS, ...), with oncology added because patients
commonly restrict it. Codes are matched exactly for SNOMED CT, LOINC and RxNorm
and by prefix (code range) for ICD-10-CM.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from carechain.common.v1 import common_pb2

Category = common_pb2.SensitivityCategory
NORMAL = Category.SENSITIVITY_CATEGORY_NORMAL
MENTAL_HEALTH = Category.SENSITIVITY_CATEGORY_MENTAL_HEALTH
SUBSTANCE_USE = Category.SENSITIVITY_CATEGORY_SUBSTANCE_USE
HIV_STI = Category.SENSITIVITY_CATEGORY_HIV_STI
REPRODUCTIVE = Category.SENSITIVITY_CATEGORY_REPRODUCTIVE
GENETIC = Category.SENSITIVITY_CATEGORY_GENETIC
VIOLENCE_ABUSE = Category.SENSITIVITY_CATEGORY_VIOLENCE_ABUSE
ONCOLOGY = Category.SENSITIVITY_CATEGORY_ONCOLOGY

SNOMED = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
ICD10_WHO = "http://hl7.org/fhir/sid/icd-10"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"

# Every category but NORMAL needs a consent provision that names it (UNSPECIFIED is never valid).
SENSITIVE_CATEGORIES = frozenset(
    value for value in Category.values() if value not in (Category.SENSITIVITY_CATEGORY_UNSPECIFIED, NORMAL)
)

# Exact codes: (system, code) -> category.
EXACT_CODES: dict[tuple[str, str], int] = {
    # SNOMED CT: mental health
    (SNOMED, "35489007"): MENTAL_HEALTH,  # Depressive disorder
    (SNOMED, "370143000"): MENTAL_HEALTH,  # Major depressive disorder
    (SNOMED, "36923009"): MENTAL_HEALTH,  # Major depression, single episode
    (SNOMED, "197480006"): MENTAL_HEALTH,  # Anxiety disorder
    (SNOMED, "80583007"): MENTAL_HEALTH,  # Severe anxiety (panic)
    (SNOMED, "73595000"): MENTAL_HEALTH,  # Stress (finding)
    (SNOMED, "58214004"): MENTAL_HEALTH,  # Schizophrenia
    (SNOMED, "13746004"): MENTAL_HEALTH,  # Bipolar disorder
    (SNOMED, "47505003"): MENTAL_HEALTH,  # Posttraumatic stress disorder
    (SNOMED, "406506008"): MENTAL_HEALTH,  # Attention deficit hyperactivity disorder
    (SNOMED, "74732009"): MENTAL_HEALTH,  # Mental disorder
    (SNOMED, "225444004"): MENTAL_HEALTH,  # At risk for suicide
    (SNOMED, "165671000119103"): MENTAL_HEALTH,  # Psychiatric follow-up
    # SNOMED CT: substance use
    (SNOMED, "361055000"): SUBSTANCE_USE,  # Misuses drugs
    (SNOMED, "10939881000119105"): SUBSTANCE_USE,  # Unhealthy alcohol drinking behavior
    (SNOMED, "7200002"): SUBSTANCE_USE,  # Alcoholism
    (SNOMED, "66590003"): SUBSTANCE_USE,  # Alcohol dependence
    (SNOMED, "5602001"): SUBSTANCE_USE,  # Opioid abuse
    (SNOMED, "75544000"): SUBSTANCE_USE,  # Opioid dependence
    (SNOMED, "55680006"): SUBSTANCE_USE,  # Drug overdose
    (SNOMED, "6525002"): SUBSTANCE_USE,  # Dependent drug abuse
    # SNOMED CT: HIV and sexually transmitted infections
    (SNOMED, "86406008"): HIV_STI,  # HIV infection
    (SNOMED, "62479008"): HIV_STI,  # AIDS
    (SNOMED, "165816005"): HIV_STI,  # HIV positive
    (SNOMED, "76272004"): HIV_STI,  # Syphilis
    (SNOMED, "15628003"): HIV_STI,  # Gonorrhea
    (SNOMED, "105629000"): HIV_STI,  # Chlamydial infection
    (SNOMED, "240589008"): HIV_STI,  # Chlamydia trachomatis infection
    # SNOMED CT: reproductive health
    (SNOMED, "72892002"): REPRODUCTIVE,  # Normal pregnancy
    (SNOMED, "77386006"): REPRODUCTIVE,  # Pregnancy
    (SNOMED, "19169002"): REPRODUCTIVE,  # Miscarriage in first trimester
    (SNOMED, "156073000"): REPRODUCTIVE,  # Complete miscarriage
    (SNOMED, "267020005"): REPRODUCTIVE,  # History of tubal ligation
    (SNOMED, "47200007"): REPRODUCTIVE,  # Non-low risk pregnancy
    (SNOMED, "79586000"): REPRODUCTIVE,  # Tubal pregnancy
    (SNOMED, "714812005"): REPRODUCTIVE,  # Induced termination of pregnancy
    (SNOMED, "169762003"): REPRODUCTIVE,  # Postnatal visit
    (SNOMED, "424441002"): REPRODUCTIVE,  # Prenatal initial visit
    (SNOMED, "169230002"): REPRODUCTIVE,  # Pregnancy termination care
    (SNOMED, "65200003"): REPRODUCTIVE,  # Insertion of intrauterine contraceptive device
    # SNOMED CT: genetic
    (SNOMED, "405824009"): GENETIC,  # Genetic test
    (SNOMED, "408535005"): GENETIC,  # Genetic counselling
    (SNOMED, "441739004"): GENETIC,  # BRCA1 gene mutation
    # SNOMED CT: violence and abuse
    (SNOMED, "706893006"): VIOLENCE_ABUSE,  # Victim of intimate partner abuse
    (SNOMED, "424393004"): VIOLENCE_ABUSE,  # Reports of violence in the environment
    (SNOMED, "95930005"): VIOLENCE_ABUSE,  # Victim of physical assault
    (SNOMED, "248110009"): VIOLENCE_ABUSE,  # Victim of sexual abuse
    (SNOMED, "371731002"): VIOLENCE_ABUSE,  # Child abuse
    (SNOMED, "225337009"): VIOLENCE_ABUSE,  # Suspected domestic violence
    # SNOMED CT: oncology
    (SNOMED, "254837009"): ONCOLOGY,  # Malignant neoplasm of breast
    (SNOMED, "254637007"): ONCOLOGY,  # Non-small cell lung cancer
    (SNOMED, "424132000"): ONCOLOGY,  # Non-small cell carcinoma of lung, TNM stage 1
    (SNOMED, "162573006"): ONCOLOGY,  # Suspected lung cancer
    (SNOMED, "363406005"): ONCOLOGY,  # Malignant tumor of colon
    (SNOMED, "126906006"): ONCOLOGY,  # Neoplasm of prostate
    (SNOMED, "93761005"): ONCOLOGY,  # Primary malignant neoplasm of colon
    (SNOMED, "94260004"): ONCOLOGY,  # Secondary malignant neoplasm of colon
    (SNOMED, "363346000"): ONCOLOGY,  # Malignant neoplastic disease
    (SNOMED, "367336001"): ONCOLOGY,  # Chemotherapy
    (SNOMED, "108290001"): ONCOLOGY,  # Radiation oncology and/or radiotherapy
    # LOINC
    (LOINC, "75622-1"): HIV_STI,  # HIV 1 and 2 tests - Meaningful Use set
    (LOINC, "7918-6"): HIV_STI,  # HIV 1+2 Ab [Presence] in Serum
    (LOINC, "56888-1"): HIV_STI,  # HIV 1+2 Ab + HIV1 p24 Ag [Presence] in Serum
    (LOINC, "25836-8"): HIV_STI,  # HIV 1 RNA [#/volume] (viral load)
    (LOINC, "44249-1"): MENTAL_HEALTH,  # PHQ-9 quick depression assessment panel
    (LOINC, "44261-6"): MENTAL_HEALTH,  # PHQ-9 total score
    (LOINC, "69737-5"): MENTAL_HEALTH,  # GAD-7 panel
    (LOINC, "70274-6"): MENTAL_HEALTH,  # GAD-7 total score
    (LOINC, "72109-2"): SUBSTANCE_USE,  # AUDIT-C
    (LOINC, "75626-2"): SUBSTANCE_USE,  # AUDIT-C total score
    (LOINC, "82810-3"): REPRODUCTIVE,  # Pregnancy status
    (LOINC, "2106-3"): REPRODUCTIVE,  # Choriogonadotropin (pregnancy test)
    (LOINC, "76499-3"): VIOLENCE_ABUSE,  # Humiliation, Afraid, Rape, and Kick (HARK) abuse screen
    (LOINC, "51969-4"): GENETIC,  # Genetic analysis report
    (LOINC, "21636-6"): GENETIC,  # BRCA1 gene mutations tested for
    # RxNorm
    (RXNORM, "1010600"): SUBSTANCE_USE,  # Buprenorphine / naloxone
    (RXNORM, "864706"): SUBSTANCE_USE,  # Methadone hydrochloride 10 MG
    (RXNORM, "1597568"): HIV_STI,  # Bictegravir/emtricitabine/tenofovir alafenamide
    (RXNORM, "1999667"): HIV_STI,  # Bictegravir/emtricitabine/tenofovir alafenamide (Biktarvy)
    (RXNORM, "313782"): MENTAL_HEALTH,  # Sertraline
    (RXNORM, "312938"): MENTAL_HEALTH,  # Sertraline 100 MG
    (RXNORM, "748856"): REPRODUCTIVE,  # Yaz (contraceptive)
    (RXNORM, "1735006"): REPRODUCTIVE,  # Levonorgestrel IUD
}

# ICD-10(-CM) code ranges by prefix: longest matching prefix wins.
ICD10_PREFIXES: dict[str, int] = {
    "F": MENTAL_HEALTH,
    "F10": SUBSTANCE_USE, "F11": SUBSTANCE_USE, "F12": SUBSTANCE_USE, "F13": SUBSTANCE_USE,
    "F14": SUBSTANCE_USE, "F15": SUBSTANCE_USE, "F16": SUBSTANCE_USE, "F18": SUBSTANCE_USE,
    "F19": SUBSTANCE_USE,
    "B20": HIV_STI, "Z21": HIV_STI, "A50": HIV_STI, "A51": HIV_STI, "A52": HIV_STI, "A53": HIV_STI,
    "A54": HIV_STI, "A55": HIV_STI, "A56": HIV_STI, "A57": HIV_STI, "A58": HIV_STI, "A59": HIV_STI,
    "A60": HIV_STI, "A63": HIV_STI, "A64": HIV_STI,
    "O": REPRODUCTIVE, "Z3": REPRODUCTIVE, "N96": REPRODUCTIVE, "N97": REPRODUCTIVE,
    "C": ONCOLOGY, "D0": ONCOLOGY, "D3": ONCOLOGY, "D4": ONCOLOGY,
    "T74": VIOLENCE_ABUSE, "T76": VIOLENCE_ABUSE, "Y07": VIOLENCE_ABUSE, "Z69": VIOLENCE_ABUSE,
    "Z15": GENETIC, "Z14": GENETIC,
}


def _codings(node: Any) -> Iterator[tuple[str, str]]:
    """Every (system, code) pair anywhere in a FHIR JSON tree."""
    if isinstance(node, dict):
        system, code = node.get("system"), node.get("code")
        if isinstance(system, str) and isinstance(code, str):
            yield system, code
        for value in node.values():
            yield from _codings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _codings(item)


def categorize_code(system: str, code: str) -> int | None:
    """Category of one coded concept, or None when it is not sensitive."""
    category = EXACT_CODES.get((system, code))
    if category is not None:
        return category
    if system in (ICD10, ICD10_WHO):
        normalized = code.upper().replace(".", "")
        for length in range(len(normalized), 0, -1):
            category = ICD10_PREFIXES.get(normalized[:length])
            if category is not None:
                return category
    return None


def categorize(resource: dict[str, Any]) -> list[int]:
    """Sorted sensitivity categories of a FHIR resource; [NORMAL] when nothing sensitive is coded."""
    found = {c for system, code in _codings(resource) if (c := categorize_code(system, code)) is not None}
    return sorted(found) if found else [NORMAL]


def category_name(category: int) -> str:
    """Short name, e.g. MENTAL_HEALTH (the number for values this version does not know)."""
    try:
        return Category.Name(category).removeprefix("SENSITIVITY_CATEGORY_")
    except ValueError:
        return str(category)
