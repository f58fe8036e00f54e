"""Caps on long-lived server streams, so that streams never starve unary calls.

A gRPC server has a fixed pool of worker threads (``CARECHAIN_MAX_WORKERS``) and a
server-streaming handler holds one for as long as its stream is open: sixteen open
``StreamEvents`` tails used to take every worker of the audit service, and every
write (which records an audit event) then failed with DEADLINE_EXCEEDED.

A :class:`StreamLimiter` caps the streams open at once on one server and per caller;
a stream beyond either cap is refused at once with RESOURCE_EXHAUSTED. Each server
gets one (:func:`carechain.runtime.server.start_service`, from
``CARECHAIN_MAX_STREAMS`` and ``CARECHAIN_MAX_STREAMS_PER_CALLER``) and sizes its worker pool
and call admission as the unary share (``CARECHAIN_MAX_WORKERS``,
``CARECHAIN_MAX_CONCURRENT_RPCS``) plus ``CARECHAIN_MAX_STREAMS``: the capped streams
can never take a worker or a call slot that unary calls need. Its call interceptor makes
the limiter current while a call is served; a handler opts in with :func:`limited_stream`::

    @limited_stream
    def StreamEvents(self, request, context):
        ...
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import grpc

from carechain.core.errors import CareChainError
from carechain.runtime.access import caller

T = TypeVar("T")


class Serialized(bytes):
    """A streamed response already encoded as its method's response message (sent as is, not serialised again).

    A stream sending the same content to many callers (an audit event to 64 tails) encodes it once.
    """


def passing_serialized(serializer: Callable[[Any], bytes] | None) -> Callable[[Any], bytes] | None:
    """serializer, except that a :class:`Serialized` response is sent as it is."""
    if serializer is None:
        return None

    def serialize(response: Any) -> bytes:
        return bytes(response) if type(response) is Serialized else serializer(response)

    return serialize


class ResourceExhausted(CareChainError):
    """Too many concurrent streams (or calls): retry later."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class StreamLimiter:
    """Counts open streams on one server, in total and per caller; refuses one beyond either cap."""

    def __init__(self, max_streams: int, max_per_caller: int) -> None:
        if max_streams < 1 or max_per_caller < 1:
            raise ValueError("stream caps must be at least 1")
        self.max_streams = max_streams
        self.max_per_caller = min(max_per_caller, max_streams)
        self._lock = threading.Lock()
        self._open: dict[str, int] = {}
        self._total = 0

    @property
    def open_streams(self) -> int:
        """Streams open now on this server."""
        with self._lock:
            return self._total

    @contextlib.contextmanager
    def slot(self, caller_id: str) -> Iterator[None]:
        """Hold one stream slot for caller_id while the block runs; ResourceExhausted if none is free."""
        with self._lock:
            if self._open.get(caller_id, 0) >= self.max_per_caller:
                raise ResourceExhausted(
                    f"too many open streams for this caller (at most {self.max_per_caller}): close one and retry")
            if self._total >= self.max_streams:
                raise ResourceExhausted(
                    f"this server has its maximum of {self.max_streams} open streams: retry later")
            self._open[caller_id] = self._open.get(caller_id, 0) + 1
            self._total += 1
        try:
            yield
        finally:
            with self._lock:
                self._total -= 1
                left = self._open[caller_id] - 1
                if left:
                    self._open[caller_id] = left
                else:
                    del self._open[caller_id]


class CallAdmission:
    """At most ``max_calls`` calls in a server at once besides its open long-lived streams.

    gRPC's own ``maximum_concurrent_rpcs`` counts streams and unary calls alike, so the server sets it
    to ``max_calls`` plus the stream cap, and this counts what the streams leave: a call (health and
    reflection excepted) that would make more than ``max_calls`` calls not holding a stream slot is
    refused at once with RESOURCE_EXHAUSTED.
    """

    def __init__(self, max_calls: int, streams: StreamLimiter) -> None:
        self.max_calls = max_calls
        self._streams = streams
        self._lock = threading.Lock()
        self._in_flight = 0

    def enter(self) -> None:
        """Count one more call; ResourceExhausted if the unary share is full."""
        with self._lock:
            if self._in_flight - self._streams.open_streams >= self.max_calls:
                raise ResourceExhausted(f"this server has its maximum of {self.max_calls} calls in progress: "
                                        "retry later")
            self._in_flight += 1

    def leave(self) -> None:
        """A call counted by :meth:`enter` has ended."""
        with self._lock:
            self._in_flight -= 1


# The limiter of the server whose call this thread is serving (set by the server's call interceptor).
_current: contextvars.ContextVar[StreamLimiter | None] = contextvars.ContextVar("carechain_stream_limiter",
                                                                               default=None)


def serving_with_token(limiter: StreamLimiter | None) -> contextvars.Token[StreamLimiter | None]:
    """Make limiter the current server's while a call is served (the call interceptor)."""
    return _current.set(limiter)


def reset_serving_with(token: contextvars.Token[StreamLimiter | None]) -> None:
    """Undo :func:`serving_with_token`."""
    _current.reset(token)


def current_limiter() -> StreamLimiter | None:
    """The limiter of the server serving this call, if any."""
    return _current.get()


def limited_stream(handler: Callable[[Any, Any, Any], Iterator[T]]) -> Callable[[Any, Any, Any], Iterator[T]]:
    """Decorate a server-streaming servicer method: each stream holds a slot of the server's limiter.

    The caller is the one admitted by :func:`carechain.runtime.access.guard`; the slot is taken
    before the first message (RESOURCE_EXHAUSTED when none is free) and given back when the
    stream ends, however it ends (finished, cancelled, failed).
    """

    @functools.wraps(handler)
    def limited(servicer: Any, request: Any, context: Any) -> Iterator[T]:
        limiter = current_limiter()
        if limiter is None:  # served outside a CareChain server (direct calls in tests): no cap to apply
            yield from handler(servicer, request, context)
            return
        with limiter.slot(caller(context).principal_id):
            yield from handler(servicer, request, context)

    return limited
