"""Short probe of the ledger write path: CPU-ms per final transaction per validator process.

Starts real ledger service processes (``python -m carechain.ledger``-style, gRPC, auth) on embedded or etcd
ordering, 1 or 3 validators, and has N concurrent clients submit signed RegisterPrincipal transactions with
``ACK_LEVEL_FINAL`` (one per call, or ``--batch`` many per ``SubmitTransactions`` call). Prints the rate (noisy on a
shared machine), and the CPU milliseconds each validator process spent per final transaction (from
/proc/<pid>/stat), which is the figure to compare between runs. With etcd it also prints raw etcd put/s at the same
concurrency. Not a benchmark (bench/ledger.py is); a developer's before/after probe. Usage:

    CARECHAIN_TOOLS_DIR=/work/main/.tools .venv/bin/python scripts/ledger_write_probe.py --orderer etcd --validators 3
"""

from __future__ import annotations

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile
import threading
import time
from concurrent import futures

import grpc

from carechain.common.v1 import common_pb2
from carechain.core.crypto import Ed25519Signer
from carechain.core.layout import audience, service_principal_id, write_public_key
from carechain.core.tokens import ACCESS_TOKEN_TYPE, issue_token
from carechain.dev.backends.process import free_port
from carechain.ledger import transactions
from carechain.ledger.v1 import ledger_pb2, ledger_pb2_grpc
from carechain.runtime.auth import Caller, caller_claims

CHAIN = "carechain-probe"
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def wait_serving(address: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with grpc.insecure_channel(address) as channel:
                grpc.channel_ready_future(channel).result(timeout=1)
                return
        except grpc.FutureTimeoutError:
            if time.monotonic() > deadline:
                raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orderer", choices=["inprocess", "etcd"], default="inprocess")
    parser.add_argument("--validators", type=int, default=1)
    parser.add_argument("--transactions", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--batch", type=int, default=0, help="transactions per SubmitTransactions call (0: unary)")
    parser.add_argument("--profile", type=pathlib.Path, help="py-spy raw output of validator 1 to this file")
    parser.add_argument("--logs", type=pathlib.Path, help="keep the validators' logs in this directory")
    args = parser.parse_args(argv)
    if args.validators > 1 and args.orderer != "etcd":
        parser.error("several validators need --orderer etcd")
    with tempfile.TemporaryDirectory(prefix="carechain-probe-") as directory:
        root = pathlib.Path(directory)
        identity = Ed25519Signer.generate(service_principal_id("identity"))
        submitter = Ed25519Signer.generate(service_principal_id("records"))
        signers = [Ed25519Signer.generate(f"validator-{i}") for i in range(1, args.validators + 1)]
        trust_dir = root / "trust"
        for signer in [identity, submitter, *signers]:
            write_public_key(trust_dir / f"{signer.key_id}.pub", signer.public_key_bytes())
        cluster = None
        env_base = {**os.environ, "CARECHAIN_CHAIN_ID": CHAIN, "CARECHAIN_TRUST_DIR": str(trust_dir),
                    "CARECHAIN_ORDERER": args.orderer, "CARECHAIN_VALIDATORS": ",".join(s.key_id for s in signers),
                    "CARECHAIN_LOG_LEVEL": "INFO" if args.logs else "WARNING", "CARECHAIN_MAX_WORKERS": "64",
                    "CARECHAIN_MAX_CONCURRENT_RPCS": "256"}
        if args.orderer == "etcd":
            from carechain.dev.backends.etcd import EtcdCluster

            cluster = EtcdCluster(root / "etcd", members=3).start()
            env_base.update(cluster.client_env())
        processes: list[subprocess.Popen] = []
        addresses: list[str] = []
        try:
            for signer in signers:
                signer.save(root / f"{signer.key_id}.pem")
                address = f"127.0.0.1:{free_port()}"
                env = {**env_base, "CARECHAIN_LISTEN_ADDRESS": address, "CARECHAIN_VALIDATOR_ID": signer.key_id,
                       "CARECHAIN_SIGNING_KEY_FILE": str(root / f"{signer.key_id}.pem"),
                       "CARECHAIN_DATA_DIR": str(root / signer.key_id), "CARECHAIN_HEALTH_LISTEN_ADDRESS": "",
                       "CARECHAIN_METRICS_LISTEN_ADDRESS": ""}
                processes.append(subprocess.Popen(
                    [sys.executable, "-c", "from carechain.ledger.server import main; main()"], env=env,
                    stdout=subprocess.DEVNULL, stderr=open((args.logs or root) / f"{signer.key_id}.log", "wb")))  # noqa: SIM115
                addresses.append(address)
            for address in addresses:
                wait_serving(address)
            bearer = issue_token(identity, ACCESS_TOKEN_TYPE, caller_claims(
                Caller(submitter.key_id, common_pb2.PRINCIPAL_KIND_SERVICE), audience("ledger")), 3600)[0]
            metadata = [("authorization", f"Bearer {bearer}")]
            channels = [grpc.insecure_channel(a) for a in addresses]
            stubs = [ledger_pb2_grpc.LedgerServiceStub(c) for c in channels]
            count = args.transactions + args.concurrency
            txs = [transactions.sign_transaction(transactions.new_body(CHAIN, identity.key_id, register_principal=(
                ledger_pb2.RegisterPrincipal(principal_id=f"org-{i}", kind=common_pb2.PRINCIPAL_KIND_ORGANIZATION,
                                             public_key=Ed25519Signer.generate("k").public_key_bytes()))), identity)
                   for i in range(count)]
            batch = max(args.batch, 1)

            def one(index: int) -> None:
                stub = stubs[index % len(stubs)]
                chunk = txs[index * batch:(index + 1) * batch]
                if args.batch:
                    answer = stub.SubmitTransactions(ledger_pb2.SubmitTransactionsRequest(
                        transactions=chunk, ack=ledger_pb2.ACK_LEVEL_FINAL), metadata=metadata, timeout=120)
                    assert all(v.response.valid for v in answer.verdicts), answer
                else:
                    answer = stub.SubmitTransaction(ledger_pb2.SubmitTransactionRequest(
                        transaction=chunk[0], ack=ledger_pb2.ACK_LEVEL_FINAL), metadata=metadata, timeout=120)
                    assert answer.valid, answer.reason

            calls = count // batch
            warm = args.concurrency // batch or 1
            with futures.ThreadPoolExecutor(args.concurrency) as pool:
                list(pool.map(one, range(calls - warm, calls)))  # warm-up: connections, first blocks
                before = [cpu_seconds(p.pid) for p in processes]
                spy = None
                if args.profile:
                    spy = subprocess.Popen(
                        [str(pathlib.Path(sys.executable).parent / "py-spy"), "record", "--gil", "--nonblocking",
                         "-f", "raw", "-o", str(args.profile), "-p", str(processes[0].pid)],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    time.sleep(1)
                started = time.perf_counter()
                list(pool.map(one, range(calls - warm)))
                elapsed = time.perf_counter() - started
                after = [cpu_seconds(p.pid) for p in processes]
                if spy is not None:
                    spy.send_signal(2)
                    spy.wait(30)
            final = (calls - warm) * batch
            head = stubs[0].GetChainHead(ledger_pb2.GetChainHeadRequest(), metadata=metadata, timeout=30).header
            per_tx = [(a - b) * 1000 / final for a, b in zip(after, before, strict=True)]
            print(f"ledger {args.orderer}, {args.validators} validator(s), {args.concurrency} clients, "
                  f"{'batch ' + str(args.batch) if args.batch else 'unary'}: {final / elapsed:8.1f} final tx/s; "
                  f"CPU ms per final tx per validator: {', '.join(f'{c:.2f}' for c in per_tx)} "
                  f"(all: {sum(per_tx):.2f}); {head.log_size / max(head.height, 1):.1f} tx per block")
            for channel in channels:
                channel.close()
            if cluster is not None:
                client = cluster.client()
                lock = threading.Lock()
                done = [0]

                def put(index: int) -> None:
                    client.put(f"/carechain-probe/raw/{index}", b"x" * 300)
                    with lock:
                        done[0] += 1

                started = time.perf_counter()
                with futures.ThreadPoolExecutor(args.concurrency) as pool:
                    list(pool.map(put, range(args.transactions)))
                raw = args.transactions / (time.perf_counter() - started)
                client.close()
                print(f"raw etcd put, {args.concurrency} writers: {raw:8.1f}/s; ledger/raw = "
                      f"{final / elapsed / raw:.2f}x")
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(30)
            if cluster is not None:
                cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
