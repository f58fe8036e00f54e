"""Client side of identity's data keys: concurrent callers' requests share one batch RPC.

The records gateway asks for a data key on every write and a key release on every read. A
:class:`DataKeyClient` gathers what concurrent threads ask for at the same moment into one
``GenerateDataKeys`` / ``ReleaseDataKeys`` call (:class:`carechain.runtime.batching.MicroBatcher`: no
added wait) and gives each caller its own answer: the proto message the single RPC returns, or an
:class:`carechain.runtime.batch_items.ItemRpcError` with the status the single RPC would have ended with.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from carechain.identity.v1 import identity_pb2
from carechain.runtime.batch_items import item_rpc_error
from carechain.runtime.batching import MicroBatcher

# Items per batch RPC (identity accepts up to 256).
MAX_BATCH = 64


class DataKeyClient:
    """Data keys from identity, batched across concurrent callers; stub() gives the IdentityService stub."""

    def __init__(self, stub: Callable[[], Any], max_batch: int = MAX_BATCH) -> None:
        self._stub = stub
        self._generate: MicroBatcher[identity_pb2.GenerateDataKeyRequest, identity_pb2.DataKey] = MicroBatcher(
            "identity.generate_data_keys", self._flush_generate, max_batch)
        self._release: MicroBatcher[identity_pb2.ReleaseDataKeyRequest, identity_pb2.ReleasedDataKey] = \
            MicroBatcher("identity.release_data_keys", self._flush_release, max_batch)

    def generate(self, patient_id: str, record_id: str) -> identity_pb2.DataKey:
        """A fresh data key for record_id under the patient's key (as GenerateDataKey)."""
        return self._generate.submit(identity_pb2.GenerateDataKeyRequest(patient_id=patient_id, record_id=record_id))

    def release(self, record_id: str, decision_token: str) -> identity_pb2.ReleasedDataKey:
        """record_id's data key against a consent decision token for it (as ReleaseDataKey)."""
        return self._release.submit(
            identity_pb2.ReleaseDataKeyRequest(record_id=record_id, decision_token=decision_token))

    def close(self) -> None:
        """Accept no more requests."""
        self._generate.close()
        self._release.close()

    def _flush_generate(self, items: list[identity_pb2.GenerateDataKeyRequest]) -> Sequence[object]:
        response = self._stub().GenerateDataKeys(identity_pb2.GenerateDataKeysRequest(items=items))
        return _outcomes(response.results, len(items))

    def _flush_release(self, items: list[identity_pb2.ReleaseDataKeyRequest]) -> Sequence[object]:
        response = self._stub().ReleaseDataKeys(identity_pb2.ReleaseDataKeysRequest(items=items))
        return _outcomes(response.results, len(items))


def _outcomes(results: Any, expected: int) -> list[object]:
    """Each result's key, or its error as the exception the single call would have raised."""
    if len(results) != expected:
        raise RuntimeError(f"identity answered {len(results)} of {expected} batch items")
    outcomes: list[object] = []
    for result in results:
        outcomes.append(result.key if result.WhichOneof("outcome") == "key"
                        else item_rpc_error(result.error.code, result.error.message))
    return outcomes
