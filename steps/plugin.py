"""The pytest plugin of the conformance suite: which worker to test, and what to report.

It is loaded by features/conftest.py and, once the package is installed, by pytest's plugin
entry point (pytest11) in any pytest session; it stays inert unless the session asks for the
suite: the feature folder among its arguments, or a target option below.

Targeting (one of):
  --worker-url URL       a worker that is already running (process scenarios are skipped);
                         given several times (or --worker-urls FILE), a fleet: every scenario
                         runs once per worker, each worker's scenarios in one xdist group
  --worker-cmd TEMPLATE  a command the harness runs itself, with {model} {port} {worker_id}
                         {gpu_device} placeholders
  (neither)              the reference worker on --model, else on the default (real) model,
                         with --backend, else the one this machine has (cuda when CuPy finds a
                         GPU, else numpy)

Reports: cucumber JSON and JUnit XML (under reports/ unless --cucumberjson / --junitxml say
otherwise; the JUnit XML names the worker under test for `m0-conformance report`), and with
--results-json the outcome of every scenario and the verdict per requirement.

Robustness profile (opt-in, --robustness): the scenarios tagged @robustness, bounded by the
--robustness-* counts and time budget.

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
import shlex
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

# The step definitions come with the plugin, wherever it is loaded from.
pytest_plugins = [
    "steps.fixtures",
    "steps.execute_steps",
    "steps.validation_steps",
    "steps.cancel_steps",
    "steps.health_steps",
    "steps.process_steps",
    "steps.performance_steps",
    "steps.robustness_steps",
]

_HERE = Path(__file__).resolve().parent
#: The feature files: in the package once installed (the wheel maps features/ to steps/features),
#: else the checkout's features/ beside steps/.
FEATURES_DIR = _HERE / "features" if (_HERE / "features").is_dir() else _HERE.parent / "features"
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
#: The parameter that runs a scenario once per worker of a fleet (its values are worker labels).
FLEET_PARAM = "m0_worker"
#: Options that name a target: any of them asks for the suite in this session.
TARGET_OPTIONS = ("worker_url", "worker_urls", "worker_cmd", "model")


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

    def local_pid(self) -> int | None:
        """The process id of the shared worker when the harness started it, else None."""
        return self.shared.popen.pid if self.shared is not None and self.shared.alive() else None

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
    group.addoption("--worker-url", action="append", default=[],
                    help="test a running worker at this base URL; repeat for a fleet")
    group.addoption("--worker-urls", metavar="FILE",
                    help="a file of worker base URLs, one a line ('#' starts a comment): a fleet")
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
    group.addoption("--robustness", action="store_true",
                    help="also run the robustness profile (@robustness: malformed models, random bodies, a soak)")
    group.addoption("--robustness-seed", type=int, default=0, help="seed of the robustness profile's generators")
    group.addoption("--robustness-bodies", type=int, default=2000,
                    help="random /execute and /cancel bodies to send (default 2000)")
    group.addoption("--robustness-jobs", type=int, default=60, help="jobs in the soak (default 60)")
    group.addoption("--robustness-clients", type=int, default=4,
                    help="concurrent clients in the soak (default 4)")
    group.addoption("--robustness-budget", type=float, default=240.0,
                    help="seconds each robustness check may spend before it stops sending (default 240)")
    group.addoption("--robustness-load-deadline", type=float, default=30.0,
                    help="seconds a worker may take to refuse a malformed model (default 30)")


def suite_requested(config) -> bool:
    """Whether this session runs the conformance suite: a target option, or the feature folder
    (or a file in it) among the arguments."""
    if any(config.getoption(name) for name in TARGET_OPTIONS):
        return True
    base = Path(config.invocation_params.dir)
    for arg in config.args:
        path = (base / arg.split("::")[0]).resolve()
        if path == FEATURES_DIR or FEATURES_DIR in path.parents:
            return True
    return False


@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    config.m0_active = suite_requested(config)
    for tag in sorted(scenario_tags(FEATURES_DIR)):
        config.addinivalue_line("markers", f"{tag}: tag from the feature files")
    if not config.m0_active:
        return
    from _pytest import junitxml
    from pytest_bdd import cucumber_json

    # Machine-readable reports by default, for the traceability report. This runs after
    # pytest's and pytest-bdd's own configure, so their writers are started here if unset.
    reports = _default_reports_dir(config)
    if not config.option.cucumber_json_path:
        config.option.cucumber_json_path = str(reports / "cucumber.json")
        cucumber_json.configure(config)
    if not config.option.xmlpath:
        config.option.xmlpath = str(reports / "junit.xml")
        junitxml.pytest_configure(config)
    for path in (config.option.cucumber_json_path, config.option.xmlpath, config.getoption("results_json")):
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    if hasattr(config, "workerinput") and config.option.cucumber_json_path:
        # pytest-bdd writes cucumber JSON on the xdist controller only, from reports that lose
        # its scenario data on the way there: each process writes its own part, merged at the end.
        part = cucumber_json.LogBDDCucumberJSON(_cucumber_part(config, config.workerinput["workerid"]))
        config.pluginmanager.register(part, "m0-conformance-cucumber-part")
    config.m0_targets = _resolve_targets(config)
    recorder = ResultsRecorder(config)
    config.pluginmanager.register(recorder, "m0-conformance-results")
    config.m0_results = recorder.results
    xml = config.stash.get(junitxml.xml_key, None)
    if xml is not None:  # the coverage report (m0-conformance report) names the worker from it
        xml.add_global_property(WORKER_PROPERTY, _fleet_description(config.m0_targets))


def _default_reports_dir(config) -> Path:
    """reports/ of the checkout when the suite runs from one, else of the invocation folder."""
    checkout = FEATURES_DIR.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "steps").is_dir():
        return checkout / "reports"
    return Path(config.invocation_params.dir) / "reports"


def _fleet_description(targets: dict[str, Target]) -> str:
    if len(targets) == 1:
        return next(iter(targets.values())).description
    return "fleet of " + ", ".join(f"{label}: {t.description}" for label, t in targets.items())


def worker_urls(config) -> list[str]:
    """The URLs of --worker-url and of the --worker-urls file, in order; duplicates are refused."""
    urls = list(config.getoption("worker_url") or [])
    listing = config.getoption("worker_urls")
    if listing:
        try:
            lines = Path(listing).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise pytest.UsageError(f"--worker-urls {listing}: {exc.strerror or exc}") from None
        urls += [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]
    repeated = sorted({u for u in urls if urls.count(u) > 1})
    if repeated:
        raise pytest.UsageError(f"a worker URL is given twice: {', '.join(repeated)}")
    return urls


def _resolve_targets(config) -> dict[str, Target]:
    """The workers under test by label: `worker` alone, or `worker1`, `worker2`... of a fleet."""
    timeouts = dict(request_timeout_s=config.getoption("request_timeout"),
                    startup_timeout_s=config.getoption("startup_timeout"))
    urls = worker_urls(config)
    if len(urls) > 1 and config.getoption("worker_cmd"):
        raise pytest.UsageError("a fleet is given by URLs only: drop --worker-cmd or keep one --worker-url")
    if len(urls) > 1:
        return {f"worker{i}": Target(description=f"running worker at {url}", url=url, **timeouts)
                for i, url in enumerate(urls, 1)}
    if urls:
        return {"worker": Target(description=f"running worker at {urls[0]}", url=urls[0], **timeouts)}
    model = config.getoption("model")
    gpu = config.getoption("gpu_device")
    template = config.getoption("worker_cmd")
    if template:
        return {"worker": Target(description=f"worker started by: {template}",
                                 launcher=Launcher(template, model or "", gpu), model=model, **timeouts)}
    model = model or _default_model()
    backend = config.getoption("backend") or _probe_backend()
    template = (f"{worker_command()} --worker-id {{worker_id}} --model {{model}} --gpu-device {{gpu_device}} "
                f"--port {{port}} --backend {backend}")
    return {"worker": Target(description=f"reference worker ({backend} backend) on {model}",
                             launcher=Launcher(template, model, gpu), model=model, backend=backend, **timeouts)}


def worker_command() -> str:
    """How to run the reference worker: this environment's `reference-worker`, else the one on PATH,
    else (the package importable but not installed: PYTHONPATH only) its module, the same command."""
    beside = Path(sys.executable).with_name("reference-worker")
    if beside.is_file():
        return str(beside)
    return shutil.which("reference-worker") or f"{shlex.quote(sys.executable)} -m reference_worker.cli"


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
    if not config.m0_active:
        return None
    lines = []
    for label, target in config.m0_targets.items():
        lines.append(f"M0 conformance target{'' if len(config.m0_targets) == 1 else ' ' + label}: "
                     f"{target.description}")
        if target.backend:
            lines.append(f"backend: {target.backend} (cuda when a CuPy probe finds a GPU, else numpy)")
    if any(t.url for t in config.m0_targets.values()):
        lines.append("scenarios tagged @process are skipped: the harness cannot start a worker from a URL")
    if len(config.m0_targets) > 1:
        lines.append("fleet: every scenario runs once per worker; run with -n N --dist loadgroup to test "
                     "the workers in parallel, one process each")
    lines.append("informational (never fail the verdict): "
                 + ", ".join("@" + t for t in sorted(_informational_tags(config))))
    if not config.getoption("robustness"):
        lines.append("robustness profile (@robustness) skipped: pass --robustness to run it")
    return lines


def pytest_unconfigure(config):
    for target in getattr(config, "m0_targets", {}).values():
        target.close()


def target_of(item) -> Target:
    """The worker a collected scenario runs against (its fleet parameter, else the only one)."""
    targets = item.config.m0_targets
    callspec = getattr(item, "callspec", None)
    label = callspec.params.get(FLEET_PARAM) if callspec is not None else None
    return targets[label] if label else next(iter(targets.values()))


@pytest.fixture
def target(request) -> Target:
    if not request.config.m0_active:
        raise pytest.UsageError("the M0 conformance suite needs a target: --worker-url, --worker-cmd or --model")
    return target_of(request.node)


def _tags(item) -> set[str]:
    return {mark.name for mark in item.iter_markers()}


def _informational_tags(config) -> set[str]:
    return set(INFORMATIONAL_TAGS) | {t for t in LATER_REVISIONS if config.getoption("spec_revision") not in t}


def _scenario_template(function):
    """pytest-bdd's scenario behind a test function, or None (older releases lack the registry;
    the package's own `scenario` attribute is the decorator, hence import_module for the module)."""
    registry = getattr(importlib.import_module("pytest_bdd.scenario"), "scenario_wrapper_template_registry", {})
    return registry.get(function) if function is not None else None


def _is_conformance_scenario(function) -> bool:
    template = _scenario_template(function)
    return template is not None and FEATURES_DIR in Path(template.feature.filename).resolve().parents


def _scenario_name(item) -> str:
    """The scenario's name as its feature file spells it (an outline's filled in with its row, as
    in cucumber JSON), else pytest's name for the test."""
    template = _scenario_template(getattr(item, "function", None))
    if template is None:
        return item.name
    example = getattr(item, "callspec", None)
    if example is None or "_pytest_bdd_example" not in example.params:
        return template.name
    return template.render(example.params["_pytest_bdd_example"]).name


def pytest_generate_tests(metafunc):
    """In a fleet, every scenario once per worker."""
    config = metafunc.config
    if not config.m0_active or len(config.m0_targets) < 2 or not _is_conformance_scenario(metafunc.function):
        return
    metafunc.fixturenames.append(FLEET_PARAM)
    metafunc.parametrize(FLEET_PARAM, list(config.m0_targets), ids=list(config.m0_targets))


def pytest_collection_modifyitems(config, items):
    if not config.m0_active:
        return
    fleet = len(config.m0_targets) > 1
    # The tags and the scenario's own name travel into the JUnit XML too, for readers that only
    # have that file (cucumber JSON leaves out scenarios skipped before their first step).
    for item in items:
        if not _is_conformance_scenario(getattr(item, "function", None)):
            continue
        item.user_properties.append(("tags", " ".join(f"@{t}" for t in sorted(_tags(item)))))
        item.user_properties.append(("scenario", _scenario_name(item)))
        if fleet:
            label = item.callspec.params[FLEET_PARAM]
            item.user_properties.append(("worker", label))
            # pytest-xdist's --dist loadgroup keeps one worker's scenarios in one process, in
            # order: a worker runs one job at a time, and its scenarios assume they have it alone.
            item.add_marker(pytest.mark.xdist_group(label))


def pytest_runtest_setup(item):
    if not item.config.m0_active or not _is_conformance_scenario(getattr(item, "function", None)):
        return
    tags = _tags(item)
    target = target_of(item)
    if "robustness" in tags and not item.config.getoption("robustness"):
        pytest.skip("robustness profile: opt-in, pass --robustness")
    if "process" in tags and target.launcher is None:
        pytest.skip("needs to start the worker itself: run with --worker-cmd (not --worker-url)")
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
    # After the model skips: a scenario for another model is not excused, it does not apply.
    if "cuda" in tags and item.config.getoption("allow_host_memory_worker"):
        health = target.health() or {}
        if health.get("resident") is not True:
            pytest.skip(f"{EXCUSED}: the worker reports resident {health.get('resident')!r} "
                        f"(backend {health.get('backend')!r})")


def _alarm(signum, frame):
    raise ScenarioTimeout("scenario watchdog fired: the scenario took longer than --scenario-timeout")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """The per-scenario watchdog: SIGALRM interrupts any blocking wait in the main thread."""
    if not item.config.m0_active:
        return (yield)
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
    if not item.config.m0_active or not _is_conformance_scenario(getattr(item, "function", None)):
        return report
    informational = _tags(item) & _informational_tags(item.config)
    if report.failed and informational:
        # Measured and missed: reported, but it must not fail the M0 verdict.
        report.outcome = "skipped"
        report.wasxfail = f"informational ({', '.join(sorted(informational))}): {_short(report)}"
    return report


def _short(report) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None:
        return crash.message.splitlines()[0][:300]
    if isinstance(report.longrepr, tuple):
        return str(report.longrepr[2])[:300]
    return str(report.longrepr or "")[:300]


class ResultsRecorder:
    """Records the outcome of each scenario where reports arrive (the controller under
    pytest-xdist), from what the report carries: its outcome and its user properties."""

    def __init__(self, config):
        self.config = config
        self.results: list[dict] = []

    def pytest_runtest_logreport(self, report):
        properties = {name: value for name, value in report.user_properties if name != "measurement"}
        if "scenario" not in properties or any(r["nodeid"] == report.nodeid for r in self.results):
            return
        if report.when != "call" and report.outcome == "passed":
            return
        tags = set(properties["tags"].replace("@", "").split())
        informational = tags & _informational_tags(self.config)
        outcome = "informational" if hasattr(report, "wasxfail") and informational else report.outcome
        message = "" if outcome == "passed" else _short(report)
        self.results.append({"nodeid": report.nodeid, "scenario": properties["scenario"], "tags": sorted(tags),
                             "requirements": sorted(requirement_ids(tags)), "outcome": outcome, "message": message,
                             "measurements": [v for k, v in report.user_properties if k == "measurement"],
                             "informational": bool(informational), "worker": properties.get("worker", "worker"),
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


def _by_worker(config) -> dict[str, list[dict]]:
    return {label: [r for r in config.m0_results if r["worker"] == label] for label in config.m0_targets}


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not getattr(config, "m0_active", False) or not config.m0_results:
        return
    tr = terminalreporter
    fleet = len(config.m0_targets) > 1
    for label, results in _by_worker(config).items():
        target = config.m0_targets[label]
        verdicts = requirement_verdicts(results)
        tr.section(f"M0 conformance: verdict per requirement{' (' + label + ')' if fleet else ''}")
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
            tr.section(f"M0 conformance: measurements{' (' + label + ')' if fleet else ''}")
            for scenario, text in measured:
                tr.write_line(f"{text:<48} {scenario[:70]}")
        verdict, named = m0_verdict(results)
        detail = {"FAIL": f": {', '.join(named)}", "PASS": "",
                  "NOT VERIFIED": f" (no M0 requirement failed; --allow-host-memory-worker excused the VRAM "
                                  f"scenarios of {', '.join(named)})"}[verdict]
        tr.write_line("")
        tr.write_line(f"M0 verdict{' ' + label if fleet else ''}: {verdict}{detail} (target: {target.description})")


def results_document(config) -> dict:
    """What --results-json holds: the target, every scenario, the verdict per requirement, and
    for a fleet the same per worker."""
    verdict, named = m0_verdict(config.m0_results)
    document = {"target": _fleet_description(config.m0_targets), "scenarios": config.m0_results,
                "requirements": requirement_verdicts(config.m0_results), "verdict": verdict,
                "not_verified": named if verdict == "NOT VERIFIED" else []}
    if len(config.m0_targets) > 1:
        document["workers"] = {label: {"target": config.m0_targets[label].description, "scenarios": results,
                                       "requirements": requirement_verdicts(results)}
                               for label, results in _by_worker(config).items()}
    return document


def _cucumber_part(config, worker_id: str) -> str:
    return f"{config.option.cucumber_json_path}.{worker_id}.part"


def _merge_cucumber_parts(path: Path) -> None:
    """Fold the xdist processes' cucumber JSON parts into `path`, one entry per feature file."""
    parts = sorted(path.parent.glob(f"{path.name}.*.part"))
    if not parts:
        return
    features: dict[str, dict] = {}
    for part in parts:
        for feature in json.loads(part.read_text(encoding="utf-8")):
            merged = features.setdefault(feature["uri"], {**feature, "elements": []})
            merged["elements"] += feature["elements"]
        part.unlink()
    path.write_text(json.dumps(list(features.values())), encoding="utf-8")


@pytest.hookimpl(trylast=True)  # after pytest-bdd's writer, whose file this completes
def pytest_sessionfinish(session, exitstatus):
    config = session.config
    if not getattr(config, "m0_active", False) or hasattr(config, "workerinput"):
        return  # an xdist worker process: the controller writes the results
    if config.option.cucumber_json_path:
        _merge_cucumber_parts(Path(config.option.cucumber_json_path))
    path = config.getoption("results_json")
    if path:
        Path(path).write_text(json.dumps(results_document(config), indent=1))
