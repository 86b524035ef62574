"""The pytest plugin of the conformance suite: which worker to test, and what to report.

Targeting (one of):
  --worker-url URL       a worker that is already running (process scenarios are skipped)
  --worker-cmd TEMPLATE  a command the harness runs itself, with {model} {port} {worker_id}
                         {gpu_device} placeholders
  (neither)              the reference worker on --model, else on the default (real) model,
                         with --backend, else the one this machine has (cuda when CuPy finds a
                         GPU, else numpy)

Reports: cucumber JSON and JUnit XML (under reports/ unless --cucumberjson / --junitxml say
otherwise; the JUnit XML names the worker under test for `m0-conformance report`), and with
--results-json the outcome of every scenario and the verdict per requirement.

Verdict: a scenario tagged @deferred-M1, @optional or @informational (and, unless
--spec-revision names it, one tagged with a later spec revision) is informational: it measures
and reports, and a miss is recorded as `informational`, never as a failure of the M0 verdict.
A worker that keeps its model in host memory (/health resident not true) fails the VRAM
scenarios (@cuda) unless --allow-host-memory-worker excuses it; then they are skipped and the
verdict is NOT VERIFIED, naming the M0 requirements left unchecked, instead of PASS.
"""
from __future__ import annotations

import importlib
import json
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from requirements_map.results import WORKER_PROPERTY
from steps.client import WorkerClient
from steps.launcher import Launcher, WorkerProcess
from steps.tags import requirement_ids, scenario_tags

FEATURES_DIR = Path(__file__).resolve().parent.parent / "features"
REPORTS_DIR = Path(__file__).resolve().parent.parent / "reports"
LATER_REVISIONS = ("rev-84202fea",)
#: Tags whose scenarios measure and report but never fail the verdict: targets deferred to
#: M1, behaviour the spec leaves optional (MAY), and checks that flag rather than decide.
INFORMATIONAL_TAGS = ("deferred-M1", "optional", "informational")
#: What the skip reason of a scenario excused by --allow-host-memory-worker says.
EXCUSED = "not verified: excused by --allow-host-memory-worker"
#: Scenarios that need a particular model, and the text its name must contain.
MODEL_TAGS = {"model-qwen2.5": "qwen2.5", "model-gpt-oss-20b": "gpt-oss-20b"}
#: Scenarios of the GPT-OSS path (features/gpt_oss.feature): they run wherever the worker's
#: /health reports one of these values, or its model's name holds "gpt-oss".
GPT_OSS_TAG = "model-gpt-oss"
GPT_OSS_HEALTH = {"quant_kind": "MXFP4", "tokenizer_kind": "hf-json"}


def serves_gpt_oss(health: dict, names: list[str]) -> bool:
    """Whether the worker serves a gpt-oss, MXFP4 or hf-json model (the GPT-OSS path)."""
    return (any(health.get(field) == value for field, value in GPT_OSS_HEALTH.items())
            or any("gpt-oss" in n.lower() for n in names))
#: Scenarios tagged @model-trained read the model's output as text; a model whose name holds
#: this word has random weights (the project's synthetic GGUFs), and its bytes need not be UTF-8.
RANDOM_WEIGHTS_NAME = "synthetic"


class ScenarioTimeout(Exception):
    """The per-scenario watchdog fired: the worker (or the harness) hung."""


@dataclass
class Target:
    """The worker under test, as the options describe it."""

    description: str
    url: str | None = None
    launcher: Launcher | None = None
    model: str | None = None
    backend: str | None = None
    request_timeout_s: float = 30.0
    startup_timeout_s: float = 120.0
    shared: WorkerProcess | None = None
    started_processes: list[WorkerProcess] = field(default_factory=list)
    health_cache: dict | None = None

    def shared_base_url(self) -> str:
        """The URL of the worker that HTTP scenarios share; (re)started when it is not alive."""
        if self.url:
            return self.url
        if self.shared is not None and not self.shared.serving():
            self.shared.stop()
            self.shared = None
            self.health_cache = None
        if self.shared is None:
            proc = self.launcher.start()
            self.started_processes.append(proc)
            if not proc.wait_ready(self.startup_timeout_s):
                proc.stop()
                pytest.fail(f"the worker did not become ready within {self.startup_timeout_s:.0f} s "
                            f"(exit status {proc.popen.returncode}); its output ends:\n{proc.output[-2000:]}")
            self.shared = proc
        return self.shared.base_url

    def health(self) -> dict | None:
        """The worker's /health body (cached), or None when it does not answer JSON."""
        if self.health_cache is None:
            try:
                body = WorkerClient(self.shared_base_url(), self.request_timeout_s).health().json()
            except Exception:  # any failure here is reported by the health scenarios themselves
                return None
            self.health_cache = body if isinstance(body, dict) else None
        return self.health_cache

    def close(self) -> None:
        for proc in self.started_processes:
            proc.stop()


def pytest_addoption(parser):
    group = parser.getgroup("m0-conformance", "M0 worker conformance")
    group.addoption("--worker-url", help="test a running worker at this base URL")
    group.addoption("--worker-cmd", help="command template that starts a worker; placeholders "
                                         "{model} {port} {worker_id} {gpu_device}")
    group.addoption("--model", help="model file for --worker-cmd and the default worker")
    group.addoption("--gpu-device", default="0", help="value for {gpu_device} (default 0)")
    group.addoption("--backend", choices=("cuda", "numpy"),
                    help="backend of the default reference worker (default: cuda if CuPy finds a GPU)")
    group.addoption("--startup-timeout", type=float, default=120.0, help="seconds a worker may take to be ready")
    group.addoption("--request-timeout", type=float, default=30.0, help="seconds for a connection or one read")
    group.addoption("--shutdown-timeout", type=float, default=30.0,
                    help="seconds a worker may take to exit after SIGTERM or /shutdown (M0-W-1340: 30)")
    group.addoption("--scenario-timeout", type=float, default=300.0, help="seconds one scenario may take")
    group.addoption("--allow-host-memory-worker", action="store_true",
                    help="skip the VRAM scenarios for a worker whose /health says resident is not true (the "
                         "verdict then names the M0 requirements not verified)")
    group.addoption("--spec-revision", default="record", choices=("record", "84202fea"),
                    help="hold the worker to a later spec revision's requirements too")
    group.addoption("--results-json", help="write per-scenario outcomes and the per-requirement verdict here")


@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    from _pytest import junitxml
    from pytest_bdd import cucumber_json

    for tag in sorted(scenario_tags(FEATURES_DIR)):
        config.addinivalue_line("markers", f"{tag}: tag from the feature files")
    # Machine-readable reports by default, for the traceability report. This runs after
    # pytest's and pytest-bdd's own configure, so their writers are started here if unset.
    REPORTS_DIR.mkdir(exist_ok=True)
    if not config.option.cucumber_json_path:
        config.option.cucumber_json_path = str(REPORTS_DIR / "cucumber.json")
        cucumber_json.configure(config)
    if not config.option.xmlpath:
        config.option.xmlpath = str(REPORTS_DIR / "junit.xml")
        junitxml.pytest_configure(config)
    for path in (config.option.cucumber_json_path, config.option.xmlpath, config.getoption("results_json")):
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    config.m0_target = _resolve_target(config)
    config.m0_results = []
    xml = config.stash.get(junitxml.xml_key, None)
    if xml is not None:  # the coverage report (m0-conformance report) names the worker from it
        xml.add_global_property(WORKER_PROPERTY, config.m0_target.description)


def _resolve_target(config) -> Target:
    timeouts = dict(request_timeout_s=config.getoption("request_timeout"),
                    startup_timeout_s=config.getoption("startup_timeout"))
    url = config.getoption("worker_url")
    if url:
        return Target(description=f"running worker at {url}", url=url, **timeouts)
    model = config.getoption("model")
    gpu = config.getoption("gpu_device")
    template = config.getoption("worker_cmd")
    if template:
        return Target(description=f"worker started by: {template}", launcher=Launcher(template, model or "", gpu),
                      model=model, **timeouts)
    model = model or _default_model()
    backend = config.getoption("backend") or _probe_backend()
    command = shutil.which("reference-worker") or str(Path(sys.executable).with_name("reference-worker"))
    template = (f"{command} --worker-id {{worker_id}} --model {{model}} --gpu-device {{gpu_device}} "
                f"--port {{port}} --backend {backend}")
    return Target(description=f"reference worker ({backend} backend) on {model}",
                  launcher=Launcher(template, model, gpu), model=model, backend=backend, **timeouts)


def _default_model() -> str:
    """The path printed by the reference worker's model fetcher (run as a process)."""
    done = subprocess.run([sys.executable, "-m", "reference_worker.models", "fetch"], capture_output=True,
                          text=True, timeout=600)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise pytest.UsageError(f"could not get the default model (pass --model): {done.stderr.strip()[-500:]}")
    return lines[-1].strip()


def _probe_backend() -> str:
    """cuda when a CuPy subprocess sees a GPU, numpy otherwise."""
    probe = "import cupy; assert cupy.cuda.runtime.getDeviceCount() > 0"
    try:
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=120)
    except subprocess.TimeoutExpired:
        return "numpy"
    return "cuda" if done.returncode == 0 else "numpy"


def pytest_report_header(config):
    target = config.m0_target
    lines = [f"M0 conformance target: {target.description}"]
    if target.backend:
        lines.append(f"backend: {target.backend} (cuda when a CuPy probe finds a GPU, else numpy)")
    if target.url:
        lines.append("scenarios tagged @process are skipped: the harness cannot start a worker from a URL")
    lines.append("informational (never fail the verdict): "
                 + ", ".join("@" + t for t in sorted(_informational_tags(config))))
    return lines


def pytest_unconfigure(config):
    target = getattr(config, "m0_target", None)
    if target is not None:
        target.close()


@pytest.fixture(scope="session")
def target(pytestconfig) -> Target:
    return pytestconfig.m0_target


def _tags(item) -> set[str]:
    return {mark.name for mark in item.iter_markers()}


def _informational_tags(config) -> set[str]:
    return set(INFORMATIONAL_TAGS) | {t for t in LATER_REVISIONS if config.getoption("spec_revision") not in t}


def _scenario_name(item) -> str:
    """The scenario's name as its feature file spells it (an outline's filled in with its row, as
    in cucumber JSON), else pytest's name for the test."""
    # pytest-bdd's registry of scenario functions (older releases lack it); the package's own
    # `scenario` attribute is the decorator, hence import_module for the module.
    registry = getattr(importlib.import_module("pytest_bdd.scenario"), "scenario_wrapper_template_registry", {})
    template = registry.get(getattr(item, "function", None))
    if template is None:
        return item.name
    example = getattr(item, "callspec", None)
    return template.render(example.params["_pytest_bdd_example"]).name if example else template.name


def pytest_collection_modifyitems(items):
    # The tags and the scenario's own name travel into the JUnit XML too, for readers that only
    # have that file (cucumber JSON leaves out scenarios skipped before their first step).
    for item in items:
        item.user_properties.append(("tags", " ".join(f"@{t}" for t in sorted(_tags(item)))))
        item.user_properties.append(("scenario", _scenario_name(item)))


def pytest_runtest_setup(item):
    tags = _tags(item)
    target = item.config.m0_target
    if "process" in tags and target.launcher is None:
        pytest.skip("needs to start the worker itself: run with --worker-cmd (not --worker-url)")
    if "cuda" in tags and item.config.getoption("allow_host_memory_worker"):
        health = target.health() or {}
        if health.get("resident") is not True:
            pytest.skip(f"{EXCUSED}: the worker reports resident {health.get('resident')!r} "
                        f"(backend {health.get('backend')!r})")
    if tags & (set(MODEL_TAGS) | {"model-trained", GPT_OSS_TAG}):
        health = target.health() or {}
        names = [str(health.get("model", "")), Path(target.model or "").name]
        running = names[0] or names[1] or "unknown"
        if GPT_OSS_TAG in tags and not serves_gpt_oss(health, names):
            pytest.skip(f"needs a gpt-oss, MXFP4 or hf-json model; the worker runs {running!r} "
                        f"({health.get('quant_kind')!r}, {health.get('tokenizer_kind')!r})")
        for tag in tags & set(MODEL_TAGS):
            if not any(MODEL_TAGS[tag] in n.lower() for n in names):
                pytest.skip(f"needs the {tag[len('model-'):]} model; the worker runs {running!r}")
        if "model-trained" in tags and any(RANDOM_WEIGHTS_NAME in n.lower() for n in names):
            pytest.skip(f"needs a trained model: {running!r} has random weights, whose output bytes "
                        f"need not be UTF-8 text")


def _alarm(signum, frame):
    raise ScenarioTimeout("scenario watchdog fired: the scenario took longer than --scenario-timeout")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """The per-scenario watchdog: SIGALRM interrupts any blocking wait in the main thread."""
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, item.config.getoption("scenario_timeout"))
    try:
        return (yield)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    tags = _tags(item)
    informational = tags & _informational_tags(item.config)
    if report.failed and informational:
        # Measured and missed: reported, but it must not fail the M0 verdict.
        report.outcome = "skipped"
        report.wasxfail = f"informational ({', '.join(sorted(informational))}): {_short(report)}"
    if report.when == "call" or report.outcome != "passed":
        _record(item, report, informational)
    return report


def _short(report) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None:
        return crash.message.splitlines()[0][:300]
    if isinstance(report.longrepr, tuple):
        return str(report.longrepr[2])[:300]
    return str(report.longrepr or "")[:300]


def _record(item, report, informational) -> None:
    results = item.config.m0_results
    if any(r["nodeid"] == item.nodeid for r in results):
        return
    if hasattr(report, "wasxfail") and informational:
        outcome = "informational"
    else:
        outcome = report.outcome
    message = "" if outcome == "passed" else _short(report)
    results.append({"nodeid": item.nodeid, "scenario": _scenario_name(item), "tags": sorted(_tags(item)),
                    "requirements": sorted(requirement_ids(_tags(item))), "outcome": outcome,
                    "message": message, "measurements": [v for k, v in item.user_properties if k == "measurement"],
                    "informational": bool(informational),
                    "excused": outcome == "skipped" and EXCUSED in message})


def requirement_verdicts(results: list[dict]) -> dict[str, str]:
    """Per requirement id: failed if any M0 scenario of it failed; else passed if one passed;
    informational if only informational scenarios missed; else skipped."""
    order = ("failed", "informational", "passed", "skipped")
    verdicts: dict[str, str] = {}
    for record in results:
        for req in record["requirements"]:
            current = verdicts.get(req, "skipped")
            verdicts[req] = min(current, record["outcome"], key=order.index)
    return dict(sorted(verdicts.items()))


def m0_verdict(results: list[dict]) -> tuple[str, list[str]]:
    """PASS, FAIL (with the failed requirements), or NOT VERIFIED (with the M0 requirements whose
    scenarios --allow-host-memory-worker excused); and the requirements it names."""
    failed = [r for r, v in requirement_verdicts(results).items() if v == "failed"]
    if failed:
        return "FAIL", failed
    excused = sorted({req for r in results if r.get("excused") and not r["informational"] for req in r["requirements"]})
    return ("NOT VERIFIED", excused) if excused else ("PASS", [])


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    results = getattr(config, "m0_results", None)
    if not results:
        return
    verdicts = requirement_verdicts(results)
    tr = terminalreporter
    tr.section("M0 conformance: verdict per requirement")
    for req, verdict in verdicts.items():
        scenarios = [r for r in results if req in r["requirements"]]
        detail = next((r["message"] for r in scenarios if r["outcome"] in ("failed", "informational", "skipped")
                       and r["message"]), "")
        counts = ", ".join(f"{sum(r['outcome'] == o for r in scenarios)} {o}"
                           for o in ("passed", "failed", "informational", "skipped")
                           if any(r["outcome"] == o for r in scenarios))
        tr.write_line(f"{req:<16} {verdict.upper():<13} ({counts}) {detail[:110]}")
    measured = [(r["scenario"], m) for r in results for m in r["measurements"]]
    if measured:
        tr.section("M0 conformance: measurements")
        for scenario, text in measured:
            tr.write_line(f"{text:<48} {scenario[:70]}")
    verdict, named = m0_verdict(results)
    detail = {"FAIL": f": {', '.join(named)}", "PASS": "",
              "NOT VERIFIED": f" (no M0 requirement failed; --allow-host-memory-worker excused the VRAM scenarios "
                              f"of {', '.join(named)})"}[verdict]
    tr.write_line("")
    tr.write_line(f"M0 verdict: {verdict}{detail} (target: {config.m0_target.description})")


def pytest_sessionfinish(session, exitstatus):
    config = session.config
    results = getattr(config, "m0_results", None)
    if results is None:
        return
    path = config.getoption("results_json")
    if path:
        verdict, named = m0_verdict(results)
        Path(path).write_text(json.dumps({"target": config.m0_target.description, "scenarios": results,
                                          "requirements": requirement_verdicts(results), "verdict": verdict,
                                          "not_verified": named if verdict == "NOT VERIFIED" else []}, indent=1))
