"""``carechain consent ...``: a patient's (or their delegate's) consents, signed with their own key.

    carechain consent grant --key-file KEY CONSENT.json [--patient P] [--json]
        grant a FHIR R4 Consent (docs/consent.md: the supported elements); ``-`` reads stdin
    carechain consent list --key-file KEY [--patient P] [--json]
    carechain consent revoke --key-file KEY CONSENT_ID [--patient P] [--json]
    carechain consent export --key-file KEY CONSENT_ID [--out FILE]
        a consent as a FHIR R4 Consent resource
    carechain consent sign-fhir --key-file KEY CONSENT.json [--patient P] [--chain-id C]
        print the compact JWS a REST client sends as X-Consent-Signature with POST /Consent (docs/fhir.md)

A delegate (guardian, proxy) acts with their own key and names the patient with --patient.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from carechain.cli.audit import format_time
from carechain.cli.session import (
    add_caller_arguments,
    add_network_arguments,
    add_output_arguments,
    client_of,
    endpoints_of,
    enum_name,
    message_dict,
    print_json,
    read_input,
    report_errors,
    signer_of,
    write_private_output,
)
from carechain.consent.v1 import consent_pb2


def _status(record: consent_pb2.ConsentRecord) -> str:
    return enum_name(consent_pb2.ConsentStatus, record.status, "CONSENT_STATUS_").lower()


@report_errors
def cmd_grant(args: argparse.Namespace) -> int:
    """Grant a FHIR Consent, signed by the caller."""
    consent = read_input(args.file, "CONSENT.json")
    with client_of(args) as client:
        record = client.grant_consent_fhir(consent, args.patient)
    if args.json:
        print_json(message_dict(record))
        return 0
    print(f"granted consent {record.consent_id} for {record.patient_id} "
          f"(signed by {record.granted_by}, ledger log index {record.granted_log_index})")
    return 0


@report_errors
def cmd_list(args: argparse.Namespace) -> int:
    """List a patient's consents."""
    with client_of(args) as client:
        records = client.list_consents(args.patient)
    if args.json:
        print_json([message_dict(r) for r in records])
        return 0
    if not records:
        print("no consents")
    for r in records:
        print(f"{r.consent_id}  {_status(r):8} granted {format_time(r.granted_at_ms)} by {r.granted_by}  "
              f"{len(r.policy.provisions)} provision(s)")
    return 0


@report_errors
def cmd_revoke(args: argparse.Namespace) -> int:
    """Revoke a consent, signed by the caller."""
    with client_of(args) as client:
        record = client.revoke_consent(args.consent_id, args.patient)
    if args.json:
        print_json(message_dict(record))
        return 0
    print(f"revoked consent {record.consent_id} (ledger log index {record.revoked_log_index})")
    return 0


@report_errors
def cmd_export(args: argparse.Namespace) -> int:
    """Print (or write) a consent as FHIR JSON."""
    with client_of(args) as client:
        resource = client.export_consent(args.consent_id)
    text = json.dumps(resource, indent=2) + "\n"
    if args.out:
        write_private_output(args.out, text.encode())
        print(f"wrote Consent {args.consent_id} to {args.out}")
    else:
        print(text, end="")
    return 0


@report_errors
def cmd_sign_fhir(args: argparse.Namespace) -> int:
    """Print the X-Consent-Signature JWS over a Consent file's exact bytes (offline with --chain-id)."""
    from carechain.core.consent_jws import sign_consent

    consent = read_input(args.file, "CONSENT.json")
    signer = signer_of(args)
    chain_id = args.chain_id or endpoints_of(args).chain_id
    print(sign_consent(signer, consent, args.patient or signer.key_id, chain_id))
    return 0


def add_consent_commands(sub: Any) -> None:
    """Add ``carechain consent ...`` to the top-level subparsers."""
    consent = sub.add_parser("consent", help="grant, list, revoke and export consents (FHIR Consent)")
    consent_sub = consent.add_subparsers(dest="consent_command", required=True)

    def common(parser: argparse.ArgumentParser) -> None:
        add_network_arguments(parser)
        add_caller_arguments(parser, "the patient, or their delegate")
        parser.add_argument("--patient", default="", help="the patient a delegate acts for (default: yourself)")

    grant = consent_sub.add_parser("grant", help="grant a FHIR R4 Consent, signed with your key")
    common(grant)
    grant.add_argument("file", metavar="CONSENT.json", help="the FHIR Consent (JSON; - for stdin)")
    add_output_arguments(grant)
    grant.set_defaults(func=cmd_grant)

    listing = consent_sub.add_parser("list", help="the patient's consents")
    common(listing)
    add_output_arguments(listing)
    listing.set_defaults(func=cmd_list)

    sign = consent_sub.add_parser("sign-fhir", help="sign a FHIR Consent for POST /Consent on the FHIR gateway "
                                  "(prints the X-Consent-Signature JWS)")
    common(sign)
    sign.add_argument("--chain-id", default="", help="the network's chain id (default: from the network's "
                      "endpoints file)")
    sign.add_argument("file", metavar="CONSENT.json", help="the FHIR Consent exactly as it will be sent (- for stdin)")
    sign.set_defaults(func=cmd_sign_fhir)

    revoke = consent_sub.add_parser("revoke", help="revoke a consent, signed with your key")
    common(revoke)
    revoke.add_argument("consent_id", metavar="CONSENT_ID")
    add_output_arguments(revoke)
    revoke.set_defaults(func=cmd_revoke)

    export = consent_sub.add_parser("export", help="a consent as a FHIR R4 Consent resource")
    add_network_arguments(export)
    add_caller_arguments(export, "the patient, or their delegate")
    export.add_argument("consent_id", metavar="CONSENT_ID")
    export.add_argument("--out", default="", help="write it to this file (0600) instead of stdout")
    export.set_defaults(func=cmd_export)
