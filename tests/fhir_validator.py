"""The HAPI FHIR R4 instance validator (installed by `make tools`) as a session-scoped pytest fixture.

List this module in a test module's ``pytest_plugins`` (as with ``servers_minio``) so the whole session
shares one JVM: starting it and loading the R4 StructureDefinitions takes seconds to a minute on a busy
machine, each resource afterwards a few milliseconds. The Java side is tests/fhir_validator/
FhirValidatorServer.java; it runs fully offline (no terminology server) and reports codes from systems it
cannot check offline (SNOMED CT, LOINC, ...) as warnings, never errors. The terminal summary shows the
start-up time and per-resource cost.

PYTEST_DONT_REWRITE: no assertions here, and test modules import it before pytest loads it as a plugin.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from carechain.dev.backends.tools import tools_dir

ERROR_SEVERITIES = frozenset({"error", "fatal"})
# The machine's cores are shared: serial GC (the validator is single-threaded), and only the quick C1 JIT,
# which halved the CPU time of start-up plus ~70 validations (47 s -> 25 s) with identical results.
JVM_OPTIONS = ("-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xms256m", "-Xmx1g", "-Xss8m")


@dataclass(frozen=True)
class Issue:
    """One OperationOutcome-style issue from HAPI: severity, FHIRPath location, message."""

    severity: str
    location: str
    message: str
    message_id: str

    def __str__(self) -> str:
        return f"{self.severity} at {self.location or '?'}: {self.message}"


@dataclass(frozen=True)
class Outcome:
    """HAPI's verdict on one resource."""

    issues: tuple[Issue, ...]
    millis: int

    @property
    def errors(self) -> tuple[Issue, ...]:
        """The error- and fatal-level issues (what makes the resource invalid)."""
        return tuple(issue for issue in self.issues if issue.severity in ERROR_SEVERITIES)

    @property
    def valid(self) -> bool:
        return not self.errors


@dataclass
class HapiValidator:
    """A running FhirValidatorServer: one request line in, one result line out."""

    process: subprocess.Popen[str]
    scratch: pathlib.Path
    log_path: pathlib.Path
    hapi_version: str
    startup_seconds: float
    validated: int = 0
    validation_millis: int = 0
    _files: int = field(default=0, repr=False)

    def validate(self, resource: dict[str, Any] | bytes) -> Outcome:
        """Validate a resource: a dict (sent as one JSON line) or exact bytes (sent as a file, BOM and all)."""
        if isinstance(resource, dict):
            request = json.dumps(resource, separators=(",", ":"))
        else:
            self._files += 1
            path = self.scratch / f"resource-{self._files}.json"
            path.write_bytes(resource)
            request = str(path)
        reply = self._exchange(request)
        issues = tuple(Issue(i["severity"], i["location"] or "", i["message"] or "", i["messageId"] or "")
                       for i in reply["issues"])
        self.validated += 1
        self.validation_millis += reply["ms"]
        return Outcome(issues, reply["ms"])

    def _exchange(self, request: str) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        try:
            self.process.stdin.write(request + "\n")
            self.process.stdin.flush()
            line = self.process.stdout.readline()
        except (BrokenPipeError, OSError):
            line = ""
        if not line:
            raise RuntimeError(f"the HAPI FHIR validator exited: {_tail(self.log_path)}")
        return json.loads(line)

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.scratch, ignore_errors=True)


def validator_dir() -> pathlib.Path:
    """Where `make tools` installs the validator: <tools dir>/fhir-validator (jars in lib/, classes/)."""
    return tools_dir() / "fhir-validator"


def start_validator(log_dir: pathlib.Path) -> HapiValidator:
    """Start the JVM and wait until the R4 definitions are loaded; fails the test if it is not installed."""
    home = validator_dir()
    java = shutil.which("java")
    if not (home / ".pin").is_file() or not (home / "classes" / "FhirValidatorServer.class").is_file():
        pytest.fail(f"the HAPI FHIR validator is not installed in {home}: run `make tools` "
                    "(fetches it from Maven Central with mvn and compiles it with javac)")
    if java is None:
        pytest.fail("java (17+) is not on PATH; the HAPI FHIR validator needs it")
    log_path = log_dir / "fhir-validator.log"
    started = time.monotonic()
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [java, *JVM_OPTIONS, "-cp", f"{home / 'classes'}:{home / 'lib'}/*", "FhirValidatorServer"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, encoding="utf-8", bufsize=1,
        )
    assert process.stdout is not None
    ready_line = process.stdout.readline()
    if not ready_line:
        process.wait()
        pytest.fail(f"the HAPI FHIR validator did not start: {_tail(log_path)}")
    ready = json.loads(ready_line)
    return HapiValidator(process, pathlib.Path(tempfile.mkdtemp(prefix="fhir-validator-")), log_path,
                         ready["hapi"], time.monotonic() - started)


def _tail(path: pathlib.Path, lines: int = 20) -> str:
    text = path.read_text(errors="replace").splitlines() if path.exists() else []
    return "\n".join(text[-lines:]) or "(no output)"


_STARTED: list[HapiValidator] = []


@pytest.fixture(scope="session")
def hapi_validator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HapiValidator]:
    """One HAPI FHIR R4 validator JVM for the whole test session."""
    validator = start_validator(tmp_path_factory.mktemp("fhir-validator"))
    _STARTED.append(validator)
    try:
        yield validator
    finally:
        validator.close()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Report the JVM start-up and per-resource cost, to keep the conformance tests' budget visible."""
    for validator in _STARTED:
        mean = validator.validation_millis / validator.validated if validator.validated else 0.0
        terminalreporter.write_line(
            f"HAPI FHIR {validator.hapi_version} validator: JVM start + R4 definitions "
            f"{validator.startup_seconds:.1f} s, {validator.validated} resources in "
            f"{validator.validation_millis / 1000:.1f} s ({mean:.0f} ms each)")
