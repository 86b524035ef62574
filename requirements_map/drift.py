"""Compare two spec revisions: ids added, removed, moved, retitled, rescoped or re-levelled."""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass

from .scope import infer_scope
from .spec_parser import ParsedSpec


@dataclass(frozen=True)
class Change:
    id: str
    kind: str  # added / removed / rescoped / retitled / relevelled / resectioned / reworded / moved
    old: object
    new: object
    old_line: int | None
    new_line: int | None


def compare(old: ParsedSpec, new: ParsedSpec) -> list[Change]:
    """Every requirement-level difference between two parsed revisions, in id order per kind."""
    changes = []
    for rid in new.requirements.keys() - old.requirements.keys():
        req = new.requirements[rid]
        changes.append(Change(rid, "added", None, f"{req.title} [{infer_scope(new, req).scope}]", None, req.line))
    for rid in old.requirements.keys() - new.requirements.keys():
        req = old.requirements[rid]
        changes.append(Change(rid, "removed", f"{req.title} [{infer_scope(old, req).scope}]", None, req.line, None))
    for rid in old.requirements.keys() & new.requirements.keys():
        a, b = old.requirements[rid], new.requirements[rid]
        pairs = {"rescoped": (infer_scope(old, a).scope, infer_scope(new, b).scope),
                 "retitled": (a.title, b.title),
                 "relevelled": (a.level, b.level),
                 "resectioned": (a.section, b.section),
                 "moved": (a.line, b.line)}
        changes += [Change(rid, kind, before, after, a.line, b.line)
                    for kind, (before, after) in pairs.items() if before != after]
        old_body, new_body = _body(old, a), _body(new, b)
        if old_body != new_body:
            changed = sum(1 for d in difflib.ndiff(old_body, new_body) if d[:1] in "+-")
            changes.append(Change(rid, "reworded", f"{len(old_body)} lines", f"{len(new_body)} lines, "
                                  f"{changed} added or removed", a.line, b.line))
    order = ("added", "removed", "rescoped", "retitled", "relevelled", "resectioned", "reworded", "moved")
    return sorted(changes, key=lambda c: (order.index(c.kind), c.id))


def wording_diff(old: ParsedSpec, new: ParsedSpec, rid: str, old_name: str = "old", new_name: str = "new") -> list[str]:
    """A unified diff of requirement `rid`'s heading and body from `old` to `new` (a removed
    requirement diffs to nothing); empty when its wording is the same in both."""
    before, after = ([f"{spec.requirements[rid].title}", *_body(spec, spec.requirements[rid])]
                     if rid in spec.requirements else [] for spec in (old, new))
    if before == after:
        return []
    return list(difflib.unified_diff(before, after, old_name, new_name, n=1, lineterm=""))


def _body(spec: ParsedSpec, req) -> list[str]:
    """The requirement's non-blank body lines, stripped, for comparing wording."""
    lines = (spec.text(n).strip() for n in range(req.body[0], req.body[1] + 1))
    return [line for line in lines if line]


def as_json(changes: list[Change]) -> list[dict]:
    return [asdict(c) for c in changes]


def render_markdown(changes: list[Change], old_name: str, new_name: str) -> str:
    """A readable report; line moves are summarised in one table at the end."""
    out = [f"# Spec drift: {old_name} → {new_name}", ""]
    if not changes:
        return "\n".join(out + ["No requirement-level differences.", ""])
    titles = {"added": "Added", "removed": "Removed", "rescoped": "Scope changed", "retitled": "Title changed",
              "relevelled": "RFC-2119 level changed", "resectioned": "Section number changed",
              "reworded": "Requirement text changed",
              "moved": "Heading line moved"}
    for kind, title in titles.items():
        rows = [c for c in changes if c.kind == kind]
        if not rows:
            continue
        out += [f"## {title} ({len(rows)})", "", "| id | old (line) | new (line) |", "| --- | --- | --- |"]
        out += [f"| {c.id} | {_cell(c.old, c.old_line)} | {_cell(c.new, c.new_line)} |" for c in rows]
        out.append("")
    return "\n".join(out)


def _cell(value, line) -> str:
    if value is None:
        return "—"
    return f"{value}" if isinstance(value, int) else f"{value} ({line})" if line else f"{value}"
