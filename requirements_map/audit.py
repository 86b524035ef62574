"""Scope audit: for features in plain words, what the spec says about them, with citations.

A feature is matched to concepts of the curated table (data/concepts.json); each concept names
the spec lines that speak of it (regular expressions, evaluated on the spec file at hand), the
requirements that define or prohibit it, and the concepts it is a means to. Every matched line
is quoted with its section and line number together with the scope it claims.

The verdict weighs claims in tiers: §0.0 (the spec's scope decision summary), explicit
prohibitions and the catalog scope of linked requirements first, then the other scope lists
(§0.2, §14.3, §15), then markers in running text. Within a tier the strongest claim wins (prohibited >
removed > deferred to M1 > later milestone > out of scope > in M0 > optional). Claims that
disagree are reported as contradictions: in M0 against not in M0, and different milestones.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from importlib import resources

from .catalog import Catalog
from .scope import words
from .spec_parser import ParsedSpec, ScopeStatement

VERDICTS = ("in M0", "deferred to M1", "out of scope for M0", "later milestone", "not addressed by the spec")
_STRENGTH = {"prohibited": 7, "removed": 6, "deferred-M1": 5, "later": 4, "out-of-scope": 3, "in-m0": 2, "optional": 1}
_VERDICT_OF = {"prohibited": "out of scope for M0", "removed": "out of scope for M0", "deferred-M1": "deferred to M1",
               "later": "later milestone", "out-of-scope": "out of scope for M0", "in-m0": "in M0", "optional": "in M0"}
_CLAIM_TEXT = {"prohibited": "prohibited in M0", "removed": "removed from the project", "deferred-M1": "deferred to M1",
               "later": "later milestone", "out-of-scope": "not in M0", "in-m0": "in M0", "optional": "optional in M0"}
# "prohibits": the requirement forbids the feature in M0; "excludes": it keeps M0 without it
# (batch=1, one model) while scope lists say when it comes; "defines": it is the feature.
_RELATION_CLAIM = {"prohibits": "prohibited", "excludes": "out-of-scope"}
_RELATION_TIER = {"prohibits": 1, "excludes": 2, "defines": 1}
_SCOPE_CLAIM = {"M0": "in-m0", "M0-optional": "optional", "deferred-M1": "deferred-M1", "M2+": "later",
                "removed": "removed"}


class AuditError(ValueError):
    """The audit cannot run: no features, or a broken concept table."""


@dataclass
class Evidence:
    line: int
    section: str
    text: str
    claim: str | None  # a key of _STRENGTH, or None for context
    milestone: str | None
    tier: int  # 1 strongest; 4 = context only
    basis: str  # how the line came in: "direct", "requirement M0-W-1350", "indirect via X"
    concept: str  # the concept whose terms or requirements brought the line in

    @property
    def claim_text(self) -> str:
        if self.claim is None:
            return "context"
        text = _CLAIM_TEXT[self.claim]
        return f"{text} ({self.milestone})" if self.milestone and self.claim == "later" else text


@dataclass
class Contradiction:
    kind: str  # "in M0 vs not in M0", "milestones differ", "requirement note"
    note: str
    lines: list[int]


@dataclass
class FeatureAudit:
    feature: str
    verdict: str
    detail: str
    concepts: list[str]
    indirect: list[str]
    evidence: list[Evidence] = field(default_factory=list)
    false_friends: list[Evidence] = field(default_factory=list)
    requirements: list[dict] = field(default_factory=list)
    contradictions: list[Contradiction] = field(default_factory=list)


def load_concepts() -> list[dict]:
    path = resources.files("requirements_map") / "data" / "concepts.json"
    return json.loads(path.read_text(encoding="utf-8"))["concepts"]


def audit_features(features: list[str], spec: ParsedSpec, catalog: Catalog,
                   concepts: list[dict] | None = None) -> list[FeatureAudit]:
    """Audit each feature against `spec`; raise AuditError for an empty list or blank names."""
    names = [f.strip() for f in features]
    if not names or not all(names):
        raise AuditError("give at least one feature, e.g. m0-conformance audit \"speculative decoding\"")
    table = concepts if concepts is not None else load_concepts()
    by_name = {c["name"]: c for c in table}
    return [_audit_one(name, spec, catalog, table, by_name) for name in names]


def _normal(text: str) -> str:
    return re.sub(r"[\s_\-]+", " ", text.lower()).strip()


def match_concepts(feature: str, table: list[dict]) -> list[dict]:
    """Concepts whose alias occurs in the feature text (as a phrase, ignoring case and dashes)."""
    text = f" {_normal(feature)} "
    return [c for c in table
            if any(re.search(rf"(?<![a-z0-9]){re.escape(_normal(alias))}(?![a-z0-9])", text) for alias in c["aliases"])]


def _audit_one(feature, spec, catalog, table, by_name) -> FeatureAudit:
    matched = match_concepts(feature, table)
    entries = catalog.by_id()
    evidence: list[Evidence] = []
    false_friends: list[Evidence] = []
    requirements = []
    indirect = []
    if matched:
        for concept in matched:
            evidence += _concept_evidence(concept, spec, entries, "direct", requirements, false_friends)
        for concept in matched:
            for served in concept.get("serves", []):
                target = by_name.get(served["concept"])
                if target is None:
                    raise AuditError(f"concept table: {concept['name']!r} serves unknown {served['concept']!r}")
                indirect.append(f"{target['name']}: {served['why']}")
                evidence += _concept_evidence(target, spec, entries, f"indirect via {target['name']}",
                                              requirements, false_friends)
    else:
        evidence = _word_search(feature, spec)
    evidence = _dedupe(evidence)
    verdict, detail = _verdict(evidence)
    audit = FeatureAudit(feature, verdict, detail, [c["name"] for c in matched], indirect, evidence,
                         _dedupe(false_friends), requirements)
    audit.contradictions = _contradictions(evidence, requirements, entries)
    return audit


def _concept_evidence(concept, spec, entries, basis, requirements, false_friends) -> list[Evidence]:
    statements = {}
    for st in spec.statements:
        statements.setdefault(st.line, st)
    found = []
    friends = [re.compile(f["pattern"], re.IGNORECASE) for f in concept.get("false_friends", [])]
    terms = [re.compile(t, re.IGNORECASE) for t in concept.get("terms", [])]
    context = [re.compile(t, re.IGNORECASE) for t in concept.get("context_terms", [])]
    for n, line in enumerate(spec.lines, start=1):
        if any(p.search(line) for p in friends):
            false_friends.append(_evidence(spec, n, None, None, 4, basis, concept["name"]))
            continue
        hit = next((m for p in terms if (m := p.search(line))), None)
        if hit:
            found.append(_line_claim(spec, n, hit, statements.get(n), basis, concept["name"]))
        elif any(p.search(line) for p in context):
            found.append(_evidence(spec, n, None, None, 4, basis, concept["name"]))
    for link in concept.get("requirements", []):
        entry = entries[link["id"]]
        claim = _RELATION_CLAIM.get(link["relation"]) or _SCOPE_CLAIM[entry["scope"]]
        if any(r["id"] == entry["id"] for r in requirements):
            continue
        requirements.append({"id": entry["id"], "title": entry["title"], "relation": link["relation"],
                             "scope": entry["scope"], "line": entry["line"], "section": entry["section"],
                             "scope_lines": entry["scope_lines"]})
        via = f"requirement {entry['id']} ({link['relation']})"
        found.append(_evidence(spec, entry["line"], claim, None, _RELATION_TIER[link["relation"]],
                               via if basis == "direct" else f"{basis}, {via}", concept["name"]))
    return found


def _line_claim(spec: ParsedSpec, n: int, hit: re.Match, statement: ScopeStatement | None, basis: str,
                concept: str) -> Evidence:
    line = spec.text(n)
    # "(no tensor parallelism)" in an in-scope item excludes the thing it names
    if re.search(r"\((?:[^)]*,\s*)?(?:no|not|without)\s+$", line[:hit.start()], re.IGNORECASE):
        return _evidence(spec, n, "out-of-scope", None, _tier(statement) if statement else 3, basis, concept)
    if statement is None:
        return _evidence(spec, n, None, None, 4, basis, concept)
    return _evidence(spec, n, statement.kind, statement.milestone, _tier(statement), basis, concept)


def _tier(statement: ScopeStatement) -> int:
    if statement.source == "list" and (statement.section.startswith("0.0") or statement.kind == "prohibited"):
        return 1
    if statement.source == "list":
        return 2
    return 3


def _evidence(spec, n, claim, milestone, tier, basis, concept="") -> Evidence:
    section = spec.section_of(n)
    label = f"§{section.number} {section.title}" if section else "(before the first section)"
    return Evidence(n, label, spec.text(n).strip(), claim, milestone, tier, basis, concept)


def _word_search(feature: str, spec: ParsedSpec) -> list[Evidence]:
    """Without a known concept: lines outside code that contain every content word of the feature."""
    wanted = words(feature)
    if not wanted:
        return []
    statements = {st.line: st for st in spec.statements}
    found = []
    for n, line in enumerate(spec.lines, start=1):
        if n not in spec.code_lines and wanted <= words(line):
            st = statements.get(n)
            found.append(_evidence(spec, n, st.kind if st else None, st.milestone if st else None,
                                   _tier(st) if st else 4, "words of the feature"))
    return found


def _dedupe(evidence: list[Evidence]) -> list[Evidence]:
    best: dict[int, Evidence] = {}
    for ev in evidence:
        if ev.line not in best or (ev.tier, ev.claim is None) < (best[ev.line].tier, best[ev.line].claim is None):
            best[ev.line] = ev
    return sorted(best.values(), key=lambda ev: ev.line)


def _verdict(evidence: list[Evidence]) -> tuple[str, str]:
    claims = [ev for ev in evidence if ev.claim is not None]
    if not claims:
        return "not addressed by the spec", "no spec line states a scope for it" if evidence else "no spec line mentions it"
    tier = min(ev.tier for ev in claims)
    top = [ev for ev in claims if ev.tier == tier]
    strongest = max(_STRENGTH[ev.claim] for ev in top)
    deciding = [ev for ev in top if _STRENGTH[ev.claim] == strongest]
    claim = deciding[0].claim
    lines = _cite(deciding)
    detail = f"{_CLAIM_TEXT[claim]} ({lines})"
    if claim == "later":
        milestones = sorted({ev.milestone for ev in deciding if ev.milestone})
        if milestones:
            detail = f"{_CLAIM_TEXT[claim]}: {' / '.join(milestones)} ({lines})"
    if all(ev.basis.startswith("indirect") for ev in deciding):
        detail += f"; indirect, as a means to {' and '.join(dict.fromkeys(ev.concept for ev in deciding))}"
    return _VERDICT_OF[claim], detail


def _cite(evidence: list[Evidence]) -> str:
    """'§0.0 lines 22, 76; §7.6 line 1307': the lines grouped by section number."""
    by_section: dict[str, list[int]] = {}
    for ev in evidence:
        by_section.setdefault(ev.section.split()[0], []).append(ev.line)
    return "; ".join(f"{section} {_lines(lines)}" for section, lines in by_section.items())


def _contradictions(evidence: list[Evidence], requirements: list[dict], entries: dict) -> list[Contradiction]:
    """Disagreements among the lines of each concept, then the catalog's notes on linked requirements."""
    found = []
    for concept in dict.fromkeys(ev.concept for ev in evidence):
        claims = [ev for ev in evidence if ev.concept == concept and ev.claim is not None
                  and "requirement" not in ev.basis]
        found += _disagreements(concept, claims)
    for req in requirements:
        for c in entries[req["id"]].get("contradictions", []):
            found.append(Contradiction("requirement note", f"{req['id']}: {c['note'].rstrip('.')}", c["lines"]))
    return found


def _disagreements(concept: str, claims: list[Evidence]) -> list[Contradiction]:
    found = []
    in_m0 = [ev.line for ev in claims if ev.claim in ("in-m0", "optional")]
    outside = [ev.line for ev in claims if ev.claim not in ("in-m0", "optional")]
    if in_m0 and outside:
        found.append(Contradiction("in M0 vs not in M0",
                                   f"{concept}: {_lines(in_m0)} put it in M0 while {_lines(outside)} "
                                   f"keep it out of M0",
                                   sorted(in_m0 + outside)))
    by_milestone: dict[str, list[int]] = {}
    for ev in claims:
        if ev.claim in ("later", "deferred-M1") and ev.milestone and ev.milestone != "post-M0":
            by_milestone.setdefault(ev.milestone, []).append(ev.line)
    if len(by_milestone) > 1:
        parts = "; ".join(f"{m} at {_lines(lines)}" for m, lines in sorted(by_milestone.items()))
        found.append(Contradiction("milestones differ", f"{concept}: the spec names different milestones: {parts}",
                                   sorted(n for lines in by_milestone.values() for n in lines)))
    return found


def _join(lines: list[int]) -> str:
    return ", ".join(str(n) for n in sorted(set(lines)))


def _lines(lines: list[int]) -> str:
    return f"line{'s' if len(set(lines)) > 1 else ''} {_join(lines)}"


def as_json(audits: list[FeatureAudit], spec_identity: dict) -> dict:
    return {"spec": spec_identity, "features": [_audit_dict(a) for a in audits],
            "summary": [{"feature": a.feature, "verdict": a.verdict, "detail": a.detail,
                         "contradictions": len(a.contradictions)} for a in audits]}


def _audit_dict(audit: FeatureAudit) -> dict:
    data = asdict(audit)
    for key in ("evidence", "false_friends"):
        for item, ev in zip(data[key], getattr(audit, key)):
            item["claim_text"] = ev.claim_text
    return data


def render_markdown(audits: list[FeatureAudit], spec_identity: dict) -> str:
    """The proof document: a summary table, then per feature its verdict and every cited line."""
    out = ["# Scope audit against the M0 worker spec", "",
           (f"Spec: `{spec_identity['path']}`, revision {spec_identity['revision']}, "
            f"sha256 `{spec_identity['sha256'][:16]}…`. Line numbers refer to this file."), "",
           "## Summary", "", "| feature | verdict | basis | contradictions |", "| --- | --- | --- | --- |"]
    out += [f"| {_cell(a.feature)} | **{a.verdict}** | {_cell(a.detail)} | {len(a.contradictions) or '—'} |"
            for a in audits]
    for audit in audits:
        out += ["", f"## {audit.feature}", "", f"**Verdict: {audit.verdict}** — {audit.detail}.", ""]
        if audit.concepts:
            out.append(f"Matched concepts: {', '.join(audit.concepts)}.")
        else:
            out.append("No concept of the table matches; lines were found by the feature's own words.")
        for note in audit.indirect:
            out.append(f"Indirect evidence — a means to {note}.")
        if audit.requirements:
            out += ["", "Requirements:"]
            out += [f"- {r['id']} {r['title']} (§{r['section']}, line {r['line']}): {r['relation']}; "
                    f"catalog scope {r['scope']} (scope lines {', '.join(map(str, r['scope_lines']))})"
                    for r in audit.requirements]
        out += ["", "Spec lines:"]
        out += [f"- line {ev.line}, {ev.section} — *{ev.claim_text}*"
                f"{'' if ev.basis == 'direct' else f' [{ev.basis}]'}: “{ev.text}”" for ev in audit.evidence]
        if not audit.evidence:
            out.append("- none: the spec does not mention it.")
        if audit.false_friends:
            out += ["", "Same words, different meaning (not evidence):"]
            out += [f"- line {ev.line}, {ev.section}: “{ev.text}”" for ev in audit.false_friends]
        if audit.contradictions:
            out += ["", "Contradictions inside the spec:"]
            out += [f"- {c.kind}: {c.note}." for c in audit.contradictions]
    return "\n".join(out) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")
