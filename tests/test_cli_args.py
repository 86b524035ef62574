"""`reference-worker` arguments (M0-W-1100/1101) and startup failures (M0-W-1111), run as a
process: invalid arguments exit 1 naming the argument; a failed start logs an `error` event
with its context and exits 1; optional arguments take effect."""
from __future__ import annotations

import json
import socket
import subprocess

import pytest
import requests
from worker_process import WorkerProcess, build_synthetic_model, execute, free_port, read_events, worker_command

from reference_worker import cli
from reference_worker.errors import ErrorCode, WorkerError

WORKER_ID = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return build_synthetic_model(tmp_path_factory.mktemp("models"))


def run_cli(*args: str, timeout_s: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(worker_command(*args), capture_output=True, text=True, timeout=timeout_s)


def arguments(model, **override) -> list[str]:
    """A valid command line with some arguments replaced (None drops one)."""
    values = {"--worker-id": WORKER_ID, "--model": str(model), "--gpu-device": "0",
              "--port": str(free_port()), "--backend": "numpy", **override}
    return [item for key, value in values.items() if value is not None for item in (key, value)]


INVALID = [
    ("--worker-id", None), ("--worker-id", "not-a-uuid"), ("--worker-id", "1b4e28ba2fa111d2883f0016d3cca427"),
    ("--model", None), ("--model", "/no/such/model.gguf"), ("--model", "/tmp"),
    ("--gpu-device", None), ("--gpu-device", "-1"), ("--gpu-device", "zero"),
    ("--port", None), ("--port", "1023"), ("--port", "65536"), ("--port", "http"),
    ("--backend", "tpu"),
    ("--max-tokens-in", "0"), ("--max-tokens-out", "0"), ("--max-tokens-out", "2049"),
    ("--inference-timeout-sec", "0"), ("--inference-timeout-sec", "-1"), ("--inference-timeout-sec", "nan"),
    ("--inference-timeout-sec", "inf"),
    ("--kv-cache-size-mb", "0"), ("--vram-budget-mb", "0"), ("--residency-check-sec", "0"),
    ("--shutdown-grace-sec", "0"), ("--shutdown-grace-sec", "4.01"),
    ("--host", "no-such-host.invalid"), ("--tokenizer-json", "/no/such/tokenizer.json"), ("--tokenizer-json", "/tmp"),
]


@pytest.mark.parametrize("argument, value", INVALID)
def test_an_invalid_argument_exits_1_naming_it(model, argument, value):
    result = run_cli(*arguments(model, **{argument: value}))
    assert result.returncode == 1
    assert argument in result.stderr and "error" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unknown_argument_exits_1(model):
    result = run_cli(*arguments(model), "--bogus", "1")
    assert result.returncode == 1 and "--bogus" in result.stderr


def test_a_port_in_use_exits_1_naming_the_port(model):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli(*arguments(model, **{"--port": str(port)}))
    assert result.returncode == 1 and "--port" in result.stderr and str(port) in result.stderr


def error_event(result: subprocess.CompletedProcess) -> dict:
    records = [json.loads(line) for line in result.stdout.splitlines()]
    errors = [r for r in records if r["event"] == "error"]
    assert len(errors) == 1 and records[-1] is errors[0]
    return errors[0]


@pytest.mark.parametrize("content", [b"not a gguf file at all", b"GGUF\x03\x00\x00\x00" + b"\xff" * 64])
def test_a_model_that_is_not_valid_gguf_fails_startup_with_model_load_failed(tmp_path, content):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(content)
    result = run_cli(*arguments(bad))
    assert result.returncode == 1
    event = error_event(result)
    assert event["code"] == "MODEL_LOAD_FAILED" and event["message"]
    assert event["gpu_device"] == 0 and event["model_path"] == str(bad) and event["worker_id"] == WORKER_ID
    assert "ERROR MODEL_LOAD_FAILED" in result.stderr and "Traceback" not in result.stderr


def test_a_truncated_model_fails_startup_with_model_load_failed(model, tmp_path):
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    result = run_cli(*arguments(cut))
    assert result.returncode == 1 and error_event(result)["code"] == "MODEL_LOAD_FAILED"


def test_the_cuda_backend_on_a_device_that_does_not_exist_fails_startup_with_cuda_error(model):
    # Device 99 exists on no machine, so this fails the same way with or without a GPU:
    # never a silent fall back to the NumPy backend.
    result = run_cli(*arguments(model, **{"--backend": "cuda", "--gpu-device": "99"}))
    assert result.returncode == 1
    event = error_event(result)
    assert event["code"] == "CUDA_ERROR" and event["gpu_device"] == 99
    assert not any(json.loads(line)["event"] == "ready" for line in result.stdout.splitlines())


def test_insufficient_vram_at_startup_is_logged_with_required_and_available_bytes(model, monkeypatch, capsys):
    from reference_worker.engine import Engine

    def refuse(path, **options):
        assert options["vram_budget_bytes"] == 64 * 2**20
        # The details carry what the CUDA backend puts there, names that the event uses too included.
        raise WorkerError(ErrorCode.INSUFFICIENT_VRAM, "model needs more VRAM than the budget",
                          {"required_bytes": 491_400_064, "available_bytes": 64 * 2**20, "device": 0,
                           "model_path": str(path), "event": "x", "job_id": "x", "worker_id": "x"})

    monkeypatch.setattr(Engine, "load", staticmethod(refuse))
    monkeypatch.setattr(cli.signal, "signal", lambda *_: None)  # keep pytest's own signal handlers
    status = cli.main(arguments(model, **{"--vram-budget-mb": "64"}))
    assert status == 1
    event = [json.loads(line) for line in capsys.readouterr().out.splitlines()][-1]
    assert event["event"] == "error" and event["code"] == "INSUFFICIENT_VRAM"
    assert event["required_bytes"] == 491_400_064 and event["available_bytes"] == 64 * 2**20
    assert event["model_path"] == str(model) and event["gpu_device"] == 0
    assert event["job_id"] is None and event["worker_id"] == WORKER_ID


@pytest.mark.parametrize("through_a_link", [False, True])
def test_a_kv_cache_budget_that_cannot_hold_one_position_exits_1_naming_the_sizes(model, through_a_link, tmp_path,
                                                                                   monkeypatch, capsys):
    from reference_worker import ops_numpy

    if through_a_link:  # the path is named as the operator gave it, not where the link leads
        (tmp_path / "current.gguf").symlink_to(model)
        model = tmp_path / "current.gguf"

    # The smallest budget is 1 MiB: a backend whose position takes 600 x this model's 2 KiB (as a
    # wide model's would) cannot start with it, through the real load path.
    monkeypatch.setattr(ops_numpy, "kv_cache_bytes", lambda capacities, kvh, d: 600 * 2 * sum(capacities) * kvh * d * 4)
    monkeypatch.setattr(cli.signal, "signal", lambda *_: None)  # keep pytest's own signal handlers
    assert cli.main(arguments(model, **{"--kv-cache-size-mb": "1"})) == 1
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    event = events[-1]
    assert event["event"] == "error" and event["code"] == "INSUFFICIENT_VRAM"
    assert (event["required_bytes"], event["available_bytes"]) == (600 * 2048, 2**20)
    assert "cannot hold one position" in event["message"] and str(600 * 2048) in event["message"]
    assert event["model_path"] == str(model) and not any(e["event"] == "ready" for e in events)


def test_help_exits_0_and_lists_every_option():
    result = run_cli("--help")
    assert result.returncode == 0
    for option in ("--worker-id", "--model", "--gpu-device", "--port", "--host", "--backend", "--max-tokens-in",
                   "--max-tokens-out", "--inference-timeout-sec", "--kv-cache-size-mb", "--vram-budget-mb",
                   "--residency-check-sec", "--shutdown-grace-sec"):
        assert option in result.stdout


# --- optional arguments take effect ------------------------------------------------------------

@pytest.fixture(scope="module")
def limited_worker(tmp_path_factory):
    model = build_synthetic_model(tmp_path_factory.mktemp("models"), layers=4)
    process = WorkerProcess(model, "--inference-timeout-sec", "0.2", "--max-tokens-out", "300",
                            "--max-tokens-in", "8", "--kv-cache-size-mb", "1").wait_ready()
    yield process
    assert process.stop() == 0


def test_the_kv_cache_is_allocated_at_startup_for_what_a_request_can_reach(limited_worker, model):
    # --max-tokens-in 8 + --max-tokens-out 300 = 308 positions, fewer than the 512 of the
    # context; the 1 MiB budget holds 256 of this model's 4 KiB positions: 256 are allocated.
    loaded = next(e for e in limited_worker.narration if e["event"] == "model_load_complete")
    assert (loaded["kv_cache_positions"], loaded["kv_cache_bytes"]) == (256, 2**20)
    unlimited = WorkerProcess(model, "--max-tokens-in", "8", "--max-tokens-out", "300").wait_ready()
    try:
        loaded = next(e for e in unlimited.narration if e["event"] == "model_load_complete")
        assert loaded["kv_cache_positions"] == 308 and loaded["vram_bytes_used"] == 0  # numpy: host memory
    finally:
        assert unlimited.stop() == 0


def test_max_tokens_out_caps_max_tokens(limited_worker):
    assert execute(limited_worker.url, job_id="cap", prompt="hi", max_tokens=301).status_code == 400
    assert read_events(execute(limited_worker.url, job_id="cap", prompt="hi", max_tokens=300,
                               temperature=0))[0].name == "started"


def test_max_tokens_in_refuses_a_longer_prompt_naming_the_prompt(limited_worker):
    response = execute(limited_worker.url, job_id="long-prompt", prompt="x" * 9, max_tokens=1)
    assert response.status_code == 400 and response.json()["field"] == "prompt"
    assert read_events(execute(limited_worker.url, job_id="short-prompt", prompt="x" * 8,
                               max_tokens=1))[-1].name == "end"


def test_the_inference_timeout_ends_a_long_job_with_inference_timeout(model):
    # A microsecond is shorter than any token, so the job ends at the first check, after its
    # first token, however fast the machine (250 tokens of this model took 0.2 s on CI's cores).
    worker = WorkerProcess(model, "--inference-timeout-sec", "0.000001").wait_ready()
    try:
        events = read_events(execute(worker.url, job_id="slow", prompt="hi", max_tokens=250, temperature=0))
        assert [e.name for e in events] == ["started", "token", "error"]
        assert events[-1].data["code"] == "INFERENCE_TIMEOUT" and events[-1].data["retriable"] is True
        # M0-W-1021: the worker serves on.
        assert worker.health()["status"] == "healthy"
    finally:
        assert worker.stop() == 0


def test_a_kv_cache_budget_too_small_for_the_request_ends_vram_oom(limited_worker):
    # 4 layers x 2 KV heads x 64 dims x (K, V) x 4 bytes = 4 KiB a token: 1 MiB holds 256 tokens
    # of this model's 512-token context; the prompt "hi" is 2 tokens.
    events = read_events(execute(limited_worker.url, job_id="kv", prompt="hi", max_tokens=254))
    assert events[1].name == "token", events[1]  # it fits (and then meets this worker's 0.2 s timeout)
    events = read_events(execute(limited_worker.url, job_id="kv", prompt="hi", max_tokens=255))
    assert [e.name for e in events] == ["started", "error"] and events[-1].data["code"] == "VRAM_OOM"
    # M0-W-1021: the worker stays up and serves the next request that fits.
    assert read_events(execute(limited_worker.url, job_id="kv-after", prompt="hi", max_tokens=2))[-1].name == "end"


def test_the_worker_listens_only_on_localhost_by_default(limited_worker):
    assert requests.get(f"{limited_worker.url}/health", timeout=5).status_code == 200
    addresses = [line for line in limited_worker.narration if line["event"] == "ready"]
    assert addresses[0]["url"] == f"http://127.0.0.1:{limited_worker.port}"
