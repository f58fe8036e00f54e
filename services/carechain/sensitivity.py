"""Sensitivity labelling: which clinical codes make a record sensitive.

A record's categories are the union of the categories of every coded concept in
it (any FHIR Coding: ``{"system": ..., "code": ...}``), or NORMAL when none
matches. Categories follow the HL7 v3 ActCode sensitivity privacy policies
(PSY, SUD/ETH, HIV/STD, SDV, GDIS, ...), with oncology added because patients
commonly restrict it. Codes are matched exactly for SNOMED CT, LOINC and RxNorm
and by prefix (code range) for ICD-10-CM. Screenings and assessments are
labelled like what they look for (a depression screening is MENTAL_HEALTH).

Free text is labelled too where codes cannot reach: plain-text attachments
(e.g. a DocumentReference clinical note, whose history section lists the
patient's conditions) are matched against :data:`SENSITIVE_TERMS`. Over-labelling
only means a consent must name the category; under-labelling would leak.

The table, the HL7 label of each category and the 42 CFR Part 2 note are in
docs/sensitivity.md.
"""

from __future__ import annotations

import base64
import binascii
import re
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
    (SNOMED, "171207006"): MENTAL_HEALTH,  # Depression screening
    (SNOMED, "454711000124102"): MENTAL_HEALTH,  # Depression screening using PHQ-2
    (SNOMED, "715252007"): MENTAL_HEALTH,  # Depression screening using PHQ-9
    (SNOMED, "710841007"): MENTAL_HEALTH,  # Assessment of anxiety
    (SNOMED, "401157001"): MENTAL_HEALTH,  # Psychiatric admission
    (SNOMED, "79094001"): MENTAL_HEALTH,  # Initial psychiatric interview with mental status evaluation
    (SNOMED, "90407005"): MENTAL_HEALTH,  # Evaluation of psychiatric state of patient
    # SNOMED CT: substance use
    (SNOMED, "361055000"): SUBSTANCE_USE,  # Misuses drugs
    (SNOMED, "10939881000119105"): SUBSTANCE_USE,  # Unhealthy alcohol drinking behavior
    (SNOMED, "7200002"): SUBSTANCE_USE,  # Alcoholism
    (SNOMED, "66590003"): SUBSTANCE_USE,  # Alcohol dependence
    (SNOMED, "5602001"): SUBSTANCE_USE,  # Opioid abuse
    (SNOMED, "75544000"): SUBSTANCE_USE,  # Opioid dependence
    (SNOMED, "55680006"): SUBSTANCE_USE,  # Drug overdose
    (SNOMED, "6525002"): SUBSTANCE_USE,  # Dependent drug abuse
    (SNOMED, "428211000124100"): SUBSTANCE_USE,  # Assessment of substance use
    (SNOMED, "713106006"): SUBSTANCE_USE,  # Screening for drug abuse
    (SNOMED, "763302001"): SUBSTANCE_USE,  # Assessment using AUDIT-C
    (SNOMED, "868187001"): SUBSTANCE_USE,  # Assessment using CRAFFT screening test
    (SNOMED, "313071005"): SUBSTANCE_USE,  # Counseling for substance abuse
    # SNOMED CT: HIV and sexually transmitted infections
    (SNOMED, "86406008"): HIV_STI,  # HIV infection
    (SNOMED, "62479008"): HIV_STI,  # AIDS
    (SNOMED, "165816005"): HIV_STI,  # HIV positive
    (SNOMED, "76272004"): HIV_STI,  # Syphilis
    (SNOMED, "15628003"): HIV_STI,  # Gonorrhea
    (SNOMED, "105629000"): HIV_STI,  # Chlamydial infection
    (SNOMED, "240589008"): HIV_STI,  # Chlamydia trachomatis infection
    (SNOMED, "31676001"): HIV_STI,  # Human immunodeficiency virus antigen test
    (SNOMED, "165829005"): HIV_STI,  # Gonorrhea infection titer test
    (SNOMED, "269828009"): HIV_STI,  # Syphilis infectious titer test
    (SNOMED, "310861008"): HIV_STI,  # Chlamydia antigen test
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
    (SNOMED, "169230002"): REPRODUCTIVE,  # Ultrasound scan for fetal viability
    (SNOMED, "386394001"): REPRODUCTIVE,  # Pregnancy termination care
    (SNOMED, "10383002"): REPRODUCTIVE,  # Counseling for termination of pregnancy
    (SNOMED, "65200003"): REPRODUCTIVE,  # Insertion of intrauterine contraceptive device
    (SNOMED, "46706006"): REPRODUCTIVE,  # Replacement of contraceptive intrauterine device
    (SNOMED, "68254000"): REPRODUCTIVE,  # Removal of intrauterine device
    (SNOMED, "169553002"): REPRODUCTIVE,  # Insertion of subcutaneous contraceptive
    (SNOMED, "301807007"): REPRODUCTIVE,  # Removal of subcutaneous contraceptive
    (SNOMED, "252160004"): REPRODUCTIVE,  # Standard pregnancy test
    (SNOMED, "225158009"): REPRODUCTIVE,  # Auscultation of the fetal heart
    (SNOMED, "271442007"): REPRODUCTIVE,  # Fetal anatomy study
    (SNOMED, "274804006"): REPRODUCTIVE,  # Evaluation of uterine fundal height
    (SNOMED, "275833003"): REPRODUCTIVE,  # AFP test - antenatal
    (SNOMED, "11466000"): REPRODUCTIVE,  # Cesarean section
    (SNOMED, "236974004"): REPRODUCTIVE,  # Instrumental delivery
    (SNOMED, "66348005"): REPRODUCTIVE,  # Childbirth
    (SNOMED, "424619006"): REPRODUCTIVE,  # Prenatal visit
    (SNOMED, "183460006"): REPRODUCTIVE,  # Obstetric emergency hospital admission
    (SNOMED, "183996000"): REPRODUCTIVE,  # Sterilization requested
    # SNOMED CT: genetic
    (SNOMED, "405824009"): GENETIC,  # Genetic test
    (SNOMED, "408535005"): GENETIC,  # Genetic counselling
    (SNOMED, "441739004"): GENETIC,  # BRCA1 gene mutation
    (SNOMED, "443529005"): GENETIC,  # Detection of chromosomal aneuploidy in prenatal amniotic fluid (FISH)
    # SNOMED CT: violence and abuse
    (SNOMED, "706893006"): VIOLENCE_ABUSE,  # Victim of intimate partner abuse
    (SNOMED, "424393004"): VIOLENCE_ABUSE,  # Reports of violence in the environment
    (SNOMED, "95930005"): VIOLENCE_ABUSE,  # Victim of physical assault
    (SNOMED, "248110009"): VIOLENCE_ABUSE,  # Victim of sexual abuse
    (SNOMED, "371731002"): VIOLENCE_ABUSE,  # Child abuse
    (SNOMED, "225337009"): VIOLENCE_ABUSE,  # Suspected domestic violence
    (SNOMED, "866148006"): VIOLENCE_ABUSE,  # Screening for domestic abuse
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
    (SNOMED, "703423002"): ONCOLOGY,  # Combined chemotherapy and radiation therapy
    (SNOMED, "433114000"): ONCOLOGY,  # HER2 gene detection by immunohistochemistry (breast cancer work-up)
    (SNOMED, "434363004"): ONCOLOGY,  # HER2 gene detection by FISH (breast cancer work-up)
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
    (RXNORM, "6813"): SUBSTANCE_USE,  # methadone (ingredient)
    (RXNORM, "1819"): SUBSTANCE_USE,  # buprenorphine (ingredient)
    (RXNORM, "7243"): SUBSTANCE_USE,  # naltrexone (ingredient)
    (RXNORM, "3554"): SUBSTANCE_USE,  # disulfiram (ingredient)
    (RXNORM, "1597568"): HIV_STI,  # Bictegravir/emtricitabine/tenofovir alafenamide
    (RXNORM, "1999667"): HIV_STI,  # Bictegravir/emtricitabine/tenofovir alafenamide (Biktarvy)
    (RXNORM, "36437"): MENTAL_HEALTH,  # sertraline (ingredient)
    (RXNORM, "312938"): MENTAL_HEALTH,  # Sertraline 100 MG
    (RXNORM, "748856"): REPRODUCTIVE,  # Yaz (contraceptive)
    (RXNORM, "1735006"): REPRODUCTIVE,  # Levonorgestrel IUD
    (RXNORM, "1367439"): REPRODUCTIVE,  # NuvaRing vaginal system
    (RXNORM, "1856546"): REPRODUCTIVE,  # Kyleena intrauterine system
    (RXNORM, "807283"): REPRODUCTIVE,  # Mirena intrauterine system
    (RXNORM, "389221"): REPRODUCTIVE,  # Etonogestrel drug implant
    (RXNORM, "748962"): REPRODUCTIVE,  # Camila 28 day pack
    (RXNORM, "749762"): REPRODUCTIVE,  # Seasonique 91 day pack
    (RXNORM, "831533"): REPRODUCTIVE,  # Errin 28 day pack
    (RXNORM, "978950"): REPRODUCTIVE,  # Natazia 28 day pack
    (RXNORM, "1736854"): ONCOLOGY,  # Cisplatin 50 MG injection (chemotherapy)
    (RXNORM, "583214"): ONCOLOGY,  # Paclitaxel 100 MG injection (chemotherapy)
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


# Phrases in free text (lower case, matched on word boundaries) -> category. The displays of the
# coded findings above, as clinical notes spell them, plus a few unambiguous words.
SENSITIVE_TERMS: dict[str, int] = {
    "depressive disorder": MENTAL_HEALTH, "major depression": MENTAL_HEALTH, "anxiety": MENTAL_HEALTH,
    "stress (finding)": MENTAL_HEALTH, "schizophrenia": MENTAL_HEALTH, "bipolar disorder": MENTAL_HEALTH,
    "posttraumatic stress disorder": MENTAL_HEALTH, "suicide": MENTAL_HEALTH, "psychiatric": MENTAL_HEALTH,
    "misuses drugs": SUBSTANCE_USE, "drug abuse": SUBSTANCE_USE, "drug overdose": SUBSTANCE_USE,
    "alcoholism": SUBSTANCE_USE, "alcohol dependence": SUBSTANCE_USE, "opioid abuse": SUBSTANCE_USE,
    "opioid dependence": SUBSTANCE_USE, "unhealthy alcohol drinking behavior": SUBSTANCE_USE,
    "hiv": HIV_STI, "human immunodeficiency virus": HIV_STI, "syphilis": HIV_STI,
    "gonorrhea": HIV_STI, "chlamydia": HIV_STI, "chlamydial infection": HIV_STI,
    "pregnancy": REPRODUCTIVE, "pregnant": REPRODUCTIVE, "miscarriage": REPRODUCTIVE, "prenatal": REPRODUCTIVE,
    "postnatal": REPRODUCTIVE, "tubal ligation": REPRODUCTIVE, "contraceptive": REPRODUCTIVE,
    "contraception": REPRODUCTIVE, "termination of pregnancy": REPRODUCTIVE,
    "genetic test": GENETIC, "brca1": GENETIC, "brca2": GENETIC,
    "intimate partner abuse": VIOLENCE_ABUSE, "domestic violence": VIOLENCE_ABUSE, "domestic abuse": VIOLENCE_ABUSE,
    "sexual abuse": VIOLENCE_ABUSE, "physical assault": VIOLENCE_ABUSE, "child abuse": VIOLENCE_ABUSE,
    "reports of violence": VIOLENCE_ABUSE,
    "cancer": ONCOLOGY, "malignant neoplasm": ONCOLOGY, "carcinoma": ONCOLOGY, "chemotherapy": ONCOLOGY,
    "malignant tumor": ONCOLOGY,
}
_TERMS = re.compile(
    r"\b(" + "|".join(re.escape(t) for t in sorted(SENSITIVE_TERMS, key=len, reverse=True)) + r")(?!\w)"
)
# Attachments whose decoded text is searched (bigger ones are searched in their first MAX_TEXT_BYTES).
TEXT_CONTENT_TYPES = ("text/plain", "text/markdown", "text/html")
MAX_TEXT_BYTES = 1024 * 1024


def _texts(node: Any) -> Iterator[str]:
    """Decoded plain-text attachments (FHIR Attachment with a text contentType and base64 data) in a tree."""
    if isinstance(node, dict):
        content_type, data = node.get("contentType"), node.get("data")
        if isinstance(content_type, str) and isinstance(data, str) and content_type.startswith(TEXT_CONTENT_TYPES):
            try:
                yield base64.b64decode(data[: MAX_TEXT_BYTES // 3 * 4]).decode("utf-8", "replace")
            except (binascii.Error, ValueError):
                pass
        for value in node.values():
            yield from _texts(value)
    elif isinstance(node, list):
        for item in node:
            yield from _texts(item)


def categorize_text(text: str) -> set[int]:
    """Categories of the sensitive terms found in free text."""
    return {SENSITIVE_TERMS[m.group(1)] for m in _TERMS.finditer(text.casefold())}


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
    """Sorted sensitivity categories of a FHIR resource (codes and plain-text attachments); [NORMAL] if none."""
    found = {c for system, code in _codings(resource) if (c := categorize_code(system, code)) is not None}
    for text in _texts(resource):
        found |= categorize_text(text)
    return sorted(found) if found else [NORMAL]


def category_name(category: int) -> str:
    """Short name, e.g. MENTAL_HEALTH (the number for values this version does not know)."""
    try:
        return Category.Name(category).removeprefix("SENSITIVITY_CATEGORY_")
    except ValueError:
        return str(category)
