"""What the records gateway keeps between reads, and how it asks consent: caches and a batched Decide.

- :class:`ConsentDecider`: concurrent reads' ``Decide`` requests go to consent as one ``DecideMany``
  (:class:`carechain.runtime.batching.MicroBatcher`: no wait is added, a lone read is a batch of one).
  Consent decides each on a state synchronised after the batch was sent, so a revocation committed
  before a read is seen exactly as with ``Decide``; a request consent refuses raises
  :class:`carechain.runtime.batch_items.ItemRpcError` with the status ``Decide`` would have had.
- :class:`BoundedCache`: a thread-safe LRU map for what does not change once known: a patient's
  registration (kind, organisation, FHIR id) and a record's verified ledger entry (a committed
  ``RegisterRecord`` is immutable; its sealed metadata is opened and checked once, before it is kept).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from carechain.consent.v1 import consent_pb2
from carechain.core.errors import DataLoss
from carechain.runtime.batch_items import item_rpc_error
from carechain.runtime.batching import MicroBatcher

K = TypeVar("K")
V = TypeVar("V")

#: Most reads decided in one DecideMany (consent accepts up to 256).
DECIDE_BATCH = 64


class ConsentDecider:
    """Decide through DecideMany: concurrent callers share one consent call."""

    def __init__(self, consent: Callable[[], Any], max_batch: int = DECIDE_BATCH) -> None:
        """consent() returns the ConsentService stub (called per batch, so it may be lazy)."""
        self._consent = consent
        self._max_batch = max_batch
        self._batcher: MicroBatcher[consent_pb2.DecideRequest, consent_pb2.Decision] = MicroBatcher(
            "consent-decide", self._decide_many, max_batch=max_batch)

    def decide(self, request: consent_pb2.DecideRequest) -> consent_pb2.Decision:
        """The decision on request (ItemRpcError as Decide's error would be; a failed call raises its error)."""
        return self._batcher.submit(request)

    def decide_all(self, requests: Sequence[consent_pb2.DecideRequest]
                   ) -> list[consent_pb2.Decision | BaseException]:
        """Many decisions at once (a search), DecideMany by DecideMany; a refused request is its ItemRpcError."""
        answers: list[consent_pb2.Decision | BaseException] = []
        for start in range(0, len(requests), self._max_batch):
            answers.extend(self._decide_many(list(requests[start:start + self._max_batch])))
        return answers

    def close(self) -> None:
        self._batcher.close()

    def _decide_many(self, requests: list[consent_pb2.DecideRequest]
                     ) -> Sequence[consent_pb2.Decision | BaseException]:
        response = self._consent().DecideMany(consent_pb2.DecideManyRequest(requests=requests))
        if len(response.results) != len(requests):
            raise DataLoss(f"consent answered {len(response.results)} of {len(requests)} decision requests")
        answers: list[consent_pb2.Decision | BaseException] = []
        for result in response.results:
            if result.WhichOneof("result") == "decision":
                answers.append(result.decision)
            else:
                answers.append(item_rpc_error(result.error.code, result.error.message))
        return answers


class BoundedCache(Generic[K, V]):
    """A thread-safe map of at most max_entries, the least recently used dropped first."""

    def __init__(self, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._max = max_entries
        self._entries: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)

    def discard(self, key: K) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
