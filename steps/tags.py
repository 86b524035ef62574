"""Tags of the feature files: which scenarios check which requirement ids.

Used by the plugin to register the tags as markers and to group results by requirement
(the catalog's scenario column is filled by requirements_map.catalog.feature_tags).
"""
from __future__ import annotations

from pathlib import Path

from pytest_bdd.parser import FeatureParser

from requirements_map.spec_parser import REQUIREMENT_ID


def requirement_ids(tags) -> set[str]:
    """The tags that name a requirement (`M0-W-1311`, `M0-SYS-6.3.5`)."""
    return {tag for tag in tags if REQUIREMENT_ID.fullmatch(tag)}


def scenarios_by_tag(features_dir: Path) -> dict[str, list[str]]:
    """Every tag of every scenario (feature tags included) -> 'file: scenario name' list."""
    index: dict[str, list[str]] = {}
    for path in sorted(Path(features_dir).glob("*.feature")):
        feature = FeatureParser(str(path.parent), path.name).parse()
        for scenario in feature.scenarios.values():
            for tag in set(feature.tags) | set(scenario.tags):
                index.setdefault(tag, []).append(f"{path.name}: {scenario.name}")
    return index


def scenario_tags(features_dir: Path) -> set[str]:
    """All tags used in the feature files."""
    return set(scenarios_by_tag(features_dir))
