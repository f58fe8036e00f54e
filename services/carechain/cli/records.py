"""``carechain records ...``: store and read FHIR records through the records gateway.

    carechain records put --key-file HOSPITAL_KEY --patient PATIENT_ID FILE.json [--json]
        store a FHIR R4 resource (``-`` reads stdin); prints the record id, labels and ledger log index
    carechain records get --key-file KEY RECORD_ID [--purpose treat] [--action access|disclose]
                          [--break-glass REASON] [--version N] [--provenance] [--out FILE] [--json]
        read a record (its latest version, or version N) as consent permits: the exact stored JSON on
        stdout, or in --out (0600); --provenance prints the version's FHIR Provenance on stderr
    carechain records update --key-file HOSPITAL_KEY RECORD_ID FILE.json [--if-version N] [--json]
        write the next version of a record the hospital wrote; prints the new version
    carechain records history --key-file KEY RECORD_ID [--purpose treat] [--json]
        list a record's versions (when, by whom, content hash) as consent permits
    carechain records import --key-file HOSPITAL_KEY (--patient PSN | --patients MAP.json) PATH...
        bulk-import NDJSON (Synthea, bulk export) and Bundle files (carechain.cli.records_import)
    carechain records search --key-file KEY --patient PSN [--purpose treat] [--type T]... [--category C]...
                             [--fhir-category SYSTEM|CODE]... [--from DATE] [--to DATE] [--author ORG_ID]
                             [--updated-since TIME] [--page-size N] [--page-token TOKEN | --all] [--json]
        the patient's records the reader may read (metadata only) and how many were withheld
    carechain records summary --key-file KEY --patient PSN [--purpose treat] [--type T]... [--since TIME]
                              [--break-glass REASON] [--bundle FILE] [--json]
        every record the reader may read (each audited as a read); --bundle writes one FHIR Bundle (0600)
    carechain records erase --key-file KEY [--patient PSN] (--all | RECORD_ID...) [--reason TEXT] [--json]
        erase records (crypto-shredding) as the patient, a delegate or the operator; prints the receipt,
        its inclusion proof checked against the co-signed checkpoint
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from carechain.cli.audit import format_time, parse_time
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
from carechain.records.provenance import fhir_instant


def _labels(categories: Any) -> list[str]:
    return [enum_name(common_pb2.SensitivityCategory, c, "SENSITIVITY_CATEGORY_") for c in categories]


def _stored_summary(stored: Any) -> dict[str, Any]:
    """A committed write (PutRecordResponse) as --json prints it."""
    return {"record_id": stored.record_id, "version": stored.version, "categories": _labels(stored.categories),
            "content_sha256": stored.content_sha256, "ledger_log_index": stored.ledger_log_index}


def _add_purpose_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--purpose", type=enum_choice(common_pb2.PurposeOfUse, "PURPOSE_OF_USE_"),
                        default=common_pb2.PURPOSE_OF_USE_TREAT, help="purpose of use (default: treat)")


@report_errors
def cmd_put(args: argparse.Namespace) -> int:
    """Store a FHIR resource for a patient."""
    resource = read_input(args.file, "FILE")
    with client_of(args) as client:
        stored = client.put_record(args.patient, resource)
    if args.json:
        print_json(_stored_summary(stored))
        return 0
    print(f"stored record {stored.record_id} (version {stored.version}) for {args.patient}: "
          f"labels [{', '.join(_labels(stored.categories))}], ledger log index {stored.ledger_log_index}")
    return 0


@report_errors
def cmd_update(args: argparse.Namespace) -> int:
    """Write the next version of a record."""
    resource = read_input(args.file, "FILE")
    with client_of(args) as client:
        stored = client.update_record(args.record_id, resource, if_version=args.if_version)
    if args.json:
        print_json(_stored_summary(stored))
        return 0
    print(f"stored version {stored.version} of record {stored.record_id}: "
          f"labels [{', '.join(_labels(stored.categories))}], ledger log index {stored.ledger_log_index}")
    return 0


def _version_summary(version: Any) -> dict[str, Any]:
    return {"version": version.version, "ledger_log_index": version.ledger_log_index,
            "last_updated_ms": version.last_updated_ms, "author_organization_id": version.author_organization_id,
            "author_practitioner_id": version.author_practitioner_id, "content_sha256": version.content_sha256}


@report_errors
def cmd_history(args: argparse.Namespace) -> int:
    """List a record's versions."""
    with client_of(args) as client:
        versions = client.record_history(args.record_id, args.purpose)
    if args.json:
        print_json({"record_id": args.record_id, "versions": [_version_summary(v) for v in versions]})
        return 0
    for v in versions:
        by = v.author_practitioner_id or v.author_organization_id
        print(f"version {v.version}  {fhir_instant(v.last_updated_ms)}  by {by} ({v.author_organization_id})  "
              f"log index {v.ledger_log_index}  sha256 {v.content_sha256}")
    return 0


@report_errors
def cmd_get(args: argparse.Namespace) -> int:
    """Read a record for a purpose of use."""
    with client_of(args) as client:
        read = client.get_record(args.record_id, args.purpose, args.break_glass, args.action, version=args.version,
                                 provenance=args.provenance)
    if args.out:
        write_private_output(args.out, read.resource_json)
    summary = {"record_id": read.record_id, "resource_type": read.resource_type, "patient_id": read.patient_id,
               "categories": _labels(read.categories), "decision_id": read.decision_id,
               "break_glass": read.break_glass, "redisclosure_notice": read.redisclosure_notice,
               **_version_summary(read.record_version)}
    if read.provenance_json:
        summary["provenance"] = json.loads(read.provenance_json)
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
    if read.provenance_json and not args.json:
        # Like the notice: on stderr, so stdout stays the exact stored resource.
        sys.stderr.write(read.provenance_json.decode() + "\n")
    return 0


def _day(time_ms: int) -> str:
    return format_time(time_ms)[:10] if time_ms else "-"


@report_errors
def cmd_search(args: argparse.Namespace) -> int:
    """Search a patient's records (one page, or every page with --all)."""
    listed: list[Any] = []
    withheld, token = 0, args.page_token
    with client_of(args) as client:
        while True:
            page = client.search_records(
                args.patient, purpose=args.purpose, resource_types=args.type, categories=args.category,
                date_from_ms=args.date_from or 0, date_to_ms=args.date_to or 0, author_organization_id=args.author,
                updated_since_ms=args.updated_since or 0, page_size=args.page_size, page_token=token,
                resource_categories=args.fhir_category)
            listed += page.records
            withheld += page.withheld
            token = page.next_page_token
            if not (args.all and token):
                break
    if args.json:
        print_json({"records": [{"record_id": r.record_id, "resource_type": r.resource_type, "version": r.version,
                                 "data_date_ms": r.data_date_ms, "author_organization_id": r.author_organization_id,
                                 "last_updated_ms": r.last_updated_ms, "categories": _labels(r.categories),
                                 "resource_categories": list(r.resource_categories),
                                 "large": r.large} for r in listed],
                    "withheld": withheld, "next_page_token": token})
        return 0
    for r in listed:
        print(f"{r.record_id}  {r.resource_type:<20} v{r.version}  date {_day(r.data_date_ms)}  "
              f"by {r.author_organization_id}  updated {format_time(r.last_updated_ms)}  "
              f"[{', '.join(_labels(r.categories))}]"
              + (f"  category {', '.join(r.resource_categories)}" if r.resource_categories else "")
              + ("  (large: read it with the SDK's get_large_record)" if r.large else ""))
    print(f"{len(listed)} records; {withheld} withheld by the patient's consent", file=sys.stderr)
    if token:
        print(f"more: --page-token {token}", file=sys.stderr)
    return 0


@report_errors
def cmd_summary(args: argparse.Namespace) -> int:
    """Every record of a patient the reader may read, or (--bundle) one FHIR Bundle of them."""
    options = {"purpose": args.purpose, "resource_types": args.type, "since_ms": args.since or 0,
               "break_glass_reason": args.break_glass}
    with client_of(args) as client:
        if args.bundle:
            bundle = client.patient_summary_bundle(args.patient, **options)
            write_private_output(args.bundle, json.dumps(bundle, indent=2).encode())
            told_withheld = any(e.get("search", {}).get("mode") == "outcome" for e in bundle.get("entry", []))
            if args.json:
                print_json({"bundle": args.bundle, "total": bundle.get("total", 0)})
            else:
                print(f"wrote a Bundle of {bundle.get('total', 0)} records to {args.bundle}"
                      + (" (some records were withheld: see its OperationOutcome)" if told_withheld else ""))
            return 0
        summary = client.patient_summary(args.patient, **options)
    if args.json:
        print_json({"records": [{"record_id": r.record_id, "resource_type": r.resource_type,
                                 "categories": _labels(r.categories), "break_glass": r.break_glass,
                                 "resource": json.loads(r.resource_json)} for r in summary.records],
                    "withheld": summary.withheld, "large_records": summary.large_records})
        return 0
    for r in summary.records:
        sys.stdout.write(r.resource_json.decode() + "\n")
    print(f"{len(summary.records)} records; {summary.withheld} withheld by the patient's consent"
          + (f"; {summary.large_records} large records left out (the SDK's get_large_record reads them)"
             if summary.large_records else ""),
          file=sys.stderr)
    if any(r.break_glass for r in summary.records):
        print("break-glass access: audited, the patient is notified and a review item queued", file=sys.stderr)
    return 0


def _add_break_glass_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--break-glass", default="", metavar="REASON",
                        help="ask for emergency access (emergency physicians, purpose etreat), giving the reason")


def _add_reader_filters(parser: argparse.ArgumentParser) -> None:
    """The patient, purpose and resource types a search and a summary share."""
    parser.add_argument("--patient", required=True, help="the patient's id (pseudonym)")
    _add_purpose_argument(parser)
    parser.add_argument("--type", action="append", default=[], metavar="RESOURCE_TYPE",
                        help="only this FHIR resource type (repeatable)")


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
    _add_purpose_argument(get)
    get.add_argument("--action", type=enum_choice(common_pb2.ConsentAction, "CONSENT_ACTION_"), default=0,
                     help="access (the default) or disclose (to a third party)")
    _add_break_glass_argument(get)
    get.add_argument("--version", type=int, default=0, metavar="N", help="read version N (default: the latest)")
    get.add_argument("--provenance", action="store_true",
                     help="also print the version's FHIR Provenance (who wrote it, when)")
    get.add_argument("--out", default="", help="write the resource to this file (0600) instead of stdout")
    add_output_arguments(get)
    get.set_defaults(func=cmd_get)

    update = records_sub.add_parser("update", help="write the next version of a record (as its hospital)")
    add_network_arguments(update)
    add_caller_arguments(update, "the hospital that wrote the record")
    update.add_argument("record_id", metavar="RECORD_ID")
    update.add_argument("file", metavar="FILE.json", help="the new version's FHIR R4 resource (JSON; - for stdin)")
    update.add_argument("--if-version", type=int, default=0, metavar="N",
                        help="refuse unless N is still the latest version (optimistic concurrency)")
    add_output_arguments(update)
    update.set_defaults(func=cmd_update)

    history = records_sub.add_parser("history", help="list a record's versions as consent permits")
    add_network_arguments(history)
    add_caller_arguments(history, "the reader")
    history.add_argument("record_id", metavar="RECORD_ID")
    _add_purpose_argument(history)
    add_output_arguments(history)
    history.set_defaults(func=cmd_history)

    search = records_sub.add_parser("search", help="find a patient's records you may read (metadata only)")
    add_network_arguments(search)
    add_caller_arguments(search, "the reader")
    _add_reader_filters(search)
    search.add_argument("--category", action="append", default=[],
                        type=enum_choice(common_pb2.SensitivityCategory, "SENSITIVITY_CATEGORY_"),
                        help="only records with this sensitivity category (repeatable)")
    search.add_argument("--fhir-category", action="append", default=[], metavar="SYSTEM|CODE",
                        help="only records with this FHIR clinical category: system|code, |code or code, e.g. "
                             "laboratory (repeatable: any of them)")
    search.add_argument("--from", dest="date_from", type=parse_time, help="clinical date from (YYYY-MM-DD)")
    search.add_argument("--to", dest="date_to", type=parse_time, help="clinical date to, inclusive (YYYY-MM-DD)")
    search.add_argument("--author", default="", metavar="ORG_ID", help="only records this organisation wrote")
    search.add_argument("--updated-since", type=parse_time, help="only records updated since (date, ISO time, ms)")
    search.add_argument("--page-size", type=int, default=50, help="records per page (at most 200)")
    search.add_argument("--page-token", default="", help="continue from a previous page")
    search.add_argument("--all", action="store_true", help="follow every page")
    add_output_arguments(search)
    search.set_defaults(func=cmd_search)

    summary = records_sub.add_parser("summary", help="every record of a patient you may read ($everything)")
    add_network_arguments(summary)
    add_caller_arguments(summary, "the reader")
    _add_reader_filters(summary)
    summary.add_argument("--since", type=parse_time, help="only records updated since (date, ISO time, ms)")
    _add_break_glass_argument(summary)
    summary.add_argument("--bundle", default="", metavar="FILE", help="write one FHIR Bundle to FILE (0600)")
    add_output_arguments(summary)
    summary.set_defaults(func=cmd_summary)
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
