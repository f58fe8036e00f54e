"""Least privilege on every RPC: one declared access table per service, enforced in one place.

Each service module declares an :class:`AccessTable`: for every RPC of its gRPC
service, one :class:`Allow` row naming the principal kinds that may call it and,
per kind, the :class:`Scope` the request must stay within (a patient reading
their own history, an organisation registering its own members, ...).

:func:`guard` wraps a servicer before it is added to a server. For every RPC of
the service descriptor the wrapper, before the handler runs:

1. authenticates the bearer token (unless the row is ``public``),
2. checks the caller's kind (and, for services, which service) against the row,
3. runs the row's scope check for that kind on the request,

and hands the authenticated :class:`~carechain.runtime.auth.Caller` to the handler
(:func:`caller`): handlers never authenticate a second time. An RPC without a
row is refused (deny by default), and :class:`carechain.runtime.server.CallInterceptor`
refuses every method of a registered service whose handler did not come from
:func:`guard`, so a service cannot be served unguarded by accident.

``docs/security.md`` holds the rendered tables (:func:`render_markdown`); a test
keeps it identical to the code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc

from carechain.core.errors import PermissionDenied, Unauthenticated
from carechain.core.layout import service_principal_id
from carechain.runtime.auth import Authenticator, Caller, Kind

PATIENT = Kind.PRINCIPAL_KIND_PATIENT
PRACTITIONER = Kind.PRINCIPAL_KIND_PRACTITIONER
ORGANIZATION = Kind.PRINCIPAL_KIND_ORGANIZATION
SERVICE = Kind.PRINCIPAL_KIND_SERVICE
OPERATOR = Kind.PRINCIPAL_KIND_OPERATOR
AUDITOR = Kind.PRINCIPAL_KIND_AUDITOR

# Column order of the rendered tables.
KINDS = (PATIENT, PRACTITIONER, ORGANIZATION, SERVICE, OPERATOR, AUDITOR)

# Marks handlers produced by guard(); CallInterceptor refuses any other handler.
GUARDED_ATTRIBUTE = "_carechain_access_checked"

# (caller, request, servicer) -> None; raises a CareChainError to refuse the request.
ScopeCheck = Callable[[Caller, Any, Any], None]


def kind_name(kind: int) -> str:
    """Short lower-case name of a principal kind, e.g. ``patient``."""
    return Kind.Name(kind).removeprefix("PRINCIPAL_KIND_").lower()


@dataclass(frozen=True)
class Scope:
    """A request-dependent limit on one kind of caller (checked before the handler runs)."""

    name: str
    description: str
    check: ScopeCheck = field(compare=False, repr=False)


def _no_limit(caller: Caller, request: Any, servicer: Any) -> None:
    return None


ANY = Scope("any", "any request", _no_limit)


def own_patient_field(field_name: str = "patient_id", *, required: bool = False) -> Scope:
    """The request's patient field is the calling patient (empty means "me" unless required)."""

    def check(caller: Caller, request: Any, servicer: Any) -> None:
        value = getattr(request, field_name)
        if (required and not value) or (value and value != caller.principal_id):
            raise PermissionDenied(f"a patient may only act on their own data ({field_name} must be theirs)")

    return Scope("self", f"`{field_name}` is the caller" + ("" if required else " (empty = the caller)"), check)


@dataclass(frozen=True)
class Allow:
    """One access-table row: which principal kinds may call an RPC, each within a scope.

    ``services`` limits service callers to the named services (empty: every
    service); ``public`` rows need no token at all (the token issuance flow).
    """

    scopes: Mapping[int, Scope] = field(default_factory=dict)
    services: frozenset[str] = frozenset()
    public: bool = False
    note: str = ""

    @classmethod
    def of(cls, *, patient: Scope | None = None, practitioner: Scope | None = None,
           organization: Scope | None = None, service: Scope | None = None, operator: Scope | None = None,
           auditor: Scope | None = None, services: Iterable[str] = (), note: str = "") -> Allow:
        """A row from keyword arguments, one per admitted kind (omitted kinds are denied)."""
        given = {PATIENT: patient, PRACTITIONER: practitioner, ORGANIZATION: organization, SERVICE: service,
                 OPERATOR: operator, AUDITOR: auditor}
        return cls({k: s for k, s in given.items() if s is not None}, frozenset(services), False, note)

    @classmethod
    def everyone(cls, note: str = "") -> Allow:
        """Every authenticated principal, whatever the request."""
        return cls({k: ANY for k in KINDS}, frozenset(), False, note)

    @classmethod
    def anonymous(cls, note: str = "") -> Allow:
        """No token needed (obtaining a token, the issuer's public keys)."""
        return cls({}, frozenset(), True, note)

    def cell(self, kind: int) -> str:
        """What this row grants kind, as rendered in docs/security.md."""
        if self.public:
            return "yes (no token)"
        scope = self.scopes.get(kind)
        if scope is None:
            return "-"
        text = "yes" if scope is ANY else scope.description
        if kind == SERVICE and self.services:
            text += " (" + ", ".join(sorted(self.services)) + " only)"
        return text


@dataclass(frozen=True)
class AccessTable:
    """The access rows of one gRPC service, by RPC name."""

    service: Any  # a protobuf ServiceDescriptor
    rows: Mapping[str, Allow]
    _service_ids: Mapping[str, frozenset[str]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        unknown = set(self.rows) - {m.name for m in self.service.methods}
        if unknown:
            raise ValueError(f"{self.service.full_name}: access rows for unknown RPCs {sorted(unknown)}")
        # The principal ids of each row's services, once (admit runs on every call).
        object.__setattr__(self, "_service_ids", {
            rpc: frozenset(service_principal_id(s) for s in row.services) for rpc, row in self.rows.items()})

    @property
    def full_name(self) -> str:
        return str(self.service.full_name)

    def admit(self, rpc: str, authenticator: Authenticator, context: grpc.ServicerContext, request: Any,
              servicer: Any) -> Caller | None:
        """The caller admitted to rpc by its row, or the error (UNAUTHENTICATED / PERMISSION_DENIED...) raised."""
        row = self.rows.get(rpc)
        if row is None:
            raise PermissionDenied(f"{rpc} has no access rule: denied by default")
        if row.public:
            return None
        caller = authenticator.authenticate(context)
        scope = row.scopes.get(caller.kind)
        if scope is None:
            raise PermissionDenied(f"{rpc} is not permitted for {kind_name(caller.kind)} principals")
        if caller.kind == SERVICE and row.services and caller.principal_id not in self._service_ids[rpc]:
            raise PermissionDenied(f"{rpc} is only for the {', '.join(sorted(row.services))} service")
        scope.check(caller, request, servicer)
        return caller


class _AuthorizedContext:
    """The servicer context of an admitted call, carrying its authenticated caller."""

    def __init__(self, context: grpc.ServicerContext, admitted: Caller | None) -> None:
        self._context = context
        self.carechain_caller = admitted

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


def caller(context: Any) -> Caller:
    """The authenticated caller of an RPC admitted by :func:`guard` (UNAUTHENTICATED otherwise: fail closed)."""
    admitted = getattr(context, "carechain_caller", None)
    if not isinstance(admitted, Caller):
        raise Unauthenticated("missing access token (authorization: Bearer <token>)")
    return admitted


class _Guarded:
    """A servicer whose RPC methods are admitted by an access table first."""

    def __init__(self, servicer: Any, table: AccessTable, authenticator: Authenticator) -> None:
        self._servicer = servicer
        self._table = table
        self._authenticator = authenticator
        self._methods = {m.name: m for m in table.service.methods}

    def __getattr__(self, name: str) -> Any:
        method = self._methods.get(name)
        if method is None:
            return getattr(self._servicer, name)
        behavior = getattr(self._servicer, name)
        table, authenticator, servicer = self._table, self._authenticator, self._servicer
        streams_requests = method.client_streaming

        def admit(request: Any, context: grpc.ServicerContext) -> _AuthorizedContext:
            # A request stream is not read before admission: scopes of such rows see None.
            return _AuthorizedContext(
                context, table.admit(name, authenticator, context, None if streams_requests else request, servicer)
            )

        if method.server_streaming:
            def wrapped(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                authorized = admit(request, context)  # refused before the first message
                return iter(behavior(request, authorized))
        else:
            def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
                return behavior(request, admit(request, context))

        setattr(wrapped, GUARDED_ATTRIBUTE, True)
        wrapped.__name__ = name
        return wrapped


def guard(servicer: Any, table: AccessTable, authenticator: Authenticator) -> Any:
    """servicer with every RPC of table's service admitted by table (pass it to add_*Servicer_to_server)."""
    return _Guarded(servicer, table, authenticator)


def is_guarded(behavior: Any) -> bool:
    """Whether a handler function was produced by :func:`guard`."""
    return bool(getattr(behavior, GUARDED_ATTRIBUTE, False))




