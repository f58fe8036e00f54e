"""Sensitivity labelling: which clinical content makes a record sensitive.

A record's categories are the union of what is found anywhere in it, or NORMAL
when nothing is:

- every coded concept (any FHIR Coding ``{"system": ..., "code": ...}``, the
  system under its URI or OID form, see :data:`SYSTEM_ALIASES`): exact codes
  for SNOMED CT, LOINC and RxNorm; code ranges for ICD-10(-CM) and ICD-9(-CM)
  (chapters and blocks such as F01-F99, F10-F19; the most specific range wins,
  so a code carries one category: O98.72, HIV in childbirth, is REPRODUCTIVE);
- free text everywhere it occurs (displays, ``code.text``, notes, narrative
  ``text.div``, reference displays, any attachment whose data decodes as
  text) matched against :data:`SENSITIVE_TERMS`;
- the labels the resource arrived with (``meta.security``, HL7 v3 ActCode /
  Confidentiality): always kept, never weakened (carechain.labels.security_labels).

A sub-category (psychotherapy note, alcohol or opioid use disorder) always comes
with its parent category. Screenings and assessments are labelled like what they
look for. Over-labelling only means a consent must name the category;
under-labelling would leak. The tables and their sources are in
docs/sensitivity.md.
"""

from __future__ import annotations

import base64
import binascii
import html
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from carechain.common.v1 import common_pb2
from carechain.labels import security_labels

Category = common_pb2.SensitivityCategory
NORMAL = Category.SENSITIVITY_CATEGORY_NORMAL
MENTAL_HEALTH = Category.SENSITIVITY_CATEGORY_MENTAL_HEALTH
SUBSTANCE_USE = Category.SENSITIVITY_CATEGORY_SUBSTANCE_USE
HIV_STI = Category.SENSITIVITY_CATEGORY_HIV_STI
REPRODUCTIVE = Category.SENSITIVITY_CATEGORY_REPRODUCTIVE
GENETIC = Category.SENSITIVITY_CATEGORY_GENETIC
VIOLENCE_ABUSE = Category.SENSITIVITY_CATEGORY_VIOLENCE_ABUSE
ONCOLOGY = Category.SENSITIVITY_CATEGORY_ONCOLOGY
SICKLE_CELL = Category.SENSITIVITY_CATEGORY_SICKLE_CELL
TABOO = Category.SENSITIVITY_CATEGORY_TABOO
SOGI = Category.SENSITIVITY_CATEGORY_SEXUAL_ORIENTATION_GENDER_IDENTITY
PSYCHOTHERAPY_NOTE = Category.SENSITIVITY_CATEGORY_PSYCHOTHERAPY_NOTE
ALCOHOL_USE = Category.SENSITIVITY_CATEGORY_ALCOHOL_USE_DISORDER
OPIOID_USE = Category.SENSITIVITY_CATEGORY_OPIOID_USE_DISORDER
RESTRICTED = Category.SENSITIVITY_CATEGORY_RESTRICTED
VERY_RESTRICTED = Category.SENSITIVITY_CATEGORY_VERY_RESTRICTED

SNOMED = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
ICD10_WHO = "http://hl7.org/fhir/sid/icd-10"
ICD9 = "http://hl7.org/fhir/sid/icd-9-cm"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"

# Other spellings of each code system: HL7 OIDs (bare and urn:oid:), older or vendor URIs.
SYSTEM_ALIASES: dict[str, str] = {
    **{alias: SNOMED for alias in (
        "2.16.840.1.113883.6.96", "http://snomed.info/id", "http://www.snomed.org/", "snomed", "snomed-ct",
        "sct", "http://snomed.info/sct/900000000000207008", "http://snomed.info/sct/731000124108")},
    **{alias: LOINC for alias in ("2.16.840.1.113883.6.1", "http://loinc.org/", "loinc", "https://loinc.org")},
    **{alias: RXNORM for alias in ("2.16.840.1.113883.6.88", "rxnorm", "http://www.nlm.nih.gov/research/umls/rxnorm/")},
    **{alias: ICD10 for alias in (
        "2.16.840.1.113883.6.90", "http://www.cms.gov/medicare/coding/icd10", "icd-10-cm", "icd10cm")},
    **{alias: ICD10_WHO for alias in (
        "2.16.840.1.113883.6.3", "http://hl7.org/fhir/sid/icd-10-who", "icd-10", "icd10")},
    **{alias: ICD9 for alias in (
        "2.16.840.1.113883.6.103", "2.16.840.1.113883.6.104", "2.16.840.1.113883.6.2", "2.16.840.1.113883.6.42",
        "http://hl7.org/fhir/sid/icd-9", "http://hl7.org/fhir/sid/icd-9-cm/diagnosis",
        "http://hl7.org/fhir/sid/icd-9-cm/procedure", "icd-9-cm", "icd9cm", "icd-9", "icd9")},
}


def canonical_system(system: str) -> str:
    """The canonical URI of a code system given under any known URI or OID form (case, https, slashes ignored)."""
    value = system.strip()
    if value.lower().startswith("urn:oid:"):
        value = value[len("urn:oid:"):]
    lowered = value.lower().replace("https://", "http://")
    for candidate in (value, lowered, lowered.rstrip("/")):
        if candidate in SYSTEM_ALIASES:
            return SYSTEM_ALIASES[candidate]
        if candidate in _CANONICAL:
            return candidate
    if lowered.startswith("http://snomed.info/sct/") or lowered.startswith("http://snomed.info/id/"):
        return SNOMED  # an edition or module URI
    return value


_CANONICAL = frozenset({SNOMED, ICD10, ICD10_WHO, ICD9, LOINC, RXNORM})

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
    (SNOMED, "7200002"): ALCOHOL_USE,  # Alcoholism
    (SNOMED, "66590003"): ALCOHOL_USE,  # Alcohol dependence
    (SNOMED, "5602001"): OPIOID_USE,  # Opioid abuse
    (SNOMED, "75544000"): OPIOID_USE,  # Opioid dependence
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
    (RXNORM, "1010600"): OPIOID_USE,  # Buprenorphine / naloxone
    (RXNORM, "864706"): OPIOID_USE,  # Methadone hydrochloride 10 MG
    (RXNORM, "6813"): OPIOID_USE,  # methadone (ingredient)
    (RXNORM, "1819"): OPIOID_USE,  # buprenorphine (ingredient)
    (RXNORM, "7243"): SUBSTANCE_USE,  # naltrexone (ingredient)
    (RXNORM, "3554"): ALCOHOL_USE,  # disulfiram (ingredient)
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
    # Added for issue 10 (observed misses) and the sub-labels
    (LOINC, "20447-9"): HIV_STI,  # HIV 1 RNA [#/volume] (viral load) in Serum or Plasma by NAA
    (LOINC, "29893-5"): HIV_STI,  # HIV 1 Ab [Presence] in Serum or Plasma by Immunoassay
    (LOINC, "55757-9"): MENTAL_HEALTH,  # PHQ-2 panel
    (LOINC, "55758-7"): MENTAL_HEALTH,  # PHQ-2 total score
    (LOINC, "76690-7"): SOGI,  # Sexual orientation
    (LOINC, "76691-5"): SOGI,  # Gender identity
    (SNOMED, "111880001"): HIV_STI,  # Acute HIV infection
    (SNOMED, "91947003"): HIV_STI,  # Asymptomatic HIV infection
    (SNOMED, "15167005"): ALCOHOL_USE,  # Alcohol abuse
    (SNOMED, "26416006"): SUBSTANCE_USE,  # Drug abuse
    (SNOMED, "191736004"): MENTAL_HEALTH,  # Obsessive-compulsive disorder
    (SNOMED, "6471006"): MENTAL_HEALTH,  # Suicidal thoughts
    (SNOMED, "75516001"): MENTAL_HEALTH,  # Psychotherapy
    (SNOMED, "127040003"): SICKLE_CELL,  # Sickle cell-hemoglobin SS disease
    (SNOMED, "417357006"): SICKLE_CELL,  # Sickling disorder due to hemoglobin S
    (SNOMED, "407377005"): SOGI,  # Female-to-male transsexual
    (SNOMED, "407376001"): SOGI,  # Male-to-female transsexual
    (RXNORM, "312940"): MENTAL_HEALTH,  # sertraline 50 MG Oral Tablet
    (RXNORM, "312941"): MENTAL_HEALTH,  # sertraline 25 MG Oral Tablet
    (RXNORM, "197591"): MENTAL_HEALTH,  # Diazepam 5 MG Oral Tablet (anxiolytic; over-labels seizure use)
    # From the review of the Synthea sample's unlabelled codes (dev/reviewed_normal.tsv has the rest)
    (SNOMED, "122548005"): ONCOLOGY,  # Biopsy of breast (cancer work-up)
    (SNOMED, "90226004"): REPRODUCTIVE,  # Cytopathology, smear, genital source (cervical screening)
    (SNOMED, "169690007"): REPRODUCTIVE,  # Rubella screening (antenatal)
    (SNOMED, "118001005"): REPRODUCTIVE,  # Streptococcus group B antigen assay (antenatal GBS screening)
}


# ICD code ranges: (first, last, category), inclusive, compared on the code without dots over the
# length of `first`. The most specific range wins: longer bounds first, then the order below
# (narrower blocks before the chapters that contain them).
ICD10_RANGES: tuple[tuple[str, str, int], ...] = (
    # Exact codes and subcategories (ICD-10-CM)
    ("R45851", "R45851", MENTAL_HEALTH),  # Suicidal ideations
    ("Z8789", "Z8789", SOGI),  # Z87.890 Personal history of sex reassignment (and Z87.89x)
    ("O987", "O987", REPRODUCTIVE),  # O98.7 HIV disease complicating pregnancy, childbirth, puerperium
    ("Z7141", "Z7142", ALCOHOL_USE),  # Alcohol abuse counseling (of the alcoholic, of a family member)
    ("Z7151", "Z7152", SUBSTANCE_USE),  # Drug abuse counseling
    ("Z717", "Z717", HIV_STI),  # HIV counseling
    ("Z113", "Z114", HIV_STI),  # Screening for sexually transmitted infections, for HIV
    ("Z202", "Z202", HIV_STI),  # Contact with and exposure to infections with a sexual mode of transmission
    ("Z206", "Z206", HIV_STI),  # Contact with and exposure to HIV
    ("Z9141", "Z9141", VIOLENCE_ABUSE),  # Personal history of adult psychological, physical or sexual abuse
    ("Z6281", "Z6281", VIOLENCE_ABUSE),  # Personal history of abuse in childhood
    ("T1491", "T1491", MENTAL_HEALTH),  # Suicide attempt
    ("Z8481", "Z8481", GENETIC),  # Family history of carrier of genetic disease
    ("T400", "T406", OPIOID_USE),  # Poisoning by opium, heroin, other opioids, methadone, narcotics
    ("Z502", "Z503", SUBSTANCE_USE),  # Alcohol, drug rehabilitation (ICD-10 WHO)
    # Blocks (three-character categories)
    ("F10", "F10", ALCOHOL_USE),  # Alcohol related disorders
    ("F11", "F11", OPIOID_USE),  # Opioid related disorders
    ("F64", "F64", SOGI),  # Gender identity disorders
    ("F65", "F66", REPRODUCTIVE),  # Paraphilias; psychological disorders of sexual development
    ("F10", "F19", SUBSTANCE_USE),  # Mental and behavioural disorders due to psychoactive substance use
    ("B20", "B24", HIV_STI),  # HIV disease
    ("Z21", "Z21", HIV_STI),  # Asymptomatic HIV infection status
    ("R75", "R75", HIV_STI),  # Inconclusive laboratory evidence of HIV
    ("A50", "A64", HIV_STI),  # Infections with a predominantly sexual mode of transmission
    ("D57", "D57", SICKLE_CELL),  # Sickle-cell disorders
    ("Q90", "Q99", GENETIC),  # Chromosomal abnormalities
    ("Z14", "Z15", GENETIC),  # Genetic carrier; genetic susceptibility to disease
    ("T74", "T74", VIOLENCE_ABUSE),  # Adult and child abuse, neglect and other maltreatment, confirmed
    ("T76", "T76", VIOLENCE_ABUSE),  # ... suspected
    ("X92", "Y09", VIOLENCE_ABUSE),  # Assault
    ("Z69", "Z69", VIOLENCE_ABUSE),  # Encounter for mental health services for victim/perpetrator of abuse
    ("Z04", "Z04", VIOLENCE_ABUSE),  # Examination following alleged rape, assault (Z04.4x, Z04.7x; over-labels)
    ("Z30", "Z3A", REPRODUCTIVE),  # Persons encountering health services in circumstances related to reproduction
    ("N96", "N98", REPRODUCTIVE),  # Recurrent pregnancy loss, female infertility, complications of fertilization
    ("O00", "O9A", REPRODUCTIVE),  # Chapter 15: pregnancy, childbirth and the puerperium
    ("C00", "D09", ONCOLOGY),  # Malignant neoplasms; in situ neoplasms
    ("D30", "D49", ONCOLOGY),  # Benign urinary/CNS/endocrine and uncertain or unspecified behaviour (over-labels)
    ("F01", "F99", MENTAL_HEALTH),  # Chapter 5: mental, behavioral and neurodevelopmental disorders
)

ICD9_RANGES: tuple[tuple[str, str, int], ...] = (
    ("3028", "3028", SOGI),  # 302.85 Gender identity disorder (and 302.8x)
    ("3040", "3040", OPIOID_USE),  # Opioid type dependence
    ("3055", "3055", OPIOID_USE),  # Opioid abuse
    ("3050", "3050", ALCOHOL_USE),  # Alcohol abuse
    ("V1541", "V1542", VIOLENCE_ABUSE),  # History of physical, emotional abuse
    ("V6544", "V6544", HIV_STI),  # HIV counseling
    ("V7389", "V7389", HIV_STI),  # Screening for other specified viral diseases (HIV screening)
    ("V7188", "V7188", HIV_STI),  # Observation for other specified suspected conditions (HIV exposure)
    ("V715", "V715", VIOLENCE_ABUSE),  # Observation following alleged rape or seduction
    ("V6111", "V6112", VIOLENCE_ABUSE),  # Counseling for victim/perpetrator of spousal and partner abuse
    ("V6121", "V6122", VIOLENCE_ABUSE),  # Counseling for victim/perpetrator of child abuse
    ("9955", "9955", VIOLENCE_ABUSE),  # Child maltreatment syndrome
    ("9958", "9958", VIOLENCE_ABUSE),  # Adult maltreatment (995.80-995.85)
    ("0795", "0795", HIV_STI),  # Retrovirus infections (079.53 HIV-2)
    ("2826", "2826", SICKLE_CELL),  # Sickle-cell disease
    ("291", "291", ALCOHOL_USE),  # Alcohol-induced mental disorders
    ("303", "303", ALCOHOL_USE),  # Alcohol dependence syndrome
    ("292", "292", SUBSTANCE_USE),  # Drug-induced mental disorders
    ("304", "305", SUBSTANCE_USE),  # Drug dependence; nondependent abuse of drugs
    ("290", "319", MENTAL_HEALTH),  # Chapter 5: mental disorders
    ("042", "042", HIV_STI),  # HIV disease
    ("V08", "V08", HIV_STI),  # Asymptomatic HIV infection status
    ("090", "099", HIV_STI),  # Syphilis and other venereal diseases
    ("140", "208", ONCOLOGY),  # Malignant neoplasms
    ("230", "239", ONCOLOGY),  # In situ and uncertain or unspecified neoplasms
    ("758", "758", GENETIC),  # Chromosomal anomalies
    ("V83", "V84", GENETIC),  # Genetic carrier status; genetic susceptibility to disease
    ("630", "679", REPRODUCTIVE),  # Chapter 11: complications of pregnancy, childbirth and the puerperium
    ("V22", "V28", REPRODUCTIVE),  # Pregnancy, outcome of delivery, procreative management, antenatal screening
    ("V61", "V61", REPRODUCTIVE),  # Family circumstances (V61.5-V61.7 pregnancy; V61.1x abuse: see above)
    ("E960", "E969", VIOLENCE_ABUSE),  # Homicide and injury purposely inflicted by other persons
    ("E950", "E959", MENTAL_HEALTH),  # Suicide and self-inflicted injury
)


def _ranked(ranges: tuple[tuple[str, str, int], ...]) -> tuple[tuple[str, str, int], ...]:
    # Longer bounds are more specific; among equals the table order (narrow blocks first) stands.
    return tuple(sorted(ranges, key=lambda r: -len(r[0])))


_ICD_RANGES: dict[str, tuple[tuple[str, str, int], ...]] = {
    ICD10: _ranked(ICD10_RANGES), ICD10_WHO: _ranked(ICD10_RANGES), ICD9: _ranked(ICD9_RANGES),
}

# Phrases in free text (lower case, matched on word boundaries) -> category. The displays of the
# coded findings above as clinical notes spell them, unambiguous words, and the ingredients of the
# RxNorm ingredient list (docs/sensitivity.md) so a medication is labelled whatever product code it has.
SENSITIVE_TERMS: dict[str, int] = {
    "depressive disorder": MENTAL_HEALTH, "major depression": MENTAL_HEALTH, "depression": MENTAL_HEALTH,
    "anxiety": MENTAL_HEALTH, "stress (finding)": MENTAL_HEALTH, "schizophrenia": MENTAL_HEALTH,
    "bipolar disorder": MENTAL_HEALTH, "posttraumatic stress disorder": MENTAL_HEALTH, "ptsd": MENTAL_HEALTH,
    "suicide": MENTAL_HEALTH, "suicidal": MENTAL_HEALTH, "psychiatric": MENTAL_HEALTH,
    "psychosis": MENTAL_HEALTH, "psychotic": MENTAL_HEALTH, "obsessive-compulsive": MENTAL_HEALTH,
    "mental disorder": MENTAL_HEALTH, "eating disorder": MENTAL_HEALTH, "anorexia nervosa": MENTAL_HEALTH,
    "psychotherapy": MENTAL_HEALTH, "self-harm": MENTAL_HEALTH,
    "sertraline": MENTAL_HEALTH, "fluoxetine": MENTAL_HEALTH, "citalopram": MENTAL_HEALTH,
    "escitalopram": MENTAL_HEALTH, "paroxetine": MENTAL_HEALTH, "bupropion": MENTAL_HEALTH,
    "lithium carbonate": MENTAL_HEALTH, "quetiapine": MENTAL_HEALTH, "olanzapine": MENTAL_HEALTH,
    "risperidone": MENTAL_HEALTH, "aripiprazole": MENTAL_HEALTH, "haloperidol": MENTAL_HEALTH,
    "clozapine": MENTAL_HEALTH,
    "psychotherapy note": PSYCHOTHERAPY_NOTE,
    "misuses drugs": SUBSTANCE_USE, "drug abuse": SUBSTANCE_USE, "drug overdose": SUBSTANCE_USE,
    "substance abuse": SUBSTANCE_USE, "substance use disorder": SUBSTANCE_USE, "drug dependence": SUBSTANCE_USE,
    "naltrexone": SUBSTANCE_USE,
    "alcoholism": ALCOHOL_USE, "alcohol dependence": ALCOHOL_USE, "alcohol abuse": ALCOHOL_USE,
    "alcohol use disorder": ALCOHOL_USE, "unhealthy alcohol drinking behavior": SUBSTANCE_USE,
    "disulfiram": ALCOHOL_USE, "acamprosate": ALCOHOL_USE,
    "opioid abuse": OPIOID_USE, "opioid dependence": OPIOID_USE, "opioid use disorder": OPIOID_USE,
    "heroin": OPIOID_USE, "methadone": OPIOID_USE, "buprenorphine": OPIOID_USE,
    "hiv": HIV_STI, "human immunodeficiency virus": HIV_STI, "acquired immunodeficiency": HIV_STI,
    "syphilis": HIV_STI, "gonorrhea": HIV_STI, "chlamydia": HIV_STI, "chlamydial infection": HIV_STI,
    "sexually transmitted": HIV_STI, "genital herpes": HIV_STI, "trichomoniasis": HIV_STI,
    "emtricitabine": HIV_STI, "tenofovir": HIV_STI, "efavirenz": HIV_STI, "dolutegravir": HIV_STI,
    "bictegravir": HIV_STI, "zidovudine": HIV_STI, "lamivudine": HIV_STI, "raltegravir": HIV_STI,
    "pregnancy": REPRODUCTIVE, "pregnant": REPRODUCTIVE, "miscarriage": REPRODUCTIVE, "prenatal": REPRODUCTIVE,
    "postnatal": REPRODUCTIVE, "tubal ligation": REPRODUCTIVE, "contraceptive": REPRODUCTIVE,
    "contraception": REPRODUCTIVE, "termination of pregnancy": REPRODUCTIVE, "abortion": REPRODUCTIVE,
    "infertility": REPRODUCTIVE, "childbirth": REPRODUCTIVE, "intrauterine device": REPRODUCTIVE,
    "genetic test": GENETIC, "brca1": GENETIC, "brca2": GENETIC, "genetic counseling": GENETIC,
    "genetic counselling": GENETIC,
    "intimate partner abuse": VIOLENCE_ABUSE, "domestic violence": VIOLENCE_ABUSE, "domestic abuse": VIOLENCE_ABUSE,
    "sexual abuse": VIOLENCE_ABUSE, "physical assault": VIOLENCE_ABUSE, "child abuse": VIOLENCE_ABUSE,
    "reports of violence": VIOLENCE_ABUSE, "sexual assault": VIOLENCE_ABUSE, "rape": VIOLENCE_ABUSE,
    "cancer": ONCOLOGY, "malignant neoplasm": ONCOLOGY, "carcinoma": ONCOLOGY, "chemotherapy": ONCOLOGY,
    "malignant tumor": ONCOLOGY, "leukemia": ONCOLOGY, "lymphoma": ONCOLOGY, "melanoma": ONCOLOGY,
    "sickle cell": SICKLE_CELL, "sickle-cell": SICKLE_CELL,
    "transgender": SOGI, "transsexual": SOGI, "gender identity": SOGI, "gender dysphoria": SOGI,
    "sexual orientation": SOGI, "sex reassignment": SOGI, "homosexual": SOGI, "bisexual": SOGI,
    "lesbian": SOGI,
}


def _trie_pattern(terms: Iterable[str]) -> str:
    """The terms as one regex trie: shared prefixes once, each term's end followed by no word character.

    At each position it matches what the flat alternation of the terms longest first, then ``(?!\\w)``,
    matches (longer continuations are tried before a term ending), in about a third of the time: the
    flat form tries every term at every word start.
    """
    trie: dict[str, dict] = {}
    for term in terms:
        node = trie
        for char in term:
            node = node.setdefault(char, {})
        node[""] = {}

    def build(node: dict[str, dict]) -> str:
        branches = [re.escape(char) + build(child) for char, child in sorted(node.items()) if char]
        if "" in node:
            branches.append(r"(?!\w)")  # a term ends here, tried after every longer continuation
        return branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"

    return build(trie)


_TERMS = re.compile(r"\b(" + _trie_pattern(SENSITIVE_TERMS) + ")")
# Attachment data is searched when it decodes as UTF-8 text, whatever its contentType says (bigger
# attachments in their first MAX_TEXT_BYTES).
MAX_TEXT_BYTES = 1024 * 1024
# Keys whose string values are identifiers or structure, not text a clinician wrote.
_NOT_TEXT_KEYS = frozenset({
    "resourceType", "id", "reference", "system", "code", "url", "fullUrl", "version", "status", "data",
    "contentType", "language", "hash", "value", "unit", "use", "type", "div",
})
_TAG = re.compile(r"<[^>]*>")


@dataclass
class Findings:
    """Why a resource got its categories: per source, for the labelling report."""

    coded: dict[tuple[str, str], int] = field(default_factory=dict)  # (system, code) -> category
    unlabelled_codes: set[tuple[str, str, str]] = field(default_factory=set)  # (system, code, display)
    text: set[int] = field(default_factory=set)
    incoming: set[int] = field(default_factory=set)

    @property
    def categories(self) -> list[int]:
        """The record's categories: sub-categories with their parents, confidentiality never weakened."""
        found = set(self.coded.values()) | self.text | self.incoming
        found |= {security_labels.PARENT_CATEGORY[c] for c in found if c in security_labels.PARENT_CATEGORY}
        specific = found - {RESTRICTED, VERY_RESTRICTED, NORMAL}
        # A confidentiality label that arrived stays only where the sensitive categories do not imply it already.
        if VERY_RESTRICTED in found and security_labels.confidentiality(specific) != "V":
            specific.add(VERY_RESTRICTED)
        elif RESTRICTED in found and not specific:
            specific.add(RESTRICTED)
        return sorted(specific) if specific else [NORMAL]


def _strings(node: Any, key: str = "") -> Iterator[str]:
    """Clinical free text in a FHIR JSON tree: displays, text, notes, narrative and attachment data."""
    # Collected by plain recursion into one list: nested generators cost a frame per value and level.
    found: list[str] = []
    _add_strings(node, key, found)
    return iter(found)


def _add_strings(node: Any, key: str, found: list[str]) -> None:
    if isinstance(node, dict):
        data = node.get("data")  # an Attachment's base64 content
        if isinstance(data, str):
            decoded = _decode_attachment(data)
            if decoded is not None:
                found.append(decoded)
        div = node.get("div")
        if isinstance(div, str):
            found.append(html.unescape(_TAG.sub(" ", div)))
        for child_key, value in node.items():
            if isinstance(value, str):
                if child_key not in _NOT_TEXT_KEYS:
                    found.append(value)
            else:
                _add_strings(value, child_key, found)
    elif isinstance(node, list):
        for item in node:
            if isinstance(item, str):
                if key not in _NOT_TEXT_KEYS:
                    found.append(item)
            else:
                _add_strings(item, key, found)
    elif isinstance(node, str) and key not in _NOT_TEXT_KEYS:
        found.append(node)


def _decode_attachment(data: str) -> str | None:
    """Attachment data as text when it is base64 of UTF-8 text (any contentType, any case), else None."""
    try:
        raw = base64.b64decode(data[: MAX_TEXT_BYTES // 3 * 4], validate=False)
        text = raw.decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    return html.unescape(_TAG.sub(" ", text))


def categorize_text(text: str) -> set[int]:
    """Categories of the sensitive terms found in free text."""
    return {SENSITIVE_TERMS[m.group(1)] for m in _TERMS.finditer(text.casefold())}


def _codings(node: Any) -> Iterator[tuple[str, str, str]]:
    """Every (system, code, display) anywhere in a FHIR JSON tree, except security labels (read apart)."""
    found: list[tuple[str, str, str]] = []  # plain recursion into one list, as _strings
    _add_codings(node, found)
    return iter(found)


def _add_codings(node: Any, found: list[tuple[str, str, str]]) -> None:
    if isinstance(node, dict):
        system, code = node.get("system"), node.get("code")
        if isinstance(system, str) and isinstance(code, str):
            display = node.get("display")
            found.append((system, code, display if isinstance(display, str) else ""))
        for key, value in node.items():
            if key not in ("security", "tag") and isinstance(value, (dict, list)):
                _add_codings(value, found)
    elif isinstance(node, list):
        for item in node:
            if isinstance(item, (dict, list)):
                _add_codings(item, found)


def _incoming_labels(node: Any) -> Iterator[int]:
    """Categories of the security labels a resource arrived with (meta.security, also of contained resources)."""
    if isinstance(node, dict):
        meta = node.get("meta")
        labels = meta.get("security") if isinstance(meta, dict) else None
        for label in labels if isinstance(labels, list) else ():
            if isinstance(label, dict):
                found = _label_category(label.get("system"), label.get("code"))
                if found is not None:
                    yield found
        for value in node.values():
            yield from _incoming_labels(value)
    elif isinstance(node, list):
        for item in node:
            yield from _incoming_labels(item)


def _label_category(system: Any, code: Any) -> int | None:
    """A security label as a category. Unknown sensitivity codes and R/V never become NORMAL."""
    category = security_labels.category_of_label(system, code)
    if category is not None:
        return category
    if security_labels.canonical_system(system) == security_labels.ACT_CODE:
        return RESTRICTED  # an HL7 sensitivity code CareChain has no category for: restricted, never normal
    return None


def categorize_code(system: str, code: str) -> int | None:
    """Category of one coded concept (system under any URI or OID form), or None when it is not sensitive."""
    system = canonical_system(system)
    code = code.strip()
    category = EXACT_CODES.get((system, code))
    if category is not None:
        return category
    ranges = _ICD_RANGES.get(system)
    if ranges:
        normalized = code.upper().replace(".", "")
        for first, last, range_category in ranges:
            head = normalized[: len(first)]
            if len(head) == len(first) and first <= head <= last:
                return range_category
    return None


def explain(resource: dict[str, Any]) -> Findings:
    """What was found in a resource and where: coded concepts, free text, incoming labels."""
    findings = Findings()
    for system, code, display in _codings(resource):
        category = categorize_code(system, code)
        if category is None:
            findings.unlabelled_codes.add((canonical_system(system), code, display))
        else:
            findings.coded[(canonical_system(system), code)] = category
    for text in _strings(resource):
        findings.text |= categorize_text(text)
    findings.incoming = set(_incoming_labels(resource))
    return findings


# Joins a resource's texts for one search: no term contains it, and like a string's end it is neither a
# word character nor cased, so every term matches (and casefolds) exactly as in each text alone.
_TEXT_SEPARATOR = "\x00"


def categorize(resource: dict[str, Any]) -> list[int]:
    """Sorted sensitivity categories of a FHIR resource (codes, text, incoming labels); [NORMAL] if none.

    The same categories as :func:`explain` gives, without its bookkeeping for the labelling report:
    unlabelled codes are not collected and all texts are searched in one pass.
    """
    findings = Findings()
    for system, code, _display in _codings(resource):
        category = categorize_code(system, code)
        if category is not None:
            findings.coded[(system, code)] = category  # keyed only for the categories' values
    findings.text = categorize_text(_TEXT_SEPARATOR.join(_strings(resource)))
    findings.incoming = set(_incoming_labels(resource))
    return findings.categories


# The primary code element(s) of each resource type: what a consent's provision.code is compared with
# (FHIR Consent.provision.code, "if this code is found in an instance"). Other codings of a resource
# (category, bodySite, interpretation, components, ...) do not count; unlisted types carry no codes.
PRIMARY_CODE_ELEMENTS: dict[str, tuple[str, ...]] = {
    "AllergyIntolerance": ("code",),
    "CarePlan": ("category",),
    "ClinicalImpression": ("code",),
    "Condition": ("code",),
    "Device": ("type",),
    "DeviceRequest": ("codeCodeableConcept",),
    "DiagnosticReport": ("code",),
    "DocumentReference": ("type",),
    "Encounter": ("type",),
    "FamilyMemberHistory": ("condition.code",),
    "Goal": ("description",),
    "Immunization": ("vaccineCode",),
    "ImagingStudy": ("procedureCode",),
    "Medication": ("code",),
    "MedicationAdministration": ("medicationCodeableConcept",),
    "MedicationDispense": ("medicationCodeableConcept",),
    "MedicationRequest": ("medicationCodeableConcept",),
    "MedicationStatement": ("medicationCodeableConcept",),
    "Observation": ("code",),
    "Procedure": ("code",),
    "RiskAssessment": ("code",),
    "ServiceRequest": ("code",),
    "Specimen": ("type",),
}


def concepts_at(node: Any, path: list[str]) -> Iterator[dict[str, Any]]:
    """The CodeableConcepts at a dotted element path (arrays followed at every step)."""
    if isinstance(node, list):
        for item in node:
            yield from concepts_at(item, path)
        return
    if not isinstance(node, dict):
        return
    if not path:
        yield node
        return
    yield from concepts_at(node.get(path[0]), path[1:])


def clinical_code(system: str, code: str) -> str:
    """One coding as CareChain compares codes: ``<canonical system>|<code>`` (URI and OID forms agree)."""
    return f"{canonical_system(system)}|{code.strip()}"


def clinical_codes(resource: dict[str, Any]) -> list[str]:
    """Sorted, unique ``system|code`` of the codings of a resource's primary code element(s)."""
    found: set[str] = set()
    for element in PRIMARY_CODE_ELEMENTS.get(str(resource.get("resourceType", "")), ()):
        for concept in concepts_at(resource, element.split(".")):
            codings = concept.get("coding")
            for coding in codings if isinstance(codings, list) else []:
                if not isinstance(coding, dict):
                    continue
                system, code = coding.get("system"), coding.get("code")
                if isinstance(system, str) and isinstance(code, str) and system.strip() and code.strip():
                    found.add(clinical_code(system, code))
    return sorted(found)


def category_name(category: int) -> str:
    """Short name, e.g. MENTAL_HEALTH (the number for values this version does not know)."""
    try:
        return Category.Name(category).removeprefix("SENSITIVITY_CATEGORY_")
    except ValueError:
        return str(category)
