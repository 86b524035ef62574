"""The labelled features of the audit benchmark, and the benchmark script itself."""
from __future__ import annotations

from collections import Counter

from requirements_map.audit import VERDICTS
from requirements_map.audit_bench import load_labels, main

pytest_plugins = ["trace_fixtures"]


def test_labels_cover_every_class_in_both_parts_with_real_lines(record_spec):
    labels = load_labels()
    assert len(labels) >= 80
    assert len({f["feature"].lower() for f in labels}) == len(labels)
    held = [f for f in labels if f.get("held_out")]
    assert abs(len(held) - len(labels) / 3) <= 1
    for part in (held, [f for f in labels if not f.get("held_out")]):
        assert set(Counter(f["verdict"] for f in part)) == set(VERDICTS)
    for f in labels:
        assert f["verdict"] in VERDICTS and f["reason"].strip()
        assert bool(f["key_lines"]) == (f["verdict"] != "not addressed by the spec"), f["feature"]
        for n in f["key_lines"]:
            assert record_spec.parsed.text(n).strip(), (f["feature"], n)  # a key line is a line with words


def test_the_benchmark_prints_a_table_per_part_and_class(record_spec, capsys):
    assert main(["--spec", str(record_spec.path), "--part", "tuned"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("## tuned") and "## held-out" not in out
    for verdict in VERDICTS:
        assert f"| {verdict} |" in out
    assert "| **all classes** | 68 |" in out
