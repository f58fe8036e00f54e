"""Patient identity links as a service following the ledger sees them (docs/network-identity.md).

The ledger's own contract state is :class:`carechain.ledger.state.PatientLink`; services that fold
committed transactions themselves (consent's state, every service's principal lifecycle follower)
keep this table, fed with valid transactions in log order.
"""

from __future__ import annotations

from carechain.ledger.v1 import ledger_pb2


class PatientLinkTable:
    """Linked patient -> network identity, from LinkPatientIdentity / UnlinkPatientIdentity.

    Not locked: its owner folds and reads it under its own lock.
    """

    def __init__(self, rows: list[list[str]] | tuple[()] = ()) -> None:
        """rows: what :meth:`rows` exported (a snapshot)."""
        self._links: dict[str, str] = {str(linked): str(network) for linked, network in rows}

    def fold(self, body: ledger_pb2.TransactionBody) -> None:
        """Apply a valid transaction's body (anything but a link or unlink changes nothing)."""
        kind = body.WhichOneof("payload")
        if kind == "link_patient_identity":
            link = body.link_patient_identity
            self._links[link.linked_patient_id] = link.network_patient_id
        elif kind == "unlink_patient_identity":
            unlink = body.unlink_patient_identity
            if self._links.get(unlink.linked_patient_id) == unlink.network_patient_id:
                del self._links[unlink.linked_patient_id]

    def network_patient(self, patient_id: str) -> str:
        """The network identity patient_id is linked to, or patient_id itself."""
        return self._links.get(patient_id, patient_id)

    def linked_patients(self, network_patient_id: str) -> list[str]:
        """The patient principals linked to network_patient_id, in link order (itself excluded)."""
        return [linked for linked, network in self._links.items() if network == network_patient_id]

    def rows(self) -> list[list[str]]:
        """The table as JSON-able rows, in link order (for snapshots)."""
        return [[linked, network] for linked, network in self._links.items()]
