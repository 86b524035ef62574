"""Spec findings: their quotes hold in the revision of record, and a new revision that moves or
drops a quoted line is reported."""
from __future__ import annotations

import json

import pytest

from requirements_map.catalog import load_catalog
from requirements_map.cli import main
from requirements_map.findings import FindingsError, check_findings, findings_for, load_findings
from requirements_map.spec_parser import parse_spec

pytest_plugins = ["trace_fixtures"]


def test_every_quote_of_every_finding_stands_on_its_line_in_the_revision_of_record(record_spec):
    assert check_findings(load_findings(), record_spec.parsed) == []


def test_findings_name_catalog_ids_and_evidence_one_can_follow():
    ids = load_catalog().by_id()
    for finding in load_findings():
        assert set(finding.requirements) <= ids.keys(), finding.id
        for evidence in finding.evidence:
            assert evidence["source"] and evidence["shows"], finding.id
            if finding.kind == "the models it names":  # the world: a public source or a measurement
                assert "url" in evidence or "command" in evidence, (finding.id, evidence["source"])


def test_every_contradiction_the_catalog_records_is_a_finding_that_quotes_its_lines():
    findings = load_findings()
    for entry in load_catalog().entries:
        for contradiction in entry.get("contradictions", []):
            quoted = [{q["line"] for q in f.quotes} for f in findings_for([entry["id"]], findings)]
            assert any(set(contradiction["lines"]) <= lines for lines in quoted), (entry["id"], contradiction)


def test_the_first_findings_are_there():
    by_id = {f.id: f for f in load_findings()}
    assert {"gpt-oss-is-not-gpt2", "phi3-tokenizer-is-sentencepiece", "architecture-names-qwen2-phi3"} <= by_id.keys()
    assert "gpt-oss" in by_id["gpt-oss-is-not-gpt2"].instead
    assert '"llama"' in by_id["phi3-tokenizer-is-sentencepiece"].instead


def test_findings_for_answers_by_requirement():
    assert [f.id for f in findings_for(["M0-W-1215"])] == ["gpt-oss-is-not-gpt2"]
    assert {f.id for f in findings_for(["M0-W-1340"])} == {"shutdown-endpoint-optional-or-deferred",
                                                          "sigterm-in-a-deferred-requirement"}
    assert findings_for(["M0-W-1300"]) == []


def test_a_reworded_quoted_line_fails_the_check(record_spec):
    lines = list(record_spec.parsed.lines)
    assert lines[1607] == "- **Normalization**: LayerNorm"  # line 1608
    lines[1607] = "- **Normalization**: RMSNorm"
    problems = check_findings(load_findings(), parse_spec("\n".join(lines) + "\n"))
    assert problems == ["gpt-oss-is-not-gpt2: line 1608 no longer says '**Normalization**: LayerNorm', "
                        "and no line of this spec does"]


def test_a_quoted_line_that_moved_is_reported_with_where_it_went(record_spec):
    lines = list(record_spec.parsed.lines)
    lines.insert(1000, "An inserted line.")  # after line 1000: Phi-3's tokenizer line goes from 1030 to 1031
    problems = check_findings(load_findings(), parse_spec("\n".join(lines) + "\n"))
    assert ("phi3-tokenizer-is-sentencepiece: line 1097 no longer says '| Phi-3-Mini | 2.3 GB | ~3.5 GB | Q4_K_M | "
            "GGUF byte-BPE | Stretch tests |'; it is now on line 1098") in problems
    # the same words stand on Qwen's line too: both are named
    assert ("phi3-tokenizer-is-sentencepiece: line 1030 no longer says '**Tokenizer**: GGUF byte-BPE (embedded in "
            "GGUF)'; lines 1007, 1031 do") in problems
    assert all(int(p.split(": line ")[1].split()[0]) > 1000 for p in problems)  # quotes above it stay


def test_a_later_revision_moves_the_quotes(later_revision, capsys):
    assert main(["findings", "--json", "--spec", str(later_revision("1adb7159"))]) == 1
    problems = json.loads(capsys.readouterr().out)["problems"]
    assert any("no line of this spec does" in p for p in problems)
    assert any("it is now on line" in p for p in problems)


def test_the_findings_command_and_check_agree_with_the_record(record_spec, capsys):
    assert main(["findings", "--spec", str(record_spec.path)]) == 0
    out = capsys.readouterr().out
    assert "### GPT-OSS-20B is not a GPT-2-style model" in out and "> line 857:" in out
    assert main(["check", "--spec", str(record_spec.path)]) == 0


@pytest.mark.parametrize("change, message", [
    (lambda f: f.pop("meanwhile"), "lacks meanwhile"),
    (lambda f: f.update(kind="the weather"), "has kind 'the weather'"),
])
def test_a_finding_without_its_parts_is_refused(tmp_path, change, message):
    data = json.loads(json.dumps({"findings": [f.as_json() for f in load_findings()[:1]]}))
    change(data["findings"][0])
    path = tmp_path / "findings.json"
    path.write_text(json.dumps(data))
    with pytest.raises(FindingsError, match=message):
        load_findings(path)
