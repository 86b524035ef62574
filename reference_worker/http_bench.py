"""First token and decode rate over HTTP for this worker and llama.cpp's llama-server, each
started here from a command, one at a time, on the same model file and loopback.

The measurements are stream_bench.py's (`stream_once`, `stream_llama_server_once`: greedy, times
taken where the client reads each SSE event); this module starts each server, waits until its
GET /health answers 200 (llama-server answers 503 while it loads), measures, and stops it.
cuda/bench.py calls `compare`; it asserts nothing.
"""
from __future__ import annotations

import contextlib
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator

import requests

from reference_worker import stream_bench

STARTUP_TIMEOUT_S = 300.0
# llama-server as the issue compares it: every layer on the GPU, flash attention on.
LLAMA_SERVER_ARGS = ("-ngl", "999", "-fa", "on")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def worker_command(model: str, port: int, backend: str = "cuda") -> list[str]:
    """This worker, as its CLI starts it."""
    return [sys.executable, "-m", "reference_worker.cli", "--worker-id", str(uuid.uuid4()), "--model", model,
            "--gpu-device", "0", "--port", str(port), "--backend", backend]


def llama_server_command(binary: str, model: str, port: int, extra: tuple[str, ...] = LLAMA_SERVER_ARGS) -> list[str]:
    return [binary, "-m", model, "--host", "127.0.0.1", "--port", str(port), *extra]


@contextlib.contextmanager
def launched(command: list[str], url: str, timeout_s: float = STARTUP_TIMEOUT_S) -> Iterator[None]:
    """Run `command` until the block ends, once GET url/health answers 200; RuntimeError with the
    end of its output when it exits first or is not ready within timeout_s."""
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout_s
            while not _healthy(url):
                if process.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    tail = log.read()[-2000:].decode(errors="replace")
                    state = f"exited with {process.returncode}" if process.poll() is not None else "is not ready"
                    raise RuntimeError(f"{command[0]} {state} after starting; its output ends:\n{tail}")
                time.sleep(0.1)
            yield
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _healthy(url: str) -> bool:
    try:
        return requests.get(f"{url}/health", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def measure(url: str, stream: Callable[[str, str, int], dict], short_prompt: str, long_prompt: str,
            decode_tokens: int, runs: int) -> dict[str, float]:
    """Medians over `runs`: first-token ms for the short and the long prompt, decode tokens/s
    over `decode_tokens` greedy tokens after the short one. One unmeasured request of each kind
    comes first: what a server does once for a shape (this worker: record its CUDA graphs for
    the request's cache size and prompt bucket) is not one of the measured runs."""
    stream(url, short_prompt, decode_tokens)
    short = [stream(url, short_prompt, decode_tokens) for _ in range(runs)]
    stream(url, long_prompt, 4)
    long = [stream(url, long_prompt, 4) for _ in range(runs)]
    return {"first_token_short_ms": statistics.median(r["first_ms"] for r in short),
            "first_token_long_ms": statistics.median(r["first_ms"] for r in long),
            "decode_tps": statistics.median(r["decode_tps"] for r in short)}


def compare(model: str, short_prompt: str, long_prompt: str, decode_tokens: int = 256, runs: int = 3,
            llama_server: str | None = None, llama_server_args: tuple[str, ...] = LLAMA_SERVER_ARGS,
            backend: str = "cuda") -> dict[str, dict[str, float]]:
    """{"worker": measure(...), "llama_server": measure(...)} (the second with llama_server, a
    path to its binary), each server started alone on a free port and stopped after."""
    results = {}
    for name in ("worker", "llama_server") if llama_server else ("worker",):
        port = free_port()
        if name == "worker":
            command, stream = worker_command(model, port, backend), stream_bench.stream_once
        else:
            command = llama_server_command(llama_server, model, port, llama_server_args)
            stream = stream_bench.stream_llama_server_once
        url = f"http://127.0.0.1:{port}"
        with launched(command, url):
            results[name] = measure(url, stream, short_prompt, long_prompt, decode_tokens, runs)
    return results
