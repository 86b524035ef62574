"""The worker process on the CUDA backend (the conformant worker), on a synthetic model:
what /health, /metrics and startup report once the weights live in VRAM (M0-W-1011/1012/1320,
M0-W-1111 for a VRAM budget too small). Skipped where there is no GPU or no CuPy."""
from __future__ import annotations

import json
import subprocess
import time

import pytest
import requests
from worker_process import WorkerProcess, build_synthetic_model, execute, free_port, names, read_events, worker_command

from reference_worker.cuda import cuda_unavailable_reason

pytestmark = pytest.mark.cuda
if (REASON := cuda_unavailable_reason()) is not None:
    pytest.skip(f"CUDA backend unavailable: {REASON}", allow_module_level=True)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return build_synthetic_model(tmp_path_factory.mktemp("models"), layers=4)


@pytest.fixture(scope="module")
def worker(model):
    process = WorkerProcess(model, "--residency-check-sec", "0.2", backend="cuda").wait_ready()
    yield process
    assert process.stop() == 0


def test_health_reports_a_resident_model_with_its_device(worker):
    time.sleep(0.5)  # a few residency checks have run
    health = worker.health()
    assert health["status"] == "healthy" and health["backend"] == "cuda" and health["resident"] is True
    assert health["vram_bytes_used"] > 0
    assert isinstance(health["sm"], int) and health["sm"] >= 50
    assert isinstance(health["cuda_runtime_version"], str) and health["cuda_runtime_version"]


def test_health_counts_the_kv_cache_allocated_at_startup(worker, model):
    from reference_worker.gguf_file import GGUFFile

    loaded = next(e for e in worker.narration if e["event"] == "model_load_complete")
    # 4 layers x (K, V) x 512 positions x 2 KV heads x 64 x 2 bytes (fp16): the whole context
    assert (loaded["kv_cache_positions"], loaded["kv_cache_bytes"]) == (512, 4 * 2 * 512 * 2 * 64 * 2)
    weights = sum(t.n_bytes for t in GGUFFile.open(model).tensors.values())
    assert loaded["vram_bytes_used"] >= weights + loaded["kv_cache_bytes"]  # before any job (M0-W-1011)
    assert worker.health()["vram_bytes_used"] >= loaded["vram_bytes_used"]


def test_a_job_streams_on_the_gpu_and_vram_is_reported_in_metrics(worker):
    events = read_events(execute(worker.url, job_id="gpu", prompt="hi", max_tokens=16, temperature=0))
    assert names(events)[0] == "started" and events[-1].name == "end"
    assert events[-1].data["tokens_out"] == len(events) - 2
    text = requests.get(f"{worker.url}/metrics", timeout=5).text
    vram = [line for line in text.splitlines() if line.startswith("worker_vram_bytes{")]
    assert vram and float(vram[0].split()[-1]) > 0


def test_a_vram_budget_smaller_than_the_model_fails_startup_with_insufficient_vram(model):
    result = subprocess.run(worker_command(
        "--worker-id", "1b4e28ba-2fa1-11d2-883f-0016d3cca427", "--model", str(model), "--gpu-device", "0",
        "--port", str(free_port()), "--backend", "cuda", "--vram-budget-mb", "1"),
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    event = json.loads(result.stdout.splitlines()[-1])
    assert event["event"] == "error" and event["code"] == "INSUFFICIENT_VRAM"
    assert event["required_bytes"] > event["available_bytes"] > 0
    assert event["gpu_device"] == 0 and event["model_path"] == str(model)
