"""The labelled features of the audit benchmark, and the benchmark script itself."""
from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

from requirements_map.audit import VERDICTS
from requirements_map.audit_bench import BLIND_FROM, agreement, load_calibration, load_labels, main, part_of
from requirements_map.cli import main as main_cli

pytest_plugins = ["trace_fixtures"]


def test_labels_cover_every_class_in_each_part_with_real_lines(record_spec):
    labels = load_labels()
    assert len({f["feature"].lower() for f in labels}) == len(labels)
    parts = {name: [f for f in labels if part_of(f) == name] for name in ("tuned", "held-out", "held-out-2")}
    first = parts["tuned"] + parts["held-out"]
    assert len(first) >= 80 and abs(len(parts["held-out"]) - len(first) / 3) <= 1
    assert len(parts["held-out-2"]) >= 45
    for part in parts.values():
        assert set(Counter(f["verdict"] for f in part)) == set(VERDICTS)
    for f in labels:
        assert f["verdict"] in VERDICTS and f["reason"].strip()
        if f["verdict"] != "not addressed by the spec":  # for those, key lines are the closest lines, if any
            assert f["key_lines"], f["feature"]
        for n in f["key_lines"]:
            assert record_spec.parsed.text(n).strip(), (f["feature"], n)  # a key line is a line with words


def test_the_benchmark_prints_a_table_per_part_and_class(record_spec, capsys):
    assert main(["--spec", str(record_spec.path), "--part", "tuned"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("## tuned") and "## held-out" not in out
    for verdict in VERDICTS:
        assert f"| {verdict} |" in out
    assert "| **all classes** | 68 |" in out
    # and the calibration: every level, those not unsure, and how many were marked unsure
    for level in ("high", "medium", "unsure", "not unsure"):
        assert f"| {level} |" in out
    assert "Marked unsure: " in out and " of 68; misses caught by it: " in out


def test_the_proof_says_how_far_to_trust_each_level_for_the_revision_of_record_only(record_spec, tmp_path, capsys):
    assert main_cli(["audit", "--spec", str(record_spec.path), "top-k sampling"]) == 0
    proof = capsys.readouterr().out
    right, n = load_calibration()["levels"]["high"]
    assert f"high {right} of {n} (" in proof and "How far to trust a verdict" in proof
    other = tmp_path / "spec.md"  # another revision: the labels do not speak for it
    other.write_text(record_spec.path.read_text(encoding="utf-8") + "\nA closing note.\n", encoding="utf-8")
    assert main_cli(["audit", "--spec", str(other), "top-k sampling"]) == 0
    assert "How far to trust" not in capsys.readouterr().out


def test_the_second_reading_is_of_blind_parts_in_the_labels_own_words(record_spec):
    first = {f["feature"]: f for f in load_labels()}
    second = load_labels("audit_second_reading.yaml")
    assert len(second) >= 70 and len({f["feature"] for f in second}) == len(second)
    for f in second:
        assert f["feature"] in first and first[f["feature"]]["held_out"] == f["held_out"] >= BLIND_FROM
        assert f["verdict"] in VERDICTS and f["reason"].strip()
        assert all(record_spec.parsed.text(n).strip() for n in f["key_lines"]), f["feature"]


def test_agreement_counts_the_readers_and_the_audit_per_part():
    labels = [{"feature": name, "verdict": verdict, "held_out": 9}
              for name, verdict in (("a", "in M0"), ("b", "in M0"), ("c", "contradictory"), ("d", "later milestone"))]
    second = [dict(f, verdict=v) for f, v in zip(labels, ("in M0", "in M0", "in M0", "out of scope for M0"))]
    audits = [SimpleNamespace(verdict=v) for v in ("in M0", "deferred to M1", "in M0", "later milestone")]
    row = agreement(labels, second, audits).splitlines()[-1]
    # the readers agree on a and b; the audit is right on a of those, and gives a reader's verdict on a, c, d
    assert row == "| held-out-9 | 2/4 (50%) | 1/2 (50%) | 3/4 (75%) |"
