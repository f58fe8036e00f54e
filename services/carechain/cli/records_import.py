"""``carechain records import``: bulk-import Synthea / FHIR bulk-export NDJSON and Bundle JSON files.

    carechain records import --key-file HOSPITAL_KEY (--patient PSN | --patients MAP.json)
                             [--log FILE [--resume]] [--no-progress] [--json] PATH...

PATH is a file or a directory (its ``*.ndjson``, ``*.ndjson.gz``, ``*.json`` and ``*.json.gz`` files, in
name order). NDJSON lines (one resource each) go to the network as one ImportRecords stream; a Bundle
JSON file (batch or transaction) as one ImportBundle. Each resource's patient is found from its Patient
reference (``Patient/<FHIR id>``; a Patient resource by its id) through ``--patients``, a JSON object
mapping FHIR patient ids to the pseudonyms registration assigned (``{"<fhir id>": "psn-..."}``), or is
``--patient`` for everything. Resources that are not patient data (Organization, Practitioner, ...) or
about a patient not in the map are skipped and counted.

Every resource becomes its own record, so importing a file twice stores it twice. ``--log FILE`` appends
one JSON line per committed resource (``{"ref": "<file>:<line>", "record_id": ...}``); with ``--resume``
the resources the log already holds are not sent again, so an interrupted import can be rerun safely.
Progress (counts, rate, errors) goes to stderr; the summary to stdout. Exit status 1 if any resource failed.
"""

from __future__ import annotations

import argparse
import gzip
import json
import pathlib
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from carechain.cli.session import (
    EXIT_FAILED,
    UsageError,
    add_caller_arguments,
    add_network_arguments,
    add_output_arguments,
    client_of,
    print_json,
    report_errors,
)

SUFFIXES = (".ndjson", ".ndjson.gz", ".json", ".json.gz")
MAX_SHOWN_FAILURES = 20


@dataclass
class Tally:
    """What an import did so far."""

    committed: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    started: float = field(default_factory=time.monotonic)

    @property
    def rate(self) -> float:
        return self.committed / max(time.monotonic() - self.started, 1e-9)

    def line(self) -> str:
        return (f"{self.committed} committed, {sum(self.failed.values())} failed, {sum(self.skipped.values())} "
                f"skipped, {self.rate:.0f}/s")


class Progress:
    """One self-overwriting stderr line, redrawn at most 4 times a second (off when not wanted)."""

    def __init__(self, tally: Tally, enabled: bool) -> None:
        self._tally, self._enabled, self._drawn = tally, enabled, 0.0

    def update(self, force: bool = False) -> None:
        now = time.monotonic()
        if self._enabled and (force or now - self._drawn >= 0.25):
            self._drawn = now
            sys.stderr.write(f"\rimporting: {self._tally.line()}\033[K")
            sys.stderr.flush()

    def clear(self) -> None:
        """Make room for a message on stderr (the next update redraws the line)."""
        if self._enabled:
            sys.stderr.write("\r\033[K")

    def close(self) -> None:
        if self._enabled:
            self.update(force=True)
            sys.stderr.write("\n")


def _files(paths: list[str]) -> list[pathlib.Path]:
    found: list[pathlib.Path] = []
    for name in paths:
        path = pathlib.Path(name)
        if path.is_dir():
            found.extend(sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(SUFFIXES)
                                and not p.name.startswith("log.")))  # bulk-export's own log
        elif path.is_file():
            found.append(path)
        else:
            raise UsageError(f"PATH: {name} is not a file or directory")
    if not found:
        raise UsageError("PATH: no .ndjson, .ndjson.gz, .json or .json.gz files found")
    return found


def _open(path: pathlib.Path) -> IO[bytes]:
    return gzip.open(path, "rb") if path.name.endswith(".gz") else path.open("rb")


def _patient_of(resource: Any) -> str:
    """The FHIR id of the patient a resource is about ("" if none: not patient data)."""
    if not isinstance(resource, dict):
        return ""
    if resource.get("resourceType") == "Patient":
        return str(resource.get("id", ""))
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "reference" and isinstance(value, str) and value.startswith("Patient/"):
                    found.append(value.removeprefix("Patient/"))
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(resource)
    return found[0] if found else ""


class Importer:
    """Sends files to the network, keeping the tally, the progress line and the resume log."""

    def __init__(self, client: Any, args: argparse.Namespace) -> None:
        self.client = client
        self.patients: dict[str, str] = _patient_map(args)
        self.default_patient: str = args.patient
        self.tally = Tally()
        self.progress = Progress(self.tally, not args.no_progress and sys.stderr.isatty() and not args.json)
        self.done = _logged(args.log) if args.resume else set()
        self.log = pathlib.Path(args.log).open("a", encoding="utf-8") if args.log else None

    def pseudonym(self, fhir_id: str) -> str:
        return self.patients.get(fhir_id, "") if self.patients else self.default_patient

    def committed(self, ref: str, record_id: str) -> None:
        self.tally.committed += 1
        if self.log is not None:
            self.log.write(json.dumps({"ref": ref, "record_id": record_id}) + "\n")
            self.log.flush()

    def failed(self, ref: str, code: int, message: str) -> None:
        import grpc

        name = next((c.name for c in grpc.StatusCode if c.value[0] == code), str(code))
        self.tally.failed[name] += 1
        shown = sum(self.tally.failed.values())
        if shown <= MAX_SHOWN_FAILURES:
            self.progress.clear()
            more = " (further failures are only counted)" if shown == MAX_SHOWN_FAILURES else ""
            print(f"{ref}: {name}: {message}{more}", file=sys.stderr)

    def ndjson(self, paths: list[pathlib.Path]) -> None:
        """Every NDJSON line of paths as one ImportRecords stream."""
        def requests() -> Iterator[tuple[str, bytes, str]]:
            for path in paths:
                with _open(path) as lines:
                    for number, line in enumerate(lines, 1):
                        ref = f"{path.name}:{number}"
                        if not line.strip() or ref in self.done:
                            continue
                        patient = self._patient_for(line)
                        if patient:
                            yield patient, line.rstrip(b"\r\n"), ref
                        self.progress.update()

        for result in self.client.import_records(requests()):
            if result.code == 0:
                self.committed(result.client_ref, result.record_id)
            else:
                self.failed(result.client_ref, result.code, result.message)
            self.progress.update()

    def _patient_for(self, line: bytes) -> str:
        try:
            resource = json.loads(line)
        except ValueError:  # sent anyway, to the first patient: the server says what is wrong with it
            return self.default_patient or next(iter(self.patients.values()), "")
        fhir_id = _patient_of(resource)
        if not fhir_id:
            self.tally.skipped["not patient data"] += 1
            return ""
        patient = self.pseudonym(fhir_id)
        if not patient:
            self.tally.skipped["patient not in --patients"] += 1
        return patient

    def bundle(self, path: pathlib.Path) -> None:
        """A Bundle JSON file as one ImportBundle."""
        ref = path.name
        if ref in self.done:
            return
        with _open(path) as handle:
            raw = handle.read()
        try:
            bundle = json.loads(raw)
        except ValueError:
            raise UsageError(f"{path}: not JSON (NDJSON files end in .ndjson)") from None
        entries = bundle.get("entry") if isinstance(bundle, dict) else None
        fhir_ids = {_patient_of(e.get("resource")) for e in entries or [] if isinstance(e, dict)} - {""}
        patients = sorted({self.pseudonym(f) for f in fhir_ids} - {""}) or [self.default_patient]
        response = self.client.import_bundle(raw, [p for p in patients if p])
        for result in response.results:
            entry_ref = f"{ref}#entry[{result.index}]"
            if result.code == 0:
                self.committed(entry_ref, result.record_id)
            else:
                self.failed(entry_ref, result.code, result.message)
        if response.failed == 0 and self.log is not None:
            self.log.write(json.dumps({"ref": ref, "bundle": True}) + "\n")
            self.log.flush()
        self.progress.update()

    def close(self) -> None:
        self.progress.close()
        if self.log is not None:
            self.log.close()


def _patient_map(args: argparse.Namespace) -> dict[str, str]:
    if not args.patients:
        return {}
    try:
        mapping = json.loads(pathlib.Path(args.patients).read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"--patients: cannot read {args.patients} as JSON: {exc}") from None
    if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
        raise UsageError('--patients: must be a JSON object {"<FHIR patient id>": "<pseudonym>", ...}')
    return mapping


def _logged(log: str) -> set[str]:
    """The refs an earlier run's log says were committed."""
    path = pathlib.Path(log)
    if not path.exists():
        return set()
    refs = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            refs.add(json.loads(line)["ref"])
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by a crash: that resource is sent again only if not committed
    return refs


@report_errors
def cmd_import(args: argparse.Namespace) -> int:
    """Import NDJSON and Bundle files."""
    if bool(args.patient) == bool(args.patients):
        raise UsageError("give exactly one of --patient PSEUDONYM and --patients MAP.json")
    if args.resume and not args.log:
        raise UsageError("--resume needs --log FILE (the log of the run to resume)")
    files = _files(args.paths)
    with client_of(args) as client:
        importer = Importer(client, args)
        try:
            ndjson = [f for f in files if ".ndjson" in f.name]
            if ndjson:
                importer.ndjson(ndjson)
            for path in files:
                if ".ndjson" not in path.name:
                    importer.bundle(path)
        finally:
            importer.close()
    tally = importer.tally
    elapsed = time.monotonic() - tally.started
    if args.json:
        print_json({"committed": tally.committed, "failed": dict(tally.failed), "skipped": dict(tally.skipped),
                    "seconds": round(elapsed, 3), "per_second": round(tally.rate, 1)})
    else:
        print(f"imported {tally.committed} records in {elapsed:.1f} s ({tally.rate:.0f}/s); "
              f"{sum(tally.failed.values())} failed{_counts(tally.failed)}, "
              f"{sum(tally.skipped.values())} skipped{_counts(tally.skipped)}")
    if tally.failed:
        print(f"to send only what did not commit, rerun with --log {args.log} --resume" if args.log else
              "no --log was given: a rerun stores everything again (use --log FILE, then --resume)", file=sys.stderr)
    return EXIT_FAILED if tally.failed else 0


def _counts(counter: Counter[str]) -> str:
    return f" ({', '.join(f'{k}: {v}' for k, v in sorted(counter.items()))})" if counter else ""


def add_import_command(records_sub: Any) -> None:
    """Add ``carechain records import`` under ``carechain records``."""
    parser = records_sub.add_parser("import", help="bulk-import FHIR NDJSON (Synthea, bulk export) and Bundle files")
    add_network_arguments(parser)
    add_caller_arguments(parser, "the hospital")
    parser.add_argument("--patient", default="", help="the pseudonym every resource belongs to")
    parser.add_argument("--patients", default="", metavar="MAP.json",
                        help='JSON object {"<FHIR patient id>": "<pseudonym>"}: each resource\'s patient')
    parser.add_argument("--log", default="", metavar="FILE", help="append one JSON line per committed resource")
    parser.add_argument("--resume", action="store_true", help="skip the resources --log FILE holds already")
    parser.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    parser.add_argument("paths", nargs="+", metavar="PATH", help="NDJSON / Bundle JSON files or directories")
    add_output_arguments(parser)
    parser.set_defaults(func=cmd_import)
