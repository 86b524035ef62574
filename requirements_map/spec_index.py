"""Every line of the spec, indexed with what the parser and the catalog know about it, searchable.

Each line keeps its section, the requirement whose heading or body it belongs to and that
requirement's catalog scope, the scope list it is an item of (§0.0 deferred / kept, §0.2 in or out
of scope, §14.3, §15.1, §15.2), and the scope marker it carries. Search is BM25 (bm25s) over
Snowball-stemmed terms (PyStemmer); the same `terms` function serves documents, queries and the
phrase checks of the audit, so a word is matched the same way everywhere.

The parent spec (00_llama-orch.md) can be indexed too: its lines carry their section, their
SYS- requirement and the milestone tag of their heading (`[M2]`), and are only ever context.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import cache

import bm25s
import Stemmer

from .catalog import Catalog
from .spec_parser import REQUIREMENT_ID, ParsedSpec, ScopeStatement

# Requirement ids (ours and the other specs' "CUDA-5321", "WORK-3044") and endpoint paths stay whole;
# "C++" is not "C"; other words split at hyphens ("top-k" -> top, k).
_TOKEN = re.compile(r"m0-(?:w-\d{4}|sys-\d+\.\d+\.\d+)|[a-z]+-\d{4}\b|/[a-z][a-z_]*|c\+\+|[a-z0-9_]+(?:\.[0-9a-z_]+)*")
_UNIT = re.compile(r"(\d)\s+(mb|gb|kb|ms|s|b)\b")
_URL = re.compile(r"https?://\S+")
_NOT = re.compile(r"(?:ca|wo)?n['’]t\b")  # "doesn't" is "does not", not a word "doesn" and a "t"
_STOPWORDS = frozenset("""a an the of in on at to for from by with and or as is are be been being it its this that
these those into than then so such via each all any both no not also can may must should shall will
would do does did has have had if when while which who what whose there their our we you your within under
over after before about through across between during upon onto""".split())
#: Words that name no feature by themselves: "support" must not find "multi-model support deferred".
GENERIC = frozenset("""support supports supported supporting feature features add adding added implement implementing
implementation enable enabling allow allowing provide providing improve improving improved better new basic
proper option options optional mode system use using used handle handling handles capability ability
functionality work working make making thing things way ways simple simpler good nice proper
exactly""".split())
_STEM = Stemmer.Stemmer("english")
_SPELLING = ((re.compile(r"(?<=[a-z]{3})is(e|es|ed|ing|ation|ations|er|ers)$"), r"iz\1"),
             (re.compile(r"(?<=[a-z]{2})ys(e|es|ed|ing)$"), r"yz\1"), (re.compile(r"(?<=[a-z]{3})iour(s?)$"), r"ior\1"))
_ADVERB = re.compile(r"(?<=[a-z]{2})ili$")  # the stemmer leaves "lazily" as "lazili" and "lazy" as "lazi"
_GENERIC_STEMS = frozenset(_STEM.stemWords(sorted(GENERIC)))
_PARENT_REQUIREMENT = re.compile(r"^#{1,6}\s+\[(SYS-\d+\.\d+\.\d+)\]")
_M0_HEADING = re.compile(rf"^#{{1,6}}\s+\[(?:{REQUIREMENT_ID.pattern})\]")
_PARENT_MILESTONE = re.compile(r"\[(M-?\d\+?)\]")
_HEADING = re.compile(r"^(#{1,6})\s+(?:(\d+(?:\.\d+)*)\.?\s+)?(.*?)\s*$")


class ParentSpecError(ValueError):
    """The file given as the parent spec is not the llama-orch system spec."""


@cache
def terms(text: str) -> tuple[str, ...]:
    """The stemmed search terms of `text`, in order, stopwords left out; British spellings read as
    American ones ("synchronising" finds "synchronize", "behaviour" finds "behavior"), and an adverb
    in -ily as its adjective ("lazily" finds "lazy")."""
    low = _NOT.sub(" not", _UNIT.sub(r"\1\2", _URL.sub(" ", text.lower())))
    return tuple(_ADVERB.sub("i", _STEM.stemWord(_american(t))) if not (t.startswith("/") or "-" in t or t == "c++")
                 else t for t in _TOKEN.findall(low) if t not in _STOPWORDS)


def _american(word: str) -> str:
    # applied to documents and queries alike, so a word it rewrites needlessly ("otherwise") still matches itself
    for british, american in _SPELLING:
        word = british.sub(american, word)
    return word


def key_terms(text: str) -> tuple[str, ...]:
    """`terms` without the generic words that name no feature."""
    return tuple(t for t in terms(text) if t not in _GENERIC_STEMS)


def near(wanted: tuple[str, ...], words: tuple[str, ...]) -> bool:
    """True if `wanted` occurs in `words` in order with at most two other words between neighbours,
    or in any order within a window one word longer than itself ("switching models" names "model
    switching"; "Memory-mapped I/O (mmap for host" does not name "host-mapped memory")."""
    need = set(wanted)
    for start, word in enumerate(words):
        if word not in need:
            continue
        if need <= set(words[start:start + len(wanted) + 1]) or _in_order_from(wanted, words, start):
            return True
    return False


def _in_order_from(wanted: tuple[str, ...], words: tuple[str, ...], start: int) -> bool:
    if words[start] != wanted[0]:
        return False
    at = start
    for w in wanted[1:]:
        window = words[at + 1:at + 4]
        if w not in window:
            return False
        at = at + 1 + window.index(w)
    return True


@dataclass(frozen=True)
class IndexedLine:
    line: int
    text: str
    section: str  # "§6.3 VRAM Allocation"
    requirement: str | None  # the requirement whose heading or body holds the line
    requirement_scope: str | None  # that requirement's catalog scope
    scope_list: str | None  # "§0.0 DEFERRED to M1+ (14 items - Performance Bundle)" for list items
    statement: ScopeStatement | None  # the parser's scope statement on this line
    code: bool
    heading: bool
    source: str = "spec"  # or "parent"
    milestone_tag: str | None = None  # parent spec only: the heading's [M2]


class SpecIndex:
    """The spec's lines with their context, and BM25 search over them."""

    def __init__(self, spec: ParsedSpec, catalog: Catalog, parent_text: str | None = None):
        self.spec = spec
        self.catalog_spec = catalog.spec  # the revision the curated data (catalog, contradictions) is for
        self.entries = catalog.by_id()
        self.lines = _spec_lines(spec, self.entries)
        self.parent = _parent_lines(parent_text) if parent_text is not None else []
        docs = [self._document(entry) for entry in self.lines + self.parent]
        self._terms = [frozenset(terms(entry.text)) for entry in self.lines + self.parent]
        self._bm25 = bm25s.BM25()
        self._bm25.index(docs, show_progress=False)
        self._vocab = self._bm25.vocab_dict
        counts: dict[str, int] = {}
        for doc in self._terms[:len(self.lines)]:
            for t in doc:
                counts[t] = counts.get(t, 0) + 1
        self._df = counts

    def _document(self, entry: IndexedLine) -> list[str]:
        words = list(terms(entry.text))
        req = self.entries.get(entry.requirement or "")
        if req and entry.line == req["line"] and entry.source == "spec":
            words += terms(" ".join(req.get("concepts", [])))  # a heading also answers to its catalog concepts
        return words or [""]

    def at(self, line: int) -> IndexedLine:
        return self.lines[line - 1]

    def line_terms(self, entry: IndexedLine) -> frozenset[str]:
        """The terms of the line's own text (the catalog concepts of a heading only help ranking)."""
        offset = 0 if entry.source == "spec" else len(self.lines)
        return self._terms[offset + entry.line - 1]

    def share(self, term: str) -> float:
        """The share of spec lines that hold `term`: near 0 for a specific word, high for "model"."""
        return self._df.get(term, 0) / len(self.lines)

    def writes(self, name: str) -> bool:
        """Whether the spec writes a name of code, alone or as a part of a longer one ("ffn_gate" of
        "ffn_gate.weight")."""
        return self.share(name) > 0 or any(name in re.split(r"[.:]+", t) for t in self._df if "." in t or ":" in t)

    def weight(self, term: str) -> float:
        """How much a term says (its inverse document frequency over the spec's lines)."""
        return math.log((len(self.lines) + 1) / (self._df.get(term, 0) + 1))

    def search(self, query: str | tuple[str, ...], k: int = 8, *, source: str = "spec") -> list[tuple[IndexedLine, float]]:
        """The `k` lines (of the spec, or of the parent spec) ranked best for `query`, score > 0."""
        wanted = [t for t in (terms(query) if isinstance(query, str) else query) if t in self._vocab]
        if not wanted:
            return []
        scores = self._bm25.get_scores(wanted)
        pool = self.lines if source == "spec" else self.parent
        offset = 0 if source == "spec" else len(self.lines)
        ranked = sorted(((scores[offset + i], i) for i in range(len(pool)) if scores[offset + i] > 0), reverse=True)
        return [(pool[i], float(score)) for score, i in ranked[:k]]


def _spec_lines(spec: ParsedSpec, entries: dict) -> list[IndexedLine]:
    owner = {}
    for req in spec.requirements.values():
        for n in range(req.line, req.body[1] + 1):
            owner[n] = req.id
    statements = {}
    for st in spec.statements:
        statements.setdefault(st.line, st)
    headings = {h.line for h in spec.headings}
    out = []
    for n, text in enumerate(spec.lines, start=1):
        section = spec.section_of(n)
        label = f"§{section.number} {section.title}" if section else "(before the first section)"
        st = statements.get(n)
        rid = owner.get(n)
        scope_list = f"§{st.section} {st.context.strip('*: ').replace('**', '')}" if st and st.source in ("list", "table") else None
        out.append(IndexedLine(n, text.strip(), label, rid, entries.get(rid, {}).get("scope") if rid else None,
                               scope_list, st, n in spec.code_lines, n in headings))
    return out


def _parent_lines(text: str) -> list[IndexedLine]:
    lines = text.splitlines()
    if not any(_PARENT_REQUIREMENT.match(line) for line in lines) or any(_M0_HEADING.match(line) for line in lines):
        raise ParentSpecError("no system requirement headings such as '#### [SYS-6.3.1] ...' found; "
                              "the parent spec is llama-orch bin/.specs/00_llama-orch.md")
    out, section, requirement, milestones, fence = [], "(before the first section)", None, {}, False
    for n, line in enumerate(lines, start=1):
        if line.lstrip().startswith("```"):
            fence = not fence
        heading = None if fence else _HEADING.match(line)
        if heading:
            level = len(heading.group(1))
            tag = _PARENT_MILESTONE.search(line)
            milestones = {lv: m for lv, m in milestones.items() if lv < level}
            if tag:
                milestones[level] = tag.group(1)
            if heading.group(2):
                section = f"§{heading.group(2)} {heading.group(3)}"
            req = _PARENT_REQUIREMENT.match(line)
            requirement = req.group(1) if req else (None if heading.group(2) else requirement)
        tag = milestones[max(milestones)] if milestones else None
        out.append(IndexedLine(n, line.strip(), section, requirement, None, None, None, fence, bool(heading),
                               "parent", tag))
    return out
