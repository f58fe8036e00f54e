"""``carechain principals ...``: onboarding hospitals (the operator), practitioners and patients (a hospital).

    carechain principals register-hospital --name NAME --new-key FILE [--key-file OPERATOR_KEY]
    carechain principals register-practitioner --key-file HOSPITAL_KEY --name NAME --specialty CODE --new-key FILE
    carechain principals register-patient --key-file HOSPITAL_KEY --fhir-id ID --name NAME --new-key FILE

--new-key is the new principal's key from ``carechain keys new``: its ``.pub`` file (what a registrar
normally gets), or the key file itself, which then records the assigned id. The operator's key defaults
to ``<data-dir>/keys/operator.pem`` of a local network.
"""

from __future__ import annotations

import argparse
import pathlib
from typing import Any

from carechain.cli.session import (
    UsageError,
    add_caller_arguments,
    add_network_arguments,
    add_output_arguments,
    client_of,
    message_dict,
    print_json,
    report_errors,
    signer_of,
)


def _new_public_key(args: argparse.Namespace) -> bytes:
    from carechain.client.sdk import load_public_key_file

    path = pathlib.Path(args.new_key)
    try:
        return load_public_key_file(path)
    except FileNotFoundError:
        raise UsageError(f"--new-key: {path} does not exist") from None
    except ValueError as exc:
        raise UsageError(f"--new-key: {exc}") from None


def _register(args: argparse.Namespace, signer: Any, kind: int, **fields: str) -> int:
    """Register the --new-key principal as signer; name the key file when we hold it; print the result."""
    from carechain.client.sdk import name_key_file
    from carechain.common.v1 import common_pb2

    public_key = _new_public_key(args)
    with client_of(args, signer) as client:
        principal = client.register(kind, args.name, public_key, **fields)
    new_key = pathlib.Path(args.new_key)
    named = b"PRIVATE KEY-----" in new_key.read_bytes()
    if named:
        name_key_file(new_key, principal.principal_id)
    if args.json:
        print_json({**message_dict(principal), "keyFileNamed": str(new_key) if named else ""})
        return 0
    kind_name = common_pb2.PrincipalKind.Name(principal.kind).removeprefix("PRINCIPAL_KIND_").lower()
    print(f"registered {kind_name} {principal.principal_id} (ledger log index {principal.ledger_log_index})")
    if named:
        print(f"{new_key} now names {principal.principal_id}")
    else:
        print(f"the key's owner runs: carechain keys set-id --key-file <their key file> {principal.principal_id}")
    return 0


@report_errors
def cmd_register_hospital(args: argparse.Namespace) -> int:
    """The operator registers an organisation."""
    from carechain.client.sdk import Kind
    from carechain.core.layout import NetworkLayout

    if args.key_file:
        signer = signer_of(args)
    else:
        layout = NetworkLayout(pathlib.Path(args.data_dir))
        try:
            signer = layout.operator_signer()
        except FileNotFoundError:
            raise UsageError(f"no operator key in {layout.keys_dir}: pass the operator's --key-file") from None
    return _register(args, signer, Kind.PRINCIPAL_KIND_ORGANIZATION)


@report_errors
def cmd_register_practitioner(args: argparse.Namespace) -> int:
    """A hospital registers one of its practitioners."""
    from carechain.client.sdk import Kind

    return _register(args, signer_of(args), Kind.PRINCIPAL_KIND_PRACTITIONER, specialty=args.specialty)


@report_errors
def cmd_register_patient(args: argparse.Namespace) -> int:
    """A hospital registers one of its patients (the id is their pseudonym)."""
    from carechain.client.sdk import Kind

    return _register(args, signer_of(args), Kind.PRINCIPAL_KIND_PATIENT, fhir_patient_id=args.fhir_id)


def add_principals_commands(sub: Any) -> None:
    """Add ``carechain principals ...`` to the top-level subparsers."""
    principals = sub.add_parser("principals", help="register hospitals, practitioners and patients")
    principals_sub = principals.add_subparsers(dest="principals_command", required=True)

    def common(parser: argparse.ArgumentParser) -> None:
        add_network_arguments(parser)
        parser.add_argument("--name", required=True, help="display name (kept by identity, never on the ledger)")
        parser.add_argument("--new-key", required=True,
                            help="the new principal's key (its .pub, or the key file, which then names the id)")
        add_output_arguments(parser)

    hospital = principals_sub.add_parser("register-hospital", help="the operator registers an organisation")
    common(hospital)
    add_caller_arguments(hospital, "the operator; default: <data-dir>/keys/operator.pem", required=False)
    hospital.set_defaults(func=cmd_register_hospital)

    practitioner = principals_sub.add_parser("register-practitioner", help="a hospital registers a practitioner")
    common(practitioner)
    add_caller_arguments(practitioner, "the hospital")
    practitioner.add_argument("--specialty", required=True,
                              help="e.g. oncology, psychiatry, emergency-medicine, general-practice")
    practitioner.set_defaults(func=cmd_register_practitioner)

    patient = principals_sub.add_parser("register-patient", help="a hospital registers a patient")
    common(patient)
    add_caller_arguments(patient, "the hospital")
    patient.add_argument("--fhir-id", required=True, help="the patient's FHIR Patient.id at the hospital")
    patient.set_defaults(func=cmd_register_patient)
