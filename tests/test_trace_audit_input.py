"""Proposals (Markdown and YAML) and the audit command's answers to bad input."""
from __future__ import annotations

from pathlib import Path

import pytest

from requirements_map.cli import main
from requirements_map.proposal import ProposalError, read_proposal

pytest_plugins = ["trace_fixtures"]


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_markdown_headings_carry_the_claimed_purpose(tmp_path):
    path = _write(tmp_path, "p.md", "# Plan\n\nintro text\n\n## Prefix caching\n\nPurpose: improves first-token "
                                    "latency\nfor chat.\n\nMore detail.\n\n### Stop sequences\n")
    assert [(f.name, f.purpose) for f in read_proposal(path)] == [
        ("Prefix caching", "improves first-token latency for chat."), ("Stop sequences", None)]


def test_markdown_list_items_name_a_feature_and_its_purpose(tmp_path):
    path = _write(tmp_path, "p.md", "- **CUDA graphs** — cuts launch overhead\n- top-k sampling: more variety\n"
                                    "- FlashAttention\n")
    assert [(f.name, f.purpose) for f in read_proposal(path)] == [
        ("CUDA graphs", "cuts launch overhead"), ("top-k sampling", "more variety"), ("FlashAttention", None)]


def test_yaml_lists_features_with_purposes(tmp_path):
    path = _write(tmp_path, "p.yaml", "features:\n  - name: continuous batching\n    purpose: serve more users\n"
                                      "  - speculative decoding\n")
    assert [(f.name, f.purpose, f.where) for f in read_proposal(path)] == [
        ("continuous batching", "serve more users", "entry 1"), ("speculative decoding", None, "entry 2")]


@pytest.mark.parametrize("name, text, message", [
    ("empty.md", "  \n", "is empty"),
    ("none.md", "just a paragraph, no features\n", "names no features"),
    ("noname.yaml", "- {purpose: faster}\n", "entry 1 has no name"),
    ("blank.md", "## Good one\n\n##  \n", "heading without a name"),
    ("bad.yaml", "features: [unclosed\n", "not valid YAML"),
    ("scalar.yaml", "just words\n", "expected a list"),
])
def test_bad_proposals_are_refused_with_the_reason(tmp_path, name, text, message):
    with pytest.raises(ProposalError, match=message):
        read_proposal(_write(tmp_path, name, text))


def test_an_unreadable_proposal_is_refused(tmp_path):
    with pytest.raises(ProposalError, match="cannot read proposal"):
        read_proposal(tmp_path / "missing.md")
    with pytest.raises(ProposalError, match="cannot read proposal"):
        read_proposal(tmp_path)  # a folder
    binary = tmp_path / "binary.md"
    binary.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ProposalError, match="cannot read proposal"):
        read_proposal(binary)


@pytest.mark.parametrize("args, message", [
    (["--proposal", "{tmp}/empty.md"], "is empty"),
    (["--proposal", "{tmp}/noname.yaml"], "has no name"),
    (["--proposal", "{tmp}/missing.md"], "cannot read proposal"),
    (["--spec", "{tmp}/notaspec.md", "top-k sampling"], "is not an M0 worker spec"),
    (["--parent", "{tmp}/notaspec.md", "top-k sampling"], "parent spec"),
    (["--parent", "{tmp}/missing.md", "top-k sampling"], "cannot read parent spec"),
])
def test_the_command_answers_bad_input_with_one_line_and_status_2(tmp_path, record_spec, capsys, args, message):
    _write(tmp_path, "empty.md", "")
    _write(tmp_path, "noname.yaml", "- purpose: faster\n")
    _write(tmp_path, "notaspec.md", "# Shopping list\n\n- milk\n- bread\n")
    spec = [] if "--spec" in args else ["--spec", str(record_spec.path)]
    assert main(["audit", *spec, *[a.format(tmp=tmp_path) for a in args]]) == 2
    err = capsys.readouterr().err
    assert err.startswith("m0-conformance audit: error:") and message in err
    assert "Traceback" not in err and err.count("\n") == 1


def test_a_proposal_and_plain_features_are_audited_together(tmp_path, record_spec, capsys):
    path = _write(tmp_path, "p.yaml", "- {name: prefix caching, purpose: improves first-token latency}\n")
    assert main(["audit", "--spec", str(record_spec.path), "--proposal", str(path), "speculative decoding"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# Scope audit of the proposal p.yaml")
    assert "| speculative decoding |" in out and "| prefix caching |" in out
    assert "Claimed purpose: “improves first-token latency”" in out
