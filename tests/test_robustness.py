"""The robustness profile's own parts: the malformed-model corpus is malformed by llama.cpp's
judgement, the random bodies replay from their seed, and the profile, run against worker
doubles, passes the correct one and catches the two it exists to catch (a request that kills
the connection, a job slot leaked on disconnect)."""
from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from steps.gguf_corpus import FAMILIES, Layout, corpus
from steps.random_bodies import random_bodies
from steps.soak import order_problem
from test_harness import write_double_model

ROOT = Path(__file__).resolve().parent.parent
DOUBLE = ROOT / "tests" / "doubles" / "worker_double.py"


def test_every_malformed_copy_is_refused_by_llama_cpp(synthetic_models, tmp_path):
    llama_cpp = pytest.importorskip("llama_cpp")
    model = synthetic_models(quant="mixed")
    llama_cpp.Llama(str(model), n_ctx=64, verbose=False)  # the original loads
    cases = corpus(Layout.read(model))
    assert {c.family for c in cases} == set(FAMILIES)
    loaded = []
    for case in cases:
        path = case.write(model, tmp_path / "malformed.gguf")
        try:
            llama_cpp.Llama(str(path), n_ctx=64, verbose=False)
        except ValueError:
            continue
        loaded.append(case.case)
    assert not loaded, f"llama.cpp loads these 'malformed' copies: {loaded}"


def test_a_malformed_copy_changes_only_what_it_says(synthetic_model, tmp_path):
    original = synthetic_model.read_bytes()
    for case in corpus(Layout.read(synthetic_model)):
        data = case.write(synthetic_model, tmp_path / "m.gguf").read_bytes()
        expected = bytearray(original[:case.length] if case.length is not None else original)
        for offset, patch in case.patches:
            expected[offset:offset + len(patch)] = patch
        assert data == bytes(expected), case.case
        assert data != original, case.case


def test_random_bodies_replay_from_their_seed():
    first = [(b.path, b.data) for b in random_bodies(7, 300)]
    assert first == [(b.path, b.data) for b in random_bodies(7, 300)]
    assert first != [(b.path, b.data) for b in random_bodies(8, 300)]
    kinds = {b.kind for b in random_bodies(7, 300)}
    assert {"valid", "empty body", "not UTF-8", "JSON, not an object"} <= kinds
    assert {p for p, _ in first} == {"/execute", "/cancel"}


def test_valid_random_bodies_are_valid_requests():
    valid = [json.loads(b.data) for b in random_bodies(3, 2000) if b.kind == "valid"]
    assert valid and all(isinstance(v.get("job_id"), str) for v in valid)
    assert len({v["job_id"] for v in valid}) == len(valid)


@pytest.mark.parametrize("names, problem", [
    (["started", "token", "end"], None),
    (["started", "end"], None),
    (["started", "token", "metrics", "error"], None),
    ([], "no events at all"),
    (["token", "started", "end"], "first event is 'token', not started"),
    (["started", "token"], "0 terminal events"),
    (["started", "end", "error"], "2 terminal events"),
    (["started", "end", "token"], "events after the terminal event"),
])
def test_order_problem(names, problem):
    assert order_problem(names) == problem


def profile_run(rule: str | None, model: Path, out: Path) -> dict:
    """The robustness profile (not its malformed models: the double reads only metadata) against
    the double broken by `rule`; its results JSON."""
    out.mkdir(parents=True, exist_ok=True)
    broken = f" --break {rule}" if rule else ""
    command = (f"{sys.executable} {DOUBLE} --worker-id {{worker_id}} --model {{model}} --gpu-device {{gpu_device}} "
               f"--port {{port}} --token-delay 0.003{broken}")
    subprocess.run([sys.executable, "-m", "pytest", "features", "-q", "-p", "no:cacheprovider",
                    "-k", "robustness and not malformed", "--robustness", "--worker-cmd", command,
                    "--model", str(model), "--robustness-bodies", "300", "--robustness-jobs", "30",
                    "--robustness-budget", "60", "--request-timeout", "5",
                    "--results-json", str(out / "results.json"), "--junitxml", str(out / "junit.xml"),
                    "--cucumberjson", str(out / "cucumber.json")], cwd=ROOT, capture_output=True, timeout=600)
    return json.loads((out / "results.json").read_text())


@pytest.fixture(scope="module")
def profile_runs(tmp_path_factory):
    model = write_double_model(tmp_path_factory.mktemp("model") / "double-model.gguf")
    base = tmp_path_factory.mktemp("robustness")
    rules = [None, "drop-on-deep-json", "leak-on-disconnect"]
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(rules, pool.map(lambda r: profile_run(r, model, base / (r or "correct")), rules)))


def _failed(results) -> dict[str, str]:
    return {s["scenario"]: s["message"] for s in results["scenarios"] if s["outcome"] in ("failed", "informational")}


@pytest.mark.slow
def test_the_profile_passes_the_correct_double(profile_runs):
    results = profile_runs[None]
    assert len(results["scenarios"]) == 3
    assert not _failed(results)


@pytest.mark.slow
def test_the_profile_catches_a_worker_that_drops_the_connection_on_a_deep_body(profile_runs):
    failed = _failed(profile_runs["drop-on-deep-json"])
    assert list(failed) == ["Random /execute and /cancel bodies all get an answer below 500, and the worker "
                            "keeps serving"], failed


@pytest.mark.slow
def test_the_profile_catches_a_worker_that_leaks_a_job_on_disconnect(profile_runs):
    failed = _failed(profile_runs["leak-on-disconnect"])
    assert sorted(name.split(":")[0][:30] for name in failed) == ["A soak of concurrent jobs, som",
                                                                   "Streams dropped by their clien"], failed
    assert "problems in a soak" in next(m for n, m in failed.items() if n.startswith("A soak"))
