"""The one Kubernetes API call Vault/OpenBao Kubernetes auth makes: a TokenReview, served on 127.0.0.1.

There is no cluster here, so this plays the API server's part of Kubernetes auth: it issues projected
service account tokens (RS256 JWTs with the claims a kubelet-mounted token carries) and answers
``POST /apis/authentication.k8s.io/v1/tokenreviews`` for exactly the tokens it issued, as the API
server would: ``authenticated`` with ``system:serviceaccount:<namespace>:<name>`` and the account's
uid, anything else unauthenticated. Like an API server it serves HTTPS, with a certificate of its own
CA (``ca_file``, what ``--kubernetes-ca-file`` gets). The real OpenBao then does everything else of the login itself
(parsing the token, comparing it with the review, checking the role's bound accounts and namespaces).
"""

from __future__ import annotations

import base64
import hmac
import json
import pathlib
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from carechain.dev.certificates import LocalCertificateAuthority

ISSUER = "https://kubernetes.default.svc.cluster.local"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass
class TokenReviewAPI:
    """Issued tokens and the reviews of them; ``url`` is what ``--kubernetes-host`` gets."""

    url: str = ""
    ca_file: pathlib.Path | None = None
    _key: rsa.RSAPrivateKey = field(default_factory=lambda: rsa.generate_private_key(65537, 2048))
    _issued: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # token -> namespace, account, uid
    reviews: list[tuple[str, str]] = field(default_factory=list)  # (namespace, account) of every review

    def issue(self, namespace: str, service_account: str) -> str:
        """A projected service account token for the account, as a kubelet would mount it."""
        uid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{namespace}/{service_account}"))
        now = int(time.time())
        claims = {
            "iss": ISSUER, "aud": [ISSUER], "iat": now, "nbf": now, "exp": now + 3600,
            "sub": f"system:serviceaccount:{namespace}:{service_account}",
            "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": service_account, "uid": uid}},
        }
        header = {"alg": "RS256", "typ": "JWT", "kid": "stand-in"}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        token = f"{signing_input}.{_b64url(signature)}"
        self._issued[token] = (namespace, service_account, uid)
        return token

    def review(self, token: str) -> dict[str, Any]:
        """The TokenReview status the API server gives for token."""
        for issued, (namespace, account, uid) in self._issued.items():
            if hmac.compare_digest(issued.encode(), token.encode()):
                self.reviews.append((namespace, account))
                return {"authenticated": True, "audiences": [ISSUER], "user": {
                    "username": f"system:serviceaccount:{namespace}:{account}", "uid": uid,
                    "groups": ["system:serviceaccounts", f"system:serviceaccounts:{namespace}",
                               "system:authenticated"]}}
        return {"authenticated": False, "error": "invalid bearer token"}


def _handler(api: TokenReviewAPI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            if self.path.split("?", 1)[0] != "/apis/authentication.k8s.io/v1/tokenreviews":
                self._reply(404, {"kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404})
                return
            request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
            status = api.review(request.get("spec", {}).get("token", ""))
            self._reply(201, {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                              "metadata": {}, "spec": request.get("spec", {}), "status": status})

        def _reply(self, code: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def token_review_api(directory: pathlib.Path) -> Iterator[TokenReviewAPI]:
    """Serve TokenReviews over HTTPS on a free 127.0.0.1 port (CA and certificate under directory)."""
    ca = LocalCertificateAuthority(directory)
    certificate = ca.issue("kube-apiserver", ["kubernetes.default.svc", "localhost"])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(certificate.cert_file), str(certificate.key_file))
    api = TokenReviewAPI(ca_file=ca.ca_file)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(api))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    api.url = f"https://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()
