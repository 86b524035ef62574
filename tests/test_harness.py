"""Self-test of the conformance harness: run `pytest features/` against test doubles of a
worker (tests/doubles/worker_double.py), one correct and one per broken rule, and check that
the correct one passes every M0 scenario and each broken one fails the scenarios of its rule,
and only requirements its rule can explain.

The doubles keep their "model" in host memory, as the reference worker on NumPy does, so the
harness runs with --allow-host-memory-worker, except against the doubles that try to talk their
way out of the VRAM requirements: those must fail them.

The runs take half a minute each, so they all run once, two at a time, in a module
fixture; the tests then read their results. The correct double and the doubles that break
process rules are started by the harness (--worker-cmd, every scenario runs); the doubles
that break HTTP rules are started here and tested as running workers (--worker-url), which
skips the process scenarios and halves the time of the self-test.
"""
from __future__ import annotations

import json
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from steps.cancel_steps import queued_ends_with_error
from steps.client import Event, Stream
from steps.health_steps import gguf_file_type, m0_quant_kind
from steps.jobs import Job, percentile
from steps.launcher import Launcher
from steps.plugin import m0_verdict, worker_command

ROOT = Path(__file__).resolve().parent.parent
DOUBLE = ROOT / "tests" / "doubles" / "worker_double.py"

# For each broken rule: the requirements that must fail (the rule's own), and the others
# that may fail too because the broken behaviour hides what their scenarios look at.
VALIDATION = {"M0-W-1300", "M0-W-1302"}
CANCEL = {"M0-W-1330", "M0-SYS-6.3.5"}
#: What /health must say of a model resident in VRAM (the scenarios of vram_residency.feature).
VRAM = {"M0-W-1012", "M0-SYS-2.2.1", "M0-W-1011", "M0-W-1002"}
EXPECTED: dict[str, tuple[set[str], set[str]]] = {
    "event-order": ({"M0-W-1311", "M0-W-1310", "M0-W-1300"}, set()),
    # Without quant_kind there is no name to hold to the spec's either.
    "health-missing-field": ({"M0-W-1320", "M0-W-1364", "M0-W-1011"}, {"M0-W-1201"}),
    "health-mistyped-field": ({"M0-W-1320", "M0-W-1364", "M0-W-1011"}, set()),
    "not-resident": (VRAM, set()),
    "no-vram": (VRAM, set()),
    "quant-kind-lowercase": ({"M0-W-1320", "M0-W-1201"}, set()),
    "accept-bad-job-id": (VALIDATION, set()),
    "accept-bad-prompt": (VALIDATION, set()),
    "accept-bad-max-tokens": (VALIDATION, set()),
    "accept-bad-temperature": (VALIDATION, set()),
    "accept-bad-seed": (VALIDATION, set()),
    "accept-bad-body": (VALIDATION, set()),
    "accept-duplicate-job-id": (VALIDATION, set()),
    "cancel-ignored": (CANCEL | {"M0-W-1310", "M0-W-1301", "M0-W-1510", "M0-W-1500"}, set()),
    "cancel-wrong-answer": (CANCEL | {"M0-W-1301", "M0-W-1510", "M0-W-1500"}, {"M0-W-1310"}),
    "utf8-split": ({"M0-W-1824"}, set()),
    "nondeterministic": ({"M0-W-1030", "M0-W-1032", "M0-W-1421", "M0-W-1826", "M0-SYS-2.3.1"}, set()),
    "ignore-seed": ({"M0-W-1030", "M0-W-1421"}, set()),
    "overrun-max-tokens": ({"M0-W-1300"}, set()),
    "wrong-indices": ({"M0-W-1312"}, set()),
    "wrong-count": ({"M0-W-1312"}, set()),
    "overflow-crash": ({"M0-W-1021", "M0-W-1825", "M0-W-1510", "M0-W-1500"}, set()),
    "overflow-wrong-code": ({"M0-W-1021", "M0-W-1825", "M0-W-1510", "M0-W-1500"}, set()),
    # Nothing waits in a queue, so the queued-job cancel scenario has no queued job.
    "concurrent": ({"M0-W-1301"}, CANCEL),
    "bad-exit-codes": ({"M0-W-1100", "M0-W-1111", "M0-W-1210", "M0-W-1211", "M0-W-1212", "M0-W-1500",
                        "M0-W-1340", "M0-W-1401", "M0-W-1900", "M0-W-1820"}, set()),
    "no-progress": ({"M0-W-1621"}, set()),
    "ignore-sigterm": ({"M0-W-1340", "M0-W-1401", "M0-W-1900", "M0-W-1820"}, set()),
    # A buffered stream also hides the running job that cancel and duplicate-id scenarios need.
    "buffered": ({"M0-W-1310", "M0-W-1330", "M0-SYS-6.3.5"},
                 VALIDATION | {"M0-W-1510", "M0-W-1500", "M0-W-1301"}),
}


#: Rules a double breaks in its process (or that need the harness to restart it).
PROCESS_RULES = {"bad-exit-codes", "no-progress", "ignore-sigterm", "overflow-crash"}
#: Doubles whose /health tries to excuse them from the VRAM requirements: no option excuses them.
UNEXCUSED_RULES = {"not-resident", "no-vram"}


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return write_double_model(tmp_path_factory.mktemp("model") / "double-model.gguf")


def write_double_model(path: Path) -> Path:
    """A small GGUF the doubles read (one tensor, so a 4096-byte prefix is truncated)."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("double-model")
    writer.add_context_length(4096)
    writer.add_tensor("token_embd.weight", np.zeros((64, 64), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def double_command(rule: str | None) -> str:
    broken = f" --break {rule}" if rule else ""
    return (f"{sys.executable} {DOUBLE} --worker-id {{worker_id}} --model {{model}} "
            f"--gpu-device {{gpu_device}} --port {{port}} --token-delay 0.003{broken}")


def run_harness(rule: str | None, model: Path, out: Path) -> dict:
    """`pytest features/` against the double (broken by `rule`); its results JSON."""
    out.mkdir(parents=True, exist_ok=True)
    excuse = [] if rule in UNEXCUSED_RULES else ["--allow-host-memory-worker"]
    if rule is None or rule in PROCESS_RULES:
        return _pytest_features(["--worker-cmd", double_command(rule), "--model", str(model), *excuse], out)
    double = Launcher(double_command(rule), str(model)).start()
    try:
        assert double.wait_ready(20), f"the {rule} double did not start: {double.output}"
        return _pytest_features(["--worker-url", double.base_url, "--model", str(model), *excuse], out)
    finally:
        double.stop()


def _pytest_features(target: list[str], out: Path) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "features", "-q", "-p", "no:cacheprovider", *target,
         "--results-json", str(out / "results.json"),
         "--cucumberjson", str(out / "cucumber.json"), "--junitxml", str(out / "junit.xml"),
         "--startup-timeout", "20", "--request-timeout", "15", "--shutdown-timeout", "3",
         "--scenario-timeout", "90"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    (out / "output.txt").write_text(done.stdout + done.stderr)
    results = json.loads((out / "results.json").read_text())
    results["exit_status"] = done.returncode
    results["output"] = done.stdout
    return results


@pytest.fixture(scope="module")
def runs(model, tmp_path_factory) -> dict[str | None, dict]:
    rules = [None, *EXPECTED]
    base = tmp_path_factory.mktemp("runs")
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = pool.map(lambda r: run_harness(r, model, base / (r or "correct")), rules)
        return dict(zip(rules, results))


def failed_requirements(results: dict) -> set[str]:
    return {req for s in results["scenarios"] if s["outcome"] == "failed" for req in s["requirements"]}


@pytest.mark.slow
def test_the_correct_double_passes_every_m0_scenario(runs):
    results = runs[None]
    failed = [f"{s['scenario']}: {s['message']}" for s in results["scenarios"] if s["outcome"] == "failed"]
    assert not failed, "\n".join(failed)
    assert results["exit_status"] == 0
    # scenarios are named as their feature files spell them, not by pytest's test names
    assert not [s["scenario"] for s in results["scenarios"] if s["scenario"].startswith("test_")]
    assert sum(s["outcome"] == "passed" for s in results["scenarios"]) > 80


@pytest.mark.slow
def test_a_host_memory_worker_excused_by_the_option_is_not_verified_rather_than_passed(runs):
    results = runs[None]
    # every scenario of vram_residency.feature, and the one that watches GPU memory come back
    excused = VRAM | {"M0-W-1201", "M0-W-1220", "M0-W-1020", "M0-W-1111", "M0-W-1401"}
    assert results["verdict"] == "NOT VERIFIED" and set(results["not_verified"]) == excused
    assert ("M0 verdict: NOT VERIFIED (no M0 requirement failed; --allow-host-memory-worker excused the VRAM "
            f"scenarios of {', '.join(sorted(excused))})") in results["output"]


@pytest.mark.parametrize("quant_kind", ["MXFP4", "Q4_K_M", "Q4_0", "Q8_0", "F16", "BF16", "Q6_K", "F32"])
def test_quant_kind_is_held_to_the_spec_and_llama_cpp_names(quant_kind):
    gguf_file_type({"quant_kind": quant_kind}, "quant_kind")


@pytest.mark.parametrize("quant_kind", ["q4_k_m", "Q4_K_M ", "MXFP4_MOE", "4-bit", "", None, 15])
def test_any_other_quant_kind_fails(quant_kind):
    with pytest.raises(AssertionError, match="§7.3 names MXFP4, Q4_K_M, Q4_0"):
        gguf_file_type({"quant_kind": quant_kind}, "quant_kind")


def test_a_gguf_file_type_outside_m0s_matrix_is_flagged():
    m0_quant_kind({"quant_kind": "Q4_0"}, "quant_kind", "MXFP4, Q4_K_M, Q4_0")
    with pytest.raises(AssertionError, match="Q8_0.*outside M0's matrix"):
        m0_quant_kind({"quant_kind": "Q8_0"}, "quant_kind", "MXFP4, Q4_K_M, Q4_0")


@pytest.mark.slow
@pytest.mark.parametrize("rule", sorted(EXPECTED))
def test_a_double_that_breaks_one_rule_fails_exactly_its_requirements(runs, rule):
    must, may = EXPECTED[rule]
    results = runs[rule]
    failed = failed_requirements(results)
    detail = "\n".join(f"{s['scenario']}: {s['requirements']}: {s['message']}"
                       for s in results["scenarios"] if s["outcome"] == "failed")
    assert must <= failed, f"{rule}: expected failures of {sorted(must - failed)}; failed:\n{detail}"
    assert failed <= must | may, f"{rule}: unexpected failures of {sorted(failed - must - may)}:\n{detail}"
    assert results["exit_status"] == 1, f"{rule}: the run's exit status is {results['exit_status']}"


def _cancelled_job(decode_ms, cancel_after_first_token_s: float, terminal: str = "end",
                   first_token_at: float = 10.0, ends_after_s: float = 0.5) -> Job:
    """A job whose `started` event arrived 0.1 s before its first token (at first_token_at) and
    whose cancel was answered the given time after that token (before it, when negative)."""
    data = {"tokens_out": 8, "stop_reason": "eos"} if terminal == "end" else {"code": "CANCELLED"}
    if decode_ms is not None:
        data["decode_time_ms"] = decode_ms
    t = first_token_at
    events = [Event("started", b"{}", t - 0.1, {}), Event("token", b"{}", t, {"t": "a", "i": 0}),
              Event(terminal, b"{}", t + ends_after_s, data)]
    job = Job(client=None, request={"job_id": "j"},
              stream=Stream(200, "text/event-stream", events=events, closed=t + ends_after_s + 0.5))
    job.cancel_answered = t + cancel_after_first_token_s
    return job


#: The running job of the queue scenario, still generating long after the second job's cancel.
STILL_RUNNING = _cancelled_job(60_000, 0, first_token_at=9.0, ends_after_s=61.0)


def test_a_job_that_ended_before_its_cancel_was_answered_skips_the_scenario():
    # 14 ms of decoding, the cancel 200 ms after the first token: the job was over by then.
    with pytest.raises(pytest.skip.Exception, match="too fast a worker"):
        queued_ends_with_error(_cancelled_job(14, 0.2), STILL_RUNNING, 1, "CANCELLED")
    # a long decode, but its end event arrived before the cancel was answered: the two crossed
    with pytest.raises(pytest.skip.Exception, match="too fast a worker"):
        queued_ends_with_error(_cancelled_job(60_000, 0.6), STILL_RUNNING, 1, "CANCELLED")


@pytest.mark.parametrize("cancel_after_first_token_s", [0.2, -0.05])  # after its token; between started and token
def test_a_queued_job_that_had_started_before_its_cancel_was_answered_skips_the_scenario(cancel_after_first_token_s):
    # 900 ms of decoding: still going at the cancel, but it had left the queue.
    with pytest.raises(pytest.skip.Exception, match="started event arrived .* before its cancel was answered"):
        queued_ends_with_error(_cancelled_job(900, cancel_after_first_token_s), STILL_RUNNING, 1, "CANCELLED")


def test_a_queued_job_whose_running_job_ended_before_its_cancel_skips_the_scenario():
    # The running job's first token at 9.0 s and 300 ms of decoding: over before the cancel at 9.8 s.
    with pytest.raises(pytest.skip.Exception, match="the running job ended .* before the queued job's cancel"):
        queued_ends_with_error(_cancelled_job(900, -0.2), _cancelled_job(300, 0, first_token_at=9.0), 1, "CANCELLED")


@pytest.mark.parametrize("decode_ms", [900, 14, None, "fast"])  # any decode time, or one that says nothing usable
def test_a_job_still_queued_at_its_cancel_that_runs_anyway_fails(decode_ms):
    # The cancel at 9.8 s, before its started event (9.9 s), while the running job still ran.
    with pytest.raises(AssertionError, match="expected error CANCELLED"):
        queued_ends_with_error(_cancelled_job(decode_ms, -0.2), STILL_RUNNING, 1, "CANCELLED")


def test_a_cancelled_job_passes():
    queued_ends_with_error(_cancelled_job(None, 0.2, terminal="error"), STILL_RUNNING, 1, "CANCELLED")


def test_percentile_is_the_nearest_rank():
    values = list(range(20, 0, -1))
    assert percentile(values, 95) == 19  # rank ceil(0.95 * 20) = 19, not the maximum
    assert percentile(values, 50) == 10
    assert percentile(values, 96) == 20
    assert percentile([7.0], 99) == 7.0


def _record(outcome, requirements, excused=False, informational=False):
    return {"requirements": requirements, "outcome": outcome, "excused": excused, "informational": informational}


def test_the_verdict_names_what_an_excuse_left_unverified_and_a_failure_beats_it():
    excused = _record("skipped", ["M0-W-1012"], excused=True)
    assert m0_verdict([_record("passed", ["M0-W-1300"])]) == ("PASS", [])
    assert m0_verdict([_record("passed", ["M0-W-1300"]), excused]) == ("NOT VERIFIED", ["M0-W-1012"])
    assert m0_verdict([excused, _record("failed", ["M0-W-1302"])]) == ("FAIL", ["M0-W-1302"])
    # an informational scenario is never an M0 requirement left unverified
    assert m0_verdict([_record("skipped", ["M0-W-1600"], excused=True, informational=True)]) == ("PASS", [])


def test_without_an_installed_command_the_harness_runs_the_worker_module(tmp_path, monkeypatch):
    # a Python with the package on PYTHONPATH but no console script (the GPU machine's)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    assert shlex.split(worker_command()) == [str(tmp_path / "python"), "-m", "reference_worker.cli"]
    monkeypatch.undo()  # and whichever form this environment gets, it is the worker's command line
    done = subprocess.run([*shlex.split(worker_command()), "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "--worker-id" in done.stdout
