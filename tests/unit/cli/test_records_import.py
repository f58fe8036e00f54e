"""`carechain records import` offline parts: which files, whose resource, what a log says was committed.

The command against a live network (Synthea files, a Bundle, --resume) is tests/e2e/test_cli_import.py.
"""

from __future__ import annotations

import gzip
import json
import pathlib

import pytest

from carechain.cli.records_import import _files, _logged, _patient_of
from carechain.cli.session import UsageError


def test_a_resource_s_patient_is_its_patient_reference_or_its_own_id(synthea_dir: pathlib.Path) -> None:
    assert _patient_of({"resourceType": "Patient", "id": "p1"}) == "p1"
    assert _patient_of({"resourceType": "Condition", "subject": {"reference": "Patient/p2"}}) == "p2"
    assert _patient_of({"resourceType": "Appointment", "participant": [{"actor": {"reference": "Patient/p3"}}]}) == "p3"
    assert _patient_of({"resourceType": "Organization", "id": "o"}) == ""
    with gzip.open(synthea_dir / "Device.000.ndjson.gz", "rt") as lines:
        assert all(_patient_of(json.loads(line)) for line in lines)
    with gzip.open(synthea_dir / "Practitioner.000.ndjson.gz", "rt") as lines:
        assert not any(_patient_of(json.loads(line)) for line in lines)


def test_a_directory_gives_its_fhir_files_in_name_order_without_the_export_log(synthea_dir: pathlib.Path) -> None:
    files = _files([str(synthea_dir)])
    assert [f.name for f in files] == sorted(f.name for f in files)
    assert "log.ndjson.gz" not in {f.name for f in files} and "README.md" not in {f.name for f in files}
    with pytest.raises(UsageError, match="PATH"):
        _files([str(synthea_dir / "missing.ndjson")])


def test_the_resume_log_holds_what_was_committed_even_after_a_cut_line(tmp_path: pathlib.Path) -> None:
    log = tmp_path / "import.log"
    log.write_text('{"ref": "Patient.000.ndjson.gz:1", "record_id": "r1"}\n{"ref": "Patient.000.ndjson.gz:2", "rec')
    assert _logged(str(log)) == {"Patient.000.ndjson.gz:1"}
    assert _logged(str(tmp_path / "none.log")) == set()
