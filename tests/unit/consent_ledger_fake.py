"""An in-memory stand-in for the ledger's ListTransactions/submit behaviour, for consent tests."""

from __future__ import annotations

import atexit
import pathlib
import shutil
import tempfile
import threading

from carechain.common.v1 import common_pb2
from carechain.consent.rules import attest_policy, signed_by
from carechain.consent.v1 import policy_pb2
from carechain.core.crypto import Ed25519Signer
from carechain.core.layout import DECISION_ISSUER_ID
from carechain.ledger import submission, transactions
from carechain.ledger.contract import NOT_PERMITTED
from carechain.ledger.sealing import LEDGER_METADATA_KEY, LedgerSealer
from carechain.ledger.v1 import ledger_pb2
from carechain.runtime.keyring import LocalKeyring

CHAIN = "test-chain"


def _test_sealer() -> LedgerSealer:
    """A ledger metadata key in an embedded keyring of its own, for the consent tests."""
    directory = pathlib.Path(tempfile.mkdtemp(prefix="carechain-metadata-key-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    keyring = LocalKeyring(directory)
    keyring.create_key(LEDGER_METADATA_KEY)
    return LedgerSealer(keyring, CHAIN)


#: What the records and consent services seal ledger payloads with in these tests.
SEALER = _test_sealer()


#: svc-consent's key in these tests (decision tokens, policy attestations).
CONSENT_SIGNER = Ed25519Signer.generate(DECISION_ISSUER_ID)


def sealed_grant(consent_id: str, patient_id: str, policy: policy_pb2.ConsentPolicy,
                 attested_by: Ed25519Signer | None = CONSENT_SIGNER) -> ledger_pb2.GrantConsent:
    """A GrantConsent whose policy is sealed and attested like ConsentService.SealPolicy does (None: not attested)."""
    grant = ledger_pb2.GrantConsent(consent_id=consent_id, patient_id=patient_id,
                                    sealed_policy=SEALER.seal_policy(consent_id, patient_id, policy))
    if attested_by is not None:
        grant.policy_attestation = attest_policy(attested_by, CHAIN, consent_id, patient_id, grant.sealed_policy)
    return grant


class FakeLedger:
    """Commits every submitted transaction, with a valid flag from a few of the contract rules."""

    def __init__(self, default_limit: int = 500) -> None:
        self.log: list[ledger_pb2.LoggedTransaction] = []
        self.default_limit = default_limit
        self.list_calls = 0
        self._lock = threading.Lock()

    # LedgerService.ListTransactions, called like a stub method.
    def ListTransactions(self, request: ledger_pb2.ListTransactionsRequest, **_: object):
        with self._lock:
            self.list_calls += 1
            limit = request.limit or self.default_limit
            limit = min(limit, self.default_limit)
            page = self.log[request.from_log_index: request.from_log_index + limit]
            return ledger_pb2.ListTransactionsResponse(transactions=page, log_size=len(self.log))

    def commit(self, tx: ledger_pb2.Transaction, valid: bool = True, reason: str = "") -> ledger_pb2.LoggedTransaction:
        with self._lock:
            logged = ledger_pb2.LoggedTransaction(
                log_index=len(self.log), height=len(self.log), transaction=tx,
                result=ledger_pb2.TransactionResult(valid=valid, reason=reason),
            )
            self.log.append(logged)
            return logged

    def append(self, signer: Ed25519Signer, valid: bool = True, **payload: object) -> ledger_pb2.LoggedTransaction:
        body = transactions.new_body(CHAIN, signer.key_id, **payload)
        return self.commit(transactions.sign_transaction(body, signer), valid, "" if valid else "rejected")

    def _verdict(self, body: ledger_pb2.TransactionBody) -> str:
        kind = body.WhichOneof("payload")
        consents = {}
        delegates: set[tuple[str, str]] = set()  # (patient, delegate), active
        for logged in self.log:
            if not logged.result.valid:
                continue
            b = ledger_pb2.TransactionBody.FromString(logged.transaction.body)
            if b.WhichOneof("payload") == "grant_consent":
                consents[b.grant_consent.consent_id] = b.grant_consent.patient_id
            elif b.WhichOneof("payload") == "register_delegate":
                delegates.add((b.register_delegate.patient_id, b.register_delegate.delegate_id))
            elif b.WhichOneof("payload") == "revoke_delegate":
                delegates.discard((b.revoke_delegate.patient_id, b.revoke_delegate.delegate_id))

        # A grant svc-consent relays from the FHIR gateway acts with its patient JWS's signer (the contract
        # verifies that JWS; this fake only takes the signer from it).
        acting = signed_by(body) if kind in ("grant_consent", "revoke_consent") else body.submitter_id

        def acts_for(patient_id: str) -> bool:
            return patient_id == acting or (patient_id, acting) in delegates

        if kind == "grant_consent":
            if not acts_for(body.grant_consent.patient_id):
                return f"{NOT_PERMITTED}only the patient may grant consent"
            if body.grant_consent.consent_id in consents:
                return "consent id already used"
        if kind == "revoke_consent":
            patient_id = consents.get(body.revoke_consent.consent_id)
            if patient_id is None or not acts_for(patient_id):
                return f"{NOT_PERMITTED}only the patient may revoke its consent"
        if kind in ("register_delegate", "revoke_delegate"):
            if getattr(body, kind).patient_id != body.submitter_id:
                return f"{NOT_PERMITTED}only the patient manages its delegates"
        if kind == "break_glass_access" and body.submitter_id != "svc-consent":
            return f"{NOT_PERMITTED}only svc-consent records break-glass windows"
        return ""

    # LedgerService.SubmitTransaction, called like a stub method: an invalid transaction is committed as invalid.
    def SubmitTransaction(self, request: ledger_pb2.SubmitTransactionRequest, **_: object):
        tx = request.transaction
        reason = self._verdict(transactions.decode_body(tx))
        logged = self.commit(tx, valid=not reason, reason=reason)
        return ledger_pb2.SubmitTransactionResponse(
            transaction_hash=transactions.transaction_hash(tx).hex(), height=logged.height,
            log_index=logged.log_index, valid=not reason, reason=reason,
        )

    def submit(self, _stub: object, tx: ledger_pb2.Transaction) -> ledger_pb2.SubmitTransactionResponse:
        """Submit straight to this ledger, as a client would (carechain.ledger.submission.submit)."""
        return submission.submit(self, tx)


def register_principal(ledger: FakeLedger, operator: Ed25519Signer, principal_id: str, kind: int,
                       organization_id: str = "", specialty: str = "", valid: bool = True):
    """Commit a RegisterPrincipal signed by operator."""
    return ledger.append(
        operator, valid=valid,
        register_principal=ledger_pb2.RegisterPrincipal(
            principal_id=principal_id, kind=kind, public_key=bytes(32),
            organization_id=organization_id, specialty=specialty,
        ),
    )


def register_record(ledger: FakeLedger, author: Ed25519Signer, record_id: str, patient_id: str,
                    categories=(common_pb2.SENSITIVITY_CATEGORY_NORMAL,), organization_id: str = "org-a",
                    valid: bool = True, codes=(), version: int = 1):
    """Commit a RegisterRecord (codes: its sealed primary codes, "<system>|<code>"; version > 1: an amendment)."""
    record = ledger_pb2.RegisterRecord(
        record_id=record_id, patient_id=patient_id, organization_id=organization_id,
        content_sha256="00" * 32, content_size=1, key_name="k", key_version=1, version=version,
    )
    metadata = ledger_pb2.RecordMetadata(resource_type="Condition", categories=list(categories),
                                         author_id=author.key_id, codes=list(codes))
    record.sealed_metadata.CopyFrom(SEALER.seal_record(record, metadata))
    return ledger.append(author, valid=valid, register_record=record)
