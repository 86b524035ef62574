"""How sure the scope audit is of a verdict, set from signals measured on parts written blind to it.

Held-out parts 3 and 4 (155 features, audit_labels.yaml) showed that the tier of the deciding lines
says little on its own: "the requirement itself -> in M0" was right 13 of 28 times, "related lines
exist -> not addressed" 17 of 43, "contradictory" 1 of 9, while "implied by a requirement -> in M0"
was right 27 of 33. What separated the right verdicts from the wrong ones there:

- for "in M0", words of the feature that neither the deciding lines nor the blocks of the deciding
  requirements state ("microbenchmarks" of "kernel microbenchmarks in the CUDA unit tests"): M0
  having part of the feature says nothing of the rest, which may have another scope or none (with
  a third of the feature's word weight unstated, 8 of 26 right; with every word stated, 19 of 22).
  A verdict that defers the feature is not weakened so: a deferred area defers each kind of it
  (18 of 21 right with words unstated on held-out 3 and 4). A prohibition is: on the blind parts 3
  to 10, "out of scope" from tiers 1, 2 and 4 with words unstated was right 18 of 23 times (78%),
  against 34 of 38 for "in M0" with every word stated, so it is "medium";
- for "in M0", a word the spec never uses that the glossary knows only as a concept without
  requirements ("Mamba", one of the other model families);
- for "not addressed", a requirement block naming 40% of the feature's word weight or more, or a
  line that ranks high for its words: the spec may address it in other words (8 of 33 right;
  the other "not addressed" beside related lines, 9 of 10);
- "contradictory" (1 of 9 right): which of the disagreeing lines governs is a reader's call.

Qualifiers (numbers, versions, data types: audit_qualifiers.py) are checked on their own and do
not count as unstated words.

A verdict with such a sign is "unsure": a reviewer must decide, shown the closest requirements. It
keeps its best guess, so the benchmark still scores it. "high" is given only to verdicts of tiers
1, 2 and 4 with no contradiction noted beside them, and for "in M0" and "out of scope" only where
the deciding lines and their requirements state every word of the feature (22 of 23 right on
held-out 3 and 4, which these rules were read from; a part written after them is the real
measure). A marker in the text (tier 3) speaks for its sentence, which may be about something else (4 of 7 right): it and tier 5
give "medium". Tier 6 (a means to, a purpose claimed) and "not addressed" beside related lines
were once "low"; on the blind parts 5 to 8 "low" was right about as often as "unsure" (3 of 7 on
part 8, 39% for unsure) while "medium" stayed apart (12 of 19), so they are "unsure" now.
"""

from __future__ import annotations

from dataclasses import dataclass

from .audit_qualifiers import qualifiers, strip_qualifiers
from .spec_index import key_terms

_UNSTATED = 0.3  # share of the feature's word weight that the deciding requirement may leave unstated
_NAMES_MOST = 0.4  # block share at which "not addressed" is doubtful
_RANKS_HIGH = 3.0  # BM25 score of the best line at which "not addressed" is doubtful
# verdicts that hold for exactly what the deciding lines name: M0 having, or a requirement ruling out, part of
# a feature says nothing of the rest
_EXACT = ("in M0", "out of scope for M0")
# why a "not addressed" beside related lines is a guess: the audit sets it, _doubt reads it
RELATED_LINES = "related lines exist; a reader should confirm none of them covers it"
# an "in M0" read from meaning: the line nearest to the feature lies in the requirement naming most of its words
BY_MEANING = "the spec does not name it: the line nearest to it in meaning, in the requirement naming most of its words, decides"

# a verdict the verdict model prefers to the rules' (verdict_model.py): two readings disagree
WEIGHED = "the rules and the verdict model disagree: the model's verdict is given, the rules' kept beside it"


@dataclass
class Signals:
    unstated: list[str]  # the feature's terms that the deciding lines and requirement blocks never state
    unstated_share: float  # their share of the feature's word weight
    unused: list[str]  # the feature's terms that no spec line uses, known to the glossary only as a concept
    # the spec defines no requirement for ("Mamba", one of the other model families)
    best_block: tuple[str, float] | None  # the requirement whose block names most of the feature, and its share
    top_score: float  # BM25 score of the spec line that ranks best for the feature's words


def signals(auditor, audit) -> Signals:
    """The signals of `audit` (made by `auditor`) that the calibration reads."""
    from .audit import _named_by  # the audit module imports this one

    key = set(key_terms(strip_qualifiers(audit.feature, qualifiers(audit.feature))))
    matches = auditor.glossary.match(audit.feature, auditor._specific)
    index = auditor.index
    stated = set()
    for ev in audit.evidence:
        if ev.claim and ev.source == "spec":
            stated |= index.line_terms(index.at(ev.line))
    for rid in audit.requirements:
        stated |= auditor._block_terms.get(rid, frozenset())
    unstated = sorted(key - _named_by(frozenset(stated), key, matches)) if key else []
    # a concept the spec defines (one with requirements) names its words by any of its names; one it
    # does not (a family of things) names none of them for the feature
    defined = set().union(*(m.covered for m in matches if m.entry.req))
    undefined = set().union(*(m.covered for m in matches if not m.entry.req))
    unused = sorted(t for t in key & undefined - defined if index.share(t) == 0)
    share, rid = auditor.best_block(key, matches)
    ranked = index.search(tuple(key), k=1) if key else []
    return Signals(unstated, auditor._weight(unstated) / auditor._weight(key) if unstated else 0.0, unused,
                   (rid, share) if rid else None,
                   ranked[0][1] if ranked else 0.0)


def calibrate(auditor, audit, s: Signals) -> None:
    """Set `audit.confidence` (high / medium / unsure) and its reason, from the tier of the
    deciding lines (`audit.deciding_tier`, None when no line decides) and the signals `s` (as `signals`
    gives them). An unsure verdict gets `audit.unsure`: what a reviewer must decide, with the closest
    requirements and their lines."""
    tier = audit.deciding_tier
    doubt = _doubt(audit, s, tier)
    if doubt:
        audit.confidence = "unsure"
        audit.confidence_reason = doubt
        audit.unsure = f"unsure: a reviewer must decide; {_closest(auditor, audit, s)}"
        return
    if audit.verdict == "not addressed by the spec":
        return  # generic words, no line sharing a word, a qualifier or a word the spec never uses
    if tier is None:
        audit.confidence = "medium"  # decided by a qualifier
    elif tier in (1, 2, 4) and not audit.contradictions and not (audit.verdict in _EXACT and s.unstated):
        audit.confidence = "high"
        audit.confidence_reason += ("; the deciding lines keep out of M0 what the feature is a kind of"
                                    if s.unstated else "; the deciding lines state every word of the feature")
    elif tier <= 5:
        audit.confidence = "medium"
        if s.unstated:
            audit.confidence_reason += f"; the deciding lines do not state {', '.join(s.unstated)}"
    else:  # a means to something, or a purpose claimed: no better than a guess on the blind parts
        audit.confidence, audit.confidence_reason = "unsure", f"{audit.confidence_reason}: a guess from what it serves"
        audit.unsure = f"unsure: a reviewer must decide; {_closest(auditor, audit, s)}"


def weighed_against_rules(auditor, audit, s: Signals, rules_verdict: str) -> None:
    """Mark unsure a verdict the verdict model gave against the rules' `rules_verdict`."""
    audit.confidence, audit.confidence_reason = "unsure", WEIGHED
    audit.unsure = (f"unsure: a reviewer must decide between {audit.verdict} and the rules' {rules_verdict}; "
                    f"{_closest(auditor, audit, s)}")


def _doubt(audit, s: Signals, tier: int | None) -> str | None:
    """Why the verdict is a guess, or None."""
    if audit.verdict == "contradictory":
        return "the spec's lines disagree, and which one governs is a reading of intent"
    if audit.confidence_reason == BY_MEANING:
        return BY_MEANING
    if audit.verdict == "not addressed by the spec":
        if audit.confidence_reason != RELATED_LINES:
            return None
        if s.best_block and s.best_block[1] >= _NAMES_MOST:
            return (f"the block of {s.best_block[0]} names {s.best_block[1]:.0%} of the feature's word weight: "
                    "the spec may address it in other words")
        if s.top_score >= _RANKS_HIGH:
            return "a spec line ranks high for the feature's words: the spec may address it in other words"
        return RELATED_LINES
    if audit.verdict == "in M0" and s.unused:
        return (f"the spec never uses {', '.join(s.unused)}, which the glossary knows only as a concept without "
                "requirements: the lines about the rest of the feature may not be about it")
    if audit.verdict == "in M0" and s.unstated_share >= _UNSTATED:
        return (f"the deciding lines never state {', '.join(s.unstated)} "
                f"({s.unstated_share:.0%} of the feature's word weight): M0 may have only part of it")
    return None


def _closest(auditor, audit, s: Signals) -> str:
    """'closest requirements: M0-W-1330 (POST /cancel) lines 1262, 1263; …': the deciding requirements,
    then the one whose block names most of the feature, then those of the other lines shown."""
    known = auditor.spec.requirements
    lines: dict[str, list[int]] = {rid: [] for rid in audit.requirements if rid in known}
    if s.best_block:
        lines.setdefault(s.best_block[0], [])
    for ev in list(audit.evidence) + list(audit.closest):
        if ev.requirement in known and ev.source == "spec" and (ev.claim or ev in audit.closest):
            lines.setdefault(ev.requirement, []).append(ev.line)
    if not lines:
        return "no requirement names it; see the closest lines"
    parts = []
    for rid, found in list(lines.items())[:3]:
        found = sorted(set(found))[:3] or [known[rid].line]
        parts.append(f"{rid} ({auditor.index.entries[rid]['title']}) line{'s' if len(found) > 1 else ''} "
                     f"{', '.join(map(str, found))}")
    return "closest requirements: " + "; ".join(parts)
