"""The batching data-key client (carechain.identity.data_key_client) against the in-process identity service."""

# ruff: noqa: F811 - test parameters named like the imported fixtures are how pytest injects them
from __future__ import annotations

import concurrent.futures

import grpc
import pytest
from identity_fixtures import RECORDS, Code, Network, decision_token, net, register_org, register_patient  # noqa: F401

from carechain.identity.data_key_client import DataKeyClient
from carechain.identity.v1 import identity_pb2
from carechain.runtime.batch_items import ItemRpcError


class _AsRecords:
    """The identity stub, every call carrying the records service's token (as runtime.peers does)."""

    def __init__(self, net: Network) -> None:
        self._net = net

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        method = getattr(self._net.stub, name)
        return lambda request: method(request, metadata=self._net.as_(RECORDS))


@pytest.fixture
def client(net: Network) -> DataKeyClient:
    stub = _AsRecords(net)
    return DataKeyClient(lambda: stub)


def test_concurrent_callers_each_get_their_own_key_or_their_own_refusal(net: Network, client: DataKeyClient) -> None:
    _, org = register_org(net)
    patients = [register_patient(net, org, f"pat-{i}")[1].principal_id for i in range(3)]
    records = [(patients[i % 3], f"rec-{i}") for i in range(40)]
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        keys = list(pool.map(lambda item: client.generate(*item), records))

    assert [k.key_ref.record_id for k in keys] == [r for _, r in records]
    assert len({k.plaintext_key for k in keys}) == 40

    def read(i: int) -> bytes | grpc.RpcError:
        patient_id, record_id = records[i]
        # Every third caller brings a token for somebody else's record: only that caller is refused.
        token = decision_token(net, records[i + 1][1] if i % 3 == 2 else record_id, patient_id)
        try:
            return client.release(record_id, token).plaintext_key
        except grpc.RpcError as exc:
            return exc

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        released = list(pool.map(read, range(39)))
    for i, outcome in enumerate(released):
        if i % 3 == 2:
            assert isinstance(outcome, ItemRpcError)
            assert outcome.code() == Code.PERMISSION_DENIED
            assert outcome.details() == "decision token is for a different record"
        else:
            assert outcome == keys[i].plaintext_key


def test_a_refused_item_raises_what_the_single_call_raises(net: Network, client: DataKeyClient) -> None:
    with pytest.raises(grpc.RpcError) as batched:
        client.generate("psn-" + "0" * 32, "rec-1")
    with pytest.raises(grpc.RpcError) as single:
        _AsRecords(net).GenerateDataKey(identity_pb2.GenerateDataKeyRequest(patient_id="psn-" + "0" * 32,
                                                                             record_id="rec-1"))
    assert (batched.value.code(), batched.value.details()) == (single.value.code(), single.value.details())
