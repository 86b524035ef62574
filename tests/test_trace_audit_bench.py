"""The labelled features of the audit benchmark, and the benchmark script itself."""
from __future__ import annotations

from collections import Counter

from requirements_map.audit import VERDICTS
from requirements_map.audit_bench import load_labels, main, part_of

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
