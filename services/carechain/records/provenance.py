"""Who wrote a record version and when, as the gateway returns it with every read (issue 14, part 6).

Everything here comes from the ledger: the version's RegisterRecord (organisation in clear, the author
sealed in its RecordMetadata) and the timestamp of the block that holds it (ordering time, never a
signer's clock). Ids are the network's pseudonymous principal ids. A read returns:

- :func:`record_version`: the version's metadata (records_pb2.RecordVersion);
- :func:`with_version_meta`: the resource with FHIR ``meta.versionId`` and ``meta.lastUpdated`` set. The
  stored bytes themselves (``resource_json``) stay exactly what was written: the ledger's content hash
  covers their ciphertext, and a client can check them; the versioned form is a rendering of them;
- :func:`provenance_resource`: a FHIR R4 ``Provenance`` of the version, when asked for.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

from carechain.ledger.v1 import ledger_pb2
from carechain.records.v1 import records_pb2

#: FHIR identifier system of CareChain principal ids (pseudonymous) in Provenance agents.
PRINCIPAL_SYSTEM = "urn:carechain:principal"
_DATA_OPERATION = "http://terminology.hl7.org/CodeSystem/v3-DataOperation"
_PARTICIPANT_TYPE = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"


def record_version(record: ledger_pb2.RegisterRecord, metadata: ledger_pb2.RecordMetadata,
                   log_index: int, block_time_ms: int) -> records_pb2.RecordVersion:
    """A version's metadata: number, log index, when (block time), organisation and practitioner, content hash."""
    author = metadata.author_id
    return records_pb2.RecordVersion(
        record_id=record.record_id,
        version=max(record.version, 1),
        ledger_log_index=log_index,
        last_updated_ms=block_time_ms,
        author_organization_id=record.organization_id,
        # The organisation itself may write: then no practitioner is named.
        author_practitioner_id=author if author and author != record.organization_id else "",
        content_sha256=record.content_sha256,
    )


def fhir_instant(time_ms: int) -> str:
    """A FHIR instant (UTC, millisecond precision) for Unix milliseconds."""
    moment = datetime.datetime.fromtimestamp(time_ms / 1000, tz=datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def with_version_meta(resource_json: bytes, version: records_pb2.RecordVersion) -> bytes:
    """The resource with meta.versionId and meta.lastUpdated from the ledger, as compact JSON."""
    resource = json.loads(resource_json)
    meta = resource.setdefault("meta", {})
    meta["versionId"] = str(version.version)
    meta["lastUpdated"] = fhir_instant(version.last_updated_ms)
    return json.dumps(resource, separators=(",", ":"), ensure_ascii=False).encode()


def _principal(kind: str, principal_id: str) -> dict[str, Any]:
    return {"type": kind, "identifier": {"system": PRINCIPAL_SYSTEM, "value": principal_id}}


def provenance_resource(version: records_pb2.RecordVersion, resource_type: str) -> bytes:
    """A FHIR R4 Provenance of one record version (compact JSON).

    target: ``<type>/<record id>/_history/<version>``; recorded: the block time; activity: CREATE for
    version 1, UPDATE after; one author agent, who = the practitioner (on behalf of the organisation) or
    the organisation itself.
    """
    if version.author_practitioner_id:
        agent = {"who": _principal("Practitioner", version.author_practitioner_id),
                 "onBehalfOf": _principal("Organization", version.author_organization_id)}
    else:
        agent = {"who": _principal("Organization", version.author_organization_id)}
    activity = "CREATE" if version.version <= 1 else "UPDATE"
    provenance = {
        "resourceType": "Provenance",
        "target": [{"reference": f"{resource_type}/{version.record_id}/_history/{version.version}"}],
        "recorded": fhir_instant(version.last_updated_ms),
        "activity": {"coding": [{"system": _DATA_OPERATION, "code": activity,
                                 "display": "create" if activity == "CREATE" else "revise"}]},
        "agent": [{"type": {"coding": [{"system": _PARTICIPANT_TYPE, "code": "author", "display": "Author"}]},
                   **agent}],
    }
    return json.dumps(provenance, separators=(",", ":")).encode()
