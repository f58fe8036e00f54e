"""``carechain records ...``: store and read FHIR records through the records gateway.

    carechain records put --key-file HOSPITAL_KEY --patient PATIENT_ID FILE.json [--json]
        store a FHIR R4 resource (``-`` reads stdin); prints the record id, labels and ledger log index
    carechain records get --key-file KEY RECORD_ID [--purpose treat] [--action access|disclose]
                          [--break-glass REASON] [--out FILE] [--json]
        read a record as consent permits: the exact stored JSON on stdout, or in --out (0600)
    carechain records import --key-file HOSPITAL_KEY (--patient PSN | --patients MAP.json) PATH...
        bulk-import NDJSON (Synthea, bulk export) and Bundle files (carechain.cli.records_import)
    carechain records erase --key-file KEY [--patient PSN] (--all | RECORD_ID...) [--reason TEXT] [--json]
        erase records (crypto-shredding) as the patient, a delegate or the operator; prints the receipt,
        its inclusion proof checked against the co-signed checkpoint
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from carechain.cli.records_import import add_import_command
from carechain.cli.session import (
    UsageError,
    add_caller_arguments,
    add_network_arguments,
    add_output_arguments,
    client_of,
    enum_choice,
    enum_name,
    print_json,
    read_input,
    report_errors,
    write_private_output,
)
from carechain.common.v1 import common_pb2


def _labels(categories: Any) -> list[str]:
    return [enum_name(common_pb2.SensitivityCategory, c, "SENSITIVITY_CATEGORY_") for c in categories]


@report_errors
def cmd_put(args: argparse.Namespace) -> int:
    """Store a FHIR resource for a patient."""
    resource = read_input(args.file, "FILE")
    with client_of(args) as client:
        stored = client.put_record(args.patient, resource)
    if args.json:
        print_json({"record_id": stored.record_id, "version": stored.version, "categories": _labels(stored.categories),
                    "content_sha256": stored.content_sha256, "ledger_log_index": stored.ledger_log_index})
        return 0
    print(f"stored record {stored.record_id} (version {stored.version}) for {args.patient}: "
          f"labels [{', '.join(_labels(stored.categories))}], ledger log index {stored.ledger_log_index}")
    return 0


@report_errors
def cmd_get(args: argparse.Namespace) -> int:
    """Read a record for a purpose of use."""
    with client_of(args) as client:
        read = client.get_record(args.record_id, args.purpose, args.break_glass, args.action)
    if args.out:
        write_private_output(args.out, read.resource_json)
    summary = {"record_id": read.record_id, "resource_type": read.resource_type, "patient_id": read.patient_id,
               "categories": _labels(read.categories), "decision_id": read.decision_id,
               "break_glass": read.break_glass, "redisclosure_notice": read.redisclosure_notice}
    if args.json:
        print_json({**summary, **({"out": args.out} if args.out else {"resource": json.loads(read.resource_json)})})
    elif args.out:
        print(f"wrote {read.resource_type} {read.record_id} to {args.out} (decision {read.decision_id})")
    else:
        sys.stdout.write(read.resource_json.decode() + "\n")
    if read.redisclosure_notice and not args.json:
        # 42 CFR 2.32: the notice goes with the record; on stderr so stdout stays the resource.
        print(read.redisclosure_notice, file=sys.stderr)
    if read.break_glass and not args.json:
        print("break-glass access: audited, the patient is notified and a review item queued", file=sys.stderr)
    return 0


@report_errors
def cmd_erase(args: argparse.Namespace) -> int:
    """Erase named records, or all, of a patient (the caller's own by default)."""
    if args.all == bool(args.record_ids):
        raise UsageError("name the records to erase, or give --all (not both)")
    with client_of(args) as client:
        receipt = client.erase_records(args.patient or client.principal_id, args.record_ids, args.reason,
                                       all_records=args.all)
    verified = bool(client.endpoints.trust_dir)
    if args.json:
        print_json({"patient_id": receipt.patient_id, "record_ids": list(receipt.record_ids),
                    "erased_count": receipt.erased_count, "erased_on": receipt.erased_on,
                    "log_index": receipt.log_index, "checkpoint_tree_size": receipt.checkpoint.tree_size,
                    "proof_verified": verified})
        return 0
    print(f"erased {receipt.erased_count} record(s) of {receipt.patient_id} on {receipt.erased_on}: "
          f"tombstone at ledger log index {receipt.log_index}"
          + (f", proven in the co-signed log of size {receipt.checkpoint.tree_size}" if verified else ""))
    return 0


def add_records_commands(sub: Any) -> None:
    """Add ``carechain records ...`` to the top-level subparsers."""
    records = sub.add_parser("records", help="store and read FHIR records")
    records_sub = records.add_subparsers(dest="records_command", required=True)

    put = records_sub.add_parser("put", help="store a FHIR R4 resource for a patient (as the hospital)")
    add_network_arguments(put)
    add_caller_arguments(put, "the hospital")
    put.add_argument("--patient", required=True, help="the patient's id (pseudonym) from register-patient")
    put.add_argument("file", metavar="FILE.json", help="the FHIR R4 resource (JSON; - for stdin)")
    add_output_arguments(put)
    put.set_defaults(func=cmd_put)

    get = records_sub.add_parser("get", help="read a record as consent permits")
    add_network_arguments(get)
    add_caller_arguments(get, "the reader")
    get.add_argument("record_id", metavar="RECORD_ID")
    get.add_argument("--purpose", type=enum_choice(common_pb2.PurposeOfUse, "PURPOSE_OF_USE_"),
                     default=common_pb2.PURPOSE_OF_USE_TREAT, help="purpose of use (default: treat)")
    get.add_argument("--action", type=enum_choice(common_pb2.ConsentAction, "CONSENT_ACTION_"), default=0,
                     help="access (the default) or disclose (to a third party)")
    get.add_argument("--break-glass", default="", metavar="REASON",
                     help="ask for emergency access (emergency physicians, purpose etreat), giving the reason")
    get.add_argument("--out", default="", help="write the resource to this file (0600) instead of stdout")
    add_output_arguments(get)
    get.set_defaults(func=cmd_get)

    erase = records_sub.add_parser("erase", help="erase records (crypto-shredding) and get the receipt")
    add_network_arguments(erase)
    add_caller_arguments(erase, "the patient, their delegate, or the operator")
    erase.add_argument("--patient", default="", help="the patient's id (default: the caller, a patient)")
    erase.add_argument("--all", action="store_true", help="erase every record of the patient")
    erase.add_argument("--reason", default="", help="why (kept in the audit trail, never on the ledger)")
    erase.add_argument("record_ids", nargs="*", metavar="RECORD_ID")
    add_output_arguments(erase)
    erase.set_defaults(func=cmd_erase)

    add_import_command(records_sub)
