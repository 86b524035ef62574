"""The spec parser: requirement headings, sections, keywords and scope statements."""
from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from requirements_map.scope import infer_scope
from requirements_map.spec_parser import SpecFormatError, ids_in, parse_spec

pytest_plugins = ["trace_fixtures"]


def test_every_requirement_heading_is_found_with_its_line(record_spec):
    spec = record_spec.parsed
    # independent count: heading lines that carry a bracketed id (none of them sits in a code block)
    expected = {m.group(1): n for n, line in enumerate(spec.lines, start=1)
                if (m := re.match(r"^#{2,6} \[(M0-[A-Z]+-[\d.]+)\]", line))}
    assert {rid: req.line for rid, req in spec.requirements.items()} == expected
    assert len(expected) == 97


def test_sections_are_recorded_as_the_file_numbers_them(record_spec):
    reqs = record_spec.parsed.requirements
    # the file has two "## 9." sections and "### 12.2.3" after "### 12.3"
    assert (reqs["M0-W-1400"].section, reqs["M0-W-1400"].section_title) == ("9.1", "Context Management")
    assert (reqs["M0-W-1500"].section, reqs["M0-W-1500"].section_title) == ("9.1", "Error Codes")
    assert reqs["M0-W-1820"].section == "12.3"
    assert reqs["M0-W-1822"].section == "12.2.3"
    assert reqs["M0-W-1213"].section == "8.7.1"


def test_unclosed_code_block_is_reported_and_the_heading_after_it_kept(record_spec):
    spec = record_spec.parsed
    assert any("1377" in a and "1385" in a for a in spec.anomalies)
    assert spec.requirements["M0-W-1362"].line == 1387
    assert not any(h.text.startswith("Without CUDA") for h in spec.headings)  # a shell comment in a code block


def test_strongest_and_opening_keywords(record_spec):
    reqs = record_spec.parsed.requirements
    assert (reqs["M0-W-1101"].level, reqs["M0-W-1101"].opening_keyword) == ("MAY", "MAY")
    assert (reqs["M0-W-1340"].level, reqs["M0-W-1340"].opening_keyword) == ("MUST", "MAY")
    assert (reqs["M0-W-1012"].level, reqs["M0-W-1012"].opening_keyword) == ("MUST", "SHOULD")
    assert reqs["M0-W-1350"].level == "SHOULD"
    assert reqs["M0-W-1830"].level is None  # only a status line and a list: no RFC-2119 keyword


def test_scope_lists_are_classified(record_spec):
    by_line = {s.line: s for s in record_spec.parsed.statements}
    deferred = [by_line[n] for n in range(22, 37)]
    assert all(s.kind == "deferred-M1" and s.ids for s in deferred)
    assert by_line[61].kind == "removed"
    assert by_line[49].kind == "in-m0" and by_line[49].ids == ("M0-W-1621",)
    assert (by_line[129].kind, by_line[129].milestone) == ("later", "M4")
    assert by_line[132].kind == "out-of-scope"
    assert (by_line[2920].kind, by_line[2920].milestone) == ("later", "M3+")
    assert by_line[2924].kind == "removed"
    assert (by_line[2984].kind, by_line[2984].milestone) == ("later", "M2+")
    assert by_line[285].kind == "prohibited"
    assert by_line[2906].ids == ("M0-W-1600", "M0-W-1620", "M0-W-1601", "M0-W-1602", "M0-W-1603",
                                 "M0-W-1604", "M0-W-1610", "M0-W-1611")
    # a heading that says "(DEFERRED)" names no milestone; its status line says M1+
    assert (by_line[2693].source, by_line[2693].kind, by_line[2693].milestone) == ("marker", "later", "post-M0")
    assert (by_line[2694].kind, by_line[2694].milestone) == ("deferred-M1", "M1")


def test_scope_inference_on_the_contested_requirements(record_spec):
    spec = record_spec.parsed
    metrics = infer_scope(spec, spec.requirements["M0-W-1350"])
    assert metrics.scope == "deferred-M1" and (1305, "M0-optional") in metrics.conflicts
    bundles = infer_scope(spec, spec.requirements["M0-W-1840"])
    assert bundles.scope == "removed" and (2977, "deferred-M1") in bundles.conflicts
    assert infer_scope(spec, spec.requirements["M0-W-1621"]).scope == "M0"  # just past the 1600-1620 range
    assert infer_scope(spec, spec.requirements["M0-W-1101"]).scope == "M0-optional"


def test_a_file_without_requirement_headings_is_rejected():
    with pytest.raises(SpecFormatError):
        parse_spec("# Some notes\n\n## 1. Intro\nWorkers MUST be nice.\n")


def test_id_ranges_expand_over_known_ids():
    known = ["M0-W-1599", "M0-W-1600", "M0-W-1610", "M0-W-1620", "M0-W-1621"]
    assert ids_in("targets (M0-W-1600 through M0-W-1620)", known) == ("M0-W-1600", "M0-W-1620", "M0-W-1610")


_KEYWORDS = ["MUST", "SHOULD", "MAY", "MUST NOT", "REQUIRED", "OPTIONAL", "RECOMMENDED", "must"]
_CLASS = {"MUST": 3, "MUST NOT": 3, "REQUIRED": 3, "SHOULD": 2, "RECOMMENDED": 2, "MAY": 1, "OPTIONAL": 1}


@st.composite
def synthetic_specs(draw):
    """A spec of random requirements, each with random keywords, some of them in code blocks."""
    count = draw(st.integers(1, 6))
    numbers = draw(st.lists(st.integers(1000, 9999), min_size=count, max_size=count, unique=True))
    lines = ["# Spec", "", "## 1. Section", ""]
    expected = {}
    for number in numbers:
        rid = f"M0-W-{number}"
        lines += [f"#### [{rid}] Title {number}"]
        expected[rid] = {"line": len(lines), "strength": 0}
        for _ in range(draw(st.integers(0, 4))):
            word = draw(st.sampled_from(_KEYWORDS))
            in_code = draw(st.booleans())
            if in_code:
                lines += ["```text", f"# {word} looks like a heading", "```"]
            else:
                lines.append(f"The worker {word} do something.")
                expected[rid]["strength"] = max(expected[rid]["strength"], _CLASS.get(word, 0))
        lines.append("")
    return "\n".join(lines) + "\n", expected


@settings(max_examples=60, deadline=None)
@given(synthetic_specs())
def test_parser_finds_exactly_the_generated_requirements(generated):
    text, expected = generated
    spec = parse_spec(text)
    assert {rid: r.line for rid, r in spec.requirements.items()} == {rid: e["line"] for rid, e in expected.items()}
    names = {3: "MUST", 2: "SHOULD", 1: "MAY", 0: None}
    for rid, e in expected.items():
        assert spec.requirements[rid].level == names[e["strength"]]
        assert spec.requirements[rid].section == "1"
