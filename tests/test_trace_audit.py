"""Scope audit: verdicts, citations, indirect evidence, contradictions, and the committed example."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from requirements_map.audit import VERDICTS, AuditError, audit_features, load_concepts
from requirements_map.catalog import load_catalog
from requirements_map.cli import main
from requirements_map.spec_source import load_spec

pytest_plugins = ["trace_fixtures"]

EXAMPLES = Path(__file__).resolve().parents[1] / "reports" / "examples"
EXAMPLE_FEATURES = ["speculative decoding", "API key authentication", "top-k sampling", "Prometheus /metrics",
                    "multi-GPU tensor parallelism", "a model-load progress bar", "zero-copy host memory"]


@pytest.fixture(scope="module")
def audits(record_spec):
    found = audit_features(EXAMPLE_FEATURES + ["KV-cache block allocator", "decode-loop refactor", "CUDA graphs",
                                               "GUI theme editor"], record_spec.parsed, load_catalog())
    return {a.feature: a for a in found}


@pytest.mark.parametrize("fmt, suffix", [([], "md"), (["--json"], "json")])
def test_committed_example_is_what_the_command_prints(fmt, suffix, capsys, record_spec):
    assert main(["audit", "--spec", str(record_spec.path), *fmt, *EXAMPLE_FEATURES]) == 0
    assert capsys.readouterr().out == (EXAMPLES / f"scope-audit.{suffix}").read_text(encoding="utf-8")


def test_example_verdicts(audits):
    expected = {"speculative decoding": ("later milestone", "M3+"),
                "API key authentication": ("later milestone", "M2+ / M3+"),
                "top-k sampling": ("later milestone", "M2+"),
                "Prometheus /metrics": ("deferred to M1", "§0.0 lines 22"),
                "multi-GPU tensor parallelism": ("later milestone", "M2+ / M4"),
                "a model-load progress bar": ("in M0", "§0.0 line 49"),
                "zero-copy host memory": ("out of scope for M0", "prohibited")}
    for feature, (verdict, detail) in expected.items():
        assert audits[feature].verdict == verdict, feature
        assert detail in audits[feature].detail, (feature, audits[feature].detail)


def test_every_quote_is_the_spec_line_it_cites(audits, record_spec):
    for audit in audits.values():
        assert audit.verdict in VERDICTS
        for ev in audit.evidence + audit.false_friends:
            assert record_spec.parsed.text(ev.line).strip() == ev.text
            number = record_spec.parsed.section_of(ev.line).number
            assert ev.section.startswith(f"§{number} ")


def test_contradictions_are_flagged(audits):
    metrics = {c.kind for c in audits["Prometheus /metrics"].contradictions}
    assert {"in M0 vs not in M0", "milestones differ"} <= metrics
    assert any(1305 in c.lines and 22 in c.lines for c in audits["Prometheus /metrics"].contradictions)
    tp = audits["multi-GPU tensor parallelism"].contradictions
    assert any(c.kind == "milestones differ" and {129, 2917, 2983} <= set(c.lines) for c in tp)
    assert not audits["speculative decoding"].contradictions


def test_same_words_with_another_meaning_are_set_apart(audits):
    zero_copy = audits["zero-copy host memory"]
    assert [ev.line for ev in zero_copy.false_friends] == [2218]
    assert 2218 not in [ev.line for ev in zero_copy.evidence]
    assert 285 in [ev.line for ev in zero_copy.evidence if ev.claim == "prohibited"]


def test_features_named_only_by_purpose(audits):
    allocator = audits["KV-cache block allocator"]
    assert allocator.verdict == "later milestone" and "indirect" in allocator.detail
    assert {2916, 2919} <= {ev.line for ev in allocator.evidence}
    assert audits["decode-loop refactor"].verdict == "later milestone"
    graphs = audits["CUDA graphs"]
    assert graphs.verdict == "deferred to M1" and "latency targets" in graphs.detail
    assert audits["GUI theme editor"].verdict == "not addressed by the spec"


def test_the_next_revision_brings_top_k_into_m0_and_contradicts_itself(later_revision):
    spec = load_spec(later_revision("84202fea"), warn=lambda m: None)
    from requirements_map.catalog import derive_catalog
    [top_k] = audit_features(["top-k sampling"], spec.parsed, derive_catalog(spec.parsed, spec.revision))
    assert top_k.verdict == "in M0"
    assert any(c.kind == "in M0 vs not in M0" for c in top_k.contradictions)


def test_concept_table_is_consistent():
    concepts = load_concepts()
    names = {c["name"] for c in concepts}
    catalog = load_catalog().by_id()
    for concept in concepts:
        assert concept["aliases"] and all(s["concept"] in names for s in concept.get("serves", []))
        assert all(r["id"] in catalog and r["relation"] in ("defines", "prohibits", "excludes")
                   for r in concept.get("requirements", []))
        for pattern in concept.get("terms", []) + concept.get("context_terms", []):
            re.compile(pattern)


@pytest.mark.parametrize("features", [[], ["  "]])
def test_an_empty_feature_list_is_refused(features, record_spec, capsys):
    with pytest.raises(AuditError):
        audit_features(features, record_spec.parsed, load_catalog())
    assert main(["audit", "--spec", str(record_spec.path), *features]) == 2
    err = capsys.readouterr().err
    assert "m0-conformance audit: error:" in err and "Traceback" not in err


def test_audit_json_is_machine_readable(capsys, record_spec):
    assert main(["audit", "--json", "--spec", str(record_spec.path), "stop sequences"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["summary"] == [{"feature": "stop sequences", "verdict": "not addressed by the spec",
                                "detail": "no spec line mentions it", "contradictions": 0}]
