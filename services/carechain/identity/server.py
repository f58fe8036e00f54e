"""The identity service: principals, access tokens and patients' keys.

A thin gRPC layer (requests to domain calls, answers back; who may call what is :data:`ACCESS`,
docs/security.md) over the domain modules:

- :mod:`carechain.identity.principals`: registration here and on the ledger (without names or FHIR
  ids), who sees a patient's private fields, deactivation and key rotation by the registering authority;
- :mod:`carechain.identity.access_tokens`: proof of possession of a principal's key, then access tokens;
- :mod:`carechain.identity.smart_clients`: SMART Backend Services client keys and client assertions
  exchanged for access tokens with scopes and a purpose of use;
- :mod:`carechain.identity.data_keys`: per-patient key-encryption keys and per-record data keys, released
  only against a single-use consent decision token after consent confirms the decision still holds;
- the registry seam :mod:`carechain.identity.registry` (SQLite or Vault) and the key manager.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import grpc

from carechain.common.v1 import common_pb2
from carechain.core.crypto import Ed25519Signer, Signer, same
from carechain.core.errors import CareChainError, FailedPrecondition, IntegrityError, InvalidArgument, PermissionDenied
from carechain.core.layout import OPERATOR_ID, TOKEN_ISSUER_ID, TrustBundle, audience
from carechain.identity.access_tokens import AccessTokens, local_token_source
from carechain.identity.data_keys import CheckDecision, DataKeys
from carechain.identity.linking import PatientLinks, signed_by_caller
from carechain.identity.principals import MEMBER_KINDS, NETWORK_KINDS, Principals, principal_message
from carechain.identity.registry import IdentityStore
from carechain.identity.smart_clients import SmartClients
from carechain.identity.sqlite_registry import Registry
from carechain.identity.v1 import identity_pb2, identity_pb2_grpc
from carechain.ledger.submission import ServiceSubmitter
from carechain.runtime.access import ANY, AccessTable, Allow, Scope, own_patient_field
from carechain.runtime.access import caller as caller_of
from carechain.runtime.auth import Authenticator, Caller
from carechain.runtime.batch_items import item_error
from carechain.runtime.config import IdentitySettings
from carechain.runtime.delegates import IsDelegate, consent_delegates
from carechain.runtime.keyring import KeyManager, LocalKeyring
from carechain.runtime.logs import configure_logging
from carechain.runtime.peers import Peers
from carechain.runtime.principal_status import PrincipalStatus, StatusSnapshots
from carechain.runtime.server import Register, register_servicer, run_service

if TYPE_CHECKING:
    import hvac

log = logging.getLogger("carechain.identity")

Kind = common_pb2.PrincipalKind

KEYRING_DIR = "keyring"
_RECORD_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
MAX_BATCH_ITEMS = 256


def _operator_registers(caller: Caller, request: identity_pb2.RegisterPrincipalRequest, servicer: object) -> None:
    if caller.principal_id != OPERATOR_ID:
        raise PermissionDenied("only the network operator registers organisations and auditors")
    if request.kind in MEMBER_KINDS:
        raise PermissionDenied("only an organisation registers its practitioners and patients")


def _organization_registers(caller: Caller, request: identity_pb2.RegisterPrincipalRequest, servicer: object) -> None:
    if request.kind in NETWORK_KINDS:
        raise PermissionDenied("only the network operator registers organisations and auditors")
    if request.organization_id and request.organization_id != caller.principal_id:
        raise PermissionDenied("organization_id must be the calling organisation")


SERVICE = identity_pb2.DESCRIPTOR.services_by_name["IdentityService"]
# Who may call what (docs/security.md).
def _registering_authority(caller: Caller, request: Any, servicer: IdentityServicer) -> None:
    servicer.principals.lifecycle_target(caller, request.principal_id)


_REGISTERING_AUTHORITY = Scope("registering authority", "principals it registered (the operator: organisations)",
                               _registering_authority)


def _signed_link(payload: str) -> Scope:
    """The request's transaction carries payload and is signed by the caller (the ledger judges the rest)."""

    def check(caller: Caller, request: Any, servicer: IdentityServicer) -> None:
        signed_by_caller(caller, request.transaction if request.HasField("transaction") else None, payload)

    return Scope("signed by the caller", "signed by the caller", check)


_SIGNED_LINK = _signed_link("link_patient_identity")
_SIGNED_UNLINK = _signed_link("unlink_patient_identity")

ACCESS = AccessTable(SERVICE, {
    "RegisterPrincipal": Allow.of(
        operator=Scope("network members", "organisations and auditors", _operator_registers),
        organization=Scope("own members", "its own practitioners and patients", _organization_registers),
    ),
    "GetPrincipal": Allow.everyone("a patient's display name and FHIR id only to the patient, their delegates and "
                                   "their organisation; services get the FHIR id"),
    "CreateChallenge": Allow.anonymous("proof of possession, step 1"),
    "IssueToken": Allow.anonymous("proof of possession, step 2"),
    "GetTokenIssuerKeys": Allow.anonymous("public keys"),
    "GenerateDataKey": Allow.of(service=ANY, services=["records"]),
    "ReleaseDataKey": Allow.of(service=ANY, services=["records"], note="with a single-use consent decision token"),
    "GenerateDataKeys": Allow.of(service=ANY, services=["records"], note="GenerateDataKey for many records"),
    "ReleaseDataKeys": Allow.of(service=ANY, services=["records"],
                                note="ReleaseDataKey for many records, each with its own decision token"),
    "DeleteDataKey": Allow.of(service=ANY, services=["records"], note="its reconciler: keys of writes never committed"),
    "RotatePatientKey": Allow.of(patient=own_patient_field(required=True), operator=ANY),
    "DeactivatePrincipal": Allow.of(organization=_REGISTERING_AUTHORITY, operator=_REGISTERING_AUTHORITY),
    "RotatePrincipalKey": Allow.of(organization=_REGISTERING_AUTHORITY, operator=_REGISTERING_AUTHORITY),
    # Network patient identity (docs/network-identity.md). Delegates may be practitioners.
    "LinkPatient": Allow.of(patient=_SIGNED_LINK, practitioner=_SIGNED_LINK,
                            note="the network patient or an active delegate, with the organisation's attestation"),
    "UnlinkPatient": Allow.of(patient=_SIGNED_UNLINK, practitioner=_SIGNED_UNLINK, organization=_SIGNED_UNLINK,
                              note="the network patient, an active delegate or the linked patient's organisation"),
    "ResolvePatient": Allow.of(practitioner=ANY, organization=ANY,
                               note="its own FHIR ids only; anything else is NOT_FOUND, as an unknown id"),
    "RegisterClientKeys": Allow.of(organization=ANY, practitioner=ANY,
                                   note="its own SMART client keys (client_id = the caller)"),
    "ExchangeClientAssertion": Allow.anonymous("SMART Backend Services: a signed client assertion buys a token"),
})


class IdentityServicer(identity_pb2_grpc.IdentityServiceServicer):
    """Implements carechain.identity.v1.IdentityService over :class:`Principals`, :class:`AccessTokens`
    and :class:`DataKeys`."""

    def __init__(
        self,
        *,
        signer: Signer,
        trust: TrustBundle,
        registry: IdentityStore,
        keys: KeyManager,
        ledger: Any,
        chain_id: str,
        token_ttl_seconds: float,
        challenge_ttl_seconds: float,
        clock: Callable[[], float] = time.time,
        check_decision: CheckDecision | None = None,
        is_delegate: IsDelegate | None = None,
        principal_status: PrincipalStatus | None = None,
        smart_token_url: str = "",
    ) -> None:
        """ledger is the LedgerService stub this service submits its transactions to (signed as itself);
        smart_token_url the SMART token endpoint client assertions name as aud (empty: no SMART exchange)."""
        submitter = ServiceSubmitter(chain_id, signer, lambda: ledger)
        self.principals = Principals(registry, trust, submitter, principal_status, is_delegate)
        self.tokens = AccessTokens(self.principals, signer, token_ttl_seconds, challenge_ttl_seconds, clock)
        self.smart_clients = SmartClients(self.principals, signer, token_ttl_seconds, smart_token_url, clock)
        # Patient identity links as committed on the ledger (followed by principal_status).
        network_patient = principal_status.network_patient if principal_status is not None else None
        linked_patients = principal_status.linked_patients if principal_status is not None else None
        self.data_keys = DataKeys(self.principals, keys, trust, submitter, check_decision, clock,
                                  network_patient, linked_patients)
        self.links = PatientLinks(self.principals, self.data_keys, submitter, principal_status,
                                  network_patient or (lambda patient_id: patient_id),
                                  linked_patients or (lambda network_patient_id: []))
        self._signer = signer
        self._auth = Authenticator(trust, audience("identity"), principal_status)

    # --- principals ------------------------------------------------------------

    def RegisterPrincipal(
        self, request: identity_pb2.RegisterPrincipalRequest, context: grpc.ServicerContext
    ) -> identity_pb2.Principal:
        principal = self.principals.register(
            caller_of(context), request.kind, request.display_name, request.public_key,
            request.organization_id, request.specialty, request.fhir_patient_id,
        )
        if principal.kind == Kind.PRINCIPAL_KIND_PATIENT:
            # The patient's key exists from now on: writes need no create-or-check per record. The patient is
            # registered already; if the key manager is down now, the first write creates the key instead.
            try:
                self.data_keys.create_patient_key(principal.principal_id)
            except CareChainError as exc:
                log.warning("patient key not created at registration; the first write creates it",
                            extra={"grpc_code": exc.code.name})
        return principal_message(principal, show_private=True, show_fhir_id=True)

    def GetPrincipal(
        self, request: identity_pb2.GetPrincipalRequest, context: grpc.ServicerContext
    ) -> identity_pb2.Principal:
        return self.principals.get(caller_of(context), request.principal_id)

    def DeactivatePrincipal(
        self, request: identity_pb2.DeactivatePrincipalRequest, context: grpc.ServicerContext
    ) -> identity_pb2.Principal:
        return self.principals.deactivate(caller_of(context), request.principal_id)

    def RotatePrincipalKey(
        self, request: identity_pb2.RotatePrincipalKeyRequest, context: grpc.ServicerContext
    ) -> identity_pb2.Principal:
        return self.principals.rotate_key(caller_of(context), request.principal_id, request.public_key)

    # --- proof of possession and access tokens ---------------------------------

    def CreateChallenge(
        self, request: identity_pb2.CreateChallengeRequest, context: grpc.ServicerContext
    ) -> identity_pb2.Challenge:
        challenge, expires_at_ms = self.tokens.challenge(request.principal_id)
        return identity_pb2.Challenge(challenge=challenge, expires_at_ms=expires_at_ms)

    def IssueToken(
        self, request: identity_pb2.IssueTokenRequest, context: grpc.ServicerContext
    ) -> identity_pb2.AccessToken:
        token, expires_at_ms = self.tokens.issue(request.principal_id, request.audience, request.challenge,
                                                 request.signature)
        return identity_pb2.AccessToken(token=token, expires_at_ms=expires_at_ms)

    def GetTokenIssuerKeys(
        self, request: identity_pb2.GetTokenIssuerKeysRequest, context: grpc.ServicerContext
    ) -> identity_pb2.TokenIssuerKeys:
        return identity_pb2.TokenIssuerKeys(
            keys=[identity_pb2.IssuerKey(key_id=self._signer.key_id, public_key=self._signer.public_key_bytes())]
        )

    # --- SMART Backend Services ------------------------------------------------

    def RegisterClientKeys(
        self, request: identity_pb2.RegisterClientKeysRequest, context: grpc.ServicerContext
    ) -> identity_pb2.ClientKeys:
        client_id, key_ids = self.smart_clients.register_keys(caller_of(context), request.jwks)
        return identity_pb2.ClientKeys(client_id=client_id, key_ids=key_ids)

    def ExchangeClientAssertion(
        self, request: identity_pb2.ExchangeClientAssertionRequest, context: grpc.ServicerContext
    ) -> identity_pb2.ClientAccessToken:
        token, expires_at_ms, scope, purpose = self.smart_clients.exchange(
            request.client_assertion, request.scope, request.purpose_of_use, request.audience)
        return identity_pb2.ClientAccessToken(token=token, expires_at_ms=expires_at_ms, scope=scope,
                                              purpose_of_use=purpose)  # type: ignore[arg-type]

    # --- data keys -------------------------------------------------------------

    def GenerateDataKey(
        self, request: identity_pb2.GenerateDataKeyRequest, context: grpc.ServicerContext
    ) -> identity_pb2.DataKey:
        if not request.patient_id:
            raise InvalidArgument("patient_id", "is required")
        record_id = _require_record_id(request.record_id)
        plaintext, key_name, version = self.data_keys.generate(request.patient_id, record_id)
        return identity_pb2.DataKey(
            plaintext_key=plaintext,
            key_ref=identity_pb2.KeyReference(key_name=key_name, key_version=version, record_id=record_id),
        )

    def ReleaseDataKey(
        self, request: identity_pb2.ReleaseDataKeyRequest, context: grpc.ServicerContext
    ) -> identity_pb2.ReleasedDataKey:
        record_id = _require_record_id(request.record_id)
        return identity_pb2.ReleasedDataKey(plaintext_key=self.data_keys.release(record_id, request.decision_token))

    def GenerateDataKeys(
        self, request: identity_pb2.GenerateDataKeysRequest, context: grpc.ServicerContext
    ) -> identity_pb2.GenerateDataKeysResponse:
        items = _batch(request.items)
        outcomes: list[object] = [None] * len(items)
        valid: list[int] = []
        for i, item in enumerate(items):
            try:
                if not item.patient_id:
                    raise InvalidArgument("patient_id", "is required")
                _require_record_id(item.record_id)
                valid.append(i)
            except InvalidArgument as exc:
                outcomes[i] = exc
        made = self.data_keys.generate_many([(items[i].patient_id, items[i].record_id) for i in valid])
        for i, outcome in zip(valid, made, strict=True):
            outcomes[i] = outcome
        results = []
        for item, outcome in zip(items, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                code, message = item_error(outcome)
                results.append(identity_pb2.GenerateDataKeyResult(
                    error=identity_pb2.BatchItemError(code=code, message=message)))
            else:
                plaintext, key_name, version = outcome  # type: ignore[misc]
                results.append(identity_pb2.GenerateDataKeyResult(key=identity_pb2.DataKey(
                    plaintext_key=plaintext,
                    key_ref=identity_pb2.KeyReference(key_name=key_name, key_version=version,
                                                      record_id=item.record_id))))
        return identity_pb2.GenerateDataKeysResponse(results=results)

    def ReleaseDataKeys(
        self, request: identity_pb2.ReleaseDataKeysRequest, context: grpc.ServicerContext
    ) -> identity_pb2.ReleaseDataKeysResponse:
        items = _batch(request.items)
        outcomes: list[object] = [None] * len(items)
        valid: list[int] = []
        for i, item in enumerate(items):
            try:
                _require_record_id(item.record_id)
                valid.append(i)
            except InvalidArgument as exc:
                outcomes[i] = exc
        released = self.data_keys.release_many([(items[i].record_id, items[i].decision_token) for i in valid])
        for i, outcome in zip(valid, released, strict=True):
            outcomes[i] = outcome
        results = []
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                code, message = item_error(outcome)
                results.append(identity_pb2.ReleaseDataKeyResult(
                    error=identity_pb2.BatchItemError(code=code, message=message)))
            else:
                results.append(identity_pb2.ReleaseDataKeyResult(
                    key=identity_pb2.ReleasedDataKey(plaintext_key=outcome)))  # type: ignore[arg-type]
        return identity_pb2.ReleaseDataKeysResponse(results=results)

    def DeleteDataKey(
        self, request: identity_pb2.DeleteDataKeyRequest, context: grpc.ServicerContext
    ) -> identity_pb2.DeleteDataKeyResponse:
        record_id = _require_record_id(request.record_id)
        if not request.patient_id:
            raise InvalidArgument("patient_id", "is required")
        self.data_keys.delete(record_id, request.patient_id)
        return identity_pb2.DeleteDataKeyResponse()

    def RotatePatientKey(
        self, request: identity_pb2.RotatePatientKeyRequest, context: grpc.ServicerContext
    ) -> identity_pb2.RotatePatientKeyResponse:
        if not request.patient_id:  # ACCESS: the patient themselves, or the operator
            raise InvalidArgument("patient_id", "is required")
        version, rewrapped = self.data_keys.rotate_patient_key(request.patient_id)
        return identity_pb2.RotatePatientKeyResponse(key_version=version, rewrapped=rewrapped)


    # --- network patient identity (docs/network-identity.md) ---------------------

    def LinkPatient(
        self, request: identity_pb2.LinkPatientRequest, context: grpc.ServicerContext
    ) -> identity_pb2.LinkPatientResponse:
        return self.links.link(caller_of(context), request.transaction if request.HasField("transaction") else None)

    def UnlinkPatient(
        self, request: identity_pb2.UnlinkPatientRequest, context: grpc.ServicerContext
    ) -> identity_pb2.LinkPatientResponse:
        return self.links.unlink(caller_of(context), request.transaction if request.HasField("transaction") else None)

    def ResolvePatient(
        self, request: identity_pb2.ResolvePatientRequest, context: grpc.ServicerContext
    ) -> identity_pb2.ResolvePatientResponse:
        return self.links.resolve(caller_of(context), request.fhir_patient_id)


def _batch(items: Any) -> list[Any]:
    """The items of a batch request: at least one, at most MAX_BATCH_ITEMS."""
    if not 1 <= len(items) <= MAX_BATCH_ITEMS:
        raise InvalidArgument("items", f"must hold 1 to {MAX_BATCH_ITEMS} items")
    return list(items)


def _require_record_id(record_id: str) -> str:
    if not _RECORD_ID.match(record_id):
        raise InvalidArgument("record_id", "is required: 1-128 of letters, digits, '.', '_', ':', '-'")
    return record_id


#: Tokens per CheckDecisions call (consent's MAX_CHECKS_PER_CALL).
CHECKS_PER_CALL = 1000


class ConsentCheck:
    """CheckDecision through ConsentService (errors reaching consent propagate: fail closed).

    Called with one token: CheckDecision; :meth:`many`: one CheckDecisions call for a release batch.
    """

    def __init__(self, consent_stub: object) -> None:
        self._consent = consent_stub

    def __call__(self, decision_token: str) -> tuple[bool, str]:
        from carechain.consent.v1 import consent_pb2

        response = self._consent.CheckDecision(  # type: ignore[attr-defined]
            consent_pb2.CheckDecisionRequest(decision_token=decision_token))
        return response.permitted, response.reason

    def many(self, decision_tokens: list[str]) -> list[tuple[bool, str]]:
        """(permitted, reason) of each token, in order, from one CheckDecisions call."""
        from carechain.consent.v1 import consent_pb2

        answers: list[tuple[bool, str]] = []
        for start in range(0, len(decision_tokens), CHECKS_PER_CALL):
            chunk = decision_tokens[start:start + CHECKS_PER_CALL]
            response = self._consent.CheckDecisions(  # type: ignore[attr-defined]
                consent_pb2.CheckDecisionsRequest(decision_tokens=chunk))
            if len(response.results) != len(chunk):
                raise IntegrityError("consent answered CheckDecisions with a wrong number of results")
            answers.extend((result.permitted, result.reason) for result in response.results)
        return answers


def consent_check(consent_stub: object) -> ConsentCheck:
    """Identity's re-check of decision tokens with consent (see :class:`ConsentCheck`)."""
    return ConsentCheck(consent_stub)


def build(
    settings: IdentitySettings, ledger: Any | None = None
) -> tuple[Register, list[Callable[[], None]]]:
    """The identity servicer, its stores and signer chosen by settings.

    - key_backend=local: SQLite registry and local keyring under settings.data_dir;
      key_backend=vault: registry in Vault KV v2, patients' keys in Vault Transit
      (nothing on local disk: identity can run as a stateless Deployment).
    - signing_backend=file: settings.signing_key_file; vault: Transit key
      settings.signing_key_name (default svc-identity).

    ledger (a LedgerService stub) defaults to the ledger at settings.ledger_address,
    called with access tokens this service mints for itself.
    """
    vault = None
    if settings.key_backend == "vault" or settings.signing_backend == "vault":
        from carechain.runtime.vault import vault_client

        vault = vault_client(settings)
    signer = _signer(settings, vault)
    trust = TrustBundle.load(settings.trust_dir)
    trusted_key = trust.key(TOKEN_ISSUER_ID)
    if trusted_key is None or not same(trusted_key, signer.public_key_bytes()):
        raise FailedPrecondition(
            f"CARECHAIN_SIGNING_KEY_FILE: key does not match {TOKEN_ISSUER_ID}.pub in CARECHAIN_TRUST_DIR"
        )
    closers: list[Callable[[], None]] = []
    peers = Peers(settings, local_token_source(signer, settings.token_ttl_seconds))
    closers.append(peers.close)
    registry, keyring = _stores(settings, vault)
    closers += [registry.close, keyring.close]
    # Resumes from its signed snapshot: a restart reads only the lifecycle transactions since.
    principal_status = PrincipalStatus.following(
        lambda: peers.ledger, snapshots=StatusSnapshots.in_data_dir(settings.data_dir, signer)).start()
    closers.append(principal_status.close)
    servicer = IdentityServicer(
        signer=signer,
        trust=trust,
        registry=registry,
        keys=keyring,
        ledger=ledger if ledger is not None else peers.ledger,
        chain_id=settings.chain_id,
        token_ttl_seconds=settings.token_ttl_seconds,
        challenge_ttl_seconds=settings.challenge_ttl_seconds,
        check_decision=consent_check(peers.consent) if settings.check_decisions else None,
        is_delegate=consent_delegates(peers.consent),
        principal_status=principal_status,
        smart_token_url=settings.smart_token_url,
    )

    return register_identity(servicer), closers


def register_identity(servicer: IdentityServicer) -> Register:
    """A register function adding servicer, guarded by ACCESS, to a server."""
    return register_servicer(identity_pb2_grpc.add_IdentityServiceServicer_to_server, servicer, ACCESS, servicer._auth)


def _signer(settings: IdentitySettings, vault: hvac.Client | None) -> Signer:
    if settings.signing_backend == "file":
        return Ed25519Signer.from_file(TOKEN_ISSUER_ID, settings.signing_key_file)
    from carechain.runtime.vault import service_signer

    return service_signer(settings, "identity", vault)


def _stores(settings: IdentitySettings, vault: hvac.Client | None) -> tuple[IdentityStore, KeyManager]:
    """The registry and key manager for settings.key_backend (each has a close())."""
    if settings.key_backend == "local":
        return Registry(settings.data_dir), LocalKeyring(settings.data_dir / KEYRING_DIR)
    from carechain.identity.vault_registry import VaultRegistry
    from carechain.runtime.vault_keyring import VaultTransitKeyManager

    assert vault is not None
    registry = VaultRegistry(vault, kv_mount=settings.vault_kv_mount, transit_mount=settings.vault_transit_mount)
    return registry, VaultTransitKeyManager(vault, settings.vault_transit_mount)


def main() -> None:
    """Run the identity service configured from CARECHAIN_* environment variables."""
    settings = IdentitySettings()
    configure_logging("identity", settings.log_level)  # what build logs (e.g. a resume) is kept
    register, closers = build(settings)
    run_service("identity", settings, register, closers)
