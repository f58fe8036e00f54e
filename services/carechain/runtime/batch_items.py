"""Per-item outcomes of batch RPCs: one item's error travels as the status its single call would have had.

A batch RPC (identity ``GenerateDataKeys``, storage ``PutBlobs``, ...) answers each item with its result or a
``BatchItemError {code, message}``. On the server, :func:`item_error` turns the domain error of one item into
those fields (only expected refusals; anything else fails the whole call as an ordinary RPC error). On the
client, :func:`item_rpc_error` makes the :class:`ItemRpcError`, a ``grpc.RpcError`` with ``code()`` and
``details()`` like the one the single call raises, so callers (and the server interceptor passing a peer's
status on) treat both the same.
"""

from __future__ import annotations

import grpc

from carechain.core.errors import CareChainError

_CODES = {code.value[0]: code for code in grpc.StatusCode}


class ItemRpcError(grpc.RpcError):
    """One batch item's refusal, shaped like the RpcError of the single call."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self._code = code
        self._details = details

    def code(self) -> grpc.StatusCode:
        """The item's gRPC status code."""
        return self._code

    def details(self) -> str:
        """The item's status message."""
        return self._details

    def trailing_metadata(self) -> tuple:
        """None: items carry no metadata."""
        return ()


def item_error(error: BaseException) -> tuple[int, str]:
    """(code number, message) for one item's refusal; anything but a CareChainError is re-raised.

    INTERNAL errors are re-raised too: the interceptor logs them once and hides their message.
    """
    if not isinstance(error, CareChainError) or error.code == grpc.StatusCode.INTERNAL:
        raise error
    return error.code.value[0], error.message


def item_rpc_error(code: int, message: str) -> ItemRpcError:
    """The ItemRpcError for a BatchItemError's fields (an unknown or OK code counts as INTERNAL)."""
    status = _CODES.get(code, grpc.StatusCode.INTERNAL)
    if status == grpc.StatusCode.OK:
        status = grpc.StatusCode.INTERNAL
    return ItemRpcError(status, message)
