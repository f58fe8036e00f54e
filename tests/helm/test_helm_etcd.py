"""The chart's etcd TLS and authentication: Secrets mounted where the settings point, and they work for real."""

from __future__ import annotations

import shutil
import uuid

import pytest
from helm_chart import SERVICES, Rendering, template

from carechain.runtime.config import LedgerSettings
from carechain.runtime.etcd import EtcdClient

pytest_plugins = ["servers_etcd"]

MOUNT = "/etc/carechain/etcd"
ETCD_USERS = ("ledger", "audit")  # external-backends: ledger.orderer=etcd, audit.store=etcd


def _etcd_volume(workload: dict) -> dict | None:
    volumes = [v for v in workload["spec"]["template"]["spec"]["volumes"] if v["name"] == "etcd-credentials"]
    return volumes[0] if volumes else None


def test_only_etcd_users_mount_the_etcd_secrets_and_their_settings_point_into_the_mount() -> None:
    rendering = Rendering.of("external-backends")
    for service in SERVICES:
        for workload in rendering.workloads_of(service):
            env = rendering.container_env(workload)
            volume = _etcd_volume(workload)
            if service not in ETCD_USERS:
                assert volume is None and not any(k.startswith("CARECHAIN_ETCD_") for k in env), service
                continue
            sources = {(s["secret"]["name"], i["key"]): i["path"]
                       for s in volume["projected"]["sources"] for i in s["secret"]["items"]}
            assert sources == {("etcd-ca", "ca.crt"): "ca.crt", ("carechain-etcd-client", "tls.crt"): "client.crt",
                               ("carechain-etcd-client", "tls.key"): "client.key",
                               ("carechain-etcd", "password"): "password"}
            assert volume["projected"]["defaultMode"] == 0o440
            (mount,) = [m for m in workload["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
                        if m["name"] == "etcd-credentials"]
            assert mount == {"name": "etcd-credentials", "mountPath": MOUNT, "readOnly": True}
            assert {k: v for k, v in env.items() if k.startswith("CARECHAIN_ETCD_")} == {
                "CARECHAIN_ETCD_ENDPOINTS": "https://etcd.etcd.svc:2379", "CARECHAIN_ETCD_PREFIX": "/carechain",
                "CARECHAIN_ETCD_CA_FILE": f"{MOUNT}/ca.crt", "CARECHAIN_ETCD_CERT_FILE": f"{MOUNT}/client.crt",
                "CARECHAIN_ETCD_KEY_FILE": f"{MOUNT}/client.key", "CARECHAIN_ETCD_USERNAME": "carechain",
                "CARECHAIN_ETCD_PASSWORD_FILE": f"{MOUNT}/password"}


def test_without_etcd_tls_or_auth_values_nothing_of_it_is_rendered() -> None:
    rendering = Rendering.of("ha")
    for workload in rendering.workloads_of("ledger"):
        assert _etcd_volume(workload) is None
        env = rendering.container_env(workload)
        assert not {"CARECHAIN_ETCD_CA_FILE", "CARECHAIN_ETCD_USERNAME"} & set(env)


def test_the_rendered_etcd_settings_log_a_real_service_in_over_tls(tmp_path, etcd_cluster) -> None:
    """The chart's variable names and file names against the code, on the TLS+auth test cluster."""
    rendering = Rendering.of("external-backends")
    env = rendering.container_env(rendering.workloads_of("ledger")[0])
    mounted = tmp_path / "etc-carechain-etcd"  # what Kubernetes would mount at MOUNT from the Secrets
    mounted.mkdir()
    cert = etcd_cluster.client_certificate
    for source, name in [(etcd_cluster.ca_file, "ca.crt"), (cert.cert_file, "client.crt"),
                         (cert.key_file, "client.key"), (etcd_cluster.password_file(), "password")]:
        shutil.copy(source, mounted / name)
    fields = {key.removeprefix("CARECHAIN_").lower(): value.replace(MOUNT, str(mounted))
              for key, value in env.items() if key.startswith("CARECHAIN_ETCD_")}
    fields["etcd_endpoints"] = etcd_cluster.endpoints
    client = EtcdClient.from_settings(LedgerSettings(**fields))
    try:
        key = f"{fields['etcd_prefix']}/helm-{uuid.uuid4().hex}"
        client.put(key, "through the chart's settings")
        assert client.get(key).value == b"through the chart's settings"
    finally:
        client.close()


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (["--set", "etcd.username=carechain"], "etcd.passwordSecret.name: name the Secret"),
        (["--set", "etcd.passwordSecret.name=carechain-etcd"], "etcd.username: required with etcd.passwordSecret"),
        (["--set", "etcd.caSecret.name=etcd-ca", "--set", "etcd.endpoints[0]=http://etcd:2379"],
         "etcd.endpoints: http://etcd:2379 is not https://"),
    ],
)
def test_inconsistent_etcd_values_fail_saying_what_to_set(settings: list[str], expected: str) -> None:
    result = template("minimal", *settings)
    assert result.returncode != 0, f"{settings} was accepted"
    assert expected in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (["--set", "etcd.clientCertSecret.name=Not_A_Name"], "/etcd/clientCertSecret/name"),
        (["--set", "etcd.passwordSecret.secret=x"], "/etcd/passwordSecret"),
        (["--set", "etcd.username=two words"], "/etcd/username"),
    ],
)
def test_wrong_etcd_values_are_refused_by_the_schema(settings: list[str], expected: str) -> None:
    result = template("minimal", *settings)
    assert result.returncode != 0, f"{settings} was accepted"
    assert "values don't meet the specifications of the schema" in result.stderr, result.stderr
    assert expected in result.stderr, result.stderr
