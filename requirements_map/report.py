"""Coverage report: every requirement of the catalog with its scope, scenarios and outcome.

Outcomes:
- passed / failed: from the scenarios tagged with the id (any failure fails it; a failed
  scenario that is not tagged informational fails its requirement whatever the catalog's scope,
  as the harness's verdict does: M0-W-1340's SIGTERM sentence is an M0 success criterion);
- outdated: its scenarios passed, but they were checked against an older wording of it than the
  spec under test (requirements_map.outdated); the diff is shown. Any other outcome of such a
  requirement carries the same diff;
- not run: every scenario was skipped (the skip reasons are shown), or none of its scenarios is
  in these results (a run narrowed with -k);
- not observable: the harness said so (tag @not-observable or a skip reason saying it cannot
  be verified), or the requirement is about the build, the documents or the worker's insides
  (catalog 'observable');
- deferred, informational: the requirement is not in M0 (deferred-M1, M2+, removed), or its
  scenarios are tagged @deferred-M1 / @informational; their results are shown, never counted
  as failures;
- uncovered: no scenario and no reason. For an M0 requirement this is a gap, shown loudly.

A scenario tagged @deferred-M1, @informational, @optional or with a later revision's tag
(@rev-84202fea) measures and reports: when it misses, it shows as `informational`, never as a
failure. Ids that only a later spec revision defines are listed apart, under that revision.

Spec findings (requirements_map.findings) have a section of their own, held against the spec
file of the report, and are named beside each requirement they touch.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from jinja2 import Environment, PackageLoader, StrictUndefined

from .catalog import REVISION_TAG, Catalog, load_catalog
from .findings import Finding, finding_markdown, finding_problems, load_findings
from .outdated import Outdated, outdated_requirements
from .results import ScenarioResult, read_results, recorded_worker
from .scope import SCOPES
from .spec_parser import REQUIREMENT_ID
from .spec_source import load_spec

OUTCOMES = ("passed", "failed", "outdated", "not run", "not observable", "deferred, informational", "uncovered")
_INFORMATIONAL_TAGS = {"deferred-M1", "deferred", "informational", "M1", "M2+", "optional"}
_NOT_OBSERVABLE_TAG = "not-observable"
_NOT_OBSERVABLE_WORDS = ("not verifiable", "not observable", "cannot be verified", "can't be verified")
_OBSERVABLE_REASON = {
    "build": "a property of the implementation's source, build or own test suite; a running worker does not show it",
    "documentation": "met by the worker's documents; check by reading them",
    "worker-report": "happens inside the worker process (CUDA context, load steps): only the worker's own tests "
                     "show it; the harness sees its effects through /health and the VRAM scenarios",
}


class ReportError(ValueError):
    """The results do not belong to this catalog."""


@dataclass
class RequirementOutcome:
    id: str
    title: str
    section: str
    section_title: str
    line: int
    scope: str
    observable: str
    outcome: str
    reason: str
    gap: bool
    scenarios: list[dict] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)  # ids of the spec findings that touch it
    outdated: Outdated | None = None


@dataclass
class LaterOutcome:
    """A requirement that only a later spec revision defines: informational for this one."""

    id: str
    revision: str  # the revision tag of its scenarios, `rev-84202fea`
    outcome: str  # passed / failed / not run
    reason: str
    scenarios: list[dict]


@dataclass
class CoverageReport:
    worker: str
    spec: dict
    generated: str
    sources: list[str]
    requirements: list[RequirementOutcome]
    untagged: list[str]  # scenarios that name no requirement id
    later: list[LaterOutcome] = field(default_factory=list)
    findings: list[dict] = field(default_factory=list)  # each finding, with `problems` against the spec file
    notes: list[str] = field(default_factory=list)  # what the report could not check, and why

    def totals(self, key: str) -> dict[str, Counter]:
        """Outcome counts grouped by `key` ('scope' or 'section'), in scope order or spec order.

        Sections are named by number and title, since the spec numbers two sections "9."."""
        grouped: dict[str, Counter] = {}
        requirements = sorted(self.requirements, key=lambda r: SCOPES.index(r.scope)) if key == "scope" \
            else self.requirements
        for req in requirements:
            group = req.scope if key == "scope" else f"{req.section} {req.section_title}"
            grouped.setdefault(group, Counter())[req.outcome] += 1
        return grouped

    @property
    def gaps(self) -> list[RequirementOutcome]:
        return [r for r in self.requirements if r.gap]


def build_report(results: list[ScenarioResult], catalog: Catalog, *, worker: str, spec: dict,
                 sources: list[str], findings: list[dict] = (), outdated: dict[str, Outdated] | None = None,
                 notes: list[str] = ()) -> CoverageReport:
    """Join scenario results with the catalog. Ids the catalog lacks are listed under the
    revision tag of their scenarios; without one, they raise ReportError. `findings` (as JSON,
    with their problems against the spec file) are named beside the requirements they touch;
    `outdated` marks the requirements whose scenarios were checked against another wording."""
    entries = catalog.by_id()
    tagged = [(r, {t for t in r.tags if REQUIREMENT_ID.fullmatch(t)}) for r in results]
    later: dict[tuple[str, str], list[ScenarioResult]] = {}
    unknown = set()
    for result, ids in tagged:
        revisions = sorted(t for t in result.tags if REVISION_TAG.fullmatch(t))
        for rid in ids - entries.keys():
            if not revisions:
                unknown.add(rid)
            for revision in revisions:
                later.setdefault((revision, rid), []).append(result)
    if unknown:
        raise ReportError(f"the results tag requirement ids that are not in the catalog of spec revision "
                          f"{catalog.spec['revision']}: {', '.join(sorted(unknown))}, on scenarios without "
                          f"the tag of a later revision (@rev-...). Were they produced against another spec "
                          f"revision or catalog?")
    outcomes = []
    for entry in catalog.entries:
        mine = [r for r, ids in tagged if entry["id"] in ids]
        outcome = _outdated(_outcome(entry, mine), (outdated or {}).get(entry["id"]))
        outcome.findings = [f["id"] for f in findings if entry["id"] in f["requirements"]]
        outcomes.append(outcome)
    untagged = sorted(f"{r.feature}: {r.name}" for r, ids in tagged if not ids)
    return CoverageReport(worker, spec, datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), sources, outcomes,
                          untagged, [_later_outcome(rid, revision, scenarios)
                                     for (revision, rid), scenarios in sorted(later.items())],
                          list(findings), list(notes))


def _outdated(outcome: RequirementOutcome, outdated: Outdated | None) -> RequirementOutcome:
    """A passed requirement whose scenarios were checked against another wording is outdated."""
    if outdated is None:
        return outcome
    outcome.outdated = outdated
    if outcome.outcome == "passed":
        outcome.outcome = "outdated"
        outcome.reason = (f"its scenarios passed, but were checked against revision {outdated.checked}; "
                          f"its text differs in {outdated.spec}" + (f"; {outcome.reason}" if outcome.reason else ""))
    return outcome


def _informational(scenario: ScenarioResult) -> bool:
    """Whether the scenario measures and reports rather than decides (by its tags or its run)."""
    return (scenario.outcome == "informational" or bool(scenario.tags & _INFORMATIONAL_TAGS)
            or any(REVISION_TAG.fullmatch(t) for t in scenario.tags))


def _shown(scenario: ScenarioResult) -> dict:
    """A scenario as the report lists it; an informational one that missed is `informational`."""
    missed = scenario.outcome == "failed" and _informational(scenario)
    return {"name": scenario.name, "feature": scenario.feature,
            "outcome": "informational" if missed else scenario.outcome, "reason": scenario.reason,
            "tags": sorted(scenario.tags)}


def _later_outcome(rid: str, revision: str, scenarios: list[ScenarioResult]) -> LaterOutcome:
    outcomes = {s.outcome for s in scenarios}
    outcome = next((o for o in ("failed", "passed") if o in outcomes), "not run")
    reason = "; ".join(dict.fromkeys(f"{s.name}: {s.reason}" for s in scenarios if s.outcome != "passed"))
    return LaterOutcome(rid, revision, outcome, reason, [_shown(s) for s in scenarios])


def _outcome(entry: dict, scenarios: list[ScenarioResult]) -> RequirementOutcome:
    shown = [_shown(s) for s in scenarios]
    base = {"id": entry["id"], "title": entry["title"], "section": entry["section"],
            "section_title": entry["section_title"], "line": entry["line"],
            "scope": entry["scope"], "observable": entry["observable"], "scenarios": shown}
    counted = [s for s in scenarios if not _informational(s)]
    failed = [s for s in counted if s.outcome == "failed"]
    if failed:  # a scenario that decides failed whatever the catalog's scope: the harness's verdict says so too
        return RequirementOutcome(**base, outcome="failed", reason="; ".join(
            f"{s.name}: {s.reason}" if s.reason else s.name for s in failed), gap=False)
    if entry["scope"] not in ("M0", "M0-optional") or (scenarios and not counted):
        ran = Counter(s["outcome"] for s in shown)
        summary = ", ".join(f"{n} {o}" for o, n in sorted(ran.items())) or "no scenario"
        return RequirementOutcome(**base, outcome="deferred, informational",
                                  reason=f"scope {entry['scope']}; {summary}" if entry["scope"] not in
                                  ("M0", "M0-optional") else f"scenarios tagged informational; {summary}", gap=False)
    if any(s.outcome == "passed" for s in counted):
        skipped = [s for s in counted if s.outcome == "skipped"]
        note = f"{len(skipped)} scenario(s) not run" if skipped else ""
        return RequirementOutcome(**base, outcome="passed", reason=note, gap=False)
    if counted:
        reasons = "; ".join(dict.fromkeys(s.reason or "skipped without a reason" for s in counted))
        blind = all(_NOT_OBSERVABLE_TAG in s.tags or any(w in s.reason.lower() for w in _NOT_OBSERVABLE_WORDS)
                    for s in counted)
        return RequirementOutcome(**base, outcome="not observable" if blind else "not run", reason=reasons,
                                  gap=False)
    if entry["scenarios"]:
        return RequirementOutcome(**base, outcome="not run", gap=False, reason=(
            f"not in these results: none of its {len(entry['scenarios'])} scenario(s) ran (a narrowed run?)"))
    if entry["observable"] in _OBSERVABLE_REASON:
        return RequirementOutcome(**base, outcome="not observable", reason=_OBSERVABLE_REASON[entry["observable"]],
                                  gap=False)
    optional = entry["scope"] == "M0-optional"
    return RequirementOutcome(**base, outcome="uncovered",
                              reason="optional in M0; no scenario" if optional else
                              "GAP: an M0 requirement with no scenario and no reason", gap=not optional)


def write_reports(results_paths, out_dir, *, worker: str | None = None, spec=None,
                  catalog: Catalog | None = None) -> dict[str, Path]:
    """Read results files, write coverage.md, coverage.json and coverage.html into `out_dir`.

    The worker is named by `worker`, else as the harness recorded it in the JUnit XML.

    `spec` is an optional spec file path; when given, the report names its revision (and warns
    on stderr if it is not the pinned one). Returns the paths written. Raises ResultsError,
    ReportError or SpecSourceError with a message for the user.
    """
    catalog = catalog or load_catalog()
    spec_identity = dict(catalog.spec)
    results = read_results(list(results_paths))
    findings = load_findings()
    outdated, notes, problems = {}, [], {}
    if spec is not None:
        loaded = load_spec(spec)
        spec_identity.update(file=str(loaded.path), file_sha256=loaded.sha256, file_revision=loaded.revision)
        outdated, notes = outdated_requirements(results, loaded, catalog.spec["revision"])
        problems = {f.id: finding_problems(f, loaded.parsed) for f in findings}
    else:
        notes.append("no spec file given: findings and outdated coverage not checked against one")
    sources = [str(p) for p in results_paths]
    worker = worker or recorded_worker(list(results_paths)) or "unnamed worker"
    report = build_report(results, catalog, worker=worker, spec=spec_identity, sources=sources,
                          findings=[_finding_json(f, problems.get(f.id, [])) for f in findings],
                          outdated=outdated, notes=notes)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {"markdown": out / "coverage.md", "json": out / "coverage.json", "html": out / "coverage.html"}
    written["markdown"].write_text(render_markdown(report), encoding="utf-8")
    written["json"].write_text(json.dumps(as_json(report), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    written["html"].write_text(render_html(report), encoding="utf-8")
    return written


def _finding_json(finding: Finding, problems: list[str]) -> dict:
    return {**finding.as_json(), "problems": problems}


def as_json(report: CoverageReport) -> dict:
    return {"worker": report.worker, "spec": report.spec, "generated": report.generated,
            "sources": report.sources, "gaps": [r.id for r in report.gaps],
            "totals": {"by_scope": _plain(report.totals("scope")), "by_section": _plain(report.totals("section"))},
            "requirements": [asdict(r) for r in report.requirements], "untagged_scenarios": report.untagged,
            "later_revisions": [asdict(r) for r in report.later], "findings": report.findings,
            "notes": report.notes}


def _plain(grouped: dict[str, Counter]) -> dict[str, dict[str, int]]:
    return {group: {o: counts[o] for o in OUTCOMES if counts[o]} for group, counts in grouped.items()}


def _header_lines(report: CoverageReport) -> list[str]:
    spec = report.spec
    line = f"Spec revision {spec['revision']} (`{spec['path']}`, sha256 {spec['sha256'][:16]}…)"
    if "file_revision" in spec:
        line += f"; spec file used: `{spec['file']}`, {spec['file_revision']}"
    return [f"Worker under test: **{report.worker}**", "", line, "",
            f"Results: {', '.join(f'`{s}`' for s in report.sources)}; generated {report.generated}."]


def render_markdown(report: CoverageReport) -> str:
    out = ["# M0 conformance coverage", ""] + _header_lines(report) + [""]
    if report.gaps:
        out += [(f"> **GAPS: {len(report.gaps)} M0 requirement(s) have no scenario and no reason:** "
                 f"{', '.join(r.id for r in report.gaps)}"), ""]
    out += [f"> Note: {_md(note)}" for note in report.notes] + ([""] if report.notes else [])
    for key, title in (("scope", "scope"), ("section", "spec section")):
        out += [f"## Totals per {title}", "", "| " + title + " | " + " | ".join(OUTCOMES) + " | total |",
                "| --- " * (len(OUTCOMES) + 2) + "|"]
        for group, counts in report.totals(key).items():
            out.append(f"| {group} | " + " | ".join(str(counts[o] or "") for o in OUTCOMES)
                       + f" | {sum(counts.values())} |")
        out.append("")
    out += ["## Requirements", "", "| id | title | § | scope | outcome | scenarios | reason | findings |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in report.requirements:
        outcome = f"**{r.outcome.upper()} (GAP)**" if r.gap else r.outcome
        scenarios = "<br>".join(f"{s['name']} ({s['outcome']})" for s in r.scenarios) or "—"
        out.append(f"| {r.id} | {_md(r.title)} | {r.section} | {r.scope} | {outcome} | {_md(scenarios)} | "
                   f"{_md(r.reason) or '—'} | {', '.join(f'[{f}](#{f})' for f in r.findings) or '—'} |")
    outdated = [r for r in report.requirements if r.outdated]
    if outdated:
        out += ["", "## Outdated coverage", "",
                "Scenarios checked against an older wording than the spec under test: re-read the requirement, "
                "update the scenarios, then their @checked- tag.", ""]
        for r in outdated:
            out += [f"### {r.id} ({r.outcome}): checked against {r.outdated.checked}, "
                    f"under test {r.outdated.spec}", "", "```diff", *r.outdated.diff, "```", ""]
    if report.later:
        out += ["", f"## Requirements of later spec revisions (informational for {report.spec['revision']})", "",
                "| id | revision | outcome | scenarios | reason |", "| --- | --- | --- | --- | --- |"]
        for r in report.later:
            scenarios = "<br>".join(f"{s['name']} ({s['outcome']})" for s in r.scenarios)
            out.append(f"| {r.id} | {r.revision} | {r.outcome} | {_md(scenarios)} | {_md(r.reason) or '—'} |")
    if report.findings:
        out += ["", "## Spec findings", "",
                "Places where the spec contradicts itself or the models it names, with the evidence "
                "(requirements_map/data/findings.json).", ""]
        for f in report.findings:
            out += finding_markdown(f)
    if report.untagged:
        out += ["", "## Scenarios without a requirement tag", ""] + [f"- {_md(s)}" for s in report.untagged]
    return "\n".join(out) + "\n"


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


_TEMPLATES = Environment(loader=PackageLoader("requirements_map", "templates"), autoescape=True,
                         undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def render_html(report: CoverageReport) -> str:
    """One self-contained page (inline CSS, no scripts, no external resources), from
    templates/coverage.html.j2."""
    return _TEMPLATES.get_template("coverage.html.j2").render(
        report=report, outcomes=OUTCOMES, totals=[("scope", report.totals("scope")),
                                                  ("spec section", report.totals("section"))],
        css_class=lambda outcome: outcome.replace(", ", "-").replace(" ", "-"))


def render_worker_matrix(coverages: dict[str, dict]) -> str:
    """Markdown: the outcome of every requirement (rows) for every worker of a fleet (columns),
    from each worker's coverage report as `as_json` gives it, keyed by the worker's name. Rows
    are the requirements some worker's scenarios ran or that are M0; a row whose workers
    disagree is marked, since one of them is then not conformant where the other is."""
    names = list(coverages)
    outcomes = {name: {r["id"]: r for r in coverage["requirements"]} for name, coverage in coverages.items()}
    ids = list(dict.fromkeys(r["id"] for coverage in coverages.values() for r in coverage["requirements"]))
    rows = []
    for rid in ids:
        cells = [outcomes[name].get(rid, {}).get("outcome", "—") for name in names]
        scope = next(outcomes[name][rid]["scope"] for name in names if rid in outcomes[name])
        if scope != "M0" and all(c in ("uncovered", "deferred, informational", "—") for c in cells):
            continue
        mark = " ≠" if len(set(cells)) > 1 else ""
        rows.append(f"| {rid}{mark} | {scope} | " + " | ".join(cells) + " |")
    lines = ["# Requirement x worker", "", *(f"- w{i}: {name}" for i, name in enumerate(names, 1)), "",
             "| requirement | scope | " + " | ".join(f"w{i}" for i in range(1, len(names) + 1)) + " |",
             "| --- | --- | " + " | ".join("---" for _ in names) + " |", *rows, ""]
    for i, name in enumerate(names, 1):
        counts = Counter(r["outcome"] for r in coverages[name]["requirements"])
        lines.append(f"w{i}: " + ", ".join(f"{counts[o]} {o}" for o in OUTCOMES if counts[o]))
    if any(" ≠ |" in row for row in rows):
        lines += ["", "≠: the workers' outcomes differ."]
    return "\n".join(lines) + "\n"
