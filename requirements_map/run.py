"""`m0-conformance run`: the conformance suite, as installed, against one worker or a fleet,
from any directory; its results and coverage reports in one folder.

One worker: OUT/cucumber.json, OUT/junit.xml, OUT/results.json and OUT/coverage.{md,json,html}.
A fleet (several URLs): the same files for the whole run, then per worker OUT/<label>/junit.xml
(the run's JUnit XML cut to that worker's scenarios) with its coverage report, and
OUT/matrix.md, the verdict of every requirement for every worker.
"""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from . import report
from .results import WORKER_PROPERTY


def features_dir() -> Path:
    """The feature files the installed plugin runs."""
    from steps.plugin import FEATURES_DIR

    return FEATURES_DIR


def pytest_command(args, out: Path) -> list[str]:
    """The pytest command line of a run: the packaged features, the target options, the
    result files into `out`, xdist processes for a fleet, then the user's own pytest options."""
    features = features_dir()
    # Its own rootdir and no ini file: a pytest.ini or pyproject.toml where the user stands
    # must not change the suite (nor may pytest write a cache into site-packages).
    command = [sys.executable, "-m", "pytest", str(features), "--rootdir", str(features), "-c", os.devnull,
               "-p", "no:cacheprovider", "-q", "-ra",
               "--cucumberjson", str(out / "cucumber.json"), "--junitxml", str(out / "junit.xml"),
               "--results-json", str(out / "results.json")]
    for url in args.worker_url:
        command += ["--worker-url", url]
    for name in ("worker_urls", "worker_cmd", "model"):
        value = getattr(args, name)
        if value:
            command += [f"--{name.replace('_', '-')}", str(Path(value).resolve()) if name != "worker_cmd" else value]
    if args.robustness:
        command.append("--robustness")
    fleet = _fleet_size(args)
    if fleet > 1:
        command += ["-n", str(min(fleet, args.processes or fleet)), "--dist", "loadgroup"]
    return command + list(args.pytest_args)


def _fleet_size(args) -> int:
    count = len(args.worker_url)
    if args.worker_urls:
        lines = Path(args.worker_urls).read_text(encoding="utf-8").splitlines()
        count += sum(1 for line in lines if line.split("#")[0].strip())
    return count


def run(args) -> int:
    """Run the suite, write the reports; the exit status is the suite's."""
    if not (args.worker_url or args.worker_urls or args.worker_cmd or args.model):
        raise report.ReportError("name a worker: --worker-url URL (repeat for a fleet), --worker-urls FILE, "
                                 "--worker-cmd \"...\" or --model PATH (the reference worker on that model)")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for name in ("cucumber.json", "junit.xml", "results.json"):
        (out / name).unlink(missing_ok=True)
    status = subprocess.run(pytest_command(args, out), cwd=out).returncode
    if not (out / "junit.xml").is_file():
        print(f"m0-conformance run: pytest wrote no results (exit status {status})", file=sys.stderr)
        return status or 2
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    written = report.write_reports([out / "cucumber.json", out / "junit.xml"], out, spec=args.spec)
    for kind, path in written.items():
        print(f"{kind}: {path}")
    workers = results.get("workers")
    if workers:
        coverages = {}
        for label, worker in workers.items():
            junit = split_junit(out / "junit.xml", out / label / "junit.xml", label, worker["target"])
            paths = report.write_reports([junit], out / label, worker=worker["target"], spec=args.spec)
            coverages[f"{label}: {worker['target']}"] = json.loads(paths["json"].read_text(encoding="utf-8"))
            print(f"{label} ({worker['target']}): {paths['markdown']}")
        matrix = out / "matrix.md"
        matrix.write_text(report.render_worker_matrix(coverages), encoding="utf-8")
        print(f"matrix: {matrix}")
    return status


def split_junit(source: Path, target: Path, label: str, description: str) -> Path:
    """Write the testcases of one worker of a fleet (testcase property `worker`) as a JUnit XML
    file of their own, naming that worker; the totals are counted again."""
    tree = ET.parse(source)
    root = copy.deepcopy(tree.getroot())
    for suite in root.iter("testsuite"):
        for case in list(suite.findall("testcase")):
            if _case_property(case, "worker") != label:
                suite.remove(case)
        cases = suite.findall("testcase")
        suite.set("tests", str(len(cases)))
        for kind, attribute in (("failure", "failures"), ("error", "errors"), ("skipped", "skipped")):
            suite.set(attribute, str(sum(case.find(kind) is not None for case in cases)))
        for prop in suite.iter("property"):
            if prop.get("name") == WORKER_PROPERTY:
                prop.set("value", description)
    target.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(target, encoding="utf-8", xml_declaration=True)
    return target


def _case_property(case, name: str) -> str | None:
    for prop in case.iter("property"):
        if prop.get("name") == name:
            return prop.get("value")
    return None
