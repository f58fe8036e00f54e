"""The ledger service as deployed: final transactions/s and time-to-final beside raw etcd puts, same clients.

The network is the one ``carechain up --with-backends --validators 3`` runs (separate validator processes
ordering through etcd, each signing with its own OpenBao Transit key). An organisation registered through
identity signs RegisterPrincipal transactions for practitioners of its own (the cheapest valid transaction
a principal signs itself); the bench submits them over gRPC, authenticated as svc-records with that
service's own signer (SubmitTransaction is a service call), to the failover target listing every
validator, with ``ACK_LEVEL_FINAL``: answered once a quorum signed the block. The clients submit as the
services do, through one :class:`~carechain.ledger.submission.ServiceSubmitter` (concurrent submissions share
one ``SubmitTransactions`` call, each client still waits for its own transaction's verdict); the rate of one
``SubmitTransaction`` per client call is printed beside it.
Time-to-final is per transaction, from submit to that answer. The baseline is raw etcd puts of 300-byte
values from this process to the network's own etcd (TLS and login like the services), with the same
number of concurrent writers, in the same run.

:func:`grow_history` (also ACK_LEVEL_COMMITTED, many submitters) builds a large ledger quickly for the scale
figures.
"""

from __future__ import annotations

import statistics
import uuid
from dataclasses import dataclass

from bench.baselines import etcd_puts
from bench.figures import Result, percentile, spread
from bench.harness import closed_loop, count_loop, load_average
from carechain.client.sdk import CareChainClient, Kind
from carechain.common.v1 import common_pb2
from carechain.core.crypto import Ed25519Signer
from carechain.dev.localnet import LocalNetwork
from carechain.ledger.submission import ServiceSubmitter
from carechain.ledger.v1 import ledger_pb2
from carechain.runtime.config import ENV_PREFIX, ServiceSettings
from carechain.runtime.vault import service_signer

# One throwaway public key for every generated practitioner: the ledger checks its shape, not its use.
_PUBLIC_KEY = Ed25519Signer.generate("bench").public_key_bytes()


def register_practitioner_tx(organization: CareChainClient) -> ledger_pb2.Transaction:
    """A RegisterPrincipal of a new practitioner of organization, signed by the organization."""
    principal = ledger_pb2.RegisterPrincipal(
        principal_id=f"prac-bench-{uuid.uuid4().hex}", kind=common_pb2.PRINCIPAL_KIND_PRACTITIONER,
        public_key=_PUBLIC_KEY, organization_id=organization.principal_id)
    return organization._signed(register_principal=principal)  # noqa: SLF001 - the SDK's own signing step


@dataclass
class Submitter:
    """Submits organisation-signed transactions over an authenticated service connection.

    SubmitTransaction is a service call (the access table); the bench connects as svc-records, with the very
    signer that service uses (PEM file embedded, its own AppRole and Transit key on backends), so the ledger
    sees what it sees from the services: a token check, then the transaction's own signature.
    """

    organization: CareChainClient
    service: CareChainClient

    def __post_init__(self) -> None:
        self._group = ServiceSubmitter(self.organization.endpoints.chain_id, self.service.signer,
                                       lambda: self.service.ledger, timeout=60)

    def submit_grouped(self, ack: int) -> ledger_pb2.SubmitTransactionResponse:
        """Sign one transaction and submit it through the services' group commit (shared SubmitTransactions
        calls); raises when the ledger does not answer valid."""
        return self._group.submit(register_practitioner_tx(self.organization), ack)

    def submit(self, ack: int) -> ledger_pb2.SubmitTransactionResponse:
        """Sign and submit one transaction in a call of its own; raises when the ledger does not answer valid."""
        request = ledger_pb2.SubmitTransactionRequest(transaction=register_practitioner_tx(self.organization), ack=ack)
        response = self.service.ledger.SubmitTransaction(request, timeout=60)
        if not response.valid:
            raise RuntimeError(f"ledger refused the bench transaction: {response.reason}")
        return response

    def close(self) -> None:
        self.organization.close()
        self.service.close()


def service_client(network: LocalNetwork, service: str = "records") -> CareChainClient:
    """A client authenticated as one of the network's services, with that service's own signer."""
    env = network.service_env(service)
    fields = ServiceSettings.model_fields
    settings = ServiceSettings(**{name.removeprefix(ENV_PREFIX).lower(): value for name, value in env.items()
                                  if name.startswith(ENV_PREFIX) and name.removeprefix(ENV_PREFIX).lower() in fields})
    return CareChainClient(network.endpoints, service_signer(settings, service))


def new_submitter(network: LocalNetwork) -> Submitter:
    """An organisation registered by the operator through identity, and a service connection to submit with."""
    with CareChainClient(network.endpoints, network.layout.operator_signer()) as operator:
        key = Ed25519Signer.generate("pending")
        principal = operator.register(Kind.PRINCIPAL_KIND_ORGANIZATION, "bench ledger", key.public_key_bytes())
    organization = CareChainClient(network.endpoints, key.with_key_id(principal.principal_id))
    return Submitter(organization, service_client(network))


def ledger_final_figure(network: LocalNetwork, clients: int, seconds: float, runs: int, result: Result) -> None:
    """Final tx/s of the deployed ledger vs raw etcd put/s at the same client count (needs a backends network).

    The figure is clients threads submitting as the services do (group commit); the rate of the same clients
    each making its own SubmitTransaction call is printed too.
    """
    assert network.backends is not None, "the ledger figure runs on the backends network"
    submitter = new_submitter(network)
    final = ledger_pb2.ACK_LEVEL_FINAL
    print(f"\n[ledger] {len(network.validator_names)} validator processes, {clients} clients, "
          f"load average {load_average():.1f}")
    try:
        count_loop(lambda _i: submitter.submit_grouped(final), clients, clients)  # warm-up
        latencies: list[float] = []
        etcd_client_ms, unary_rates = [], []
        for _ in range(runs):
            rates, client_ms = etcd_puts(network.backends.etcd, clients, seconds, 1)
            result.baseline.extend(rates)
            etcd_client_ms.append(client_ms)
            done, run_latencies = closed_loop(lambda _i: submitter.submit_grouped(final), clients, seconds)
            result.values.append(done / seconds)
            latencies.extend(run_latencies)
            done, _ = closed_loop(lambda _i: submitter.submit(final), clients, seconds)
            unary_rates.append(done / seconds)
        p50, p99 = statistics.median(latencies) * 1000, percentile(latencies, 0.99) * 1000
        result.note = (f"{clients} clients through the services' group commit; time-to-final p50 {p50:.0f} ms, "
                       f"p99 {p99:.0f} ms; one call per transaction: {spread(unary_rates)}/s")
        print(f"  baseline: raw etcd put, {clients} clients: {spread(result.baseline)}/s "
              f"(the bench client's CPU {statistics.median(etcd_client_ms):.2f} ms per put)")
        print(f"  ledger final tx/s, {clients} clients through ServiceSubmitter (SubmitTransactions): "
              f"{spread(result.values)}/s ({result.ratio or 0:.3f}x etcd); time-to-final p50 {p50:.1f} ms, "
              f"p99 {p99:.1f} ms")
        print(f"  ledger final tx/s, {clients} clients, one SubmitTransaction per call: {spread(unary_rates)}/s "
              f"({statistics.median(unary_rates) / statistics.median(result.baseline):.3f}x etcd)")
    finally:
        submitter.close()


def grow_history(submitter: Submitter, transactions: int, clients: int = 32) -> float:
    """Add transactions committed ledger transactions (RegisterPrincipal) as fast as the ledger takes them; tx/s."""
    if transactions <= 0:
        return 0.0
    elapsed, _ = count_loop(lambda _i: submitter.submit(ledger_pb2.ACK_LEVEL_COMMITTED), transactions, clients)
    return transactions / elapsed
