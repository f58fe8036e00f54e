"""How Vault failures become CareChain errors (no server needed)."""

from __future__ import annotations

import grpc
import hvac.exceptions
import pytest
import requests

from carechain.core.errors import FailedPrecondition, IntegrityError, NotFound, PermissionDenied, Unavailable
from carechain.runtime.vault import vault_errors
from carechain.runtime.vault_keyring import _key_errors

URL = "http://127.0.0.1:8200/v1/transit/decrypt/patient-a"


def _vault_error(cls: type[hvac.exceptions.VaultError], text: str) -> hvac.exceptions.VaultError:
    return cls(text, errors=[text], method="post", url=URL)


@pytest.mark.parametrize("exc", [
    requests.exceptions.ConnectionError("refused"),
    requests.exceptions.ReadTimeout("slow"),
    _vault_error(hvac.exceptions.VaultDown, "Vault is sealed"),
    _vault_error(hvac.exceptions.InternalServerError, "storage failed"),
    _vault_error(hvac.exceptions.RateLimitExceeded, "slow down"),
])
def test_unreachable_sealed_or_failing_vault_is_unavailable(exc: Exception) -> None:
    with pytest.raises(Unavailable) as down, vault_errors("unwrap a data key"):
        raise exc
    assert down.value.backend == "vault"
    assert down.value.code == grpc.StatusCode.UNAVAILABLE
    assert down.value.message.startswith("vault unavailable: unwrap a data key")


def test_policy_refusal_is_permission_denied_naming_operation_and_path() -> None:
    with pytest.raises(PermissionDenied) as refused, vault_errors("unwrap a data key"):
        raise _vault_error(hvac.exceptions.Forbidden, "permission denied")
    assert "unwrap a data key" in refused.value.message
    assert "POST transit/decrypt/patient-a" in refused.value.message


@pytest.mark.parametrize(("text", "expected"), [
    ("encryption key not found", NotFound),
    ("cipher: message authentication failed", IntegrityError),
    ("invalid ciphertext: no prefix", IntegrityError),
    ("ciphertext or signature version is disallowed by policy (too old)", FailedPrecondition),
])
def test_transit_request_errors_map_like_the_local_keyring(text: str, expected: type[Exception]) -> None:
    with pytest.raises(expected), vault_errors("unwrap", _key_errors("patient-a", 1)):
        raise _vault_error(hvac.exceptions.InvalidRequest, text)


def test_too_old_version_names_min_decryption_version() -> None:
    with pytest.raises(FailedPrecondition, match="min_decryption_version"), \
            vault_errors("unwrap", _key_errors("patient-a", 1)):
        raise _vault_error(hvac.exceptions.InvalidRequest, "disallowed by policy (too old)")


def test_unmapped_request_errors_are_failed_preconditions_or_not_found() -> None:
    with pytest.raises(FailedPrecondition), vault_errors("write"):
        raise _vault_error(hvac.exceptions.InvalidRequest, "bad")
    with pytest.raises(NotFound, match="transit/decrypt/patient-a"), vault_errors("read"):
        raise _vault_error(hvac.exceptions.InvalidPath, "")
