"""``carechain admin reconcile``: one reconciliation pass of the records service, as the operator.

The records service does the work (:mod:`carechain.records.reconcile`) with its own credentials;
the operator only asks for a pass and gets the counts back.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
from typing import Any

from carechain.cli.session import UsageError, endpoints_of

REPORT_FIELDS = (
    ("ledger_records", "records on the ledger"),
    ("orphan_blobs", "orphan blobs"),
    ("orphan_data_keys", "orphan data keys"),
    ("stale_uploads", "stale temporary uploads"),
    ("abandoned_writes", "abandoned write attempts"),
    ("unconfirmed_commits", "committed writes without a commit audit event"),
    ("erased_leftovers", "data keys and blobs of erased records destroyed"),
)


def cmd_admin_reconcile(args: argparse.Namespace) -> int:
    """Run one pass on the network in --data-dir and print what it found and did."""
    import grpc

    from carechain.client.auth import TokenSource
    from carechain.client.channels import open_channel
    from carechain.core.layout import NetworkLayout
    from carechain.records.v1 import records_pb2, records_pb2_grpc

    layout = NetworkLayout(pathlib.Path(args.data_dir))
    try:
        endpoints = endpoints_of(argparse.Namespace(endpoints=None, data_dir=args.data_dir))
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    tls = endpoints.client_tls()
    identity = open_channel(endpoints.identity, "identity", tls=tls)
    try:
        tokens = TokenSource.for_signer(identity, layout.operator_signer())
        with open_channel(endpoints.records, "records", tokens, tls) as channel:
            stub: Any = records_pb2_grpc.RecordsServiceStub(channel)
            try:
                report = stub.Reconcile(records_pb2.ReconcileRequest(dry_run=args.dry_run), timeout=args.timeout)
            except grpc.RpcError as exc:
                print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)  # type: ignore[attr-defined]
                return 1
    finally:
        identity.close()
    verb = "found (dry run, nothing changed)" if report.dry_run else "reconciled"
    print(f"{verb}: everything older than {report.cutoff_ms} (Unix ms)")
    for name, label in REPORT_FIELDS:
        print(f"  {label}: {getattr(report, name)}")
    return 0


def add_reconcile_command(admin_sub: Any, default_data_dir: str) -> None:
    """Register ``admin reconcile`` under the ``admin`` subcommands."""
    reconcile = admin_sub.add_parser(
        "reconcile", help="remove (or report) blobs, data keys, uploads and audit attempts crashed writes left behind")
    reconcile.add_argument("--data-dir", default=default_data_dir)
    reconcile.add_argument("--dry-run", action="store_true", help="only count, change nothing")
    reconcile.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the pass")
    reconcile.set_defaults(func=cmd_admin_reconcile)
