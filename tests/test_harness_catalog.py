"""The feature files against the requirements catalog: every requirement that can be observed
over HTTP or from the worker process has a scenario, and every requirement tag names a
requirement of the revision of record or of the later revision its scenario is tagged with."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from requirements_map.catalog import feature_tags, load_catalog

ROOT = Path(__file__).resolve().parent.parent
FEATURES = ROOT / "features"
SPEC_DIR = Path(os.environ.get("M0_SPEC", ROOT.parent / "shared" / "spec" / "01_M0_worker_orcd.md")).parent


def test_every_requirement_observable_over_http_or_from_the_process_has_a_scenario():
    tags = feature_tags(FEATURES)
    missing = [f"{e['id']} ({e['observable']}): {e['title']}" for e in load_catalog().entries
               if e["observable"] in ("http", "process") and not tags.get(e["id"])]
    assert not missing, "requirements without a scenario:\n" + "\n".join(missing)


def test_tags_outside_the_catalog_belong_to_the_later_revision_that_defines_them():
    known = {e["id"] for e in load_catalog().entries}
    extra = {rid: scenarios for rid, scenarios in feature_tags(FEATURES).items() if rid not in known}
    for rid, scenarios in extra.items():
        revisions = sorted(SPEC_DIR.glob("01_M0_worker_orcd.rev-*.md"))
        if not revisions:
            pytest.skip(f"the later spec revisions are not in {SPEC_DIR}")
        defining = [p for p in revisions if re.search(rf"^#+ \[{re.escape(rid)}\]", p.read_text(), re.MULTILINE)]
        assert defining, f"{rid} is tagged in {scenarios} but no spec revision defines it"
        revisions = [p.stem.split(".")[-1] for p in defining]  # rev-84202fea, ...
        for scenario in scenarios:
            text = (FEATURES / scenario.split(":")[0]).read_text()
            assert any(f"@{r}" in text for r in revisions), f"{scenario} checks {rid} but has none of the tags {revisions}"
