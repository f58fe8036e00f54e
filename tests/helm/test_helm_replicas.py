"""Replicas where the backend is shared, one pod where it is not, and validators that roll one at a time."""

from __future__ import annotations

import pathlib

from helm_chart import Rendering, template
from test_helm_chart_validity import _dry_run_install


def test_audit_on_etcd_runs_several_replicas_and_sqlite_refuses_them() -> None:
    rendering = Rendering.of("external-backends", "--set", "audit.replicas=3")
    assert rendering.get("StatefulSet", "cc-carechain-audit")["spec"]["replicas"] == 3
    refused = template("minimal", "--set", "audit.replicas=2")
    assert refused.returncode != 0
    assert "audit: store=sqlite keeps the hash-chained trail in one pod's volume" in refused.stderr
    assert Rendering.of("minimal").get("StatefulSet", "cc-carechain-audit")["spec"]["replicas"] == 1


def test_identity_on_vault_and_storage_on_s3_keep_no_volume_and_roll_without_a_gap() -> None:
    """persistence.enabled (the default) no longer pins them to one pod once their store is shared."""
    rendering = Rendering.of("external-backends", "--set", "identity.persistence.enabled=true",
                             "--set", "storage.persistence.enabled=true", "--set", "storage.replicas=3")
    assert not rendering.of_kind("PersistentVolumeClaim")
    for service in ("identity", "storage"):
        deployment = rendering.get("Deployment", f"cc-carechain-{service}")
        assert deployment["spec"]["strategy"]["type"] == "RollingUpdate", service
        assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0, service
        (data,) = [v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "data"]
        assert data == {"name": "data", "emptyDir": {}}, service
    assert rendering.get("Deployment", "cc-carechain-storage")["spec"]["replicas"] == 3
    assert rendering.get("HorizontalPodAutoscaler", "cc-carechain-identity")["spec"]["minReplicas"] == 2
    # The embedded stores still keep their volume, one pod, Recreate.
    embedded = Rendering.of("minimal")
    assert {c["metadata"]["name"] for c in embedded.of_kind("PersistentVolumeClaim")} == {
        "cc-carechain-identity-data", "cc-carechain-storage-data"}
    assert embedded.get("Deployment", "cc-carechain-identity")["spec"]["strategy"] == {"type": "Recreate"}


def test_several_validators_wait_to_be_rolled_one_at_a_time() -> None:
    ha = Rendering.of("ha")
    validators = ha.workloads_of("ledger")
    assert len(validators) == 4
    assert {v["spec"]["updateStrategy"]["type"] for v in validators} == {"OnDelete"}
    lone = Rendering.of("minimal").workloads_of("ledger")
    assert [v["spec"]["updateStrategy"]["type"] for v in lone] == ["RollingUpdate"]
    forced = Rendering.of("ha", "--set", "ledger.updateStrategy.type=RollingUpdate").workloads_of("ledger")
    assert {v["spec"]["updateStrategy"]["type"] for v in forced} == {"RollingUpdate"}


def test_notes_tell_how_to_roll_the_validators(tmp_path: pathlib.Path) -> None:
    code, stdout, stderr = _dry_run_install(tmp_path, "ha")
    assert code == 0, stderr
    assert "scripts/roll_validators.sh cc carechain" in stdout.split("NOTES:", 1)[1]
