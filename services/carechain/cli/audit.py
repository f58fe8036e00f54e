"""``carechain audit ...``: the audit trail from the command line, against a running network.

    carechain audit history --key-file FILE [--principal-id ID] [--patient P] [--since DATE] [--until DATE] [--json]
        a patient's accounting of disclosures (date, recipient and organisation by name, data, action,
        purpose), as a table; a guardian passes their own key and --patient (also: ``carechain history``)
    carechain audit tail [--service S] [--outcome O] [--patient P] [--actor A] [--alerts-only]
                         [--after SEQ] [--no-follow] [--limit N]
        stream events (operator credentials from --data-dir, or --principal-id/--key-file of a service)
    carechain audit verify [--ledger]
        re-verify the chain and batch roots (and, with --ledger: each batch's anchor on the ledger, no
        batch left unanchored past the deadline, the ledger's history consistent with the checkpoints
        recorded in the trail); exit status 1 when anything fails
    carechain audit reviews [--all] | carechain audit resolve ITEM --note TEXT
        the privacy officer's review queue (operator)

A patient authenticates with their own Ed25519 key file (``carechain keys new``; PKCS#8 PEM naming
their principal id, or any PKCS#8 PEM key with --principal-id); the network's addresses come
from ``<data-dir>/network.json`` written by ``carechain up``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import pathlib
import sys
from collections.abc import Sequence
from typing import Any

from carechain.audit.v1 import audit_pb2
from carechain.common.v1 import common_pb2

_OUTCOMES = {"success": audit_pb2.AUDIT_OUTCOME_SUCCESS, "denied": audit_pb2.AUDIT_OUTCOME_DENIED,
             "failed": audit_pb2.AUDIT_OUTCOME_FAILED}


def parse_time(value: str) -> int:
    """Unix ms from a date (YYYY-MM-DD, UTC), an ISO 8601 time, or a number of Unix milliseconds."""
    if value.isdigit():
        return int(value)
    try:
        moment = datetime.datetime.fromisoformat(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r}: expected YYYY-MM-DD, an ISO time or Unix ms") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return int(moment.timestamp() * 1000)


def format_time(time_ms: int) -> str:
    """UTC time of Unix ms, to the second."""
    return datetime.datetime.fromtimestamp(time_ms / 1000, tz=datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _name(enum: Any, value: int, prefix: str) -> str:
    return enum.Name(value).removeprefix(prefix) if value in enum.values() and value else "-"


def _named(name: str, principal_id: str) -> str:
    """``Dr A. Jones (prac-1)`` when the name is known, else the id (or ``-``)."""
    if name and principal_id:
        return f"{name} ({principal_id})"
    return principal_id or "-"


def disclosure_table(disclosures: Sequence[audit_pb2.Disclosure]) -> str:
    """A readable table of an accounting of disclosures."""
    header = ("DATE (UTC)", "RECIPIENT", "ORGANISATION", "DATA", "ACTION", "PURPOSE", "OUTCOME", "")
    rows = [header] + [
        (
            format_time(d.time_ms), _named(d.recipient_name, d.recipient_id),
            _named(d.recipient_organization_name, d.recipient_organization_id), d.description,
            _name(audit_pb2.AuditAction, d.action, "AUDIT_ACTION_").lower().replace("_", " "),
            _name(common_pb2.PurposeOfUse, d.purpose, "PURPOSE_OF_USE_"),
            _name(audit_pb2.AuditOutcome, d.outcome, "AUDIT_OUTCOME_").lower(),
            "BREAK-GLASS" if d.alert else "",
        )
        for d in disclosures
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
                     for row in rows)


def event_line(stored: audit_pb2.StoredAuditEvent) -> str:
    """One line per streamed event."""
    e = stored.event
    parts = [
        f"#{stored.sequence}", format_time(e.time_ms), e.service,
        _name(audit_pb2.AuditAction, e.action, "AUDIT_ACTION_"),
        _name(audit_pb2.AuditOutcome, e.outcome, "AUDIT_OUTCOME_"),
        f"actor={e.actor_id}",
    ]
    if e.organization_id:
        parts.append(f"org={e.organization_id}")
    if e.patient_id:
        parts.append(f"patient={e.patient_id}")
    if e.record_id:
        parts.append(f"record={e.record_id}")
    if e.purpose:
        parts.append(f"purpose={_name(common_pb2.PurposeOfUse, e.purpose, 'PURPOSE_OF_USE_')}")
    if e.alert:
        parts.append("ALERT")
    if e.reason:
        parts.append(f"reason={e.reason!r}")
    return " ".join(parts)


def _client(args: argparse.Namespace, need_key: bool = False) -> Any:
    from carechain.client.endpoints import ENDPOINTS_FILE, Endpoints
    from carechain.client.sdk import CareChainClient
    from carechain.core.layout import NetworkLayout

    layout = NetworkLayout(pathlib.Path(args.data_dir))
    try:
        endpoints = Endpoints.load(layout.root / ENDPOINTS_FILE)
    except FileNotFoundError:
        raise SystemExit(f"no running network in {layout.root}: start one with "
                         f"`carechain up --data-dir {args.data_dir}`") from None
    if getattr(args, "key_file", None):
        from carechain.client.sdk import load_key_file

        try:
            signer = load_key_file(pathlib.Path(args.key_file), args.principal_id)
        except (OSError, ValueError) as exc:
            raise SystemExit(f"error: --key-file: {exc}") from None
    elif need_key:
        raise SystemExit("this command needs the patient's --key-file (and --principal-id if the file names none)")
    else:
        signer = layout.operator_signer()
    from carechain.client.proofs import default_checkpoint_file

    # Ledger checkpoints this user saw are remembered across runs (the same file as `carechain ledger verify`).
    return CareChainClient(endpoints, signer, checkpoint_file=default_checkpoint_file())


def _fail(exc: Exception) -> int:
    import grpc

    if isinstance(exc, grpc.RpcError):
        print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)  # type: ignore[attr-defined]
    else:
        print(f"error: {exc}", file=sys.stderr)
    return 1


def cmd_history(args: argparse.Namespace) -> int:
    """Print a patient's accounting of disclosures."""
    with _client(args, need_key=True) as client:
        return print_history(client, args)


def print_history(client: Any, args: argparse.Namespace) -> int:
    """Print the accounting of disclosures of args.patient (default: the client's own) as a table or JSON."""
    try:
        disclosures = client.accounting_of_disclosures(args.since or 0, args.until or 0, args.patient or "")
    except Exception as exc:  # noqa: BLE001 - shown to the user
        return _fail(exc)
    if args.json:
        from google.protobuf.json_format import MessageToDict

        print(json.dumps([MessageToDict(d) for d in disclosures], indent=2))
        return 0
    if not disclosures:
        print("no accesses recorded in this period")
        return 0
    print(disclosure_table(disclosures))
    return 0


def cmd_tail(args: argparse.Namespace) -> int:
    """Stream events to stdout, one line each."""
    filters: dict[str, Any] = {
        "service": args.service, "patient_id": args.patient, "actor_id": args.actor,
        "alerts_only": args.alerts_only, "replay_only": args.no_follow,
    }
    if args.outcome:
        filters["outcome"] = _OUTCOMES[args.outcome]
    shown = 0
    with _client(args) as client:
        try:
            for stored in client.stream_audit_events(args.after, **filters):
                print(json.dumps(_as_json(stored)) if args.json else event_line(stored), flush=True)
                shown += 1
                if args.limit and shown >= args.limit:
                    break
        except KeyboardInterrupt:
            return 0
        except Exception as exc:  # noqa: BLE001 - shown to the user
            return _fail(exc)
    return 0


def _as_json(stored: audit_pb2.StoredAuditEvent) -> dict[str, Any]:
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(stored)


def cmd_verify(args: argparse.Namespace) -> int:
    """Verify the audit trail (and its anchors, and the ledger against the checkpoints recorded in it)."""
    with _client(args) as client:
        try:
            result = client.verify_audit(check_ledger=args.ledger)
        except Exception as exc:  # noqa: BLE001 - shown to the user
            return _fail(exc)
        if not result.ok:
            print(f"audit trail BROKEN at event {result.first_bad_sequence}: {result.problem}")
            return 1
        anchors = (f", {result.anchors_checked} anchors match the ledger, the ledger extends the "
                   f"{result.checkpoints_checked} checkpoints recorded in the trail") if args.ledger else ""
        print(f"audit trail OK: {result.events_checked} events, {result.batches_checked} sealed batches "
              f"({result.batches_anchored} anchored on the ledger){anchors}")
        if args.ledger and client.endpoints.trust_dir:
            try:
                client.checkpoint()  # and the ledger's history against this user's own memory of it
            except Exception as exc:  # noqa: BLE001 - shown to the user
                return _fail(exc)
    return 0


def cmd_reviews(args: argparse.Namespace) -> int:
    """List review items."""
    status = 0 if args.all else audit_pb2.REVIEW_STATUS_OPEN
    with _client(args) as client:
        try:
            items = client.review_items(status)
        except Exception as exc:  # noqa: BLE001 - shown to the user
            return _fail(exc)
    if not items:
        print("no open review items" if not args.all else "no review items")
    for item in items:
        state = _name(audit_pb2.ReviewStatus, item.status, "REVIEW_STATUS_").lower()
        resolved = f" by {item.reviewer_id}: {item.note}" if item.reviewer_id else ""
        print(f"{item.item_id} [{state}{resolved}] {event_line(item.event)}")
    return 0


def cmd_resolve(args: argparse.Namespace) -> int:
    """Resolve one review item."""
    with _client(args) as client:
        try:
            item = client.resolve_review_item(args.item_id, args.note)
        except Exception as exc:  # noqa: BLE001 - shown to the user
            return _fail(exc)
    print(f"resolved {item.item_id} by {item.reviewer_id} (audit event #{item.resolution_sequence})")
    return 0


def add_audit_commands(sub: Any, default_data_dir: str) -> None:
    """Add ``carechain audit ...`` to the top-level subparsers."""
    audit = sub.add_parser("audit", help="audit trail: access history, live stream, verification, reviews")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)

    def common(parser: argparse.ArgumentParser, who: str) -> None:
        parser.add_argument("--data-dir", default=default_data_dir, help="the running network's data directory")
        parser.add_argument("--principal-id", default="", help=f"principal to act as ({who})")
        parser.add_argument("--key-file", default="", help="that principal's Ed25519 private key (PEM)")

    history = audit_sub.add_parser("history", help="a patient's accounting of disclosures (up to six years)")
    common(history, "the patient; required")
    history.add_argument("--patient", default="", help="patient pseudonym (default: the principal itself; a "
                         "guardian names the patient they represent)")
    history.add_argument("--since", type=parse_time, help="start (YYYY-MM-DD, ISO time or Unix ms; default: "
                                                          "six years before --until)")
    history.add_argument("--until", type=parse_time, help="end, exclusive (default: now)")
    history.add_argument("--json", action="store_true", help="print JSON instead of a table")
    history.set_defaults(func=cmd_history)

    tail = audit_sub.add_parser("tail", help="stream audit events (stored ones after --after, then live)")
    common(tail, "default: the operator of --data-dir")
    tail.add_argument("--service", default="", help="only events reported by this service")
    tail.add_argument("--outcome", choices=sorted(_OUTCOMES), help="only events with this outcome")
    tail.add_argument("--patient", default="", help="only events about this patient pseudonym")
    tail.add_argument("--actor", default="", help="only events by this principal")
    tail.add_argument("--alerts-only", action="store_true", help="only alert (break-glass) events")
    tail.add_argument("--after", type=int, default=0, help="resume after this sequence (the last one seen)")
    tail.add_argument("--no-follow", action="store_true", help="stop after the stored events")
    tail.add_argument("--limit", type=int, default=0, help="stop after this many events")
    tail.add_argument("--json", action="store_true", help="one JSON object per line")
    tail.set_defaults(func=cmd_tail)

    verify = audit_sub.add_parser("verify", help="re-verify the audit chain and its sealed batches")
    common(verify, "default: the operator of --data-dir")
    verify.add_argument("--ledger", action="store_true",
                        help="also check each batch's anchor on the ledger (and the anchoring deadline) and the "
                             "ledger's history against the checkpoints recorded in the trail")
    verify.set_defaults(func=cmd_verify)

    reviews = audit_sub.add_parser("reviews", help="the privacy officer's review queue (break-glass alerts)")
    common(reviews, "default: the operator of --data-dir")
    reviews.add_argument("--all", action="store_true", help="include resolved items")
    reviews.set_defaults(func=cmd_reviews)

    resolve = audit_sub.add_parser("resolve", help="resolve a review item with a note (audited)")
    common(resolve, "default: the operator of --data-dir")
    resolve.add_argument("item_id")
    resolve.add_argument("--note", required=True, help="what the review concluded (no PHI)")
    resolve.set_defaults(func=cmd_resolve)
