"""Read an M0 worker spec (Markdown) into headings, requirements and scope statements.

Everything here is derived from the file's own text and keeps its line numbers (1-based),
so that every later answer can cite the spec by section and line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

REQUIREMENT_ID = re.compile(r"M0-(?:W-\d{4}|SYS-\d+\.\d+\.\d+)")
_ID_RANGE = re.compile(r"M0-W-(\d{4})\s+(?:through|to|\.\.|–)\s+(?:M0-W-)?(\d{4})")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*$")
_REQUIREMENT_HEADING = re.compile(r"^\[(M0-(?:W-\d{4}|SYS-\d+\.\d+\.\d+))\]\s*(.*)$")
_SECTION_NUMBER = re.compile(r"^(\d+(?:\.\d+)*)\.?\s+(.*)$")
_FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})(.*)$")
# A numbered or requirement heading cannot sit inside a code block in this spec; when one
# does, the block before it was left unclosed (the spec has such a slip in §8.2).
_STRUCTURAL_HEADING = re.compile(r"^#{1,6}\s+(?:\[M0-|\d+(?:\.\d+)*\.?\s)")

# RFC-2119 keywords, grouped by strength; only the upper-case forms are normative.
_KEYWORD = re.compile(r"\b(MUST NOT|MUST|SHALL NOT|SHALL|REQUIRED|SHOULD NOT|SHOULD|NOT RECOMMENDED|"
                      r"RECOMMENDED|MAY|OPTIONAL)\b")
_STRENGTH = {"MUST": 3, "MUST NOT": 3, "SHALL": 3, "SHALL NOT": 3, "REQUIRED": 3,
             "SHOULD": 2, "SHOULD NOT": 2, "RECOMMENDED": 2, "NOT RECOMMENDED": 2,
             "MAY": 1, "OPTIONAL": 1}
_LEVEL_NAME = {3: "MUST", 2: "SHOULD", 1: "MAY"}

_LIST_ITEM = re.compile(r"^(\s*)(?:[-*]|\d+b?\.)\s+(.*)$")
_MILESTONE = re.compile(r"\bM([1-9])(\+?)")


class SpecFormatError(ValueError):
    """The text is not an M0 worker spec (no requirement headings)."""


@dataclass(frozen=True)
class Heading:
    line: int
    level: int
    text: str
    number: str | None  # "7.1", "12.2.3"; None for unnumbered headings
    title: str


@dataclass(frozen=True)
class Requirement:
    id: str
    title: str
    line: int
    heading_level: int
    body: tuple[int, int]  # first and last line of the body (inclusive)
    section: str  # number of the enclosing numbered heading, as the file writes it
    section_title: str
    level: str | None  # strongest RFC-2119 keyword class: MUST / SHOULD / MAY
    opening_keyword: str | None  # class of the first keyword, the one the requirement opens with
    opening_line: int | None  # where that first keyword stands
    keywords: tuple[str, ...]


@dataclass(frozen=True)
class ScopeStatement:
    """One line that says something about scope: a list item under a scope header, or a marker."""

    line: int
    section: str
    context: str  # the header (or heading) that gives the line its meaning
    kind: str  # in-m0 / optional / deferred-M1 / later / out-of-scope / removed / prohibited
    milestone: str | None  # "M1", "M2+", "M3+", "M4" where the text names one
    text: str
    name: str  # the item's subject, without explanations, for matching against titles
    ids: tuple[str, ...]
    source: str  # "list" for items under a scope header, "table" for rows of a table's M0 Status column, "marker" for other lines


@dataclass
class ParsedSpec:
    lines: list[str]
    headings: list[Heading]
    requirements: dict[str, Requirement]
    statements: list[ScopeStatement]
    code_lines: frozenset[int]
    anomalies: list[str] = field(default_factory=list)

    def text(self, line: int) -> str:
        return self.lines[line - 1]

    def section_of(self, line: int) -> Heading | None:
        """The nearest numbered heading at or before `line`."""
        found = None
        for heading in self.headings:
            if heading.line > line:
                break
            if heading.number is not None:
                found = heading
        return found


def parse_spec(text: str) -> ParsedSpec:
    """Parse spec Markdown; raise SpecFormatError if it defines no requirement headings."""
    lines = text.splitlines()
    code_lines, anomalies = _code_lines(lines)
    headings = [_heading(n, lines[n - 1]) for n in range(1, len(lines) + 1)
                if n not in code_lines and _HEADING.match(lines[n - 1])]
    requirements = _requirements(lines, headings, code_lines)
    if not requirements:
        raise SpecFormatError("no requirement headings such as '#### [M0-W-1300] ...' found")
    spec = ParsedSpec(lines, headings, requirements, [], code_lines, anomalies)
    spec.statements = _scope_statements(spec)
    return spec


def ids_in(text: str, known: list[str] | None = None) -> tuple[str, ...]:
    """Requirement ids named in `text`, expanding 'M0-W-1600 through M0-W-1620' over `known`."""
    found = list(dict.fromkeys(REQUIREMENT_ID.findall(text)))
    for low, high in _ID_RANGE.findall(text):
        for rid in known or []:
            if rid.startswith("M0-W-") and int(low) <= int(rid[5:]) <= int(high) and rid not in found:
                found.append(rid)
    return tuple(found)


def _code_lines(lines: list[str]) -> tuple[frozenset[int], list[str]]:
    inside, opener, opened_at = set(), None, 0
    anomalies = []
    for n, line in enumerate(lines, start=1):
        fence = _FENCE.match(line)
        if opener is None:
            if fence:
                opener, opened_at = fence.group(1), n
                inside.add(n)
            continue
        if _STRUCTURAL_HEADING.match(line):
            anomalies.append(f"code block opened at line {opened_at} is never closed; "
                             f"the heading at line {n} ends it")
            opener = None
            continue
        inside.add(n)
        closes = fence and fence.group(1)[0] == opener[0] and len(fence.group(1)) >= len(opener) \
            and not fence.group(2).strip()
        if closes:
            opener = None
    return frozenset(inside), anomalies


def _heading(n: int, line: str) -> Heading:
    hashes, text = _HEADING.match(line).groups()
    numbered = _SECTION_NUMBER.match(text)
    if numbered:
        return Heading(n, len(hashes), text, numbered.group(1), numbered.group(2))
    return Heading(n, len(hashes), text, None, text)


def _requirements(lines, headings, code_lines) -> dict[str, Requirement]:
    found = {}
    for index, heading in enumerate(headings):
        match = _REQUIREMENT_HEADING.match(heading.text)
        if not match:
            continue
        rid, title = match.groups()
        end = len(lines)
        for later in headings[index + 1:]:
            if later.level <= heading.level:
                end = later.line - 1
                break
        while end > heading.line and lines[end - 1].strip() in ("", "---"):
            end -= 1
        section = next((h for h in reversed(headings[:index]) if h.number and h.level < heading.level), None)
        normative = [(heading.line, title)] + [(n, lines[n - 1]) for n in range(heading.line + 1, end + 1)
                                               if n not in code_lines]
        located = [(n, k) for n, text in normative for k in _KEYWORD.findall(text)]
        keywords = [k for _, k in located]
        strongest = max((_STRENGTH[k] for k in keywords), default=0)
        found[rid] = Requirement(
            id=rid, title=title, line=heading.line, heading_level=heading.level,
            body=(heading.line + 1, end),
            section=section.number if section else "", section_title=section.title if section else "",
            level=_LEVEL_NAME.get(strongest),
            opening_keyword=_LEVEL_NAME[_STRENGTH[keywords[0]]] if keywords else None,
            opening_line=located[0][0] if located else None,
            keywords=tuple(dict.fromkeys(keywords)))
    return found


def _context_kind(header: str) -> tuple[str, str | None] | None:
    """What a list header says about the items under it, or None if it is no scope header."""
    low = header.lower()
    if "prohibited" in low or "must not" in low:
        return "prohibited", None
    if "removed" in low:
        return "removed", None
    if "out of scope" in low or "non-goal" in low:
        return "out-of-scope", None
    if "defer" in low:
        return _deferral(header)
    if "kept in m0" in low or "added in m0" in low or "in scope for m0" in low or "success criteria" in low \
            or "acceptance criteria" in low or "considered complete" in low:
        return "in-m0", None
    return None


def _deferral(text: str) -> tuple[str, str | None]:
    """Kind of a deferral; this spec's unnamed 'Performance Bundle' deferral is the M1 one."""
    milestone = _milestone(text)
    if milestone is None and "performance bundle" in text.lower():
        return "deferred-M1", "M1"
    if milestone is None:
        return "later", "post-M0"
    if milestone.startswith("M1"):
        return "deferred-M1", "M1"
    return "later", milestone


def _milestone(text: str) -> str | None:
    match = _MILESTONE.search(text)
    return f"M{match.group(1)}{match.group(2)}" if match else None


def _item_kind(context: tuple[str, str | None], text: str) -> tuple[str, str | None]:
    """Refine a list context by what the item itself says, e.g. '(M4)' or 'validation in M1'."""
    kind, milestone = context
    low = text.lower()
    if "removed" in low and kind in ("out-of-scope", "deferred-M1"):
        return "removed", None
    own = _milestone(text)
    if own is None:
        return kind, milestone
    if kind == "in-m0":
        return kind, milestone
    if own.startswith("M1"):
        if "defer" in low or "in m1" in low or kind == "deferred-M1":
            return "deferred-M1", "M1"
        return "later", own
    return "later", own


def _item_name(text: str) -> str:
    text = re.sub(r"^[✅❌🔥⚠️\s]+", "", text)
    bold = re.match(r"\*\*(.+?)\*\*", text)
    if bold:
        return bold.group(1)
    return re.split(r"\s+\(|\s+[—–]\s+|\s+-\s+|:\s", text, maxsplit=1)[0].strip()


# Running-text markers of scope: a deferral, "optional", a later milestone, "for future use".
_M0_TAG = re.compile(r"[\[(]M0\+?[\])]")  # "Home Mode (M0)", "VRAM-Only Policy [M0+]"
_MARKER = re.compile(r"defer|optional|\(M[1-9]\+?\)|\bM[1-9]\+? (?:requires|adds|plan)|\bM[1-9]\+(?!\w)|"
                     r"for future use|" + _M0_TAG.pattern, re.IGNORECASE)


def _marker_kind(text: str) -> tuple[str, str | None] | None:
    low = text.lower()
    if "defer" in low:
        return _deferral(text)
    if "optional" in low:
        return "optional", None
    if "future use" in low:
        return "later", None
    milestone = _milestone(text)
    if milestone:
        return "later", milestone
    return ("in-m0", None) if _M0_TAG.search(text) else None


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _status_kind(cell: str) -> tuple[str, str | None] | None:
    """What a table's "M0 Status" cell says ("✅ Required", "⚠️ Optional"), or None."""
    low = cell.lower()
    if "defer" in low:
        return _deferral(cell)
    if "optional" in low:
        return "optional", None
    if "required" in low:
        return "in-m0", None
    if "❌" in cell or "out of scope" in low:
        return "out-of-scope", None
    return None


def _scope_statements(spec: ParsedSpec) -> list[ScopeStatement]:
    known = list(spec.requirements)
    statements = []
    context, context_text, items_started = None, "", False
    status_column, table_text = None, ""  # a table with an "M0 Status" column states each row's scope
    for n, line in enumerate(spec.lines, start=1):
        if n in spec.code_lines:
            if "future use" in line.lower():
                statements.append(_statement(spec, n, line, "code comment", ("later", None), "marker", known))
            continue
        stripped = line.strip()
        if stripped.startswith("|"):
            cells = _cells(stripped)
            if status_column is None and "m0 status" in (c.lower() for c in cells):
                status_column = [c.lower() for c in cells].index("m0 status")
                table_text = f"table of {cells[0]} and its M0 Status"
            elif status_column is not None and len(cells) > status_column and not set(stripped) <= set("|-: "):
                kind = _status_kind(cells[status_column])
                if kind:
                    statements.append(_statement(spec, n, line, table_text, kind, "table", known,
                                                 name=cells[0].strip("`* ")))
            continue
        status_column = None
        item = _LIST_ITEM.match(line)
        if _HEADING.match(line):
            context, items_started = None, False
            heading_kind = _marker_kind(stripped) if _MARKER.search(stripped) else None
            if heading_kind:
                statements.append(_statement(spec, n, line, "heading", heading_kind, "marker", known))
            continue
        if item and context:
            items_started = True
            statements.append(_statement(spec, n, line, context_text,
                                         _item_kind(context, item.group(2)), "list", known))
            continue
        header_kind = _context_kind(stripped) if stripped.endswith(":") else None
        if header_kind:
            context, context_text, items_started = header_kind, stripped, False
            continue
        if items_started:  # the list under the header has ended
            context, items_started = None, False
        if stripped and _MARKER.search(stripped):
            kind = _marker_kind(stripped)
            if kind:
                statements.append(_statement(spec, n, line, "marker", kind, "marker", known))
    return statements


def _statement(spec, n, line, context, kind, source, known, name: str | None = None) -> ScopeStatement:
    section = spec.section_of(n)
    item = _LIST_ITEM.match(line)
    body = item.group(2) if item else line.strip()
    return ScopeStatement(line=n, section=section.number if section else "", context=context,
                          kind=kind[0], milestone=kind[1], text=line.strip(), name=name or _item_name(body),
                          ids=ids_in(line, known), source=source)
