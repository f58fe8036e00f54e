"""Issue 14's story end to end on six real processes: one patient, one health record across three hospitals.

The story runs step by step (carechain.dev.network_story, the same code as ``carechain demo --story
network``); after each step the test checks what a user would notice, with its own calls where the
story's outcome is not proof enough.
"""

from __future__ import annotations

import json
import re
import shlex
import stat
import subprocess
import sys

import grpc
import pytest

from carechain.audit.v1 import audit_pb2
from carechain.client.sdk import Category, Purpose
from carechain.consent.policy import DENIAL_MESSAGE
from carechain.dev.network_story import (
    ALLERGY,
    DIAGNOSIS,
    LAB_RESULT,
    MEDICATION,
    PSYCHIATRIC_NOTE,
    SUMMARY_RECORDS,
    NetworkStory,
)

NORMAL = [Category.SENSITIVITY_CATEGORY_NORMAL]


def _refusal(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def test_one_patient_one_record_across_the_network(network) -> None:
    lines: list[str] = []
    with NetworkStory(network.endpoints, network.layout.operator_signer(), say=lines.append) as story:
        out = story.outcome

        story.register()
        assert out.categories[DIAGNOSIS] == [Category.SENSITIVITY_CATEGORY_ONCOLOGY]
        assert out.categories[PSYCHIATRIC_NOTE] == [Category.SENSITIVITY_CATEGORY_MENTAL_HEALTH]
        assert all(out.categories[name] == NORMAL for name in (MEDICATION, ALLERGY, LAB_RESULT))
        assert out.patient_id != out.linked_patient_id, "two hospitals, two local pseudonyms before the link"

        story.link()
        assert out.resolved_network_id == out.patient_id
        # An organisation resolves only its own local ids (IHE PIXm): to A and C, B's id is unknown.
        for other in ("hospital-a", "hospital-c"):
            refused = _refusal(lambda other=other: story.client(other).resolve_patient(out.fhir_ids["B"]))
            assert refused.code() == grpc.StatusCode.NOT_FOUND, f"{other} resolved hospital B's patient id"

        story.consent()
        physician = story.client("er-physician")
        # Without break-glass the physician sees only what consent permits, and is never told why not.
        denied = _refusal(lambda: physician.get_record(out.record_ids[LAB_RESULT], Purpose.PURPOSE_OF_USE_ETREAT))
        assert (denied.code(), denied.details()) == (grpc.StatusCode.PERMISSION_DENIED, DENIAL_MESSAGE)

        story.emergency_summary()
        assert [r.record_id for r in out.condition_search.records] == [out.record_ids[DIAGNOSIS]]
        assert out.condition_search.withheld == 1, "the psychiatric Condition is withheld, counted, not named"
        summary_ids = {r.record_id for r in out.summary.records}
        assert summary_ids == {out.record_ids[name] for name in SUMMARY_RECORDS}, "A's and B's records, no more"
        assert out.summary.withheld == 1
        by_id = {r.record_id: r for r in out.summary.records}
        for name in SUMMARY_RECORDS:
            read = by_id[out.record_ids[name]]
            assert json.loads(read.resource_json)["id"] == out.resources[name]["id"]
            # The cancer history is the patient's consent to emergency physicians; the rest is break-glass.
            assert read.break_glass == (name != DIAGNOSIS), name
        assert all(b"Psychiatric" not in r.resource_json for r in out.summary.records)

        story.patient_review()
        reads = {(e.event.record_id, e.event.outcome) for e in out.history
                 if e.event.actor_id == out.physician_id and e.event.action == audit_pb2.AUDIT_ACTION_READ}
        for name in SUMMARY_RECORDS:  # B's lab result too: the network patient's history covers linked records
            assert (out.record_ids[name], audit_pb2.AUDIT_OUTCOME_SUCCESS) in reads, f"{name} read not in history"
        assert any(n.event.event.actor_id == out.physician_id and "break-glass" in n.message
                   for n in out.notifications), "no break-glass notification for the patient"
        searches = [e.event for e in out.history if e.event.action == audit_pb2.AUDIT_ACTION_SEARCH]
        assert [(e.actor_id, e.outcome) for e in searches] == [(out.physician_id, audit_pb2.AUDIT_OUTCOME_SUCCESS)]

        story.amend()
        assert out.amendment.record_id == out.record_ids[DIAGNOSIS] and out.amendment.version == 2
        assert json.loads(out.amended_read.resource_json)["stage"], "the physician reads the amendment"
        assert json.loads(out.amended_read.versioned_resource_json)["meta"]["versionId"] == "2"
        written = out.amended_read.record_version
        assert (written.version, written.author_organization_id) == (2, out.hospital_ids["A"])
        provenance = json.loads(out.amended_read.provenance_json)
        assert provenance["resourceType"] == "Provenance"
        assert [v.version for v in out.diagnosis_versions] == [1, 2]
        first = physician.get_record(out.record_ids[DIAGNOSIS], Purpose.PURPOSE_OF_USE_ETREAT, version=1)
        assert "stage" not in json.loads(first.resource_json), "version 1 reads as first written"

        story.erase()
        assert list(out.erasure.record_ids) == [out.record_ids[LAB_RESULT]] and out.erasure_proven
        erasures = {(e.event.actor_id, e.event.outcome) for e in story.client("patient").access_history()
                    if e.event.action == audit_pb2.AUDIT_ACTION_ERASE}
        assert (out.patient_id, audit_pb2.AUDIT_OUTCOME_SUCCESS) in erasures, "the erasure is in the patient's history"
        assert out.erased_read_code == grpc.StatusCode.FAILED_PRECONDITION
        assert re.search(r"erased on \d{4}-\d{2}-\d{2}", out.erased_read_details), out.erased_read_details
        after = physician.patient_summary(out.patient_id, purpose=Purpose.PURPOSE_OF_USE_ETREAT, break_glass=True,
                                          break_glass_reason="still in the emergency department")
        assert out.record_ids[LAB_RESULT] not in {r.record_id for r in after.records}

        story.verify()
        assert out.chain_ok and out.blocks_checked > 1
        assert out.audit_ok

    assert len(lines) >= len(NetworkStory.STEPS)
    assert not any(fhir_id in line for line in lines for fhir_id in out.fhir_ids.values()), \
        "the narration names pseudonyms, never a hospital's local patient id"


def test_carechain_demo_tells_the_network_story_and_its_commands_work(network) -> None:
    """`carechain demo --story network`, as a user runs it, leaves key files and commands that run as printed."""
    data_dir = network.layout.root
    demo = subprocess.run(
        [sys.executable, "-m", "carechain", "demo", "--story", "network", "--data-dir", str(data_dir)],
        capture_output=True, text=True, timeout=600)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "got the patient summary: 4 records from hospitals A and B, 1 withheld" in demo.stdout
    assert "chain verification: OK" in demo.stdout and "audit trail verification: OK" in demo.stdout
    assert "PRIVATE KEY" not in demo.stdout
    for key_file in (data_dir / "demo-keys" / "network").glob("*.key"):
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600, key_file
        assert key_file.read_text().startswith("CareChain-Principal: "), key_file
    commands = [shlex.split(line.split("   #")[0]) for line in demo.stdout.splitlines() if "--key-file" in line]
    assert len(commands) >= 3, demo.stdout
    ran = {}
    for words in commands:
        args = words[next(i for i, w in enumerate(words) if w.endswith("carechain")) + 1:]
        done = subprocess.run([sys.executable, "-m", "carechain", *args, "--json"], capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, (args, done.stderr)
        ran[args[0] if args[0] == "history" else args[1]] = json.loads(done.stdout)
    assert {r["resource_type"] for r in ran["summary"]["records"]} == {
        "Condition", "MedicationRequest", "AllergyIntolerance"}, "the erased lab result is gone, the rest is there"
    assert [r["resource_type"] for r in ran["search"]["records"]] == ["Condition"]
    assert any(d.get("action") == "AUDIT_ACTION_ERASE" for d in ran["history"]), "the erasure is in the history"
