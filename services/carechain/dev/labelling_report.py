"""The labelling report: every resource of a FHIR NDJSON sample, its categories, and what was left unlabelled.

A code left unlabelled is one no table maps. The report lists each such code once with
how often it occurs, and flags the ones not on the reviewed allow list
(:data:`REVIEWED_NORMAL`, ``reviewed_normal.tsv``: codes a person looked at and judged not
sensitive, and code systems that carry no clinical content). A sample passes when no
unreviewed code is left: a new code must be added to a table or, after review, to the list.

Run it as ``python -m carechain.dev.labelling_report DIR`` (it prints the report and exits 1 on
unreviewed codes); the unit tests run it over the vendored Synthea sample.
"""

from __future__ import annotations

import collections
import gzip
import json
import pathlib
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from carechain.labels.sensitivity import canonical_system, category_name, explain

REVIEWED_FILE = pathlib.Path(__file__).with_name("reviewed_normal.tsv")


def _load_reviewed(path: pathlib.Path) -> tuple[frozenset[str], frozenset[tuple[str, str]]]:
    """(whole systems, (system, code) pairs) from the TSV: system, code or *, display, reason."""
    systems, codes = set(), set()
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        system, code = line.split("\t")[:2]
        if code == "*":
            systems.add(canonical_system(system))
        else:
            codes.add((canonical_system(system), code))
    return frozenset(systems), frozenset(codes)


REVIEWED_SYSTEMS, REVIEWED_NORMAL = _load_reviewed(REVIEWED_FILE)


def is_reviewed(system: str, code: str) -> bool:
    """True when an unlabelled code was reviewed as not sensitive (or its system carries no clinical content)."""
    system = canonical_system(system)
    return system in REVIEWED_SYSTEMS or (system, code) in REVIEWED_NORMAL


@dataclass
class ResourceLine:
    """One resource in the report."""

    source: str
    resource_type: str
    resource_id: str
    categories: list[str]
    by: list[str]  # where the categories came from: code, text, meta.security


@dataclass
class Report:
    """What the labeller found over a sample."""

    resources: list[ResourceLine] = field(default_factory=list)
    unlabelled: collections.Counter[tuple[str, str, str]] = field(default_factory=collections.Counter)

    @property
    def unreviewed(self) -> list[tuple[str, str, str]]:
        """Codes left unlabelled that nobody reviewed: each is a possible miss."""
        return sorted(key for key in self.unlabelled if not is_reviewed(key[0], key[1]))

    def category_counts(self) -> collections.Counter[str]:
        """How many resources carry each category."""
        return collections.Counter(name for line in self.resources for name in line.categories)

    def render(self) -> str:
        """The report as text: summary, unreviewed codes, then one line per resource."""
        out = [f"# Labelling report: {len(self.resources)} resources"]
        out += [f"{name}\t{count}" for name, count in sorted(self.category_counts().items())]
        out.append(f"# Unlabelled codes: {len(self.unlabelled)} distinct, {len(self.unreviewed)} not reviewed")
        out += [f"UNREVIEWED\t{s}\t{c}\t{d}\t{self.unlabelled[(s, c, d)]}" for s, c, d in self.unreviewed]
        out.append("# Resources")
        out += [f"{line.source}\t{line.resource_type}/{line.resource_id}\t{','.join(line.categories)}"
                f"\t{','.join(line.by)}" for line in self.resources]
        return "\n".join(out) + "\n"


def _resources(paths: Iterable[pathlib.Path]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path in paths:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as lines:
            for line in lines:
                if line.strip():
                    yield path.name, json.loads(line)


def build_report(paths: Iterable[pathlib.Path]) -> Report:
    """Label every resource of the NDJSON files (bulk-export logs and OperationOutcomes are skipped)."""
    report = Report()
    for source, resource in _resources(paths):
        if not isinstance(resource.get("resourceType"), str) or resource["resourceType"] == "OperationOutcome":
            continue
        findings = explain(resource)
        by = [name for name, found in (("code", findings.coded), ("text", findings.text),
                                       ("meta.security", findings.incoming)) if found]
        report.resources.append(ResourceLine(source, str(resource.get("resourceType")), str(resource.get("id", "")),
                                             [category_name(c) for c in findings.categories], by))
        for system, code, display in findings.unlabelled_codes:
            report.unlabelled[(system, code, display)] += 1
    return report


def main(argv: list[str] | None = None) -> int:
    """Print the report of a directory of NDJSON files; exit 1 when a code is left unreviewed."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m carechain.dev.labelling_report DIR", file=sys.stderr)
        return 2
    report = build_report(sorted(pathlib.Path(args[0]).glob("*.ndjson*")))
    sys.stdout.write(report.render())
    return 1 if report.unreviewed else 0


if __name__ == "__main__":
    raise SystemExit(main())
