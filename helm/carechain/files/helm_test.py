"""`helm test` for a CareChain release: every service answers gRPC health, one record round trip.

Runs in the test pod (the CareChain image). Service addresses come from CARECHAIN_<SERVICE>_ADDRESS
and the chain id from CARECHAIN_CHAIN_ID, as for the services themselves; with CARECHAIN_TLS_CA_FILE
every call is TLS, presenting CARECHAIN_TLS_CERT_FILE/CARECHAIN_TLS_KEY_FILE (mutual TLS). With --operator-key, it
registers a synthetic organisation, practitioner and patient, stores one synthetic FHIR Observation
through the records gateway, lets the patient grant the practitioner consent, reads the record back
and checks it is byte for byte what was stored. (These synthetic principals and the record's
evidence stay on the ledger, which is append-only.)
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import uuid

from carechain.core.crypto import Ed25519Signer
from carechain.client.endpoints import Endpoints
from carechain.dev.localnet import wait_healthy
from carechain.core.layout import OPERATOR_ID, SERVICES
from carechain.client.sdk import CareChainClient, Kind, Purpose, permit


def endpoints_from_environment() -> Endpoints:
    """The release's service addresses and client TLS files, from the same variables the services read."""
    addresses = {service: os.environ[f"CARECHAIN_{service.upper()}_ADDRESS"] for service in SERVICES}
    tls = {f"tls_{name}_file": os.environ.get(f"CARECHAIN_TLS_{name.upper()}_FILE", "")
           for name in ("ca", "cert", "key")}
    return Endpoints(chain_id=os.environ["CARECHAIN_CHAIN_ID"], **addresses, **tls)


def check_health(endpoints: Endpoints, timeout: float) -> list[str]:
    """Names of the services that did not report SERVING within timeout."""
    unhealthy = []
    tls = endpoints.client_tls()
    transport = "plaintext" if tls is None else ("mutual TLS" if tls.cert_file else "TLS")
    for service in SERVICES:
        address = endpoints.address(service)
        try:
            wait_healthy(address, timeout, tls)
            print(f"ok    {service:9} {address} SERVING ({transport})", flush=True)
        except TimeoutError as exc:
            print(f"FAIL  {service:9} {address} {exc}", flush=True)
            unhealthy.append(service)
    return unhealthy


def synthetic_observation(fhir_patient_id: str) -> bytes:
    """A body-weight Observation (LOINC 29463-7) of a synthetic patient."""
    return json.dumps({
        "resourceType": "Observation",
        "id": str(uuid.uuid4()),
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7", "display": "Body weight"}]},
        "subject": {"reference": f"Patient/{fhir_patient_id}"},
        "valueQuantity": {"value": 70.5, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg"},
    }).encode()


def record_round_trip(endpoints: Endpoints, operator: Ed25519Signer) -> None:
    """Store one record and read it back with the patient's consent; raises on any difference."""
    run = uuid.uuid4().hex[:8]
    organisation_key = Ed25519Signer.generate("pending")
    with CareChainClient(endpoints, operator) as operator_client:
        organisation = operator_client.register(
            Kind.PRINCIPAL_KIND_ORGANIZATION, f"helm test organisation {run}", organisation_key.public_key_bytes())
    practitioner_key, patient_key = Ed25519Signer.generate("pending"), Ed25519Signer.generate("pending")
    fhir_patient_id = f"helm-test-{run}"
    stored = synthetic_observation(fhir_patient_id)
    with CareChainClient(endpoints, organisation_key.with_key_id(organisation.principal_id)) as hospital:
        practitioner = hospital.register(Kind.PRINCIPAL_KIND_PRACTITIONER, f"helm test practitioner {run}",
                                         practitioner_key.public_key_bytes(), specialty="general-practice")
        patient = hospital.register(Kind.PRINCIPAL_KIND_PATIENT, f"helm test patient {run}",
                                    patient_key.public_key_bytes(), fhir_patient_id=fhir_patient_id)
        record = hospital.put_record(patient.principal_id, stored)
    print(f"ok    stored record {record.record_id} (ledger log index {record.ledger_log_index})", flush=True)
    with CareChainClient(endpoints, patient_key.with_key_id(patient.principal_id)) as patient_client:
        patient_client.grant_consent(permit([Purpose.PURPOSE_OF_USE_TREAT], practitioner_id=practitioner.principal_id))
    with CareChainClient(endpoints, practitioner_key.with_key_id(practitioner.principal_id)) as reader:
        read = reader.get_record(record.record_id, Purpose.PURPOSE_OF_USE_TREAT)
    if read.resource_json != stored:
        raise AssertionError(f"record {record.record_id} read back differs from what was stored")
    print(f"ok    read record {record.record_id} back with consent: identical ({len(stored)} bytes)", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--operator-key", type=pathlib.Path, help="operator's PEM key: enables the round trip")
    parser.add_argument("--health-timeout", type=float, default=60.0, help="seconds each service may take")
    args = parser.parse_args(argv)
    endpoints = endpoints_from_environment()
    unhealthy = check_health(endpoints, args.health_timeout)
    if unhealthy:
        print(f"not healthy: {', '.join(unhealthy)}", flush=True)
        return 1
    if args.operator_key is None:
        print("skip  record round trip: no operator key (set tests.operatorKeySecret.name)", flush=True)
        return 0
    record_round_trip(endpoints, Ed25519Signer.from_file(OPERATOR_ID, args.operator_key))
    return 0


if __name__ == "__main__":
    sys.exit(main())
