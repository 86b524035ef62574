"""The audit's proof document: Markdown for a reader who checks each quote against the spec, and JSON."""

from __future__ import annotations

from dataclasses import asdict

from .audit import TIER_NAMES, Evidence, FeatureAudit
from .findings import Finding, findings_for, load_findings


def audit_findings(audit: FeatureAudit, findings: list[Finding]) -> list[Finding]:
    """The spec findings (findings.json) on the requirements the verdict rests on or its direct
    lines belong to: a reviewer must know where the spec that answers the question is itself wrong."""
    ids = set(audit.requirements) | {ev.requirement for ev in audit.evidence
                                     if ev.requirement and ev.claim and ev.tier <= 4}
    return findings_for(ids, findings)


def as_json(audits: list[FeatureAudit], spec_identity: dict, calibration: dict | None = None) -> dict:
    """The audit as data: a summary row per feature, then every line each verdict rests on (and, for
    the revision the benchmark's labels are of, how often each confidence level was right there)."""
    findings = load_findings()
    return {"spec": spec_identity, **({"calibration": calibration} if calibration else {}),
            "summary": [{"feature": a.feature, "verdict": a.verdict, "confidence": a.confidence, "unsure": a.unsure,
                         "detail": a.detail, "rules_verdict": a.rules_verdict,
                         "requirements": a.requirements, "contradictions": len(a.contradictions),
                         "findings": [f.id for f in audit_findings(a, findings)]} for a in audits],
            "features": [_audit_dict(a, findings) for a in audits]}


def _audit_dict(audit: FeatureAudit, findings: list[Finding]) -> dict:
    data = asdict(audit)
    data["findings"] = [f.as_json() for f in audit_findings(audit, findings)]
    for key in ("evidence", "false_friends", "closest"):
        for item, ev in zip(data[key], getattr(audit, key)):
            item["claim_text"] = ev.claim_text
            item["fit"] = [round(x, 3) for x in ev.fit]
    return data


def render_markdown(audits: list[FeatureAudit], spec_identity: dict, title: str | None = None,
                    calibration: dict | None = None) -> str:
    """The proof document: a summary table, how far its confidence levels can be trusted (`calibration`,
    measured by audit_bench on the revision of record), then per feature its verdict and every line it
    rests on."""
    findings = load_findings()
    out = [f"# {title or 'Scope audit against the M0 worker spec'}", "",
           (f"Spec: `{spec_identity['path']}`, revision {spec_identity['revision']}, "
            f"sha256 `{spec_identity['sha256'][:16]}…`. Line numbers refer to this file; every quote is the "
            "line's text with its indentation stripped."), "",
           "## Summary", "",
           "| feature | verdict | confidence | basis | requirements | contradictions | spec findings |",
           "| --- | --- | --- | --- | --- | --- | --- |"]
    out += [f"| {_cell(a.feature)} | **{a.verdict}**{' (best guess)' if a.unsure else ''} | {a.confidence} | "
            f"{_cell(f'{a.unsure}. Best guess: {a.detail}' if a.unsure else a.detail)} | "
            f"{_ids(a.requirements)} | {len(a.contradictions) or '—'} | "
            f"{', '.join(f.id for f in audit_findings(a, findings)) or '—'} |" for a in audits]
    out += ["", "Evidence is weighed in tiers: " + "; ".join(f"{n} {name}" for n, name in TIER_NAMES.items()) + "."]
    if calibration:
        out += ["", trust_sentence(calibration)]
    for audit in audits:
        out += ["", f"## {audit.feature}", ""]
        if audit.purpose:
            out += [f"Claimed purpose: “{audit.purpose}”", ""]
        out += [f"**Verdict: {audit.verdict}** — {audit.detail}. Confidence: {audit.confidence} "
                f"({audit.confidence_reason}).", ""]
        if audit.unsure:
            out += [f"**{audit.unsure[0].upper()}{audit.unsure[1:]}.** The verdict above is the audit's best guess.", ""]
        if audit.concepts:
            out.append(f"Glossary concepts: {', '.join(audit.concepts)}.")
        claims = sorted((ev for ev in audit.evidence if ev.claim), key=lambda ev: (ev.tier, ev.line))
        direct = [ev for ev in claims if ev.tier <= 4]
        if direct:
            out += ["", "Lines that state a scope for it (strongest first):"]
            out += [_quote(ev, f"*{ev.claim_text}*, tier {ev.tier}, {ev.basis}") for ev in direct]
        indirect = [ev for ev in claims if ev.tier > 4]
        if indirect:
            out += ["", "Indirect evidence (through what it is, or what it is for):"]
            out += [_quote(ev, f"*{ev.claim_text}*, tier {ev.tier}, {ev.basis}") for ev in indirect[:8]]
            if len(indirect) > 8:
                out.append(f"- … and {len(indirect) - 8} more (in the JSON output)")
        context = [ev for ev in audit.evidence if not ev.claim and not ev.basis.startswith("indirect")]
        if context:
            out += ["", "Lines that name it without stating a scope:"]
            out += [_quote(ev, ev.basis) for ev in context[:12]]
            if len(context) > 12:
                out.append(f"- … and {len(context) - 12} more (in the JSON output)")
        if audit.closest:
            out += ["", "Closest lines (none of them names the feature as asked):"]
            out += [_quote(ev, f"{ev.basis}{f', in {ev.requirement}' if ev.requirement else ''}") for ev in audit.closest]
        if audit.check:
            out += ["", f"What to check: {audit.check}."]
        if audit.false_friends:
            out += ["", "Same words, another concept (not evidence):"]
            out += [_quote(ev, "another concept") for ev in audit.false_friends]
        if audit.contradictions:
            out += ["", "Contradictions inside the spec:"]
            out += [f"- {c.kind}: {c.note}." for c in audit.contradictions]
        for finding in audit_findings(audit, findings):
            lines = ", ".join(str(q["line"]) for q in finding.quotes)
            out += ["", f"Spec finding `{finding.id}` ({', '.join(finding.requirements)}; lines {lines}): "
                        f"{finding.title} Meanwhile: {finding.meanwhile}"]
    return "\n".join(out) + "\n"


def trust_sentence(calibration: dict) -> str:
    """How often each confidence level was right on the benchmark's features labelled blind to the audit and
    held out of the verdict model's training."""
    first, last = calibration["parts"]
    rates = ", ".join(f"{level} {right} of {n} ({100 * right / n:.0f}%)"
                      for level, (right, n) in calibration["levels"].items() if n)
    return (f"How far to trust a verdict: on the {calibration['features']} features of the audit benchmark that were "
            f"labelled by reading the spec without the audit and not used to train its verdict model (its parts "
            f"{first} to {last}), the verdicts were right: "
            f"{rates}. An unsure verdict is a best guess for a reviewer to decide; check any verdict against its quotes.")


def _ids(ids: list[str], most: int = 4) -> str:
    if not ids:
        return "—"
    return ", ".join(ids[:most]) + (f" and {len(ids) - most} more" if len(ids) > most else "")


def _quote(ev: Evidence, note: str) -> str:
    where = "parent spec " if ev.source == "parent" else ""
    return f"- {where}line {ev.line}, {ev.section} — {note}: “{ev.text}”"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")
