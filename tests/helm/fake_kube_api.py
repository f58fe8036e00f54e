"""A Kubernetes API stand-in that only answers discovery, so `helm install --dry-run=client` runs here.

`helm install` (unlike `helm template`) insists on reaching a cluster: it asks for the server version
and the API resources before validating values and rendering NOTES.txt. This answers those questions
for the kinds the chart uses and returns empty lists for everything else (no release exists yet).
"""

from __future__ import annotations

import json
import pathlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# group/version -> (kind, plural) of every kind the chart renders.
RESOURCES = {
    "v1": [("ConfigMap", "configmaps"), ("Service", "services"), ("ServiceAccount", "serviceaccounts"),
           ("PersistentVolumeClaim", "persistentvolumeclaims"), ("Pod", "pods"), ("Secret", "secrets")],
    "apps/v1": [("Deployment", "deployments"), ("StatefulSet", "statefulsets")],
    "policy/v1": [("PodDisruptionBudget", "poddisruptionbudgets")],
    "autoscaling/v2": [("HorizontalPodAutoscaler", "horizontalpodautoscalers")],
    "networking.k8s.io/v1": [("NetworkPolicy", "networkpolicies"), ("Ingress", "ingresses")],
    "cert-manager.io/v1": [("Certificate", "certificates")],
}

_PLURALS = {plural for kinds in RESOURCES.values() for _, plural in kinds}


def _resource_list(group_version: str) -> dict[str, Any]:
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": [
            {"name": plural, "singularName": kind.lower(), "namespaced": True, "kind": kind,
             "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]}
            for kind, plural in RESOURCES[group_version]
        ],
    }


def _groups() -> dict[str, Any]:
    groups = []
    for group_version in RESOURCES:
        if "/" in group_version:
            name, version = group_version.split("/")
            entry = {"groupVersion": group_version, "version": version}
            groups.append({"name": name, "versions": [entry], "preferredVersion": entry})
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = self.path.split("?", 1)[0].rstrip("/")
        status = 200
        if path == "/version":
            body: Any = {"major": "1", "minor": "34", "gitVersion": "v1.34.0", "platform": "linux/amd64"}
        elif path == "/api":
            body = {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
        elif path == "/apis":
            body = _groups()
        elif path == "/api/v1":
            body = _resource_list("v1")
        elif path.startswith("/apis/") and path.removeprefix("/apis/") in RESOURCES:
            body = _resource_list(path.removeprefix("/apis/"))
        elif path.rsplit("/", 1)[-1] in _PLURALS:
            body = {"kind": "List", "apiVersion": "v1", "metadata": {}, "items": []}
        else:  # a single object (none exists) or the OpenAPI document (not offered)
            status = 404
            body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def fake_kube_api(directory: pathlib.Path) -> Iterator[pathlib.Path]:
    """Serve discovery on 127.0.0.1; yields a kubeconfig file pointing at it."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    kubeconfig = directory / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": f"http://127.0.0.1:{server.server_port}"}}],
        "users": [{"name": "nobody", "user": {}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "nobody"}}],
        "current-context": "fake",
    }))
    try:
        yield kubeconfig
    finally:
        server.shutdown()
        server.server_close()
