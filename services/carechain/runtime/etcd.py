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
  :class:`carechain.core.errors.Unavailable` naming ``etcd`` is raised.
- A write is reported successful only when a member answered that it was
  committed (through Raft, i.e. by a quorum). A write is retried on another
  member only when it certainly was not proposed (connection refused, or
  ``no leader``). When it was sent but no answer came (timeout, dropped
  connection, leader lost meanwhile), its outcome is unknown: the client
  raises :class:`OutcomeUnknown` (an Unavailable) and never retries it
  itself. Callers make writes safe to repeat (compare-and-swap with a way to
  recognise their own earlier attempt) and retry them.
- TLS and authentication (``CARECHAIN_ETCD_CA_FILE``, ``_CERT_FILE``,
  ``_KEY_FILE``, ``_USERNAME``, ``_PASSWORD``/``_PASSWORD_FILE``): https with
  our CA and client certificate; with a user, etcd's ``Authenticate`` gives a
  token sent in the ``Authorization`` header. A token etcd no longer accepts
  (expired after its idle TTL, unknown to a restarted member, older than an
  auth change) is renewed once and the request sent again: etcd rejected it
  before proposing or applying anything, so this is safe for writes too.
  Refused certificates, a wrong password or a missing permission raise
  :class:`AccessRefused` (an Unavailable) naming the setting to check; the
  password and the token never appear in a message.
"""

from __future__ import annotations

import base64
import json
import pathlib
import ssl
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import urllib3
from urllib3.exceptions import ConnectTimeoutError, HTTPError, NewConnectionError, ProtocolError, SSLError

from carechain.core.errors import FailedPrecondition, Unavailable
from carechain.runtime.metrics import backend_call, count_backend_error

BACKEND = "etcd"
DEFAULT_TIMEOUT_SECONDS = 2.0
# etcd's default --max-txn-ops is 128.
MAX_TXN_OPS = 128
DEFAULT_DEADLINE_SECONDS = 4.0
# A watch with no news for this long ends (cheaply re-created): a dead member is noticed without keepalives.
DEFAULT_WATCH_IDLE_SECONDS = 30.0
# Between rounds over every member while none can take a request (e.g. during a leader election).
_RETRY_PAUSE_SECONDS = 0.1
_CANNOT_CONNECT = "cannot connect"
_NOT_PROPOSED = ("etcdserver: no leader", "etcdserver: too many requests", "etcdserver: not capable")
# etcd's answers to a token it does not (or no longer) accept: nothing was proposed or applied.
_TOKEN_REJECTED = ("etcdserver: invalid auth token", "etcdserver: revision of auth store is old")
_AUTH_NEEDED = ("etcdserver: user name is empty", "etcdserver: user name not found")
_AUTH_FAILED = "etcdserver: authentication failed"
_AUTH_DISABLED = "etcdserver: authentication is not enabled"
_PERMISSION_DENIED = "etcdserver: permission denied"
_CREDENTIAL_SETTINGS = "CARECHAIN_ETCD_USERNAME and CARECHAIN_ETCD_PASSWORD or CARECHAIN_ETCD_PASSWORD_FILE"
# OpenSSL reasons of a TLS handshake that failed (certificate refused, not TLS at all). Go's TLS server reads
# no HTTP request before the handshake, client certificate included, succeeded: nothing reached etcd's API.
_HANDSHAKE_REFUSED = ("CERTIFICATE", "UNKNOWN_CA", "HANDSHAKE_FAILURE", "WRONG_VERSION_NUMBER",
                      "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG", "UNSUPPORTED_PROTOCOL")

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


class AccessRefused(Unavailable):
    """etcd refused CareChain's TLS certificate, credentials or permissions: a configuration problem.

    Nothing was written. The message names the setting to check and never contains the password or token.
    """

    def __init__(self, why: str) -> None:
        super().__init__(BACKEND, why)


class _TokenRejected(Exception):
    """etcd did not accept the auth token sent (expired, unknown to this member, or stale): log in again."""


@dataclass(frozen=True)
class Credentials:
    """An etcd user; the password is a value or a file read at every login (a rotated Secret is picked up)."""

    username: str
    password: str = field(default="", repr=False)
    password_file: pathlib.Path | None = None

    def read_password(self) -> str:
        """The password (a file's content without its trailing newline)."""
        if self.password_file is None:
            return self.password
        try:
            return self.password_file.read_text().rstrip("\r\n")
        except OSError as exc:
            raise AccessRefused(
                f"cannot read CARECHAIN_ETCD_PASSWORD_FILE {self.password_file}: {exc.strerror or exc}"
            ) from None


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
class WatchBatch:
    """One watch response: the revision etcd was at and the keys changed (a deleted key has an empty value)."""

    revision: int
    changes: list[KeyValue]


def _watch_batch(line: bytes) -> WatchBatch | None:
    """Decode one line of the gateway's watch stream; None when etcd ended or refused the watch."""
    message = _json(line)
    result = message.get("result")
    if not isinstance(result, dict) or result.get("canceled"):
        return None  # an error object (e.g. an expired auth token) or a cancelled watch: watch again
    revision = int(result.get("header", {}).get("revision", 0))
    return WatchBatch(revision, [KeyValue.from_json(event.get("kv", {})) for event in result.get("events", [])])


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
        ca_cert: str | pathlib.Path | None = None,
        deadline: float = DEFAULT_DEADLINE_SECONDS,
        *,
        cert_file: str | pathlib.Path | None = None,
        key_file: str | pathlib.Path | None = None,
        credentials: Credentials | None = None,
    ) -> None:
        """ca_cert verifies the members' certificates (default: the system's CAs); cert_file/key_file is the
        client certificate; with credentials every request carries an auth token of that user."""
        if isinstance(endpoints, str):
            endpoints = [e for e in (part.strip() for part in endpoints.split(",")) if e]
        if not endpoints:
            raise FailedPrecondition("no etcd endpoints configured (CARECHAIN_ETCD_ENDPOINTS)")
        self.endpoints = [e.rstrip("/") for e in endpoints]
        for endpoint in self.endpoints:
            if not endpoint.startswith(("http://", "https://")):
                raise FailedPrecondition(f"etcd endpoint {endpoint!r} must be an http:// or https:// URL")
            if endpoint.startswith("http://") and (ca_cert or cert_file):
                raise FailedPrecondition(
                    f"CARECHAIN_ETCD_ENDPOINTS: {endpoint!r} is plaintext http:// but etcd TLS is configured "
                    "(CARECHAIN_ETCD_CA_FILE / CARECHAIN_ETCD_CERT_FILE): use https://"
                )
        if credentials is not None and not credentials.username:
            raise FailedPrecondition("CARECHAIN_ETCD_USERNAME is empty")
        self.timeout = timeout
        self.deadline = max(deadline, timeout)
        self._http = urllib3.PoolManager(
            num_pools=max(4, len(self.endpoints)), maxsize=16, retries=False,
            ssl_context=_tls_context(ca_cert, cert_file, key_file),
        )
        self._preferred = 0
        self._lock = threading.Lock()
        self._credentials = credentials
        self._token: str | None = None
        # Held while logging in, so concurrent calls wait for one login instead of each starting its own.
        self._token_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Any, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> EtcdClient:
        """A client for the ``etcd_*`` settings of any ServiceSettings (endpoints, TLS files, user)."""
        credentials = None
        has_password = bool(settings.etcd_password.get_secret_value()) or settings.etcd_password_file is not None
        if settings.etcd_password.get_secret_value() and settings.etcd_password_file is not None:
            raise FailedPrecondition("set CARECHAIN_ETCD_PASSWORD or CARECHAIN_ETCD_PASSWORD_FILE, not both")
        if settings.etcd_username:
            if not has_password:
                raise FailedPrecondition(
                    "CARECHAIN_ETCD_USERNAME needs CARECHAIN_ETCD_PASSWORD or CARECHAIN_ETCD_PASSWORD_FILE"
                )
            credentials = Credentials(
                settings.etcd_username, settings.etcd_password.get_secret_value(), settings.etcd_password_file
            )
        elif has_password:
            raise FailedPrecondition("an etcd password is set but CARECHAIN_ETCD_USERNAME is empty")
        return cls(
            settings.etcd_endpoints, timeout=timeout, ca_cert=settings.etcd_ca_file,
            cert_file=settings.etcd_cert_file, key_file=settings.etcd_key_file, credentials=credentials,
        )

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

    def watch(self, key: Key, range_end: Key = b"", start_revision: int = 0,
              idle_timeout: float = DEFAULT_WATCH_IDLE_SECONDS) -> Iterator[WatchBatch]:
        """Changes to [key, range_end) (just key when range_end is empty), pushed by etcd as they commit.

        Yields one :class:`WatchBatch` per etcd watch response, from start_revision (0: from now). The
        stream ends quietly after idle_timeout seconds without a response or when the member goes away
        (callers watch again from the last revision + 1); Unavailable when no member accepts the watch.
        Push is an optimisation: callers must still work (by polling) while no watch runs.
        """
        request: dict[str, Any] = {"key": _b64(key)}
        if range_end:
            request["range_end"] = _b64(range_end)
        if start_revision:
            request["start_revision"] = str(start_revision)
        payload = json.dumps({"create_request": request}).encode()
        token = self._current_token()
        headers = {"Content-Type": "application/json", "Grpc-Metadata-hasleader": "true"}
        if token is not None:
            headers["Authorization"] = token
        with self._lock:
            endpoint = self.endpoints[self._preferred]
        try:
            reply = self._http.request(
                "POST", endpoint + "/v3/watch", body=payload, headers=headers, preload_content=False,
                timeout=urllib3.Timeout(connect=min(self.timeout, 1.0), read=idle_timeout),
            )
        except (HTTPError, OSError) as exc:
            with self._lock:  # try the next member next time
                if self.endpoints[self._preferred] == endpoint:
                    self._preferred = (self._preferred + 1) % len(self.endpoints)
            raise Unavailable(BACKEND, f"cannot watch on {endpoint} ({type(exc).__name__})") from exc
        try:
            if reply.status != 200:
                raise Unavailable(BACKEND, f"{endpoint} refused the watch (HTTP {reply.status})")
            pending = b""
            for chunk in reply.stream(64 * 1024):
                pending += chunk
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    batch = _watch_batch(line)
                    if batch is None:
                        if token is not None:
                            self._forget_token(token)
                        return
                    yield batch
        except (HTTPError, OSError):
            return  # idle timeout or the member went away: the caller watches again
        finally:
            reply.release_conn()

    def auth_request(self, method: str, body: dict[str, Any]) -> dict[str, Any]:
        """One call of etcd's auth API, e.g. ``auth_request("user/add", {...})`` (``/v3/auth/<method>``).

        For administration (the local development cluster grants roles with it); needs a root user.
        """
        return self._call(f"/v3/auth/{method}", body, idempotent=False)

    # --- transport -----------------------------------------------------------------------------

    def _call(self, path: str, body: dict[str, Any], idempotent: bool) -> dict[str, Any]:
        """One gateway call ("/v3/kv/range") in a client span; a failure (Unavailable) is counted."""
        with backend_call("etcd", path.removeprefix("/v3/")):
            try:
                return self._call_once(path, body, idempotent)
            except Unavailable:
                count_backend_error("etcd")
                raise

    def _call_once(self, path: str, body: dict[str, Any], idempotent: bool) -> dict[str, Any]:
        payload = json.dumps(body).encode()
        token = self._current_token()
        try:
            return self._send(path, payload, idempotent, token)
        except _TokenRejected:
            self._forget_token(token)
        try:
            return self._send(path, payload, idempotent, self._current_token())
        except _TokenRejected:
            raise AccessRefused(
                f"etcd rejected a fresh auth token of user {self._credentials.username!r}"  # type: ignore[union-attr]
                " (CARECHAIN_ETCD_USERNAME); was its role or password just changed?"
            ) from None

    def _current_token(self) -> str | None:
        """The auth token to send (logging in first when there is none yet); None without credentials."""
        if self._credentials is None:
            return None
        with self._token_lock:
            if self._token is None:
                self._token = self._authenticate(self._credentials)
            return self._token

    def _forget_token(self, token: str | None) -> None:
        with self._token_lock:
            if self._token == token:
                self._token = None

    def _authenticate(self, credentials: Credentials) -> str:
        body = {"name": credentials.username, "password": credentials.read_password()}
        try:
            data = self._send("/v3/auth/authenticate", json.dumps(body).encode(), True, None)
        except AccessRefused as exc:
            if _AUTH_FAILED in str(exc):
                raise AccessRefused(
                    f"authentication as etcd user {credentials.username!r} failed: wrong user name or password "
                    f"(check {_CREDENTIAL_SETTINGS})"
                ) from None
            if _AUTH_DISABLED in str(exc):
                # Deny by default: an etcd without auth lets anyone who reaches it rewrite the order.
                raise AccessRefused(
                    "CARECHAIN_ETCD_USERNAME is set but etcd has authentication disabled; refusing to use it "
                    "(enable etcd auth, or unset the CARECHAIN_ETCD_USERNAME/PASSWORD settings)"
                ) from None
            raise
        token = data.get("token")
        if not isinstance(token, str) or not token:
            raise AccessRefused(f"etcd gave no auth token for user {credentials.username!r}")
        return token

    def _send(self, path: str, payload: bytes, idempotent: bool, token: str | None) -> dict[str, Any]:
        """Send to the members in turn (see the module docstring) until one answers or the deadline passes."""
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
                data, problem = self._attempt(
                    endpoint, path, payload, idempotent, min(self.timeout, remaining), token
                )
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
        self, endpoint: str, path: str, payload: bytes, idempotent: bool, wait: float, token: str | None
    ) -> tuple[dict[str, Any] | None, str]:
        """One request to one member: (answer, "") or (None, why the next member should be tried); or raises."""
        headers = {"Content-Type": "application/json", "Grpc-Metadata-hasleader": "true"}
        if token is not None:
            headers["Authorization"] = token
        try:
            reply = self._http.request(
                "POST", endpoint + path, body=payload, headers=headers,
                timeout=urllib3.Timeout(connect=min(wait, 1.0), read=wait),
            )
        except (NewConnectionError, ConnectTimeoutError) as exc:
            # Never reached the member: safe to try the next one, write or not.
            return None, f"{_CANNOT_CONNECT} ({type(exc).__name__})"
        except SSLError as exc:
            refused = _handshake_refusal(exc)
            if refused:
                # The handshake failed, so no request reached etcd: as safe as a refused connection.
                return None, f"{_CANNOT_CONNECT}: {refused}"
            if idempotent:
                return None, type(exc).__name__
            raise OutcomeUnknown(f"no answer from {endpoint} within {wait:.1f}s") from exc
        except (HTTPError, ProtocolError, OSError) as exc:
            # A TLS-only etcd drops a plaintext connection without an answer.
            hint = " (plaintext http://: does it require https?)" if endpoint.startswith("http://") else ""
            if idempotent:
                return None, type(exc).__name__ + hint
            raise OutcomeUnknown(f"no answer from {endpoint} within {wait:.1f}s{hint}") from exc
        data = _json(reply.data)
        if reply.status == 200:
            return data, ""
        if reply.status == 400 and not data and b"HTTPS server" in reply.data:
            return None, f"{_CANNOT_CONNECT}: it serves only TLS (use https:// in CARECHAIN_ETCD_ENDPOINTS)"
        message = str(data.get("message") or data.get("error") or f"HTTP {reply.status}")
        code = int(data.get("code", 0) or 0)
        if code == 14 or reply.status in (502, 503, 504) or _gateway_lost_its_server(code, message):
            if idempotent or message.startswith(_NOT_PROPOSED):
                return None, message
            raise OutcomeUnknown(f"{endpoint}: {message}")
        _raise_access_problem(message, token, self._credentials)
        # Anything else is a request etcd refuses (too large, malformed, ...): no other member will differ.
        raise FailedPrecondition(f"etcd refused the request: {message}")


def _gateway_lost_its_server(code: int, message: str) -> bool:
    """True when the gateway's own gRPC call to its member failed in transport (e.g. the member is stopping).

    The gateway forwards each request to its member's gRPC server; when that server is going away the answer
    is e.g. code 2 "OK: HTTP status code 200; transport: missing content-type field", or a cancelled or
    timed-out call: a member problem (try another), not a refusal of the request.
    """
    return code in (1, 4) or (code in (2, 13) and ("transport" in message or "connection" in message))


def _raise_access_problem(message: str, token: str | None, credentials: Credentials | None) -> None:
    """Raise the right error when etcd's answer is about authentication or permissions."""
    if token is not None and message.startswith(_TOKEN_REJECTED):
        raise _TokenRejected
    if message.startswith(_AUTH_NEEDED):
        raise AccessRefused(f"etcd requires authentication ({message}): set {_CREDENTIAL_SETTINGS}")
    if message.startswith(_PERMISSION_DENIED):
        if credentials is None:
            raise AccessRefused(f"etcd requires authentication ({message}): set {_CREDENTIAL_SETTINGS}")
        user = credentials.username
        raise AccessRefused(
            f"{message} for etcd user {user!r}: its role must grant read and write on CareChain's key prefix "
            "(CARECHAIN_ETCD_PREFIX); nothing was changed"
        )
    if message.startswith((_AUTH_FAILED, _AUTH_DISABLED)):
        raise AccessRefused(message)


def _handshake_refusal(exc: SSLError) -> str:
    """Why a TLS handshake failed, naming the setting to check; "" when exc is not a handshake failure."""
    cause = exc.args[0] if exc.args and isinstance(exc.args[0], ssl.SSLError) else exc.__context__
    if isinstance(cause, ssl.SSLCertVerificationError):
        return (f"its TLS certificate is not trusted ({cause.verify_message}): check CARECHAIN_ETCD_CA_FILE"
                " and that the endpoint's host is in the certificate")
    reason = getattr(cause, "reason", None) or ""
    if not any(part in reason for part in _HANDSHAKE_REFUSED):
        return ""
    if "ALERT" in reason:
        return (f"it refused the TLS handshake ({reason}): etcd requires a client certificate signed by its "
                "trusted CA: check CARECHAIN_ETCD_CERT_FILE and CARECHAIN_ETCD_KEY_FILE")
    return f"TLS handshake failed ({reason}): does it serve TLS? (scheme of CARECHAIN_ETCD_ENDPOINTS)"


def _tls_context(
    ca_file: str | pathlib.Path | None, cert_file: str | pathlib.Path | None, key_file: str | pathlib.Path | None
) -> ssl.SSLContext | None:
    """The TLS context for https endpoints, loaded now so a bad file stops the service at start-up."""
    if bool(cert_file) != bool(key_file):
        raise FailedPrecondition("CARECHAIN_ETCD_CERT_FILE and CARECHAIN_ETCD_KEY_FILE go together: set both")
    if not ca_file and not cert_file:
        return None  # urllib3's default: verify against the system's CAs
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the certificate and the host name
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        if ca_file:
            context.load_verify_locations(cafile=str(ca_file))
        else:
            context.load_default_certs()
    except (OSError, ssl.SSLError) as exc:
        raise FailedPrecondition(f"CARECHAIN_ETCD_CA_FILE {ca_file}: not a readable PEM CA bundle ({exc})") from None
    if cert_file:
        try:
            context.load_cert_chain(str(cert_file), str(key_file))
        except (OSError, ssl.SSLError) as exc:
            raise FailedPrecondition(
                f"CARECHAIN_ETCD_CERT_FILE {cert_file} / CARECHAIN_ETCD_KEY_FILE {key_file}: not a readable PEM "
                f"certificate and matching key ({exc})"
            ) from None
    return context


def _json(data: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(data or b"{}")
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}
