"""Data survives a restart of the whole network, and every service stops cleanly on SIGTERM."""

from __future__ import annotations

import pytest
from helpers import MODES, new_hospital, new_patient, new_practitioner, operator_client, start_network

from carechain.client.sdk import CareChainClient, Category, Purpose, permit
from carechain.dev.demo import cancer_diagnosis
from carechain.runtime.principal_status import SNAPSHOT_FILE as STATUS_SNAPSHOT

# Every service follows principal lifecycle on the ledger; each resumes from its own signed snapshot.
FOLLOWERS = ("identity", "records", "audit", "consent", "ledger")
RESUMED = "principal status resumed from its snapshot"


@pytest.mark.parametrize("mode", MODES)
def test_records_consents_and_chain_survive_a_restart(tmp_path, mode: str) -> None:
    network = start_network(tmp_path / "net", mode, persistent_vault=True)
    try:
        hospital = new_hospital(network)
        reader = new_practitioner(network, hospital, "oncology")
        patient, fhir_id = new_patient(network, hospital)
        patient.client.grant_consent(permit([Purpose.PURPOSE_OF_USE_TREAT], practitioner_id=reader.principal_id,
                                            categories=[Category.SENSITIVITY_CATEGORY_ONCOLOGY]))
        stored = hospital.client.put_record(patient.principal_id, cancer_diagnosis(fhir_id))
        original = reader.client.get_record(stored.record_id).resource_json
        with operator_client(network) as operator:
            head_before = operator.verify_chain().blocks_checked
        for actor in (hospital, reader, patient):
            actor.client.close()
    finally:
        exit_codes = {service: network.stop_service(service) for service in list(network.processes)}
        network.stop()
    assert set(exit_codes.values()) == {0}, f"unclean shutdown: {exit_codes}"
    for service in FOLLOWERS:  # saved at a clean stop
        assert (network.layout.service_dir(service) / STATUS_SNAPSHOT).is_file(), service
    resumed_before = {s: (network.log_dir / f"{s}.log").read_text().count(RESUMED) for s in FOLLOWERS}

    restarted = start_network(tmp_path / "net", mode, persistent_vault=True)
    try:
        with CareChainClient(restarted.endpoints, reader.signer) as reader_again:
            assert reader_again.get_record(stored.record_id).resource_json == original
        with operator_client(restarted) as operator:
            verification = operator.verify_chain()
        assert verification.ok and verification.blocks_checked >= head_before
        # Restarted services read the ledger from their snapshots' positions, not from index 0.
        for service in FOLLOWERS:
            assert (restarted.log_dir / f"{service}.log").read_text().count(RESUMED) > resumed_before[service], \
                service
    finally:
        restarted.stop()
