"""A SMART Backend Services client's side: its RS384 / ES384 key pair, JWKS and signed client assertions.

A hospital integrator makes a key pair (:func:`new_client_key`), registers the public JWKS
(:func:`public_jwks`, then ``CareChainClient.register_client_keys``) and, for each token request, signs
a short-lived client assertion (:func:`client_assertion`) for the token endpoint (docs/fhir-smart.md).
"""

from __future__ import annotations

import json
import pathlib
import time
import uuid
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from carechain.core.crypto import write_private_file

CLIENT_ALGORITHMS = ("ES384", "RS384")
RSA_BITS = 3072
# Well inside the five minutes SMART allows.
ASSERTION_SECONDS = 240

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def new_client_key(alg: str = "ES384") -> PrivateKey:
    """A fresh private key for alg: EC P-384 for ES384, RSA 3072 for RS384."""
    if alg == "ES384":
        return ec.generate_private_key(ec.SECP384R1())
    if alg == "RS384":
        return rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    raise ValueError(f"alg must be one of {', '.join(CLIENT_ALGORITHMS)}")


def key_algorithm(key: PrivateKey) -> str:
    """The SMART signing algorithm of a client key."""
    return "ES384" if isinstance(key, ec.EllipticCurvePrivateKey) else "RS384"


def public_jwk(key: PrivateKey, kid: str) -> dict[str, Any]:
    """The public JWK (with kid, alg and use) of a client key: what the client registers."""
    family = ECAlgorithm if isinstance(key, ec.EllipticCurvePrivateKey) else RSAAlgorithm
    jwk: dict[str, Any] = json.loads(family.to_jwk(key.public_key()))
    return {**jwk, "kid": kid, "alg": key_algorithm(key), "use": "sig"}


def public_jwks(*keys: tuple[PrivateKey, str]) -> dict[str, Any]:
    """A JWK Set of the public halves of (key, kid) pairs."""
    return {"keys": [public_jwk(key, kid) for key, kid in keys]}


def write_client_key(path: pathlib.Path, key: PrivateKey) -> None:
    """Write a client key as PKCS#8 PEM, 0600 (never sent anywhere)."""
    write_private_file(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))


def load_client_key(path: pathlib.Path) -> PrivateKey:
    """A client key written by :func:`write_client_key`; ValueError if it is not an RSA or EC P-384 key."""
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        raise ValueError(f"{path} is not an RSA or EC private key")
    return key


def client_assertion(key: PrivateKey, kid: str, client_id: str, token_url: str,
                     lifetime_seconds: float = ASSERTION_SECONDS, **extra_claims: Any) -> str:
    """A private_key_jwt client assertion (RFC 7523): iss = sub = client_id, aud = token_url, a fresh jti."""
    now = time.time()
    claims = {"iss": client_id, "sub": client_id, "aud": token_url, "exp": int(now + lifetime_seconds),
              "iat": int(now), "jti": str(uuid.uuid4()), **extra_claims}
    return jwt.encode(claims, key, algorithm=key_algorithm(key), headers={"kid": kid, "typ": "JWT"})
