"""``carechain delegates ...``: who may grant and revoke consent for a patient (guardian, proxy).

    carechain delegates add --key-file PATIENT_KEY DELEGATE_ID [--relationship guardian|proxy]
                            [--from DATE] [--until DATE] [--json]
    carechain delegates remove --key-file PATIENT_KEY DELEGATE_ID [--json]
    carechain delegates list --key-file KEY [--patient P] [--json]

Adding and removing are transactions the patient signs with their own key.
"""

from __future__ import annotations

import argparse
from typing import Any

from carechain.cli.audit import format_time, parse_time
from carechain.cli.session import (
    add_caller_arguments,
    add_network_arguments,
    add_output_arguments,
    client_of,
    enum_choice,
    enum_name,
    message_dict,
    print_json,
    report_errors,
)
from carechain.consent.v1 import consent_pb2, policy_pb2


def _line(d: consent_pb2.Delegation) -> str:
    relationship = enum_name(policy_pb2.DelegateRelationship, d.relationship, "DELEGATE_RELATIONSHIP_").lower()
    status = enum_name(consent_pb2.DelegationStatus, d.status, "DELEGATION_STATUS_").lower()
    start = format_time(d.period.start_ms) if d.period.start_ms else "open"
    end = format_time(d.period.end_ms) if d.period.end_ms else "open"
    return f"{d.delegate_id}  {relationship:8} {status:8} for {d.patient_id}  from {start} until {end}"


@report_errors
def cmd_add(args: argparse.Namespace) -> int:
    """Register a delegate, signed by the patient."""
    with client_of(args) as client:
        delegation = client.register_delegate(args.delegate_id, args.relationship, args.since or 0, args.until or 0)
    if args.json:
        print_json(message_dict(delegation))
    else:
        print(f"added delegate {_line(delegation)} (ledger log index {delegation.registered_log_index})")
    return 0


@report_errors
def cmd_remove(args: argparse.Namespace) -> int:
    """Revoke a delegate, signed by the patient."""
    with client_of(args) as client:
        delegation = client.revoke_delegate(args.delegate_id)
    if args.json:
        print_json(message_dict(delegation))
    else:
        print(f"removed delegate {delegation.delegate_id} (ledger log index {delegation.revoked_log_index})")
    return 0


@report_errors
def cmd_list(args: argparse.Namespace) -> int:
    """List a patient's delegations."""
    with client_of(args) as client:
        delegations = client.list_delegates(args.patient)
    if args.json:
        print_json([message_dict(d) for d in delegations])
        return 0
    if not delegations:
        print("no delegates")
    for d in delegations:
        print(_line(d))
    return 0


def add_delegates_commands(sub: Any) -> None:
    """Add ``carechain delegates ...`` to the top-level subparsers."""
    delegates = sub.add_parser("delegates", help="a patient's guardians and proxies")
    delegates_sub = delegates.add_subparsers(dest="delegates_command", required=True)

    add = delegates_sub.add_parser("add", help="let a principal grant and revoke consent for you")
    add_network_arguments(add)
    add_caller_arguments(add, "the patient")
    add.add_argument("delegate_id", metavar="DELEGATE_ID")
    add.add_argument("--relationship", type=enum_choice(policy_pb2.DelegateRelationship, "DELEGATE_RELATIONSHIP_"),
                     default=policy_pb2.DELEGATE_RELATIONSHIP_PROXY, help="guardian or proxy (default: proxy)")
    add.add_argument("--from", dest="since", type=parse_time, help="start (YYYY-MM-DD, ISO time or Unix ms)")
    add.add_argument("--until", type=parse_time, help="end, exclusive (default: open)")
    add_output_arguments(add)
    add.set_defaults(func=cmd_add)

    remove = delegates_sub.add_parser("remove", help="withdraw a delegate's right to act for you")
    add_network_arguments(remove)
    add_caller_arguments(remove, "the patient")
    remove.add_argument("delegate_id", metavar="DELEGATE_ID")
    add_output_arguments(remove)
    remove.set_defaults(func=cmd_remove)

    listing = delegates_sub.add_parser("list", help="a patient's delegations")
    add_network_arguments(listing)
    add_caller_arguments(listing, "the patient, or their delegate")
    listing.add_argument("--patient", default="", help="the patient (default: yourself)")
    add_output_arguments(listing)
    listing.set_defaults(func=cmd_list)
