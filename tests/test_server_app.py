"""The HTTP app and job queue in-process, on waitress, over a scripted engine.

A scripted engine follows the engine contract of reference_worker/README.md but lets a test
decide each token's delay, make generation raise, or refuse a prompt with VRAM_OOM: the
behaviours that a real model cannot be made to show on demand (an exception inside
generation, a slow step). Everything else is tested against the real worker process on a
synthetic model in test_worker_process.py.
"""
from __future__ import annotations

import contextlib
import io
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests
from worker_process import execute, names, read_events

from reference_worker.engine import SamplingParams
from reference_worker.errors import ErrorCode, WorkerError
from reference_worker.jobs import ExecuteRequest, JobQueue, JobRejected
from reference_worker.narration import Narrator
from reference_worker.server import Limits, WorkerServer


@dataclass
class Step:
    index: int
    token_id: int
    text: str


class ScriptedGeneration:
    def __init__(self, engine, prompt: str, max_tokens: int, params: SamplingParams):
        self._engine = engine
        self._prompt = prompt
        self._max_tokens = max_tokens
        self._cancelled = threading.Event()
        self.seed = params.seed
        self.prompt_token_count = len(prompt)
        self.stop_reason = None
        self.closed = False

    def __iter__(self):
        for index in range(self._max_tokens):
            if self._cancelled.wait(self._engine.token_delay_s):
                self.stop_reason = "cancelled"
                return
            if self._prompt == "raise" and index == 2:
                raise RuntimeError("kernel exploded")
            self._engine.tokens_made += 1
            yield Step(index, 100 + index, f"w{index} ")
        self.stop_reason = "max_tokens"

    def cancel(self):
        self._cancelled.set()

    def close(self):
        self.closed = True
        self._engine.open_generations -= 1


class ScriptedEngine:
    backend = "numpy"
    resident = False
    model_name = "scripted"
    architecture = "qwen2"
    quant_kind = "Q8_0"
    tokenizer_kind = "gguf-bpe"
    vocab_size = 512
    context_length = 64
    vram_bytes_used = 0
    sm = None
    cuda_runtime_version = None

    def __init__(self):
        self.token_delay_s = 0.01
        self.tokens_made = 0
        self.open_generations = 0
        self.closed = False

    def tokenize(self, text: str) -> list[int]:
        return [ord(c) % 512 for c in text]

    def generate(self, prompt, max_tokens, params):
        if len(prompt) + max_tokens > self.context_length:
            raise WorkerError(ErrorCode.VRAM_OOM, "prompt plus max_tokens exceed the context")
        self.open_generations += 1
        return ScriptedGeneration(self, prompt, max_tokens, params)

    def check_residency(self) -> bool:
        return False

    def close(self):
        self.closed = True


@contextlib.contextmanager
def serving(engine, residency_check_s: float = 60.0) -> Iterator[tuple[WorkerServer, str, io.StringIO]]:
    """A WorkerServer over engine on a free port: (server, base URL, narration log); shut down
    gracefully on leaving, which must close the engine."""
    log = io.StringIO()
    narrator = Narrator("00000000-0000-0000-0000-000000000000", "scripted.gguf", 0, machine=log, human=io.StringIO())
    server = WorkerServer(engine, narrator, "127.0.0.1", 0, Limits(vocab_size=ScriptedEngine.vocab_size),
                          inference_timeout_s=1.0, residency_check_s=residency_check_s, shutdown_grace_s=3)
    server.start()
    try:
        yield server, f"http://127.0.0.1:{server.port}", log
    finally:
        server.request_shutdown()
        assert server.wait_shut_down(5) and engine.closed


@pytest.fixture(scope="module")
def worker():
    engine = ScriptedEngine()
    with serving(engine) as (_, base, log):
        yield engine, base, log


def test_an_exception_inside_generation_ends_the_job_with_internal_and_the_worker_keeps_serving(worker):
    engine, base, log = worker
    events = read_events(execute(base, job_id="boom", prompt="raise", max_tokens=10, temperature=0))
    assert names(events) == ["started", "token", "token", "error"]
    error = events[-1][1]
    assert error["code"] == "INTERNAL" and error["retriable"] is True
    assert "Traceback" not in error["message"] and "exploded" not in error["message"]
    assert engine.open_generations == 0
    # The operator's log keeps the cause that the client is not shown.
    narrated = [json.loads(line) for line in log.getvalue().splitlines()]
    assert any(r["event"] == "error" and r["job_id"] == "boom" and "kernel exploded" in r["message"]
               for r in narrated)
    after = read_events(execute(base, job_id="after-boom", prompt="ok", max_tokens=3))
    assert after[-1][0] == "end" and after[-1][1]["tokens_out"] == 3


def narration(log: io.StringIO, event: str, job_id: str) -> dict:
    return next(r for r in map(json.loads, log.getvalue().splitlines())
                if r["event"] == event and r["job_id"] == job_id)


@pytest.mark.parametrize("prompt, terminal", [("ok", "end"), ("raise", "error")])
def test_execute_end_narrates_the_token_count_and_decode_time(worker, prompt, terminal):
    _, base, log = worker
    job_id = f"counted-{terminal}"
    events = read_events(execute(base, job_id=job_id, prompt=prompt, max_tokens=5))
    assert events[-1][0] == terminal
    end = narration(log, "execute_end", job_id)
    assert end["tokens_out"] == names(events).count("token")
    assert isinstance(end["decode_time_ms"], int) and end["decode_time_ms"] >= 0
    if terminal == "end":  # the same numbers as the client's end event
        assert (end["tokens_out"], end["decode_time_ms"]) == (events[-1][1]["tokens_out"],
                                                            events[-1][1]["decode_time_ms"])


def test_each_event_is_sent_as_soon_as_it_is_produced(worker):
    engine, base, _ = worker
    engine.token_delay_s = 0.1
    try:
        events = read_events(execute(base, job_id="paced", prompt="p", max_tokens=6))
    finally:
        engine.token_delay_s = 0.01
    arrived = [event.arrived for event in events if event.name == "token"]
    # Produced 0.1 s apart: a buffered stream would deliver all six together at the end.
    assert len(arrived) == 6
    assert arrived[-1] - arrived[0] > 0.3 and arrived[-1] - arrived[3] > 0.15


def test_the_inference_timeout_ends_a_slow_job_with_inference_timeout(worker):
    engine, base, log = worker
    engine.token_delay_s = 0.2  # 20 tokens take 4 s; the worker's timeout is 1 s
    try:
        events = read_events(execute(base, job_id="slow", prompt="p", max_tokens=20))
    finally:
        engine.token_delay_s = 0.01
    assert events[0][0] == "started"
    assert events[-1][0] == "error" and events[-1][1]["code"] == "INFERENCE_TIMEOUT"
    assert events[-1][1]["retriable"] is True
    assert len(events) - 2 < 20


def test_a_queued_job_cancelled_before_it_runs_streams_started_then_cancelled(worker):
    engine, base, _ = worker
    engine.token_delay_s = 0.05
    results = {}

    def run(job_id):
        results[job_id] = read_events(execute(base, job_id=job_id, prompt="p", max_tokens=10))

    first = threading.Thread(target=run, args=("ahead",))
    first.start()
    time.sleep(0.1)
    second = threading.Thread(target=run, args=("behind",))
    second.start()
    time.sleep(0.1)
    assert requests.post(f"{base}/cancel", json={"job_id": "behind"}, timeout=5).status_code == 202
    first.join(10), second.join(10)
    engine.token_delay_s = 0.01
    assert names(results["behind"]) == ["started", "error"]
    assert results["behind"][-1][1]["code"] == "CANCELLED"
    assert results["ahead"][-1][0] == "end"


def test_vram_oom_marks_the_worker_unhealthy_until_a_job_succeeds(worker):
    _, base, _ = worker
    events = read_events(execute(base, job_id="too-long", prompt="x" * 60, max_tokens=10))
    assert names(events) == ["started", "error"]
    assert events[-1][1]["code"] == "VRAM_OOM"
    assert requests.get(f"{base}/health", timeout=5).json()["status"] == "unhealthy"
    assert read_events(execute(base, job_id="fits", prompt="x", max_tokens=2))[-1][0] == "end"
    assert requests.get(f"{base}/health", timeout=5).json()["status"] == "healthy"


def test_a_full_queue_refuses_more_jobs_with_503_queue_full():
    engine = ScriptedEngine()
    engine.token_delay_s = 1.0
    finished = []
    narrator = Narrator("00000000-0000-0000-0000-000000000000", "scripted.gguf", 0, machine=io.StringIO(),
                        human=io.StringIO())
    jobs = JobQueue(engine, narrator, inference_timeout_s=60, max_pending=2, on_finished=finished.append)
    requests_ = [ExecuteRequest(f"q{n}", "p", 5, SamplingParams(seed=n)) for n in range(4)]
    jobs.submit(requests_[0])
    while jobs.busy()[0] != "q0":  # running, so no longer waiting
        time.sleep(0.01)
    for request in requests_[1:3]:
        jobs.submit(request)
    with pytest.raises(JobRejected) as refused:
        jobs.submit(requests_[3])
    assert refused.value.status == 503 and refused.value.body["code"] == "QUEUE_FULL"
    jobs.close(grace_s=0.1)
    assert sorted(result.job_id for result in finished) == ["q0", "q1", "q2"]
    assert all(result.error is ErrorCode.CANCELLED for result in finished)
    with pytest.raises(JobRejected) as closed:
        jobs.submit(requests_[3])
    assert closed.value.body["code"] == "SHUTTING_DOWN"


def test_a_job_waiting_behind_another_gets_a_queued_comment_before_its_started_event(worker):
    engine, base, _ = worker
    engine.token_delay_s = 0.05
    ahead = execute(base, job_id="first", prompt="p", max_tokens=10)
    behind = execute(base, job_id="second", prompt="p", max_tokens=1)  # returns once headers arrive
    raw = b"".join(behind.iter_content(chunk_size=None))
    read_events(ahead)
    engine.token_delay_s = 0.01
    assert raw.startswith(b": queued\n\n")
    assert raw.index(b"event: started") > 0 and raw.count(b"event: end") == 1


# --- VRAM residency checks (M0-W-1012) -------------------------------------------------------

class ResidencyEngine(ScriptedEngine):
    """A scripted engine whose periodic residency checks give `outcomes` in turn (True, False,
    or an exception to raise), then keep giving the last one."""

    def __init__(self, resident: bool, outcomes: list):
        super().__init__()
        self.resident = resident
        self.outcomes = outcomes
        self.checks = 0
        self.checked_after_close = False

    def check_residency(self) -> bool:
        self.checked_after_close |= self.closed
        outcome = self.outcomes[min(self.checks, len(self.outcomes) - 1)]
        self.checks += 1
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


def wait_for_health(base: str, until, timeout_s: float = 5.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while not until(body := requests.get(f"{base}/health", timeout=5).json()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return body


@pytest.mark.parametrize("failure", [False, RuntimeError("cudaErrorIllegalAddress")], ids=["not-resident", "raises"])
def test_a_failed_residency_check_is_critical_and_makes_the_worker_unhealthy_for_good(failure):
    engine = ResidencyEngine(resident=True, outcomes=[True, True, failure])
    with serving(engine, residency_check_s=0.05) as (_, base, log):
        assert requests.get(f"{base}/health", timeout=5).json()["resident"] is True
        body = wait_for_health(base, lambda b: b["status"] == "unhealthy")
        assert (body["status"], body["resident"], body["reason"]) == ("unhealthy", False, "VRAM residency check failed")
        event = narration(log, "error", None)
        assert (event["level"], event["code"]) == ("critical", "CUDA_ERROR")
        assert "VRAM residency check failed" in event["message"]
        if isinstance(failure, Exception):
            assert "cudaErrorIllegalAddress" in event["message"]
        # The worker keeps serving, but a successful job does not make it healthy again.
        assert read_events(execute(base, job_id="after-residency", prompt="ok", max_tokens=2))[-1][0] == "end"
        assert requests.get(f"{base}/health", timeout=5).json()["status"] == "unhealthy"
        time.sleep(0.2)
        assert engine.checks == 3  # no checks after the failure


def test_an_engine_that_was_never_resident_is_never_checked_and_stays_healthy():
    # The numpy backend: resident false at load, and its check_residency() is always False.
    engine = ResidencyEngine(resident=False, outcomes=[False])
    with serving(engine, residency_check_s=0.05) as (_, base, _):
        time.sleep(0.3)  # six check intervals
        body = requests.get(f"{base}/health", timeout=5).json()
        assert (body["status"], body["resident"], engine.checks) == ("healthy", False, 0)


def test_residency_checks_stop_before_the_engine_is_closed_at_shutdown():
    engine = ResidencyEngine(resident=True, outcomes=[True])
    with serving(engine, residency_check_s=0.05) as (server, _, log):
        time.sleep(0.2)
        server.request_shutdown()
        assert server.wait_shut_down(5) and engine.closed
    assert engine.checks > 0 and not engine.checked_after_close
    assert not any(json.loads(line)["event"] == "error" for line in log.getvalue().splitlines())
