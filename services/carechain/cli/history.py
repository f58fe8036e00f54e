"""``carechain history``: a patient's accounting of disclosures (the table of ``carechain audit history``).

    carechain history --key-file KEY [--patient P] [--since DATE] [--until DATE] [--json]

Who read, was refused or was disclosed the patient's data, when, what and why; a delegate passes
their own key and --patient.
"""

from __future__ import annotations

import argparse
from typing import Any

from carechain.cli.audit import parse_time, print_history
from carechain.cli.session import (
    add_caller_arguments,
    add_network_arguments,
    add_output_arguments,
    client_of,
    report_errors,
)


@report_errors
def cmd_history(args: argparse.Namespace) -> int:
    """Print the accounting of disclosures as the key file's principal."""
    with client_of(args) as client:
        return print_history(client, args)


def add_history_command(sub: Any) -> None:
    """Add ``carechain history`` to the top-level subparsers."""
    history = sub.add_parser("history", help="a patient's accounting of disclosures (up to six years)")
    add_network_arguments(history)
    add_caller_arguments(history, "the patient, or their delegate")
    history.add_argument("--patient", default="", help="the patient a delegate acts for (default: yourself)")
    history.add_argument("--since", type=parse_time, help="start (YYYY-MM-DD, ISO time or Unix ms; default: "
                                                          "six years before --until)")
    history.add_argument("--until", type=parse_time, help="end, exclusive (default: now)")
    add_output_arguments(history)
    history.set_defaults(func=cmd_history)
