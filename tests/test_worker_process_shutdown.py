"""Graceful shutdown of the worker process (M0-W-1340, M0-W-1630): POST /shutdown and SIGTERM
stop new work (503 SHUTTING_DOWN), end waiting jobs CANCELLED, let the running job finish for
--shutdown-grace-sec (else cancel it), log `shutdown`, and exit 0 within 5 s."""
from __future__ import annotations

import signal
import threading
import time

import pytest
import requests
from worker_process import WorkerProcess, build_synthetic_model, execute, long_job, names, read_events

SHUTDOWN_DEADLINE_S = 5.0


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    # A long context lets one job run for thousands of tokens: far past any grace period below.
    return build_synthetic_model(tmp_path_factory.mktemp("models"), layers=4, context=4096)


def start(worker, job_id, body):
    response = execute(worker.url, job_id=job_id, **body)
    assert response.status_code == 200
    return response


def collect(response, into: dict, key: str) -> threading.Thread:
    reader = threading.Thread(target=lambda: into.__setitem__(key, read_events(response)))
    reader.start()
    return reader


def test_post_shutdown_finishes_the_running_job_refuses_new_ones_and_exits_0(model):
    worker = WorkerProcess(model).wait_ready()  # the default grace, 3 s, is ample for 20 tokens
    streams: dict[str, list] = {}
    reader = collect(start(worker, "finishing", {"prompt": "hi", "max_tokens": 20}), streams, "finishing")
    worker.wait_for_event("execute_start", timeout_s=10, job_id="finishing")
    asked = time.monotonic()
    assert requests.post(f"{worker.url}/shutdown", timeout=5).status_code == 202
    refused = requests.post(f"{worker.url}/execute", json={"job_id": "late", "prompt": "hi", "max_tokens": 1},
                            timeout=5)
    assert refused.status_code == 503 and refused.json()["code"] == "SHUTTING_DOWN"
    assert worker.proc.wait(timeout=SHUTDOWN_DEADLINE_S + 1) == 0
    assert time.monotonic() - asked < SHUTDOWN_DEADLINE_S
    reader.join(5)
    assert streams["finishing"][-1].name == "end"
    assert worker.narration[-1]["event"] == "shutdown"


def test_sigterm_cancels_waiting_jobs_and_a_job_that_outlasts_the_grace_and_exits_0_within_5_s(model):
    worker = WorkerProcess(model, "--shutdown-grace-sec", "0.2").wait_ready()
    body = long_job(worker, max_tokens=2048)  # seconds on this model: far past the grace
    streams: dict[str, list] = {}
    readers = [collect(start(worker, "running", body), streams, "running")]
    worker.wait_for_event("execute_start", timeout_s=10, job_id="running")
    readers.append(collect(start(worker, "waiting", {"prompt": "hi", "max_tokens": 5}), streams, "waiting"))
    worker.wait_for_event("execute_start", timeout_s=10, job_id="waiting")
    asked = time.monotonic()
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.proc.wait(timeout=SHUTDOWN_DEADLINE_S + 1) == 0
    assert time.monotonic() - asked < SHUTDOWN_DEADLINE_S
    for reader in readers:
        reader.join(5)
    assert names(streams["waiting"]) == ["started", "error"]
    assert streams["waiting"][-1].data["code"] == "CANCELLED"
    assert streams["running"][-1].name == "error" and streams["running"][-1].data["code"] == "CANCELLED"
    assert names(streams["running"]).count("error") == 1
    assert [r["event"] for r in worker.narration][-1] == "shutdown"


def test_sigterm_during_startup_stops_loading_and_exits_0(model):
    worker = WorkerProcess(model)
    worker.wait_for_event("model_load_start")  # the engine's imports and the load take a second more
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.proc.wait(timeout=SHUTDOWN_DEADLINE_S) == 0
    assert worker.wait_for_event("shutdown", timeout_s=1)["reason"] == "SIGTERM during startup"
    assert not any(r["event"] in ("ready", "error") for r in worker.narration)
    assert "Traceback" not in "\n".join(worker.stderr_lines)
