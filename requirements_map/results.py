"""Read the results of a conformance run: pytest-bdd cucumber JSON and/or pytest JUnit XML.

Both describe the same scenarios from different sides: cucumber JSON carries the Gherkin tags
(requirement ids) but drops tests skipped before their steps ran and skip reasons; JUnit XML
carries skip reasons and failure messages, and tags and the scenario's own name only where the
harness recorded them as properties. Results from both are merged per scenario, by pytest's
test name (an outline's examples apart).

A JUnit xfail is a miss the run itself declared informational (the harness does so for
@deferred-M1, @optional and later-revision scenarios): its outcome is `informational`.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field, replace
from pathlib import Path

_PYTHON_NAME = re.compile(r"\W")
_TAG_TOKEN = re.compile(r"@?[A-Za-z0-9][\w.+-]*")
WORKER_PROPERTY = "m0_worker"


class ResultsError(ValueError):
    """A results file is missing, unreadable, or not cucumber JSON / JUnit XML."""


@dataclass(frozen=True)
class ScenarioResult:
    name: str
    feature: str
    outcome: str  # passed / failed / skipped / informational
    reason: str  # skip reason or first line of the failure
    tags: frozenset[str] = field(default_factory=frozenset)  # without the leading '@'
    sources: tuple[str, ...] = ()


def bdd_test_name(scenario_name: str) -> str:
    """The pytest function name pytest-bdd gives a scenario (see pytest_bdd.scenario.make_python_name)."""
    name = _PYTHON_NAME.sub("", scenario_name.replace(" ", "_"))
    return "test_" + re.sub(r"^\d+_*", "", name).lower()


def read_results(paths: list[str | Path]) -> list[ScenarioResult]:
    """Scenario results from every file (format told by content), merged per scenario."""
    if not paths:
        raise ResultsError("give at least one results file (cucumber JSON or JUnit XML)")
    merged: dict[str, ScenarioResult] = {}
    for path in paths:
        for key, result in _read_one(Path(path)):
            merged[key] = _merge(merged[key], result) if key in merged else result
    if not merged:
        raise ResultsError(f"no scenarios found in {', '.join(map(str, paths))}")
    return list(merged.values())


def recorded_worker(paths: list[str | Path]) -> str | None:
    """The worker under test as the harness recorded it in JUnit XML (testsuite property
    `m0_worker`), or None."""
    for path in paths:
        try:
            root = ET.parse(path).getroot()
        except (OSError, ET.ParseError):
            continue
        for prop in root.iter("property"):
            if prop.get("name") == WORKER_PROPERTY:
                return prop.get("value")
    return None


def _read_one(path: Path) -> list[tuple[str, ScenarioResult]]:
    """(pytest's test name, result) for every scenario in the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ResultsError(f"cannot read results file {path}: {getattr(exc, 'strerror', None) or exc}") from exc
    stripped = text.lstrip()
    if stripped.startswith("<"):
        return _junit(path, text)
    if stripped.startswith("["):
        return _cucumber(path, text)
    raise ResultsError(f"{path} is neither cucumber JSON (pytest --cucumberjson) nor JUnit XML (pytest --junitxml)")


def _cucumber(path: Path, text: str) -> list[tuple[str, ScenarioResult]]:
    try:
        features = json.loads(text)
        results = []
        for feature in features:
            feature_tags = _tags(t["name"] for t in feature.get("tags", []))
            for element in feature["elements"]:
                statuses = [step["result"]["status"] for step in element.get("steps", [])]
                messages = [step["result"].get("error_message", "") for step in element.get("steps", [])]
                outcome = "failed" if "failed" in statuses else "skipped" if not statuses or any(
                    s != "passed" for s in statuses) else "passed"
                reason = _failure_line(next((m for m in messages if m), ""))
                test_name = element.get("id", "")  # pytest-bdd writes the test's name there
                key = test_name if test_name.startswith("test_") else bdd_test_name(element["name"])
                results.append((key, ScenarioResult(
                    name=element["name"], feature=feature.get("uri") or feature.get("name", ""), outcome=outcome,
                    reason=_first_line(reason),
                    tags=feature_tags | _tags(t["name"] for t in element.get("tags", [])), sources=(str(path),))))
        return results
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ResultsError(f"{path} is not pytest-bdd cucumber JSON: {exc!r}") from exc


def _junit(path: Path, text: str) -> list[tuple[str, ScenarioResult]]:
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise ResultsError(f"{path} is not well-formed JUnit XML: {exc}") from exc
    if root.tag not in ("testsuites", "testsuite"):
        raise ResultsError(f"{path} is XML but not JUnit XML (root element <{root.tag}>)")
    results = []
    for case in root.iter("testcase"):
        test_name = case.get("name", "")
        if not test_name.startswith("test_"):
            continue
        failure = case.find("failure") if case.find("failure") is not None else case.find("error")
        skipped = case.find("skipped")
        if failure is not None:
            outcome, reason = "failed", failure.get("message") or (failure.text or "")
        elif skipped is not None:
            outcome = "informational" if skipped.get("type") == "pytest.xfail" else "skipped"
            reason = skipped.get("message") or (skipped.text or "")
        else:
            outcome, reason = "passed", ""
        properties = {prop.get("name"): prop.get("value", "") for prop in case.iter("property")}
        tags = _tags(token for token in _TAG_TOKEN.findall(properties.get("tags", "")) if token.startswith("@")
                     or re.fullmatch(r"M0-(?:W-\d{4}|SYS-[\d.]+)", token))
        function, bracket, example = test_name.partition("[")
        name = properties.get("scenario") or function[len("test_"):].replace("_", " ") + (f" [{example}" if bracket else "")
        results.append((test_name, ScenarioResult(name=name, feature=case.get("classname", ""), outcome=outcome,
                                                  reason=_first_line(reason), tags=tags, sources=(str(path),))))
    return results


def _merge(a: ScenarioResult, b: ScenarioResult) -> ScenarioResult:
    """Failure wins, then an informational miss, then a skip, then a pass; the readable name and
    any reason are kept."""
    rank = {"failed": 3, "informational": 2, "skipped": 1, "passed": 0}
    worse = a if rank[a.outcome] >= rank[b.outcome] else b
    gherkin = a if a.feature.endswith(".feature") else b  # cucumber JSON: the scenario's own name
    return replace(worse, name=gherkin.name, feature=gherkin.feature, reason=worse.reason or a.reason or b.reason,
                   tags=a.tags | b.tags, sources=a.sources + b.sources)


def _tags(names) -> frozenset[str]:
    return frozenset(name.lstrip("@") for name in names)


def _failure_line(longrepr: str) -> str:
    """The line of a pytest failure report that says what went wrong (its first 'E   ' line)."""
    errors = [line[1:].strip() for line in longrepr.splitlines() if line.startswith("E ")]
    return errors[0] if errors else longrepr


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text and text.strip() else ""
