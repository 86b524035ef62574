"""Start `reference-worker` as a separate process and talk to it over HTTP, as a user would.

Shared by the process-level tests (test_worker_process*.py, test_cli*.py). The worker's
stdout (narration JSON lines) and stderr (human lines) are collected by reader threads.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import requests

from reference_worker import sse
from reference_worker.http_bench import free_port  # re-exported for the tests
from reference_worker.sse import Event

STARTUP_TIMEOUT_S = 60.0


def worker_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "reference_worker.cli", *args]


def build_synthetic_model(directory: Path, layers: int = 2, context: int = 512) -> Path:
    """A small synthetic GGUF (qwen2, Q8_0) with `layers` layers and `context` positions, in `directory`."""
    from reference_worker import synthetic

    path = directory / f"synthetic-{layers}-layers-{context}-ctx.gguf"
    if not path.exists():
        synthetic.build(path, dims=synthetic.Dims(n_layer=layers, n_ctx=context))
    return path


class WorkerProcess:
    """A running worker: `url`, the collected `narration` records and `stderr` lines."""

    def __init__(self, model: Path, *extra: str, backend: str = "numpy"):
        self.worker_id = str(uuid.uuid4())
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.narration: list[dict] = []
        self.stdout_lines: list[str] = []
        self.stderr_lines: list[str] = []
        self._arrived = threading.Condition()
        self._stdout_closed = False
        self.proc = subprocess.Popen(
            worker_command("--worker-id", self.worker_id, "--model", str(model), "--gpu-device", "0",
                           "--port", str(self.port), "--backend", backend, *extra),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        threading.Thread(target=self._read, args=(self.proc.stdout, self.stdout_lines, True), daemon=True).start()
        threading.Thread(target=self._read, args=(self.proc.stderr, self.stderr_lines, False), daemon=True).start()

    def _read(self, stream, lines: list[str], is_narration: bool) -> None:
        for line in stream:
            with self._arrived:
                lines.append(line.rstrip("\n"))
                if is_narration:
                    self.narration.append(json.loads(line))
                self._arrived.notify_all()
        with self._arrived:
            if is_narration:
                self._stdout_closed = True
            self._arrived.notify_all()

    def wait_for_event(self, event: str, timeout_s: float = STARTUP_TIMEOUT_S, **match) -> dict:
        """The first narration record of `event` whose fields equal `match`; fails on timeout
        or when the process exits first."""
        def found():
            return next((r for r in self.narration
                         if r["event"] == event and all(r.get(k) == v for k, v in match.items())), None)
        deadline = time.monotonic() + timeout_s
        with self._arrived:
            while (record := found()) is None:
                if self._stdout_closed or time.monotonic() > deadline:
                    raise AssertionError(f"no {event} {match} narration; stderr: {self.stderr_lines[-5:]}")
                self._arrived.wait(0.2)
        return record

    def wait_ready(self) -> "WorkerProcess":
        self.wait_for_event("ready")
        return self

    def threads(self) -> int:
        return int(_proc_status(self.proc.pid)["Threads"])

    def rss_bytes(self) -> int:
        return int(_proc_status(self.proc.pid)["VmRSS"].split()[0]) * 1024

    def health(self) -> dict:
        return requests.get(f"{self.url}/health", timeout=5).json()

    def stop(self) -> int:
        """Ask the worker to shut down (SIGTERM) and return its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def _proc_status(pid: int) -> dict[str, str]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def iter_events(response) -> Iterator[Event]:
    """The SSE events of a streamed response, each yielded as soon as it is read; comments skipped."""
    return sse.read_events(response.iter_lines(chunk_size=1, decode_unicode=True))


def read_events(response) -> list[Event]:
    """Every SSE event of a streamed response, in order, read to its end."""
    return list(iter_events(response))


def names(events: list[Event]) -> list[str]:
    return [event.name for event in events]


def execute(url: str, timeout_s: float = 60, **body) -> requests.Response:
    return requests.post(f"{url}/execute", json=body, stream=True, timeout=timeout_s)


def long_job(worker: WorkerProcess, max_tokens: int) -> dict:
    """A request body that this worker's model really runs for `max_tokens` tokens.

    A repetition penalty below 1 makes a model repeat what it has seen, which keeps a synthetic
    model away from its end token; greedy decoding makes the outcome repeatable, so the first
    candidate that reaches max_tokens once will do so again.
    """
    for prompt in ("hi", "def forward", "The quick brown fox", "GPU GPU GPU GPU"):
        for penalty in (0.1, 0.5):
            body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "repetition_penalty": penalty}
            events = read_events(execute(worker.url, job_id=f"probe-{uuid.uuid4()}", **body))
            if events[-1].name == "end" and events[-1].data["stop_reason"] == "max_tokens":
                return body
    raise AssertionError("no candidate prompt keeps this model from its end token")
