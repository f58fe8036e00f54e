"""Data survives a restart of the whole network, and every service stops cleanly on SIGTERM."""

from __future__ import annotations

from helpers import new_hospital, new_patient, new_practitioner

from carechain.demo import cancer_diagnosis
from carechain.localnet import LocalNetwork
from carechain.sdk import CareChainClient, Category, Purpose, permit


def test_records_consents_and_chain_survive_a_restart(tmp_path) -> None:
    network = LocalNetwork(tmp_path / "net")
    network.start()
    try:
        hospital = new_hospital(network)
        reader = new_practitioner(network, hospital, "oncology")
        patient, fhir_id = new_patient(network, hospital)
        patient.client.grant_consent(permit([Purpose.PURPOSE_OF_USE_TREAT], practitioner_id=reader.principal_id,
                                            categories=[Category.SENSITIVITY_CATEGORY_ONCOLOGY]))
        stored = hospital.client.put_record(patient.principal_id, cancer_diagnosis(fhir_id))
        original = reader.client.get_record(stored.record_id).resource_json
        head_before = hospital.client.verify_chain().blocks_checked
    finally:
        exit_codes = {service: network.stop_service(service) for service in list(network.processes)}
    assert set(exit_codes.values()) == {0}, f"unclean shutdown: {exit_codes}"

    restarted = LocalNetwork(tmp_path / "net")
    restarted.start()
    try:
        for actor in (hospital, reader, patient):
            actor.client.close()
        with CareChainClient(restarted.endpoints, reader.signer) as reader_again:
            assert reader_again.get_record(stored.record_id).resource_json == original
            verification = reader_again.verify_chain()
        assert verification.ok and verification.blocks_checked >= head_before
    finally:
        restarted.stop()
