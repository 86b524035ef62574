"""Where the first token's time goes on its way through the server: a table of hops.

    python -m reference_worker.hop_bench --model PATH [--backend numpy] [--runs 30] [--prompt TEXT]

The worker runs in this process (the same WorkerServer the CLI starts); a client in a child
process sends POST /execute over loopback on a raw socket and notes when the request went out
and when the first `token` event's bytes arrived. Inside the server each hop is stamped by
wrapping the function that ends it, so the server's code is timed as it is, unmodified:
WSGI entry (HTTP parsed, a server thread has the request), request validated, job queued,
job picked up by the runner thread, prompt tokenized, prefill forward done, token sampled,
token event queued, event taken by the stream, SSE bytes formatted, bytes handed to the socket.
On cuda the prompt's last chunk runs as one graph inside the decoder's start (cuda/decode.py),
so "prefill forward" (the earlier chunks' kernels queued) shows only for prompts past one
chunk, and "sampled" covers prefill and sampling, up to the token read back.
Times are perf_counter (CLOCK_MONOTONIC, shared by both processes); the table gives the median
and p90 over the runs of each hop's time since the one before it. Measures, asserts nothing.
"""
from __future__ import annotations

import argparse
import functools
import json
import multiprocessing
import socket
import statistics
import sys
import threading
import time
import uuid

HOPS = ["client sent", "WSGI entry", "validated", "queued", "runner picked", "tokenized", "prefill forward",
        "sampled", "token event queued", "stream took event", "SSE bytes formatted", "bytes sent", "client read"]


class _Stamps:
    """First time each hop is reached in the current request (one request at a time)."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}
        self.lock = threading.Lock()

    def mark(self, hop: str) -> None:
        now = time.perf_counter()
        with self.lock:
            self.times.setdefault(hop, now)


def _after(stamps: _Stamps, hop: str, function, when=lambda *a, **k: True):
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        result = function(*args, **kwargs)
        if when(*args, result=result, **kwargs):
            stamps.mark(hop)
        return result
    return wrapper


def _before(stamps: _Stamps, hop: str, function):
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        stamps.mark(hop)
        return function(*args, **kwargs)
    return wrapper


def _instrument(stamps: _Stamps, engine) -> None:
    """Wrap the functions that end each hop (class attributes, so every instance is timed)."""
    import queue

    from waitress.channel import HTTPChannel

    from reference_worker import engine as engine_module
    from reference_worker import jobs, server, sse

    server.parse_execute = _after(stamps, "validated", server.parse_execute)
    jobs.JobQueue.submit = _after(stamps, "queued", jobs.JobQueue.submit)
    engine_module.Engine.generate = _before(stamps, "runner picked", engine_module.Engine.generate)
    engine.tokenize = _after(stamps, "tokenized", engine.tokenize)
    adapter = type(engine.adapter)
    adapter.forward = _after(stamps, "prefill forward", adapter.forward)
    decoder_for = getattr(engine.ops, "decoder", None)
    if decoder_for:  # the GPU samples inside the decoder's start: prefill and sample are one hop
        decoder_class = type(decoder_for(engine.adapter))
        decoder_class.start = _after(stamps, "sampled", decoder_class.start)
    else:
        engine_module.Sampler.sample = _after(stamps, "sampled", engine_module.Sampler.sample)
    put, get = queue.Queue.put, queue.Queue.get

    def is_token(item) -> bool:
        return isinstance(item, tuple) and item[0] == "token"

    class TimedEvents(queue.Queue):
        def put(self, item, *args, **kwargs):
            put(self, item, *args, **kwargs)
            if is_token(item):
                stamps.mark("token event queued")

        def get(self, *args, **kwargs):
            item = get(self, *args, **kwargs)
            if is_token(item):
                stamps.mark("stream took event")
            return item

    jobs.queue = type("queue", (), {"Queue": TimedEvents, "Empty": queue.Empty})
    sse.format_event = _after(stamps, "SSE bytes formatted", sse.format_event,
                              when=lambda name, data, result: name == "token")
    HTTPChannel.send = _after(stamps, "bytes sent", HTTPChannel.send,
                              when=lambda self, data, *a, result, **k: b"event: token" in bytes(data))


def _client(port: int, prompt: str, runs: int, pipe) -> None:
    """Runs in a child process: one request at a time; sends back (sent, first token read)."""
    for _ in range(runs):
        body = json.dumps({"job_id": str(uuid.uuid4()), "prompt": prompt, "max_tokens": 2, "temperature": 0})
        request = (f"POST /execute HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                   f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}").encode()
        with socket.create_connection(("127.0.0.1", port)) as conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            seen, first = b"", None
            sent = time.perf_counter()
            conn.sendall(request)
            while chunk := conn.recv(65536):
                seen += chunk
                if first is None and b"event: token" in seen:
                    first = time.perf_counter()
        pipe.send((sent, first))
        pipe.recv()  # the server has read its stamps
    pipe.close()


def run(model: str, backend: str, runs: int, prompt: str) -> list[dict[str, float]]:
    """The stamps of each run, in seconds since the client sent the request."""
    from reference_worker.engine import Engine
    from reference_worker.narration import Narrator
    from reference_worker.server import Limits, WorkerServer

    engine = Engine.load(model, backend=backend)
    stamps = _Stamps()
    _instrument(stamps, engine)
    devnull = open("/dev/null", "w")
    narrator = Narrator(str(uuid.uuid4()), model, 0, machine=devnull, human=devnull)
    worker = WorkerServer(engine, narrator, "127.0.0.1", 0, Limits(vocab_size=engine.vocab_size), 300, 3600, 1)
    worker.app.wsgi_app = _before(stamps, "WSGI entry", worker.app.wsgi_app)
    worker.start()
    spawn = multiprocessing.get_context("spawn")  # not fork: the server's threads are running
    ours, theirs = spawn.Pipe()
    client = spawn.Process(target=_client, args=(worker.port, prompt, runs + 2, theirs))
    client.start()
    results = []
    for i in range(runs + 2):  # the first two warm up
        sent, first = ours.recv()
        time.sleep(0.05)  # the job's end reaches the stamps too
        with stamps.lock:
            times, stamps.times = stamps.times, {}
        ours.send(None)
        if i >= 2:
            times.update({"client sent": sent, "client read": first})
            results.append({hop: t - sent for hop, t in times.items()})
    client.join()
    worker.request_shutdown("hop_bench done")
    worker.wait_shut_down(5)
    return results


def table(results: list[dict[str, float]]) -> str:
    """Markdown: each hop's median and p90 time since the previous hop, and since sending."""
    lines = ["| hop | median since previous (ms) | p90 (ms) | median since sent (ms) |", "| --- | --- | --- | --- |"]
    present = [hop for hop in HOPS if all(hop in r for r in results)]
    for before, hop in zip(present, present[1:]):
        deltas = sorted((r[hop] - r[before]) * 1e3 for r in results)
        lines.append(f"| {hop} | {statistics.median(deltas):.3f} | {deltas[int(0.9 * (len(deltas) - 1))]:.3f} "
                     f"| {statistics.median(r[hop] for r in results) * 1e3:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reference_worker.hop_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--backend", default="numpy", choices=("numpy", "cuda"))
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--prompt", default="Write a haiku about GPU computing")
    args = parser.parse_args(argv)
    print(f"first token over HTTP, {args.backend}, {args.runs} runs, prompt {args.prompt[:40]!r}")
    print(table(run(args.model, args.backend, args.runs, args.prompt)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
