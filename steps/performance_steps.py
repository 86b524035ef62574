"""Steps that measure the M1-deferred performance targets (§10): each records its figure
with `measure`, so that a run reports it whether or not the target is met."""
from __future__ import annotations

import json
import time

from pytest_bdd import parsers, then, when

from steps.execute_steps import complete
from steps.jobs import percentile


@when(parsers.parse("the client executes this request {count:d} times:"), target_fixture="streams")
def execute_many(worker, jobs, count, docstring):
    return [jobs.execute(worker, json.loads(docstring)) for _ in range(count)]


@when(parsers.parse("the client gets /health {count:d} times"), target_fixture="health_times")
def health_many(worker, count):
    times = []
    for _ in range(count):
        start = time.monotonic()
        assert worker.health().status_code == 200
        times.append((time.monotonic() - start) * 1000)
    return times


@when("the client disconnects from its stream")
def disconnect(running):
    running.stream.close()


@then(parsers.parse("the p95 time from request to first token is under {limit:d} ms"))
def first_token_p95(streams, jobs, limit, measure):
    latencies = []
    for stream in streams:
        complete(stream, jobs.timeout_s)
        assert stream.tokens, f"a job streamed no token: {stream.names}"
        latencies.append((stream.tokens[0].arrived - stream.sent) * 1000)
    p95 = percentile(latencies, 95)
    measure(f"first token p95: {p95:.1f} ms over {len(latencies)} jobs")
    assert p95 < limit, f"first token p95 {p95:.1f} ms (target {limit} ms)"


@then(parsers.parse("tokens were generated at {rate:d} tokens per second or more"))
def token_rate(stream, jobs, rate, measure):
    complete(stream, jobs.timeout_s)
    tokens = stream.tokens
    assert len(tokens) >= 2, f"too few tokens to measure a rate: {len(tokens)}"
    measured = (len(tokens) - 1) / max(tokens[-1].arrived - tokens[0].arrived, 1e-6)
    measure(f"decode rate: {measured:.1f} tokens/s over {len(tokens)} tokens")
    assert measured >= rate, f"{measured:.1f} tokens/s (target {rate})"


@then(parsers.parse("the p95 time between token events is under {limit:d} ms"))
def inter_token_p95(stream, jobs, limit, measure):
    complete(stream, jobs.timeout_s)
    arrivals = [e.arrived for e in stream.tokens]
    assert len(arrivals) >= 2, f"too few tokens to measure: {len(arrivals)}"
    p95 = percentile([(b - a) * 1000 for a, b in zip(arrivals, arrivals[1:])], 95)
    measure(f"inter-token p95: {p95:.1f} ms")
    assert p95 < limit, f"inter-token p95 {p95:.1f} ms (target {limit} ms)"


@then(parsers.parse("the p99 time of /health is under {limit:d} ms"))
def health_p99(health_times, limit, measure):
    p99 = percentile(health_times, 99)
    measure(f"/health p99: {p99:.1f} ms over {len(health_times)} requests")
    assert p99 < limit, f"/health p99 {p99:.1f} ms (target {limit} ms)"


@then(parsers.parse("the new job's started event came within {limit:d} ms of its request"))
def started_quickly(stream, jobs, limit, measure):
    complete(stream, jobs.timeout_s)
    started = next((e for e in stream.events if e.name == "started"), None)
    assert started is not None, f"no started event: {stream.names}"
    took = (started.arrived - stream.sent) * 1000
    measure(f"started after a disconnect: {took:.1f} ms")
    assert took < limit, f"started {took:.1f} ms after the request (target {limit} ms)"


@when(parsers.parse("the client sends {count:d} invalid requests"), target_fixture="refusal_times")
def refusals(worker, count):
    times = []
    for _ in range(count):
        start = time.monotonic()
        answer = worker.post_json("/execute", {"job_id": "", "prompt": "", "max_tokens": 0})
        times.append((time.monotonic() - start) * 1000)
        assert answer.status_code == 400, f"an invalid request got HTTP {answer.status_code}"
    return times


@then(parsers.parse("the p50 time to refuse one is under {limit:d} ms"))
def refusal_p50(refusal_times, limit, measure):
    p50 = percentile(refusal_times, 50)
    measure(f"refusal p50: {p50:.2f} ms (HTTP round trip included)")
    assert p50 < limit, f"refusal p50 {p50:.2f} ms (target {limit} ms, round trip included)"
