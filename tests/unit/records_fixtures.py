"""Shared helpers for the records gateway's unit tests (fake peers)."""

from __future__ import annotations

from collections.abc import Callable

from carechain.consent.v1 import consent_pb2


def decide_many_by_one(decide: Callable[[consent_pb2.DecideRequest], consent_pb2.Decision],
                       request: consent_pb2.DecideManyRequest) -> consent_pb2.DecideManyResponse:
    """A fake consent's DecideMany: its Decide for each request (an error fails the whole call, as a down
    consent service would)."""
    return consent_pb2.DecideManyResponse(results=[
        consent_pb2.DecideResult(decision=decide(one)) for one in request.requests])
