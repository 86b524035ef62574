"""The harness as other projects install it: the wheel carries every package, the features
and the catalog; from a fresh environment outside the checkout, `m0-conformance run` tests the
reference worker on a synthetic model, and the pytest11 entry point serves a project's own
pytest; a fleet run keeps a dead worker's failures to that worker."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import threading
import time
import tomllib
import zipfile
from pathlib import Path

import pytest

from steps.launcher import Launcher

ROOT = Path(__file__).resolve().parent.parent
DOUBLE = ROOT / "tests" / "doubles" / "worker_double.py"


def test_every_package_folder_of_the_checkout_is_packaged():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {str(p.parent.relative_to(ROOT)).replace("/", ".")
             for top in ("reference_worker", "requirements_map", "steps") for p in (ROOT / top).rglob("__init__.py")}
    assert found <= listed, f"package folders missing from pyproject's packages: {sorted(found - listed)}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A venv outside the checkout with the built wheel installed (--no-deps: its dependencies
    come from this environment's site-packages, through a .pth file)."""
    base = tmp_path_factory.mktemp("installed")
    wheels = base / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(ROOT)],
                   check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("m0_conformance-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "steps/features/health.feature" in names and "requirements_map/data/catalog.json" in names
    assert "steps/features/robustness.feature" in names
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", str(wheel)],
                   check=True, capture_output=True, timeout=300, env=_clean_env())
    # after the install: pip would take this environment's editable m0-conformance for it
    (Path(purelib) / "m0-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    features = subprocess.run([python, "-c", "from steps.plugin import FEATURES_DIR; print(FEATURES_DIR)"],
                              cwd=base, env=_clean_env(), check=True, capture_output=True, text=True).stdout
    assert features.strip() == str(Path(purelib) / "steps" / "features")  # the package's, not the checkout's
    return venv


def _clean_env() -> dict:
    """This environment without the checkout on the import path."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "M0_SPEC")}


@pytest.mark.slow
def test_the_installed_command_runs_the_suite_from_anywhere(installed, synthetic_models, tmp_path):
    model = synthetic_models(quant="Q8_0")
    out = tmp_path / "out"
    done = subprocess.run([installed / "bin" / "m0-conformance", "run", "--model", str(model), "--out", str(out),
                           "--", "-k", "health or sse"], cwd=tmp_path, env=_clean_env(), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "M0 verdict: PASS" in done.stdout
    for name in ("cucumber.json", "junit.xml", "results.json", "coverage.md", "coverage.json", "coverage.html"):
        assert (out / name).is_file(), name
    coverage = json.loads((out / "coverage.json").read_text())
    assert coverage["worker"].startswith("reference worker (numpy backend)")
    assert any(r["outcome"] == "passed" for r in coverage["requirements"])


@pytest.mark.slow
def test_the_entry_point_serves_a_projects_own_pytest(installed, tmp_path):
    (tmp_path / "test_m0.py").write_text("from pytest_bdd import scenarios\nfrom steps.plugin import FEATURES_DIR\n\n"
                                         "scenarios(str(FEATURES_DIR / 'health.feature'))\n")
    (tmp_path / "model.gguf").write_bytes((ROOT / "pyproject.toml").read_bytes())  # the double only opens it
    command = write_double_model_command()
    done = subprocess.run([installed / "bin" / "python", "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "--worker-cmd", command, "--model", str(_double_model(tmp_path)), "-k", "health"],
                          cwd=tmp_path, env=_clean_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "M0 verdict: PASS" in done.stdout


def write_double_model_command(rule: str | None = None) -> str:
    broken = f" --break {rule}" if rule else ""
    return (f"{sys.executable} {DOUBLE} --worker-id {{worker_id}} --model {{model}} --gpu-device {{gpu_device}} "
            f"--port {{port}} --token-delay 0.003{broken}")


def _double_model(folder: Path) -> Path:
    from test_harness import write_double_model

    return write_double_model(folder / "double-model.gguf")


def _kill_after_jobs(proc, jobs: int, within_s: float = 300) -> None:
    stop_at = time.monotonic() + within_s
    while time.monotonic() < stop_at and sum('"execute_start"' in line.text for line in proc.lines) < jobs:
        time.sleep(0.05)
    proc.popen.kill()


@pytest.mark.slow
def test_a_fleet_run_keeps_a_dead_workers_failures_to_that_worker(tmp_path):
    model = _double_model(tmp_path)
    doubles = [Launcher(write_double_model_command(), str(model)).start() for _ in range(2)]
    try:
        for double in doubles:
            assert double.wait_ready(20), double.output
        killer = threading.Thread(target=_kill_after_jobs, args=(doubles[1], 10), daemon=True)
        killer.start()  # the second worker dies mid-run, after its tenth job
        out = tmp_path / "out"
        done = subprocess.run([sys.executable, "-m", "requirements_map.cli", "run",
                               "--worker-url", doubles[0].base_url, "--worker-url", doubles[1].base_url,
                               "--out", str(out), "--", "--request-timeout", "5", "-k", "not robustness",
                               "--allow-host-memory-worker"],
                              cwd=ROOT, capture_output=True, text=True, timeout=600)
    finally:
        for double in doubles:
            double.stop()
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-2000:]
    workers = json.loads((out / "results.json").read_text())["workers"]
    outcomes = {label: [s["outcome"] for s in w["scenarios"]] for label, w in workers.items()}
    assert "failed" not in outcomes["worker1"] and outcomes["worker1"].count("passed") > 30
    assert "failed" in outcomes["worker2"] and "passed" in outcomes["worker2"]
    matrix = (out / "matrix.md").read_text()
    assert "| M0-W-1320 ≠ | M0 | passed | failed |" in matrix or "≠ | M0 | passed | failed |" in matrix
    cucumber = json.loads((out / "cucumber.json").read_text())  # merged from the xdist processes' parts
    assert sum(len(f["elements"]) for f in cucumber) > 60 and not list(out.glob("*.part"))
    for label in ("worker1", "worker2"):
        assert (out / label / "coverage.md").is_file() and (out / label / "junit.xml").is_file()
    assert json.loads((out / "worker1" / "coverage.json").read_text())["worker"] == \
        f"running worker at {doubles[0].base_url}"
