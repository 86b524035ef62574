"""The parts of `m0-conformance run` that need no worker: the pytest command it builds, the
per-worker JUnit XML cut from a fleet's, and the requirement x worker matrix."""
from __future__ import annotations

import argparse
import os
import xml.etree.ElementTree as ET

from requirements_map import run
from requirements_map.cli import main
from requirements_map.report import render_worker_matrix
from requirements_map.results import WORKER_PROPERTY, read_results, recorded_worker


def _args(**given) -> argparse.Namespace:
    defaults = dict(worker_url=[], worker_urls=None, worker_cmd=None, model=None, robustness=False, processes=None,
                    pytest_args=[])
    return argparse.Namespace(**{**defaults, **given})


def test_one_worker_runs_in_one_process(tmp_path):
    command = run.pytest_command(_args(worker_url=["http://127.0.0.1:9"]), tmp_path)
    assert str(run.features_dir()) in command and "-n" not in command
    assert command[command.index("--junitxml") + 1] == str(tmp_path / "junit.xml")
    assert command[command.index("-c") + 1] == os.devnull  # no ini file of where it runs


def test_a_fleet_runs_one_xdist_process_per_worker_unless_capped(tmp_path):
    listing = tmp_path / "fleet.txt"
    listing.write_text("# comment\nhttp://a:1\n\nhttp://b:2  # second\n")
    command = run.pytest_command(_args(worker_url=["http://c:3"], worker_urls=str(listing), robustness=True,
                                       pytest_args=["-k", "health"]), tmp_path)
    assert command[command.index("-n") + 1] == "3" and "loadgroup" in command and "--robustness" in command
    assert command[-2:] == ["-k", "health"]
    capped = run.pytest_command(_args(worker_url=["http://a:1", "http://b:2"], processes=1), tmp_path)
    assert capped[capped.index("-n") + 1] == "1"


def test_run_without_a_worker_is_a_user_error(capsys):
    assert main(["run", "--out", "/nonexistent/never"]) == 2
    assert "name a worker" in capsys.readouterr().err


FLEET_JUNIT = f"""<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" tests="3" failures="1" errors="0" skipped="0">
<properties><property name="{WORKER_PROPERTY}" value="fleet of worker1: a, worker2: b"/></properties>
<testcase classname="test_conformance" name="test_health[worker1]"><properties>
 <property name="tags" value="@M0-W-1320"/><property name="scenario" value="Health"/>
 <property name="worker" value="worker1"/></properties></testcase>
<testcase classname="test_conformance" name="test_health[worker2]"><properties>
 <property name="tags" value="@M0-W-1320"/><property name="scenario" value="Health"/>
 <property name="worker" value="worker2"/></properties><failure message="boom">boom</failure></testcase>
<testcase classname="test_conformance" name="test_sse[worker2]"><properties>
 <property name="tags" value="@M0-W-1310"/><property name="scenario" value="SSE"/>
 <property name="worker" value="worker2"/></properties></testcase>
</testsuite></testsuites>
"""


def test_a_fleets_junit_is_cut_per_worker(tmp_path):
    source = tmp_path / "junit.xml"
    source.write_text(FLEET_JUNIT)
    mine = run.split_junit(source, tmp_path / "worker2" / "junit.xml", "worker2", "running worker at b")
    suite = ET.parse(mine).getroot().find("testsuite")
    assert [c.get("name") for c in suite.findall("testcase")] == ["test_health[worker2]", "test_sse[worker2]"]
    assert (suite.get("tests"), suite.get("failures")) == ("2", "1")
    assert recorded_worker([mine]) == "running worker at b"
    assert {r.outcome for r in read_results([mine])} == {"failed", "passed"}


def _coverage(**outcomes) -> dict:
    return {"requirements": [{"id": rid.replace("_", "-"), "scope": "M0" if "W" in rid else "deferred-M1",
                              "outcome": o} for rid, o in outcomes.items()]}


def test_the_matrix_has_a_column_per_worker_and_marks_disagreement():
    matrix = render_worker_matrix({"a": _coverage(M0_W_1320="passed", M0_W_1310="passed", M1_X="uncovered"),
                                   "b": _coverage(M0_W_1320="failed", M0_W_1310="passed", M1_X="uncovered")})
    assert "| M0-W-1320 ≠ | M0 | passed | failed |" in matrix
    assert "| M0-W-1310 | M0 | passed | passed |" in matrix
    assert "M1-X" not in matrix  # out of M0 and run by no one
    assert "- w1: a" in matrix and "w2: 1 passed, 1 failed, 1 uncovered" in matrix


def test_the_matrix_without_disagreement_has_no_mark():
    matrix = render_worker_matrix({"a": _coverage(M0_W_1320="passed"), "b": _coverage(M0_W_1320="passed")})
    assert "≠" not in matrix
