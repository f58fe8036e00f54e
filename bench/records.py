"""PutRecord / GetRecord through the six real service processes, beside baselines of the same run.

For each concurrency (closed loop: C client threads calling back to back for a fixed time) it measures, as
the median of the runs with min-max: PutRecord/s and GetRecord/s (2 KiB-class Synthea resources) beside a
bare gRPC echo of the same payload at the same concurrency; CPU milliseconds per operation per process (from
/proc/<pid>/stat: services, and on backends OpenBao, MinIO and etcd too) and all together; RPCs per operation
per service (the services' JSON ``rpc`` log lines); OpenBao requests per operation (backends: a file audit
device); GetRecord p50/p99 in an open loop at half the highest measured GetRecord rate; with ``--syscalls``
(strace) fsync/fdatasync calls per PutRecord; with ``--profile DIR`` py-spy of every service.

Also here: RSS of every service over many writes, writes/s with 64 open audit tails, and the bulk import and
large-record figures (behind :func:`bulk_import_figure` and :func:`large_record_figure`, which take the SDK
call, so they are wired by name once the RPCs exist). Run everything with ``python -m bench`` (``make bench``).
"""

from __future__ import annotations

import collections
import gzip
import json
import os
import pathlib
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.figures import Result, growth_per_thousand, missing_sdk_call, percentile, spread, strace_sync_calls
from bench.harness import PeakRss, Window, closed_loop, count_loop, load_average, median_cells, open_loop, rss_mib
from carechain.client.auth import TokenSource
from carechain.client.channels import open_channel
from carechain.client.sdk import CareChainClient, Kind, Purpose, permit
from carechain.core.crypto import Ed25519Signer
from carechain.core.layout import audience
from carechain.dev.localnet import LocalNetwork
from carechain.labels.sensitivity import NORMAL, SENSITIVE_CATEGORIES

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "synthea-10"
PATIENTS = 8
RESOURCE_TYPE = "Encounter"  # Synthea's Encounters are about 2 KiB, its Conditions about 1 KiB

# The SDK methods of the bulk import and large-record figures (h/bulk, on main since 2fefc9f): without them
# (an older SDK) the figures print "not available: RPC X missing".
BULK_IMPORT_METHOD, BULK_IMPORT_RPC = "import_records", "ImportRecords"
LARGE_RECORD_METHOD, LARGE_RECORD_RPC = "put_large_record", "PutRecordStream"


def bulk_import_adapter(client: object) -> Callable[[str, list[bytes]], int]:
    """import_call for :func:`bulk_import_figure` over ``import_records`` (one stream): resources committed."""
    def import_call(patient_id: str, resources: list[bytes]) -> int:
        results = client.import_records((patient_id, r, str(i)) for i, r in enumerate(resources))  # type: ignore[attr-defined]
        return sum(1 for result in results if result.code == 0)

    return import_call


def large_record_adapter(client: object, fhir_patient_id: str) -> Callable[[str, pathlib.Path], object]:
    """store_call for :func:`large_record_figure` over ``put_large_record``: a DocumentReference of the file."""
    def store_call(patient_id: str, path: pathlib.Path) -> object:
        size = path.stat().st_size
        envelope = {"resourceType": "DocumentReference", "status": "current",
                    "type": {"coding": [{"system": "http://snomed.info/sct", "code": "254837009"}]},
                    "subject": {"reference": f"Patient/{fhir_patient_id}"},
                    "content": [{"attachment": {"contentType": "application/octet-stream", "size": size}}]}
        with path.open("rb") as data:
            return client.put_large_record(patient_id, envelope, data, size)  # type: ignore[attr-defined]

    return store_call


def synthea_payloads(patients: int = PATIENTS) -> tuple[bytes, list[dict[str, object]], list[bytes]]:
    """The Synthea Encounter closest to 2 KiB (issue 13's size), the first patients, it once per patient."""
    with gzip.open(FIXTURES / f"{RESOURCE_TYPE}.000.ndjson.gz", "rb") as handle:
        candidates = [line.rstrip(b"\n") for line in handle]
    with gzip.open(FIXTURES / "Patient.000.ndjson.gz", "rb") as handle:
        resources = [json.loads(line) for line in handle][:patients]
    payload = min(candidates, key=lambda c: abs(len(c) - 2048))
    subject = json.loads(payload)["subject"]["reference"].removeprefix("urn:uuid:").removeprefix("Patient/")
    # The same resource for each patient (a record must reference its own patient).
    return payload, resources, [payload.replace(subject.encode(), str(r["id"]).encode()) for r in resources]


def enrol(network: LocalNetwork, registrar: CareChainClient, kind: int, **fields: str) -> CareChainClient:
    """Register a principal through identity; a client acting as it."""
    key = Ed25519Signer.generate("pending")
    principal = registrar.register(kind, "bench", key.public_key_bytes(), **fields)
    return CareChainClient(network.endpoints, key.with_key_id(principal.principal_id))


@dataclass
class Workload:
    """A hospital writing one 2 KiB Condition per call for 8 consenting patients, a practitioner reading them."""

    network: LocalNetwork
    payload: bytes = b""
    operator: CareChainClient | None = None
    hospital: CareChainClient | None = None
    reader: CareChainClient | None = None
    patient: CareChainClient | None = None  # the first patient, kept open for GetAccessHistory
    patient_ids: list[str] = field(default_factory=list)
    fhir_patient_ids: list[str] = field(default_factory=list)  # the FHIR Patient ids the resources reference
    payloads: list[bytes] = field(default_factory=list)
    record_ids: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Workload:
        self.payload, resources, self.payloads = synthea_payloads()
        self.operator = CareChainClient(self.network.endpoints, self.network.layout.operator_signer())
        self.hospital = enrol(self.network, self.operator, Kind.PRINCIPAL_KIND_ORGANIZATION)
        self.reader = enrol(self.network, self.hospital, Kind.PRINCIPAL_KIND_PRACTITIONER, specialty="general-practice")
        for resource in resources:
            patient = enrol(self.network, self.hospital, Kind.PRINCIPAL_KIND_PATIENT,
                            fhir_patient_id=str(resource["id"]))
            patient.grant_consent(permit([Purpose.PURPOSE_OF_USE_TREAT], practitioner_id=self.reader.principal_id,
                                         categories=[NORMAL, *sorted(SENSITIVE_CATEGORIES)]))
            self.patient_ids.append(patient.principal_id)
            self.fhir_patient_ids.append(str(resource["id"]))
            if self.patient is None:
                self.patient = patient
            else:
                patient.close()
        for index in range(len(self.patient_ids) * 2):  # warm-up: tokens, channels, each patient's key
            self.put(index)
        self.get(0)
        return self

    def put(self, index: int) -> None:
        which = index % len(self.patient_ids)
        record = self.hospital.put_record(self.patient_ids[which], self.payloads[which])  # type: ignore[union-attr]
        with self._lock:
            self.record_ids.append(record.record_id)

    def get(self, index: int) -> None:
        self.reader.get_record(self.record_ids[index % len(self.record_ids)],  # type: ignore[union-attr]
                               Purpose.PURPOSE_OF_USE_TREAT)

    def close(self) -> None:
        for client in (self.operator, self.hospital, self.reader, self.patient):
            if client is not None:
                client.close()


def service_pids(network: LocalNetwork) -> dict[str, int]:
    return {name: process.pid for name, process in network.processes.items()}


def backend_pids(network: LocalNetwork) -> dict[str, int]:
    """pids of the OpenBao, MinIO and etcd member processes of a backends network (none embedded)."""
    stack = network.backends
    if stack is None:
        return {}
    # The dev launchers keep their ServerProcess private; the bench only reads the pid for /proc.
    servers = {"openbao": stack.openbao._process, "minio": stack.minio._process}  # noqa: SLF001
    servers.update({f"etcd-{i}": p for i, p in enumerate(stack.etcd._processes)})  # noqa: SLF001
    return {name: server._process.pid for name, server in servers.items()  # noqa: SLF001
            if server._process is not None and server._process.poll() is None}  # noqa: SLF001


def window(network: LocalNetwork, extra: dict[str, Callable[[], int]] | None = None) -> Window:
    """Counters of every service (CPU, RPC lines) and backend process (CPU), plus the extra counters."""
    return Window({**service_pids(network), **backend_pids(network)},
                  {name: network.log_dir / f"{name}.log" for name in network.processes}, extra or {})


def print_breakdown(breakdown: list[dict[str, dict[str, float]]], what: str) -> float:
    """Print median CPU ms / RPCs / counts per operation per process; returns all processes' CPU ms together."""
    cells, total = [], 0.0
    for name, figures in median_cells(breakdown).items():
        if "cpu_ms" in figures:
            if name != "client":
                total += figures["cpu_ms"]
            cells.append(f"{name} {figures['cpu_ms']:.2f} ms" + (f" {figures['rpcs']:.1f} rpc" if "rpcs" in figures
                                                                  else ""))
        else:
            cells.append(f"{name} {figures['count']:.1f}")
    print(f"      per {what}: " + ", ".join(cells))
    print(f"      CPU ms per {what}, all server processes together: {total:.2f} (the client's not included)")
    return total


def rates_and_cpu(network: LocalNetwork, operation: Callable[[int], object], what: str, clients: int,
                  seconds: float, runs: int, extra: dict[str, Callable[[], int]] | None = None
                  ) -> tuple[list[float], list[float]]:
    """runs closed-loop runs of operation: (rates, CPU ms per operation over all server processes, per run)."""
    rates, breakdown = [], []
    for _ in range(runs):
        counters = window(network, extra).open()
        done, _ = closed_loop(operation, clients, seconds)
        breakdown.append(counters.close(done))
        rates.append(done / seconds)
    print_breakdown(breakdown, what)
    cpu = [sum(f["cpu_ms"] for name, f in run.items() if "cpu_ms" in f and name != "client") for run in breakdown]
    return rates, cpu


def p99_at_half_load(operation: Callable[[int], object], max_rate: float, seconds: float) -> tuple[float, float]:
    """(p50, p99) ms of operation started at half of max_rate in an open loop of 64 callers."""
    latencies = open_loop(operation, max(max_rate / 2, 1.0), seconds, clients=64)
    return percentile(latencies, 0.5) * 1000, percentile(latencies, 0.99) * 1000


def fsyncs_per_put(network: LocalNetwork, put: Callable[[int], object], operations: int) -> dict[str, float]:
    """fsync + fdatasync calls per PutRecord per service, counted by strace attached to each process."""
    tracers = {}
    for name, process in network.processes.items():
        out = pathlib.Path(tempfile.mkstemp(prefix=f"strace-{name}-")[1])
        tracers[name] = (subprocess.Popen(  # noqa: S603 - fixed argv
            ["strace", "-f", "-c", "-e", "trace=fsync,fdatasync", "-o", str(out), "-p", str(process.pid)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), out)
    time.sleep(1.0)  # strace attaches to every thread
    for index in range(operations):
        put(index)
    counts = {}
    for name, (tracer, out) in tracers.items():
        tracer.terminate()
        tracer.wait(10)
        counts[name] = strace_sync_calls(out.read_text()) / operations
        out.unlink()
    return counts


def profile(network: LocalNetwork, operation: Callable[[int], object], clients: int, seconds: float,
            out_dir: pathlib.Path, label: str, top: int = 8) -> None:
    """py-spy every service process while operation runs; print where each one spends CPU.

    Only samples of the thread holding the GIL count (``--gil``): waits are not work. Printed: the hottest
    functions by self time, and the CareChain functions by inclusive time.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    py_spy = shutil.which("py-spy", path=pathlib.Path(sys.executable).parent) or "py-spy"
    spies = {}
    for name, process in network.processes.items():
        out = out_dir / f"{label}-{name}.txt"
        spies[name] = (subprocess.Popen(  # noqa: S603 - fixed argv
            [py_spy, "record", "--gil", "--nonblocking", "-r", "200", "-f", "raw", "-d", str(int(seconds) + 1),
             "-o", str(out), "-p", str(process.pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), out)
    time.sleep(0.5)
    closed_loop(operation, clients, seconds)
    for name, (spy, out) in spies.items():
        spy.wait(30)
        self_time: dict[str, int] = {}
        inclusive: dict[str, int] = {}
        total = 0
        for line in out.read_text().splitlines() if out.exists() else []:
            stack, _, count = line.rpartition(" ")
            frames = [re.sub(r" \(.*?([\w/]+\.py):\d+\)", r" (\1)", f) for f in stack.split(";")]
            self_time[frames[-1]] = self_time.get(frames[-1], 0) + int(count)
            for frame in set(frames):
                if "carechain/" in frame:
                    inclusive[frame] = inclusive.get(frame, 0) + int(count)
            total += int(count)
        for kind, table in (("self", self_time), ("carechain inclusive", inclusive)):
            hottest = sorted(table.items(), key=lambda item: -item[1])[:top]
            cells = "; ".join(f"{frame} {count * 100 / max(total, 1):.0f}%" for frame, count in hottest)
            print(f"    {label} {name} ({kind}): {cells}")


def rss_over_writes(network: LocalNetwork, workload: Workload, writes: int, clients: int,
                    samples: int = 10) -> dict[str, float]:
    """RSS of every service sampled while writes PutRecords run; MiB per 1,000 writes (least-squares slope).

    A tenth of writes (at most 2,000) run first, unmeasured: bounded caches (tokens, registrations, ledger
    entries), SQLite page caches and the allocator's arenas fill in the first writes, which is not growth.
    """
    pids = service_pids(network)
    warmup = min(writes // 10, 2000)
    count_loop(lambda i: workload.put(i), warmup, clients)
    series: dict[str, list[tuple[int, float]]] = {name: [(0, rss_mib(pid))] for name, pid in pids.items()}
    step = max(writes // samples, 1)
    done = 0
    while done < writes:
        batch = min(step, writes - done)
        base = done
        count_loop(lambda i, base=base: workload.put(base + i), batch, clients)
        done += batch
        for name, pid in pids.items():
            series[name].append((done, rss_mib(pid)))
    growth = {name: growth_per_thousand(points) for name, points in series.items()}
    cells = ", ".join(f"{name} {points[0][1]:.0f}->{points[-1][1]:.0f} MiB ({growth[name]:+.2f}/1k)"
                      for name, points in series.items())
    print(f"  RSS over {writes:,} PutRecords ({clients} clients, after {warmup:,} unmeasured): {cells}")
    return growth


def tail_stream_settings(tails: int) -> dict[str, str]:
    """The bench-only stream caps under which one caller can hold `tails` tails open.

    StreamEvents is open to the operator and the services only (a handful of principals), and each may hold
    ``max_streams_per_caller`` (default 3) streams: 64 tails need one caller allowed 64, and a server cap
    with room for them beside the services' own streams. Each stream has its own worker thread on top of the
    unary workers (runtime/streams.py), which is what the figure measures.
    """
    return {"CARECHAIN_MAX_STREAMS_PER_CALLER": str(tails), "CARECHAIN_MAX_STREAMS": str(max(64, tails + 16))}


def open_tails(network: LocalNetwork, tails: int, idle: bool = False) -> subprocess.Popen[str]:
    """A child process (bench.tail_drain) holding `tails` operator tails open, once they caught up with the past.

    idle: tails whose filter no event passes (alerts only), opened at the trail's end.
    """
    path = os.pathsep.join([str(pathlib.Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])
    drainer = subprocess.Popen(
        [sys.executable, "-m", "bench.tail_drain", str(network.layout.root), str(tails), *(["idle"] if idle else [])],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": path})
    assert drainer.stdout is not None
    drainer.stdout.readline()  # "open"
    return drainer


def close_tails(drainer: subprocess.Popen[str]) -> dict[str, object]:
    """End the tails of :func:`open_tails`: {"events": received, "refused": {status: tails}}."""
    drainer.terminate()
    lines = (drainer.communicate(timeout=60)[0] or "").strip().splitlines()
    return dict(json.loads(lines[-1])) if lines else {"events": 0, "refused": {"the tails process died": 1}}


def tails_figure(network: LocalNetwork, workload: Workload, tails: int, clients: int, seconds: float, runs: int,
                 result: Result) -> None:
    """PutRecord/s with `tails` open audit StreamEvents (operator, live) vs none, alternating runs.

    The tails run in a child process of their own (:func:`open_tails`), ended after each run: that cancels them.
    A tail the audit service refuses (its stream limits) is counted and printed, not hidden.
    """
    received, refused = [0], collections.Counter()
    for _ in range(runs):
        result.baseline.append(closed_loop(workload.put, clients, seconds)[0] / seconds)
        # The tails live in a child process (bench.tail_drain), as an operator's would: their client threads
        # do not share the writers' GIL, so the figure is what the services pay, not the bench's own client.
        drainer = open_tails(network, tails)
        result.values.append(closed_loop(workload.put, clients, seconds)[0] / seconds)
        summary = close_tails(drainer)
        received[0] += int(summary.get("events", 0))
        refused.update(summary.get("refused", {}))
    refusals = sum(refused.values())
    if refusals:
        # Fewer tails than asked were open: the figure is not the one the issue names, whatever the rates say.
        status = refused.most_common(1)[0][0]
        result.skipped = f"not measured: {refusals} of {tails * runs} tails refused"
        result.note += f"; {refusals} of {tails * runs} tails refused ({status})"
        print(f"  ! {refusals} of {tails * runs} audit tails refused by the audit service: {status}")
    print(f"  PutRecord/s, {clients} clients, {tails} audit tails opened: {spread(result.values)}/s, none: "
          f"{spread(result.baseline)}/s ({received[0]:,} events streamed to the tails)")


def bulk_import_figure(import_call: Callable[[str, list[bytes]], object] | None, why_missing: str,
                       patient_ids: list[str], payloads: list[bytes], resources_per_call: int, runs: int,
                       result: Result) -> None:
    """Resources/s of bulk import: import_call(patient_id, [resource JSON, ...]) imports them in one call.

    Each resource becomes its own record (issue 13); the rate counts resources. Skipped with why_missing when
    the SDK has no such call yet.
    """
    if import_call is None:
        result.skipped = why_missing
        print(f"  bulk import: {why_missing}")
        return
    for run in range(runs):
        which = run % len(patient_ids)
        started = time.perf_counter()
        committed = import_call(patient_ids[which], [payloads[which]] * resources_per_call)
        elapsed = time.perf_counter() - started
        # Only committed resources count (an import_call returning no count claims every one).
        result.values.append((committed if isinstance(committed, int) else resources_per_call) / elapsed)
    print(f"  bulk import of {resources_per_call:,} resources per call: {result.values} resources/s")


def write_random_file(path: pathlib.Path, size: int, chunk: int = 8 * 1024 * 1024) -> pathlib.Path:
    """size random bytes (the large record's attachment) written in chunks, never whole in memory."""
    with path.open("wb") as handle:
        left = size
        while left > 0:
            take = min(chunk, left)
            handle.write(os.urandom(take))
            left -= take
    return path


def large_record_figure(store_call: Callable[[str, pathlib.Path], object] | None, why_missing: str,
                        network: LocalNetwork, patient_id: str, source: pathlib.Path, runs: int,
                        result: Result, rss: Result) -> None:
    """MiB/s of store_call(patient_id, path of a large attachment) through the gateway, and records' peak RSS.

    The caller fills result.baseline with the raw MinIO put of the same file. Skipped with why_missing when the
    SDK has no streaming write yet.
    """
    if store_call is None:
        result.skipped = rss.skipped = why_missing
        print(f"  large record: {why_missing}")
        return
    size_mib = source.stat().st_size / (1024 * 1024)
    for _ in range(runs):
        with PeakRss(network.processes["records"].pid) as peak:
            started = time.perf_counter()
            store_call(patient_id, source)
            result.values.append(size_mib / (time.perf_counter() - started))
        rss.values.append(peak.peak)
    print(f"  {size_mib:,.0f} MiB record through the gateway: {result.values} MiB/s, records peak RSS {rss.values} MiB")


def sdk_call(client: CareChainClient, method: str, rpc: str) -> tuple[Callable[..., object] | None, str]:
    """(the SDK method, '') or (None, 'not available: RPC X missing (...)')."""
    why = missing_sdk_call(client, method, rpc)
    return (None, why) if why else (getattr(client, method), "")


def run_records(network: LocalNetwork, workload: Workload, mode: str, concurrencies: list[int], seconds: float,
                runs: int, echo: object, results: dict[str, Result], vault_requests: Callable[[], int] | None = None
                ) -> float:
    """Rates, CPU and counters for PutRecord and GetRecord at each concurrency; returns the best GetRecord/s."""
    extra = {"openbao requests": vault_requests} if vault_requests else None
    best_get = 0.0
    print(f"\n[{mode}] PutRecord / GetRecord, {runs} run(s) x {seconds:.0f} s, load average {load_average():.1f}")
    for clients in concurrencies:
        echo_rates = echo.rates(workload.payload, clients, seconds, runs)  # type: ignore[attr-defined]
        print(f"  baseline: gRPC echo, {clients:2} clients: {spread(echo_rates)}/s")
        for name, operation in (("PutRecord", workload.put), ("GetRecord", workload.get)):
            rates, cpu = rates_and_cpu(network, operation, name, clients, seconds, runs, extra)
            ratio = statistics.median(rates) / statistics.median(echo_rates)
            print(f"  {name}/s, {clients:2} clients: {spread(rates)}/s, {ratio:.3f}x echo")
            if name == "GetRecord":
                best_get = max(best_get, statistics.median(rates))
            if clients == max(concurrencies):
                key = {("embedded", "PutRecord"): "put_embedded", ("embedded", "GetRecord"): "get_embedded",
                       ("backends", "PutRecord"): "put_backends"}.get((mode, name))
                if key:
                    results[key] = Result(rates, echo_rates, note=f"{clients} clients")
                if mode == "embedded":
                    results["cpu_put" if name == "PutRecord" else "cpu_get"].values = cpu
    return best_get


class FhirWorkload:
    """The same writes and reads as :class:`Workload`, through the FHIR REST gateway (issue 15's figure).

    POST /Condition as the hospital, GET /Condition/{id} as the practitioner (purpose TREAT), each with a
    CareChain access token for records, one HTTP session per client thread.
    """

    def __init__(self, network: LocalNetwork, workload: Workload) -> None:
        import requests  # the bench's HTTP client (a test dependency), only when the figure runs

        self._requests = requests
        self._base = network.endpoints.fhir_base_url
        with open_channel(network.endpoints.identity, "identity") as identity:
            tokens = {who: TokenSource.for_signer(identity, client.signer).authorization(audience("records"))
                      for who, client in (("hospital", workload.hospital), ("reader", workload.reader))}
        self._write_headers = {"Authorization": tokens["hospital"], "Content-Type": "application/fhir+json",
                               "Prefer": "return=minimal"}
        self._read_headers = {"Authorization": tokens["reader"], "X-Purpose-Of-Use": "TREAT",
                              "Accept": "application/fhir+json"}
        # Each patient's resource as REST clients send it: the subject is the patient's CareChain pseudonym.
        self._bodies = []
        for patient_id, payload in zip(workload.patient_ids, workload.payloads, strict=True):
            resource = json.loads(payload)
            resource["subject"] = {"reference": f"Patient/{patient_id}"}
            self._bodies.append(json.dumps(resource, separators=(",", ":")).encode())
        self._local = threading.local()
        self._ids: list[str] = []
        self._lock = threading.Lock()

    def _session(self) -> object:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = self._requests.Session()
        return session

    def create(self, index: int) -> None:
        answer = self._session().post(f"{self._base}/{RESOURCE_TYPE}", data=self._bodies[index % len(self._bodies)],
                                      headers=self._write_headers, timeout=30)
        if answer.status_code != 201:
            raise RuntimeError(f"FHIR create answered {answer.status_code}")
        record_id = answer.headers["Location"].split(f"/{RESOURCE_TYPE}/", 1)[1].split("/", 1)[0]
        with self._lock:
            self._ids.append(record_id)

    def read(self, index: int) -> None:
        record_id = self._ids[index % len(self._ids)]
        answer = self._session().get(f"{self._base}/{RESOURCE_TYPE}/{record_id}", headers=self._read_headers,
                                     timeout=30)
        if answer.status_code != 200:
            raise RuntimeError(f"FHIR read answered {answer.status_code}")


def fhir_figures(network: LocalNetwork, workload: Workload, clients: int, seconds: float, runs: int,
                 results: dict[str, Result]) -> None:
    """FHIR create and read rates beside gRPC PutRecord and GetRecord, same network, same clients, same run."""
    fhir = FhirWorkload(network, workload)
    for index in range(len(workload.patient_ids)):  # warm-up: sessions, the gateway's channel, a record each
        fhir.create(index)
    print(f"\n[embedded] FHIR REST gateway vs gRPC, {clients} clients, {runs} run(s) x {seconds:.0f} s "
          "(goal: at least 0.8x)")
    for key, rest, grpc_call, names in (("fhir_create", fhir.create, workload.put, ("FHIR create", "PutRecord")),
                                        ("fhir_read", fhir.read, workload.get, ("FHIR read", "GetRecord"))):
        grpc_rates, _ = rates_and_cpu(network, grpc_call, names[1], clients, seconds, runs)
        rest_rates, _ = rates_and_cpu(network, rest, names[0], clients, seconds, runs)
        ratio = statistics.median(rest_rates) / statistics.median(grpc_rates)
        print(f"  {names[0]}/s: {spread(rest_rates)}/s; gRPC {names[1]}/s: {spread(grpc_rates)}/s; {ratio:.2f}x")
        results[key] = Result(rest_rates, grpc_rates, note=f"{clients} clients")
