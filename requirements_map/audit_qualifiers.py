"""Qualifiers of a feature (versions, numbers, data types, quantization types, model sizes) against
the values the spec states for the same thing.

"GGUF v2 files" is GGUF (in M0) with the qualifier "v2"; the spec requires version 3. A verdict
"in M0" holds for the qualified feature only if the spec states the qualifier's value (or a range
holding it, or a value it calls configurable) on a line about the feature. If it states another
value of the same kind, and no line anywhere states this value next to a specific word it qualifies
in the feature ("CANCELLED ... 499" for "HTTP 499 for a cancelled job"), the qualifier differs; if it
states none, the spec does not address it.

A value the feature gives as an example ("(e.g. 12.1)", "cards like the RTX 4090") is not a qualifier:
it shows what the feature is (the example runs to the end of its clause or parenthesis). A line
requiring a valid integer type ("MUST be valid uint64") states every value of that type; an
upper-case name of code in the feature ("INTERNAL", "VRAM_OOM") anchors the value stated beside it.

A line is about the feature when it is one of the audit's lines or in the body of a requirement
they belong to, and it names a word that stands next to the qualifier in the feature ("context"
for "128K context"), or, failing such a word, any of the feature's other words.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .spec_index import IndexedLine, SpecIndex, key_terms, terms

_PRECISION = r"fp64|fp32|tf32|fp16|bf16|fp8|int8|int4"
_QUANT = r"q\d_k(?:_[sml])?|t?q\d_\d|iq\d_\w+|mxfp\d|nvfp\d|fp[46]|nf4"
# kind -> pattern; a number may carry a unit and be a range ("1-2048", "0.0 to 2.0")
_KINDS = {
    "version": re.compile(r"\b(?:v|version\s*)(\d+)\b", re.IGNORECASE),
    "data type": re.compile(rf"\b({_PRECISION})\b", re.IGNORECASE),
    "quantization type": re.compile(rf"\b({_QUANT})\b", re.IGNORECASE),
    "model size": re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)b\b", re.IGNORECASE),
}
NAMED_KINDS = ("data type", "quantization type")  # qualifiers that are names the spec may scope themselves
# the glossary concept that gives the scope of the values of a kind the spec does not list: M0-W-1201 names
# M0's three weight formats, line 798 and §14.3 (line 2918) put further quantization in M2+
FURTHER_VALUES = {"quantization type": "advanced quantization"}
_NUMBER = re.compile(r"(?<![\w.\-/])(\d[\d,]*(?:\.\d+)?)(?:\s*(?:-|–|to)\s*(\d[\d,]*(?:\.\d+)?))?"
                     r"(?:\s*|-)(k|kb|mb|gb|ms|s|sec|seconds?|minutes?|bytes?)?(?![\w\-]|[.,]\d)", re.IGNORECASE)
_UNIT_CLASS = {"kb": ("bytes", 1e3), "mb": ("bytes", 1e6), "gb": ("bytes", 1e9), "ms": ("time", 1e-3),
               "s": ("time", 1.0), "sec": ("time", 1.0), "second": ("time", 1.0), "seconds": ("time", 1.0),
               "minute": ("time", 60.0), "minutes": ("time", 60.0), "byte": ("bytes", 1.0), "bytes": ("bytes", 1.0), "k": ("count", 1e3), None: ("count", 1.0)}
_NUMBER_WORDS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
_WORD_NUMBER = re.compile(rf"\b({'|'.join(_NUMBER_WORDS)})\s+(ms|seconds?|minutes?)\b", re.IGNORECASE)
_BOUND = re.compile(r"(?:(\bmax(?:imum)?|\bup to|\bat most)|\bmin(?:imum)?|\bat least)\s*$", re.IGNORECASE)
_ENUMERATOR = re.compile(r"^\s*(?:[-*#]+\s*|\*\*)?\d+\.\s")  # "12. ✅ ...", "**3. Start HTTP server**"
_CONFIGURABLE = re.compile(r"\bconfigurable\b", re.IGNORECASE)
_DEFAULT = terms("default")[0]
_SPECIFIC_SHARE = 0.04  # a word on more of the spec's lines ("model") says nothing of what a value qualifies
_NEIGHBOURS = 2  # words either side of a qualifier that say what it qualifies
# an example runs from its marker to the end of its clause or parenthesis: "cards like the RTX 4090 (sm_89)";
# so does a purpose: "64-bit offsets so GGUF files over 4 GB load" asks for the offsets, not for 4 GB
_EXAMPLE = re.compile(r"\b(?:e\.g\.|for example|for instance|such as|like|say|so that|so|in order to)\s[^,;()]*",
                      re.IGNORECASE)
_INTEGER_TYPE = re.compile(r"\bvalid\s+`?(u|uint|i|int)(8|16|32|64)(?:_t)?\b", re.IGNORECASE)
_CODE_WORD = re.compile(r"\b[A-Z][A-Z0-9]*_[A-Z0-9_]+\b|\b[A-Z]{4,}\b")  # INTERNAL, VRAM_OOM: names of code
_REFUSAL = re.compile(r"\b(?:reject|refus|disallow|forbid|den(?:y|ies|ied)|error(?:s)? (?:for|on)|40[0-9]\b)",
                      re.IGNORECASE)


@dataclass(frozen=True)
class Qualifier:
    kind: str  # "version", "data type", "quantization type", "model size" or "number"
    text: str  # as written in the feature
    low: float | str  # the value (numbers in base units; names lower-cased)
    high: float | str
    unit: str | None  # "bytes", "time", "count" for numbers
    anchors: frozenset[str]  # the feature's terms next to it


@dataclass(frozen=True)
class QualifierCheck:
    qualifier: Qualifier
    # "stated", "configurable" (a line calls its value configurable), "refused" (outside the stated range, and the
    # feature refuses it), "differs", "unstated"
    outcome: str
    lines: tuple[int, ...]  # where the spec states it, or states its own value


def qualifiers(text: str) -> list[Qualifier]:
    """The qualifiers written in `text`, each with the feature words around it."""
    found, taken, shown = [], [], examples(text)
    for kind, pattern in _KINDS.items():
        for m in pattern.finditer(text):
            if any(m.start() in span for span in shown):
                continue
            value = _name_value(kind, m.group(1))
            found.append(Qualifier(kind, m.group(0), value, value, None, _anchors(text, m.start(), m.end())))
            taken.append(range(m.start(), m.end()))
    for m in _NUMBER.finditer(text):
        if any(m.start() in span for span in taken + shown):
            continue  # "(e.g. 12.1)" shows what the feature is, it does not ask for that value
        low, high, unit = _number_value(m)
        found.append(Qualifier("number", m.group(0).strip(), low, high, unit, _anchors(text, m.start(), m.end())))
    for m in _WORD_NUMBER.finditer(text):  # "one second", "two minutes"
        unit, scale = _UNIT_CLASS[m.group(2).lower()]
        value = float(_NUMBER_WORDS.index(m.group(1).lower()) + 1) * scale
        found.append(Qualifier("number", m.group(0), value, value, unit, _anchors(text, m.start(), m.end())))
    return found


def examples(text: str) -> list[range]:
    """The spans of `text` that give examples ("e.g. 12.1", "such as the V100"): they show what the
    feature is, they do not qualify it."""
    return [range(m.start(), m.end()) for m in _EXAMPLE.finditer(text)]


def strip_qualifiers(text: str, found: list[Qualifier]) -> str:
    """`text` without its qualifiers ("GGUF v2 files" -> "GGUF files")."""
    for q in found:
        text = text.replace(q.text, " ")
    return re.sub(r"\s+", " ", text).strip()


def check(qualifier: Qualifier, feature: str, index: SpecIndex, lines: list[IndexedLine]) -> QualifierCheck:
    """Whether the spec states `qualifier` on the lines about the feature (`lines` and their requirements)."""
    pool = _about(feature, qualifier, index, lines)
    valued = [(entry, _values(qualifier, entry.text)) for entry in pool]
    valued = [(entry, values) for entry, values in valued if values]
    stated = [entry.line for entry, values in valued if any(_holds(v, qualifier) for v in values)]
    if stated:
        return QualifierCheck(qualifier, "stated", tuple(stated[:3]))
    # a line that calls its value configurable admits others ("1MB (configurable, but 1MB default)"), but
    # not as the default when it states its own: "a 4 MB default chunk size" asks for another default
    as_default = _DEFAULT in qualifier.anchors
    settable = [entry.line for entry, _ in valued if _CONFIGURABLE.search(entry.text)
                and not (as_default and _DEFAULT in index.line_terms(entry))]
    if settable:
        return QualifierCheck(qualifier, "configurable", tuple(settable[:3]))
    elsewhere = _stated_elsewhere(qualifier, feature, index)
    if elsewhere:
        return QualifierCheck(qualifier, "stated", elsewhere)
    if not valued and qualifier.kind == "number":
        # no line about the feature gives a value, but one naming its identifier does ("| `VRAM_OOM` | ... | 500 |"
        # of "HTTP 507 for VRAM_OOM"): the spec states its own value for the feature
        named = {t for t in _identifiers(feature, qualifier, index) if "_" in t}  # not "HTTP", "CUDA"
        valued = [(entry, values) for entry in _naming(named, index)
                  if (values := _values(qualifier, entry.text))]
    if valued and qualifier.kind == "number" and _REFUSAL.search(feature):
        # "rejecting max_tokens 0": a value outside the range the spec states is one it refuses
        return QualifierCheck(qualifier, "refused", tuple(entry.line for entry, _ in valued[:3]))
    if valued:
        return QualifierCheck(qualifier, "differs", tuple(entry.line for entry, _ in valued[:3]))
    return QualifierCheck(qualifier, "unstated", ())


def describe(c: QualifierCheck) -> str:
    """What the check found, for the verdict's detail: the qualifier differs (lines) or is never stated."""
    where = f" (line{'s' if len(c.lines) > 1 else ''} {', '.join(map(str, c.lines))})" if c.lines else ""
    if c.outcome == "differs":
        return f"the {c.qualifier.kind} “{c.qualifier.text}” differs from the one the spec states{where}"
    return f"the spec never states the {c.qualifier.kind} “{c.qualifier.text}” for it"


# --- helpers

def _name_value(kind: str, raw: str) -> float | str:
    return float(raw) if kind in ("version", "model size") else raw.lower()


def _number_value(m: re.Match) -> tuple[float, float, str]:
    unit, scale = _UNIT_CLASS[(m.group(3) or "").lower() or None]
    low = float(m.group(1).replace(",", "")) * scale
    high = float(m.group(2).replace(",", "")) * scale if m.group(2) else low
    return low, high, unit


def _anchors(text: str, start: int, end: int) -> frozenset[str]:
    before = key_terms(text[:start])[-_NEIGHBOURS:]
    after = key_terms(text[end:])[:_NEIGHBOURS]
    return frozenset(before + after)


def _about(feature: str, q: Qualifier, index: SpecIndex, lines: list[IndexedLine]) -> list[IndexedLine]:
    """The prose lines of the audit's lines and their requirements' bodies that name a word around
    the qualifier (else any other word of the feature)."""
    spans = {(index.spec.requirements[e.requirement].line, index.spec.requirements[e.requirement].body[1])
             for e in lines if e.source == "spec" and e.requirement}
    numbers = {e.line for e in lines if e.source == "spec"}
    numbers |= {n for a, b in spans for n in range(a, b + 1)}
    # code inside a requirement states its values too ("cmake_minimum_required(VERSION 3.18)")
    pool = [index.at(n) for n in sorted(numbers) if not index.at(n).code or index.at(n).requirement]
    own = set(terms(q.text))
    for words in (q.anchors - own, set(key_terms(feature)) - own):
        named = [e for e in pool if words & index.line_terms(e)]
        if words and named:
            return named
    return []


def _stated_elsewhere(q: Qualifier, feature: str, index: SpecIndex) -> tuple[int, ...]:
    """Prose lines anywhere in the spec that state the qualifier's value next to a specific word it
    qualifies in the feature ("CANCELLED ... 499" for "HTTP 499 for a cancelled job"), or next to an
    identifier the feature names ("MODEL_LOAD_FAILED" of "MODEL_LOAD_FAILED answered as HTTP 500"):
    the spec states this value for the feature, whatever other values its own lines state."""
    own = set(terms(q.text))
    words = {t for t in q.anchors - own if 0 < index.share(t) <= _SPECIFIC_SHARE} | _identifiers(feature, q, index)
    return tuple(e.line for e in _naming(words, index) if any(_holds(v, q) for v in _values(q, e.text)))[:3]


def _identifiers(feature: str, q: Qualifier, index: SpecIndex) -> set[str]:
    """The feature's terms that are names of code ("vram_oom", "max_tokens") on few of the spec's lines."""
    names = {t for word in _CODE_WORD.findall(feature) for t in terms(word)}
    return {t for t in set(key_terms(feature)) - set(terms(q.text))
            if ("_" in t or t in names) and 0 < index.share(t) <= _SPECIFIC_SHARE}


def _naming(words: set[str], index: SpecIndex) -> list[IndexedLine]:
    """The prose lines that name one of `words`."""
    return [e for e in index.lines if not e.code and words & index.line_terms(e)] if words else []


def _values(q: Qualifier, text: str) -> list[tuple[float | str, float | str]]:
    """(low, high) of the values of `q`'s kind on the line (numbers only in the same unit class)."""
    if q.kind != "number":
        return [(v, v) for v in (_name_value(q.kind, m.group(1)) for m in _KINDS[q.kind].finditer(text))]
    out = []
    text = _ENUMERATOR.sub(lambda m: " " * len(m.group()), text)  # "12. ✅ All CUDA unit tests" counts no 12
    # a bare number on a line that names the qualifier's unit ("--inference-timeout-sec ... (default: 300)")
    unit_word = re.search(r"[a-z]+$", q.text.lower())
    scale = _UNIT_CLASS.get(unit_word.group(), (None, 1.0))[1] if unit_word else 1.0
    bare = bool(unit_word) and q.unit != "count" and re.search(
        rf"(?<![a-z])(?:{unit_word.group()}|{unit_word.group()[:3]})(?![a-z])", text.lower())  # "-sec", not "section"
    for m in _NUMBER.finditer(text):
        low, high, unit = _number_value(m)
        if bare and unit == "count" and not m.group(3):
            low, high, unit = low * scale, high * scale, q.unit
        if unit == q.unit:
            # "max 32768 characters" admits every value up to it, "at least 4096" every value above
            bound = _BOUND.search(text[max(0, m.start() - 12):m.start()])
            if bound:
                low, high = (0.0, high) if bound.group(1) else (low, math.inf)
            out.append((low, high))
    if q.unit == "count":
        # "MUST be valid uint64" states every value of the type (a field declared uint64_t bounds nothing)
        for sign, bits in _INTEGER_TYPE.findall(text):
            bits = int(bits)
            out.append((0.0, 2.0 ** bits - 1) if sign.startswith("u") else (-2.0 ** (bits - 1), 2.0 ** (bits - 1) - 1))
    return out


def _holds(value: tuple[float | str, float | str], q: Qualifier) -> bool:
    """True if the line's value (or range) holds the qualifier's; "32K" also reads as 32 x 1024."""
    low, high = value
    if isinstance(low, str):
        return low == q.low
    wanted = {(q.low, q.high)}
    if q.text.lower().rstrip().endswith("k"):
        wanted.add((q.low * 1.024, q.high * 1.024))
    return any(low <= a and b <= high for a, b in wanted)
