"""The records gateway's read path: the action asked of consent, the Part 2 notice, and that a read failing
after the record is known (consent unreachable, key release refused, stored bytes wrong) is audited.

The peers are small in-process stand-ins for the CareChain services the gateway calls (no backend is
mocked: the gateway has none of its own); the real flows run end to end in
tests/e2e/test_consent_disclosure.py.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import grpc
import pytest
from consent_ledger_fake import CHAIN, SEALER
from records_fixtures import decide_many_by_one

from carechain.audit.v1 import audit_pb2
from carechain.common.v1 import common_pb2 as c
from carechain.consent import fhir_consent as f
from carechain.consent.policy import PART2_REDISCLOSURE_NOTICE, PART2_SECURITY_LABELS
from carechain.consent.v1 import consent_pb2
from carechain.core.crypto import Ed25519Signer, seal, sha256_hex
from carechain.core.errors import DataLoss, InvalidArgument, PermissionDenied, Unavailable
from carechain.identity.v1 import identity_pb2
from carechain.ledger.v1 import ledger_pb2
from carechain.records.gateway import RecordsGateway, record_associated_data
from carechain.runtime.auth import Caller
from carechain.storage.v1 import storage_pb2

READER = Caller("prac-1", c.PRINCIPAL_KIND_PRACTITIONER, "org-a", "oncology")
KEY = os.urandom(32)
PLAINTEXT = b'{"resourceType":"Condition"}'


@dataclass
class Peers:
    """Ledger, consent, identity, storage and audit as the gateway sees them, with switchable failures."""

    categories: list[int] = field(default_factory=lambda: [c.SENSITIVITY_CATEGORY_NORMAL])
    consent_down: bool = False
    key_refused: bool = False
    tampered: bool = False
    decided: list[consent_pb2.DecideRequest] = field(default_factory=list)
    events: list[audit_pb2.AuditEvent] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.ciphertext = seal(KEY, PLAINTEXT, record_associated_data("rec-1", "psn-1", 1))
        self.ledger, self.consent, self.identity, self.storage, self.audit = self, self, self, self, self

    def GetRecordEntry(self, request, **_):
        record = ledger_pb2.RegisterRecord(record_id=request.record_id, patient_id="psn-1",
                                           content_sha256=sha256_hex(self.ciphertext), version=1)
        record.sealed_metadata.CopyFrom(SEALER.seal_record(record, ledger_pb2.RecordMetadata(
            resource_type="Condition", categories=self.categories)))
        return ledger_pb2.RecordEntry(record=record)

    def DecideMany(self, request, **_):
        return decide_many_by_one(self.Decide, request)

    def Decide(self, request, **_):
        if self.consent_down:
            raise Unavailable("consent service", "connection refused")
        self.decided.append(request)
        return consent_pb2.Decision(effect=consent_pb2.DECISION_EFFECT_PERMIT, reason="permitted by consent c-1",
                                    decision_token="t", decision_id="d-1", patient_id="psn-1")

    def ReleaseDataKey(self, request, **_):
        if self.key_refused:
            raise PermissionDenied("consent revoked: consent c-1 was revoked at log index 9")
        return identity_pb2.ReleasedDataKey(plaintext_key=KEY)

    def GetBlob(self, request, **_):
        # Flip a bit of the tag (replacing the last byte with a fixed one left it unchanged 1 time in 256).
        data = self.ciphertext[:-1] + bytes([self.ciphertext[-1] ^ 1]) if self.tampered else self.ciphertext
        yield storage_pb2.BlobChunk(data=data)

    # The gateway batches key releases and small blobs (identity.data_key_client, storage.blob_client).
    def ReleaseDataKeys(self, request, **_):
        if self.key_refused:
            return identity_pb2.ReleaseDataKeysResponse(results=[identity_pb2.ReleaseDataKeyResult(
                error=identity_pb2.BatchItemError(code=grpc.StatusCode.PERMISSION_DENIED.value[0],
                                                  message="consent revoked: consent c-1 was revoked at log index 9"))])
        return identity_pb2.ReleaseDataKeysResponse(results=[
            identity_pb2.ReleaseDataKeyResult(key=self.ReleaseDataKey(item)) for item in request.items])

    def GetBlobs(self, request, **_):
        return storage_pb2.GetBlobsResponse(results=[
            storage_pb2.GetBlobResult(data=b"".join(c.data for c in self.GetBlob(None))) for _ in request.sha256])

    def RecordEvent(self, request, **_):
        self.events.append(request.event)
        return audit_pb2.AuditReceipt(sequence=len(self.events))


def gateway(peers: Peers) -> RecordsGateway:
    return RecordsGateway(peers, Ed25519Signer.generate("svc-records"), CHAIN, 1 << 20, SEALER)


def test_a_disclosure_asks_consent_for_disclose_and_is_audited_as_one() -> None:
    peers = Peers(categories=[c.SENSITIVITY_CATEGORY_SUBSTANCE_USE])
    read = gateway(peers).get_record(READER, "rec-1", c.PURPOSE_OF_USE_TREAT, c.CONSENT_ACTION_DISCLOSE)
    assert read.resource_json == PLAINTEXT  # the stored bytes, unchanged
    assert peers.decided[0].action == c.CONSENT_ACTION_DISCLOSE
    assert read.redisclosure_notice == PART2_REDISCLOSURE_NOTICE and read.handling_labels == PART2_SECURITY_LABELS
    labelled = json.loads(read.labelled_resource_json)
    # The category label and confidentiality V first, then the Part 2 handling labels (42 CFR 2.32).
    assert [(s["system"], s["code"]) for s in labelled["meta"]["security"]] == [
        (f.ACT_CODE, "ETH"), ("http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "V"),
        (f.ACT_CODE, "42CFRPart2"), (f.ACT_CODE, "NORDSCLCD")]
    [event] = peers.events
    assert (event.action, event.outcome) == (audit_pb2.AUDIT_ACTION_DISCLOSE, audit_pb2.AUDIT_OUTCOME_SUCCESS)


def test_a_normal_record_has_no_notice_and_correct_is_not_a_read() -> None:
    peers = Peers()
    read = gateway(peers).get_record(READER, "rec-1", c.PURPOSE_OF_USE_TREAT)
    assert peers.decided[0].action == c.CONSENT_ACTION_ACCESS and peers.events[0].action == audit_pb2.AUDIT_ACTION_READ
    assert read.redisclosure_notice == "" and read.handling_labels == () and read.labelled_resource_json == b""
    with pytest.raises(InvalidArgument) as invalid:
        gateway(peers).get_record(READER, "rec-1", c.PURPOSE_OF_USE_TREAT, c.CONSENT_ACTION_CORRECT)
    assert invalid.value.field == "action"


@pytest.mark.parametrize(("failure", "error", "outcome", "reason"), [
    ("consent_down", Unavailable, audit_pb2.AUDIT_OUTCOME_FAILED, "consent decision failed (UNAVAILABLE)"),
    ("key_refused", PermissionDenied, audit_pb2.AUDIT_OUTCOME_DENIED, "data key release refused (PERMISSION_DENIED)"),
    ("tampered", DataLoss, audit_pb2.AUDIT_OUTCOME_FAILED, "stored record could not be read (DATA_LOSS)"),
])
def test_a_failed_read_is_audited_before_the_error_goes_back(failure: str, error: type, outcome: int,
                                                             reason: str) -> None:
    peers = Peers(**{failure: True})
    with pytest.raises(error):
        gateway(peers).get_record(READER, "rec-1", c.PURPOSE_OF_USE_TREAT)
    [event] = peers.events
    assert (event.action, event.outcome, event.reason) == (audit_pb2.AUDIT_ACTION_READ, outcome, reason)
    assert (event.patient_id, event.record_id, event.actor_id) == ("psn-1", "rec-1", "prac-1")
    assert "revoked" not in event.reason  # status names only, never a peer's message
