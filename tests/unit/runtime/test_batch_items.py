"""Per-item outcomes of batch RPCs (carechain.runtime.batch_items)."""

from __future__ import annotations

import grpc
import pytest

from carechain.core.errors import CareChainError, DataLoss, InvalidArgument, PermissionDenied
from carechain.runtime.batch_items import ItemRpcError, item_error, item_rpc_error


@pytest.mark.parametrize("error", [PermissionDenied("decision token already used"), DataLoss("changed"),
                                   InvalidArgument("record_id", "is required")])
def test_an_items_refusal_travels_as_the_status_of_the_single_call(error: CareChainError) -> None:
    code, message = item_error(error)
    raised = item_rpc_error(code, message)

    assert isinstance(raised, grpc.RpcError) and isinstance(raised, ItemRpcError)
    assert (raised.code(), raised.details()) == (error.code, error.message)


@pytest.mark.parametrize("error", [RuntimeError("bug with a value from the request"), CareChainError("internal")])
def test_unexpected_errors_are_not_item_outcomes(error: Exception) -> None:
    # They fail the whole call, where the interceptor logs them once and hides their message.
    with pytest.raises(type(error)):
        item_error(error)


@pytest.mark.parametrize("code", [0, 99])
def test_an_ok_or_unknown_item_code_counts_as_internal(code: int) -> None:
    assert item_rpc_error(code, "?").code() == grpc.StatusCode.INTERNAL
