"""Steps that run jobs and check their SSE streams (§7.2), reproducibility (§3), UTF-8
safety (M0-W-1824), sequential execution (M0-W-1301) and sampling parameters."""
from __future__ import annotations

import json
import re
from datetime import datetime

import pytest
from pytest_bdd import given, parsers, then, when

from steps.client import WorkerClient, read_stream

SPEC_EVENTS = {"started", "token", "metrics", "end", "error"}
ERROR_CODES = {"INVALID_REQUEST", "MODEL_LOAD_FAILED", "INSUFFICIENT_VRAM", "VRAM_OOM", "CUDA_ERROR",
               "INFERENCE_TIMEOUT", "CANCELLED", "INTERNAL"}  # M0-W-1500
UINT64_MAX = 2**64 - 1


def complete(stream, timeout_s: float):
    """The stream read to its end (bounded), for steps that look at all its events."""
    assert stream.status == 200, f"expected an SSE stream, got HTTP {stream.status}: {stream.body!r}"
    read_stream(stream, timeout_s)
    return stream


def event_data(event) -> dict:
    assert isinstance(event.data, dict), f"`{event.name}` data is not a JSON object: {event.raw[:200]!r}"
    return event.data


def output_of(stream) -> tuple:
    """What identifies a job's output: its token texts, and token ids where sent."""
    return (tuple(str(event_data(e).get("t")) for e in stream.tokens), stream.token_ids)


def assert_same_outputs(streams, timeout_s: float) -> None:
    first = output_of(complete(streams[0], timeout_s))
    for other in streams[1:]:
        second = output_of(complete(other, timeout_s))
        assert second[0] == first[0], f"token texts differ:\n{''.join(first[0])!r}\n{''.join(second[0])!r}"
        if first[1] is not None and second[1] is not None:
            assert second[1] == first[1], f"token ids differ: {first[1]} vs {second[1]}"


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@given("a worker serving its model", target_fixture="worker")
def worker(target) -> WorkerClient:
    return WorkerClient(target.shared_base_url(), target.request_timeout_s)


@given("a job that is generating tokens", target_fixture="running")
def running(worker, jobs, target):
    job = jobs.start_running(worker, (target.health() or {}).get("context_length"))
    stream = job.stream
    assert stream.status == 200, f"the long job was refused: HTTP {stream.status} {stream.body!r}"
    assert stream.tokens, f"no token arrived within {jobs.timeout_s:g} s; events: {stream.names}, {stream.read_error}"
    assert stream.terminal is None, f"the long job ended at once: {stream.terminal.name} {stream.terminal.data}"
    return job


# --- When: running jobs ---------------------------------------------------------------

@when("the client executes:", target_fixture="stream")
def execute(worker, jobs, docstring):
    return jobs.execute(worker, json.loads(docstring))


@when("the client executes the same request again", target_fixture="stream")
def execute_again(worker, jobs):
    return jobs.execute(worker, {k: v for k, v in jobs.last.request.items() if k != "job_id"})


@when(parsers.parse("the client executes the same request with seed {seed:d}"), target_fixture="stream")
def execute_with_seed(worker, jobs, seed):
    return jobs.execute(worker, {**_without_id(jobs.last.request), "seed": seed})


@when("the client executes the same request with the reported seed", target_fixture="stream")
def execute_with_reported_seed(worker, jobs, stream):
    return jobs.execute(worker, {**_without_id(jobs.last.request), "seed": stream.seed_reported()})


@when(parsers.parse("the client executes this request with seeds {seeds}:"), target_fixture="streams")
def execute_with_seeds(worker, jobs, seeds, docstring):
    template = json.loads(docstring)
    return [jobs.execute(worker, {**template, "seed": int(s)}) for s in re.findall(r"\d+", seeds)]


@when("the client executes it again with these fields:", target_fixture="stream")
def execute_with_fields(worker, jobs, docstring):
    return jobs.execute(worker, {**_without_id(jobs.jobs[0].request), **json.loads(docstring)})


@when("two clients execute at the same time:", target_fixture="streams")
def execute_concurrently(target, jobs, docstring):
    template = json.loads(docstring)
    started = [jobs.execute_in_background(WorkerClient(target.shared_base_url(), target.request_timeout_s),
                                          template) for _ in range(2)]
    for job in started:
        job.thread.join(timeout=jobs.timeout_s * 2)
    assert all(job.stream is not None for job in started), "a client got no answer in time"
    return [job.stream for job in started]


def _without_id(request: dict) -> dict:
    return {k: v for k, v in request.items() if k != "job_id"}


# --- Then: framing and payloads (M0-W-1310..1312) ----------------------------------------

@then("the answer is an SSE stream")
def answer_is_sse(stream):
    assert stream.status == 200, f"expected HTTP 200, got {stream.status}: {stream.body!r}"
    assert stream.content_type.startswith("text/event-stream"), f"content type is {stream.content_type!r}"


@then("the events are started, then tokens, then exactly one terminal event and nothing after it")
def event_order(stream, jobs):
    complete(stream, jobs.timeout_s)
    names = stream.names
    assert names, f"no events at all ({stream.read_error})"
    assert names[0] == "started", f"first event is {names[0]!r}, not started: {names[:5]}"
    body = [n for n in names[1:] if n != "metrics"]
    terminals = [i for i, n in enumerate(body) if n in ("end", "error")]
    assert len(terminals) == 1, f"expected exactly one terminal event, got {len(terminals)}: {names}"
    assert terminals[0] == len(body) - 1, f"events after the terminal event: {names}"
    assert all(n == "token" for n in body[:-1]), f"unexpected events between started and the end: {names}"
    assert stream.read_error is None, stream.read_error


@then(parsers.parse("the terminal event is {name}"))
def terminal_is(stream, jobs, name):
    complete(stream, jobs.timeout_s)
    terminal = stream.terminal
    assert terminal is not None, f"no terminal event ({stream.read_error}); events: {stream.names[-5:]}"
    assert terminal.name == name, f"terminal event is {terminal.name} {terminal.data}, expected {name}"


@then("the started event has the request's job_id")
def started_job_id(stream, jobs):
    started = _first(stream, "started", jobs)
    assert started.get("job_id") == jobs.last.request["job_id"], f"started event: {started}"


@then(parsers.parse('the started event has a non-empty string "{field}"'))
def started_string(stream, jobs, field):
    value = _first(stream, "started", jobs).get(field)
    assert isinstance(value, str) and value, f"started.{field} = {value!r}"


@then(parsers.parse('the started event has an ISO-8601 date and time in "{field}"'))
def started_iso(stream, jobs, field):
    value = _first(stream, "started", jobs).get(field)
    assert isinstance(value, str), f"started.{field} = {value!r}"
    assert re.match(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}", value), f"started.{field} = {value!r} is not ISO-8601"
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise AssertionError(f"started.{field} = {value!r} is not ISO-8601: {exc}") from exc


@then(parsers.parse('every token event has a string "{text}" and an integer "{index}"'))
def token_fields(stream, jobs, text, index):
    complete(stream, jobs.timeout_s)
    assert stream.tokens, "no token events"
    for event in stream.tokens:
        data = event_data(event)
        assert isinstance(data.get(text), str), f"token {text} = {data.get(text)!r}"
        assert is_int(data.get(index)), f"token {index} = {data.get(index)!r}"


@then("the token indices run 0, 1, 2, ... without gaps")
def token_indices(stream, jobs):
    complete(stream, jobs.timeout_s)
    indices = [event_data(e).get("i") for e in stream.tokens]
    assert indices == list(range(len(indices))), f"token indices: {indices}"


@then(parsers.parse('the end event has an integer "{field}" equal to the number of token events'))
def end_count(stream, jobs, field):
    end = _terminal_named(stream, "end", jobs)
    assert is_int(end.get(field)), f"end.{field} = {end.get(field)!r}"
    assert end[field] == len(stream.tokens), f"end.{field} = {end[field]} but {len(stream.tokens)} token events"


@then(parsers.parse('the end event has a non-negative number "{field}"'))
def end_number(stream, jobs, field):
    value = _terminal_named(stream, "end", jobs).get(field)
    assert is_number(value) and value >= 0, f"end.{field} = {value!r}"


@then("every event is named started, token, metrics, end or error")
def event_names(stream, jobs):
    complete(stream, jobs.timeout_s)
    unknown = [n for n in stream.names if n not in SPEC_EVENTS]
    assert not unknown, f"events outside the spec: {unknown}"


@then("every event's data is a JSON object")
def event_objects(stream, jobs):
    complete(stream, jobs.timeout_s)
    for event in stream.events:
        event_data(event)


@then(parsers.parse("at most {limit:d} token events were streamed"))
def at_most(stream, jobs, limit):
    complete(stream, jobs.timeout_s)
    assert len(stream.tokens) <= limit, f"{len(stream.tokens)} token events for max_tokens {limit}"


@then(parsers.parse("at least {count:d} token event was streamed"))
def at_least(stream, jobs, count):
    complete(stream, jobs.timeout_s)
    assert len(stream.tokens) >= count, f"only {len(stream.tokens)} token events"


@then(parsers.parse('the streamed text begins with "{prefix}"'))
def text_begins(stream, jobs, prefix):
    complete(stream, jobs.timeout_s)
    assert stream.text.startswith(prefix), f"streamed text {stream.text!r} does not begin with {prefix!r}"


def _first(stream, name, jobs) -> dict:
    complete(stream, jobs.timeout_s)
    event = next((e for e in stream.events if e.name == name), None)
    assert event is not None, f"no {name} event; events: {stream.names[:5]}"
    return event_data(event)


def _terminal_named(stream, name, jobs) -> dict:
    terminal_is(stream, jobs, name)
    return event_data(stream.terminal)


# --- Then: errors on the stream (M0-W-1510) ------------------------------------------

def scenario_stream(request):
    """The job a scenario is about: its long-running job if it has one, else its last job."""
    try:
        return request.getfixturevalue("running").stream
    except pytest.FixtureLookupError:
        return request.getfixturevalue("stream")


@then(parsers.parse("the stream ends within {seconds:g} seconds with an error event with code {code}"))
def stream_ends_with_error(request, seconds, code):
    stream = scenario_stream(request)
    read_stream(stream, seconds)
    try:
        skip_if_it_ended_before_its_cancel(request.getfixturevalue("running"))
    except pytest.FixtureLookupError:
        pass
    ends_with_error(stream, seconds, code)


def skip_if_it_ended_before_its_cancel(job) -> None:
    """A job that finished before its cancel was answered may have ended before the worker got it: on a fast
    worker (a small model, max_tokens at most 2048, or an early end token) the scenario cannot
    be staged, which is a skip with the reason, not a failure of the worker."""
    if job.ended_before_cancel():
        end = job.stream.terminal.data
        pytest.skip(f"the job ended ({end.get('stop_reason', 'end')}, {len(job.stream.tokens)} tokens in "
                    f"{end.get('decode_time_ms')} ms of decoding) before its cancel was answered, "
                    f"{1000 * (job.cancel_answered - job.stream.tokens[0].arrived):.0f} ms after its first token: "
                    "too fast a worker for this scenario")


def ends_with_error(stream, seconds: float, code: str) -> None:
    read_stream(stream, seconds)
    terminal = stream.terminal
    assert terminal is not None, f"no terminal event within {seconds:g} s ({stream.read_error}); " \
                                 f"{len(stream.tokens)} tokens so far"
    assert terminal.name == "error", f"stream ended with {terminal.name} {terminal.data}, expected error {code}"
    data = event_data(terminal)
    assert data.get("code") == code, f"error code {data.get('code')!r}, expected {code}: {data}"


@then(parsers.parse('the error event has a string "{message}" and a boolean "{retriable}"'))
def error_fields(request, message, retriable):
    data = event_data(scenario_stream(request).terminal)
    assert data.get("code") in ERROR_CODES, f"error code {data.get('code')!r} is not one of M0-W-1500"
    assert isinstance(data.get(message), str) and data[message], f"error.{message} = {data.get(message)!r}"
    assert isinstance(data.get(retriable), bool), f"error.{retriable} = {data.get(retriable)!r}"


# --- Then: reproducibility (M0-W-1030..1032) --------------------------------------------

@then("both jobs streamed identical tokens")
def both_identical(jobs):
    assert_same_outputs([job.stream for job in jobs.jobs[-2:]], jobs.timeout_s)


@then("all these jobs streamed identical tokens")
def all_identical(jobs):
    assert_same_outputs([job.stream for job in jobs.jobs], jobs.timeout_s)


@then("at least two of the jobs streamed different tokens")
def some_differ(streams, jobs):
    outputs = {output_of(complete(s, jobs.timeout_s))[0] for s in streams}
    assert len(outputs) >= 2, f"{len(streams)} seeds gave one output: {''.join(next(iter(outputs)))!r}"


@then("the stream reports the seed it used as an unsigned 64-bit integer")
def seed_reported(stream, jobs):
    complete(stream, jobs.timeout_s)
    seed = stream.seed_reported()
    assert is_int(seed) and 0 <= seed <= UINT64_MAX, \
        f"no uint64 `seed` in any event of a job sent without one (M0-W-1030): {seed!r}"


# --- Then: UTF-8 (M0-W-1824) -----------------------------------------------------------

@then("every event's data is valid UTF-8 JSON")
def utf8_events(stream, jobs):
    complete(stream, jobs.timeout_s)
    bad = [f"{e.name}: {e.decode_error}: {e.raw[:80]!r}" for e in stream.events if e.decode_error]
    assert not bad, "; ".join(bad)


@then("no token text holds half of a surrogate pair")
def no_surrogates(stream, jobs):
    complete(stream, jobs.timeout_s)
    for event in stream.tokens:
        text = str(event_data(event).get("t"))
        halves = [c for c in text if 0xD800 <= ord(c) <= 0xDFFF]
        assert not halves, f"token {event.data.get('i')} holds a lone surrogate: {text!r}"


@then("no token text holds a replacement character")
def no_replacement(stream, jobs):
    complete(stream, jobs.timeout_s)
    for event in stream.tokens:
        text = str(event_data(event).get("t"))
        assert "\ufffd" not in text, f"token {event.data.get('i')} holds U+FFFD: {text!r}"


# --- Then: one job at a time (M0-W-1301) ------------------------------------------------

@then("both jobs end with an end event")
def both_end(streams, jobs):
    for stream in streams:
        terminal_is(stream, jobs, "end")


@then("no token of the later job arrived before the earlier job's terminal event")
def not_interleaved(streams):
    first, second = sorted(streams, key=lambda s: s.tokens[0].arrived if s.tokens else float("inf"))
    # two client threads may note near-simultaneous arrivals out of order, by over 5 ms on a loaded
    # two-core machine (seen once in CI); jobs run at once interleave over their whole streams
    slack_s = 0.02
    early = [e for e in second.tokens if e.arrived < first.terminal.arrived - slack_s]
    assert not early, f"{len(early)} tokens of one job arrived while the other was still streaming"


# --- When/Then: sampling parameters (rev 84202fea) ----------------------------------------

@when("the client executes it again with the text of a token after the third as a stop sequence",
      target_fixture="stop_at")
def execute_with_stop(worker, jobs):
    first = complete(jobs.jobs[0].stream, jobs.timeout_s)
    texts = [str(event_data(e).get("t")) for e in first.tokens]
    index = next((i for i, t in enumerate(texts) if i >= 3 and re.fullmatch(r"\s?[A-Za-z]{2,}", t)), None)
    assert index is not None, f"no word token after the third to use as a stop sequence: {texts}"
    jobs.execute(worker, {**_without_id(jobs.jobs[0].request), "stop": [texts[index]]})
    return index


@then("the second job ends with an end event no later than that token")
def stopped(jobs, stop_at):
    stream = jobs.jobs[1].stream
    terminal_is(stream, jobs, "end")
    assert len(stream.tokens) <= stop_at + 1, \
        f"{len(stream.tokens)} tokens streamed; the stop sequence was token {stop_at}"


@then("its text is the beginning of the first job's text")
def prefix_of_first(jobs):
    first, second = jobs.jobs[0].stream.text, jobs.jobs[1].stream.text
    assert first.startswith(second), f"{second!r} is not the beginning of {first!r}"

