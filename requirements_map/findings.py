"""Spec findings: places where the spec contradicts itself or the models it names, as data.

A finding (data/findings.json) names the requirement ids it touches, quotes the spec lines it
rests on (line number and text), says what they say and what is true instead, gives the
evidence (a public source with its address, a measurement with its command, or the spec's own
lines) and what an implementer should do meanwhile. `check_findings` holds the quotes against a
spec file the way `catalog.check_catalog` holds the catalog: a quoted line that moved or
vanished in another revision is reported, so a finding never silently cites the wrong text.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from .spec_parser import ParsedSpec

KINDS = ("the models it names", "itself")  # what the spec contradicts
_FIELDS = ("id", "kind", "title", "requirements", "quotes", "says", "instead", "evidence", "meanwhile")


class FindingsError(ValueError):
    """The findings file cannot be read, or a finding lacks one of its parts."""


@dataclass(frozen=True)
class Finding:
    id: str
    kind: str
    title: str
    requirements: tuple[str, ...]
    quotes: tuple[dict, ...]  # {"line": 857, "text": "..."} in the revision of record
    says: str
    instead: str
    evidence: tuple[dict, ...]  # {"source", "shows", and "url" or "command" where there is one}
    meanwhile: str

    def as_json(self) -> dict:
        return asdict(self)


def default_path() -> Path:
    return Path(str(resources.files("requirements_map") / "data" / "findings.json"))


def load_findings(path: Path | None = None) -> list[Finding]:
    """Read the findings (the packaged file unless `path` is given); raises FindingsError."""
    path = path or default_path()
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))["findings"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FindingsError(f"cannot read findings {path}: {exc}") from exc
    findings = []
    for item in raw:
        missing = [name for name in _FIELDS if not item.get(name)]
        if missing:
            raise FindingsError(f"{path}: finding {item.get('id', '?')!r} lacks {', '.join(missing)}")
        if item["kind"] not in KINDS:
            raise FindingsError(f"{path}: finding {item['id']!r} has kind {item['kind']!r}, not one of {KINDS}")
        findings.append(Finding(item["id"], item["kind"], item["title"], tuple(item["requirements"]),
                                tuple(item["quotes"]), item["says"], item["instead"], tuple(item["evidence"]),
                                item["meanwhile"]))
    return findings


def findings_for(requirement_ids, findings: list[Finding] | None = None) -> list[Finding]:
    """The findings that touch any of `requirement_ids`, in file order."""
    wanted = set(requirement_ids)
    return [f for f in (load_findings() if findings is None else findings) if wanted & set(f.requirements)]


def check_findings(findings: list[Finding], spec: ParsedSpec) -> list[str]:
    """Every way the findings disagree with `spec`; empty when each quote stands on its line.

    A quote whose text is found elsewhere is reported as moved (with every line that holds it);
    one found nowhere as gone; a requirement id the spec lacks as such.
    """
    return [f"{finding.id}: {problem}" for finding in findings for problem in finding_problems(finding, spec)]


def finding_problems(finding: Finding, spec: ParsedSpec) -> list[str]:
    """What of one finding `spec` no longer bears out (see check_findings)."""
    problems = [f"{rid} is not a requirement of this spec" for rid in finding.requirements
                if rid not in spec.requirements]
    return problems + [p for p in (quote_problem(q, spec) for q in finding.quotes) if p]


def quote_problem(quote: dict, spec: ParsedSpec) -> str | None:
    """None when line `quote['line']` of `spec` holds `quote['text']`, else what happened to it."""
    line, text = quote["line"], quote["text"].strip()
    if 1 <= line <= len(spec.lines) and text in spec.text(line):
        return None
    found = [n for n in range(1, len(spec.lines) + 1) if text in spec.text(n)]
    if len(found) == 1:
        return f"line {line} no longer says {text!r}; it is now on line {found[0]}"
    if found:
        return f"line {line} no longer says {text!r}; lines {', '.join(map(str, found))} do"
    return f"line {line} no longer says {text!r}, and no line of this spec does"


def render_markdown(findings: list[Finding], spec: ParsedSpec) -> str:
    """The findings as a document, each with what `spec` no longer bears out of it."""
    out = ["# Spec findings", "",
           "Places where the spec contradicts itself or the models it names, with the evidence.", ""]
    for finding in findings:
        out += finding_markdown({**finding.as_json(), "problems": finding_problems(finding, spec)})
    return "\n".join(out)


def finding_markdown(finding: dict) -> list[str]:
    """Markdown lines for one finding as JSON (with its `problems`), under an anchor named by its id."""
    out = [f'<a id="{finding["id"]}"></a>', "", f"### {finding['title']}", "",
           f"`{finding['id']}`: the spec contradicts {finding['kind']}; requirements "
           f"{', '.join(finding['requirements'])}.", "", "**The spec says** " + finding["says"], ""]
    out += [f"> line {q['line']}: {q['text']}  " for q in finding["quotes"]]
    out += ["", "**Instead** " + finding["instead"], "", "**Evidence**", ""]
    out += [f"- {_evidence(e)}" for e in finding["evidence"]]
    out += ["", "**Meanwhile** " + finding["meanwhile"], ""]
    out += [f"> **Quote out of date in the spec file used:** {p}" for p in finding.get("problems", [])]
    return out + ([""] if finding.get("problems") else [])


def _evidence(e: dict) -> str:
    where = f" <{e['url']}>" if e.get("url") else f" (`{e['command']}`)" if e.get("command") else ""
    return f"{e['source']}{where}: {e['shows']}"
