"""A small etcd v3 client over etcd's JSON gRPC gateway (``/v3/kv/*``), with failover.

Why this and not a gRPC client library: the maintained Python etcd clients
either pin an old protobuf runtime (CareChain uses protobuf 7) or are thin
single-endpoint wrappers. etcd serves the same API as JSON on its client port
(``--enable-grpc-gateway``, on by default since 3.4), so a few POSTs with
urllib3 give us everything CareChain needs: range reads (prefixes, limits,
descending order), puts, deletes and compare-and-swap transactions.

Behaviour that matters for correctness:

- Several endpoints: a call goes to the member that answered last; when a
  member cannot take it, the next one is tried, in rounds, until the call's
  deadline (``deadline``, 4 s by default), which rides out a leader election.
  When a majority of the members cannot even be connected to, no leader can
  exist, and the call fails after one round.
- Fail fast: every request carries etcd's ``hasleader`` requirement, so a
  member that has lost the quorum refuses at once (``etcdserver: no leader``)
  instead of queueing the request, and every attempt has a short timeout
  (``timeout``, 2 s). When no member takes the call before the deadline,
  :class:`carechain.errors.Unavailable` naming ``etcd`` is raised.
- A write is reported successful only when a member answered that it was
  committed (through Raft, i.e. by a quorum). A write is retried on another
  member only when it certainly was not proposed (connection refused, or
  ``no leader``). When it was sent but no answer came (timeout, dropped
  connection, leader lost meanwhile), its outcome is unknown: the client
  raises :class:`OutcomeUnknown` (an Unavailable) and never retries it
  itself. Callers make writes safe to repeat (compare-and-swap with a way to
  recognise their own earlier attempt) and retry them.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import urllib3
from urllib3.exceptions import ConnectTimeoutError, HTTPError, NewConnectionError, ProtocolError

from carechain.errors import FailedPrecondition, Unavailable

BACKEND = "etcd"
DEFAULT_TIMEOUT_SECONDS = 2.0
# etcd's default --max-txn-ops is 128.
MAX_TXN_OPS = 128
DEFAULT_DEADLINE_SECONDS = 4.0
# Between rounds over every member while none can take a request (e.g. during a leader election).
_RETRY_PAUSE_SECONDS = 0.1
_CANNOT_CONNECT = "cannot connect"
_NOT_PROPOSED = ("etcdserver: no leader", "etcdserver: too many requests", "etcdserver: not capable")

Key = str | bytes


def _bytes(value: Key) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)


def _b64(value: Key) -> str:
    return base64.b64encode(_bytes(value)).decode("ascii")


def _unb64(value: str | None) -> bytes:
    return base64.b64decode(value) if value else b""


def prefix_end(prefix: Key) -> bytes:
    """The range end covering every key that starts with prefix (etcd's convention)."""
    data = bytearray(_bytes(prefix))
    while data:
        if data[-1] < 0xFF:
            data[-1] += 1
            return bytes(data)
        data.pop()
    return b"\x00"  # every key


class OutcomeUnknown(Unavailable):
    """A write was sent but no commit answer came back: it may or may not be (or become) committed."""

    def __init__(self, why: str) -> None:
        super().__init__(BACKEND, f"{why}; the write's outcome is unknown")


@dataclass(frozen=True)
class KeyValue:
    """One stored key."""

    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> KeyValue:
        return cls(
            key=_unb64(data.get("key")),
            value=_unb64(data.get("value")),
            create_revision=int(data.get("create_revision", 0)),
            mod_revision=int(data.get("mod_revision", 0)),
            version=int(data.get("version", 0)),
        )


@dataclass(frozen=True)
class RangeResult:
    """Answer of a range read: the keys, whether more exist beyond the limit, the total count."""

    kvs: list[KeyValue]
    more: bool
    count: int
    revision: int

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RangeResult:
        return cls(
            kvs=[KeyValue.from_json(kv) for kv in data.get("kvs", [])],
            more=bool(data.get("more", False)),
            count=int(data.get("count", 0)),
            revision=int(data.get("header", {}).get("revision", 0)),
        )


_RESULTS = {"==": "EQUAL", "!=": "NOT_EQUAL", "<": "LESS", ">": "GREATER"}


@dataclass(frozen=True)
class Compare:
    """One condition of a transaction; build with :meth:`value`, :meth:`version`, :meth:`mod_revision`."""

    body: dict[str, Any]

    @classmethod
    def value(cls, key: Key, op: str, value: Key) -> Compare:
        """Compare a key's value (a missing key never compares equal to any value)."""
        return cls({"key": _b64(key), "target": "VALUE", "result": _RESULTS[op], "value": _b64(value)})

    @classmethod
    def version(cls, key: Key, op: str, version: int) -> Compare:
        """Compare a key's version; ``version(key, "==", 0)`` means "key does not exist"."""
        return cls({"key": _b64(key), "target": "VERSION", "result": _RESULTS[op], "version": str(version)})

    @classmethod
    def mod_revision(cls, key: Key, op: str, revision: int) -> Compare:
        """Compare the revision of a key's last modification."""
        return cls({"key": _b64(key), "target": "MOD", "result": _RESULTS[op], "mod_revision": str(revision)})


@dataclass(frozen=True)
class Op:
    """One operation of a transaction; build with :meth:`put`, :meth:`get`, :meth:`range`, :meth:`delete`."""

    body: dict[str, Any]
    is_range: bool = field(default=False)

    @classmethod
    def put(cls, key: Key, value: Key) -> Op:
        return cls({"request_put": {"key": _b64(key), "value": _b64(value)}})

    @classmethod
    def get(cls, key: Key) -> Op:
        return cls({"request_range": {"key": _b64(key)}}, is_range=True)

    @classmethod
    def range(cls, key: Key, range_end: Key = b"", limit: int = 0, keys_only: bool = False) -> Op:
        return cls({"request_range": _range_body(key, range_end, limit, keys_only=keys_only)}, is_range=True)

    @classmethod
    def delete(cls, key: Key, range_end: Key = b"") -> Op:
        body = {"key": _b64(key)}
        if range_end:
            body["range_end"] = _b64(range_end)
        return cls({"request_delete_range": body})


@dataclass(frozen=True)
class TxnResult:
    """Whether the comparisons held, and the answer of each executed range op (None for puts/deletes)."""

    succeeded: bool
    responses: list[RangeResult | None]
    revision: int


def _range_body(
    key: Key,
    range_end: Key = b"",
    limit: int = 0,
    *,
    keys_only: bool = False,
    count_only: bool = False,
    descending: bool = False,
    revision: int = 0,
) -> dict[str, Any]:
    body: dict[str, Any] = {"key": _b64(key)}
    if revision:
        body["revision"] = str(revision)
    if range_end:
        body["range_end"] = _b64(range_end)
    if limit:
        body["limit"] = str(limit)
    if keys_only:
        body["keys_only"] = True
    if count_only:
        body["count_only"] = True
    if descending:
        body["sort_order"] = "DESCEND"
        body["sort_target"] = "KEY"
    return body


class EtcdClient:
    """Thread-safe etcd v3 client over the JSON gateway of one or more members (see the module docstring)."""

    def __init__(
        self,
        endpoints: Sequence[str] | str,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        ca_cert: str | None = None,
        deadline: float = DEFAULT_DEADLINE_SECONDS,
    ) -> None:
        if isinstance(endpoints, str):
            endpoints = [e for e in (part.strip() for part in endpoints.split(",")) if e]
        if not endpoints:
            raise FailedPrecondition("no etcd endpoints configured (CARECHAIN_ETCD_ENDPOINTS)")
        self.endpoints = [e.rstrip("/") for e in endpoints]
        for endpoint in self.endpoints:
            if not endpoint.startswith(("http://", "https://")):
                raise FailedPrecondition(f"etcd endpoint {endpoint!r} must be an http:// or https:// URL")
        self.timeout = timeout
        self.deadline = max(deadline, timeout)
        self._http = urllib3.PoolManager(
            num_pools=max(4, len(self.endpoints)), maxsize=16, retries=False, ca_certs=ca_cert
        )
        self._preferred = 0
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Any, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> EtcdClient:
        """A client for ``settings.etcd_endpoints`` (any ServiceSettings)."""
        return cls(settings.etcd_endpoints, timeout=timeout)

    def close(self) -> None:
        """Close pooled connections."""
        self._http.clear()

    # --- KV ------------------------------------------------------------------------------------

    def range(
        self,
        key: Key,
        range_end: Key = b"",
        limit: int = 0,
        *,
        keys_only: bool = False,
        count_only: bool = False,
        descending: bool = False,
        revision: int = 0,
    ) -> RangeResult:
        """Keys in [key, range_end) (just key when range_end is empty), ascending unless descending.

        revision > 0 reads the store as it was at that revision (a consistent snapshot across calls).
        """
        body = _range_body(
            key, range_end, limit, keys_only=keys_only, count_only=count_only, descending=descending, revision=revision
        )
        return RangeResult.from_json(self._call("/v3/kv/range", body, idempotent=True))

    def get(self, key: Key) -> KeyValue | None:
        """One key, or None."""
        result = self.range(key)
        return result.kvs[0] if result.kvs else None

    def get_prefix(self, prefix: Key, limit: int = 0, *, keys_only: bool = False) -> RangeResult:
        """Keys starting with prefix, ascending."""
        return self.range(prefix, prefix_end(prefix), limit, keys_only=keys_only)

    def scan(
        self, start: Key, range_end: Key, page: int = 500, *, keys_only: bool = False, revision: int = 0
    ) -> Iterable[KeyValue]:
        """Every key in [start, range_end), ascending, read in pages (at revision, when given)."""
        key = _bytes(start)
        while True:
            result = self.range(key, range_end, page, keys_only=keys_only, revision=revision)
            yield from result.kvs
            if not result.more or not result.kvs:
                return
            key = result.kvs[-1].key + b"\x00"

    def put(self, key: Key, value: Key) -> int:
        """Store value under key; returns the revision of the write."""
        data = self._call("/v3/kv/put", {"key": _b64(key), "value": _b64(value)}, idempotent=False)
        return int(data.get("header", {}).get("revision", 0))

    def delete(self, key: Key, range_end: Key = b"") -> int:
        """Delete key (or [key, range_end)); returns how many keys were deleted."""
        body = {"key": _b64(key)}
        if range_end:
            body["range_end"] = _b64(range_end)
        return int(self._call("/v3/kv/deleterange", body, idempotent=False).get("deleted", 0))

    def delete_prefix(self, prefix: Key) -> int:
        """Delete every key starting with prefix."""
        return self.delete(prefix, prefix_end(prefix))

    def txn(self, compare: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()) -> TxnResult:
        """Atomically: if every comparison holds run success, else failure (one Raft commit)."""
        if len(success) > MAX_TXN_OPS or len(failure) > MAX_TXN_OPS:
            raise ValueError(f"an etcd transaction holds at most {MAX_TXN_OPS} operations per branch")
        body = {
            "compare": [c.body for c in compare],
            "success": [o.body for o in success],
            "failure": [o.body for o in failure],
        }
        data = self._call("/v3/kv/txn", body, idempotent=False)
        succeeded = bool(data.get("succeeded", False))
        ops = success if succeeded else failure
        answers = data.get("responses", [])
        responses: list[RangeResult | None] = []
        for op, answer in zip(ops, answers, strict=False):
            responses.append(RangeResult.from_json(answer.get("response_range", {})) if op.is_range else None)
        return TxnResult(succeeded, responses, int(data.get("header", {}).get("revision", 0)))

    def read_many(self, keys: Sequence[Key]) -> list[KeyValue | None]:
        """Several keys in few round trips (read-only transactions of up to MAX_TXN_OPS gets)."""
        found: list[KeyValue | None] = []
        for start in range(0, len(keys), MAX_TXN_OPS):
            chunk = keys[start : start + MAX_TXN_OPS]
            data = self._call("/v3/kv/txn", {"success": [Op.get(k).body for k in chunk]}, idempotent=True)
            for answer in data.get("responses", []):
                kvs = answer.get("response_range", {}).get("kvs", [])
                found.append(KeyValue.from_json(kvs[0]) if kvs else None)
        return found

    def healthy(self) -> bool:
        """True when some member answers a linearizable read (i.e. the cluster has a quorum)."""
        try:
            self.range(b"\x00carechain-health")
        except Unavailable:
            return False
        return True

    # --- transport -----------------------------------------------------------------------------

    def _call(self, path: str, body: dict[str, Any], idempotent: bool) -> dict[str, Any]:
        payload = json.dumps(body).encode()
        deadline = time.monotonic() + self.deadline
        with self._lock:
            first = self._preferred
        problems: dict[str, str] = {}
        while True:
            unreachable = 0
            for attempt in range(len(self.endpoints)):
                index = (first + attempt) % len(self.endpoints)
                endpoint = self.endpoints[index]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                data, problem = self._attempt(endpoint, path, payload, idempotent, min(self.timeout, remaining))
                if data is not None:
                    with self._lock:
                        self._preferred = index
                    return data
                problems[endpoint] = problem
                unreachable += problem.startswith(_CANNOT_CONNECT)
            # Every member refused without proposing. While a majority is reachable it is probably electing a
            # leader: try again until the deadline. Without a reachable majority no leader can exist: fail now.
            if unreachable > len(self.endpoints) // 2 or time.monotonic() + _RETRY_PAUSE_SECONDS >= deadline:
                break
            time.sleep(_RETRY_PAUSE_SECONDS)
        summary = "; ".join(f"{endpoint}: {problem}" for endpoint, problem in problems.items()) or "timed out"
        raise Unavailable(BACKEND, f"no quorum answered ({summary})")

    def _attempt(
        self, endpoint: str, path: str, payload: bytes, idempotent: bool, wait: float
    ) -> tuple[dict[str, Any] | None, str]:
        """One request to one member: (answer, "") or (None, why the next member should be tried); or raises."""
        try:
            reply = self._http.request(
                "POST",
                endpoint + path,
                body=payload,
                headers={"Content-Type": "application/json", "Grpc-Metadata-hasleader": "true"},
                timeout=urllib3.Timeout(connect=min(wait, 1.0), read=wait),
            )
        except (NewConnectionError, ConnectTimeoutError) as exc:
            # Never reached the member: safe to try the next one, write or not.
            return None, f"{_CANNOT_CONNECT} ({type(exc).__name__})"
        except (HTTPError, ProtocolError, OSError) as exc:
            if idempotent:
                return None, type(exc).__name__
            raise OutcomeUnknown(f"no answer from {endpoint} within {wait:.1f}s") from exc
        data = _json(reply.data)
        if reply.status == 200:
            return data, ""
        message = str(data.get("message") or data.get("error") or f"HTTP {reply.status}")
        code = int(data.get("code", 0) or 0)
        if code == 14 or reply.status in (502, 503, 504):
            if idempotent or message.startswith(_NOT_PROPOSED):
                return None, message
            raise OutcomeUnknown(f"{endpoint}: {message}")
        # Anything else is a request etcd refuses (too large, malformed, ...): no other member will differ.
        raise FailedPrecondition(f"etcd refused the request: {message}")


def _json(data: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(data or b"{}")
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}
