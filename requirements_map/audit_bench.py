"""Scope audit benchmark: verdict accuracy and key-line recall on the labelled features.

    python -m requirements_map.audit_bench [--spec FILE] [--part all|tuned|held-out|held-out-N] [--misses]
                                           [--train] [--write-calibration]

The labels (data/audit_labels.yaml) were written by reading the spec. A third of the first set was
held out of the first round of tuning (`held_out: true`); a second held-out part (`held_out: 2`)
was written before the second round and looked at in the third (both are spent: their misses were
studied). Held-out 3 (`held_out: 3`) was written blind and measured once, then studied in round 4;
a later part written blind is marked `held_out: 4` (and so on) and only measured.

A verdict is right when it equals
the label; a key line is cited when the audit rests on (or, for "not addressed", shows as
closest) at least one of the label's key lines. Prints two tables per part: rows per class, and the
calibration (verdicts right per confidence level, and among those not marked unsure).
Each part's rows are of the verdicts given (the rules weighed by the verdict model); a line after them
gives the rules' verdicts alone and says whether the model was trained on the part. `--train` trains
the model (data/verdict_model.json) on the parts that the labels' `model_held_out` does not name.
`--write-calibration` stores the calibration over the blind parts held out of that training
(data/audit_calibration.json), which the proof document quotes so that a reader knows how far each
confidence level can be trusted.
Last, for the parts a second reader labelled without seeing the first reading
(data/audit_second_reading.yaml): how often the two readers agree (what a tool can be held to), and
how often the audit is right where they do.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import sys
from importlib import resources

import yaml

import numpy as np

from .audit import VERDICTS, Auditor
from .audit_confidence import signals
from .catalog import derive_catalog, load_catalog
from .spec_index import SpecIndex
from .spec_source import SpecSourceError, load_spec
from .verdict_model import load_verdict_model, signal_vector, store, train

PART = re.compile(r"all|tuned|held-out(?:-\d+)?$")
BLIND_FROM = 3  # parts from held_out: 3 on were written blind to the audit: the honest measure of it
CALIBRATION = resources.files("requirements_map") / "data" / "audit_calibration.json"


def load_labels(name: str = "audit_labels.yaml") -> list[dict]:
    """The labelled features; with `name` "audit_second_reading.yaml", a second reader's verdicts on
    some blind parts, read without the first reading (how often two readers agree)."""
    return _label_file(name)["features"]


def model_held_out() -> list[str]:
    """The parts the verdict model is not trained on: measured only."""
    return _label_file("audit_labels.yaml")["model_held_out"]


@functools.cache  # a large file, read by several callers
def _label_file(name: str) -> dict:
    return yaml.safe_load((resources.files("requirements_map") / "data" / name).read_text(encoding="utf-8"))


def part_of(label: dict) -> str:
    """"tuned", "held-out" (the first held-out part) or "held-out-N" for `held_out: N`."""
    held = label.get("held_out")
    return "held-out" if held is True else f"held-out-{held}" if held else "tuned"


def cited_lines(audit) -> set[int]:
    """The lines a reader is pointed to: those stating a scope, for "contradictory" the lines of the
    disagreements shown, and for "not addressed" the closest ones."""
    lines = {ev.line for ev in audit.evidence if ev.claim and ev.source == "spec"}
    if audit.verdict == "contradictory":
        lines |= {n for c in audit.contradictions for n in c.lines}
    return lines | {ev.line for ev in audit.closest if ev.source == "spec"}


def score(labels: list[dict], audits) -> dict[str, dict[str, list[int]]]:
    """Per class: [right verdicts, features with key lines, of which a key line is cited, total]."""
    table: dict[str, list[int]] = {}
    for label, audit in zip(labels, audits):
        row = table.setdefault(label["verdict"], [0, 0, 0, 0])
        row[0] += audit.verdict == label["verdict"]
        if label["key_lines"]:
            row[1] += 1
            row[2] += bool(set(label["key_lines"]) & cited_lines(audit))
        row[3] += 1
    return table


def render(part: str, table: dict[str, list[int]]) -> str:
    out = [f"## {part}", "", "| class | features | verdict right | key line cited |", "| --- | --- | --- | --- |"]
    totals = [0, 0, 0, 0]
    for verdict in VERDICTS:
        if verdict not in table:
            continue
        right, keyed, cited, n = table[verdict]
        totals = [a + b for a, b in zip(totals, table[verdict])]
        out.append(f"| {verdict} | {n} | {_pct(right, n)} | {_pct(cited, keyed)} |")
    right, keyed, cited, n = totals
    out.append(f"| **all classes** | {n} | **{_pct(right, n)}** | **{_pct(cited, keyed)}** |")
    return "\n".join(out)


LEVELS = ("high", "medium", "unsure")


def calibration(labels: list[dict], audits) -> str:
    """Per confidence level, the verdicts right / total; then how right the verdicts not marked unsure
    are, and how many of the misses the unsure mark caught."""
    out = ["| confidence | verdict right |", "| --- | --- |"]
    for level in LEVELS:
        pairs = [(f, a) for f, a in zip(labels, audits) if a.confidence == level]
        out.append(f"| {level} | {_pct(sum(a.verdict == f['verdict'] for f, a in pairs), len(pairs))} |")
    sure = [(f, a) for f, a in zip(labels, audits) if a.confidence != "unsure"]
    misses = [a for f, a in zip(labels, audits) if a.verdict != f["verdict"]]
    out.append(f"| not unsure | {_pct(sum(a.verdict == f['verdict'] for f, a in sure), len(sure))} |")
    out += ["", f"Marked unsure: {len(labels) - len(sure)} of {len(labels)}; misses caught by it: "
                f"{_pct(sum(a.confidence == 'unsure' for a in misses), len(misses))}."]
    return "\n".join(out)


def blind_calibration(labels: list[dict], audits, trained_on: list[str]) -> dict:
    """Verdicts right per confidence level on the parts written blind to the audit that the verdict model
    was not trained on (`trained_on`)."""
    blind = [(f, a) for f, a in zip(labels, audits) if isinstance(f.get("held_out"), int)
             and not isinstance(f["held_out"], bool) and f["held_out"] >= BLIND_FROM
             and part_of(f) not in trained_on]
    parts = sorted({f["held_out"] for f, _ in blind})
    return {"parts": [parts[0], parts[-1]] if parts else [], "features": len(blind),
            "levels": {level: [sum(a.verdict == f["verdict"] for f, a in blind if a.confidence == level),
                               sum(a.confidence == level for _, a in blind)] for level in LEVELS}}


def agreement(labels: list[dict], second: list[dict], audits) -> str:
    """Per part that a second reader read: how often the two readers agree, how often the audit is
    right where they agree, and how often it gives either reader's verdict."""
    first = {f["feature"]: (f["verdict"], a.verdict) for f, a in zip(labels, audits)}
    out = ["| part | readers agree | audit right where they agree | audit gives either reader's verdict |",
           "| --- | --- | --- | --- |"]
    for part in sorted({part_of(f) for f in second}):
        # (first reader, audit, second reader) per feature of the part
        rows = [(*first[f["feature"]], f["verdict"]) for f in second if part_of(f) == part]
        agreed = [(one, got) for one, got, other in rows if one == other]
        right = sum(got == one for one, got in agreed)
        either = sum(got in (one, other) for one, got, other in rows)
        out.append(f"| {part} | {_pct(len(agreed), len(rows))} | {_pct(right, len(agreed))} | {_pct(either, len(rows))} |")
    return "\n".join(out)


def load_calibration() -> dict:
    return json.loads(CALIBRATION.read_text(encoding="utf-8"))


def _pct(part: int, whole: int) -> str:
    return f"{part}/{whole} ({100 * part / whole:.0f}%)" if whole else "—"


def _part(text: str) -> str:
    if not PART.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r}: use all, tuned, held-out or held-out-N")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m requirements_map.audit_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--spec", help="spec file (default: $M0_SPEC, else the cached pinned revision)")
    parser.add_argument("--part", type=_part, action="append",
                        help="all, tuned, held-out or held-out-N (default: all, and each part the labels have)")
    parser.add_argument("--misses", action="store_true", help="list the features whose verdict or key line is missed")
    parser.add_argument("--train", action="store_true",
                        help="train the verdict model on the parts model_held_out does not name (pinned spec only)")
    parser.add_argument("--write-calibration", action="store_true",
                        help=f"store the calibration over the blind parts in {CALIBRATION.name} (pinned spec only)")
    args = parser.parse_args(argv)
    try:
        spec = load_spec(args.spec)
    except SpecSourceError as exc:
        print(f"audit_bench: error: {exc}", file=sys.stderr)
        return 2
    if (args.train or args.write_calibration) and not spec.is_pinned:
        print("audit_bench: error: the labels are of the revision of record; --train and --write-calibration need it",
              file=sys.stderr)
        return 2
    catalog = load_catalog() if spec.is_pinned else derive_catalog(spec.parsed, spec.revision)
    labels = load_labels()
    auditor = Auditor(SpecIndex(spec.parsed, catalog), weighs=False)
    auditor.meanings.expect([f["feature"] for f in labels])
    audits = [auditor.audit(f["feature"]) for f in labels]
    if args.train:
        held_out = model_held_out()
        trained = [(f, a) for f, a in zip(labels, audits) if part_of(f) not in held_out]
        store(train(np.stack([signal_vector(auditor, a, signals(auditor, a)) for _, a in trained]),
                    [f["verdict"] for f, _ in trained], [part_of(f) for f, _ in trained]))
    rules = [a.verdict for a in audits]
    for a in audits:
        auditor.weigh(a)
    model = load_verdict_model()
    trained_on = model.trained_on if model else []
    if args.write_calibration:
        CALIBRATION.write_text(json.dumps(blind_calibration(labels, audits, trained_on), indent=1) + "\n",
                               encoding="utf-8")
    present = {part_of(f) for f in labels}
    ordered = sorted(present, key=lambda p: (p != "tuned", int(p.rpartition("-")[2]) if p[-1].isdigit() else 1))
    for part in args.part or ["all", *ordered]:
        chosen = [i for i, f in enumerate(labels) if part in ("all", part_of(f))]
        pairs = [(labels[i], audits[i]) for i in chosen]
        print(render(part, score([f for f, _ in pairs], [a for _, a in pairs])), end="\n\n")
        alone = sum(rules[i] == labels[i]["verdict"] for i in chosen)
        seen = "" if part == "all" else "; the verdict model was trained on it" if part in trained_on else \
            "; the verdict model was not trained on it"
        print(f"Rules alone, before the verdict model: {_pct(alone, len(chosen))}{seen}.", end="\n\n")
        print(calibration([f for f, _ in pairs], [a for _, a in pairs]), end="\n\n")
        if args.misses:
            for f, a in pairs:
                keyed = set(f["key_lines"])
                if a.verdict != f["verdict"] or (keyed and not keyed & cited_lines(a)):
                    print(f"- {f['feature']!r}: expected {f['verdict']} {sorted(keyed)}, got {a.verdict}: {a.detail}")
            print()
    second = [f for f in load_labels("audit_second_reading.yaml")
              if any(part in ("all", part_of(f)) for part in args.part or ["all"])]
    if second:
        print("## two readers\n\n" + agreement(labels, second, audits), end="\n\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
