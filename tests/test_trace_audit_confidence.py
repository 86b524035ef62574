"""Scope audit confidence: which verdicts are high, which are unsure, and how the proof and bench show it."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from requirements_map.audit import Auditor
from requirements_map.audit_bench import LEVELS, calibration
from requirements_map.audit_proof import as_json, render_markdown
from requirements_map.catalog import load_catalog
from requirements_map.spec_index import SpecIndex

pytest_plugins = ["trace_fixtures"]

IDENTITY = {"path": "spec.md", "revision": "d4a857ac", "sha256": "0" * 64}


@pytest.fixture(scope="module")
def auditor(record_spec):
    return Auditor(SpecIndex(record_spec.parsed, load_catalog()), weighs=False)  # the rules, unweighed


def test_in_m0_with_a_word_the_deciding_requirement_never_states_is_unsure_and_keeps_its_guess(auditor):
    # M0-W-1810 (CUDA unit tests) says nothing of microbenchmarks: M0 may have only part of the feature
    audit = auditor.audit("CUDA unit tests with kernel microbenchmarks")
    assert audit.verdict == "in M0" and audit.confidence == "unsure"
    assert "microbenchmark" in audit.confidence_reason
    assert audit.unsure.startswith("unsure: a reviewer must decide; closest requirements: M0-W-1810")
    assert "line" in audit.unsure


def test_in_m0_stated_word_for_word_by_a_requirement_is_high(auditor):
    audit = auditor.audit("memory-mapped model loading")
    assert (audit.verdict, audit.confidence, audit.unsure) == ("in M0", "high", None)
    assert "every word" in audit.confidence_reason


def test_a_kind_of_an_excluded_area_is_not_unsure_for_the_words_it_adds(auditor):
    # "Mirostat" is nowhere in the spec, but the sampling strategies beyond M0's are all later
    audit = auditor.audit("Mirostat sampling")
    assert audit.verdict == "later milestone" and audit.confidence in ("high", "medium")
    assert audit.unsure is None


def test_a_word_the_glossary_knows_only_as_an_undefined_concept_makes_in_m0_unsure(auditor):
    # Mamba is one of the "other model families", which no requirement defines
    audit = auditor.audit("loading a Mamba GGUF (general.architecture mamba)")
    assert audit.verdict == "in M0" and audit.confidence == "unsure"
    assert "mamba" in audit.confidence_reason


def test_contradictory_is_unsure(auditor):
    audit = auditor.audit("pool manager integration")
    assert audit.verdict == "contradictory" and audit.confidence == "unsure" and audit.unsure


def test_not_addressed_is_unsure_when_a_requirement_block_names_most_of_it(auditor):
    doubtful = auditor.audit("stop sequences")  # M0-W-1830's block names stop and sequence
    assert doubtful.verdict == "not addressed by the spec" and doubtful.confidence == "unsure"
    assert "M0-W-1830" in doubtful.confidence_reason and "M0-W-1830" in doubtful.unsure
    plain = auditor.audit("gzip response compression")  # related lines only: a reader confirms none covers it
    assert (plain.verdict, plain.confidence) == ("not addressed by the spec", "unsure")
    assert "related lines exist" in plain.confidence_reason and plain.unsure


def test_proof_says_unsure_in_the_summary_and_the_feature_section(auditor):
    audits = [auditor.audit("CUDA unit tests with kernel microbenchmarks"), auditor.audit("memory-mapped model loading")]
    text = render_markdown(audits, IDENTITY)
    unsure_row = next(line for line in text.splitlines() if line.startswith("| CUDA unit tests with kernel microbenchmarks"))
    assert "**in M0** (best guess) | unsure | unsure: a reviewer must decide" in unsure_row
    sure_row = next(line for line in text.splitlines() if line.startswith("| memory-mapped model loading"))
    assert "best guess" not in sure_row and "| high |" in sure_row
    assert "**Unsure: a reviewer must decide; closest requirements: M0-W-1810" in text
    summary = as_json(audits, IDENTITY)["summary"]
    assert summary[0]["unsure"].startswith("unsure:") and summary[1]["unsure"] is None


@given(st.lists(st.tuples(st.sampled_from(LEVELS), st.booleans()), max_size=30))
def test_calibration_counts_each_verdict_once(rows):
    labels = [{"verdict": "in M0"} for _ in rows]
    audits = [SimpleNamespace(confidence=level, verdict="in M0" if right else "contradictory") for level, right in rows]
    table = calibration(labels, audits)
    for level in LEVELS:
        n = sum(1 for lv, _ in rows if lv == level)
        right = sum(1 for lv, ok in rows if lv == level and ok)
        assert f"| {level} | {f'{right}/{n}' if n else '—'}" in table
    sure = [ok for lv, ok in rows if lv != "unsure"]
    assert f"| not unsure | {f'{sum(sure)}/{len(sure)}' if sure else '—'}" in table
    misses = [lv for lv, ok in rows if not ok]
    assert f"Marked unsure: {len(rows) - len(sure)} of {len(rows)}" in table
    caught = sum(1 for lv in misses if lv == "unsure")
    assert f"misses caught by it: {f'{caught}/{len(misses)}' if misses else '—'}" in table
