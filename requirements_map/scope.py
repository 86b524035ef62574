"""Derive each requirement's scope from what the spec says about it.

A requirement's scope comes from the scope lists that name it (by id, by id range, or by an
item whose words are all in its title, such as 'Proof bundles' for 'Proof Bundle Emission'),
from DEFERRED/optional markers in its own heading or status line and its section heading, and
from its opening RFC-2119 keyword. When these disagree, the strongest claim wins (removed >
deferred-M1 > later milestone > kept in M0 > optional) and the others are kept as conflicts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

from .spec_parser import ParsedSpec, Requirement, ScopeStatement

SCOPES = ("M0", "M0-optional", "deferred-M1", "M2+", "removed")
_PRIORITY = {"removed": 5, "deferred-M1": 4, "later": 3, "in-m0": 2, "optional": 1}
SCOPE_OF_KIND = {"removed": "removed", "deferred-M1": "deferred-M1", "later": "M2+",
                  "in-m0": "M0", "optional": "M0-optional"}
_STOPWORDS = {"a", "an", "the", "of", "in", "for", "and", "or", "to", "with", "all", "no", "on"}


@dataclass(frozen=True)
class ScopeFinding:
    scope: str
    lines: tuple[int, ...]  # lines whose claim matches the chosen scope
    conflicts: tuple[tuple[int, str], ...]  # (line, scope claimed there) that disagree


@cache
def words(text: str) -> frozenset[str]:
    """Content words of `text`, lower-cased, plural 's' dropped, tokens with digits left out."""
    tokens = re.findall(r"[a-z0-9][a-z0-9-]*", text.lower())
    return frozenset(t[:-1] if t.endswith("s") and len(t) > 3 else t
                     for t in tokens if t not in _STOPWORDS and not any(c.isdigit() for c in t))


def names_requirement(statement: ScopeStatement, req: Requirement) -> bool:
    """True if a scope list item speaks of `req`: by id, or by a name all of whose words are in its title."""
    if req.id in statement.ids:
        return True
    if statement.ids or statement.source != "list":
        return False
    name = words(statement.name)
    return len(name) >= 2 and name <= words(req.title)


def _own_markers(spec: ParsedSpec, req: Requirement) -> list[ScopeStatement]:
    """Markers in the requirement's heading, its status line, and its enclosing section heading."""
    section = spec.section_of(req.line)
    own = []
    for st in spec.statements:
        if st.source != "marker":
            continue
        in_heading = st.line == req.line or (section is not None and st.line == section.line)
        is_status = req.body[0] <= st.line <= req.body[1] and st.text.startswith("**Status**")
        if in_heading or is_status:
            own.append(st)
    return own


def _lead_line(spec: ParsedSpec, req: Requirement) -> int:
    """The first non-blank body line: the sentence a requirement opens with."""
    return next((n for n in range(req.body[0], req.body[1] + 1) if spec.text(n).strip()), req.line)


def _claim_scope(statement: ScopeStatement) -> str:
    if statement.kind == "later" and statement.milestone == "post-M0":
        return "deferred"  # a deferral that names no milestone agrees with any deferral
    return SCOPE_OF_KIND[statement.kind]


def infer_scope(spec: ParsedSpec, req: Requirement) -> ScopeFinding:
    """The scope the spec gives `req`, with the lines that say so and the lines that disagree."""
    stated = [st for st in spec.statements
              if st.source == "list" and st.kind in _PRIORITY and names_requirement(st, req)]
    stated += [st for st in _own_markers(spec, req) if st.kind in _PRIORITY]
    claims = [(st.line, _PRIORITY[st.kind], _claim_scope(st)) for st in stated]
    if req.opening_keyword == "MAY" and req.opening_line == _lead_line(spec, req):
        claims.append((req.opening_line, _PRIORITY["optional"], "M0-optional"))
    if not claims:
        return ScopeFinding("M0", (req.line,), ())
    scope = max(claims, key=lambda claim: (claim[1], claim[2] != "deferred"))[2]
    if scope == "deferred":
        scope = "M2+"

    def agrees(claimed: str) -> bool:
        return claimed == scope or (claimed == "deferred" and scope in ("deferred-M1", "M2+"))

    agreeing = tuple(sorted({line for line, _, claimed in claims if agrees(claimed)}))
    conflicts = tuple(sorted({(line, claimed) for line, _, claimed in claims if not agrees(claimed)}))
    return ScopeFinding(scope, agreeing, conflicts)
