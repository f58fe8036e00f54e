"""The labelling report over the whole vendored Synthea sample (issue 10): no unreviewed code is left unlabelled."""

from __future__ import annotations

import gzip
import json
import pathlib

from carechain.dev import labelling_report as r
from carechain.labels import sensitivity as s


def test_the_synthea_sample_has_no_unreviewed_unlabelled_code(synthea_dir: pathlib.Path, tmp_path) -> None:
    files = sorted(synthea_dir.glob("*.ndjson.gz"))
    report = r.build_report(files)
    (tmp_path / "labelling-report.tsv").write_text(report.render())
    expected = sum(1 for path in files if not path.name.startswith("log") for _ in gzip.open(path, "rt"))
    assert len(report.resources) == expected  # every resource is in the report
    assert all(line.categories for line in report.resources)
    assert report.unreviewed == [], "codes left unlabelled and not reviewed:\n" + "\n".join(
        "\t".join(code) for code in report.unreviewed)
    counts = report.category_counts()
    # The sample's sensitive findings are labelled (each category it holds is seen).
    for name in ("MENTAL_HEALTH", "SUBSTANCE_USE", "REPRODUCTIVE", "VIOLENCE_ABUSE", "ONCOLOGY", "HIV_STI"):
        assert counts[name] > 0, name
    assert counts["NORMAL"] > 0


def test_the_reviewed_list_holds_no_sensitive_code() -> None:
    for system, code in r.REVIEWED_NORMAL:
        assert s.categorize_code(system, code) is None, (system, code)
    for line in r.REVIEWED_FILE.read_text().splitlines():
        if line and not line.startswith("#"):
            display = line.split("\t")[2]
            assert not s.categorize_text(display), line


def test_an_unknown_code_fails_the_report(tmp_path: pathlib.Path, capsys) -> None:
    sample = tmp_path / "Condition.000.ndjson"
    sample.write_text(json.dumps({"resourceType": "Condition", "id": "c1", "code": {"coding": [
        {"system": "http://snomed.info/sct", "code": "999999999", "display": "Something new"}]}}) + "\n")
    assert r.main([str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "UNREVIEWED\thttp://snomed.info/sct\t999999999" in out
    assert "Condition/c1\tNORMAL" in out
