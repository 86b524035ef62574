"""Scope audit: for proposed features, what the spec says about them, with the lines it rests on.

A feature is looked up three ways, and the verdict comes from the strongest that answers:

1. direct statements: scope lists (§0.0 decision summary, §0.2, §14.3, §15.x), markers in running
   text (deferred, optional, "for M0"; a marker speaks for its own sentence), and requirements that
   are the feature (their heading names it, or the glossary links it), each with the scope the spec
   states for the requirement (one the catalog only infers from its purpose is a note, not a scope);
2. requirements that imply the answer: a line of a requirement's body that names the feature, or
   that names the rest of the feature inside the requirement of one of its concepts ("202" of
   "HTTP 202 from POST /cancel" in M0-W-1330), with the requirement's scope or its negation ("No
   Python runtime"), and a glossary conflict with a requirement ("CPU offload" against VRAM-only).
   When no line states a scope, the requirement whose block (heading and body read as one unit,
   glossary names counted) names most of the feature settles it; a deferred or later requirement
   whose block names more of the feature than any line does competes with those lines (M0-W-1604
   for "/health from cached state"). A feature that goes against a requirement (a glossary
   conflict) is not put in M0 by that requirement's own lines;
3. indirect evidence: what the feature is an instance of (which decides only when it is outside M0:
   M0 having a thing says nothing of each kind of it) or a means to (glossary relations), and the
   purpose the proposer claims for it, quoted.

Tiers: 1 §0.0, prohibitions and the requirement itself; 2 other scope lists; 3 markers; 4 implied by
a requirement; 5 what it is an instance of; 6 what it is a means to, or the purpose claimed. Within
the deciding tier the lines that name most of the feature win. The verdict is "contradictory" when
they exclude each other (in M0 against not in M0, or milestones with nothing in common: M1 against
M2+), or when the spec's scope decisions and lists (tiers 1-2) disagree with them: one naming as
much of the feature puts it on the other side of M0, or one naming half of it gives a milestone
with nothing in common. A feature whose words are all generic ("support") gets no verdict; one the
spec never names gets "not addressed" with the closest lines and what to check: those that share
its words (BM25) and those nearest to it in meaning (semantic.py: a sentence model over the spec's
lines, for phrasings that share no word with the line a reader would show); where the nearest is close
and lies in the M0 requirement whose block names most of the feature, the two agree: "in M0", unsure.
Last, an "in M0"
verdict is checked against the feature's qualifiers (versions, numbers, data types, quantization
types, model sizes; audit_qualifiers.py): one the spec contradicts (states another value and never
this one for the feature) puts the feature out of scope, with the line that states the spec's value,
and one stated only in a requirement of a later milestone ("GGUF parsing: <1s", M0-W-1620) gives it
that milestone;
against its names: a word of a versioned name that the spec never uses ("Qwen2.5-Coder-0.5B")
leaves it not addressed; and against how much of it the deciding lines and their requirements state:
with most of its word weight unstated, M0 has only the part they name, and the feature is not addressed.

How sure the verdict is (high / medium, or "unsure": a reviewer must decide, the verdict kept
as the best guess) is set from signals measured on labelled features: audit_confidence.py. Last,
the verdict model (verdict_model.py, trained on the labelled features) weighs the rules' verdict
against the others the lines shown support; where it prefers another, that one is given, unsure,
the rules' reading quoted beside it.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property

from .audit_confidence import BY_MEANING, RELATED_LINES, Signals, calibrate, signals, weighed_against_rules
from .audit_qualifiers import FURTHER_VALUES, NAMED_KINDS, Qualifier, check, describe, examples, qualifiers, strip_qualifiers
from .catalog import Catalog
from .glossary import Entry, Glossary, load_glossary
from .spec_index import IndexedLine, SpecIndex, near, key_terms, terms
from .spec_conflicts import load_disagreements
from .semantic import LineMeanings
from .spec_parser import ParsedSpec
from .spec_source import PINNED_SHA256
from .verdict_model import VERDICTS, load_verdict_model, signal_vector, supported_verdicts

_STRENGTH = {"prohibited": 7, "removed": 6, "deferred-M1": 5, "later": 4, "out-of-scope": 3, "in-m0": 2, "optional": 1}
_VERDICT_OF = {"prohibited": "out of scope for M0", "removed": "out of scope for M0", "deferred-M1": "deferred to M1",
               "later": "later milestone", "out-of-scope": "out of scope for M0", "in-m0": "in M0", "optional": "in M0"}
_CLAIM_TEXT = {"prohibited": "prohibited in M0", "removed": "removed from the project", "deferred-M1": "deferred to M1",
               "later": "later milestone", "out-of-scope": "not in M0", "in-m0": "in M0", "optional": "optional in M0"}
_SCOPE_CLAIM = {"M0": "in-m0", "M0-optional": "optional", "deferred-M1": "deferred-M1", "M2+": "later",
                "removed": "removed"}
TIER_NAMES = {1: "direct: scope decision, prohibition or the requirement itself", 2: "direct: scope list",
              3: "direct: scope marker in the text", 4: "implied by a requirement",
              5: "indirect: what the feature is an instance of", 6: "indirect: what the feature is a means to"}
CONTEXT = 7
# A word found on more than this share of the spec's lines ("model", "worker") names nothing alone.
_COMMON_SHARE = 0.04
_IDENTIFIER = re.compile(r"[a-z]_[a-z0-9]|[a-z]\.[a-z_]|[a-z]\d{3}")  # as terms() writes names of code
_RARE_LINES = 15  # a phrase on at most this many lines ("VRAM-only") is a rule of the spec's own
_MOSTLY_UNSTATED = 0.7  # share of a feature's word weight that no deciding line states, past which M0 has only a part
NEAR_IN_MEANING = 3  # lines nearest in meaning shown beside the lexical ones for a feature the spec does not address
_SAME_MEANING = 0.6  # cosine past which the nearest line, in the requirement naming most of the feature, speaks for it
_MOST = 2 / 3  # share of a feature's word weight a line must name to speak for it without naming it all
# "X replaced with Y" negates X, not Y
_NEGATION = re.compile(r"(?:\bno\b|\bnot\b|\bwithout\b|\bnever\b|must not|prohibit|instead of|"
                       r"\breplac[a-z]*(?![a-z])(?!\s+(?:with|by)\b)|❌)[^;,.:()]*$", re.IGNORECASE)
_NEGATED_AFTER = re.compile(r"[^;,.:(]*?\b(?:is|are) (?:not|never)\b", re.IGNORECASE)
_REQUIRED = re.compile(r"\b(?:mandatory|required|compulsory|always[- ]on)\b", re.IGNORECASE)
_NON = re.compile(r"non-", re.IGNORECASE)  # "MUST be non-empty" rules out the empty prompt
_RELIANCE = re.compile(r"\brel(?:y|ies) on\b[^;,.:(]*$", re.IGNORECASE)
_IN_M0 = re.compile(r"\b(?:in|for) M0\b|\bM0 (?:may|must|should|will|does|supports|implements|includes|keeps)\b",
                    re.IGNORECASE)
_MARKER = re.compile(r"defer|optional|\bM[1-9]\+?|post-M0|out of scope|removed", re.IGNORECASE)
_OBLIGATION = re.compile(r"\bMUST\b|\bexactly\b|\brequired\b", re.IGNORECASE)
_LEAVING_OUT = {"no", "without", "never", "dropping", "removing", "omitting", "skipping", "instead of", "in place of",
                "rather than", "leaving out"}
_PREPOSITIONS = {"from", "for", "in", "on", "to", "of", "with", "by", "at", "as"}
_SUBCLAUSE = re.compile(r"\s(?:when|if|unless|once|so|that|which|because|while)\s")
_VALUE_FIX = re.compile(r"\b(?:MUST|SHOULD|MAY) (?:be|equal)\s+[\d\"'`]|=\s*\d")
_EXPLANATION = re.compile(r"\s[—–-]\s|:\s")
# Where a feature's head ends and what it is for, on or through begins ("pipeline parallelism | for GPT-OSS-20B").
_HEAD_END = re.compile(r"\s(?:for|to|in|on|through|via|from|by|over|across|so|that|which|when|within|into|as|"
                       r"between|before|after|instead|against|under|using|while)\s", re.IGNORECASE)
_PLACE = re.compile(r"\s(?:in|on|inside|through|via|with|for|by|under)\s", re.IGNORECASE)  # "ReLU in the GPT FFN"
_REPLACED = re.compile(r"\b(?:instead of|rather than|in place of|replacing)\b", re.IGNORECASE)  # what follows is replaced
# "X in the Y", "X on every Y", "X in /health": a thing put into a thing the spec defines
_CONTAINER = re.compile(r"(.+?)\s+(?:in|on|inside)\s+(?:(?:the|each|every|an?)\s+(.+)|(/\S.*))$", re.IGNORECASE)


GENERIC_READING = "no verdict: the words are too generic"  # the detail of a feature whose words are all generic


class AuditError(ValueError):
    """The audit cannot run: no features, or a feature without a name."""


@dataclass
class Evidence:
    line: int
    section: str
    text: str
    claim: str | None  # a key of _STRENGTH, or None for context
    milestone: str | None
    tier: int  # 1..6 as in TIER_NAMES; CONTEXT for lines that state no scope
    basis: str  # why the line is here: "names the feature", "requirement M0-W-1222 is ‘chunked transfer’", ...
    concept: str  # the glossary term (or the feature's own words) that brought the line in
    requirement: str | None = None
    requirement_scope: str | None = None
    scope_list: str | None = None
    fit: tuple[float, float] = (1.0, 1.0)  # share of the feature's terms on the line; for headings, of the title's
    source: str = "spec"

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
    purpose: str | None
    verdict: str
    detail: str
    confidence: str  # high / medium / unsure (audit_confidence.py)
    confidence_reason: str
    concepts: list[str]
    requirements: list[str]  # ids the verdict rests on (for findings shown beside it)
    evidence: list[Evidence] = field(default_factory=list)
    false_friends: list[Evidence] = field(default_factory=list)
    closest: list[Evidence] = field(default_factory=list)
    contradictions: list[Contradiction] = field(default_factory=list)
    check: str | None = None  # what a reviewer should check when the spec does not settle it
    unsure: str | None = None  # for an unsure verdict: what a reviewer must decide, and where to look
    deciding_tier: int | None = None  # tier of the lines that decide it; None when a qualifier or nothing does
    rules_verdict: str | None = None  # the rules' verdict, before the verdict model weighed it
    probability: float | None = None  # the verdict model's probability for the verdict given, to 3 places


class Auditor:
    """Audits features against one indexed spec with one glossary."""

    def __init__(self, index: SpecIndex, glossary: Glossary | None = None, *, weighs: bool = True):
        self.index = index
        self.weighs = weighs  # False: the rules' verdicts alone (the benchmark, training, the rules' own tests)
        self.glossary = glossary or load_glossary()
        self.spec = index.spec
        # recorded for the revision of record: another revision's lines are other lines
        self.disagreements = load_disagreements() if index.catalog_spec.get("sha256") == PINNED_SHA256 else ()
        self._block_terms = {rid: frozenset().union(*(index.line_terms(index.at(n)) for n in range(req.line, req.body[1] + 1)))
                             for rid, req in self.spec.requirements.items() if rid in index.entries}

    def audit(self, feature: str, purpose: str | None = None) -> FeatureAudit:
        """The verdict on `feature` (and the claim `purpose`, if given) with every line it rests on.
        A feature with qualifiers ("GGUF v2 files") whose words the spec does not find is audited
        without them; an "in M0" verdict holds only for qualifiers the spec states."""
        name = feature.strip()
        if not name:
            raise AuditError("a feature without a name")
        audit = self._audit(name, purpose)
        found = qualifiers(name)
        bare = strip_qualifiers(name, found)
        if found and audit.verdict == "not addressed by the spec" and key_terms(bare):
            plain = self._audit(bare, purpose)
            if plain.verdict != "in M0":
                # other verdicts could rest on another value ("RTX 3090" for "RTX 4090"), but M0 lines that
                # state a value for a number of the feature ("max 32768 characters") decide on it
                in_m0 = [ev for ev in plain.evidence if ev.claim in ("in-m0", "optional") and ev.source == "spec"]
                if in_m0 and any(check(q, name, self.index, [self.index.at(ev.line) for ev in in_m0]).outcome
                                 != "unstated" for q in found if q.kind == "number"):
                    plain.verdict, plain.detail, plain.evidence = "in M0", f"in M0 ({_cite(in_m0)})", in_m0
            if plain.verdict == "in M0":
                plain.feature, plain.detail = name, f"decided on “{bare}”: {plain.detail}"
                audit = plain
        if audit.verdict == "in M0":
            self._qualified(audit, name, found)
        if audit.verdict == "in M0":
            self._unseen(audit, name)
        if audit.verdict == "in M0" and audit.detail.startswith("optional in M0, required from") \
                and _REQUIRED.search(name):
            # "a mandatory --callback-url": the required form is the later milestone's, not M0's
            later = [ev for ev in audit.evidence if ev.claim in ("deferred-M1", "later")]
            milestones = {ev.milestone or "M1" for ev in later}
            audit.verdict = "deferred to M1" if milestones <= {"M1", "M1+"} else "later milestone"
            audit.detail = f"the feature asks for the required form, and the spec says {audit.detail}"
        self._absence(audit, name)
        self._pairing(audit, name)
        self._disagreement(audit, name)
        self._outside_container(audit, name)
        self._another_kind(audit, name)
        found = signals(self, audit)  # of the lines the verdict rests on: a verdict of its own does not change them
        self._mostly_unstated(audit, found)
        self._near_in_meaning(audit, found)
        calibrate(self, audit, found)
        if self.weighs:
            self.weigh(audit)
        return audit

    def weigh(self, audit: FeatureAudit) -> None:
        """The rules' verdict weighed by the verdict model (verdict_model.py) among the verdicts the lines
        shown support; where the model prefers another, that one is given, unsure, with the rules'
        reading kept beside it for the reviewer. Verdicts the rules are sure of stand (right 12 of 15
        times on the blind parts 15-17), and so does a reading of generic words."""
        audit.rules_verdict = audit.verdict
        model = load_verdict_model()
        if model is None or audit.confidence == "high" or audit.detail == GENERIC_READING:
            return
        found = signals(self, audit)
        p = dict(zip(VERDICTS, model.probabilities(signal_vector(self, audit, found))))
        support = supported_verdicts(self, audit)
        support.setdefault(audit.verdict, [])
        best = max(support, key=p.get)
        audit.probability = round(float(p[best]), 3)  # encodes differ in the last bits with how texts are batched
        if best == audit.verdict:
            return
        lines = _dedupe(support[best])
        rules, rules_detail = audit.verdict, audit.detail
        if best == "not addressed by the spec":
            audit.closest = _dedupe([ev for ev in audit.evidence if ev.claim][:5] + audit.closest)
        audit.verdict, audit.deciding_tier = best, None
        audit.detail = (f"weighed against {model.features} labelled features, the verdict model puts {p[best]:.0%} on "
                        f"it and {p[rules]:.0%} on the rules' “{rules}”" + (f" ({_cite(lines)})" if lines else "")
                        + f"; the rules read: {rules_detail}")
        weighed_against_rules(self, audit, found, rules)

    def _disagreement(self, audit: FeatureAudit, name: str) -> None:
        """A feature that names a place where the spec disagrees with itself (spec_conflicts.py) and takes
        one side is contradictory, every side cited, unless every side is outside M0 alike; one that names
        the place without taking a side gets it as a note."""
        words = terms(name)
        for d in self.disagreements:
            if not d.named(words):
                continue
            audit.contradictions.append(Contradiction("the spec disagrees with itself", f"{d.subject}: " + "; ".join(
                map(_said, d.sides)), sorted(d.lines)))
            side = d.taken(words)
            if side is None or audit.verdict == "contradictory" or not self._scopes_differ(d):
                continue
            others = "; ".join(_said(s) for s in d.sides if s is not side)
            audit.verdict = "contradictory"
            audit.detail = (f"the feature takes one side where the spec disagrees with itself on {d.subject}: "
                            f"{_said(side)}, but {others}; apart from it: {audit.detail}")
            cited = {ev.line for ev in audit.evidence}
            for s in d.sides:
                for entry in (self.index.at(n) for n in s.lines if n not in cited):
                    claim = self._line_scope(entry)
                    audit.evidence.append(_evidence(entry, claim, None, 4 if claim else CONTEXT,
                                                    f"states: {s.says}", "contradiction"))
            audit.evidence.sort(key=lambda ev: (ev.source, ev.line))
            audit.requirements = sorted(set(audit.requirements) | {self.index.at(n).requirement for n in d.lines
                                                                   if self.index.at(n).requirement})
            audit.deciding_tier = 4

    def _pairing(self, audit: FeatureAudit, name: str) -> None:
        """A feature that pairs two things the spec pairs otherwise ("GPT-OSS-20B with the gguf-bpe
        backend": the spec gives GPT-OSS-20B hf-json, the other kind of tokenizer backend) goes against
        the lines that pair them: wherever the spec names the one, the nearest kind of the other is
        never the feature's. Kinds are glossary entries of one broader concept (is_a)."""
        if audit.verdict != "in M0":
            return
        matches = [m for m in self.glossary.match(name, self._specific) if m.entry.req]
        def siblings(entry):
            return [e for e in self.glossary.entries if e.req and e.term != entry.term and set(e.is_a) & set(entry.is_a)]
        for kind in matches:
            # both are kinds of something (a model of the reference models, a backend of the backends):
            # a container like GGUF pairs with every quantization format
            for other in (m for m in matches if m is not kind and siblings(m.entry)
                          and m.entry not in siblings(kind.entry)):
                kinds = [kind.entry, *siblings(kind.entry)]
                nearest = self._nearest_kind(other.entry, kinds) or self._kinds_in_blocks(other.entry, kinds)
                if nearest and kind.entry.term not in nearest:
                    term, lines = max(nearest.items(), key=lambda item: len(item[1]))
                    cited = [self.index.at(n) for n in sorted(lines)[:4]]
                    audit.verdict = "out of scope for M0"
                    audit.detail = (f"the spec pairs {other.entry.term} with {term} ({_lines(sorted(lines))}), "
                                    f"never with {kind.entry.term}")
                    audit.evidence = _dedupe(audit.evidence + [
                        _evidence(e, "out-of-scope", None, 4, f"pairs {other.entry.term} with {term}", "pairing")
                        for e in cited])
                    audit.requirements = sorted(set(audit.requirements) | {e.requirement for e in cited if e.requirement})
                    audit.deciding_tier = 4
                    return

    def _nearest_kind(self, subject: Entry, kinds: list[Entry]) -> dict[str, set[int]]:
        """For each prose line naming `subject`, the kinds named nearest to it: kind term -> lines."""
        found: dict[str, set[int]] = {}
        for entry in self.index.lines:
            if entry.code:
                continue
            seq = tuple(t.lstrip("/") for t in terms(entry.text))  # "Qwen/Phi-3" reads as qwen, /phi, 3
            at = [(i, i + len(terms(n)) - 1) for n in subject.names for i in _positions(terms(n), seq)]
            if not at:
                continue
            named = [(max(0, j - b, a - (j + len(terms(n)) - 1)), k.term)  # words between the two names
                     for k in kinds for n in k.names for j in _positions(terms(n), seq) for a, b in at]
            # a word of slack keeps "accept Q4_K_M or Q4_0" for GPT-OSS-20B and drops "hf-json for
            # GPT-OSS-20B, gguf-bpe for Qwen" for Qwen
            for distance, term in named:
                if distance <= min(named)[0] + 1:
                    found.setdefault(term, set()).add(entry.line)
        return found

    def _kinds_in_blocks(self, subject: Entry, kinds: list[Entry]) -> dict[str, set[int]]:
        """Where no line names `subject` beside a kind: the kinds named in the requirement blocks that name
        it (GPT-OSS-20B in M0-W-1215, whose block gives its attention as MHA): kind term -> the lines naming it."""
        def naming(entry, n):
            seq = tuple(terms(self.index.at(n).text))
            return not self.index.at(n).code and any(_positions(terms(name), seq) for name in entry.names)
        found: dict[str, set[int]] = {}
        for rid, req in self.spec.requirements.items():
            body = range(req.line, req.body[1] + 1)
            if rid not in self._block_terms or not any(naming(subject, n) for n in body):
                continue
            for k in kinds:
                for n in (n for n in body if naming(k, n)):
                    found.setdefault(k.term, set()).add(n)
        return found

    @cached_property
    def _allowed_absences(self) -> frozenset[str]:
        """The terms that M0 requirements write after "no", "not", "without" or "never"."""
        return frozenset().union(*(_negated_terms(e.text) for e in self.index.lines
                                   if e.requirement and self._stated_claim(e.requirement) in ("in-m0", "optional")))

    def _scopes_differ(self, d) -> bool:
        """Whether the sides of a disagreement stand in M0 and outside it: two deferred requirements
        that give one deadline two values (30 s, 5 s) leave the feature deferred either way."""
        in_m0 = [(self._line_scope(self.index.at(n)) or "in-m0") in ("in-m0", "optional") for n in d.lines]
        return len(set(in_m0)) > 1 or all(in_m0)

    def _line_scope(self, entry: IndexedLine) -> str | None:
        """The scope a line states: its scope list or marker, else its requirement's; None for neither."""
        if entry.statement is not None:
            return entry.statement.kind
        return self._stated_claim(entry.requirement) if entry.requirement else None

    def _absence(self, audit: FeatureAudit, name: str) -> None:
        """A feature that asks for a thing to be absent ("unified memory off", "with no terminal event")
        turns the scope of the lines about that thing around: absent what M0 prohibits complies with the
        prohibition (in M0, by its requirement); absent what an M0 line requires goes against it."""
        phrases = _absent_phrases(name)
        # each phrase by its rarest word: "end" of "an end event" (§17.2 line 3055: `end` ✅ Required)
        absent = frozenset(max(terms(p), key=self.index.weight) for p in phrases)
        if not absent or audit.verdict not in ("in M0", "out of scope for M0"):
            return
        deciding = [ev for ev in audit.evidence if ev.claim and ev.source == "spec" and ev.tier <= 4
                    and absent <= self.index.line_terms(self.index.at(ev.line))]
        if audit.verdict == "out of scope for M0":
            barring = [ev for ev in deciding if ev.claim in ("prohibited", "out-of-scope")]
            if barring:
                audit.verdict, audit.requirements = "in M0", self._requirements_of(barring)
                audit.detail = (f"the feature asks for {' and '.join(phrases)} to be absent, as M0 has it "
                                f"({_cite(barring)})")
                for ev in barring:
                    ev.claim, ev.basis = "in-m0", ev.basis + "; the feature keeps it out, as the requirement does"
            return
        required = [ev for ev in deciding if ev.claim == "in-m0" and _OBLIGATION.search(self.index.at(ev.line).text)
                    and not _NEGATION.search(self.index.at(ev.line).text)]
        # an M0 requirement that allows the absence ("# Without CUDA (stub mode)" of M0-W-1700) wins over
        # the lines that require the thing where it is there ("when `cuda` feature is enabled")
        if required and not {t for p in phrases for t in terms(p)} & self._allowed_absences:
            audit.verdict = "out of scope for M0"
            audit.detail = (f"the feature leaves out {' and '.join(phrases)}, which M0 requires "
                            f"({_cite(required)})")
            for ev in required:
                ev.claim, ev.basis = "out-of-scope", ev.basis + "; the feature leaves out what this line requires"

    def _unseen(self, audit: FeatureAudit, name: str) -> None:
        """An "in M0" verdict holds only for the names the spec uses: a word of a versioned name in the
        feature (a word written with digits: a model, a file, a release; or a name of code) that no line
        of the spec and no glossary name uses ("Coder" of "Qwen2.5-Coder-0.5B") makes it another thing than the one the spec
        names, so the lines about the rest decide nothing about it."""
        known = {t for m in self.glossary.match(name, self._specific) for n in m.entry.names for t in terms(n)}
        shown = examples(name)  # "such as the V100" shows what the feature is
        named = [t for m in re.finditer(r"\S+", name) if re.search(r"\d", m.group())
                 and not any(m.start() in span for span in shown) for t in key_terms(m.group()) if t.isalpha()]
        # a name of code is exact: the glossary may know CUDA_VISIBLE_DEVICES, the spec still never writes it
        code = [t for t in key_terms(name) if re.fullmatch(r"[a-z]{2,}(?:_[a-z]{2,})+", t)]
        unseen = [t for t in dict.fromkeys(named + code)
                  if (not self.index.writes(t) if t in code else self.index.share(t) == 0 and t not in known)]
        if unseen:
            # the feature's own spelling, not the search term ("CUDA_VISIBLE_DEVICES", not "cuda_visible_devic")
            unseen = [_spelled(name, t) for t in unseen]
            audit.verdict = "not addressed by the spec"
            audit.closest = [ev for ev in audit.evidence if ev.claim][:5]
            audit.detail = f"the spec never uses “{', '.join(unseen)}”; without it the feature is {audit.detail}"
            audit.check = f"check whether {', '.join(unseen)} is wanted; the spec decides the feature only without it"
            audit.confidence, audit.confidence_reason = "medium", "a word of the feature occurs nowhere in the spec"
            audit.deciding_tier = None

    def _mostly_unstated(self, audit: FeatureAudit, s: Signals) -> None:
        """An "in M0" verdict whose deciding lines and their requirements leave most of the feature's word
        weight unstated ("encrypted", "decrypting" of "loading an encrypted GGUF and decrypting the weights
        at load"): M0 has what those lines name, the spec says nothing of the rest, so it does not address
        the feature as asked; the lines are shown as the closest."""
        if audit.verdict != "in M0" or s.unstated_share < _MOSTLY_UNSTATED:
            return
        said = ", ".join(_spelled(audit.feature, t) for t in s.unstated)
        audit.verdict = "not addressed by the spec"
        audit.closest = [ev for ev in audit.evidence if ev.claim][:5]
        audit.detail = (f"the lines that put the rest of it in M0 never state {said} ({s.unstated_share:.0%} of the "
                        f"feature's word weight): {audit.detail}")
        audit.check = f"check whether the requirements shown cover {said}; if it is wanted in M0, ask the spec owner"
        audit.confidence_reason, audit.deciding_tier = RELATED_LINES, None

    @cached_property
    def meanings(self) -> LineMeanings:
        return LineMeanings([(e.line, e.text) for e in self.index.lines])

    def _near_in_meaning(self, audit: FeatureAudit, found: Signals) -> None:
        """Where the spec does not address a feature, the lines nearest to it in meaning are shown too: a
        reviewer's words often share none with the line a careful reader would show ("a two-state
        healthy/unhealthy status", the /health status field). Where the nearest line is close
        (_SAME_MEANING) and lies in the M0 requirement whose block names most of the feature's words,
        the two readings agree on where the spec addresses it: "in M0", as a best guess."""
        if audit.verdict != "not addressed by the spec":
            return
        ranked = self.meanings.nearest(audit.feature, NEAR_IN_MEANING + len(audit.closest))
        shown = {ev.line for ev in audit.closest if ev.source == "spec"}
        near = [(n, cosine) for n, cosine in ranked if n not in shown][:NEAR_IN_MEANING]
        audit.closest += [_evidence(self.index.at(n), None, None, CONTEXT, f"close in meaning (cosine {cosine:.2f})",
                                    "closest") for n, cosine in near]
        if not ranked or not found.best_block or audit.confidence_reason != RELATED_LINES or found.unused:
            return  # a concept the spec never names ("CUDA MPS") is not what a line near in meaning states
        (line, cosine), rid = ranked[0], found.best_block[0]
        entry, claim = self.index.at(line), self._stated_claim(rid)
        if cosine < _SAME_MEANING or entry.requirement != rid or claim not in ("in-m0", "optional"):
            return
        nearest = _evidence(entry, claim, None, 4, f"nearest in meaning (cosine {cosine:.2f}), in {rid}, whose block "
                            "names most of the feature's words", "the feature's meaning")
        audit.verdict, audit.requirements = "in M0", [rid]
        audit.evidence = _dedupe(audit.evidence + [nearest])
        audit.detail = (f"the spec never names it as asked, but {rid} names most of its words and holds the line "
                        f"nearest to it in meaning: {'optional ' if claim == 'optional' else ''}in M0 ({_cite([nearest])})")
        audit.closest = [ev for ev in audit.closest if ev.source != "spec" or ev.line != line]
        audit.check = f"check that {rid} covers it as asked"
        audit.confidence_reason, audit.deciding_tier = BY_MEANING, None

    def best_block(self, key: set[str], matches) -> tuple[float, str | None]:
        """The share of `key`'s word weight that the requirement block naming most of it names (a glossary
        concept named by any of its names), and that requirement; (0.0, None) for no key."""
        if not key:
            return 0.0, None
        whole = self._weight(key)
        return max(((self._weight(_named_by(block, key, matches)) / whole, rid)
                    for rid, block in self._block_terms.items()), default=(0.0, None))

    def _outside_container(self, audit: FeatureAudit, name: str) -> None:
        """"X in Y" where Y is a thing M0 requirements define (the /health response, the end event) and
        neither their blocks nor the lines that put the feature in M0 name most of X ("a timestamp on
        every token event"): M0 has Y, the spec does not put X in it."""
        found = _CONTAINER.match(name) if audit.verdict == "in M0" else None
        if not found:
            return
        thing, container = found.group(1), _HEAD_END.split(found.group(2) or found.group(3), maxsplit=1)[0].strip()
        rids = list(dict.fromkeys(r for m in self.glossary.match(container, self._specific) for r in m.entry.req
                                  if r in self._block_terms))
        # one letter is the 's of "tensor's", no word of the thing
        wanted = {t for t in key_terms(strip_qualifiers(thing, qualifiers(thing))) if len(t) > 1}
        if not rids or not wanted:
            return
        # a deciding line speaks for X in Y only if it names Y too: "--worker-id" is no field of /health
        holder = frozenset(key_terms(container)).union(*(m.covered for m in self.glossary.match(container,
                                                                                               self._specific)))
        deciding = (self.index.line_terms(self.index.at(ev.line)) for ev in audit.evidence
                    if ev.claim and ev.source == "spec" and ev.tier <= 4)
        stated = frozenset().union(*(self._block_terms[r] for r in rids), *(t for t in deciding if t & holder))
        missing = wanted - _named_by(stated, wanted, self.glossary.match(thing, self._specific))
        if self._weight(missing) < _MOST * self._weight(wanted):
            return
        spelled = ", ".join(sorted(dict.fromkeys(_spelled(thing, t) for t in missing), key=thing.find))
        defined = ", ".join(rids)
        audit.verdict = "not addressed by the spec"
        audit.detail = (f"the spec defines “{container}” in {defined}, whose lines never name {spelled}: "
                        "it does not put that in it")
        audit.closest = [_evidence(self.index.at(self.spec.requirements[r].line), None, None, CONTEXT,
                                   f"{r} defines “{container}”", "closest") for r in rids]
        audit.closest += [ev for ev in audit.evidence if ev.claim and ev.source == "spec"][:3]
        audit.check = f"check whether {defined} should carry {spelled}; if it is wanted in M0, ask the spec owner"
        audit.confidence_reason = RELATED_LINES
        audit.deciding_tier = None

    def _another_kind(self, audit: FeatureAudit, name: str) -> None:
        """A kind of a thing where the spec gives that place another kind of it: in "ReLU in the GPT
        adapter's FFN" the place is what the concepts after the head are (the M0 requirements most of them
        share), and M0-W-1215 gives the GPT FFN GELU, a sibling of ReLU (the same glossary is_a), never
        ReLU. A kind the feature names as replaced ("instead of RMSNorm") is no kind it asks for."""
        if audit.verdict not in ("in M0", "not addressed by the spec"):
            return
        head, place_text = (_PLACE.split(name, maxsplit=1) + [""])[:2]
        head = _REPLACED.split(head, maxsplit=1)[0]
        in_place = self.glossary.match(place_text, self._specific) if place_text else []
        asked_kinds = self.glossary.match(head, self._specific)
        for asked in asked_kinds:
            kinds = set(asked.entry.is_a)
            siblings = [e for e in self.glossary.entries if e is not asked.entry and kinds & set(e.is_a)]
            if not siblings or any(o.entry in siblings for o in asked_kinds):
                continue
            holders = [o.entry for o in in_place if o.entry not in siblings and not kinds & set(o.entry.is_a)]
            held = Counter(r for e in holders for r in dict.fromkeys(e.req)
                           if r in self._block_terms and self._stated_claim(r) in ("in-m0", "optional"))
            # the requirements most of the place's concepts share: the GPT adapter's FFN is M0-W-1215's
            place = [r for r, n in held.items() if n == max(held.values())]
            if not place or any(self._line_naming(r, asked.entry) for r in place) \
                    or any(_names(asked.entry, e.text) and any(_names(h, e.text) for h in holders)
                           for e in self.index.lines):
                continue  # the place has this kind, or a line puts it there ("Q4_0 GGUF" beside M0-W-1200)
            for other in siblings:
                stating = [line for r in place if (line := self._line_naming(r, other))]
                if not stating:
                    continue
                kind = ", ".join(sorted(kinds & set(other.is_a)))
                against = [_evidence(e, "out-of-scope", None, 4, f"{e.requirement} gives it ‘{other.term}’, not "
                                     f"‘{asked.entry.term}’ (both kinds of {kind})", asked.entry.term) for e in stating]
                audit.verdict = "out of scope for M0"
                audit.requirements = list(dict.fromkeys(e.requirement for e in stating))
                audit.evidence = _dedupe(audit.evidence + against)
                audit.detail = (f"the spec gives {', '.join(audit.requirements)} ‘{other.term}’ where the feature "
                                f"asks for ‘{asked.entry.term}’, another kind of {kind} ({_cite(against)})")
                audit.confidence_reason, audit.deciding_tier = f"another kind of {', '.join(sorted(kinds))}", 4
                return

    def _line_naming(self, rid: str, entry: Entry) -> IndexedLine | None:
        """The first line of requirement `rid`'s block that names `entry` by one of its names."""
        req = self.spec.requirements[rid]
        return next((self.index.at(n) for n in range(req.line, req.body[1] + 1)
                     if _names(entry, self.index.at(n).text)), None)

    def _audit(self, name: str, purpose: str | None) -> FeatureAudit:
        key = key_terms(name)
        matches = self.glossary.match(name, self._specific)
        if not key or (not matches and all(self.index.share(t) > _COMMON_SHARE for t in key)):
            return self._generic(name, purpose, key)
        friends: list[Evidence] = []
        everything = frozenset(key) | frozenset().union(*(m.covered for m in matches))
        evidence = self._direct(name, key, matches, everything, friends)
        evidence += self._blocks(key, matches, evidence) or ([] if any(ev.claim for ev in evidence)
                                                              else self._most_of(key, everything))
        evidence += self._opposite_lines(name, key)
        _opposed(matches, evidence)
        absent = self._absent(name, matches, evidence)
        evidence += self._indirect(matches, everything, purpose, friends)
        self._subordinate(name, matches, evidence)
        evidence = _dedupe(evidence)
        friends = [f for f in _dedupe(friends) if f.line not in {e.line for e in evidence}]
        return self._judge(name, purpose, key, matches, absent, evidence, friends)

    def _direct(self, name, key, matches, everything, friends) -> list[Evidence]:
        """Lines that name the feature or one of its concepts, and the requirements that are them."""
        phrases = [(key, "the feature's words", everything)] if self._specific(key) else []
        # a name the spec writes as code ("cuda_check_device_health", "std::mt19937_64") is the thing itself
        phrases += [((t,), f"the spec's name ‘{t}’", frozenset({t})) for t in dict.fromkeys(key)
                    if _IDENTIFIER.search(t) and 0 < self.index.share(t) <= _COMMON_SHARE and (t,) != key]
        for m in matches:
            phrases += [(terms(n), m.entry.term, m.covered) for n in m.entry.names if self._specific(terms(n))]
        kin = set().union(*(self.glossary.kin(m.entry) for m in matches))
        evidence = self._mentions(key, phrases, friends, kin, basis_prefix="")
        for m in matches:
            evidence += self._concept_claims(m.entry, "", key, self._weight(m.covered) / self._weight(everything))
            evidence += self._aspect_lines(m, key, everything, _negated_terms(name))
        return evidence

    def _most_of(self, key, everything) -> list[Evidence]:
        """When no line names the feature or its concepts with a scope: the best-ranked prose lines that
        name most of it (two thirds of the weight of its words, two words at least)."""
        found = []
        for entry, _ in self.index.search(key, k=10):
            named = set(key) & self.index.line_terms(entry)
            share = self._weight(named) / self._weight(everything)
            if entry.code or len(named) < 2 or share < _MOST:
                continue
            claim, milestone, tier, basis = self._claim(entry, tuple(t for t in key if t in named))
            found.append(_evidence(entry, claim, milestone, tier if claim else CONTEXT,
                                   f"names most of the feature ({', '.join(sorted(named))}); {basis}",
                                   "the feature's words", (share, _title_fit(entry, set(key)))))
        return found

    def _blocks(self, key, matches, evidence: list[Evidence]) -> list[Evidence]:
        """The requirements whose block (heading and body, read as one unit) names most of the feature
        (two thirds of the weight of its words, two words at least; a glossary concept counts as named
        where the block names it by any of its names), best share first: such a requirement settles the
        feature with its scope even when no single line names it. Its heading and the body line that
        names most of the feature are cited."""
        wanted = set(key)
        found, best = [], 0.0
        widest = max((ev.fit[0] for ev in evidence if ev.claim), default=0.0)
        for rid, block in self._block_terms.items():
            named = _named_by(block, wanted, matches)
            share = self._weight(named) / self._weight(wanted)
            title = frozenset(terms(self.spec.requirements[rid].title))
            if len(named) < 2 or share < max(_MOST, best) or not _named_by(title, wanted, matches):
                continue
            # a block that leaves out one of the feature's concepts speaks of something else in its words
            # (M0-W-1600's first SSE token "emitted" is no "started event")
            if any(m.entry.req and not m.covered & wanted <= named for m in matches):
                continue
            claim = self._stated_claim(rid)
            if any(ev.claim for ev in evidence) and (claim in ("in-m0", "optional") or share <= widest):
                continue
            if share > best:
                found, best = [], share
            head = self.index.at(self.spec.requirements[rid].line)
            line = self._best_line(rid, tuple(t for t in key if t in named))
            basis = f"the block of {rid} names {', '.join(sorted(named))} ({_scope_words(self.index.entries[rid])})"
            found += [_evidence(e, claim, None, 4, basis, "the feature's words", (share, 1.0))
                      for e in dict.fromkeys((head, line))]
        return found

    def _aspect_lines(self, match, key, everything, negated: frozenset[str]) -> list[Evidence]:
        """Lines of the concept's own requirements that name the rest of the feature ("202" of "HTTP 202
        from POST /cancel" in the body of M0-W-1330): what the requirement says about that aspect. A line
        that negates what the feature negates too ("No atomics" for "kernels with no atomics") agrees
        with it: the requirement's scope holds."""
        aspect = {t for t in key if t not in match.covered and self._specific((t,))}
        found = []
        for rid in match.entry.req if aspect else ():
            start, end = self.spec.requirements[rid].body
            for n in range(start, end + 1):
                entry = self.index.at(n)
                named = aspect & self.index.line_terms(entry)
                if not named or entry.code:
                    continue
                claim, milestone, tier, basis = self._claim(entry, tuple(sorted(named, key=key.index)))
                if basis.startswith("negated") and named <= negated:
                    claim, tier, basis = self._stated_claim(rid), 4, f"in the body of {rid}, negated as the feature is"
                fit = (self._weight(match.covered | named) / self._weight(everything), 1.0)
                found.append(_evidence(entry, claim, milestone, tier if claim else CONTEXT,
                                       f"{basis}; the requirement of ‘{match.entry.term}’ names the feature's "
                                       f"{', '.join(sorted(named))} here", match.entry.term, fit))
        return found

    def _indirect(self, matches, everything, purpose, friends) -> list[Evidence]:
        """What the feature's concepts are instances of or means to, and what its stated purpose names."""
        evidence = []
        for m in matches:
            share = self._weight(m.covered) / self._weight(everything)
            for relation, target in self.glossary.related(m.entry):
                link = "is an instance of" if relation == "is_a" else "is a means to"
                evidence += self._concept(target, f"indirect: {m.entry.term} {link} ‘{target.term}’", friends,
                                          5 if relation == "is_a" else 6, share)
        for m in self.glossary.match(purpose, self._specific) if purpose else []:
            # a claim about the feature, not the feature: it decides only when nothing else does
            evidence += self._concept(m.entry, f"indirect: the stated purpose “{purpose}” names ‘{m.entry.term}’",
                                      friends, 6, 0.0)
        return evidence

    def _judge(self, name, purpose, key, matches, absent, evidence, friends) -> FeatureAudit:
        verdict, detail, deciding, contradictory = _decide(evidence)
        audit = FeatureAudit(name, purpose, verdict, detail, "", "", [m.entry.term for m in matches],
                             self._requirements_of(deciding), evidence, friends)
        audit.contradictions = contradictory + self._contradictions(evidence, audit.requirements)
        if verdict not in ("contradictory", "not addressed by the spec"):
            clash = self._recorded_clash(audit, set(key) - set().union(*(m.covered for m in matches)), deciding)
            if clash:
                audit.verdict, audit.detail = "contradictory", clash
        if audit.verdict == "not addressed by the spec":
            self._not_addressed(audit, key, matches, absent)
        else:
            self._cite_details(audit, key)
            tier = audit.deciding_tier = min(e.tier for e in deciding)
            audit.confidence_reason = TIER_NAMES[tier] + (f"; {len(audit.contradictions)} contradiction(s) noted"
                                                          if audit.contradictions else "")
        return audit

    def _cite_details(self, audit: FeatureAudit, key: tuple[str, ...]) -> None:
        """Beside a deciding requirement, the line of its body that states the feature's own detail
        ("float eps = 1e-5" of M0-W-1432 for "LayerNorm with eps 1e-5"): the words of the feature it
        names beyond those the lines already cited name, most weight first. A reviewer checks the
        detail there."""
        cited = {ev.line for ev in audit.evidence if ev.claim and ev.source == "spec"}
        named = set().union(*(self.index.line_terms(self.index.at(n)) for n in cited)) if cited else set()
        rest = set(key) - named
        for rid in audit.requirements:
            req = self.spec.requirements.get(rid)
            if req is None or not rest:
                continue
            best, weight = None, 0.0
            for n in range(req.line + 1, req.body[1] + 1):
                entry = self.index.at(n)
                w = self._weight(rest & self.index.line_terms(entry)) if rest & self.index.line_terms(entry) else 0.0
                if w > weight:
                    best, weight = entry, w
            claim = self._stated_claim(rid)
            if _VERDICT_OF[claim] != audit.verdict:
                claim = None  # a line of the requirement the feature goes against, or of the other side
            if best is not None and best.line not in cited:
                audit.evidence.append(_evidence(best, claim, None, 4 if claim else CONTEXT,
                                                f"the line of {rid} that states the feature's "
                                                f"{', '.join(sorted(rest & self.index.line_terms(best)))}",
                                                "the feature's words"))
        audit.evidence.sort(key=lambda ev: (ev.source, ev.line))

    def _opposite_lines(self, name: str, key: tuple[str, ...]) -> list[Evidence]:
        """M0 lines that state the opposite of a word the feature asks for (glossary opposites: "absolute
        path to .gguf file" for "a relative --model path"), about the same thing: naming another word of
        the feature, or a phrase rare enough to be a rule of its own ("VRAM-only"). The feature goes
        against them: out of scope."""
        found = []
        asked = terms(name)
        for word, opposite in self.glossary.opposites:
            if not _contains(_without(asked, opposite), word) or _contains(_without(asked, word), opposite):
                continue
            anchors = {t for t in key if t not in word and self._specific((t,))}
            holding = [e for e in self.index.lines if not e.code and _contains(terms(e.text), opposite)
                       and not _contains(_without(terms(e.text), opposite), word)]
            rare = len(holding) <= _RARE_LINES
            for entry in holding:
                st = entry.statement
                listed = st is not None and st.source in ("list", "table") and st.kind == "in-m0"
                required = entry.requirement and self._stated_claim(entry.requirement) in ("in-m0", "optional")
                named = anchors & self.index.line_terms(entry)
                pos = _position(entry.text, opposite[0])
                if not (listed or required) or not (named or rare) or _NEGATION.search(entry.text[:pos]) \
                        or not _same_thing(asked, word, terms(entry.text), opposite):
                    continue
                fit = (self._weight(named | set(word)) / self._weight(key), 1.0)
                found.append(_evidence(entry, "out-of-scope", None, 2 if listed else 4,
                                       f"states ‘{' '.join(opposite)}’ where the feature asks for ‘{' '.join(word)}’"
                                       + (f" ({entry.requirement})" if entry.requirement else ""),
                                       "the feature's words", fit))
        return found

    def _subordinate(self, name: str, matches, evidence: list[Evidence]) -> None:
        """A feature is about its head, not about what it is for or applied to: in "pipeline parallelism
        for GPT-OSS-20B" the lines about GPT-OSS-20B say nothing of pipeline parallelism. When a
        concept of the head has lines stating a scope, the claims of concepts named only after the
        head ("for", "on", "in", "through", ...) that put it in M0 become context; where the spec states the
        head's scope directly, so do the deferrals of body lines that only mention them (a deferred
        performance target naming Qwen2.5-0.5B says nothing of "Q8_0 weights for Qwen2.5-0.5B", line 798
        does). What the scope lists and markers exclude of them stands, and every prohibition: a feature
        that needs a deferred thing ("releasing the KV cache when the client disconnects") waits for it."""
        head = set(key_terms(_head(name)))
        if not head or head == set(key_terms(name)):
            return
        def concepts(ms):
            return {c for m in ms for c in self.glossary.kin(m.entry)}
        of_head = concepts(m for m in matches if m.covered & head)
        of_rest = concepts(m for m in matches if not m.covered & head) - of_head
        if not of_rest or not any(ev.claim and ev.concept in of_head for ev in evidence):
            return
        direct = any(ev.claim and ev.concept in of_head and ev.tier <= 3 for ev in evidence)
        for ev in evidence:
            incidental = ev.tier == 4 and ev.claim in ("deferred-M1", "later") and direct
            if ev.claim and ev.concept in of_rest and (ev.claim in ("in-m0", "optional") or incidental):
                ev.claim, ev.milestone, ev.tier = None, None, CONTEXT
                ev.basis += f"; ‘{ev.concept}’ is what the feature is for or applied to, not the feature"

    def _qualified(self, audit: FeatureAudit, name: str, found: list[Qualifier]) -> None:
        """An "in M0" verdict holds for the feature's qualifiers ("v2" of "GGUF v2 files") only where
        the spec states them: another value of the same kind stated for it puts the feature out of
        scope, or in the milestone the spec gives the qualifier itself ("Q8_0": M2+); a model size
        the spec does not name, or a qualifier of a kind it states no value of, leaves the feature
        not addressed. The lines stating the spec's own value are cited."""
        lines = [self.index.at(ev.line) for ev in audit.evidence if ev.source == "spec"]
        for q in found:
            c = check(q, name, self.index, lines)
            if c.outcome in ("stated", "configurable", "refused"):
                says = {"stated": f"states the {q.kind} “{q.text}”",
                        "configurable": f"calls its {q.kind} configurable, which admits “{q.text}”",
                        "refused": f"states the range that refuses the {q.kind} “{q.text}”"}[c.outcome]
                stating = [_evidence(line, self._stated_claim(line.requirement) if line.requirement else "in-m0", None,
                                     4, says, "qualifier")
                           for line in (self.index.at(n) for n in c.lines)]
                cited = {ev.line for ev in audit.evidence if ev.claim in ("in-m0", "optional")}
                audit.evidence = _dedupe(audit.evidence + stating)
                if not cited & set(c.lines) and all(ev.claim not in ("in-m0", "optional") for ev in stating):
                    # the value is stated only in a requirement of another milestone ("GGUF parsing: <1s" of
                    # M0-W-1620, deferred): the feature with that value is that requirement's
                    verdict, detail, deciding, _ = _decide(stating)
                    audit.verdict, audit.requirements = verdict, self._requirements_of(deciding)
                    audit.detail = f"the spec states the {q.kind} “{q.text}” only in {', '.join(audit.requirements)}: {detail}"
                    audit.confidence, audit.confidence_reason = "medium", f"the {q.kind} decides: no M0 line states it"
                    audit.deciding_tier = None
                    return
                continue
            generic = f"without it the feature is {audit.detail}"
            own = self._audit(q.text, None) if q.kind in NAMED_KINDS and c.outcome == "differs" else None
            if own is not None and own.verdict == "in M0":
                continue  # M0 has the named value itself ("Q4_0" among M0's quantization formats)
            if c.outcome == "differs" and q.kind != "model size":
                later = own is not None and own.verdict in ("deferred to M1", "later milestone")
                if not later and q.kind in FURTHER_VALUES:  # a value the spec does not list: what it says of the rest
                    own = self._audit(FURTHER_VALUES[q.kind], None)
                    later = own.verdict in ("deferred to M1", "later milestone")
                audit.verdict = own.verdict if later else "out of scope for M0"
                stating = [_evidence(self.index.at(n), "out-of-scope", None, 1,
                                     f"states another {q.kind} than “{q.text}”", "qualifier") for n in c.lines]
                audit.evidence = _dedupe(audit.evidence + stating + ([ev for ev in own.evidence if ev.claim]
                                                                     if later else []))
                if later:
                    generic = f"for {q.text} itself the spec says {own.detail}; {generic}"
                audit.confidence, audit.confidence_reason = "medium", f"the {q.kind} decides: {describe(c)}"
            else:
                audit.verdict = "not addressed by the spec"
                audit.closest = [_evidence(self.index.at(n), None, None, CONTEXT, f"states the spec's {q.kind}",
                                           "closest") for n in c.lines]
                audit.closest += [ev for ev in audit.evidence if ev.claim][:3] if not c.lines else []
                audit.check = f"check whether {q.text} is wanted; the spec decides the feature only without it"
                audit.confidence, audit.confidence_reason = "medium", describe(c)
            audit.detail = f"{describe(c)}; {generic}"
            audit.deciding_tier = None
            return

    def _absent(self, name: str, matches, evidence: list[Evidence]) -> list[str]:
        """Concepts of the feature's head the spec never names, by a word it never uses ("TLS"). When
        one is missing and no line names the whole feature, the lines about its other concepts ("the
        HTTP port" of "TLS on the HTTP port") decide nothing: they become context. A missing concept
        after the head ("in CI" of "golden tokenizer vectors in CI") leaves the head to decide."""
        named = {ev.concept for ev in evidence}
        head = set(key_terms(_head(name)))
        absent = [m.entry.term for m in matches if m.entry.term not in named and m.covered & head
                  and any(self.index.share(t) == 0 for t in m.covered)]
        if absent and "the feature's words" not in named:
            for ev in evidence:
                ev.claim, ev.milestone, ev.tier = None, None, CONTEXT
            return absent
        return []

    def _recorded_clash(self, audit: FeatureAudit, aspect: set[str], deciding: list[Evidence]) -> str | None:
        """A contradiction the catalog records between the deciding requirement and another one about
        the aspect the feature asks for (its words beyond the glossary concept: "exiting with code 1"
        of "insufficient VRAM": M0-W-1020 exits, M0-W-1220 stays alive). An aspect the deciding lines
        already state, on lines outside the note, is settled by them ("within 5 s" of M0-W-1330's own
        deadline line), so only the aspect words that the note's lines add count."""
        if not aspect:
            return None
        for rid in audit.requirements:
            for note in self.index.entries[rid].get("contradictions", []):
                others = {self.index.at(n).requirement for n in note["lines"]} - {rid, None}
                settled = set().union(*(self.index.line_terms(self.index.at(e.line)) for e in deciding
                                        if e.source == "spec" and e.line not in note["lines"]))
                # the words of the clash itself, as the note tells it: "fail" of "Fail fast" is on a line of
                # the note, the clash is exiting against staying alive
                clash = (aspect - settled) & set(terms(note["note"]))
                if others and any(clash & self.index.line_terms(self.index.at(n)) for n in note["lines"]):
                    cited = {ev.line for ev in audit.evidence}
                    for n in note["lines"]:
                        line = self.index.at(n)
                        if n not in cited and line.requirement:
                            audit.evidence.append(_evidence(line, self._stated_claim(line.requirement), None, 4,
                                                            f"catalog contradiction note on {rid}", "contradiction"))
                    audit.evidence.sort(key=lambda ev: (ev.source, ev.line))
                    return (f"{audit.detail}, but the catalog records that {rid} and {', '.join(sorted(others))} "
                            f"disagree: {note['note'].rstrip('.')} (lines {', '.join(map(str, note['lines']))})")
        return None

    def _requirements_of(self, deciding: list[Evidence]) -> list[str]:
        """The requirement ids the deciding lines belong to or name."""
        ids = {e.requirement for e in deciding if e.requirement}
        for e in deciding:
            st = self.index.at(e.line).statement if e.source == "spec" else None
            ids |= set(st.ids) if st else set()
        return sorted(ids)

    # --- evidence

    def _weight(self, words) -> float:
        # in sorted order: a float sum over a set depends on the process's hash seed, and shares compared
        # with ">" then flip between runs ("Qwen2.5-0.5B loading in under 10 s" cited 2258 in some runs)
        return sum(self.index.weight(t) for t in sorted(words)) or 1.0

    def _specific(self, phrase: tuple[str, ...]) -> bool:
        """A phrase worth looking for: more than one term, or one term that is not everywhere."""
        return bool(phrase) and (len(phrase) > 1 or self.index.share(phrase[0]) <= _COMMON_SHARE)

    def _mentions(self, key, phrases, friends, kin, *, basis_prefix) -> list[Evidence]:
        """Lines that name the feature (all terms of one of its phrases), each with the claim it makes."""
        found = []
        wanted = set(key)
        longer = self._longer_names(phrases, kin)
        for entry in self.index.lines:
            words = self.index.line_terms(entry)
            sequence = terms(entry.text)
            # the feature's own words may stand anywhere on the line; a glossary name must read as one
            hits = [(p, concept, covers) for p, concept, covers in phrases
                    if set(p) <= words and (concept == "the feature's words" or near(p, sequence))]
            if not hits:
                continue
            phrase, concept, _ = max(hits, key=lambda h: (len(h[2]), len(h[0])))
            covered = frozenset().union(*(h[2] for h in hits))
            coverage = self._weight(covered) / self._weight(frozenset().union(*(p[2] for p in phrases)))
            if any(set(other) <= words and set(phrase) < set(other) for other in longer):
                friends.append(_evidence(entry, None, None, CONTEXT, "same words, another concept", concept))
                continue
            claim, milestone, tier, basis = self._claim(entry, phrase)
            fit = (coverage, _title_fit(entry, wanted))
            found.append(_evidence(entry, claim, milestone, tier if claim else CONTEXT, basis_prefix + basis, concept, fit))
        return found

    def _longer_names(self, phrases, kin) -> list[tuple[str, ...]]:
        """Glossary names of unrelated concepts that contain one of the feature's phrases ("zero-copy JSON
        parsing" around "zero-copy"): a line naming them is about something else."""
        mine = {tuple(p) for p, _, _ in phrases}
        out = []
        for entry in self.glossary.entries:
            if entry.term in kin:
                continue
            for n in entry.names:
                t = terms(n)
                if t in mine:
                    continue
                if any(set(p) < set(t) for p in mine) and not any(set(t) <= set(p) for p in mine):
                    out.append(t)
        return out

    def _claim(self, entry: IndexedLine, phrase: tuple[str, ...]) -> tuple[str | None, str | None, int, str]:
        """(claim, milestone, tier, basis) of a line that names the feature."""
        text = entry.text
        pos = _position(text, max(phrase, key=self.index.weight))
        before = text[:pos]
        st = entry.statement
        if entry.code:
            if st is not None:
                return st.kind, st.milestone, 3, "marker in a code comment"
            if entry.requirement and all(_IDENTIFIER.search(t) for t in phrase):
                return self._stated_claim(entry.requirement), None, 4, f"in the code of {entry.requirement}, which names it"
            return None, None, CONTEXT, "code"
        if _RELIANCE.search(before):
            return None, None, CONTEXT, "named as what M0 relies on"
        # "No FFI for tokenization", or after the term: "cross-GPU reproducibility is NOT guaranteed"
        negated = _NEGATION.search(before) or _NEGATED_AFTER.match(text, pos) or _NON.match(text, pos)
        if st is not None and st.source in ("list", "table"):
            tier = 1 if st.section.startswith("0.0") or st.kind == "prohibited" else 2
            if negated and st.kind in ("in-m0", "optional"):
                return "out-of-scope", None, tier, f"excluded within an item of {entry.scope_list}"
            if _in_explanation(text, st.name, pos):
                return None, None, CONTEXT, f"named only in the explanation of an item of {entry.scope_list}"
            inner = _parenthetical_claim(text, pos)
            if inner:
                return inner[0], inner[1], tier, f"item of {entry.scope_list}, marked in parentheses"
            return st.kind, st.milestone, tier, f"item of {entry.scope_list}"
        if negated:
            kind = "prohibited" if re.search(r"must not|prohibit", before, re.IGNORECASE) else "out-of-scope"
            return kind, None, 4 if entry.requirement else 3, "negated: " + (
                f"in {entry.requirement}" if entry.requirement else "in the text")
        start, sentence = _sentence_at(text, pos)
        if st is not None and st.milestone == "post-M0" and entry.requirement:
            # "Performance Test Suite (DEFERRED)" names no milestone: its requirement's scope says which
            return self._stated_claim(entry.requirement), None, 3, f"deferral marker of {entry.requirement}"
        if st is not None and (sentence == text or _MARKER.search(sentence)):
            return st.kind, st.milestone, 3, "scope marker on the line"
        # the marker stands in another sentence of the line: this one speaks for itself
        if _IN_M0.search(sentence) and not entry.heading:
            if _VALUE_FIX.search(sentence, pos - start):
                # "concurrency for M0 MUST be 1" decides the value M0 uses, not whether the feature is in M0
                return None, None, CONTEXT, "the line fixes its value for M0"
            return "in-m0", None, 3, "the line says it is for M0"
        if entry.requirement:
            req = self.index.entries[entry.requirement]
            claim = self._stated_claim(entry.requirement)
            if entry.line == req["line"]:
                return claim, None, 1, f"heading of {entry.requirement}, which names it"
            return claim, None, 4, f"in the body of {entry.requirement} ({_scope_words(req)})"
        return None, None, CONTEXT, "names it"

    def _concept_claims(self, concept: Entry, basis_prefix: str, query: tuple[str, ...],
                        coverage: float = 1.0) -> list[Evidence]:
        """The requirements that are the concept, the scope lines naming their ids, and its conflicts;
        `coverage` is the share of the feature the concept accounts for."""
        fit = (coverage, 1.0)
        found = []
        for rid in concept.req:
            req = self.index.entries[rid]
            head = self.index.at(req["line"])
            found.append(_evidence(head, self._stated_claim(rid), None, 1,
                                   f"{basis_prefix}{rid} is ‘{concept.term}’ ({_scope_words(req)})",
                                   concept.term, fit))
            for st in self.spec.statements:
                if rid in st.ids and st.line != req["line"]:
                    tier = 1 if st.source == "list" and st.section.startswith("0.0") else 2 if st.source in ("list", "table") else 3
                    found.append(_evidence(self.index.at(st.line), st.kind, st.milestone, tier,
                                           f"{basis_prefix}names {rid}", concept.term, fit))
        for rid, why in concept.conflicts:
            line = self._best_line(rid, query + key_terms(" ".join(concept.names)))
            found.append(_evidence(line, "prohibited", None, 4,
                                   f"{basis_prefix}‘{concept.term}’ conflicts with {rid}: {why}", concept.term, fit))
        return found

    def _stated_claim(self, rid: str) -> str:
        """The scope the spec states for requirement `rid`. A scope the catalog only infers from the
        requirement's purpose (no scope list names it) is not a statement: the requirement stands in
        this M0 spec as written, and the inference is shown as a note beside the verdict."""
        req = self.index.entries[rid]
        return "in-m0" if req.get("scope_basis") == "purpose" else _SCOPE_CLAIM[req["scope"]]

    def _best_line(self, rid: str, query: tuple[str, ...]) -> IndexedLine:
        """The line of requirement `rid` that best matches `query` (else the line its keyword opens)."""
        req = self.spec.requirements[rid]
        inside = [e for e, _ in self.index.search(query, k=len(self.index.lines))
                  if req.line < e.line <= req.body[1] and not e.code]
        return inside[0] if inside else self.index.at(req.opening_line or req.line)

    def _concept(self, concept: Entry, basis: str, friends, tier: int, share: float) -> list[Evidence]:
        """Evidence about a related concept, all of it indirect (at `tier`), covering `share` of the feature."""
        phrases = [(terms(n), concept.term, frozenset({concept.term})) for n in concept.names
                   if self._specific(terms(n))]
        kin = self.glossary.kin(concept)
        found = self._mentions(key_terms(concept.term), phrases, friends, kin, basis_prefix=basis + "; ")
        found += self._concept_claims(concept, basis + "; ", key_terms(concept.term))
        for ev in found:
            if ev.claim is not None:
                ev.tier, ev.fit = tier, (round(share, 6), 1.0)
            if tier == 5 and ev.claim in ("in-m0", "optional"):
                # M0 having a kind of thing says nothing of every kind ("two tokenizer backends" is not
                # SentencePiece), while a kind of a deferred or excluded thing is deferred or excluded too
                ev.claim, ev.tier, ev.basis = None, CONTEXT, ev.basis + "; in M0 as a whole, which decides no kind of it"
            elif tier == 6 and ev.claim in ("in-m0", "optional", "deferred-M1", "out-of-scope"):
                # M0 having the end says nothing of a means to it (YaRN for Qwen's context), nor does a
                # deferred target (tokens per second) defer what would reach it (tensor cores); a means
                # to a later or prohibited thing waits for it (a paged KV allocator for continuous batching)
                ev.claim, ev.tier, ev.basis = None, CONTEXT, ev.basis + "; the scope of an end is not that of its means"
        return found

    # --- answers without a verdict

    def _generic(self, name, purpose, key) -> FeatureAudit:
        audit = FeatureAudit(name, purpose, "not addressed by the spec", GENERIC_READING,
                             "high", "a verdict from generic words would be a guess", [], [])
        audit.check = ("name the feature itself (what it does, the technique, the endpoint); words such as "
                       f"{', '.join(repr(w) for w in name.split()[:4])} occur all over the spec")
        audit.closest = [_evidence(e, None, None, CONTEXT, f"BM25 {score:.1f}", "closest") for e, score in
                         self.index.search(key, k=3)] if key else []
        return audit

    def _not_addressed(self, audit: FeatureAudit, key, matches, absent: list[str]) -> None:
        query = key + tuple(t for m in matches for n in m.entry.names for t in key_terms(n))
        ranked = [(e, s) for e, s in self.index.search(query, k=12) if not e.code][:5]
        audit.closest = [_evidence(e, None, None, CONTEXT, f"BM25 {score:.1f}", "closest") for e, score in ranked]
        # the requirements of the feature's concepts and of what they relate to: where a reviewer looks first
        shown = {e.line for e, _ in ranked}
        why = "a requirement of a concept of the feature or of what it relates to"
        related = {rid: why for m in matches for rid in (*m.entry.req, *(r for _, t in self.glossary.related(m.entry)
                                                                         for r in t.req), *(r for r, _ in m.entry.conflicts))}
        # and the requirement whose block names most of the feature's words
        most, rid = self.best_block(set(key), matches)
        if most > 0:
            related.setdefault(rid, "the requirement whose block names most of the feature's words")
        for rid, basis in related.items():
            if rid in self.spec.requirements:
                line = self._best_line(rid, query)
                if line.line not in shown:
                    shown.add(line.line)
                    audit.closest.append(_evidence(line, None, None, CONTEXT, f"in {rid}, {basis}", "closest"))
        if self.index.parent:
            audit.closest += [_evidence(e, None, None, CONTEXT, f"BM25 {score:.1f}" + (
                f"; parent heading milestone {e.milestone_tag}" if e.milestone_tag else ""), "closest")
                for e, score in self.index.search(query, k=3, source="parent")]
        reqs = list(dict.fromkeys(e.requirement for e, _ in ranked if e.requirement))
        named = [m.entry.term for m in matches]
        if absent:
            audit.detail = (f"the spec never names {' or '.join(absent)}; the lines about the rest of the feature "
                            "state nothing about it")
        elif audit.evidence:
            audit.detail = "the spec names it, but no line states a scope for it"
        elif named:
            audit.detail = f"the spec does not name it (known to the glossary as {', '.join(named)})"
        else:
            audit.detail = "the spec does not name it"
        titles = [f"{r} ({self.index.entries[r]['title']})" for r in reqs[:3]]
        where = f"whether it falls under {', '.join(titles)}" if titles else "the closest lines below"
        audit.check = f"check {where}; if it is wanted in M0, ask the spec owner to scope it"
        audit.confidence = "unsure" if ranked else "high"  # calibrate says why, and what to check
        audit.confidence_reason = RELATED_LINES if ranked else "no line shares a word with it"

    def _contradictions(self, evidence: list[Evidence], requirements: list[str]) -> list[Contradiction]:
        """Scope claims that disagree below the deciding tier, and the catalog's notes on the deciding requirements."""
        found = []
        claims = [e for e in evidence if e.claim and e.tier <= 3]
        found += _disagreements(claims, "the spec's direct statements")
        for rid in requirements:
            req = self.index.entries[rid]
            for c in req.get("contradictions", []):
                found.append(Contradiction("requirement note", f"{rid}: {c['note'].rstrip('.')}", c["lines"]))
            if req.get("scope_basis") == "purpose":
                found.append(Contradiction("scope inferred by the catalog", f"{rid}: {req['scope_note'].rstrip('.')}",
                                           req["scope_lines"]))
        return found


def audit_features(features: list[str], spec: ParsedSpec, catalog: Catalog, *, purposes: list[str | None] | None = None,
                   parent_text: str | None = None, glossary: Glossary | None = None) -> list[FeatureAudit]:
    """Audit each feature (with the purpose claimed for it, if any); raise AuditError for none or a blank name."""
    names = [f.strip() for f in features]
    if not names:
        raise AuditError("give at least one feature, e.g. m0-conformance audit \"speculative decoding\"")
    if not all(names):
        raise AuditError("a feature without a name; every feature needs a few words saying what it is")
    auditor = Auditor(SpecIndex(spec, catalog, parent_text), glossary)
    auditor.meanings.expect(names)
    purposes = purposes or [None] * len(names)
    return [auditor.audit(name, purpose) for name, purpose in zip(names, purposes)]


# --- verdicts

def _decide(evidence: list[Evidence]) -> tuple[str, str, list[Evidence], list[Contradiction]]:
    stating = [ev for ev in evidence if ev.claim is not None]
    if not stating:
        return "not addressed by the spec", "", [], []
    # the lines that name most of the feature decide; among them the strongest tier, then the best fit
    widest = max(ev.fit[0] for ev in stating)
    claims = [ev for ev in stating if ev.fit[0] >= 0.75 * widest]
    tier = min(ev.tier for ev in claims)
    top = [ev for ev in claims if ev.tier == tier]
    best = max(ev.fit for ev in top)
    top = [ev for ev in top if ev.fit == best]
    # related concepts and stated purposes may point different ways; only the spec's own lines contradict
    # it: the deciding lines, and the scope decisions and lists (tiers 1-2) that name as much of the
    # feature, or at least half of it and a milestone with nothing in common (§0.0 defers the metrics
    # endpoint to M1, §14.1 its full exporter to M2+)
    # "optional in M0, required from M1+" is one answer, not two
    optional_now = any(ev.claim == "optional" for ev in top) and \
        all(ev.claim in ("optional", "later", "deferred-M1") for ev in top)
    clash = _disagreements(top, "the deciding lines") if tier <= 4 and not optional_now else []
    if tier <= 4:
        close = [ev for ev in claims if ev.tier <= 2 and ev.fit[0] >= best[0] and ev not in top]
        broad = [ev for ev in stating if ev.tier <= 2 and ev.fit[0] >= 0.5 * widest and ev not in top]
        for rivals, kind in ((close, "in M0 vs not in M0"), (broad, "milestones differ")):
            if rivals and not any(c.kind == kind for c in clash):
                clash += [c for c in _disagreements(top + rivals, "the lines that state its scope") if c.kind == kind]
    if clash:
        sides = _union(top, [ev for ev in stating if ev.line in clash[0].lines])  # both sides, cited and quoted
        return "contradictory", f"the spec disagrees with itself: {clash[0].note} ({_cite(sides)})", sides, clash
    if optional_now and any(ev.claim != "optional" for ev in top):
        later = sorted({ev.milestone or "M1" for ev in top if ev.claim != "optional"})
        return "in M0", f"optional in M0, required from {' / '.join(later)} ({_cite(top)})", top, []
    strongest = max(_STRENGTH[ev.claim] for ev in top)
    deciding = [ev for ev in top if _STRENGTH[ev.claim] == strongest]
    claim = deciding[0].claim
    detail = _CLAIM_TEXT[claim]
    milestones = sorted({ev.milestone for ev in deciding if ev.milestone and ev.milestone != "post-M0"})
    if claim == "later" and milestones:
        detail += f": {' / '.join(milestones)}"
    detail += f" ({_cite(deciding)})"
    if tier >= 5:
        reasons: dict[str, list[str]] = {}
        for ev in deciding:  # "the stated purpose “…” is A", "… is B" -> "the stated purpose “…” is A, B"
            head, _, target = ev.basis.split(";")[0].removeprefix("indirect: ").partition(" ‘")
            target = "‘" + target
            reasons.setdefault(head, []).append(target) if target not in reasons.get(head, []) else None
        detail += "; indirect: " + "; ".join(f"{head} {', '.join(targets)}" for head, targets in reasons.items())
    return _VERDICT_OF[claim], detail, deciding, []


def _names(entry: Entry, text: str) -> bool:
    """Whether `text` names the glossary entry: one of its names' terms in a row ("layer norm", not
    "{layer}" ... "norm")."""
    words = terms(text)
    return any(_contains(words, terms(n)) for n in entry.names)


def _named_by(words: frozenset[str], wanted: set[str], matches) -> set[str]:
    """The feature's terms (`wanted`) that `words` name, itself or by a name of the glossary concept
    that covers them ("health endpoint" names the "/health" of the feature)."""
    named = wanted & words
    for m in matches:
        if any(set(terms(n)) <= words for n in m.entry.names if terms(n)):
            named |= m.covered & wanted
    return named


def _opposed(matches, evidence: list[Evidence]) -> None:
    """A feature that goes against a requirement (a glossary conflict: "one bulk cudaMemcpy" against
    chunked transfer) is not in M0 by that requirement's lines: M0 having the requirement is what rules
    the feature out, so those lines become context beside the conflict. What M0 has of the rest of the
    feature says nothing for it either: the KV cache is M0, "cudaMallocManaged for the KV cache" is
    ruled out, and so is the M0 forward pass "in Rust with candle"."""
    against = {rid for m in matches for rid, _ in m.entry.conflicts}
    ruling = {m.entry.term for m in matches if m.entry.conflicts}
    for ev in evidence:
        if ev.claim not in ("in-m0", "optional") or ev.concept == "contradiction":
            continue
        if ev.requirement in against:
            ev.claim, ev.tier, ev.basis = None, CONTEXT, f"{ev.basis}; {ev.requirement} is what the feature goes against"
        elif ruling and ev.concept not in ruling:
            ev.claim, ev.tier, ev.basis = None, CONTEXT, f"{ev.basis}; the feature's {', '.join(sorted(ruling))} goes against M0"


def _same_thing(asked: tuple[str, ...], word: tuple[str, ...], line: tuple[str, ...], opposite: tuple[str, ...]) -> bool:
    """Whether the opposite on the line qualifies what the word qualifies in the feature: "absolute
    path" against "a relative --model path", not "absolute pos embedding" against "a relative
    tolerance". Where the feature names nothing after the word, or the line nothing around the
    opposite, nothing tells them apart."""
    def around(seq, phrase, before):
        first = _positions(phrase, seq)[:1]
        return {t for i in first for t in seq[max(0, i - before):i] + seq[i + len(phrase):i + len(phrase) + 2]}
    # the line may state it after the thing ("job_id MUST be non-empty")
    mine, theirs = around(asked, word, 0), around(line, opposite, 3)
    return not mine or not theirs or bool(mine & theirs)


def _contains(words: tuple[str, ...], phrase: tuple[str, ...]) -> bool:
    return bool(_positions(phrase, words))


def _positions(phrase: tuple[str, ...], seq: tuple[str, ...]) -> list[int]:
    """Where `phrase` starts in `seq` (none for an empty phrase)."""
    return [i for i in range(len(seq) - len(phrase) + 1) if phrase and seq[i:i + len(phrase)] == phrase]


def _without(words: tuple[str, ...], phrase: tuple[str, ...]) -> tuple[str, ...]:
    """`words` with each occurrence of `phrase` taken out ("non empti" holds no "empti" of its own)."""
    out, i, n = [], 0, len(phrase)
    while i < len(words):
        if words[i:i + n] == phrase:
            i += n
        else:
            out.append(words[i])
            i += 1
    return tuple(out)


def _head(feature: str) -> str:
    """The words the feature is about: before "for", "on", "through", ...; in "using X as Y", the Y."""
    role = re.match(r"\s*(?:using|use of|use)\s.+?\sas\s(.+)", feature, re.IGNORECASE)
    return _HEAD_END.split(role.group(1) if role else feature, maxsplit=1)[0]


def _said(side) -> str:
    """A side of a disagreement as the audit quotes it: what it states and where."""
    return f"{side.says} ({_lines(list(side.lines))})"


def _spelled(text: str, term: str) -> str:
    """How `text` writes a search term: the letters it stems from ("Omni" for "omni"), else the word of
    `text` that reads as it ("vocabulary" for "vocabulari")."""
    m = re.search(rf"(?i)(?<![A-Za-z]){re.escape(term)}[A-Za-z_]*", text)
    if m:
        return m.group(0)
    return next((w for w in re.findall(r"[\w.+/-]+", text) if term in terms(w)), term)


def _absent_phrases(feature: str) -> list[str]:
    """What the feature's main clause asks to be absent: the words after "no", "without", "never",
    "instead of", "in place of", "rather than" or a verb of leaving out ("dropping Phi-3-Mini"), or
    before "off" / "disabled" ("unified memory is off"). Conditions and purposes ("when no GPU is present",
    "so the logits never leave VRAM", "that is not a UUID") describe circumstances, not the feature."""
    words = re.findall(r"[^\s,;()]+", _SUBCLAUSE.split(feature, maxsplit=1)[0])
    low = [w.lower() for w in words]
    found = []
    for i, w in enumerate(low):
        pair = " ".join(low[i:i + 2])
        if w in _LEAVING_OUT or pair in _LEAVING_OUT:
            start = i + len((pair if pair in _LEAVING_OUT else w).split())
            rest = [x for x in words[start:start + 3] if x.lower() not in ("a", "an", "the", "any")]
            cut = next((k for k, x in enumerate(rest) if x.lower() in _PREPOSITIONS), len(rest))
            found.append(" ".join(rest[:min(cut, 2)]))
        elif w in ("off", "disabled"):
            before = [x for x in words[max(0, i - 4):i] if x.lower() not in ("is", "are", "stays", "kept", "turned", "switched", "set", "left")]
            found.append(" ".join(before[-2:]))
    return [f for f in found if terms(f)]


def _sentence_at(text: str, pos: int) -> tuple[int, str]:
    """(where it starts, the sentence) of `text` that holds character `pos`."""
    start = 0
    for m in re.finditer(r"(?<=[.!?])\s+(?=[A-Z*`])", text):
        if m.start() >= pos:
            return start, text[start:m.start()]
        start = m.end()
    return start, text[start:]


def _negated_terms(text: str) -> frozenset[str]:
    """The terms the feature itself negates: the two after "no", "not", "without" or "never"."""
    words = re.findall(r"\S+", text.lower())
    return frozenset(t for i, w in enumerate(words) if w in ("no", "not", "without", "never")
                     for t in terms(" ".join(words[i + 1:i + 3])))


def _union(first: list[Evidence], more: list[Evidence]) -> list[Evidence]:
    return first + [ev for ev in more if ev not in first]


def _disagreements(claims: list[Evidence], where: str) -> list[Contradiction]:
    found = []
    in_m0 = [ev.line for ev in claims if ev.claim in ("in-m0", "optional")]
    outside = [ev.line for ev in claims if ev.claim not in ("in-m0", "optional")]
    # "optional in M0" beside "deferred to M1" or a later milestone is one answer: M0 may, a later one must
    optional_then_later = all(ev.claim in ("optional", "deferred-M1", "later") for ev in claims)
    if in_m0 and outside and not optional_then_later:
        found.append(Contradiction("in M0 vs not in M0", f"{_lines(in_m0)} put it in M0 while {_lines(outside)} "
                                   f"keep it out of M0", sorted(set(in_m0 + outside))))
    sets = {}
    for ev in claims:
        if ev.claim in ("later", "deferred-M1") and ev.milestone and ev.milestone != "post-M0":
            sets.setdefault(ev.milestone, []).append(ev.line)
    names = sorted(sets)
    disjoint = [(a, b) for i, a in enumerate(names) for b in names[i + 1:] if not (_range(a) & _range(b))]
    if disjoint:
        parts = "; ".join(f"{m} at {_lines(lines)}" for m, lines in sorted(sets.items()))
        found.append(Contradiction("milestones differ", f"{where} name milestones with nothing in common: {parts}",
                                   sorted({n for lines in sets.values() for n in lines})))
    return found


def _range(milestone: str) -> set[int]:
    """The milestones a label admits: "M2+" is M2 and later, "M4" only M4."""
    number = int(re.search(r"\d", milestone).group())
    return set(range(number, 10)) if milestone.endswith("+") else {number}


# --- helpers over lines

def _evidence(entry: IndexedLine, claim, milestone, tier, basis, concept, fit=(1.0, 1.0)) -> Evidence:
    fit = (round(fit[0], 6), round(fit[1], 6))  # shares summed in another order must still compare equal
    if claim == "later" and milestone in ("M1", "M1+"):
        claim = "deferred-M1"  # "ready callback (M1+)": it starts at M1, so it is deferred to M1
    return Evidence(entry.line, entry.section, entry.text, claim, milestone, tier, basis, concept, entry.requirement,
                    entry.requirement_scope, entry.scope_list, fit, entry.source)


def _scope_words(req: dict) -> str:
    if req.get("scope_basis") == "purpose":
        return f"no scope list names it; the catalog infers {req['scope']} from its purpose"
    return f"catalog scope {req['scope']}"


def _title_fit(entry: IndexedLine, wanted: set[str]) -> float:
    """For a heading, the share of its own terms that the feature names (a title with fewer extra words fits better)."""
    if not entry.heading:
        return 1.0
    title = set(key_terms(re.sub(r"\[M0-[^\]]+\]|^#+\s*[\d.]*", "", entry.text)))
    return len(title & wanted) / len(title) if title else 1.0


def _position(text: str, term: str) -> int:
    """Where `term` first occurs in `text` (characters)."""
    for match in re.finditer(r"\S+", text):
        if term in terms(match.group()):
            return match.start()
    return 0


def _in_explanation(text: str, name: str, pos: int) -> bool:
    """True if `pos` lies after the item's name, past a dash or colon that starts its explanation."""
    start = text.find(name)
    if start < 0 or pos < start + len(name):
        return False
    # a dash or colon inside parentheses ("(M2+)", "(Impact: …)") starts no explanation
    masked = re.sub(r"\([^()]*\)", lambda m: "x" * len(m.group()), text)
    gap = _EXPLANATION.search(masked, start + len(name))
    return gap is not None and gap.start() < pos


def _parenthetical_claim(text: str, pos: int) -> tuple[str, str | None] | None:
    """A scope marker inside the parentheses around `pos` ("(graceful shutdown endpoint deferred)")."""
    open_at = text.rfind("(", 0, pos + 1)  # the word at `pos` may open the parentheses itself
    if open_at < 0 or text.rfind(")", 0, pos) > open_at:
        return None
    close_at = text.find(")", pos)
    inner = text[open_at + 1:close_at if close_at > 0 else len(text)].lower()
    if "defer" in inner:
        milestone = re.search(r"\bm([1-9])\+?", inner)
        if milestone and milestone.group(1) != "1":
            return "later", f"M{milestone.group(1)}+"
        return "deferred-M1", "M1"
    if "optional" in inner:
        return "optional", None
    return None


def _dedupe(evidence: list[Evidence]) -> list[Evidence]:
    """One piece of evidence per line: the strongest (lowest tier, a claim over context, then the best fit)."""
    best: dict[tuple[str, int], Evidence] = {}
    for ev in evidence:
        key = (ev.source, ev.line)
        rank = (ev.tier, ev.claim is None, tuple(-x for x in ev.fit))
        if key not in best or rank < (best[key].tier, best[key].claim is None, tuple(-x for x in best[key].fit)):
            best[key] = ev
    return sorted(best.values(), key=lambda ev: (ev.source, ev.line))


def _cite(evidence: list[Evidence], most: int = 6) -> str:
    """'§0.0 lines 22, 76; §7.6 line 1307': the lines grouped by section number, the first `most` of them."""
    ordered = sorted(evidence, key=lambda ev: (ev.tier, ev.line))
    by_section: dict[str, list[int]] = {}
    for ev in sorted(ordered[:most], key=lambda ev: ev.line):
        by_section.setdefault(ev.section.split()[0], []).append(ev.line)
    more = f"; and {len(ordered) - most} more" if len(ordered) > most else ""
    return "; ".join(f"{section} {_lines(lines)}" for section, lines in by_section.items()) + more


def _lines(lines: list[int]) -> str:
    unique = sorted(set(lines))
    return f"line{'s' if len(unique) > 1 else ''} {', '.join(map(str, unique))}"
