"""The contract rules: a deterministic verdict for each transaction.

Given the same state and the same transaction the validator always returns
the same :class:`TransactionResult` and the same state writes; it reads no
clock, no randomness, and iterates only over ordered data.

Order of checks for one transaction:

1. envelope: the body decodes (:func:`transactions.decode_body`), its chain id
   matches, the signer is known (a service/operator from the trust bundle, or a
   principal registered on the ledger), the Ed25519 signature is valid and the
   (signer, nonce) pair is unused; a deactivated principal signs nothing;
2. ordering time: ``created_at_ms`` must lie within ``max_skew_ms`` of the
   block time (the header's ``timestamp_ms``, in the shared order/cut so every
   validator judges with the same time); every validity window (delegations,
   break-glass) is judged at block time, never at the signer's chosen time;
3. payload rules (see ``_check_*`` below).

Nonces: once the envelope is authentic (steps up to the signature pass) and
the nonce is fresh, the nonce is consumed whether or not the payload rules
pass. So neither a valid nor an invalid transaction can ever be replayed, and
a client that wants to retry a rejected transaction signs a new one. A
transaction that fails before that (bad encoding, other chain, unknown signer,
bad signature) consumes nothing: its signer is not proven.

Invalid transactions stay in the block with ``valid=false`` and a reason; they
change no state other than the nonce. Reasons name fields and rules, never
values (no PHI, no identifiers). A reason about *who* may do something starts
with :data:`NOT_PERMITTED` (``"not permitted: "``); :mod:`carechain.ledger.submission`
maps those to PERMISSION_DENIED and every other reason to FAILED_PRECONDITION.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from carechain.common.v1 import common_pb2
from carechain.consent import rules as consent_rules
from carechain.consent.v1 import policy_pb2
from carechain.core import consent_jws
from carechain.core.consent_jws import ConsentClaims
from carechain.core.errors import InvalidArgument
from carechain.core.layout import OPERATOR_ID, TrustBundle, service_principal_id
from carechain.ledger import linking, transactions
from carechain.ledger.state import (
    CONSENT_ACTIVE,
    CONSENT_REVOKED,
    AuditAnchor,
    ConsentState,
    Delegation,
    PatientLink,
    PendingState,
    Principal,
    RecordState,
    StateReader,
    searched_identities,
)
from carechain.ledger.v1 import ledger_pb2

Kind = common_pb2.PrincipalKind
NOT_PERMITTED = "not permitted: "
REPLAYED_NONCE = "replayed nonce"
IDENTITY = service_principal_id("identity")
RECORDS = service_principal_id("records")
AUDIT = service_principal_id("audit")
CONSENT = service_principal_id("consent")
# Principals that are people and so may act as a patient's delegate.
DELEGATE_KINDS = (Kind.PRINCIPAL_KIND_PATIENT, Kind.PRINCIPAL_KIND_PRACTITIONER)
# Default for how far a transaction's signed created_at_ms may be from its block time
# (CARECHAIN_TX_MAX_SKEW_MS); every validator of a network must use the same value.
DEFAULT_MAX_SKEW_MS = 120_000
MAX_STORED_INT = 2**63 - 1  # SQLite integers are signed 64-bit
# A consent JWS's jti is spent in the signer's nonce space under this prefix (never a transaction nonce).
CONSENT_JWS_NONCE = b"carechain-consent-jws/"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_SPECIALTY = re.compile(r"[a-z]+(-[a-z]+)*")


class Rejected(Exception):
    """A transaction breaks a contract rule; the message is the stored reason."""


def _not_permitted(why: str) -> Rejected:
    return Rejected(NOT_PERMITTED + why)


def _enum_defined(enum: object, value: int) -> bool:
    try:
        enum.Name(value)  # type: ignore[attr-defined]
    except ValueError:
        return False
    return True


def _require_sealed(sealed: ledger_pb2.SealedData | None, field: str) -> None:
    """The shape of a sealed payload (its content is for the key holders to check)."""
    if sealed is None or not sealed.key_name or not sealed.wrapped_key or not sealed.ciphertext:
        raise Rejected(f"{field}: required (key_name, wrapped_key and ciphertext)")


@dataclass(frozen=True)
class Envelope:
    """An authenticated transaction: its decoded body, signer and the block (ordering) time."""

    body: ledger_pb2.TransactionBody
    signer_id: str
    block_time_ms: int = 0



def clinical_fields_in_clear(body: ledger_pb2.TransactionBody) -> str:
    """Why body would put clinical information on the ledger in clear ("" if it would not).

    The validator marks such a transaction invalid, and the ledger refuses it before ordering, so it never
    reaches any validator's copy (an invalid transaction is still stored with its contents).
    """
    kind = body.WhichOneof("payload")
    if kind == "register_record":
        r = body.register_record
        if r.resource_type or r.categories or r.data_date_ms or r.author_id:
            return ("register_record: resource_type, categories, data_date_ms and author_id must be sealed in "
                    "sealed_metadata, not in clear")
    if kind == "grant_consent" and body.grant_consent.HasField("policy"):
        return "grant_consent.policy: must be sealed in sealed_policy, not in clear (use SealPolicy)"
    return ""

class Validator:
    """Applies the contract rules for one chain, given the network trust bundle."""

    def __init__(self, chain_id: str, trust: TrustBundle, max_skew_ms: int = DEFAULT_MAX_SKEW_MS) -> None:
        self.chain_id = chain_id
        self.trust = trust
        self.max_skew_ms = max_skew_ms

    # --- envelope ----------------------------------------------------------------------------

    def signer_key(self, signer_id: str, state: StateReader) -> bytes | None:
        """Public key of a trusted service/operator or a ledger-registered principal."""
        key = self.trust.key(signer_id)
        if key is not None:
            return key
        principal = state.principal(signer_id)
        return principal.public_key if principal is not None else None

    def check_envelope(self, tx: ledger_pb2.Transaction, state: StateReader) -> Envelope:
        """Decode and authenticate tx, and check its nonce is fresh; raises Rejected."""
        try:
            body = transactions.decode_body(tx)
        except InvalidArgument as exc:
            raise Rejected(f"malformed: {exc.message}") from exc
        if body.chain_id != self.chain_id:
            raise Rejected("transaction is for another chain")
        key = self.signer_key(tx.signer_id, state)
        if key is None:
            raise _not_permitted("unknown signer")
        if not transactions.signature_valid(tx, key):
            raise Rejected("invalid signature")
        principal = state.principal(tx.signer_id)
        if principal is not None and not principal.active:
            raise _not_permitted("the signer was deactivated")
        if state.nonce_used(tx.signer_id, body.nonce):
            raise Rejected(REPLAYED_NONCE)
        return Envelope(body, tx.signer_id)

    # --- whole transaction -------------------------------------------------------------------

    def apply(
        self, tx: ledger_pb2.Transaction, state: PendingState, log_index: int, *, block_time_ms: int
    ) -> ledger_pb2.TransactionResult:
        """Validate tx at log_index against state, writing its effects into state when valid.

        block_time_ms is the timestamp of the block tx is committed in (agreed
        through the order, so every validator uses the same one).
        """
        try:
            envelope = replace(self.check_envelope(tx, state), block_time_ms=block_time_ms)
        except Rejected as exc:
            return ledger_pb2.TransactionResult(valid=False, reason=str(exc))
        # Authentic and fresh: the nonce is spent from here on (see module docstring).
        state.consume_nonce(envelope.signer_id, envelope.body.nonce, log_index)
        try:
            if abs(envelope.body.created_at_ms - block_time_ms) > self.max_skew_ms:
                raise Rejected(f"created_at_ms: more than {self.max_skew_ms} ms from the block (ordering) time")
            self._apply_payload(envelope, state, log_index)
        except Rejected as exc:
            return ledger_pb2.TransactionResult(valid=False, reason=str(exc))
        return ledger_pb2.TransactionResult(valid=True)

    def _apply_payload(self, env: Envelope, state: PendingState, log_index: int) -> None:
        kind = env.body.WhichOneof("payload")
        handler = {
            "register_principal": self._register_principal,
            "register_record": self._register_record,
            "grant_consent": self._grant_consent,
            "revoke_consent": self._revoke_consent,
            "anchor_audit_batch": self._anchor_audit_batch,
            "erase_records": self._erase_records,
            "key_rotation": self._key_rotation,
            "register_delegate": self._register_delegate,
            "revoke_delegate": self._revoke_delegate,
            "break_glass_access": self._break_glass_access,
            "deactivate_principal": self._deactivate_principal,
            "rotate_principal_key": self._rotate_principal_key,
            "link_patient_identity": self._link_patient_identity,
            "unlink_patient_identity": self._unlink_patient_identity,
        }.get(kind or "")
        if handler is None:
            raise Rejected("unknown payload")
        handler(env, state, log_index)

    # --- payload rules: each checks everything first, then writes ----------------------------

    def _patient(self, state: StateReader, patient_id: str, field: str) -> Principal:
        principal = state.principal(patient_id) if patient_id else None
        if principal is None or principal.kind != Kind.PRINCIPAL_KIND_PATIENT:
            raise Rejected(f"{field}: not a registered patient")
        return principal

    def _organization(self, state: StateReader, organization_id: str, field: str) -> Principal:
        principal = state.principal(organization_id) if organization_id else None
        if principal is None or principal.kind != Kind.PRINCIPAL_KIND_ORGANIZATION:
            raise Rejected(f"{field}: not a registered organization")
        return principal

    def _register_principal(self, env: Envelope, state: PendingState, log_index: int) -> None:
        p = env.body.register_principal
        # svc-identity registers everyone; an organisation may register (and so attest) its own
        # practitioners itself. Patients' ids are keyed pseudonyms only identity can derive.
        by_own_org = (
            p.kind == Kind.PRINCIPAL_KIND_PRACTITIONER and p.organization_id and env.signer_id == p.organization_id
        )
        if env.signer_id != IDENTITY and not by_own_org:
            raise _not_permitted(f"only {IDENTITY} (or a practitioner's own organization) registers principals")
        if not p.principal_id:
            raise Rejected("register_principal.principal_id: required")
        if self.trust.key(p.principal_id) is not None or state.principal(p.principal_id) is not None:
            raise Rejected("register_principal.principal_id: already registered")
        if len(p.public_key) != 32:
            raise Rejected("register_principal.public_key: must be a raw 32-byte Ed25519 key")
        if p.kind == Kind.PRINCIPAL_KIND_UNSPECIFIED or not _enum_defined(Kind, p.kind):
            raise Rejected("register_principal.kind: must be specified")
        if p.kind in (Kind.PRINCIPAL_KIND_PRACTITIONER, Kind.PRINCIPAL_KIND_PATIENT):
            self._organization(state, p.organization_id, "register_principal.organization_id")
        if p.specialty or p.specialty_attested_by:
            # Consent specialty actors and break-glass rely on it: the registering organisation attests it.
            if p.kind != Kind.PRINCIPAL_KIND_PRACTITIONER:
                raise Rejected("register_principal.specialty: only practitioners have a specialty")
            if not _SPECIALTY.fullmatch(p.specialty):
                raise Rejected("register_principal.specialty: lower-case words joined by '-', e.g. emergency")
            if p.specialty_attested_by != p.organization_id:
                raise _not_permitted("a specialty is attested by the practitioner's own organization")
        state.put_principal(
            Principal(p.principal_id, p.kind, bytes(p.public_key), p.organization_id, p.specialty, log_index)
        )

    def _register_record(self, env: Envelope, state: PendingState, log_index: int) -> None:
        r = env.body.register_record
        if env.signer_id != RECORDS:
            raise _not_permitted(f"only {RECORDS} registers records")
        if not r.record_id:
            raise Rejected("register_record.record_id: required")
        latest = state.record(r.record_id)
        if r.version > 1:
            self._check_new_version(r, latest)
        elif latest is not None:
            raise Rejected("register_record.record_id: already registered")
        elif r.previous_log_index or r.previous_content_sha256:
            raise Rejected("register_record.previous_log_index: only a version > 1 follows a previous version")
        patient = self._patient(state, r.patient_id, "register_record.patient_id")
        self._organization(state, r.organization_id, "register_record.organization_id")
        # Organisation scope: an organisation writes only for the patients it registered. The author is
        # sealed with the clinical metadata (validators cannot see it): svc-records, the only signer,
        # names the authenticated (not deactivated) caller and the caller's organisation as
        # organization_id, so the author is always that organisation or one of its practitioners.
        if patient.organization_id != r.organization_id:
            raise _not_permitted("an organization registers records only for its own patients")
        if not _HEX64.fullmatch(r.content_sha256):
            raise Rejected("register_record.content_sha256: must be 64 lower-case hex characters")
        # Ledger privacy: clinical metadata only sealed (validators cannot open it; consumers check it).
        in_clear = clinical_fields_in_clear(env.body)
        if in_clear:
            raise Rejected(in_clear)
        _require_sealed(r.sealed_metadata if r.HasField("sealed_metadata") else None, "register_record.sealed_metadata")
        if latest is not None:
            state.put_record_version(latest, r.version, log_index, transactions.encode(r))
        else:
            state.put_record(RecordState(r.record_id, r.patient_id, transactions.encode(r), log_index))

    @staticmethod
    def _check_new_version(r: ledger_pb2.RegisterRecord, latest: RecordState | None) -> None:
        """A version > 1 amends the record's latest version: consecutive, linked, same patient and organisation.

        The resource type is sealed (validators cannot see it): svc-records keeps it and consent re-checks it.
        """
        if latest is None:
            raise Rejected("register_record.version: a version > 1 needs a registered record")
        if latest.erased:
            raise Rejected("register_record.record_id: the record was erased")
        previous = ledger_pb2.RegisterRecord.FromString(latest.entry)
        if r.version != max(previous.version, 1) + 1:
            raise Rejected("register_record.version: must be the latest version + 1")
        if r.previous_log_index != latest.log_index or r.previous_content_sha256 != previous.content_sha256:
            raise Rejected("register_record.previous_log_index: must name the latest version "
                           "(its log index and content_sha256)")
        if r.patient_id != previous.patient_id:
            raise Rejected("register_record.patient_id: a new version keeps the record's patient")
        if r.organization_id != previous.organization_id:
            raise _not_permitted("only the authoring organization writes a new version of a record")

    def _grant_consent(self, env: Envelope, state: PendingState, log_index: int) -> None:
        g = env.body.grant_consent
        claims = self._patient_jws(env, g.patient_jws, g.patient_id, "grant_consent", state) \
            if g.patient_jws else None
        # A grant relayed from the FHIR gateway is svc-consent's transaction; the patient's authority is the JWS.
        acting = replace(env, signer_id=claims.signer_id) if claims is not None else env
        if not self._acts_for_patient(acting, g.patient_id, state):
            raise _not_permitted("only the patient grants their consent (or their active delegate)")
        self._patient(state, g.patient_id, "grant_consent.patient_id")
        try:  # the very rules the consent service applies before submitting (one place)
            consent_rules.validate_grant(g)
        except InvalidArgument as exc:
            raise Rejected(exc.message) from exc
        if state.consent(g.consent_id) is not None:
            raise Rejected("grant_consent.consent_id: already exists")
        # Ledger privacy: validators never see the policy. The consent service checked it against the
        # consent rules before sealing it and signed that (SealPolicy); a grant whose sealed policy it
        # did not attest (e.g. submitted straight to the ledger) is invalid.
        if not consent_rules.policy_attested(g, self.chain_id, self.trust.key(CONSENT),
                                             claims.consent_sha256 if claims is not None else ""):
            raise _not_permitted(f"the sealed policy is not attested by {CONSENT} (seal it with SealPolicy)"
                                 + (" for the signed Consent's body hash" if claims is not None else ""))
        if claims is not None:  # the patient's signature grants once
            state.consume_nonce(claims.signer_id, CONSENT_JWS_NONCE + claims.jti_bytes, log_index)
        state.put_consent(
            ConsentState(g.consent_id, g.patient_id, transactions.encode(g.sealed_policy), CONSENT_ACTIVE, log_index)
        )

    def _patient_jws(self, env: Envelope, signed: bytes, patient_id: str, payload: str,
                     state: StateReader) -> ConsentClaims:
        """The verified claims of a grant's or revocation's patient JWS (docs/fhir.md, "Consent"); raises Rejected.

        Only svc-consent submits one; it verifies under the signer's current key in state (a rotated-out key
        or a deactivated signer signs nothing), for this patient and chain, signed within max_skew_ms of the
        block time, and its (signer, jti) was never used. Who the signer may act for is the caller's rule.
        """
        field = f"{payload}.patient_jws"
        if env.signer_id != CONSENT:
            raise _not_permitted(f"{field}: only {CONSENT} relays a grant the patient signed as a JWS")
        try:
            jws = bytes(signed).decode("ascii")
            signer_id = consent_jws.unverified_signer(jws)
        except (UnicodeDecodeError, consent_jws.InvalidConsentJws) as exc:
            raise Rejected(f"{field}: malformed ({exc})") from exc
        signer = state.principal(signer_id)
        if signer is None or signer.kind not in DELEGATE_KINDS or not signer.active:
            raise _not_permitted(f"{field}: the signer is not an active registered patient or practitioner")
        try:
            claims = consent_jws.verify_consent_jws(jws, signer.public_key)
        except consent_jws.InvalidConsentJws as exc:
            raise _not_permitted(f"{field}: {exc}") from exc
        if claims.sub != patient_id:
            raise _not_permitted(f"{field}: sub is not {payload}.patient_id")
        if claims.chain_id != self.chain_id:
            raise Rejected(f"{field}: chain_id is another chain")
        if abs(claims.iat * 1000 - env.block_time_ms) > self.max_skew_ms:
            raise Rejected(f"{field}: iat is more than {self.max_skew_ms} ms from the block (ordering) time")
        if state.nonce_used(claims.signer_id, CONSENT_JWS_NONCE + claims.jti_bytes):
            raise Rejected(f"{field}: jti was used before (a replayed signature)")
        return claims

    def _revoke_consent(self, env: Envelope, state: PendingState, log_index: int) -> None:
        r = env.body.revoke_consent
        claims = self._patient_jws(env, r.patient_jws, r.patient_id, "revoke_consent", state) \
            if r.patient_jws else None
        if claims is not None:
            # The JWS covers revocation_json, which must name exactly this consent (it holds nothing else).
            if not consent_jws.same_digest(claims.consent_sha256, bytes(r.revocation_json)):
                raise _not_permitted("revoke_consent.revocation_json: not what the patient's JWS signed")
            try:
                named = consent_rules.revoked_consent_id(bytes(r.revocation_json), "revoke_consent.revocation_json")
            except InvalidArgument as exc:
                raise Rejected(exc.message) from exc
            if named != r.consent_id:
                raise _not_permitted("revoke_consent.revocation_json: names another consent")
        elif r.revocation_json:
            raise Rejected("revoke_consent.revocation_json: only with patient_jws")
        acting = replace(env, signer_id=claims.signer_id) if claims is not None else env
        if not self._acts_for_patient(acting, r.patient_id, state):
            raise _not_permitted("only the patient revokes their consent (or their active delegate)")
        self._patient(state, r.patient_id, "revoke_consent.patient_id")
        consent = state.consent(r.consent_id) if r.consent_id else None
        if consent is None:
            raise Rejected("revoke_consent.consent_id: unknown consent")
        if consent.patient_id != r.patient_id:
            raise _not_permitted("the consent belongs to another patient")
        if consent.status != CONSENT_ACTIVE:
            raise Rejected("revoke_consent.consent_id: consent is not active")
        if claims is not None:  # the patient's signature revokes once
            state.consume_nonce(claims.signer_id, CONSENT_JWS_NONCE + claims.jti_bytes, log_index)
        state.put_consent(
            ConsentState(
                consent.consent_id, consent.patient_id, consent.policy, CONSENT_REVOKED, consent.log_index, log_index
            )
        )

    @staticmethod
    def _acts_for_patient(env: Envelope, patient_id: str, state: StateReader) -> bool:
        """The signer is the patient, or a delegate active at block time (never the signer's created_at_ms)."""
        if env.signer_id == patient_id:
            return True
        if not patient_id:
            return False
        delegation = state.delegation(patient_id, env.signer_id)
        return delegation is not None and delegation.active_at(env.block_time_ms)

    def _register_delegate(self, env: Envelope, state: PendingState, log_index: int) -> None:
        d = env.body.register_delegate
        if env.signer_id != d.patient_id:
            raise _not_permitted("only the patient registers their delegate")
        self._patient(state, d.patient_id, "register_delegate.patient_id")
        delegate = state.principal(d.delegate_id) if d.delegate_id else None
        if delegate is None or delegate.kind not in DELEGATE_KINDS:
            raise Rejected("register_delegate.delegate_id: not a registered patient or practitioner")
        if d.delegate_id == d.patient_id:
            raise Rejected("register_delegate.delegate_id: a patient cannot be their own delegate")
        if d.relationship == 0 or not _enum_defined(policy_pb2.DelegateRelationship, d.relationship):
            raise Rejected("register_delegate.relationship: must be GUARDIAN or PROXY")
        if d.period.start_ms < 0 or d.period.end_ms < 0:
            raise Rejected("register_delegate.period: must not be negative")
        if d.period.start_ms and d.period.end_ms and d.period.end_ms <= d.period.start_ms:
            raise Rejected("register_delegate.period.end_ms: must be after start_ms")
        existing = state.delegation(d.patient_id, d.delegate_id)
        if existing is not None and existing.status == CONSENT_ACTIVE:
            raise Rejected("register_delegate.delegate_id: already a delegate (revoke first)")
        state.put_delegation(
            Delegation(d.patient_id, d.delegate_id, d.relationship, d.period.start_ms, d.period.end_ms,
                       CONSENT_ACTIVE, log_index)
        )

    def _revoke_delegate(self, env: Envelope, state: PendingState, log_index: int) -> None:
        d = env.body.revoke_delegate
        if env.signer_id != d.patient_id:
            raise _not_permitted("only the patient revokes their delegate")
        self._patient(state, d.patient_id, "revoke_delegate.patient_id")
        existing = state.delegation(d.patient_id, d.delegate_id) if d.delegate_id else None
        if existing is None or existing.status != CONSENT_ACTIVE:
            raise Rejected("revoke_delegate.delegate_id: not an active delegate")
        state.put_delegation(replace(existing, status=CONSENT_REVOKED, revoked_log_index=log_index))

    def _break_glass_access(self, env: Envelope, state: PendingState, log_index: int) -> None:
        b = env.body.break_glass_access
        if env.signer_id != CONSENT:
            raise _not_permitted(f"only {CONSENT} records break-glass windows")
        actor = state.principal(b.actor_id) if b.actor_id else None
        if actor is None or actor.kind != Kind.PRINCIPAL_KIND_PRACTITIONER:
            raise Rejected("break_glass_access.actor_id: not a registered practitioner")
        self._patient(state, b.patient_id, "break_glass_access.patient_id")
        if b.started_at_ms <= 0 or b.expires_at_ms <= b.started_at_ms:
            raise Rejected("break_glass_access: the window must start after 1970 and end after it starts")
        if abs(b.started_at_ms - env.block_time_ms) > self.max_skew_ms:
            raise Rejected("break_glass_access.started_at_ms: a window starts at its ordering (block) time")

    def _anchor_audit_batch(self, env: Envelope, state: PendingState, log_index: int) -> None:
        a = env.body.anchor_audit_batch
        if env.signer_id != AUDIT:
            raise _not_permitted(f"only {AUDIT} anchors audit batches")
        last = state.last_audit_batch()
        if last is not None and a.batch_number <= last:
            raise Rejected("anchor_audit_batch.batch_number: must be greater than the last anchored batch")
        if max(a.batch_number, a.first_sequence, a.last_sequence) > MAX_STORED_INT:
            raise Rejected("anchor_audit_batch: numbers must be below 2^63")
        if a.first_sequence > a.last_sequence:
            raise Rejected("anchor_audit_batch.first_sequence: must not exceed last_sequence")
        if len(a.merkle_root) != 32:
            raise Rejected("anchor_audit_batch.merkle_root: must be a 32-byte hash")
        anchor = AuditAnchor(a.batch_number, a.first_sequence, a.last_sequence, bytes(a.merkle_root), log_index)
        state.add_anchor(anchor)

    def _erase_records(self, env: Envelope, state: PendingState, log_index: int) -> None:
        e = env.body.erase_records
        if env.signer_id == RECORDS:
            # The records gateway erases on behalf of who asked, named so the ledger can hold it to the rule.
            on_behalf = replace(env, signer_id=e.requested_by)
            if e.requested_by != OPERATOR_ID and not self._acts_for_patient(on_behalf, e.patient_id, state):
                raise _not_permitted("erase_records.requested_by: not the patient, an active delegate or the operator")
        elif env.signer_id not in (e.patient_id, IDENTITY):
            raise _not_permitted(f"only the patient, {IDENTITY} or {RECORDS} erases records")
        self._patient(state, e.patient_id, "erase_records.patient_id")
        # A network patient's records include those of the local identities linked to it (issue 14 part 1).
        identities = searched_identities(state, e.patient_id)
        if e.record_ids:
            targets = []
            for record_id in dict.fromkeys(e.record_ids):  # de-duplicated, order kept
                record = state.record(record_id)
                if record is None or record.patient_id not in identities:
                    raise Rejected("erase_records.record_ids: unknown record or not the patient's")
                targets.append(record)
        else:
            targets = [record for identity in identities for record in state.patient_records(identity)]
        for record in targets:
            if not record.erased:  # erasing twice is harmless; the first tombstone stays
                state.erase_record(record, log_index)

    def _key_rotation(self, env: Envelope, state: PendingState, log_index: int) -> None:
        k = env.body.key_rotation
        if env.signer_id != IDENTITY:
            raise _not_permitted(f"only {IDENTITY} records key rotations")
        patient = self._patient(state, k.patient_id, "key_rotation.patient_id")
        if k.key_version <= patient.kek_version:
            raise Rejected("key_rotation.key_version: must be greater than the last recorded version")
        state.put_principal(replace(patient, kek_version=k.key_version))

    def _lifecycle_target(self, env: Envelope, state: StateReader, principal_id: str, field: str) -> Principal:
        """The active principal a lifecycle transaction acts on, once its signer is the registering authority.

        The authority is the organisation that registered a practitioner or patient, or the
        network operator for an organisation; svc-identity may act on the authority's behalf.
        """
        target = state.principal(principal_id) if principal_id else None
        if target is None:
            raise Rejected(f"{field}.principal_id: not a registered principal")
        authority = OPERATOR_ID if target.kind == Kind.PRINCIPAL_KIND_ORGANIZATION else target.organization_id
        if env.signer_id not in (IDENTITY, authority):
            raise _not_permitted("only the principal's registering authority (or svc-identity) changes its lifecycle")
        if not target.active:
            raise Rejected(f"{field}.principal_id: already deactivated")
        return target

    def _deactivate_principal(self, env: Envelope, state: PendingState, log_index: int) -> None:
        d = env.body.deactivate_principal
        target = self._lifecycle_target(env, state, d.principal_id, "deactivate_principal")
        state.put_principal(replace(target, deactivated_log_index=log_index))

    def _rotate_principal_key(self, env: Envelope, state: PendingState, log_index: int) -> None:
        r = env.body.rotate_principal_key
        target = self._lifecycle_target(env, state, r.principal_id, "rotate_principal_key")
        if len(r.public_key) != 32:
            raise Rejected("rotate_principal_key.public_key: must be a raw 32-byte Ed25519 key")
        if bytes(r.public_key) == target.public_key:
            raise Rejected("rotate_principal_key.public_key: must differ from the current key")
        state.put_principal(replace(target, public_key=bytes(r.public_key)))

    # --- network patient identity (docs/network-identity.md) --------------------------------------

    def _active_patient(self, state: StateReader, patient_id: str, field: str) -> Principal:
        patient = self._patient(state, patient_id, field)
        if not patient.active:
            raise Rejected(f"{field}: the patient was deactivated")
        return patient

    def _link_patient_identity(self, env: Envelope, state: PendingState, log_index: int) -> None:
        k = env.body.link_patient_identity
        # Both sides prove: the network patient (or its delegate) signs the transaction, the organisation
        # that registered the linked patient signs the attestation inside it.
        if not self._acts_for_patient(env, k.network_patient_id, state):
            raise _not_permitted("only the network patient (or their active delegate) links an identity")
        self._active_patient(state, k.network_patient_id, "link_patient_identity.network_patient_id")
        linked = self._active_patient(state, k.linked_patient_id, "link_patient_identity.linked_patient_id")
        if k.linked_patient_id == k.network_patient_id:
            raise Rejected("link_patient_identity.linked_patient_id: a patient cannot be linked to itself")
        organization = self._organization(state, k.organization_id, "link_patient_identity.organization_id")
        if not organization.active:
            raise Rejected("link_patient_identity.organization_id: the organization was deactivated")
        if linked.organization_id != k.organization_id:
            raise _not_permitted("the attesting organization did not register the linked patient")
        if not linking.attestation_valid(self.chain_id, k, organization.public_key):
            raise _not_permitted("the organization's attestation does not verify")
        if state.nonce_used(k.organization_id, bytes(k.attestation_nonce)):
            raise Rejected("link_patient_identity.attestation_nonce: the attestation was used before")
        existing = state.patient_link(k.linked_patient_id)
        if existing is not None and existing.active:
            raise Rejected("link_patient_identity.linked_patient_id: already linked (unlink first)")
        if state.linked_patients(k.linked_patient_id):
            raise Rejected("link_patient_identity.linked_patient_id: is a network identity with linked patients")
        network_link = state.patient_link(k.network_patient_id)
        if network_link is not None and network_link.active:
            raise Rejected("link_patient_identity.network_patient_id: is itself linked to a network identity")
        # The attestation links once: spent like a transaction nonce of the organisation.
        state.consume_nonce(k.organization_id, bytes(k.attestation_nonce), log_index)
        state.put_link(PatientLink(k.linked_patient_id, k.network_patient_id, k.organization_id, log_index))

    def _unlink_patient_identity(self, env: Envelope, state: PendingState, log_index: int) -> None:
        u = env.body.unlink_patient_identity
        link = state.patient_link(u.linked_patient_id) if u.linked_patient_id else None
        if link is None or not link.active or link.network_patient_id != u.network_patient_id:
            raise Rejected("unlink_patient_identity.linked_patient_id: not linked to this network identity")
        if env.signer_id != link.organization_id and not self._acts_for_patient(env, u.network_patient_id, state):
            raise _not_permitted("only the network patient (or their active delegate) or the linked patient's "
                                 "organization unlinks an identity")
        state.put_link(replace(link, unlinked_log_index=log_index))
