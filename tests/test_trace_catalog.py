"""The catalog agrees with the spec of record, and the check catches every kind of drift."""
from __future__ import annotations

import copy
import json

import pytest

from requirements_map.catalog import (
    OBSERVABLES,
    Catalog,
    CatalogError,
    check_catalog,
    feature_tags,
    later_revision_ids,
    load_catalog,
    with_scenarios,
)
from requirements_map.cli import main
from requirements_map.scope import SCOPES

pytest_plugins = ["trace_fixtures"]


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


def mutated(catalog: Catalog, rid: str, **changes) -> Catalog:
    entries = copy.deepcopy(catalog.entries)
    for entry in entries:
        if entry["id"] == rid:
            entry.update(changes)
    return Catalog(catalog.spec, entries)


def test_catalog_agrees_with_the_spec_of_record(catalog, record_spec):
    assert check_catalog(catalog, record_spec.parsed) == []
    assert catalog.spec["sha256"] == record_spec.sha256
    assert len(catalog.entries) == len(record_spec.parsed.requirements) == 97


def test_removing_any_entry_is_reported(catalog, record_spec):
    for rid in ("M0-W-1350", "M0-SYS-6.3.5", "M0-W-1902"):
        smaller = Catalog(catalog.spec, [e for e in catalog.entries if e["id"] != rid])
        problems = check_catalog(smaller, record_spec.parsed)
        line = record_spec.parsed.requirements[rid].line
        assert problems == [f"{rid}: in the spec (line {line}) but not in the catalog"]


def test_changing_any_entrys_scope_is_reported(catalog, record_spec):
    tricky = {"M0-W-1120", "M0-W-1350", "M0-W-1840", "M0-W-1101", "M0-W-1621", "M0-W-1031"}
    for index, entry in enumerate(catalog.entries):
        others = [s for s in SCOPES if s != entry["scope"]]
        # every entry with one other scope (rotating), the contested ones with all of them
        for other in others if entry["id"] in tricky else [others[index % len(others)]]:
            problems = check_catalog(mutated(catalog, entry["id"], scope=other), record_spec.parsed)
            assert problems and all(p.startswith(entry["id"] + ":") for p in problems), (entry["id"], other)


def test_changing_lines_titles_or_scope_lines_is_reported(catalog, record_spec):
    spec = record_spec.parsed
    assert check_catalog(mutated(catalog, "M0-W-1300", line=1109), spec)
    assert check_catalog(mutated(catalog, "M0-W-1300", title="POST /run"), spec)
    assert check_catalog(mutated(catalog, "M0-W-1350", scope_lines=[22]), spec)
    assert check_catalog(mutated(catalog, "M0-W-1350", contradictions=[]), spec)  # its conflicts must be listed
    assert check_catalog(mutated(catalog, "M0-W-1300", observable="telepathy"), spec)
    extra = Catalog(catalog.spec, catalog.entries + [dict(catalog.entries[0], id="M0-W-9999")])
    assert "M0-W-9999: in the catalog but not a requirement heading of the spec" in check_catalog(extra, spec)


def test_a_scope_resting_on_purpose_must_differ_from_what_the_text_says(catalog, record_spec):
    entry = catalog.by_id()["M0-W-1120"]
    assert entry["scope_basis"] == "purpose" and entry["scope"] == "deferred-M1"
    # set back to what the text alone gives, the override would be stale: reported
    assert check_catalog(mutated(catalog, "M0-W-1120", scope="M0"), record_spec.parsed)
    assert check_catalog(mutated(catalog, "M0-W-1120", scope_lines=[1]), record_spec.parsed)


def test_entries_use_the_vocabularies_and_their_own_words(catalog, record_spec):
    spec_lines = {line.strip() for line in record_spec.parsed.lines}
    for entry in catalog.entries:
        assert entry["scope"] in SCOPES and entry["observable"] in OBSERVABLES
        assert entry["summary"] and entry["summary"] not in spec_lines
        assert entry["concepts"] and isinstance(entry["scenarios"], list)
        for line in entry["scope_lines"]:
            assert 1 <= line <= len(record_spec.parsed.lines)


def test_deferred_ids_named_by_the_spec(catalog):
    scopes = {e["id"]: e["scope"] for e in catalog.entries}
    deferred = {rid for rid, scope in scopes.items() if scope == "deferred-M1"}
    assert deferred == {"M0-W-1031", "M0-W-1120", "M0-W-1340", "M0-W-1350", "M0-W-1600", "M0-W-1601", "M0-W-1602",
                        "M0-W-1603", "M0-W-1604", "M0-W-1610", "M0-W-1611", "M0-W-1620", "M0-W-1630",
                        "M0-W-1830", "M0-W-1901", "M0-W-1902"}
    assert scopes["M0-W-1840"] == "removed"
    assert scopes["M0-W-1101"] == "M0-optional"
    assert scopes["M0-W-1621"] == "M0"


FEATURE = """@M0-W-1300
Feature: Execute
  @M0-W-1302
  Scenario: A bad temperature is refused
    Given a worker

  Rule: ordering
    @M0-W-1311 @deferred-M1
    Scenario Outline: Events in order for <n> tokens
      Given a worker
      Examples:
        | n |
        | 1 |
"""


LATER = """@rev-84202fea
Feature: Sampling
  @M0-W-1422
  Scenario: A stop word ends the job
    Given a worker
"""


def test_feature_tags_are_collected_with_inheritance(tmp_path):
    (tmp_path / "execute.feature").write_text(FEATURE)
    tags = feature_tags(tmp_path)
    assert tags == {"M0-W-1300": ["execute.feature: A bad temperature is refused",
                                  "execute.feature: Events in order for <n> tokens"],
                    "M0-W-1302": ["execute.feature: A bad temperature is refused"],
                    "M0-W-1311": ["execute.feature: Events in order for <n> tokens"]}


def test_scenarios_column_is_filled_and_later_revision_ids_kept_apart(tmp_path, catalog):
    (tmp_path / "execute.feature").write_text(FEATURE)
    (tmp_path / "sampling.feature").write_text(LATER)
    synced = with_scenarios(catalog, feature_tags(tmp_path))
    assert synced.by_id()["M0-W-1302"]["scenarios"] == ["execute.feature: A bad temperature is refused"]
    assert synced.by_id()["M0-W-1001"]["scenarios"] == []
    assert "M0-W-1422" not in synced.by_id()
    assert later_revision_ids(catalog, tmp_path) == {"rev-84202fea": {"M0-W-1422": ["sampling.feature: A stop word ends the job"]}}


def test_an_id_outside_the_catalog_without_a_revision_tag_is_refused(tmp_path, catalog):
    (tmp_path / "other.feature").write_text("Feature: x\n  @M0-W-4242\n  Scenario: y\n    Given z\n")
    with pytest.raises(CatalogError, match="other.feature: y: tags M0-W-4242.*@rev-"):
        later_revision_ids(catalog, tmp_path)


def test_a_broken_feature_file_is_a_clear_error(tmp_path):
    (tmp_path / "broken.feature").write_text("Feature: x\n  Scenario: y\n    Given a\n    | a |\n    | b | c |\n")
    with pytest.raises(CatalogError, match="broken.feature"):
        feature_tags(tmp_path)


def test_map_and_check_commands(capsys, record_spec):
    assert main(["map", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["requirements"]) == 97
    assert main(["check", "--spec", str(record_spec.path)]) == 0
    assert main(["map"]) == 0
    table = capsys.readouterr().out
    assert "| M0-W-1350 | 7.6 | 1307 | SHOULD | deferred-M1 | http |" in table


def test_check_command_fails_on_another_revision(capsys, tmp_path, record_spec):
    changed = tmp_path / "spec.md"
    changed.write_text(record_spec.path.read_text().replace("[M0-W-1001] Single Model Lifetime",
                                                              "[M0-W-1001] One Model For Life"))
    assert main(["check", "--spec", str(changed)]) == 1
    captured = capsys.readouterr()
    assert "M0-W-1001: title is 'Single Model Lifetime' in the catalog" in captured.out
    assert "unknown revision" in captured.err


def test_scenarios_command_checks_and_rewrites_the_column(tmp_path, monkeypatch, capsys):
    import requirements_map.catalog as catalog_module
    import requirements_map.cli as cli_module

    copy_path = tmp_path / "catalog.json"
    copy_path.write_text(load_catalog().to_json())
    monkeypatch.setattr(catalog_module, "default_path", lambda: copy_path)
    monkeypatch.setattr(cli_module, "default_path", lambda: copy_path)
    features = tmp_path / "features"
    features.mkdir()
    (features / "execute.feature").write_text(FEATURE)
    (features / "sampling.feature").write_text(LATER)
    assert main(["scenarios", "--features", str(features)]) == 1
    out = capsys.readouterr().out
    assert "M0-W-1302: scenarios differ" in out
    assert "rev-84202fea (not in the catalog of revision d4a857ac): M0-W-1422 (1 scenario(s))" in out
    assert main(["scenarios", "--features", str(features), "--write"]) == 0
    assert main(["scenarios", "--features", str(features)]) == 0
    assert load_catalog(copy_path).by_id()["M0-W-1311"]["scenarios"] == ["execute.feature: Events in order for <n> tokens"]
