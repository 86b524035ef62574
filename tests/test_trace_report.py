"""Coverage report from constructed results files (cucumber JSON, JUnit XML, and a real pytest-bdd run)."""
from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from requirements_map.catalog import Catalog, load_catalog, tagged_scenarios
from requirements_map.findings import load_findings
from requirements_map.outdated import CHECKED_TAG, REVISIONS
from requirements_map.cli import main
from requirements_map.report import ReportError, build_report, write_reports
from requirements_map.results import ResultsError, bdd_test_name, read_results

pytest_plugins = ["trace_fixtures"]
def scenario(name, tags, *statuses, error="", test=None):
    """A scenario as pytest-bdd's cucumber JSON writes it; its id is the pytest test's name."""
    steps = [{"keyword": "Given", "name": f"step {i}", "line": i, "match": {"location": ""},
              "result": dict({"status": s, "duration": 1}, **({"error_message": error} if s == "failed" else {}))}
             for i, s in enumerate(statuses)]
    return {"keyword": "Scenario", "id": test or bdd_test_name(name), "name": name, "line": 1, "description": "",
            "tags": [{"name": t, "line": 1} for t in tags], "type": "scenario", "steps": steps}


def cucumber(path, *scenarios, feature_tags=()):
    path.write_text(json.dumps([{"keyword": "Feature", "uri": "features/execute.feature", "name": "Execute",
                                 "id": "execute", "line": 1, "description": "", "language": "en",
                                 "tags": [{"name": t, "line": 1} for t in feature_tags],
                                 "elements": list(scenarios)}]))
    return path


JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" tests="3">
 <testcase classname="features.test_vram" name="test_weights_stay_resident">
  <skipped type="pytest.skip" message="not verifiable against a numpy worker (resident: false)">skip</skipped>
 </testcase>
 <testcase classname="features.test_cli" name="test_worker_refuses_a_bad_uuid">
  <properties><property name="tags" value="@M0-W-1100"/></properties>
  <skipped type="pytest.skip" message="needs --worker-cmd">skip</skipped>
 </testcase>
 <testcase classname="features.test_execute" name="test_a_haiku_streams[seed-42]"/>
</testsuite></testsuites>
"""


@pytest.fixture
def results(tmp_path):
    cuc = cucumber(tmp_path / "run.json",
                   scenario("A haiku streams", ["M0-W-1300", "M0-W-1310"], "passed", "passed",
                            test="test_a_haiku_streams[seed-42]"),
                   scenario("A bad temperature is refused", ["M0-W-1302"], "passed", "failed", error="got 200\nmore"),
                   scenario("Weights stay resident", ["M0-W-1012"], "passed", "skipped"),
                   scenario("First token arrives quickly", ["M0-W-1600", "deferred-M1"], "failed", error="250 ms"),
                   scenario("Events come in order", ["M0-W-1311", "informational"], "failed"))
    junit = tmp_path / "run.xml"
    junit.write_text(JUNIT)
    return [cuc, junit]


def outcomes(report):
    return {r.id: r for r in report.requirements}


def test_outcomes_per_requirement(results):
    catalog = load_catalog()
    report = build_report(read_results(results), catalog, worker="ref", spec=catalog.spec, sources=[])
    by_id = outcomes(report)
    assert by_id["M0-W-1300"].outcome == by_id["M0-W-1310"].outcome == "passed"
    assert by_id["M0-W-1302"].outcome == "failed" and "got 200" in by_id["M0-W-1302"].reason
    # the skip reason comes from JUnit, the tag from cucumber JSON
    assert by_id["M0-W-1012"].outcome == "not observable" and "numpy worker" in by_id["M0-W-1012"].reason
    assert by_id["M0-W-1100"].outcome == "not run" and by_id["M0-W-1100"].reason == "needs --worker-cmd"
    # deferred requirements and informational scenarios never fail the run
    assert by_id["M0-W-1600"].outcome == "deferred, informational" and "1 informational" in by_id["M0-W-1600"].reason
    assert by_id["M0-W-1600"].scenarios[0]["outcome"] == "informational"
    assert by_id["M0-W-1311"].outcome == "deferred, informational"
    assert by_id["M0-W-1350"].outcome == "deferred, informational" and not by_id["M0-W-1350"].gap
    assert by_id["M0-W-1702"].outcome == "not observable" and not by_id["M0-W-1702"].gap  # a build requirement
    # requirements whose scenarios are not in these results did not run; that is not a gap
    assert by_id["M0-W-1320"].outcome == "not run" and not by_id["M0-W-1320"].gap
    assert "not in these results" in by_id["M0-W-1320"].reason and not report.gaps


def test_an_m0_requirement_no_scenario_checks_is_a_gap(results):
    catalog = load_catalog()
    bare = Catalog(catalog.spec, [dict(e, scenarios=[]) if e["id"] in ("M0-W-1320", "M0-W-1101") else e
                                  for e in catalog.entries])
    by_id = outcomes(build_report(read_results(results), bare, worker="ref", spec=catalog.spec, sources=[]))
    assert by_id["M0-W-1101"].outcome == "uncovered" and not by_id["M0-W-1101"].gap  # optional
    assert by_id["M0-W-1320"].outcome == "uncovered" and by_id["M0-W-1320"].gap  # M0, nothing: a gap


def test_totals_add_up(results):
    catalog = load_catalog()
    report = build_report(read_results(results), catalog, worker="ref", spec=catalog.spec, sources=[])
    for key in ("scope", "section"):
        assert sum(sum(c.values()) for c in report.totals(key).values()) == len(catalog.entries)
    assert report.totals("scope")["deferred-M1"]["deferred, informational"] == 16
    sections = report.totals("section")
    assert {"9.1 Context Management", "9.1 Error Codes"} <= sections.keys()  # the spec has two "## 9."


def test_write_reports_makes_three_self_contained_files(results, tmp_path, record_spec):
    written = write_reports(results, tmp_path / "out", worker="reference-worker <numpy>", spec=record_spec.path)
    md, data, page = (written[k].read_text() for k in ("markdown", "json", "html"))
    assert "Worker under test: **reference-worker <numpy>**" in md
    assert json.loads(data)["spec"]["file_revision"].startswith("d4a857ac")
    assert page.startswith("<!DOCTYPE html>") and "reference-worker &lt;numpy&gt;" in page  # escaped
    # nothing loaded from elsewhere: links only to the page's own anchors and to the findings' evidence
    assert not any(marker in page for marker in ("<script", "src=", "<link", "@import"))
    evidence = {e["url"] for f in load_findings() for e in f.evidence if "url" in e}
    assert {h for h in re.findall(r'href="([^"#][^"]*)"', page)} <= evidence


def test_results_from_another_catalog_are_refused(tmp_path, capsys):
    foreign = cucumber(tmp_path / "foreign.json", scenario("Stops at a stop word", ["M0-W-1422"], "passed"))
    catalog = load_catalog()
    with pytest.raises(ReportError, match="M0-W-1422"):
        build_report(read_results([foreign]), catalog, worker="x", spec=catalog.spec, sources=[])
    assert main(["report", "--results", str(foreign), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "not in the catalog" in err and "Traceback" not in err


def test_later_revision_ids_are_listed_under_their_revision(tmp_path, capsys):
    later = cucumber(tmp_path / "later.json",
                     scenario("Stops at a stop word", ["M0-W-1422"], "passed"),
                     scenario("A bad top_p is refused", ["M0-W-1421"], "failed", error="got 200"),
                     feature_tags=["rev-84202fea"])
    catalog = load_catalog()
    report = build_report(read_results([later]), catalog, worker="x", spec=catalog.spec, sources=[])
    assert [(r.id, r.revision, r.outcome) for r in report.later] == [("M0-W-1422", "rev-84202fea", "passed")]
    # a requirement of record checked here as the later revision extends it: informational
    assert outcomes(report)["M0-W-1421"].outcome == "deferred, informational"
    assert main(["report", "--results", str(later), "--out", str(tmp_path / "o")]) == 0
    md = (tmp_path / "o" / "coverage.md").read_text()
    assert "## Requirements of later spec revisions (informational for d4a857ac)" in md
    assert "| M0-W-1422 | rev-84202fea | passed | Stops at a stop word (passed) | — |" in md
    assert json.loads((tmp_path / "o" / "coverage.json").read_text())["later_revisions"][0]["id"] == "M0-W-1422"


def test_a_measurement_the_run_called_informational_never_fails(tmp_path):
    """The harness turns a missed @deferred-M1 target into an xfail (JUnit) whose steps read
    skipped (cucumber JSON); outline examples merge by the pytest test's name."""
    cuc = cucumber(tmp_path / "c.json",
                   scenario("Refusals are fast", ["M0-W-1603", "M0-W-1300"], "passed", "skipped"),
                   scenario("A field is refused: top_k", ["M0-W-1302"], "passed", test="test_a_field_is_refused[top_k]"),
                   scenario("A field is refused: seed", ["M0-W-1302"], "failed", error="got 200",
                            test="test_a_field_is_refused[seed]"))
    junit = tmp_path / "j.xml"
    junit.write_text("""<testsuites><testsuite name="pytest">
 <testcase classname="features.test_conformance" name="test_refusals_are_fast">
  <skipped type="pytest.xfail" message="informational (deferred-M1): refusal p50 1.8 ms"/></testcase>
 <testcase classname="features.test_conformance" name="test_a_field_is_refused[top_k]"/>
 <testcase classname="features.test_conformance" name="test_a_field_is_refused[seed]">
  <failure message="AssertionError: got 200"/></testcase>
</testsuite></testsuites>""")
    results = read_results([cuc, junit])
    assert sorted((r.name, r.outcome) for r in results) == [
        ("A field is refused: seed", "failed"), ("A field is refused: top_k", "passed"),
        ("Refusals are fast", "informational")]
    catalog = load_catalog()
    by_id = outcomes(build_report(results, catalog, worker="x", spec=catalog.spec, sources=[]))
    assert by_id["M0-W-1300"].outcome == "deferred, informational"  # its only scenario is informational
    assert by_id["M0-W-1302"].outcome == "failed" and "got 200" in by_id["M0-W-1302"].reason


def test_a_deciding_scenario_fails_its_requirement_whatever_the_catalogs_scope(tmp_path):
    """M0-W-1340 is deferred-M1 in the catalog, but its SIGTERM sentence is an M0 success
    criterion: a failed untagged SIGTERM scenario fails it, as the harness's verdict does; the
    deferred /shutdown scenario's miss stays informational."""
    cuc = cucumber(tmp_path / "c.json",
                   scenario("SIGTERM stops a ready worker", ["M0-W-1340"], "failed", error="exit status -9"),
                   scenario("POST /shutdown answers 202", ["deferred-M1", "M0-W-1350"], "failed", error="404"))
    catalog = load_catalog()
    by_id = outcomes(build_report(read_results([cuc]), catalog, worker="x", spec=catalog.spec, sources=[]))
    assert by_id["M0-W-1340"].scope == "deferred-M1"
    assert by_id["M0-W-1340"].outcome == "failed" and "exit status -9" in by_id["M0-W-1340"].reason
    assert by_id["M0-W-1350"].outcome == "deferred, informational"


def test_the_report_names_the_worker_the_harness_recorded(tmp_path):
    junit = tmp_path / "j.xml"
    junit.write_text("""<testsuites><testsuite name="pytest">
 <properties><property name="m0_worker" value="reference worker (numpy backend) on tiny.gguf"/></properties>
 <testcase classname="features.test_conformance" name="test_health_answers"/>
</testsuite></testsuites>""")
    written = write_reports([junit], tmp_path / "o")
    assert "Worker under test: **reference worker (numpy backend) on tiny.gguf**" in written["markdown"].read_text()
    assert json.loads(write_reports([junit], tmp_path / "o", worker="mine")["json"].read_text())["worker"] == "mine"


@pytest.mark.parametrize("content, message", [
    ("", "neither cucumber JSON"),
    ("[{\"no\": \"features\"}]", "not pytest-bdd cucumber JSON"),
    ("<html><body/></html>", "not JUnit XML"),
    ("<testsuites><testsuite>", "not well-formed"),
    ("[]", "no scenarios found"),
])
def test_bad_results_files_are_clear_errors(tmp_path, content, message, capsys):
    bad = tmp_path / "bad.out"
    bad.write_text(content)
    with pytest.raises(ResultsError, match=message):
        read_results([bad])
    assert main(["report", "--results", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert message in capsys.readouterr().err


def test_junit_alone_names_scenarios_as_the_harness_recorded_them(tmp_path):
    junit = tmp_path / "j.xml"
    junit.write_text("""<testsuites><testsuite name="pytest">
 <testcase classname="features.test_vram" name="test_weights_stay_resident_in_vram">
  <properties><property name="tags" value="@M0-W-1012"/>
   <property name="scenario" value="Weights stay resident in VRAM: M0-W-1100 @cuda"/></properties>
  <skipped type="pytest.skip" message="not verifiable">skip</skipped></testcase>
 <testcase classname="features.test_cli" name="test_a_bad_port_is_refused[70000]"/>
</testsuite></testsuites>""")
    by_name = {r.name: r for r in read_results([junit])}
    assert set(by_name) == {"Weights stay resident in VRAM: M0-W-1100 @cuda", "a bad port is refused [70000]"}
    # tags come from the tags property alone, not from words in a scenario's name
    assert by_name["Weights stay resident in VRAM: M0-W-1100 @cuda"].tags == {"M0-W-1012"}


def test_a_missing_results_file_is_a_clear_error(tmp_path, capsys):
    assert main(["report", "--results", str(tmp_path / "none.json")]) == 2
    assert "cannot read results file" in capsys.readouterr().err


def test_results_of_a_real_pytest_bdd_run(tmp_path):
    """Run pytest-bdd itself so the file formats are the real ones, not our idea of them."""
    (tmp_path / "run.feature").write_text(textwrap.dedent("""\
        @M0-W-1320
        Feature: Health
          @M0-W-1364
          Scenario: Health names the tokenizer
            Given a worker
          @M0-W-1302
          Scenario: A bad request is refused
            Given a worker
            Then it fails
          @M0-W-1012
          Scenario: Residency is checked
            Given a worker
            Then it cannot be verified here
        """))
    (tmp_path / "test_run.py").write_text(textwrap.dedent("""\
        import pytest
        from pytest_bdd import given, then, scenarios
        scenarios("run.feature")
        @given("a worker")
        def worker():
            pass
        @then("it fails")
        def fails():
            assert False, "status 200, expected 400"
        @then("it cannot be verified here")
        def blind():
            pytest.skip("not verifiable against a numpy worker")
        """))
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
                    f"--cucumberjson={tmp_path / 'c.json'}", f"--junitxml={tmp_path / 'j.xml'}", str(tmp_path)],
                   cwd=tmp_path, capture_output=True, check=False, timeout=120)
    catalog = load_catalog()
    report = build_report(read_results([tmp_path / "c.json", tmp_path / "j.xml"]), catalog, worker="w",
                          spec=catalog.spec, sources=[])
    by_id = outcomes(report)
    assert by_id["M0-W-1364"].outcome == "passed"
    assert by_id["M0-W-1302"].outcome == "failed" and "status 200" in by_id["M0-W-1302"].reason
    assert by_id["M0-W-1012"].outcome == "not observable" and "numpy worker" in by_id["M0-W-1012"].reason
    assert by_id["M0-W-1320"].outcome == "failed"  # the feature tag covers all three scenarios


def _report_json(written) -> dict:
    return json.loads(written["json"].read_text())


def test_findings_have_a_section_and_stand_beside_their_requirements(results, tmp_path, record_spec):
    written = write_reports(results, tmp_path / "out", spec=record_spec.path)
    md, page, data = written["markdown"].read_text(), written["html"].read_text(), _report_json(written)
    assert "## Spec findings" in md and "### GPT-OSS-20B is not a GPT-2-style model" in md
    row = next(line for line in md.splitlines() if line.startswith("| M0-W-1215 |"))
    assert row.endswith("| [gpt-oss-is-not-gpt2](#gpt-oss-is-not-gpt2) |")
    assert next(r for r in data["requirements"] if r["id"] == "M0-W-1340")["findings"] == [
        "shutdown-endpoint-optional-or-deferred", "sigterm-in-a-deferred-requirement"]
    assert 'id="gpt-oss-is-not-gpt2"' in page and 'href="#gpt-oss-is-not-gpt2"' in page
    assert all(f["problems"] == [] for f in data["findings"])  # every quote holds in the record


def test_a_report_on_a_later_spec_flags_the_quotes_that_moved(results, tmp_path, later_revision):
    written = write_reports(results, tmp_path / "out", spec=later_revision("1adb7159"))
    gpt_oss = next(f for f in _report_json(written)["findings"] if f["id"] == "gpt-oss-is-not-gpt2")
    assert any("it is now on line" in p for p in gpt_oss["problems"])
    assert "Quote out of date in the spec file used" in written["markdown"].read_text()


def _checked_run(tmp_path, revision):
    return [cucumber(tmp_path / f"run-{revision}.json",
                     scenario("Seeded sampling repeats", ["M0-W-1421"], "passed"),
                     scenario("The first token arrives", ["M0-W-1310"], "passed"),
                     feature_tags=[f"checked-{revision}"])]


def test_coverage_checked_against_an_older_wording_is_outdated(tmp_path, later_revision):
    written = write_reports(_checked_run(tmp_path, "d4a857ac"), tmp_path / "out", spec=later_revision("84202fea"))
    by_id = {r["id"]: r for r in _report_json(written)["requirements"]}
    assert by_id["M0-W-1421"]["outcome"] == "outdated" and "checked against revision d4a857ac" in \
        by_id["M0-W-1421"]["reason"]
    diff = by_id["M0-W-1421"]["outdated"]["diff"]
    assert diff[:2] == ["--- d4a857ac", "+++ 84202fea"] and any(line.startswith("+") and "top_p" in line
                                                                 for line in diff)
    assert by_id["M0-W-1310"]["outcome"] == "passed" and by_id["M0-W-1310"]["outdated"] is None  # same text
    md = written["markdown"].read_text()
    assert "## Outdated coverage" in md and "```diff" in md
    assert 'id="outdated-M0-W-1421"' in written["html"].read_text()


@pytest.mark.parametrize("checked, spec", [("84202fea", "84202fea"), ("d4a857ac", None), ("84202fea", None)])
def test_coverage_checked_against_the_wording_under_test_or_a_later_one_is_not_outdated(
        tmp_path, later_revision, record_spec, checked, spec):
    spec_path = later_revision(spec) if spec else record_spec.path
    written = write_reports(_checked_run(tmp_path, checked), tmp_path / "out", spec=spec_path)
    by_id = {r["id"]: r for r in _report_json(written)["requirements"]}
    assert by_id["M0-W-1421"]["outcome"] == "passed" and by_id["M0-W-1421"]["outdated"] is None


def test_a_checked_revision_with_no_copy_at_hand_is_a_note_not_a_guess(tmp_path, later_revision):
    alone = tmp_path / "alone" / "spec.md"
    alone.parent.mkdir()
    alone.write_bytes(later_revision("84202fea").read_bytes())
    written = write_reports(_checked_run(tmp_path, "0123abcd"), tmp_path / "out", spec=alone)
    data = _report_json(written)
    assert any("no copy of 0123abcd" in note for note in data["notes"])
    assert all(r["outdated"] is None for r in data["requirements"])


def test_every_scenario_records_the_revision_its_wording_was_checked_against():
    features = Path(__file__).resolve().parent.parent / "features"
    for label, tags in tagged_scenarios(features):
        revisions = [m.group(1) for m in map(CHECKED_TAG.fullmatch, tags) if m]
        assert revisions and set(revisions) <= REVISIONS.keys(), f"{label}: @checked- tags {revisions}"


def _chromium(url: str, *flags: str, profile) -> tuple[str, list[str]]:
    """Headless Chromium on `url`: its stdout and the console messages it logged."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("headless Chromium is not installed (make test installs Debian's chromium when run as root)")
    done = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
                           "--v=0", f"--user-data-dir={profile}", *flags, url],
                          capture_output=True, text=True, timeout=120)
    return done.stdout, [line for line in done.stderr.splitlines() if ":CONSOLE" in line]


def test_the_browser_logs_what_a_broken_page_logs(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><body><script>console.error('boom'); missing();</script></body>")
    _, console = _chromium(page.as_uri(), "--dump-dom", profile=tmp_path / "profile")
    assert any('"boom"' in line for line in console) and any("missing is not defined" in line for line in console)


def test_the_html_report_renders_in_a_browser_without_errors(results, tmp_path, record_spec):
    written = write_reports(results, tmp_path / "out", worker="reference worker (numpy) on model.gguf",
                            spec=record_spec.path)
    url = written["html"].as_uri()
    dom, console = _chromium(url, "--dump-dom", profile=tmp_path / "profile")
    assert console == []
    assert "Worker under test: <strong>reference worker (numpy) on model.gguf</strong>" in dom
    table = dom[dom.index('<table id="requirements">'):]
    table = table[:table.index("</table>")]
    assert table.count("<tr") == len(load_catalog().entries) + 1
    assert '<td class="failed">failed</td>' in table and '<td class="passed">passed</td>' in table
    assert dom.count('<table class="totals">') == 2 and "<th>total</th>" in dom
    assert '<h2 id="findings">Spec findings</h2>' in dom
    shot = tmp_path / "report.png"
    _, console = _chromium(url, f"--screenshot={shot}", "--window-size=1280,1600", profile=tmp_path / "profile")
    assert console == []
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", png[16:24]) == (1280, 1600)
    assert len(png) > 50_000  # a page of tables and text, not a blank one
