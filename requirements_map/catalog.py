"""The requirements catalog: one entry per requirement id of the revision of record, as data.

The catalog (data/catalog.json) holds what the spec file says (title, section, lines, level,
scope) next to what we add in our own words (summary, concepts, how it can be observed, the
scenarios that check it). `check_catalog` compares the first half with a parsed spec file, so
a new spec revision shows up as a list of disagreements instead of silent drift.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from gherkin.errors import ParserError
from gherkin.parser import Parser

from .scope import SCOPE_OF_KIND, SCOPES, infer_scope
from .spec_parser import REQUIREMENT_ID, ParsedSpec

OBSERVABLES = ("http", "process", "worker-report", "build", "documentation")
#: The tag of a scenario that checks a later spec revision's requirements (`@rev-84202fea`).
REVISION_TAG = re.compile(r"rev-[0-9a-f]{7,40}")
_SPEC_FIELDS = ("title", "section", "section_title", "line", "body", "level")


class CatalogError(ValueError):
    """The catalog file or a feature file cannot be read as such."""


@dataclass
class Catalog:
    spec: dict  # revision, path, sha256, lines of the revision of record
    entries: list[dict]

    def by_id(self) -> dict[str, dict]:
        return {entry["id"]: entry for entry in self.entries}

    def to_json(self) -> str:
        return json.dumps({"spec": self.spec, "requirements": self.entries}, indent=1, ensure_ascii=False) + "\n"


def default_path() -> Path:
    return Path(str(resources.files("requirements_map") / "data" / "catalog.json"))


def load_catalog(path: Path | None = None) -> Catalog:
    """Read the catalog (the packaged one unless `path` is given)."""
    path = path or default_path()
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return Catalog(data["spec"], data["requirements"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CatalogError(f"cannot read catalog {path}: {exc}") from exc


def check_catalog(catalog: Catalog, spec: ParsedSpec) -> list[str]:
    """Every way the catalog disagrees with `spec`; empty when they agree.

    Checks: the same ids; per id the title, section, heading line, body span and level; the
    scope derived from the spec's scope statements (or, for an entry whose scope rests on the
    requirement's purpose, that its cited lines exist and the spec alone would say otherwise);
    scope lines; every scope conflict in the spec listed among the entry's contradictions; and
    the catalog's own vocabularies (scope, observable).
    """
    problems = []
    entries = catalog.by_id()
    for rid in spec.requirements.keys() - entries.keys():
        problems.append(f"{rid}: in the spec (line {spec.requirements[rid].line}) but not in the catalog")
    for rid in entries.keys() - spec.requirements.keys():
        problems.append(f"{rid}: in the catalog but not a requirement heading of the spec")
    for rid, req in spec.requirements.items():
        entry = entries.get(rid)
        if entry is not None:
            problems += [f"{rid}: {p}" for p in _entry_problems(entry, req, spec)]
    return sorted(problems)


def _entry_problems(entry: dict, req, spec: ParsedSpec) -> list[str]:
    problems = []
    parsed = {"title": req.title, "section": req.section, "section_title": req.section_title,
              "line": req.line, "body": list(req.body), "level": req.level}
    for name in _SPEC_FIELDS:
        if entry.get(name) != parsed[name]:
            problems.append(f"{name} is {entry.get(name)!r} in the catalog, {parsed[name]!r} in the spec")
    if entry.get("scope") not in SCOPES:
        problems.append(f"scope {entry.get('scope')!r} is not one of {', '.join(SCOPES)}")
    if entry.get("observable") not in OBSERVABLES:
        problems.append(f"observable {entry.get('observable')!r} is not one of {', '.join(OBSERVABLES)}")
    finding = infer_scope(spec, req)
    if entry.get("scope_basis") == "purpose":
        if entry.get("scope") == finding.scope:
            problems.append(f"scope rests on purpose but the spec itself now says {finding.scope}")
        missing = [n for n in entry.get("scope_lines", []) if not _is_scope_evidence(n, req, spec)]
        if missing:
            problems.append(f"scope lines {missing} are not scope statements of the spec")
        disagreeing = [st.line for st in spec.statements if st.line in entry.get("scope_lines", [])
                       and st.kind in SCOPE_OF_KIND and SCOPE_OF_KIND[st.kind] != entry.get("scope")]
        if disagreeing:
            problems.append(f"scope lines {disagreeing} say otherwise than scope {entry.get('scope')}")
    else:
        if entry.get("scope") != finding.scope:
            problems.append(f"scope is {entry.get('scope')} in the catalog, the spec says {finding.scope} "
                            f"(lines {', '.join(map(str, finding.lines))})")
        if entry.get("scope_lines") != list(finding.lines):
            problems.append(f"scope lines are {entry.get('scope_lines')} in the catalog, "
                            f"{list(finding.lines)} in the spec")
    listed = {n for c in entry.get("contradictions", []) for n in c["lines"]}
    unlisted = [line for line, _ in finding.conflicts if line not in listed]
    if unlisted:
        problems.append(f"the spec also gives other scopes at lines {unlisted}; list them under contradictions")
    return problems


def _is_scope_evidence(line: int, req, spec: ParsedSpec) -> bool:
    return req.line <= line <= req.body[1] or any(st.line == line for st in spec.statements)


def feature_tags(features_dir: Path) -> dict[str, list[str]]:
    """Requirement id -> 'file.feature: scenario name' for every scenario tagged with it.

    Feature- and rule-level tags count for every scenario below them.
    """
    found: dict[str, list[str]] = {}
    for label, tags in tagged_scenarios(features_dir):
        for rid in sorted(t for t in tags if REQUIREMENT_ID.fullmatch(t)):
            found.setdefault(rid, []).append(label)
    return found


def later_revision_ids(catalog: Catalog, features_dir: Path) -> dict[str, dict[str, list[str]]]:
    """The ids the feature files tag that the catalog lacks, under the revision tag of their
    scenarios: {'rev-84202fea': {'M0-W-1422': ['file.feature: scenario name', ...]}}.

    Such an id belongs to a later spec revision, so every scenario that tags it must also carry
    that revision's tag (`@rev-84202fea`); one that does not is an error.
    """
    known = catalog.by_id()
    found: dict[str, dict[str, list[str]]] = {}
    for label, tags in tagged_scenarios(features_dir):
        for rid in sorted(t for t in tags if REQUIREMENT_ID.fullmatch(t) and t not in known):
            revisions = sorted(t for t in tags if REVISION_TAG.fullmatch(t))
            if not revisions:
                raise CatalogError(f"{label}: tags {rid}, which is not a requirement of revision "
                                   f"{catalog.spec['revision']}, without the tag of the revision that defines it "
                                   f"(such as @rev-84202fea)")
            for revision in revisions:
                found.setdefault(revision, {}).setdefault(rid, []).append(label)
    return found


def tagged_scenarios(features_dir: Path):
    """('file.feature: scenario name', its tags with those it inherits) for every scenario."""
    for path in sorted(Path(features_dir).glob("*.feature")):
        try:
            document = Parser().parse(path.read_text(encoding="utf-8"))
        except ParserError as exc:
            raise CatalogError(f"{path}: not a Gherkin feature file: {exc}") from exc
        feature = document.get("feature")
        if feature:
            for name, tags in _scenarios(feature["children"], _tag_names(feature)):
                yield f"{path.name}: {name}", tags


def _tag_names(node: dict) -> set[str]:
    return {tag["name"].lstrip("@") for tag in node.get("tags", [])}


def _scenarios(children: list[dict], inherited: set[str]):
    for child in children:
        if "rule" in child:
            yield from _scenarios(child["rule"]["children"], inherited | _tag_names(child["rule"]))
        elif "scenario" in child:
            scenario = child["scenario"]
            example_tags = set().union(*(_tag_names(ex) for ex in scenario.get("examples", [])))
            yield scenario["name"], inherited | _tag_names(scenario) | example_tags


def with_scenarios(catalog: Catalog, tags: dict[str, list[str]]) -> Catalog:
    """A copy of the catalog whose scenarios column is `tags` (ids it lacks are left out: they
    belong to later revisions, see `later_revision_ids`)."""
    entries = [dict(entry, scenarios=tags.get(entry["id"], [])) for entry in catalog.entries]
    return Catalog(catalog.spec, entries)


def derive_catalog(spec: ParsedSpec, revision: str) -> Catalog:
    """A catalog read off a spec file alone (scopes inferred, nothing curated): for revisions
    other than the one of record, whose curated catalog would cite the wrong lines."""
    entries = []
    for req in spec.requirements.values():
        finding = infer_scope(spec, req)
        entries.append({"id": req.id, "title": req.title, "section": req.section, "section_title": req.section_title,
                        "line": req.line, "body": list(req.body), "level": req.level, "scope": finding.scope,
                        "scope_lines": list(finding.lines), "scope_basis": "spec",
                        "contradictions": [{"lines": [line], "note": f"line {line} says {scope}"}
                                           for line, scope in finding.conflicts],
                        "observable": "", "summary": "", "concepts": [], "scenarios": []})
    return Catalog({"revision": revision}, entries)
