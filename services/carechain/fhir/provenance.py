"""The ledger's Provenance of record versions as FHIR resources on this server (issue 14 part 6, issue 15).

Records answers a read asked ``provenance`` with the version's FHIR ``Provenance`` (who wrote it and when,
:mod:`carechain.records.provenance`). The gateway serves it with a deterministic id,
``<record id>.<version>`` (:func:`provenance_id`): record ids are UUIDs, never holding a dot, so such an id is
never a stored Provenance record's, and ``GET /Provenance/<record id>.<version>`` resolves it (a read of that
version, decided and audited as any). Stored ``Provenance`` records (hospitals' own) keep their record ids
and are searched by ``patient`` as every other type; ``target`` searches the ledger's (docs/fhir.md).
"""

from __future__ import annotations

import json
import re
from typing import Any

from carechain.fhir.outcomes import FhirError
from carechain.fhir.patients import record_version_number
from carechain.records.v1 import records_pb2

#: The search parameter answering the ledger's Provenance of a record's versions.
TARGET = "target"
#: A ledger Provenance id: a record id without a dot, a dot, a version (at most 64 characters, a FHIR id);
#: also the path pattern of its route (a Starlette convertor regex, so without groups).
PROVENANCE_ID_PATTERN = r"[A-Za-z0-9\-]{1,54}\.[1-9][0-9]{0,8}"
_PROVENANCE_ID = re.compile(PROVENANCE_ID_PATTERN)
_RECORD_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


def provenance_id(record_id: str, version: int) -> str:
    """The id of the ledger's Provenance of one record version: ``<record id>.<version>``."""
    return f"{record_id}.{version}"


def parse_provenance_id(value: str) -> tuple[str, int] | None:
    """The (record id, version) a ledger Provenance id names, or None when it is not one."""
    if not _PROVENANCE_ID.fullmatch(value):
        return None
    record_id, _, version = value.rpartition(".")
    return record_id, int(version)


def parse_target(value: str, known_types: frozenset[str]) -> tuple[str, str, int]:
    """The (resource type, record id, version; 0 = every version) of a ``target`` reference:
    ``<type>/<id>`` or ``<type>/<id>/_history/<n>``, relative or an absolute URL ending so."""
    parts = value.strip().rstrip("/").split("/")
    version = 0
    if len(parts) >= 4 and parts[-2] == "_history":
        if not (parts[-1].isascii() and parts[-1].isdigit()) or not 0 < int(parts[-1]) < 10**9:
            raise FhirError(400, "value", f"{TARGET}: the version after _history/ must be a number", TARGET)
        version, parts = int(parts[-1]), parts[:-2]
    if len(parts) < 2 or parts[-2] not in known_types or not _RECORD_ID.match(parts[-1]):
        raise FhirError(400, "value", f"{TARGET}: must reference a record, <type>/<id> or <type>/<id>/_history/<n> "
                        "(a type this server stores, see /metadata)", TARGET)
    return parts[-2], parts[-1], version


def served_provenance(record: records_pb2.GetRecordResponse) -> dict[str, Any]:
    """The Provenance of the version a read (asked ``provenance``) answered, with its id on this server."""
    provenance = json.loads(record.provenance_json)
    return {"resourceType": "Provenance", "id": provenance_id(record.record_id, record_version_number(record)),
            **{k: v for k, v in provenance.items() if k not in ("resourceType", "id")}}


def provenance_entry(base_url: str, record: records_pb2.GetRecordResponse, mode: str) -> dict[str, Any]:
    """A searchset entry (search.mode ``match`` or ``include``) of a read version's Provenance."""
    served = served_provenance(record)
    return {"fullUrl": f"{base_url}/Provenance/{served['id']}", "resource": served, "search": {"mode": mode}}
