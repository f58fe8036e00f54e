"""Vault / OpenBao access for CareChain (hvac): login, errors, Transit signing keys.

Vault and OpenBao speak the same HTTP API, so everything here works with both.

- :func:`vault_client` logs in with the method the settings name (token for
  development, AppRole for services, Kubernetes in a cluster) and returns an
  ``hvac.Client`` that keeps itself logged in: it renews its token before the
  TTL runs out and logs in again when the token has expired or was revoked, so
  a long-running service does not die after one token lifetime.
- :func:`vault_errors` turns hvac/requests failures into CareChain errors:
  Vault unreachable, sealed or failing is ``Unavailable("vault", ...)``; a
  policy refusal is ``PermissionDenied`` naming the operation and path (never
  a token or secret).
- :class:`VaultTransitSigner` signs with a Transit ed25519 key: the private
  key never leaves Vault, only signatures and the public key do.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import pathlib
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

import hvac
import hvac.adapters
import hvac.exceptions
import requests

from carechain.core.crypto import Ed25519Signer, Signer
from carechain.core.errors import CareChainError, FailedPrecondition, NotFound, PermissionDenied, Unavailable
from carechain.core.layout import service_principal_id, write_public_key
from carechain.runtime.config import ServiceSettings
from carechain.runtime.metrics import backend_call, count_backend_error

log = logging.getLogger("carechain.runtime.vault")

BACKEND = "vault"
SIGNING_KEY_TYPE = "ed25519"
# Renew (or log in again) once this fraction of the token's TTL has passed.
RENEW_AT_FRACTION = 2 / 3


# --- errors --------------------------------------------------------------------


def _request_path(exc: hvac.exceptions.VaultError) -> str:
    """The API path of a failed request (``transit/datakey/plaintext/k``), without host or query."""
    url = getattr(exc, "url", None) or ""
    path = urllib.parse.urlsplit(url).path
    return path.removeprefix("/v1/") if path else "?"


def vault_message(exc: hvac.exceptions.VaultError) -> str:
    """Vault's own error text, shortened (Vault error texts carry no secrets, but can be long)."""
    errors = getattr(exc, "errors", None)
    text = "; ".join(str(e) for e in errors) if isinstance(errors, list) and errors else str(errors or "")
    return text[:300] or type(exc).__name__


def translate_error(exc: BaseException, operation: str) -> CareChainError | None:
    """The CareChain error for a transport, availability or permission failure; None for request errors.

    Request errors (400, 404) mean different things per engine, so callers map
    those themselves (see :func:`vault_errors`'s ``on_request_error``).
    """
    if isinstance(exc, requests.exceptions.RequestException):
        return Unavailable(BACKEND, f"{operation}: cannot reach Vault ({type(exc).__name__})")
    if isinstance(exc, hvac.exceptions.Forbidden | hvac.exceptions.Unauthorized):
        method = (getattr(exc, "method", None) or "").upper()
        return PermissionDenied(f"Vault denied {operation} ({method} {_request_path(exc)}): permission denied")
    if isinstance(exc, hvac.exceptions.VaultDown | hvac.exceptions.VaultNotInitialized):
        return Unavailable(BACKEND, f"{operation}: Vault is sealed, uninitialised or in standby")
    if isinstance(
        exc,
        hvac.exceptions.InternalServerError
        | hvac.exceptions.BadGateway
        | hvac.exceptions.RateLimitExceeded
        | hvac.exceptions.UnexpectedError,
    ):
        return Unavailable(BACKEND, f"{operation}: {type(exc).__name__}: {vault_message(exc)}")
    return None


@contextlib.contextmanager
def vault_errors(
    operation: str,
    on_request_error: Callable[[hvac.exceptions.VaultError], CareChainError] | None = None,
) -> Iterator[None]:
    """Run a Vault call, raising CareChain errors for its failures.

    on_request_error maps a 400/404 (``InvalidRequest``/``InvalidPath``) to a
    domain error; without it those become NotFound (404) or FailedPrecondition.
    """
    try:
        yield
    except CareChainError:
        raise
    except (requests.exceptions.RequestException, hvac.exceptions.VaultError) as exc:
        mapped = translate_error(exc, operation)
        if mapped is None and isinstance(exc, hvac.exceptions.VaultError):
            if on_request_error is not None:
                mapped = on_request_error(exc)
            elif isinstance(exc, hvac.exceptions.InvalidPath):
                mapped = NotFound(f"{operation}: {_request_path(exc)} does not exist")
            else:
                mapped = FailedPrecondition(f"{operation}: Vault refused the request: {vault_message(exc)}")
        if mapped is None:  # pragma: no cover - every RequestException/VaultError is mapped above
            raise
        if isinstance(mapped, Unavailable):
            count_backend_error(BACKEND)
        raise mapped from None


# --- login and a client that stays logged in -----------------------------------

# Logs in through the adapter; returns the login response's "auth" block.
Login = Callable[[hvac.adapters.Adapter], dict[str, Any]]


class _SessionAdapter(hvac.adapters.JSONAdapter):
    """hvac's JSON adapter plus token lifecycle: renew before expiry, log in again when expired.

    ``login`` is None for static tokens (token auth): those are only renewed,
    when renewable.
    """

    login_with: Login | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lifecycle = threading.RLock()
        self._refresh_at: float | None = None  # monotonic time; None: nothing to do (root tokens)
        self._ttl = 0
        self._renewable = False
        self._busy = threading.local()

    # -- lifecycle --

    def start_session(self, login_with: Login | None) -> None:
        """Log in (or adopt the static token) and schedule the first renewal."""
        self.login_with = login_with
        with self._lifecycle:
            if login_with is not None:
                self._log_in()
            else:
                info = self._internal("get", "/v1/auth/token/lookup-self")["data"]
                self._schedule(int(info.get("ttl") or 0), bool(info.get("renewable")))

    def _log_in(self) -> None:
        assert self.login_with is not None
        auth = self._internal_call(lambda: self.login_with(self))  # type: ignore[misc]
        self.token = auth["client_token"]
        self._schedule(int(auth.get("lease_duration") or 0), bool(auth.get("renewable")))
        log.info("logged in to Vault", extra={"token_ttl_seconds": self._ttl})

    def _schedule(self, ttl: int, renewable: bool) -> None:
        self._ttl, self._renewable = ttl, renewable
        self._refresh_at = time.monotonic() + ttl * RENEW_AT_FRACTION if ttl > 0 else None

    def _refresh(self) -> None:
        """Renew the token; log in again when renewal fails or would leave too little time."""
        original_ttl = self._ttl
        if self._renewable:
            try:
                auth = self._internal("post", "/v1/auth/token/renew-self")["auth"]
                ttl = int(auth.get("lease_duration") or 0)
                # Near the token's max TTL renewals shrink; log in afresh instead of limping on.
                if self.login_with is None or ttl >= max(1, original_ttl // 3):
                    self._schedule(ttl, bool(auth.get("renewable")))
                    return
            except (hvac.exceptions.VaultError, requests.exceptions.RequestException, KeyError, TypeError):
                if self.login_with is None:
                    self._refresh_at = None  # a static token we cannot renew: let calls fail visibly
                    return
        if self.login_with is not None:
            self._log_in()
        else:
            self._refresh_at = None

    def _token_is_valid(self) -> bool:
        response = self._internal("get", "/v1/auth/token/lookup-self", raise_exception=False)
        return isinstance(response, dict)

    # -- requests --

    def _internal(self, method: str, url: str, **kwargs: Any) -> Any:
        with backend_call(BACKEND, f"{method.upper()} {_operation_of(url)}"):
            return self._internal_call(lambda: super(_SessionAdapter, self).request(method, url, **kwargs))

    def _internal_call(self, call: Callable[[], Any]) -> Any:
        previous = getattr(self._busy, "active", False)
        self._busy.active = True
        try:
            return call()
        finally:
            self._busy.active = previous

    def request(self, method: str, url: str, headers: Any = None, raise_exception: bool = True, **kwargs: Any) -> Any:
        """One Vault HTTP request in a client span."""
        with backend_call(BACKEND, f"{method.upper()} {_operation_of(url)}"):
            return self._request(method, url, headers, raise_exception, **kwargs)

    def _request(self, method: str, url: str, headers: Any, raise_exception: bool, **kwargs: Any) -> Any:
        if getattr(self._busy, "active", False) or "/auth/" in url and url.rstrip("/").endswith("/login"):
            return super().request(method, url, headers=headers, raise_exception=raise_exception, **kwargs)
        with self._lifecycle:
            if self._refresh_at is not None and time.monotonic() >= self._refresh_at:
                self._refresh()
        try:
            return super().request(method, url, headers=headers, raise_exception=raise_exception, **kwargs)
        except hvac.exceptions.Forbidden:
            if self.login_with is None:
                raise
            # 403 is both "policy says no" and "token expired/revoked": only the latter is retried.
            with self._lifecycle:
                if self._token_is_valid():
                    raise
                self._log_in()
            return super().request(method, url, headers=headers, raise_exception=raise_exception, **kwargs)


def _operation_of(url: str) -> str:
    """The mount and endpoint of a Vault API path ("/v1/transit/datakey/plaintext/kek-psn-1" -> "transit/datakey").

    Span names stop there: further segments name keys and KV paths, i.e. patients and principals.
    """
    segments = [part for part in urllib.parse.urlsplit(url).path.split("/") if part]
    if segments[:1] == ["v1"]:
        segments = segments[1:]
    return "/".join(segments[:2])


def _approle_login(settings: ServiceSettings) -> Login:
    if not settings.vault_role_id:
        raise FailedPrecondition("CARECHAIN_VAULT_ROLE_ID is required for approle auth")
    if settings.vault_secret_id_file is None:
        raise FailedPrecondition("CARECHAIN_VAULT_SECRET_ID_FILE is required for approle auth")
    secret_id_file = settings.vault_secret_id_file
    mount = settings.vault_approle_mount

    def login(adapter: hvac.adapters.Adapter) -> dict[str, Any]:
        # Read on every login: the file may be replaced by a secret-id rotation.
        secret_id = _read_secret_file(secret_id_file, "CARECHAIN_VAULT_SECRET_ID_FILE")
        response = adapter.login(
            f"/v1/auth/{mount}/login", use_token=False, json={"role_id": settings.vault_role_id, "secret_id": secret_id}
        )
        return response["auth"]

    return login


def _kubernetes_login(settings: ServiceSettings) -> Login:
    if not settings.vault_kubernetes_role:
        raise FailedPrecondition("CARECHAIN_VAULT_KUBERNETES_ROLE is required for kubernetes auth")
    token_file = settings.vault_kubernetes_token_file
    mount = settings.vault_kubernetes_mount

    def login(adapter: hvac.adapters.Adapter) -> dict[str, Any]:
        # Projected service account tokens are rotated by the kubelet: read the current one.
        jwt = _read_secret_file(token_file, "CARECHAIN_VAULT_KUBERNETES_TOKEN_FILE")
        response = adapter.login(
            f"/v1/auth/{mount}/login", use_token=False, json={"role": settings.vault_kubernetes_role, "jwt": jwt}
        )
        return response["auth"]

    return login


def _read_secret_file(path: pathlib.Path, variable: str) -> str:
    try:
        value = path.read_text().strip()
    except OSError as exc:
        raise FailedPrecondition(f"{variable}: cannot read {path} ({exc.strerror})") from None
    if not value:
        raise FailedPrecondition(f"{variable}: {path} is empty")
    return value


def vault_client(settings: ServiceSettings) -> hvac.Client:
    """A logged-in hvac client for settings.vault_address, kept logged in for the life of the process.

    Raises Unavailable("vault", ...) when Vault cannot be reached and
    PermissionDenied when the credentials are refused.
    """
    client = hvac.Client(
        url=settings.vault_address,
        namespace=settings.vault_namespace or None,
        verify=str(settings.vault_ca_cert) if settings.vault_ca_cert else True,
        timeout=settings.rpc_timeout_seconds,
        adapter=_SessionAdapter,
    )
    adapter: _SessionAdapter = client.adapter  # type: ignore[assignment]
    method = settings.vault_auth_method
    login: Login | None
    if method == "token":
        token = settings.vault_token.get_secret_value()
        if not token:
            raise FailedPrecondition("CARECHAIN_VAULT_TOKEN is required for token auth")
        adapter.token = token
        login = None
    elif method == "approle":
        login = _approle_login(settings)
    else:
        login = _kubernetes_login(settings)
    with vault_errors(f"{method} login", _login_refused(method)):
        adapter.start_session(login)
    return client


def _login_refused(method: str) -> Callable[[hvac.exceptions.VaultError], CareChainError]:
    def mapped(exc: hvac.exceptions.VaultError) -> CareChainError:
        return PermissionDenied(f"Vault refused the {method} login: {vault_message(exc)}")

    return mapped


# --- Transit signing keys ------------------------------------------------------


def _transit_not_found(name: str) -> Callable[[hvac.exceptions.VaultError], CareChainError]:
    def mapped(exc: hvac.exceptions.VaultError) -> CareChainError:
        if isinstance(exc, hvac.exceptions.InvalidPath) or "not found" in vault_message(exc):
            return NotFound(f"Transit key {name} does not exist")
        return FailedPrecondition(f"Transit key {name}: {vault_message(exc)}")

    return mapped


def transit_public_key(client: hvac.Client, key_name: str, mount: str = "transit") -> tuple[int, bytes]:
    """Latest version and raw 32-byte public key of a Transit ed25519 key."""
    with vault_errors(f"read Transit key {key_name}", _transit_not_found(key_name)):
        data = client.secrets.transit.read_key(key_name, mount_point=mount)["data"]
    if data.get("type") != SIGNING_KEY_TYPE:
        raise FailedPrecondition(f"Transit key {key_name} is a {data.get('type')} key, not {SIGNING_KEY_TYPE}")
    version = int(data["latest_version"])
    return version, base64.b64decode(data["keys"][str(version)]["public_key"])


def ensure_signing_key(client: hvac.Client, key_name: str, mount: str = "transit") -> bytes:
    """Create a non-exportable Transit ed25519 key if it does not exist; returns its raw public key."""
    try:
        return transit_public_key(client, key_name, mount)[1]
    except NotFound:
        pass
    with vault_errors(f"create Transit key {key_name}"):
        client.secrets.transit.create_key(key_name, key_type=SIGNING_KEY_TYPE, exportable=False, mount_point=mount)
    return transit_public_key(client, key_name, mount)[1]


def export_public_key(
    client: hvac.Client, key_name: str, trust_dir: pathlib.Path, principal_id: str | None = None,
    mount: str = "transit",
) -> pathlib.Path:
    """Write the public key of a Transit signing key as ``<trust_dir>/<principal_id>.pub`` (PEM)."""
    _, public_key = transit_public_key(client, key_name, mount)
    path = trust_dir / f"{principal_id or key_name}.pub"
    write_public_key(path, public_key)
    return path


class VaultTransitSigner:
    """A :class:`carechain.core.crypto.Signer` whose Ed25519 private key lives in Vault Transit.

    The key version is pinned when the signer is made, so every signature
    matches :meth:`public_key_bytes` even if the key is rotated meanwhile
    (a rotation needs a new trust bundle anyway).
    """

    def __init__(self, client: hvac.Client, key_name: str, *, key_id: str | None = None,
                 mount: str = "transit") -> None:
        self._client = client
        self._key_name = key_name
        self._key_id = key_id or key_name
        self._mount = mount
        self._version, self._public_key = transit_public_key(client, key_name, mount)

    @property
    def key_id(self) -> str:
        return self._key_id

    @property
    def key_name(self) -> str:
        """Name of the Transit key."""
        return self._key_name

    def public_key_bytes(self) -> bytes:
        return self._public_key

    def sign(self, message: bytes) -> bytes:
        with vault_errors(f"sign with Transit key {self._key_name}", _transit_not_found(self._key_name)):
            result = self._client.secrets.transit.sign_data(
                self._key_name,
                hash_input=base64.b64encode(message).decode(),
                key_version=self._version,
                mount_point=self._mount,
            )
        signature = result["data"]["signature"]  # vault:v<N>:<base64>
        return base64.b64decode(signature.rsplit(":", 1)[1])


def signing_key_name(settings: ServiceSettings, service: str) -> str:
    """Transit key a service signs with: settings.signing_key_name, else ``svc-<service>``."""
    return settings.signing_key_name or service_principal_id(service)


def service_signer(settings: ServiceSettings, service: str, client: hvac.Client | None = None) -> Signer:
    """The signer of a service per settings.signing_backend: PEM file or Vault Transit key."""
    principal_id = service_principal_id(service)
    if settings.signing_backend == "file":
        return Ed25519Signer.from_file(principal_id, settings.signing_key_file)
    return VaultTransitSigner(
        client or vault_client(settings), signing_key_name(settings, service), key_id=principal_id,
        mount=settings.vault_transit_mount,
    )


def validator_signer(settings: Any, client: hvac.Client | None = None) -> Signer:
    """A ledger validator's signer: key id settings.validator_id (default svc-ledger).

    File backend: settings.signing_key_file. Vault backend: the Transit key
    settings.signing_key_name, else named like the validator id.
    """
    validator_id = settings.validator_id or service_principal_id("ledger")
    if settings.signing_backend == "file":
        return Ed25519Signer.from_file(validator_id, settings.signing_key_file)
    return VaultTransitSigner(
        client or vault_client(settings), settings.signing_key_name or validator_id, key_id=validator_id,
        mount=settings.vault_transit_mount,
    )
