"""``carechain patient ...``: one network identity for a patient registered at several organisations.

    carechain patient attest-link --key-file ORG_KEY --network-patient N LINKED_ID [--out FILE] [--json]
    carechain patient link --key-file PATIENT_KEY LINKED_ID ATTESTATION_FILE [--network-patient N] [--json]
    carechain patient unlink --key-file KEY LINKED_ID [--network-patient N] [--json]
    carechain patient resolve --key-file ORG_OR_PRACTITIONER_KEY FHIR_ID [--json]

The organisation that registered LINKED_ID attests the link with its key (``attest-link`` writes the
attestation, base64, to FILE or stdout); the network patient N (or, with ``--network-patient``, N's
delegate) signs the link with their own key. docs/network-identity.md.
"""

from __future__ import annotations

import argparse
import base64
import binascii
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
    read_input,
    report_errors,
)


@report_errors
def cmd_attest_link(args: argparse.Namespace) -> int:
    """As the organisation: attest that its patient LINKED_ID is the network patient."""
    with client_of(args) as client:
        attestation = base64.b64encode(client.attest_patient_link(args.network_patient, args.linked_id)).decode()
    if args.out:
        pathlib.Path(args.out).write_text(attestation + "\n")
    if args.json:
        print_json({"attestation": attestation})
    elif not args.out:
        print(attestation)
    else:
        print(f"attestation for {args.linked_id} written to {args.out}")
    return 0


@report_errors
def cmd_link(args: argparse.Namespace) -> int:
    """As the network patient (or a delegate): sign and submit the link with the organisation's attestation."""
    try:
        attestation = base64.b64decode(read_input(args.attestation, "ATTESTATION_FILE").strip(), validate=True)
    except binascii.Error:
        raise UsageError("ATTESTATION_FILE: not a base64 attestation from `carechain patient attest-link`") from None
    with client_of(args) as client:
        try:
            linked = client.link_patient(args.linked_id, attestation, args.network_patient)
        except ValueError as exc:  # not an attestation for this pair (checked before signing)
            raise UsageError(f"ATTESTATION_FILE: {exc}") from None
    if args.json:
        print_json(message_dict(linked))
    else:
        print(f"linked {args.linked_id} (ledger log index {linked.ledger_log_index}, "
              f"{linked.rewrapped} data keys re-wrapped)")
    return 0


@report_errors
def cmd_unlink(args: argparse.Namespace) -> int:
    """End a link (the network patient, a delegate or the linked patient's organisation)."""
    with client_of(args) as client:
        unlinked = client.unlink_patient(args.linked_id, args.network_patient)
    if args.json:
        print_json(message_dict(unlinked))
    else:
        print(f"unlinked {args.linked_id} (ledger log index {unlinked.ledger_log_index})")
    return 0


@report_errors
def cmd_resolve(args: argparse.Namespace) -> int:
    """As an organisation or its practitioner: the network identity of one of its FHIR Patient ids."""
    with client_of(args) as client:
        resolved = client.resolve_patient(args.fhir_id)
    if args.json:
        print_json(message_dict(resolved))
    else:
        print(f"network patient {resolved.network_patient_id}; "
              f"yours: {', '.join(resolved.organization_patient_ids) or '-'}")
    return 0


def add_patient_commands(sub: Any) -> None:
    """Add ``carechain patient ...`` to the top-level subparsers."""
    patient = sub.add_parser("patient", help="a patient's network identity across organisations")
    patient_sub = patient.add_subparsers(dest="patient_command", required=True)

    attest = patient_sub.add_parser("attest-link", help="attest that your patient is a network patient")
    add_network_arguments(attest)
    add_caller_arguments(attest, "the organisation that registered the linked patient")
    attest.add_argument("linked_id", metavar="LINKED_ID", help="your patient's pseudonym")
    attest.add_argument("--network-patient", required=True, help="the patient's network identity (pseudonym)")
    attest.add_argument("--out", default="", help="write the attestation to this file (default: stdout)")
    add_output_arguments(attest)
    attest.set_defaults(func=cmd_attest_link)

    link = patient_sub.add_parser("link", help="link a pseudonym of yours to your network identity")
    add_network_arguments(link)
    add_caller_arguments(link, "the network patient, or their delegate")
    link.add_argument("linked_id", metavar="LINKED_ID", help="the pseudonym the organisation attested")
    link.add_argument("attestation", metavar="ATTESTATION_FILE", help="from `patient attest-link` (- = stdin)")
    link.add_argument("--network-patient", default="", help="the network patient you act for (delegates)")
    add_output_arguments(link)
    link.set_defaults(func=cmd_link)

    unlink = patient_sub.add_parser("unlink", help="end a link")
    add_network_arguments(unlink)
    add_caller_arguments(unlink, "the network patient, their delegate, or the linked patient's organisation")
    unlink.add_argument("linked_id", metavar="LINKED_ID")
    unlink.add_argument("--network-patient", default="", help="the network patient (default: yourself)")
    add_output_arguments(unlink)
    unlink.set_defaults(func=cmd_unlink)

    resolve = patient_sub.add_parser("resolve", help="the network identity of one of your FHIR Patient ids")
    add_network_arguments(resolve)
    add_caller_arguments(resolve, "an organisation or its practitioner")
    resolve.add_argument("fhir_id", metavar="FHIR_ID")
    add_output_arguments(resolve)
    resolve.set_defaults(func=cmd_resolve)
