"""The ``carechain`` command.

    carechain up [--data-dir DIR]          start the six services and the FHIR gateway on localhost (Ctrl-C stops them)
    carechain demo [--data-dir DIR] [--story consent|network|all]
                                           run a story against the running network (network: one
                                           patient's record across hospitals, docs/network-record.md)
    carechain ledger verify [--data-dir DIR] [--validator NAME] [--validators IDS] [--quorum N] [--from-checkpoint]
                            [--checkpoint-file FILE] [--peer ADDR ...]
                                           verify a ledger copy offline (names the first bad block; every
                                           block needs a quorum certificate of the configured validators),
                                           check it extends the last checkpoint this user saw, and
                                           cross-check its headers against other validators
    carechain audit history|tail|verify|reviews|resolve ...
                                           a patient's accounting of disclosures, the live audit stream,
                                           audit verification, the break-glass review queue
    carechain keys new|set-id|show ...     your own Ed25519 key file (0600) and its public key
    carechain principals register-hospital|register-practitioner|register-patient ...
                                           onboarding, as the operator or a hospital
    carechain records put|get ...          store a FHIR resource, read a record as consent permits
    carechain consent grant|list|revoke|export ...
                                           a patient's consents, from and to FHIR Consent files
    carechain delegates add|remove|list    a patient's guardians and proxies
    carechain history                      a patient's accounting of disclosures
    carechain smart keygen|register-keys   a hospital's SMART Backend Services client keys (JWKS)
                                           (these act with --key-file against --data-dir's network.json
                                           or --endpoints FILE; --json; errors: one line, exit 1 refused
                                           or failed, 2 usage)
    carechain serve SERVICE                run one service (or fhir, the FHIR REST gateway), configured by
                                           CARECHAIN_* variables
    carechain admin vault-bootstrap ...    prepare Vault/OpenBao: engines, policies, roles, signing keys
    carechain admin reconcile [--dry-run]  remove (or report) what crashed writes left behind
"""

from __future__ import annotations

import argparse
import importlib
import os
import pathlib
import signal
import sys
import threading
import time
from typing import Any

from carechain.core.layout import SERVICES, NetworkLayout

DEFAULT_DATA_DIR = pathlib.Path("var/network")
# `ledger verify` of a running validator's copy: how often a block without certificate is looked at again.
PENDING_RETRIES = 3


def _data_dir(args: argparse.Namespace) -> pathlib.Path:
    return pathlib.Path(args.data_dir)


def cmd_serve(args: argparse.Namespace) -> int:
    importlib.import_module(f"carechain.{args.service}.server").main()
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from carechain.dev.localnet import LocalNetwork

    data_dir = _data_dir(args)
    backends = None
    if args.with_backends:
        from carechain.dev.backends.stack import BackendStack

        backends = BackendStack(data_dir / "backends", etcd_members=args.etcd_members)
    elif args.validators > 1:
        print("--validators needs --with-backends (etcd orders the transactions and carries the signatures)",
              file=sys.stderr)
        return 2
    if args.default_ports:
        network = LocalNetwork.with_default_ports(data_dir, tls=args.tls, backends=backends,
                                                  validators=args.validators, fhir=args.fhir)
    else:
        network = LocalNetwork(data_dir, tls=args.tls, backends=backends, validators=args.validators, fhir=args.fhir)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"starting CareChain in {network.layout.root} ...", flush=True)
    endpoints = network.start()
    kind = "OpenBao, MinIO and etcd backends" if backends else "embedded backends"
    print(f"CareChain local network is up ({kind}{', mutual TLS' if args.tls else ''}):")
    for service in SERVICES:
        print(f"  {service:9} {endpoints.address(service)}")
    if len(network.validator_names) > 1:
        for name, validator_id in zip(network.validator_names, network.validator_ids, strict=True):
            print(f"  {name:9} {network.listen_addresses[name]}  ({validator_id})")
    if network.fhir:
        print(f"  {'fhir':9} {network.fhir_base_url}  (FHIR R4 REST gateway: {network.fhir_base_url}/metadata)")
    for backend, address in (backends.describe() if backends else {}).items():
        print(f"  {backend:9} {address}")
    print(f"logs: {network.log_dir}/<service>.log")
    print("metrics: " + " ".join(f"{name}=http://{address}/metrics" for name, address in endpoints.metrics.items()))
    from carechain.cli.session import command

    # The venv's script is usually not on PATH: name it as it can be run from here.
    print(f"try:  {command()} demo --data-dir {data_dir}   (or `make demo`; Ctrl-C here stops the network)",
          flush=True)
    from carechain.dev.localnet import RestartPolicy

    policy = RestartPolicy(max_restarts=args.max_restarts)
    try:
        # A crashed service is restarted with backoff; one that keeps crashing ends `up` with status 1.
        status = network.supervise(stop, policy, say=lambda line: print(line, file=sys.stderr, flush=True))
    finally:
        print("stopping ...", flush=True)
        network.stop()
        print("stopped")
    return status


def cmd_demo(args: argparse.Namespace) -> int:
    from carechain.cli.session import UsageError, command, endpoints_of
    from carechain.dev.demo import run_demo

    layout = NetworkLayout(_data_dir(args))
    try:
        endpoints = endpoints_of(argparse.Namespace(endpoints=None, data_dir=str(layout.root)))
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    ok = True
    if args.story in ("consent", "all"):
        outcome = run_demo(endpoints, layout.operator_signer(), key_dir=layout.root / "demo-keys",
                           command=f"{command()} ", data_dir=args.data_dir)
        ok = outcome.chain_ok
    if args.story in ("network", "all"):
        from carechain.dev.network_story import run_network_story

        if args.story == "all":
            print()
        key_dir = layout.root / "demo-keys" / "network"
        story = run_network_story(endpoints, layout.operator_signer(), key_dir=key_dir, command=f"{command()} ",
                                  data_dir=args.data_dir)
        ok = ok and story.chain_ok and story.audit_ok
    return 0 if ok else 1


def cmd_ledger_verify(args: argparse.Namespace) -> int:
    from carechain.ledger.copy_check import NO_CERTIFICATE, verify_data_dir

    layout = NetworkLayout(_data_dir(args))
    ledger_dir = layout.service_dir(args.validator)
    try:
        validators = _configured_validators(args, layout)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    trusted = _remembered_checkpoint(args, layout, validators, ledger_dir) if args.from_checkpoint else None
    result = verify_data_dir(ledger_dir, layout.trust_dir, validators, trusted)
    for _ in range(PENDING_RETRIES):
        # A running validator's newest block may be committed and still collecting its certificate: look again.
        if result.ok or not result.problem.endswith(NO_CERTIFICATE):
            break
        time.sleep(1.0)
        result = verify_data_dir(ledger_dir, layout.trust_dir, validators, trusted)
    status = 0
    if result.ok:
        final = "" if result.final_height is None else f", final up to block {result.final_height}"
        if trusted is not None:
            print(f"chain OK: {result.blocks_checked} blocks after the remembered checkpoint (block "
                  f"{trusted.height}) verified (hashes, quorum certificates of {', '.join(validators.members)} "
                  f"(quorum {validators.quorum}), Merkle roots and proofs, consistency with the checkpoint{final}; "
                  f"without --from-checkpoint: signatures, contract rules and state from genesis)")
        else:
            print(f"chain OK: {result.blocks_checked} blocks verified (hashes, signatures, quorum certificates of "
                  f"{', '.join(validators.members)} (quorum {validators.quorum}), Merkle roots and proofs, "
                  f"state{final})")
        status = _check_remembered_checkpoint(args, layout, validators, result)
    else:
        print(f"chain BROKEN at block {result.first_bad_height}: {result.problem}")
        status = 1
    if result.evidence_count:
        print(f"evidence of validator misbehaviour kept: {result.evidence_count} (GetEvidence)")
    if args.peer:
        status = max(status, _cross_check(args, layout, ledger_dir))
    return status


def _configured_validators(args: argparse.Namespace, layout: NetworkLayout) -> Any:
    """The validator set to verify against: --validators, else CARECHAIN_VALIDATORS, else the running network's
    configuration (endpoints.json), else svc-ledger alone. Never the set stored in the ledger copy."""
    from carechain.client.endpoints import ENDPOINTS_FILE, Endpoints
    from carechain.ledger.quorum import VALIDATORS_ENV, configured_validator_set

    quorum = args.quorum if args.quorum else None
    if args.validators or os.environ.get(VALIDATORS_ENV):
        return configured_validator_set(args.validators or None, quorum)
    try:
        endpoints = Endpoints.load(layout.root / ENDPOINTS_FILE)
    except FileNotFoundError:
        return configured_validator_set("", quorum)
    return configured_validator_set(endpoints.validator_ids, quorum or endpoints.quorum)


def _remembered_checkpoint(args: argparse.Namespace, layout: NetworkLayout, validators: Any,
                           ledger_dir: pathlib.Path) -> Any:
    """The checkpoint this user last remembered for the copy's network (None: none yet, verify from genesis)."""
    from carechain.client.proofs import CheckpointMemory, LedgerTrust, default_checkpoint_file
    from carechain.core.layout import TrustBundle
    from carechain.ledger.copy_check import TrustedCheckpoint
    from carechain.ledger.sqlite_store import META_CHAIN_ID, LedgerStore

    store = LedgerStore.open_read_only(ledger_dir)
    try:
        chain_id = store.meta(META_CHAIN_ID) or ""
    finally:
        store.close()
    path = pathlib.Path(args.checkpoint_file) if args.checkpoint_file else default_checkpoint_file()
    trust = LedgerTrust(TrustBundle.load(layout.trust_dir), validators, chain_id)
    seen = CheckpointMemory(path).remembered(trust.fingerprint())
    if seen is None:
        print(f"no checkpoint remembered in {path} yet: verifying from genesis")
        return None
    return TrustedCheckpoint(seen.height, seen.tree_size, seen.root)


def _check_remembered_checkpoint(args: argparse.Namespace, layout: NetworkLayout, validators: Any,
                                 result: Any) -> int:
    """Compare the verified chain with the last checkpoint this user saw, then remember its final checkpoint."""
    from carechain.client.proofs import CheckpointMemory, LedgerTrust, VerifiedCheckpoint, default_checkpoint_file
    from carechain.core.errors import IntegrityError
    from carechain.core.layout import TrustBundle

    if result.final_header is None:
        return 0
    header = result.final_header
    path = pathlib.Path(args.checkpoint_file) if args.checkpoint_file else default_checkpoint_file()
    trust = LedgerTrust(TrustBundle.load(layout.trust_dir), validators, header.chain_id)
    checkpoint = VerifiedCheckpoint(header.height, header.log_size, bytes(header.log_root), header.timestamp_ms, ())
    try:
        CheckpointMemory(path).observe_log(trust.fingerprint(), checkpoint, result.log_root_at)
    except IntegrityError as exc:
        print(f"chain REWRITTEN: {exc.message} (checkpoint memory: {path})")
        return 1
    print(f"consistent with the last checkpoint seen; remembered block {header.height} "
          f"(tree size {header.log_size}) in {path}")
    return 0


def _cross_check(args: argparse.Namespace, layout: NetworkLayout, ledger_dir: pathlib.Path) -> int:
    """Compare the local copy with each --peer validator, as the operator."""
    from carechain.client.auth import TokenSource
    from carechain.client.channels import open_channel
    from carechain.client.endpoints import ENDPOINTS_FILE, Endpoints
    from carechain.ledger.copy_check import cross_check
    from carechain.ledger.v1 import ledger_pb2, ledger_pb2_grpc
    from carechain.runtime.peers import PeerStub

    try:
        endpoints = Endpoints.load(layout.root / ENDPOINTS_FILE)
        identity_address, tls = args.identity_address or endpoints.identity, endpoints.client_tls()
    except FileNotFoundError:
        identity_address, tls = args.identity_address, None
    if not identity_address:
        print("cross-check needs the identity service: a running network in --data-dir or --identity-address",
              file=sys.stderr)
        return 2
    identity = open_channel(identity_address, "identity", tls=tls)
    tokens = TokenSource.for_signer(identity, layout.operator_signer())
    status = 0
    try:
        for peer in args.peer:
            with open_channel(peer, "ledger", tokens, tls) as channel:
                stub = PeerStub(f"ledger at {peer}", ledger_pb2_grpc.LedgerServiceStub(channel), 30)
                comparison = cross_check(
                    ledger_dir, peer,
                    lambda stub=stub: stub.GetChainHead(ledger_pb2.GetChainHeadRequest()).header.height,
                    lambda height, stub=stub: stub.GetBlock(ledger_pb2.GetBlockRequest(height=height)),
                )
            if comparison.ok:
                print(f"peer {peer}: {comparison.compared} blocks, same headers")
            else:
                print(f"peer {peer}: DIFFERS at block {comparison.first_difference}: {comparison.problem}")
                status = 1
    finally:
        identity.close()
    return status


def cmd_admin_vault_bootstrap(args: argparse.Namespace) -> int:
    from carechain.admin.vault_bootstrap import run

    return run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="carechain", description="CareChain: consented, audited health records")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run one service (configured by CARECHAIN_* variables)")
    serve.add_argument("service", choices=(*SERVICES, "fhir"), help="a gRPC service, or fhir: the FHIR REST gateway")
    serve.set_defaults(func=cmd_serve)

    up = sub.add_parser("up", help="start the local network (six processes, embedded backends)")
    up.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR), help="where keys and data live (kept across runs)")
    up.add_argument("--random-ports", dest="default_ports", action="store_false",
                    help="use free ports instead of 7100-7105")
    up.add_argument("--with-backends", action="store_true",
                    help="run on real OpenBao (keys, signing), MinIO (blobs) and etcd (ordering, audit) started "
                         "locally from `make tools`; their data stays under <data-dir>/backends")
    up.add_argument("--etcd-members", type=int, default=1, choices=(1, 3, 5),
                    help="etcd cluster size (--with-backends)")
    up.add_argument("--validators", type=int, default=1,
                    help="ledger validators (processes ledger, ledger-2, ...; quorum a majority); "
                         "more than one needs --with-backends")
    up.add_argument("--tls", action="store_true",
                    help="mutual TLS everywhere, with a local CA under <data-dir>/tls (clients get a certificate too)")
    up.add_argument("--max-restarts", type=int, default=5,
                    help="restart a crashed service at most this often in 5 minutes, then stop and exit 1")
    up.add_argument("--no-fhir", dest="fhir", action="store_false",
                    help="do not start the FHIR R4 REST gateway (port 7106, or a free one with --random-ports)")
    up.set_defaults(func=cmd_up)

    demo = sub.add_parser("demo", help="run the demo story against a running local network")
    demo.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR))
    demo.add_argument("--story", choices=("consent", "network", "all"), default="consent",
                      help="consent: one hospital, consent granted, denied, revoked (the default); network: "
                           "one patient's record across three hospitals (docs/network-record.md); all: both")
    demo.set_defaults(func=cmd_demo)

    ledger = sub.add_parser("ledger", help="ledger tools")
    ledger_sub = ledger.add_subparsers(dest="ledger_command", required=True)
    verify = ledger_sub.add_parser("verify", help="verify a ledger copy offline and name the first bad block")
    verify.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR))
    verify.add_argument("--validator", default="ledger",
                        help="which validator's copy under --data-dir (ledger, ledger-2, ...)")
    verify.add_argument("--validators", default="",
                        help="comma-separated validator ids whose quorum certificates count (default: "
                             "CARECHAIN_VALIDATORS, else the running network's, else svc-ledger)")
    verify.add_argument("--quorum", type=int, default=0, help="signatures a block needs (default: a majority)")
    verify.add_argument("--checkpoint-file", default="",
                        help="where the last checkpoint seen is remembered (default: CARECHAIN_CHECKPOINT_FILE, "
                             "else ~/.config/carechain/checkpoints.json)")
    verify.add_argument("--from-checkpoint", action="store_true",
                        help="verify only the blocks after the remembered checkpoint (see --checkpoint-file), "
                             "with a consistency proof to it")
    verify.add_argument("--peer", action="append", default=[],
                        help="host:port of another validator to cross-check headers with (repeatable)")
    verify.add_argument("--identity-address", default="",
                        help="identity service for the operator's token (default: from the running network)")
    verify.set_defaults(func=cmd_ledger_verify)

    from carechain.cli.audit import add_audit_commands

    add_audit_commands(sub, str(DEFAULT_DATA_DIR))

    # The everyday commands of integrators and patients, one module per group.
    from carechain.cli.consent import add_consent_commands
    from carechain.cli.delegates import add_delegates_commands
    from carechain.cli.history import add_history_command
    from carechain.cli.keys import add_keys_commands
    from carechain.cli.patient_links import add_patient_commands
    from carechain.cli.principals import add_principals_commands
    from carechain.cli.records import add_records_commands
    from carechain.cli.smart import add_smart_commands

    add_keys_commands(sub)
    add_principals_commands(sub)
    add_records_commands(sub)
    add_consent_commands(sub)
    add_delegates_commands(sub)
    add_patient_commands(sub)
    add_history_command(sub)
    add_smart_commands(sub)

    from carechain.admin.vault_bootstrap import add_arguments as add_vault_bootstrap_arguments

    admin = sub.add_parser("admin", help="operator tools")
    admin_sub = admin.add_subparsers(dest="admin_command", required=True)
    vault_bootstrap = admin_sub.add_parser(
        "vault-bootstrap", help="enable Transit/KV/AppRole, write per-service policies, roles and signing keys"
    )
    add_vault_bootstrap_arguments(vault_bootstrap)
    vault_bootstrap.set_defaults(func=cmd_admin_vault_bootstrap)
    from carechain.cli.reconcile import add_reconcile_command

    add_reconcile_command(admin_sub, str(DEFAULT_DATA_DIR))
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``carechain`` command."""
    args = build_parser().parse_args(argv)
    sys.exit(args.func(args))
