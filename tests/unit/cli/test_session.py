"""The everyday commands' shared behaviour: one-line errors with exit statuses, enum flags by short name."""

from __future__ import annotations

import argparse

import grpc
import pytest

from carechain.cli.session import EXIT_FAILED, EXIT_USAGE, UsageError, endpoints_of, enum_choice, report_errors
from carechain.common.v1 import common_pb2
from carechain.core.errors import InvalidArgument


class _Refused(grpc.RpcError):
    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.PERMISSION_DENIED

    def details(self) -> str:
        return "not permitted by the patient's consent"


def _failing(exc: Exception):
    @report_errors
    def run(args: argparse.Namespace) -> int:
        raise exc

    return run


@pytest.mark.parametrize(("exc", "status", "line"), [
    (_Refused(), EXIT_FAILED, "error: PERMISSION_DENIED: not permitted by the patient's consent"),
    (InvalidArgument("Consent.status", "must be active"), EXIT_FAILED,
     "error: INVALID_ARGUMENT: Consent.status: must be active"),
    (UsageError("--key-file: k does not exist"), EXIT_USAGE, "error: --key-file: k does not exist"),
])
def test_failures_are_one_line_and_an_exit_status(capsys, exc: Exception, status: int, line: str) -> None:
    assert _failing(exc)(argparse.Namespace()) == status
    captured = capsys.readouterr()
    assert captured.err == line + "\n" and captured.out == ""


def test_enum_flags_take_short_names_in_any_case() -> None:
    purpose = enum_choice(common_pb2.PurposeOfUse, "PURPOSE_OF_USE_")
    assert purpose("treat") == purpose("TREAT") == common_pb2.PURPOSE_OF_USE_TREAT
    with pytest.raises(argparse.ArgumentTypeError, match="expected one of .*treat"):
        purpose("unspecified")


def test_no_network_is_a_usage_error_naming_the_way_out(tmp_path) -> None:
    with pytest.raises(UsageError, match="no running network in .* start one with .* up --data-dir"):
        endpoints_of(argparse.Namespace(endpoints="", data_dir=str(tmp_path)))
    (tmp_path / "bad.json").write_text('{"records": 1, "unknown": 2}')
    with pytest.raises(UsageError, match="not a CareChain endpoints file"):
        endpoints_of(argparse.Namespace(endpoints=str(tmp_path / "bad.json"), data_dir=""))
