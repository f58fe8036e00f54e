"""Names and on-disk layout of a CareChain network.

A network directory holds one folder per service (its own store), the
service keys (``keys/``, mode 0600) and the trust bundle (``trust/``): the
public keys of the services and the operator, which every service loads to
verify tokens, decision tokens, transactions and block signatures.
"""

from __future__ import annotations

import pathlib

from cryptography.hazmat.primitives import serialization

from carechain.core.crypto import Ed25519Signer, load_public_key, public_key_bytes
from carechain.core.files import private_dir

SERVICES = ("identity", "storage", "ledger", "consent", "audit", "records")
OPERATOR_ID = "operator"


def audience(service: str) -> str:
    """Token audience of a service, e.g. ``carechain.records``."""
    return f"carechain.{service}"


def service_principal_id(service: str) -> str:
    """Principal id a service signs and authenticates as, e.g. ``svc-ledger``."""
    return f"svc-{service}"


# Who issues what: access tokens come from identity, decision tokens from consent.
TOKEN_ISSUER_ID = service_principal_id("identity")
DECISION_ISSUER_ID = service_principal_id("consent")


class TrustBundle:
    """Public keys of the services and the operator, by principal id."""

    def __init__(self, keys: dict[str, bytes]) -> None:
        self.keys = dict(keys)

    @classmethod
    def load(cls, trust_dir: pathlib.Path) -> TrustBundle:
        """Read every ``<principal>.pub`` (PEM) in trust_dir."""
        keys = {}
        for path in sorted(trust_dir.glob("*.pub")):
            key = serialization.load_pem_public_key(path.read_bytes())
            keys[path.stem] = public_key_bytes(key)  # type: ignore[arg-type]
        if not keys:
            raise FileNotFoundError(f"no public keys in trust directory {trust_dir}")
        return cls(keys)

    def key(self, principal_id: str) -> bytes | None:
        """Raw public key of a trusted principal, or None."""
        return self.keys.get(principal_id)


def write_public_key(path: pathlib.Path, raw: bytes) -> None:
    """Write a raw Ed25519 public key as PEM."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = load_public_key(raw).public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    path.write_bytes(pem)


class NetworkLayout:
    """Paths inside a local network's data directory."""

    def __init__(self, root: pathlib.Path) -> None:
        self.root = root.resolve()
        self.keys_dir = self.root / "keys"
        self.trust_dir = self.root / "trust"

    def service_dir(self, service: str) -> pathlib.Path:
        """A service's own store."""
        return self.root / service

    def key_file(self, principal_id: str) -> pathlib.Path:
        """Private key file of a service or the operator."""
        return self.keys_dir / f"{principal_id}.pem"

    def ensure(self, service_key_files: bool = True) -> None:
        """Create keys and the trust bundle, keeping existing ones.

        The operator always gets a key file; the services too unless their keys live
        in Vault Transit (service_key_files=False), whose public keys are exported
        into the trust directory by the Vault bootstrap instead.
        """
        private_dir(self.root)
        private_dir(self.keys_dir)
        services = [service_principal_id(s) for s in SERVICES] if service_key_files else []
        for principal_id in [*services, OPERATOR_ID]:
            key_file = self.key_file(principal_id)
            if key_file.exists():
                signer = Ed25519Signer.from_file(principal_id, key_file)
            else:
                signer = Ed25519Signer.generate(principal_id)
                signer.save(key_file)
            pub = self.trust_dir / f"{principal_id}.pub"
            if not pub.exists():
                write_public_key(pub, signer.public_key_bytes())
        for service in SERVICES:
            private_dir(self.service_dir(service))

    def operator_signer(self) -> Ed25519Signer:
        """The operator's signer (onboards organisations)."""
        return Ed25519Signer.from_file(OPERATOR_ID, self.key_file(OPERATOR_ID))
