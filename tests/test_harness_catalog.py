"""The feature files against the requirements catalog: every requirement that can be observed
over HTTP or from the worker process has a scenario, the catalog's scenarios column is the
feature files' tags, and every requirement tag names a requirement of the revision of record
or of the later revision its scenario is tagged with."""
from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import pytest
from pytest_bdd import parsers

from requirements_map.catalog import feature_tags, later_revision_ids, load_catalog, with_scenarios

ROOT = Path(__file__).resolve().parent.parent
FEATURES = ROOT / "features"
SPEC_DIR = Path(os.environ.get("M0_SPEC", ROOT.parent / "shared" / "spec" / "01_M0_worker_orcd.md")).parent


def test_every_requirement_observable_over_http_or_from_the_process_has_a_scenario():
    tags = feature_tags(FEATURES)
    missing = [f"{e['id']} ({e['observable']}): {e['title']}" for e in load_catalog().entries
               if e["observable"] in ("http", "process") and not tags.get(e["id"])]
    assert not missing, "requirements without a scenario:\n" + "\n".join(missing)


def test_the_catalogs_scenarios_column_is_the_feature_files_tags():
    catalog = load_catalog()
    synced = with_scenarios(catalog, feature_tags(FEATURES))
    stale = [f"{e['id']}: {e['scenarios']} in the catalog, {s['scenarios']} in the features"
             for e, s in zip(catalog.entries, synced.entries) if e["scenarios"] != s["scenarios"]]
    assert not stale, "run `m0-conformance scenarios --write`:\n" + "\n".join(stale)


def test_tags_outside_the_catalog_belong_to_the_later_revision_that_defines_them():
    later = later_revision_ids(load_catalog(), FEATURES)  # an id without a revision tag raises
    for revision, ids in later.items():
        path = SPEC_DIR / f"01_M0_worker_orcd.{revision}.md"
        if not path.is_file():
            pytest.skip(f"the later spec revision {path.name} is not in {SPEC_DIR}")
        text = path.read_text(encoding="utf-8")
        for rid, scenarios in ids.items():
            assert re.search(rf"^#+ \[{re.escape(rid)}\]", text, re.MULTILINE), \
                f"{rid} is tagged in {scenarios} with @{revision}, which does not define it"


def _step_patterns() -> list[tuple[str, str]]:
    """(kind, text) of every step definition in steps/: "exact" for a plain string, "parse" for parsers.parse."""
    found = []
    for path in sorted((ROOT / "steps").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("given", "when", "then") and node.args:
                arg = node.args[0]
                if isinstance(arg, ast.Constant):
                    found.append(("exact", arg.value))
                elif isinstance(arg, ast.Call) and getattr(arg.func, "attr", None) == "parse":
                    found.append(("parse", arg.args[0].value))
    return found


def test_every_step_of_the_features_matches_exactly_one_definition():
    # two definitions that both match a line leave pytest-bdd to pick one, and not always the same
    # ('its "quant_kind" is one of {values}' once took the line meant for M0's quantization formats)
    patterns = _step_patterns()
    wrong = []
    for path in sorted(FEATURES.glob("*.feature")):
        for line in path.read_text(encoding="utf-8").splitlines():
            step = re.match(r"\s*(?:Given|When|Then|And|But) (.+)$", line)
            if not step or "<" in step.group(1):  # outline steps are filled in from their examples
                continue
            text = step.group(1)
            matching = [p for kind, p in patterns if (p == text if kind == "exact" else parsers.parse(p).is_matching(text))]
            if len(matching) != 1:
                wrong.append(f"{path.name}: {text!r} matches {matching}")
    assert not wrong, "\n".join(wrong)
