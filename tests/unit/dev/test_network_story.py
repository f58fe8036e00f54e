"""The network story's records (carechain.dev.network_story) are what the story says they are, with no network."""

from __future__ import annotations

import json

import pytest

from carechain.cli import build_parser
from carechain.common.v1 import common_pb2
from carechain.core.fhir import validate_resource
from carechain.dev import network_story as story
from carechain.labels.sensitivity import categorize

Category = common_pb2.SensitivityCategory
FHIR_ID = "3f1c6a2e-0000-4000-8000-000000000001"

# The story depends on these labels: consent opens ONCOLOGY to emergency physicians, break-glass the
# NORMAL records, and nothing opens MENTAL_HEALTH.
EXPECTED = {
    story.DIAGNOSIS: [Category.SENSITIVITY_CATEGORY_ONCOLOGY],
    story.MEDICATION: [Category.SENSITIVITY_CATEGORY_NORMAL],
    story.ALLERGY: [Category.SENSITIVITY_CATEGORY_NORMAL],
    story.PSYCHIATRIC_NOTE: [Category.SENSITIVITY_CATEGORY_MENTAL_HEALTH],
    story.LAB_RESULT: [Category.SENSITIVITY_CATEGORY_NORMAL],
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_story_record_is_valid_fhir_about_the_patient_and_labelled_as_the_story_needs(name: str) -> None:
    resource = story._WRITERS[name](FHIR_ID)
    validate_resource(json.dumps(resource).encode(), FHIR_ID, 1 << 20)  # raises InvalidArgument if not
    assert categorize(resource) == EXPECTED[name]


def test_the_summary_holds_every_record_but_the_psychiatric_note() -> None:
    written = set(story.RECORDS_AT_A) | set(story.RECORDS_AT_B)
    assert written == set(EXPECTED)
    assert set(story.SUMMARY_RECORDS) == written - {story.PSYCHIATRIC_NOTE}


def test_the_amended_diagnosis_is_the_same_condition_still_oncology_and_valid() -> None:
    original = story._WRITERS[story.DIAGNOSIS](FHIR_ID)
    amended = story.amended_diagnosis(original)
    validate_resource(json.dumps(amended).encode(), FHIR_ID, 1 << 20)
    assert amended["id"] == original["id"] and amended["code"] == original["code"]
    assert amended["stage"] and "stage" not in original, "the amendment must not change the original"
    assert categorize(amended) == [Category.SENSITIVITY_CATEGORY_ONCOLOGY]


@pytest.mark.parametrize(("argv", "expected"), [
    (["demo"], "consent"), (["demo", "--story", "network"], "network"), (["demo", "--story", "all"], "all")])
def test_carechain_demo_chooses_a_story(argv: list[str], expected: str) -> None:
    assert build_parser().parse_args(argv).story == expected


def test_carechain_demo_rejects_an_unknown_story(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["demo", "--story", "other"])
    assert exited.value.code == 2 and "invalid choice" in capsys.readouterr().err
