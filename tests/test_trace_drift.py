"""Drift between spec revisions: added, removed, rescoped, retitled, moved."""
from __future__ import annotations

import json

from requirements_map.cli import main
from requirements_map.drift import compare
from requirements_map.spec_parser import parse_spec
from requirements_map.spec_source import load_spec

pytest_plugins = ["trace_fixtures"]


def kinds(changes, kind):
    return {c.id: (c.old, c.new) for c in changes if c.kind == kind}


def test_a_revision_does_not_drift_from_itself(record_spec):
    assert compare(record_spec.parsed, record_spec.parsed) == []


def test_edits_show_up_as_the_right_kind_of_change(record_spec):
    text = "\n".join(record_spec.parsed.lines) + "\n"
    edited = (text.replace("#### [M0-W-1002] Model Immutability\n", "#### [M0-W-1002] Model Stays Put\n")
                  .replace("#### [M0-W-1001] Single Model Lifetime\n", "#### [M0-W-1003] Single Model Lifetime\n")
                  .replace("15. ✅ Sensitive data handling in logs (M0-W-1902)",
                           "15. ✅ Sensitive data handling in logs (M0-W-1902)\n16. ✅ Seeded RNG (M0-W-1030)"))
    changes = compare(record_spec.parsed, parse_spec(edited))
    assert kinds(changes, "retitled") == {"M0-W-1002": ("Model Immutability", "Model Stays Put")}
    assert set(kinds(changes, "added")) == {"M0-W-1003"} and set(kinds(changes, "removed")) == {"M0-W-1001"}
    assert kinds(changes, "rescoped") == {"M0-W-1030": ("M0", "deferred-M1")}
    assert kinds(changes, "moved")["M0-W-1300"] == (1108, 1109)


def test_the_next_revision_adds_stop_sequences(record_spec, later_revision):
    new = load_spec(later_revision("84202fea"), warn=lambda m: None)
    changes = compare(record_spec.parsed, new.parsed)
    assert set(kinds(changes, "added")) == {"M0-W-1422"} and not kinds(changes, "removed")
    assert "M0-W-1421" in kinds(changes, "reworded")


def test_the_consolidated_revision_renames_adapters_and_drops_the_bundle_removal(later_revision):
    old = load_spec(later_revision("84202fea"), warn=lambda m: None)
    new = load_spec(later_revision("1adb7159"), warn=lambda m: None)
    changes = compare(old.parsed, new.parsed)
    assert kinds(changes, "retitled")["M0-W-1213"] == ("InferenceAdapter Interface", "ModelAdapter Interface")
    assert kinds(changes, "rescoped") == {"M0-W-1840": ("removed", "M0")}


def test_drift_command_prints_markdown_and_json(later_revision, capsys, record_spec):
    assert main(["drift", str(record_spec.path), str(later_revision("84202fea"))]) == 0
    out = capsys.readouterr().out
    assert "## Added (1)" in out and "M0-W-1422" in out
    assert main(["drift", "--json", str(record_spec.path), str(later_revision("84202fea"))]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {"id": "M0-W-1422", "kind": "added"}.items() <= data["changes"][0].items()


def test_drift_with_a_missing_file_is_a_clear_error(tmp_path, capsys, record_spec):
    assert main(["drift", str(record_spec.path), str(tmp_path / "missing.md")]) == 2
    assert "cannot read spec file" in capsys.readouterr().err
