"""What a client of a running worker sees: first-token time, decode rate, gaps between tokens
cancel latency and /health latency, as a table (M0-W-1600/1601/1602/1604/1610 are measured,
not asserted).

    python -m reference_worker.stream_bench --url http://127.0.0.1:8080 [--max-tokens 50] [--runs 3]
        [--llama-server-url http://127.0.0.1:8081]

Each run streams the prompt greedily; times are taken where the client reads each SSE event.
A last run is cancelled after its third token, and the time from sending POST /cancel to
reading the `error` event is reported; then GET /health is timed while a job streams.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import threading
import time
import uuid

import requests
import sseclient

PROMPT = "Write a haiku about GPU computing"


def _events(response):
    """(name, data, time read) of each SSE event, read with a plain SSE client (sseclient-py)
    from the bytes as they arrive (iter_content would wait for a full chunk)."""
    arriving = iter(lambda: response.raw.read1(65536), b"")
    for event in sseclient.SSEClient(arriving).events():
        yield event.event, json.loads(event.data), time.perf_counter()


def stream_once(url: str, prompt: str, max_tokens: int) -> dict:
    """Stream one greedy job; returns first-token ms, token count, decode tokens/s, gaps in ms."""
    sent = time.perf_counter()
    response = requests.post(f"{url}/execute", stream=True, timeout=600, json={
        "job_id": f"bench-{uuid.uuid4()}", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0})
    arrivals, terminal = [], None
    for name, data, at in _events(response):
        if name == "token":
            arrivals.append(at)
        elif name in ("end", "error"):
            terminal = (name, data)
    if terminal is None or terminal[0] != "end":
        raise SystemExit(f"the job did not end: {terminal}")
    return _timing(sent, arrivals)


def stream_llama_server_once(url: str, prompt: str, max_tokens: int) -> dict:
    """The same measurement against llama.cpp's llama-server (its streaming /completion API, one
    `data:` event per token, the last one marked `stop`), for comparison on the same machine."""
    sent = time.perf_counter()
    response = requests.post(f"{url}/completion", stream=True, timeout=600, json={
        "prompt": prompt, "n_predict": max_tokens, "temperature": 0, "stream": True, "cache_prompt": False})
    arrivals = [at for _, data, at in _events(response) if not data.get("stop")]
    return _timing(sent, arrivals)


def _timing(sent: float, arrivals: list[float]) -> dict:
    if len(arrivals) < 2:
        raise SystemExit("fewer than two tokens streamed: nothing to time")
    gaps = [(b - a) * 1000 for a, b in zip(arrivals, arrivals[1:])]
    return {"first_ms": (arrivals[0] - sent) * 1000, "tokens": len(arrivals),
            "decode_tps": (len(arrivals) - 1) / (arrivals[-1] - arrivals[0]), "gaps": gaps}


def cancel_latency_ms(url: str, prompt: str, max_tokens: int) -> float:
    """Milliseconds from sending POST /cancel (after the third token) to reading `error`."""
    job_id = f"bench-cancel-{uuid.uuid4()}"
    response = requests.post(f"{url}/execute", stream=True, timeout=600, json={
        "job_id": job_id, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0})
    tokens, asked = 0, None
    for name, _, at in _events(response):
        tokens += name == "token"
        if tokens == 3 and asked is None:
            asked = time.perf_counter()
            requests.post(f"{url}/cancel", json={"job_id": job_id}, timeout=10)
        if name in ("end", "error"):
            if name != "error" or asked is None:
                raise SystemExit("the job ended before it could be cancelled; raise --max-tokens")
            return (at - asked) * 1000
    raise SystemExit("the stream ended without a terminal event")


def health_latency_ms(url: str, prompt: str, max_tokens: int, samples: int = 20) -> list[float]:
    """Milliseconds per GET /health while a job streams (M0-W-1604), the job cancelled after."""
    job_id = f"bench-health-{uuid.uuid4()}"
    response = requests.post(f"{url}/execute", stream=True, timeout=600, json={
        "job_id": job_id, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0})
    reader = threading.Thread(target=lambda: list(_events(response)))
    reader.start()
    latencies = []
    for _ in range(samples):
        sent = time.perf_counter()
        requests.get(f"{url}/health", timeout=10)
        latencies.append((time.perf_counter() - sent) * 1000)
    requests.post(f"{url}/cancel", json={"job_id": job_id}, timeout=10)
    reader.join()
    return latencies


def _percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reference_worker.stream_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--url", required=True, help="base URL of a running worker")
    parser.add_argument("--prompt", default=PROMPT)
    parser.add_argument("--max-tokens", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--llama-server-url", help="also time a llama.cpp llama-server at this base URL")
    args = parser.parse_args(argv)

    health = requests.get(f"{args.url}/health", timeout=10).json()
    print(f"model {health['model']} ({health['quant_kind']}), backend {health.get('backend')}, "
          f"prompt {args.prompt!r}, max_tokens {args.max_tokens}")
    print("| server | run | first token (ms) | tokens | decode (tokens/s) | gap p50 (ms) | gap p95 (ms) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    servers = [("this worker", args.url, stream_once)]
    if args.llama_server_url:
        servers.append(("llama-server", args.llama_server_url, stream_llama_server_once))
    for server, url, stream in servers:
        for run in range(1, args.runs + 1):
            result = stream(url, args.prompt, args.max_tokens)
            gaps = result["gaps"]
            print(f"| {server} | {run} | {result['first_ms']:.1f} | {result['tokens']} | {result['decode_tps']:.1f} "
                  f"| {_percentile(gaps, 0.50):.2f} | {_percentile(gaps, 0.95):.2f} |")
    print(f"cancel: {cancel_latency_ms(args.url, args.prompt, args.max_tokens):.0f} ms from POST /cancel "
          f"to the error event")
    health = health_latency_ms(args.url, args.prompt, args.max_tokens)
    print(f"GET /health during a job: p50 {_percentile(health, 0.5):.1f} ms, p95 {_percentile(health, 0.95):.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
