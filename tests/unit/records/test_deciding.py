"""ConsentDecider and BoundedCache (carechain.records.deciding), against the real consent service in-process.

Concurrent reads' decisions go to consent as DecideMany calls; each caller gets exactly what Decide
would have answered (permit, deny, or the refusal's status), and a revocation committed before a
decision is asked for is always seen.
"""

# ruff: noqa: F811 - test parameters named like the imported fixtures are how pytest injects them
from __future__ import annotations

import concurrent.futures

import grpc
import pytest
from consent_fixtures import (  # noqa: F401 - clock and env are fixtures
    RECORDS_CALLER,
    TREAT,
    Env,
    clock,
    env,
    grant,
    revoke_tx,
)

from carechain.consent.v1 import consent_pb2
from carechain.records.deciding import BoundedCache, ConsentDecider
from carechain.runtime.batch_items import ItemRpcError

PERMIT = consent_pb2.DECISION_EFFECT_PERMIT
DENY = consent_pb2.DECISION_EFFECT_DENY


class RecordsConsentStub:
    """The consent stub as the records service holds it (authenticated as svc-records), counting calls."""

    def __init__(self, env: Env) -> None:
        self.env = env
        self.batches: list[int] = []

    def DecideMany(self, request: consent_pb2.DecideManyRequest) -> consent_pb2.DecideManyResponse:  # noqa: N802
        self.batches.append(len(request.requests))
        return self.env.call("DecideMany", request, RECORDS_CALLER)


def request(record_id: str = "rec-onc", actor_id: str = "prac-onc", purpose: int = TREAT) -> consent_pb2.DecideRequest:
    return consent_pb2.DecideRequest(actor_id=actor_id, record_id=record_id, purpose=purpose)


def test_concurrent_reads_get_their_own_decisions(env: Env) -> None:
    grant(env)
    stub = RecordsConsentStub(env)
    decider = ConsentDecider(lambda: stub)
    asked = [request(), request(record_id="rec-psy"), request(actor_id="prac-gp")] * 8
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(decider.decide, asked))
    assert [a.effect for a in answers] == [PERMIT, DENY, DENY] * 8
    assert all(a.decision_token for a in answers[::3]) and not any(a.decision_token for a in answers[1::3])
    assert sum(stub.batches) == len(asked)  # every request was sent once, in some batch


def test_a_refused_request_raises_its_own_status_and_the_others_are_decided(env: Env) -> None:
    grant(env)
    decider = ConsentDecider(lambda: RecordsConsentStub(env))
    with pytest.raises(ItemRpcError) as refused:
        decider.decide(request(record_id="rec-missing"))
    assert isinstance(refused.value, grpc.RpcError) and refused.value.code() == grpc.StatusCode.NOT_FOUND
    assert refused.value.details() == "record rec-missing is not registered"
    with pytest.raises(ItemRpcError) as invalid:
        decider.decide(request(purpose=0))
    assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT and invalid.value.details().startswith("purpose:")
    assert decider.decide(request()).effect == PERMIT


def test_decide_all_sends_at_most_a_batch_per_call_and_answers_in_order(env: Env) -> None:
    # A search decides many records at once: DecideMany by DecideMany, a refusal in its own place.
    grant(env)
    stub = RecordsConsentStub(env)
    decider = ConsentDecider(lambda: stub, max_batch=4)
    asked = [request(), request(record_id="rec-psy"), request(record_id="rec-missing")] * 3
    answers = decider.decide_all(asked)
    assert stub.batches == [4, 4, 1]
    assert [a.effect for a in answers[0::3]] == [PERMIT] * 3 and [a.effect for a in answers[1::3]] == [DENY] * 3
    assert all(isinstance(a, ItemRpcError) and a.code() == grpc.StatusCode.NOT_FOUND for a in answers[2::3])


def test_a_revocation_committed_before_the_decision_is_seen(env: Env) -> None:
    consent_id = grant(env).consent_id
    decider = ConsentDecider(lambda: RecordsConsentStub(env))
    assert decider.decide(request()).effect == PERMIT
    env.ledger.commit(revoke_tx(consent_id))  # straight to the ledger
    assert decider.decide(request()).effect == DENY


def test_a_failed_consent_call_fails_every_caller_of_the_batch(env: Env) -> None:
    class Down:
        def DecideMany(self, request):  # noqa: N802
            raise ConnectionError("consent unreachable")

    decider = ConsentDecider(lambda: Down())
    with pytest.raises(ConnectionError):
        decider.decide(request())


def test_bounded_cache_drops_the_least_recently_used() -> None:
    cache: BoundedCache[str, int] = BoundedCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # a is now the most recently used
    cache.put("c", 3)
    assert (cache.get("a"), cache.get("b"), cache.get("c"), len(cache)) == (1, None, 3, 2)
    cache.discard("a")
    assert cache.get("a") is None
