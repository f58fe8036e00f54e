"""The chart cannot drift from the code: what it renders configures the real services.

Every container's environment is fed to that service's real settings class, every CARECHAIN_* name
it sets must be a setting of that service (pydantic-settings ignores unknown variables, which would
hide a misspelt one), and the six services started on localhost from the embedded rendering, with
only what must differ on a laptop rewritten, answer gRPC health and serve the `helm test` round trip.
The same again with mutual TLS (embedded-tls): a local CA plays cert-manager, issuing each rendered
Certificate into the Secret the pods mount; the services must then answer health in plaintext only on
the probe port, and over mutual TLS (and only so) on their serving port.
"""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from unittest import mock

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from helm_chart import NAMESPACE, SERVICES, VALUE_SETS, Rendering, component

from carechain.client.tls import ClientTLS
from carechain.core.layout import NetworkLayout
from carechain.dev.certificates import LocalCertificateAuthority
from carechain.dev.localnet import START_ORDER, free_port, wait_healthy
from carechain.runtime.config import ENV_PREFIX, SETTINGS_BY_SERVICE

# The OpenTelemetry variables the chart may set (carechain.core.telemetry reads the standard ones).
OTEL_VARIABLES = {"OTEL_SERVICE_NAME", "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT",
                  "OTEL_EXPORTER_OTLP_INSECURE", "OTEL_EXPORTER_OTLP_CERTIFICATE", "OTEL_RESOURCE_ATTRIBUTES"}
BIN = pathlib.Path(sys.executable).parent


def load_settings(service: str, env: dict[str, str]) -> Any:
    """The service's real settings class, loaded from exactly env (nothing from this process)."""
    with mock.patch.dict(os.environ, env, clear=True):
        return SETTINGS_BY_SERVICE[service]()


def unknown_variables(service: str, env: dict[str, str]) -> set[str]:
    fields = {ENV_PREFIX + name.upper() for name in SETTINGS_BY_SERVICE[service].model_fields}
    return {name for name in env if name.startswith(ENV_PREFIX) and name not in fields} | {
        name for name in env if name.startswith("OTEL_") and name not in OTEL_VARIABLES}


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_every_rendered_variable_is_a_valid_setting_of_its_service(value_set: str) -> None:
    rendering = Rendering.of(value_set)
    for workload in rendering.workloads():
        service = component(workload["spec"]["template"])
        name = workload["metadata"]["name"]
        assert workload["spec"]["template"]["spec"]["containers"][0]["args"] == ["serve", service], name
        env = rendering.container_env(workload)
        assert not unknown_variables(service, env), (
            f"{value_set}: {name} sets {sorted(unknown_variables(service, env))}, which "
            f"{SETTINGS_BY_SERVICE[service].__name__} does not read")
        settings = load_settings(service, env)  # raises, naming the variable, if a value is invalid
        assert settings.chain_id == rendering.get("ConfigMap", f"cc-carechain-{service}-env")["data"][
            "CARECHAIN_CHAIN_ID"]
        assert env["OTEL_TRACES_EXPORTER"] in ("none", "otlp", "console")


# --- the embedded rendering, started on localhost --------------------------------------------------


@dataclass
class LaptopPod:
    """One rendered service container, rewritten to run as a local process."""

    service: str
    argv: list[str]
    env: dict[str, str]


class Kubelet:
    """Just enough of a kubelet: materialises a pod's volumes as directories under root.

    Secrets and ConfigMaps the installer would create are given as {name: {key: bytes}}.
    """

    def __init__(self, root: pathlib.Path, objects: dict[str, dict[str, bytes]]) -> None:
        self.root = root
        self.objects = objects

    def mount(self, pod: str, volume: dict[str, Any]) -> pathlib.Path:
        target = self.root / pod / volume["name"]
        target.mkdir(parents=True, exist_ok=True)
        if "projected" in volume:
            sources = [spec for source in volume["projected"]["sources"] for spec in source.values()]
        else:
            sources = [spec for kind, spec in volume.items() if kind in ("secret", "configMap")]
        for spec in sources:
            data = self.objects[spec.get("secretName") or spec["name"]]
            items = spec.get("items") or [{"key": key, "path": key} for key in data]
            for item in items:
                path = target / item["path"]
                path.write_bytes(data[item["key"]])
                path.chmod(0o600)
        return target


def _rewrite(
    rendering: Rendering, workload: dict[str, Any], kubelet: Kubelet, ports: dict[str, int],
    health_ports: dict[str, int],
) -> LaptopPod:
    """Rewrite only what must differ on a laptop: listen/peer addresses and mounted paths."""
    service = component(workload["spec"]["template"])
    spec = workload["spec"]["template"]["spec"]
    container = spec["containers"][0]
    env = rendering.container_env(workload)
    volumes = {v["name"]: v for v in spec["volumes"]}
    for claim in workload["spec"].get("volumeClaimTemplates", []):
        volumes[claim["metadata"]["name"]] = {"name": claim["metadata"]["name"], "emptyDir": {}}
    mounts = {m["mountPath"]: kubelet.mount(workload["metadata"]["name"], volumes[m["name"]])
              for m in container["volumeMounts"]}

    rewritten = {}
    for name, value in env.items():
        if name == "CARECHAIN_LISTEN_ADDRESS":
            assert value == f"0.0.0.0:{container['ports'][0]['containerPort']}"
            value = f"127.0.0.1:{ports[service]}"
        elif name == "CARECHAIN_HEALTH_LISTEN_ADDRESS":
            # The plaintext health-only listener is the port every probe of the container uses.
            (health_port,) = [p["containerPort"] for p in container["ports"] if p["name"] == "health"]
            assert value == f"0.0.0.0:{health_port}"
            assert {container[probe]["grpc"]["port"] for probe in ("startupProbe", "readinessProbe",
                                                                   "livenessProbe")} == {health_port}
            value = f"127.0.0.1:{health_ports[service]}"
        elif name.startswith(ENV_PREFIX) and name.endswith("_ADDRESS") and not name.startswith("CARECHAIN_VAULT"):
            peer = name.removeprefix(ENV_PREFIX).removesuffix("_ADDRESS").lower()
            _assert_routes_to(rendering, value, peer)
            value = f"127.0.0.1:{ports[peer]}"
        else:
            for mount_path, local in mounts.items():
                if value == mount_path or value.startswith(mount_path + "/"):
                    value = str(local) + value.removeprefix(mount_path)
        rewritten[name] = value
    leftover = [f"{k}={v}" for k, v in rewritten.items() if v.startswith(("/etc/", "/var/"))]
    assert not leftover, f"{service}: paths outside any mounted volume: {leftover}"
    argv = [str(BIN / container["command"][0]), *container["args"]]
    return LaptopPod(service, argv, rewritten)


def _assert_routes_to(rendering: Rendering, address: str, peer: str) -> None:
    """A peer address is a Service DNS name (dns:/// a headless one for round_robin) whose port reaches that
    peer's gRPC container port."""
    host, port = address.removeprefix("dns:///").rsplit(":", 1)
    name, namespace, svc = host.split(".")
    assert (namespace, svc) == (NAMESPACE, "svc"), address
    service = rendering.get("Service", name)
    assert service["spec"]["ports"][0]["port"] == int(port)
    selected = [w for w in rendering.workloads()
                if all(w["spec"]["template"]["metadata"]["labels"].get(k) == v
                       for k, v in service["spec"]["selector"].items())]
    assert [component(w["spec"]["template"]) for w in selected] == [peer], f"{address} does not reach {peer}"


def _play_cert_manager(rendering: Rendering, ca_dir: pathlib.Path) -> dict[str, dict[str, bytes]]:
    """Issue every rendered Certificate from a local CA into its Secret (tls.crt, tls.key, ca.crt), as
    cert-manager with a CA Issuer would; 127.0.0.1 is added so the services can be reached on a laptop."""
    authority = LocalCertificateAuthority(ca_dir)
    secrets = {}
    for certificate in rendering.of_kind("Certificate"):
        spec = certificate["spec"]
        issued = authority.issue(certificate["metadata"]["name"], spec.get("dnsNames", []))
        secrets[spec["secretName"]] = {"tls.crt": issued.cert_file.read_bytes(),
                                       "tls.key": issued.key_file.read_bytes(),
                                       "ca.crt": authority.ca_file.read_bytes()}
    return secrets


@pytest.fixture(scope="module", params=["embedded", "embedded-tls"])
def embedded(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Rendering, NetworkLayout, dict[str, Any]]]:
    """The six services started from the embedded rendering (plaintext, then mutual TLS) on free 127.0.0.1 ports."""
    root = tmp_path_factory.mktemp(f"helm-{request.param}")
    layout = NetworkLayout(root / "generated")  # keys and trust bundle, as the installer would create them
    layout.ensure()
    secrets = {
        "carechain-service-keys": {p.name: p.read_bytes() for p in layout.keys_dir.glob("svc-*.pem")},
        "carechain-trust": {p.name: p.read_bytes() for p in layout.trust_dir.glob("*.pub")},
        "carechain-operator-key": {"operator.pem": layout.key_file("operator").read_bytes()},
    }
    rendering = Rendering.of(request.param)
    tls = _tls_on(rendering)
    if tls:
        secrets.update(_play_cert_manager(rendering, root / "ca"))
    kubelet = Kubelet(root / "pods", secrets)
    ports = {service: free_port() for service in SERVICES}
    health_ports = {service: free_port() for service in SERVICES}
    pods = {}
    for workload in rendering.workloads():
        pod = _rewrite(rendering, workload, kubelet, ports, health_ports)
        assert pod.service not in pods, f"{request.param} renders one {pod.service} workload"
        pods[pod.service] = pod
    processes: dict[str, subprocess.Popen[bytes]] = {}
    logs = root / "logs"
    logs.mkdir()
    try:
        for service in START_ORDER:
            pod = pods[service]
            settings = load_settings(service, pod.env)
            assert settings.chain_id == "carechain-helm-test" and settings.listen_address.startswith("127.0.0.1:")
            assert (settings.tls_cert_file is not None) is tls and settings.tls_require_client_cert is tls
            with open(logs / f"{service}.log", "wb") as log:
                processes[service] = subprocess.Popen(
                    pod.argv, env={"PATH": os.environ["PATH"], **pod.env}, stdout=log, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL)
            try:
                # Ready as the kubelet sees it: its probe port.
                wait_healthy(f"127.0.0.1:{(health_ports if tls else ports)[service]}", timeout=60)
            except TimeoutError:
                pytest.fail(f"{service} started from the rendered manifest is not healthy:\n"
                            f"{(logs / f'{service}.log').read_text()[-3000:]}")
        yield rendering, layout, {"ports": ports, "health_ports": health_ports, "kubelet": kubelet,
                                  "processes": processes, "logs": logs, "tls": tls}
    finally:
        for service in reversed(START_ORDER):
            process = processes.get(service)
            if process and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def _tls_on(rendering: Rendering) -> bool:
    return any("CARECHAIN_TLS_CERT_FILE" in c.get("data", {}) for c in rendering.of_kind("ConfigMap"))


def _test_pod(rendering: Rendering, kubelet: Kubelet) -> tuple[dict[str, Any], dict[str, pathlib.Path]]:
    """The rendered helm test container and its volumes (but the script) mounted: {mount path: local dir}."""
    (pod,) = rendering.of_kind("Pod")
    container = pod["spec"]["containers"][0]
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mounts = {m["mountPath"]: kubelet.mount(pod["metadata"]["name"], volumes[m["name"]])
              for m in container["volumeMounts"] if m["name"] != "script"}
    return container, mounts


def _local_path(value: str, mounts: dict[str, pathlib.Path]) -> str:
    for mount_path, local in mounts.items():
        if value.startswith(mount_path + "/"):
            return str(local) + value.removeprefix(mount_path)
    return value


def _health(address: str, tls: ClientTLS | None = None, authority: str | None = None) -> int:
    """One grpc.health.v1 check: the status, or raises grpc.RpcError."""
    options = [("grpc.ssl_target_name_override", authority)] if authority else []
    channel = (grpc.insecure_channel(address) if tls is None
               else grpc.secure_channel(address, tls.credentials(), options=options))
    with channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status


def test_six_services_started_from_the_rendered_manifests_answer_health(embedded: Any) -> None:
    rendering, _, running = embedded
    for service in SERVICES:
        assert running["processes"][service].poll() is None, f"{service} exited"
        if not running["tls"]:
            wait_healthy(f"127.0.0.1:{running['ports'][service]}", timeout=5)
            continue
        serving = health_pb2.HealthCheckResponse.SERVING
        # The kubelet's view: plaintext health on the probe port.
        assert _health(f"127.0.0.1:{running['health_ports'][service]}") == serving, service
        # A caller's view: mutual TLS on the serving port, with the helm test pod's client certificate,
        # verifying the certificate against the Service DNS name the chart gives the peers.
        container, mounts = _test_pod(rendering, running["kubelet"])
        env = {e["name"]: _local_path(e["value"], mounts) for e in container["env"]}
        client = ClientTLS(pathlib.Path(env["CARECHAIN_TLS_CA_FILE"]), pathlib.Path(env["CARECHAIN_TLS_CERT_FILE"]),
                           pathlib.Path(env["CARECHAIN_TLS_KEY_FILE"]))
        address = f"127.0.0.1:{running['ports'][service]}"
        authority = env[f"CARECHAIN_{service.upper()}_ADDRESS"].rsplit(":", 1)[0]
        assert _health(address, client, authority) == serving, service
        # ... and only so: no plaintext, no TLS without a client certificate on the serving port.
        for refused in (None, ClientTLS(client.ca_file)):
            with pytest.raises(grpc.RpcError) as error:
                _health(address, refused, authority)
            assert error.value.code() == grpc.StatusCode.UNAVAILABLE, (service, refused)


def test_rendered_helm_test_passes_health_and_record_round_trip(embedded: Any) -> None:
    rendering, layout, running = embedded
    container, mounts = _test_pod(rendering, running["kubelet"])
    script = running["kubelet"].root / "helm_test.py"
    script.write_text(rendering.get("ConfigMap", "cc-carechain-test")["data"]["helm_test.py"])
    args = [_local_path(arg, mounts) for arg in container["args"]]
    env = {}
    for item in container["env"]:
        value = item["value"]
        if item["name"].endswith("_ADDRESS"):
            peer = item["name"].removeprefix(ENV_PREFIX).removesuffix("_ADDRESS").lower()
            _assert_routes_to(rendering, value, peer)
            value = f"127.0.0.1:{running['ports'][peer]}"
        env[item["name"]] = _local_path(value, mounts)
    leftover = [f"{k}={v}" for k, v in env.items() if v.startswith(("/etc/", "/var/"))]
    assert not leftover, f"helm test pod: paths outside any mounted volume: {leftover}"
    assert container["command"][0] == "python"
    result = subprocess.run([sys.executable, str(script), *args], env={"PATH": os.environ["PATH"], **env},
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, f"helm test failed:\n{result.stdout}\n{result.stderr}"
    transport = "mutual TLS" if running["tls"] else "plaintext"
    assert result.stdout.count(f" SERVING ({transport})") == len(SERVICES), result.stdout
    assert "identical" in result.stdout, result.stdout


def test_services_started_from_the_manifests_stop_cleanly_on_sigterm(embedded: Any) -> None:
    """Kubernetes stops pods with SIGTERM: consent (a leaf nobody else needs here) exits 0 within its grace."""
    rendering, _, running = embedded
    process = running["processes"]["consent"]
    grace = float(rendering.get("ConfigMap", "cc-carechain-consent-env")["data"]["CARECHAIN_SHUTDOWN_GRACE_SECONDS"])
    termination = rendering.workloads_of("consent")[0]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert termination > grace
    process.send_signal(signal.SIGTERM)
    assert process.wait(termination) == 0
