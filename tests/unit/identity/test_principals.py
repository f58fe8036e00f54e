"""Registering and reading principals (carechain.identity.principals) through in-process gRPC."""

# ruff: noqa: F811 - test parameters named like the imported fixtures are how pytest injects them
from __future__ import annotations

import re

import grpc
import pytest
from identity_fixtures import (  # noqa: F401 - net is a fixture
    OPERATOR,
    RECORDS,
    Code,
    Kind,
    Network,
    _code,
    _details,
    net,
    patient_caller,
    register_org,
    register_patient,
    register_practitioner,
)

from carechain.core.layout import (
    DECISION_ISSUER_ID,
)
from carechain.identity.v1 import identity_pb2
from carechain.runtime.auth import Caller

# --- registration ----------------------------------------------------------------


def test_registration_goes_to_the_ledger_without_names_or_fhir_ids(net: Network) -> None:
    _, org = register_org(net, "General Hospital")
    _, patient = register_patient(net, org, "fhir-patient-42")

    assert re.fullmatch(r"psn-[0-9a-f]{32}", patient.principal_id)
    assert re.fullmatch(r"org-[0-9a-f]{32}", org.principal_id)
    entries = [b.register_principal for b in net.ledger.bodies()]
    assert [e.principal_id for e in entries] == [org.principal_id, patient.principal_id]
    assert entries[1].kind == Kind.PRINCIPAL_KIND_PATIENT and entries[1].organization_id == org.principal_id
    assert patient.ledger_log_index == 1
    for tx in net.ledger.committed:
        assert b"fhir-patient-42" not in tx.body and b"Jane Doe" not in tx.body and b"General Hospital" not in tx.body


def test_practitioner_registration_records_specialty(net: Network) -> None:
    _, org = register_org(net)
    practitioner = register_practitioner(net, org, "emergency-medicine")
    got = net.stub.GetPrincipal(identity_pb2.GetPrincipalRequest(principal_id=practitioner.key_id),
                                metadata=net.as_(org))
    assert got.kind == Kind.PRINCIPAL_KIND_PRACTITIONER
    assert got.specialty == "emergency-medicine" and got.organization_id == org.principal_id
    assert re.fullmatch(r"prac-[0-9a-f]{32}", got.principal_id)
    assert net.ledger.bodies()[-1].register_principal.specialty == "emergency-medicine"


def test_same_patient_cannot_be_registered_twice(net: Network) -> None:
    _, org = register_org(net)
    register_patient(net, org, "pat-7")
    with pytest.raises(grpc.RpcError) as twice:
        register_patient(net, org, "pat-7")
    assert _code(twice) == Code.ALREADY_EXISTS


def test_same_fhir_id_at_two_organisations_is_two_patients(net: Network) -> None:
    _, first_org = register_org(net, "A")
    _, second_org = register_org(net, "B")
    _, first = register_patient(net, first_org, "pat-7")
    _, second = register_patient(net, second_org, "pat-7")
    assert first.principal_id != second.principal_id


def test_ledger_rejection_stores_nothing(net: Network) -> None:
    _, org = register_org(net)
    net.ledger.reject = True
    with pytest.raises(grpc.RpcError) as rejected:
        register_patient(net, org, "pat-9")
    assert _code(rejected) == Code.PERMISSION_DENIED

    net.ledger.reject = False
    _, patient = register_patient(net, org, "pat-9")  # not ALREADY_EXISTS: the failed attempt left no trace
    assert patient.ledger_log_index == 1


@pytest.mark.parametrize("kind", [Kind.PRINCIPAL_KIND_PRACTITIONER, Kind.PRINCIPAL_KIND_PATIENT])
def test_only_organisations_register_practitioners_and_patients(net: Network, kind: int) -> None:
    with pytest.raises(grpc.RpcError) as denied:
        net.stub.RegisterPrincipal(identity_pb2.RegisterPrincipalRequest(
            kind=kind, display_name="x", public_key=bytes(32), specialty="oncology" if kind == 2 else "",
            fhir_patient_id="p1" if kind == 3 else ""), metadata=net.as_(OPERATOR))
    assert _code(denied) == Code.PERMISSION_DENIED


def test_only_the_operator_registers_organisations(net: Network) -> None:
    _, org = register_org(net)
    for caller in (org, RECORDS):
        with pytest.raises(grpc.RpcError) as denied:
            net.stub.RegisterPrincipal(identity_pb2.RegisterPrincipalRequest(
                kind=Kind.PRINCIPAL_KIND_ORGANIZATION, display_name="Rogue", public_key=bytes(32)),
                metadata=net.as_(caller))
        assert _code(denied) == Code.PERMISSION_DENIED


def test_organisation_registers_only_its_own_members(net: Network) -> None:
    _, org = register_org(net, "A")
    _, other = register_org(net, "B")
    with pytest.raises(grpc.RpcError) as denied:
        net.stub.RegisterPrincipal(identity_pb2.RegisterPrincipalRequest(
            kind=Kind.PRINCIPAL_KIND_PATIENT, display_name="x", public_key=bytes(32), fhir_patient_id="p1",
            organization_id=other.principal_id), metadata=net.as_(org))
    assert _code(denied) == Code.PERMISSION_DENIED


@pytest.mark.parametrize(("change", "field"), [
    ({"public_key": bytes(31)}, "public_key"),
    ({"display_name": "  "}, "display_name"),
    ({"specialty": ""}, "specialty"),
    ({"specialty": "Oncology"}, "specialty"),
    ({"fhir_patient_id": "p1"}, "fhir_patient_id"),
    ({"kind": Kind.PRINCIPAL_KIND_SERVICE}, "kind"),
])
def test_invalid_registration_names_the_field(net: Network, change: dict, field: str) -> None:
    _, org = register_org(net)
    request = {"kind": Kind.PRINCIPAL_KIND_PRACTITIONER, "display_name": "Dr. X", "public_key": bytes(32),
               "specialty": "oncology", **change}
    with pytest.raises(grpc.RpcError) as invalid:
        net.stub.RegisterPrincipal(identity_pb2.RegisterPrincipalRequest(**request), metadata=net.as_(org))
    assert _code(invalid) == Code.INVALID_ARGUMENT
    assert _details(invalid).startswith(f"{field}:")


def test_patient_needs_a_fhir_id(net: Network) -> None:
    _, org = register_org(net)
    with pytest.raises(grpc.RpcError) as invalid:
        net.stub.RegisterPrincipal(identity_pb2.RegisterPrincipalRequest(
            kind=Kind.PRINCIPAL_KIND_PATIENT, display_name="x", public_key=bytes(32)), metadata=net.as_(org))
    assert _details(invalid).startswith("fhir_patient_id:")


# --- reading principals ----------------------------------------------------------


def test_fhir_id_is_shown_only_to_services_the_patient_and_its_organisation(net: Network) -> None:
    _, org = register_org(net, "A")
    _, other_org = register_org(net, "B")
    practitioner = register_practitioner(net, org)
    _, patient = register_patient(net, org, "pat-3")
    _, other_patient = register_patient(net, other_org, "pat-4")

    def fhir_id_seen_by(caller: Caller) -> str:
        request = identity_pb2.GetPrincipalRequest(principal_id=patient.principal_id)
        return net.stub.GetPrincipal(request, metadata=net.as_(caller)).fhir_patient_id

    assert fhir_id_seen_by(RECORDS) == "pat-3"
    assert fhir_id_seen_by(org) == "pat-3"
    assert fhir_id_seen_by(patient_caller(patient)) == "pat-3"
    assert fhir_id_seen_by(other_org) == ""
    assert fhir_id_seen_by(patient_caller(other_patient)) == ""
    assert fhir_id_seen_by(Caller(practitioner.key_id, Kind.PRINCIPAL_KIND_PRACTITIONER, org.principal_id)) == ""


def test_unknown_principal_is_not_found(net: Network) -> None:
    with pytest.raises(grpc.RpcError) as missing:
        net.stub.GetPrincipal(identity_pb2.GetPrincipalRequest(principal_id="psn-0"), metadata=net.as_(RECORDS))
    assert _code(missing) == Code.NOT_FOUND


def test_trusted_services_are_principals_too(net: Network) -> None:
    got = net.stub.GetPrincipal(identity_pb2.GetPrincipalRequest(principal_id=DECISION_ISSUER_ID),
                                metadata=net.as_(RECORDS))
    assert got.kind == Kind.PRINCIPAL_KIND_SERVICE and got.public_key == net.consent.public_key_bytes()
