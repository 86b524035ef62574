"""Steps for request validation (M0-W-1300, M0-W-1302): bad requests are refused with HTTP
400 and the code INVALID_REQUEST; requests at the edge of each range are streamed."""
from __future__ import annotations

import json

from pytest_bdd import parsers, then, when

from steps.client import read_stream
from steps.jobs import Job, build_request

#: A valid request that each scenario changes in one place.
BASE_REQUEST = {"prompt": "Hello", "max_tokens": 4, "temperature": 0, "seed": 1}

#: Bodies that are not a JSON object, by the name the features give them.
BAD_BODIES = {
    "an empty body": b"",
    "text that is not JSON": b"prompt=hello&max_tokens=4",
    "truncated JSON": b'{"job_id": "x", "prompt": "Hello", "max_tok',
    "a JSON array": b'[{"job_id": "x", "prompt": "Hello", "max_tokens": 4}]',
    "a JSON string": b'"Hello"',
}


@when(parsers.parse('the client sends /execute with "{field}" set to {value}'), target_fixture="stream")
def send_with_field(worker, jobs, field, value):
    return jobs.execute(worker, {**BASE_REQUEST, field: json.loads(value)}, wait=False)


@when(parsers.parse('the client sends /execute without "{field}"'), target_fixture="stream")
def send_without_field(worker, jobs, field):
    request = build_request(BASE_REQUEST)
    del request[field]
    return _send_raw(worker, jobs, json.dumps(request).encode())


@when(parsers.parse("the client sends /execute with {body} as the body"), target_fixture="stream")
def send_body(worker, jobs, body):
    return _send_raw(worker, jobs, BAD_BODIES[body])


@when("the client sends /execute with a 1.1 MiB prompt", target_fixture="stream")
def send_oversized(worker, jobs):
    request = build_request({**BASE_REQUEST, "prompt": "a" * (1024 * 1024 + 100 * 1024)})
    return _send_raw(worker, jobs, json.dumps(request).encode())


@when("the client sends another request with the same job_id", target_fixture="stream")
def send_duplicate(worker, jobs, running):
    return jobs.execute(worker, {**BASE_REQUEST, "job_id": running.request["job_id"]}, wait=False)


def _send_raw(worker, jobs, payload: bytes):
    stream = worker.execute(raw=payload, wait=False)
    jobs.jobs.append(Job(worker, {}, stream))
    return stream


def assert_refused(stream, statuses: tuple[int, ...]) -> None:
    if stream.status == 200:
        read_stream(stream, 5, until=lambda s: len(s.events) >= 2)
        raise AssertionError(f"the request was accepted: HTTP 200, events {stream.names[:4]}")
    assert stream.status in statuses, f"HTTP {stream.status}, expected {statuses}: {stream.body!r}"


@then("the answer is HTTP 400 with code INVALID_REQUEST")
def refused_400(stream):
    assert_refused(stream, (400,))
    _assert_invalid_request_body(stream.body)


@then("the answer is HTTP 4xx with code INVALID_REQUEST")
def refused_4xx(stream):
    assert_refused(stream, tuple(range(400, 500)))
    _assert_invalid_request_body(stream.body)


@then("the answer is HTTP 400 with code INVALID_REQUEST, or HTTP 413")
def refused_oversized(stream):
    assert_refused(stream, (400, 413))
    if stream.status == 400:
        _assert_invalid_request_body(stream.body)


def _assert_invalid_request_body(body) -> None:
    assert isinstance(body, dict), f"the error body is not a JSON object: {body!r}"
    assert body.get("code") == "INVALID_REQUEST", f"error code {body.get('code')!r}: {body}"
    assert isinstance(body.get("message"), str) and body["message"], f"no message: {body}"


@then("the request is accepted with an SSE stream")
def accepted(stream, jobs):
    assert stream.status == 200, f"the request was refused: HTTP {stream.status} {stream.body!r}"
    assert stream.content_type.startswith("text/event-stream"), f"content type {stream.content_type!r}"
    read_stream(stream, jobs.timeout_s, until=lambda s: "started" in s.names or s.terminal is not None)
    assert "started" in stream.names, f"no started event: {stream.names[:3]} ({stream.read_error})"
