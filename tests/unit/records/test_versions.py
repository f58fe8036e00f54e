"""UpdateRecord's checks before anything is written (carechain.records.versions): only the authoring
organisation (the same answer for an unknown record), not an erased record, if_version must be the latest;
and what a read says about a version (carechain.records.provenance)."""

from __future__ import annotations

import json

import grpc
import pytest
from consent_ledger_fake import CHAIN, SEALER

from carechain.audit.v1 import audit_pb2
from carechain.common.v1 import common_pb2 as c
from carechain.consent.v1 import consent_pb2
from carechain.core.crypto import Ed25519Signer
from carechain.core.decision_claims import data_key_id, data_key_record_id
from carechain.core.errors import FailedPrecondition, InvalidArgument, PermissionDenied, Unavailable
from carechain.identity.v1 import identity_pb2
from carechain.ledger.v1 import ledger_pb2
from carechain.records import provenance
from carechain.records.gateway import RecordsGateway
from carechain.records.versions import NOT_AUTHOR, RecordVersions, record_version_parts
from carechain.runtime.auth import Caller

AUTHOR = Caller("org-a", c.PRINCIPAL_KIND_ORGANIZATION)
AUTHORS_PRACTITIONER = Caller("prac-1", c.PRINCIPAL_KIND_PRACTITIONER, "org-a", "oncology")
OTHER_ORG = Caller("org-b", c.PRINCIPAL_KIND_ORGANIZATION)
OTHER_PRACTITIONER = Caller("prac-2", c.PRINCIPAL_KIND_PRACTITIONER, "org-b", "oncology")


class NotFoundError(grpc.RpcError):
    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.NOT_FOUND


class Ledger:
    """A ledger holding rec-1 in two versions by org-a; every other id is unknown. Nothing else is asked."""

    def __init__(self, erased: bool = False) -> None:
        self.ledger = self.identity = self.storage = self.consent = self.audit = self  # only the ledger is asked
        self.erased = erased
        self.versions = {v: self._registration(v) for v in (1, 2)}

    @staticmethod
    def _registration(version: int) -> ledger_pb2.RegisterRecord:
        record = ledger_pb2.RegisterRecord(record_id="rec-1", patient_id="psn-1", organization_id="org-a",
                                           content_sha256=f"{version:02x}" * 32, content_size=10 * version,
                                           version=version, previous_log_index=7 if version == 2 else 0)
        record.sealed_metadata.CopyFrom(SEALER.seal_record(record, ledger_pb2.RecordMetadata(
            resource_type="Condition", categories=[c.SENSITIVITY_CATEGORY_NORMAL], author_id="prac-1")))
        return record

    def GetRecordEntry(self, request, **_):  # noqa: N802
        if request.record_id != "rec-1" or request.version > 2:
            raise NotFoundError()
        version = request.version or 2
        return ledger_pb2.RecordEntry(record=self.versions[version], log_index=7 + version, erased=self.erased,
                                      registered_at_ms=1_767_225_600_000 + version, latest_version=2)


def versions(ledger: Ledger) -> RecordVersions:
    gateway = RecordsGateway(ledger, Ed25519Signer.generate("svc-records"), CHAIN, 1 << 20, SEALER)
    return RecordVersions(gateway)


@pytest.mark.parametrize("caller", [OTHER_ORG, OTHER_PRACTITIONER])
@pytest.mark.parametrize("record_id", ["rec-1", "rec-unknown"])
def test_only_the_author_organisation_updates_and_an_unknown_record_answers_the_same(caller, record_id) -> None:
    with pytest.raises(PermissionDenied) as refused:
        versions(Ledger()).update(caller, record_id, b"{}")
    assert refused.value.message == NOT_AUTHOR


@pytest.mark.parametrize("caller", [AUTHOR, AUTHORS_PRACTITIONER])
def test_if_version_must_be_the_latest(caller) -> None:
    with pytest.raises(FailedPrecondition) as stale:
        versions(Ledger()).update(caller, "rec-1", b"{}", if_version=1)
    assert stale.value.message == "if_version: the record's latest version is 2"


def test_an_erased_record_is_not_amended() -> None:
    with pytest.raises(FailedPrecondition) as erased:
        versions(Ledger(erased=True)).update(AUTHOR, "rec-1", b"{}")
    assert erased.value.message == "record_id: the record was erased"


def test_every_versions_data_key_and_blob_are_enumerated() -> None:
    parts = record_version_parts(Ledger(), "rec-1")
    assert [(p.version, p.data_key_id, p.content_sha256, p.content_size) for p in parts] == [
        (1, "rec-1", "01" * 32, 10), (2, "rec-1:v2", "02" * 32, 20)]


def test_data_key_ids_name_their_record() -> None:
    assert data_key_id("rec-1", 1) == "rec-1" and data_key_id("rec-1", 3) == "rec-1:v3"
    assert data_key_record_id("rec-1:v3") == "rec-1" and data_key_record_id("rec-1") == "rec-1"
    assert data_key_record_id("rec-1:vx") == "rec-1:vx"


def test_a_read_version_carries_its_meta_and_provenance() -> None:
    ledger = Ledger()
    record, metadata = ledger.versions[2], SEALER.open_record(ledger.versions[2])
    written = provenance.record_version(record, metadata, 9, 1_767_225_600_123)
    assert (written.version, written.author_organization_id, written.author_practitioner_id) == (2, "org-a", "prac-1")
    resource = json.loads(provenance.with_version_meta(b'{"resourceType":"Condition","meta":{"tag":[]}}', written))
    assert resource["meta"] == {"tag": [], "versionId": "2", "lastUpdated": "2026-01-01T00:00:00.123Z"}
    prov = json.loads(provenance.provenance_resource(written, "Condition"))
    assert prov["target"] == [{"reference": "Condition/rec-1/_history/2"}]
    assert prov["recorded"] == "2026-01-01T00:00:00.123Z"
    assert prov["activity"]["coding"][0]["code"] == "UPDATE"
    agent = prov["agent"][0]
    assert agent["who"]["identifier"]["value"] == "prac-1" and agent["who"]["type"] == "Practitioner"
    assert agent["onBehalfOf"]["identifier"]["value"] == "org-a"
    by_org = provenance.record_version(ledger.versions[1], ledger_pb2.RecordMetadata(author_id="org-a"), 8, 0)
    first = json.loads(provenance.provenance_resource(by_org, "Condition"))
    assert first["activity"]["coding"][0]["code"] == "CREATE"
    assert "onBehalfOf" not in first["agent"][0] and first["agent"][0]["who"]["type"] == "Organization"


class ConsentBehind(Ledger):
    """rec-1 is at version 2 on the ledger, but consent permits having folded version 1 only."""

    def __init__(self) -> None:
        super().__init__()
        self.released: list[str] = []
        self.events: list[object] = []

    def DecideMany(self, request, **_):  # noqa: N802
        return consent_pb2.DecideManyResponse(results=[consent_pb2.DecideResult(decision=consent_pb2.Decision(
            effect=consent_pb2.DECISION_EFFECT_PERMIT, decision_token="t", record_version=1))
            for _ in request.requests])

    def ReleaseDataKeys(self, request, **_):  # noqa: N802
        self.released.extend(item.record_id for item in request.items)
        return identity_pb2.ReleaseDataKeysResponse(results=[identity_pb2.ReleaseDataKeyResult(
            error=identity_pb2.BatchItemError(code=grpc.StatusCode.NOT_FOUND.value[0], message="no key"))
            for _ in request.items])

    def RecordEvent(self, request, **_):  # noqa: N802
        self.events.append(request.event)
        return audit_pb2.AuditReceipt(sequence=len(self.events))


def test_a_version_consent_has_not_folded_is_never_served() -> None:
    peers = ConsentBehind()
    gateway = RecordsGateway(peers, Ed25519Signer.generate("svc-records"), CHAIN, 1 << 20, SEALER)
    reader = Caller("prac-9", c.PRINCIPAL_KIND_PRACTITIONER, "org-c", "")
    with pytest.raises(Unavailable):
        gateway.get_record(reader, "rec-1", c.PURPOSE_OF_USE_TREAT, version=2)
    assert peers.released == []  # refused before any key is released
    with pytest.raises(grpc.RpcError):  # the fake identity has no key: what matters is which key was asked for
        gateway.get_record(reader, "rec-1", c.PURPOSE_OF_USE_TREAT)
    assert peers.released == ["rec-1"]  # the latest read is the version consent decided on (1), not 2
    gateway.close()


class PatientRecord(Ledger):
    """rec-1 is a Patient record of psn-1 (hospital FHIR id fhir-1); identity has no data keys to give."""

    def __init__(self) -> None:
        super().__init__()
        self.asked_keys: list[str] = []
        self.events: list[object] = []
        for record in self.versions.values():
            record.sealed_metadata.CopyFrom(SEALER.seal_record(record, ledger_pb2.RecordMetadata(
                resource_type="Patient", categories=[c.SENSITIVITY_CATEGORY_NORMAL], author_id="org-a")))

    def GetPrincipal(self, request, **_):  # noqa: N802
        return identity_pb2.Principal(principal_id=request.principal_id, kind=c.PRINCIPAL_KIND_PATIENT,
                                      organization_id="org-a", fhir_patient_id="fhir-1")

    def GenerateDataKeys(self, request, **_):  # noqa: N802
        self.asked_keys.extend(item.record_id for item in request.items)
        return identity_pb2.GenerateDataKeysResponse(results=[identity_pb2.GenerateDataKeyResult(
            error=identity_pb2.BatchItemError(code=grpc.StatusCode.UNAVAILABLE.value[0], message="no keys"))
            for _ in request.items])

    def RecordEvent(self, request, **_):  # noqa: N802
        self.events.append(request.event)
        return audit_pb2.AuditReceipt(sequence=len(self.events))


@pytest.mark.parametrize("own_id", ["rec-1", "fhir-1", "psn-1"])
def test_a_patient_version_may_be_named_by_the_record_it_amends(own_id) -> None:
    """PUT /Patient/<record id> over FHIR REST: the amended record's id is this patient's, so records accepts it."""
    peers = PatientRecord()
    with pytest.raises(Exception) as failed:  # noqa: PT011 - identity's refusal, past validation, whatever its type
        versions(peers).update(AUTHOR, "rec-1", json.dumps({"resourceType": "Patient", "id": own_id}).encode())
    assert not isinstance(failed.value, InvalidArgument), failed.value
    assert peers.asked_keys == ["rec-1:v3"], failed.value  # validated: the next version's data key was asked for


@pytest.mark.parametrize("other_id", ["rec-2", "fhir-2", "psn-2"])
def test_a_patient_version_named_by_another_id_is_refused(other_id) -> None:
    peers = PatientRecord()
    with pytest.raises(InvalidArgument) as refused:
        versions(peers).update(AUTHOR, "rec-1", json.dumps({"resourceType": "Patient", "id": other_id}).encode())
    assert refused.value.field == "resource_json.id" and other_id not in str(refused.value)
    assert peers.asked_keys == [] and peers.events == []
