"""Rendering the CareChain Helm chart and reading what it rendered (shared by tests/helm)."""

from __future__ import annotations

import copy
import functools
import pathlib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import yaml

from carechain.dev.backends.tools import find_tool

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "carechain"
VALUE_SETS_DIR = pathlib.Path(__file__).resolve().parent / "values"
VALUE_SETS = (
    "minimal", "embedded", "ha", "external-backends", "tls", "tls-existing-secrets", "embedded-tls", "no-networkpolicy",
    "conventions", "ha-vault", "fhir")
KUBE_VERSIONS = ("1.29.0", "1.34.0")
RELEASE = "cc"
NAMESPACE = "carechain"
SERVICES = ("identity", "storage", "ledger", "consent", "audit", "records")
WORKLOAD_KINDS = ("Deployment", "StatefulSet")


def helm() -> pathlib.Path:
    """The pinned helm binary from `make tools`."""
    return find_tool("helm")


def run_helm(*args: str) -> subprocess.CompletedProcess[str]:
    """Run helm; never raises on a non-zero exit (tests look at the result)."""
    return subprocess.run([str(helm()), *args], capture_output=True, text=True, timeout=120, check=False)


def value_file(name: str) -> pathlib.Path:
    return VALUE_SETS_DIR / f"{name}.yaml"


def template(
    value_set: str | None, *extra: str, kube_version: str = KUBE_VERSIONS[-1]
) -> subprocess.CompletedProcess[str]:
    """`helm template` the chart as release cc in namespace carechain."""
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--kube-version", kube_version]
    if value_set:
        args += ["--values", str(value_file(value_set))]
    return run_helm(*args, *extra)


@dataclass
class Rendering:
    """The objects of one rendering, with lookups the tests need."""

    objects: list[dict[str, Any]]

    @classmethod
    def of(cls, value_set: str | None, *extra: str, kube_version: str = KUBE_VERSIONS[-1]) -> Rendering:
        """The chart rendered with a value set (renderings are cached; each caller gets its own copy)."""
        return cls(copy.deepcopy(_rendered(value_set, extra, kube_version)))

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [obj for obj in self.objects if obj["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        for obj in self.of_kind(kind):
            if obj["metadata"]["name"] == name:
                return obj
        raise KeyError(f"no {kind} {name} in the rendering; have {[o['metadata']['name'] for o in self.of_kind(kind)]}")

    def workloads(self) -> list[dict[str, Any]]:
        return [obj for obj in self.objects if obj["kind"] in WORKLOAD_KINDS]

    def service_workloads(self) -> list[dict[str, Any]]:
        """The six gRPC services' workloads (not the FHIR REST gateway: HTTP probes, no key; test_helm_fhir.py)."""
        return [w for w in self.workloads() if component(w["spec"]["template"]) in SERVICES]

    def pod_specs(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """(object name, pod spec) of every workload and bare pod (the helm test pod)."""
        for obj in self.workloads():
            yield obj["metadata"]["name"], obj["spec"]["template"]["spec"]
        for pod in self.of_kind("Pod"):
            yield pod["metadata"]["name"], pod["spec"]

    def workloads_of(self, service: str) -> list[dict[str, Any]]:
        return [w for w in self.workloads() if component(w["spec"]["template"]) == service]

    def container_env(self, workload: dict[str, Any], resolve_secret: str = "from-a-secret") -> dict[str, str]:
        """The environment Kubernetes gives the workload's container: envFrom ConfigMaps, then env.

        Values from Secrets and ConfigMaps the installer creates (never rendered by the chart) become
        resolve_secret; a whole Secret loaded with envFrom (extraEnvVarsSecret) adds nothing known here.
        """
        container = workload["spec"]["template"]["spec"]["containers"][0]
        env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            if "secretRef" in source:
                continue
            config_map = self.get("ConfigMap", source["configMapRef"]["name"])
            env.update({key: str(value) for key, value in config_map["data"].items()})
        for item in container.get("env", []):
            if "value" in item:
                env[item["name"]] = str(item["value"])
            else:
                assert {"secretKeyRef", "configMapKeyRef"} & set(item["valueFrom"]), f"unexpected env source {item}"
                env[item["name"]] = resolve_secret
        return env


@functools.cache
def _rendered(value_set: str | None, extra: tuple[str, ...], kube_version: str) -> list[dict[str, Any]]:
    result = template(value_set, *extra, kube_version=kube_version)
    assert result.returncode == 0, f"helm template with {value_set} {' '.join(extra)} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def component(obj: dict[str, Any]) -> str:
    """app.kubernetes.io/component of an object or pod template."""
    return obj["metadata"]["labels"]["app.kubernetes.io/component"]


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a matchLabels selector selects labels."""
    return all(labels.get(key) == value for key, value in selector.get("matchLabels", {}).items())
